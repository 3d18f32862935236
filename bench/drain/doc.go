// Package drain runs the scenarios of internal/scenario, the ones `txm
// bench` and bench/drainrun run, as go test benchmarks: a backlog in the
// PostgreSQL outbox drained into a JetStream stream by the relay in several
// configurations against the strong hand-written loop (scenario.Loop) in
// the same run, the commit → PubAck latency of both under a steady load,
// and the drain of the embedded default (a SQLite file into the in-process
// broker). The PostgreSQL and JetStream benchmarks need TXM_POSTGRES_URL and
// TXM_NATS_URL and skip without them.
//
// The check (TestDrainBaselines) asserts that the loop and the relay
// publish every message once and mark it, and that the loop woken by
// LISTEN drains what producers commit. See bench/README.md for the commands
// and the current figures.
package drain
