// Package transmanager makes event-driven services lose no message and
// process none twice, with the transactional outbox and inbox patterns.
//
// # The outbox
//
// A service writes a message in the same database transaction as the
// business change it announces, through [txm.OutboxPublisher] or a typed
// [txm.Outbox]. If the transaction rolls back, the message was never
// written; if it commits, the relay ([txm.NewOutboxProcessor]) publishes it
// afterwards and marks it published only once the broker confirmed it.
//
// # The inbox
//
// A consumer wraps its handler in [txm.InboxHandler]. The incoming message
// is recorded in the handler's own transaction: a redelivery of a message
// already handled is recognised and acknowledged without running the
// handler again, and a handler that fails rolls the record back so the
// redelivery is processed.
//
// # Packages
//
//   - [github.com/transmanager/transmanager/async]: the untyped message
//     contracts every other package uses.
//   - [github.com/transmanager/transmanager/async/memory]: the in-process
//     broker, the embedded default.
//   - [github.com/transmanager/transmanager/async/natsjs]: NATS JetStream.
//   - [github.com/transmanager/transmanager/codec]: JSON, msgpack and
//     protobuf codecs, chosen per topic.
//   - [github.com/transmanager/transmanager/retry]: retry policies and
//     permanent errors.
//   - [github.com/transmanager/transmanager/txm]: the outbox and inbox, the
//     typed layer and the relay.
//   - [github.com/transmanager/transmanager/txm/memstore] and
//     [github.com/transmanager/transmanager/txm/sqlstore]: stores in memory,
//     in SQLite and in PostgreSQL.
//   - [github.com/transmanager/transmanager/txm/storetest]: the conformance
//     suite every store passes.
package transmanager
