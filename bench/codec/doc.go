// Package codec benchmarks the overhead of typed messages: a typed publish
// through txm.Outbox[T] and a typed handle through txm.Inbox[T], with JSON,
// msgpack and protobuf, against the codec alone encoding or decoding the
// same value (the raw baseline) in the same run. It needs no service.
//
// The benchmarks are in its test files; nothing imports it. See
// bench/README.md for the commands and the current figures.
package codec
