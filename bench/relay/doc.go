// Package relay benchmarks the relay (txm.Processor) against a simulated
// broker: a pre-filled memstore or SQLite outbox drained into a publisher
// that confirms every message after a fixed latency (0, 100µs, 1ms), for
// every combination of workers and batch size, with and without partition
// keys and with 1, 2 or 4 batches in flight. The baseline, run on the same
// cells, is a minimal hand-written relay loop doing the same store and
// publisher work (claim, publish split over the workers, mark). It needs no
// service.
//
// The checks (TestRelayDrain, TestWaitClock) assert that both drains
// publish every message once and that the simulated latency is the one
// asked for. See bench/README.md for the commands and the current figures.
package relay
