// Package bench holds transmanager's benchmarks. Nothing imports it.
//
// Every benchmark runs its baseline in the same run, on the same machine:
// the library's path and a hand-written minimal equivalent side by side, so
// the ratio between them is what to read. See README.md in this directory
// for the commands and the figures.
package bench
