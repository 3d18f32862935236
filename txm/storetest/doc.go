// Package storetest is the conformance suite of transmanager's stores. Every
// store, in memory or in a database, runs the same tests, and they are the
// specification of the [txm.OutboxStore] and [txm.InboxStore] contracts and
// of the optional capabilities [txm.Transactor], [txm.TxReporter] (with
// [txm.OutboxPublisher]'s [txm.ErrNoTransaction]), [txm.Claimer],
// [txm.DeadLetterStore], [txm.BatchSaver], [txm.StatsReporter],
// [txm.Purger], [txm.Waker], [txm.Scheduler] and [txm.DueReporter], with
// the claims of scheduled messages (those with [async.MetaDeliverAt]).
//
// # Running the suite
//
// A store's test gives [Run] a [Harness] whose New returns a fresh, empty
// store for each sub-test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			New: func(t *testing.T) storetest.Stores {
//				s := mystore.Open(t)  // registers its own cleanup
//				return storetest.Stores{Outbox: s.Outbox(), Inbox: s.Inbox}
//			},
//		})
//	}
//
// [RunOutbox] and [RunInbox] run one half. Sub-tests of capabilities that
// the outbox does not implement are skipped with the capability's name.
// Sub-tests run in parallel, each on its own store.
//
// # Time
//
// Leases and retry delays need time to pass. A store whose clock can be
// moved sets [Stores.Advance], and the suite moves it instead of waiting.
// Without it (a database's clock) the suite uses short real durations
// ([Harness.Lease]) and polls with a deadline until they have passed; its
// assertions that something has not happened yet are made only while the
// duration in question has certainly not run out.
package storetest
