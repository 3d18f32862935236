// Package chaostest is the crash, fault and durability suite of
// transmanager, run over real processes and real services.
//
// Its tests need PostgreSQL (TXM_POSTGRES_URL) and NATS (TXM_NATS_URL) and
// skip, saying so, without them. The crash-cycle test builds the relay
// (txm relay) and the suite's consumer process, starts several of each on
// a schema and a stream of its own, writes business rows and outbox
// messages from producers (about one transaction in ten rolled back on
// purpose), SIGKILLs relays and consumers at random moments and restarts
// them, and at the end checks a ledger: every committed message handled
// exactly once in effect, no rolled-back message published or handled,
// per-key publication order held in the stream, and duplicates on the
// wire bounded by what was in flight at the kills.
//
// Its size is set by flags (or the environment variables named in
// brackets), so the suite can run long against one's own setup:
//
//	go test ./chaostest -run CrashCycles -v -chaos.kills 300 -chaos.rate 1000 -chaos.broker url
//
//	-chaos.kills N          processes killed per run [TXM_CHAOS_KILLS] (30)
//	-chaos.kill-every D     mean time between kills [TXM_CHAOS_KILL_EVERY] (1.5s)
//	-chaos.rate N           messages per second the producers try to commit [TXM_CHAOS_RATE] (300)
//	-chaos.relays N         relay processes, every other one with locked claims [TXM_CHAOS_RELAYS] (3)
//	-chaos.consumers N      consumer processes [TXM_CHAOS_CONSUMERS] (2)
//	-chaos.keys N           partition keys [TXM_CHAOS_KEYS] (64)
//	-chaos.drain D          how long the end may take to deliver everything [TXM_CHAOS_DRAIN] (3m)
//	-chaos.broker B         private: a nats-server of the module version with sync_interval: always,
//	                        started by the test; system: a private /usr/sbin/nats-server; url: the
//	                        server at TXM_NATS_URL [TXM_CHAOS_BROKER] (private)
//	-chaos.keep             keep the schema and stream afterwards, for inspection
//
// The soak test sends 20,000 messages; -soak sends 1,000,000
// (-soak.messages N, [TXM_SOAK_MESSAGES], any other number), which needs a
// longer timeout than go test's default: go test ./chaostest -run Soak
// -soak -timeout 2h -v.
//
// The package has no API: everything is in its tests and its commands
// (cmd/chaosconsumer).
package chaostest
