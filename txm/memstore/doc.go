// Package memstore keeps a transactional outbox and inboxes in memory. It
// is the embedded default for tests, examples and demos: nothing survives
// the process, but it behaves as the durable stores do, and it passes the
// conformance suite of [github.com/transmanager/transmanager/txm/storetest].
//
// # Stores
//
// [New] returns a [Store]. [Store.Outbox] is its [Outbox], which implements
// [txm.OutboxStore] and every optional capability of the txm package;
// [Store.Inbox] returns the [Inbox] of one consumer group, which
// implements [txm.InboxStore]:
//
//	store := memstore.New(memstore.Config{})
//	publisher := txm.OutboxPublisher(store.Outbox())(nil)
//	relay := txm.NewOutboxProcessor(broker, store.Outbox())
//	handler := txm.InboxHandler(store.Inbox("billing"))(myHandler)
//
// # Transactions
//
// [Store.InTx] runs a function in a transaction carried by its context.
// Saves made through that context, in the outbox and in any inbox of the
// store, are buffered and applied together when the function returns nil,
// and discarded when it returns an error or panics. Without a transaction
// in the context [Outbox.Save] commits at once, but [txm.OutboxPublisher]
// refuses such a save with [txm.ErrNoTransaction] (the outbox implements
// [txm.TxReporter]) unless the context is marked by [txm.Standalone].
// Nested calls reuse the outer
// transaction. An ID saved by a live transaction is reserved: a save of the
// same ID elsewhere waits for that transaction to end, as it would on a
// database's unique index.
//
// # Claims, retries and dead letters
//
// The outbox leases messages to relays ([Outbox.Claim]), keeps their retry
// schedule ([Outbox.MarkFailed]) and their dead letters ([Outbox.MarkDead],
// [Outbox.Replay]). Messages that share a partition key come out in the
// order they were committed, and a key whose earliest message is leased,
// waiting or dead is parked while other keys flow. Time comes from
// [Config.Now], so tests can move it forward.
//
// Claims scan the pending messages in commit order and stop once they have
// their batch, so a claim costs about the batch plus the messages it skips
// (leased, waiting or parked).
package memstore
