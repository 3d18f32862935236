// Package brokertest is the conformance suite that every broker adapter of
// transmanager runs: the in-process broker of package memory, the NATS
// JetStream adapter, and any broker a user writes.
//
// # Using the suite
//
// A broker's test describes the broker in a [Harness] and calls [Run]:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Harness{
//			New: func(t *testing.T) (async.MessagePublisher, async.MessageSubscriber) {
//				b := memory.New(memory.Config{})
//				t.Cleanup(func() { _ = b.Close() })
//				return b, b
//			},
//			DeadLetters: func(t *testing.T, topic string) []string { ... },
//		})
//	}
//
// Every sub-test calls [Harness.New] for itself, asks [Harness.Topic] for a
// topic of its own, and runs in parallel with the others, so the sub-tests
// finish after the calling test function returns (before its cleanups run).
// The suite always subscribes before it publishes: a broker may drop
// messages published to a topic nobody subscribes to.
//
// # What is checked
//
// The suite checks the behaviour that the rest of transmanager relies on:
//
//   - a published message arrives with its payload, ID, name, subject (the
//     topic) and SentAt (to the millisecond), and its string metadata
//     survives;
//   - Publish copies the message: changing the caller's buffers afterwards
//     changes nothing delivered;
//   - a handler returning nil acks; acking twice is not an error; a
//     settled message is not redelivered, whatever the handler returns;
//   - a handler error and NAck redeliver the message, with the same ID, no
//     sooner than the redelivery delay;
//   - a message left unsettled past the ack wait is redelivered, and Extend
//     keeps a slow message from being redelivered;
//   - Kill settles a message for good and puts it in the dead letters once,
//     and so does running out of redeliveries (MaxRedeliveries(2): exactly
//     three deliveries); acked messages are not dead letters;
//   - subscriptions of one consumer group share the messages; different
//     groups, and private subscriptions, each get every message;
//   - one subscription with Concurrency 1 sees messages in publish order,
//     and Concurrency n runs n handlers at once and no more;
//   - Unsubscribe stops deliveries and waits for handlers in flight;
//   - Publish with a cancelled context fails with [context.Canceled], and
//     Subscribe rejects invalid options.
//
// Handler panics are not part of the contract and are not tested.
//
// # Metadata values
//
// The suite publishes string metadata values only and compares them with
// [async.Metadata.GetString]. Brokers whose headers are strings (NATS, for
// one) turn every metadata value into a string on the way, so a handler
// reading a non-string value back should use the typed getters of
// [async.Metadata], which parse strings.
//
// # Timing
//
// The suite subscribes with [async.AckWait] and [async.RedeliveryDelay] set
// from [Harness.Timing] (500ms and 50ms unless given). Waits for expected
// deliveries are bounded (ten ack waits plus five seconds) and fail with a
// message naming what was missing; checks that nothing more arrives watch a
// quiet period of two ack waits and fail as soon as something does arrive.
// The slowest sub-tests take about five ack waits. The sub-tests spend most
// of their time waiting, and go test runs only -parallel of them at once
// (GOMAXPROCS by default), so a larger -parallel shortens the suite on a
// machine with few cores.
package brokertest
