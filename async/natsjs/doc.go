// Package natsjs carries transmanager messages over NATS JetStream, using
// the jetstream package of github.com/nats-io/nats.go.
//
// [Publisher] implements [async.MessagePublisher] and [async.AsyncPublisher]:
// a topic is a NATS subject, and Publish returns once the stream confirmed
// the message with a PubAck. [Subscriber] implements
// [async.MessageSubscriber] with pull consumers. Neither creates streams:
// that is the job of [EnsureStream] or of your deployment tooling.
//
//	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
//	...
//	defer nc.Drain()
//	js, err := jetstream.New(nc)
//	...
//	_, err = natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
//		Name:       "ORDERS",
//		Subjects:   []string{"orders.>"},
//		Storage:    jetstream.FileStorage,
//		Duplicates: 10 * time.Minute,
//	})
//	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
//	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{})
//	defer sub.Close()
//	s, err := sub.Subscribe(ctx, "orders.placed", handler, async.GroupName("billing"))
//
// # Streams
//
// Every topic must be captured by exactly one stream's subjects before
// anything is published to it: a publish to a subject no stream captures
// fails with jetstream.ErrNoStreamResponse, and Subscribe fails with
// [ErrNoStream]. One stream per bounded context with a wildcard
// ("orders.>") is the usual layout.
//
// Use the default limits retention (jetstream.LimitsPolicy) with MaxAge or
// MaxBytes to bound the stream when several groups read a topic: messages
// then outlive their acks, so a new group can replay them and a dead letter
// can still be read. jetstream.WorkQueuePolicy deletes a message once it is
// acked and allows only one consumer per subject, which is one group per
// topic; jetstream.InterestPolicy deletes it once every consumer acked it.
//
// # Headers
//
// A message travels as the NATS payload plus headers:
//
//   - Nats-Msg-Id ([HeaderMsgID]) carries the message ID;
//   - "message-name" ([HeaderMessageName]) and "sent-at" ([HeaderSentAt],
//     RFC 3339 with nanoseconds, UTC) carry the envelope;
//   - every metadata key is a header of the same name, without a prefix,
//     its value converted with [async.Metadata.GetString]; so
//     "content-type", "partition-key", "traceparent" and "tracestate"
//     reach the consumer (and other NATS tools) under their usual names.
//
// On the way in, every header except the envelope headers and the headers
// NATS interprets (Nats-*, Status, Description) becomes a metadata entry with a string value (use the typed
// getters of [async.Metadata] to read numbers or times back). The metadata
// keys "message-name" and "sent-at" are taken by the envelope. A message
// that another producer published without Nats-Msg-Id gets the ID
// "<stream>:<sequence>", which is the same on every redelivery, and its
// stream timestamp as SentAt.
//
// NATS headers are text, so the publisher refuses, with [ErrInvalidMessage],
// what would not arrive unchanged: a metadata key that is not a valid header
// name (printable ASCII without white space, double quotes or any of
// ()/,:;<=>?@[\]{}),
// a key that NATS interprets itself (any key starting with "Nats-", and
// "Status" and "Description", in any case), a value (or ID or name) with a
// line break or with spaces or tabs around it, and an empty ID. It also
// refuses a message whose payload and headers exceed the connection's
// maximum payload (the server's max_payload, 1 MiB by default), with an
// error that matches nats.ErrMaxPayload and gives the size and the limit.
// Retrying either can never succeed: the errors are permanent
// (retry.IsPermanent), on [Publisher.Publish] and [Publisher.PublishBatch]
// alike, so the outbox relay moves such a message to dead letters at once.
//
// # Deduplication and the relay
//
// JetStream remembers the Nats-Msg-Id of each message it stored for the
// stream's duplicate window (StreamConfig.Duplicates, 2 minutes by
// default) and drops a later message with the same ID, answering with a
// PubAck whose Duplicate flag is set; the publisher treats that as success.
// The outbox relay publishes a message again whenever it did not see its
// PubAck (a timeout, a lost connection, a relay that crashed after
// publishing but before marking the message published). Within the window
// those retries are dropped by the server; after it, a retry stores a
// second copy, which the consumer's inbox absorbs. So set Duplicates to at
// least the longest time a relay may keep retrying one message (the sum of
// its backoff delays up to its last attempt, plus its claim lease), keeping
// in mind that the server holds every ID of the window in memory.
//
// # Publishing
//
// Publish waits for the PubAck; a context without a deadline is bounded by
// [PublisherConfig.AckTimeout]. PublishBatch sends up to
// [PublisherConfig.MaxPending] messages with PublishAsync before waiting for
// the oldest, and reports a result per message; it is several times faster
// than publishing one by one (see BenchmarkPublishBatch).
//
// While the connection is down (nats.go is reconnecting), both fail at once
// with [ErrNotConnected] instead of letting nats.go buffer the message
// unconfirmed, so a relay keeps the message pending and retries it later
// with the same ID. Connect with nats.MaxReconnects(-1) so the connection
// keeps trying: when the server is back the same Publisher works again.
//
// # Consumers
//
// Each Subscribe uses a pull consumer on the stream that captures the topic,
// filtered on the topic:
//
//   - a subscription with a GroupName uses a durable consumer named by
//     [SubscriberConfig.ConsumerName] ([DefaultConsumerName] from the group
//     and the topic). The members of a group, in any process, share its
//     messages; it starts with the oldest message the stream holds and
//     later resumes where the group left off; Unsubscribe leaves it in
//     place. Delete a group's consumer with js.DeleteConsumer when the
//     group is retired.
//   - a subscription without a group uses an ephemeral consumer that
//     delivers the messages published after Subscribe returned, and is
//     deleted on Unsubscribe (or by the server after
//     [SubscriberConfig.EphemeralInactiveThreshold]).
//
// The options of the subscription (or the defaults of [SubscriberConfig])
// map onto the consumer: AckWait is its AckWait; MaxRedeliveries n is
// MaxDeliver n+1 (-1, no limit, when negative); RedeliveryDelay is the
// delay of the NakWithDelay sent on NAck or handler error; Concurrency is
// the number of handlers running at once. The consumer acks explicitly.
// Every Subscribe updates a durable consumer to its options, so the members
// of a group should agree on them.
//
// A subscription pulls with one request at a time, asking for as many
// messages as it has idle handlers, so a message never waits in the client
// while its ack wait runs. A request waits at the server for up to
// [SubscriberConfig.PullWait] (5s), with heartbeats; when the heartbeats
// stop (the consumer is gone, for example an ephemeral consumer removed
// during a long disconnection, or a durable one deleted by hand), the
// subscription creates its consumer again, as Subscribe did: a group's
// consumer then starts over with the oldest message in the stream, and a
// private one with the messages published from then on.
//
// The controls of [async.IncomingMessage] map onto JetStream's: Ack is an
// ack (DoubleAck, confirmed by the server, with
// [SubscriberConfig.ConfirmAcks]), NAck is NakWithDelay, Extend is
// InProgress, which restarts the ack wait, and Kill is Term. The first of
// Ack, NAck and Kill settles the delivery; later calls do nothing and
// return nil. A handler that returns nil without settling gets its message
// acked; one that returns an error gets it NAcked.
//
// With Concurrency 1 a subscription handles its messages one at a time in
// stream order, but a NAcked message may be redelivered after messages
// that follow it, which are delivered during its redelivery delay. Set
// [SubscriberConfig.MaxAckPending] to 1 for strict order: the consumer then
// delivers nothing new while a message is unsettled, across all members of
// the group.
//
// # Dead letters
//
// JetStream does not move messages anywhere when it gives up on them: the
// message stays in the stream (under limits retention) and the consumer
// stops delivering it. The subscriber records a [DeadLetter] in two ways:
//
//   - for the messages it gives up on itself, at once, in the process that
//     handled the delivery, which knows the handler's error: a message a
//     handler killed (Kill is a Term; called during the handler, the dead
//     letter waits for the handler to return and keeps its error), and a
//     message whose last delivery (MaxRedeliveries+1) failed in the
//     handler, which it terminates instead of NAcking, with the failure as
//     the error;
//   - for the messages the server gives up on, from the advisory
//     $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>
//     (the last delivery ran out of its ack wait, for example in a process
//     that crashed, or its handler NAcked it). Each subscription listens to
//     the advisories of its consumer and reads the message back from the
//     stream by sequence. Such dead letters have no handler error.
//
// A handler's error is known only in the process that ran the handler,
// while an advisory may reach any member of the group later; recording the
// dead letter where the error is known keeps the two together without any
// state shared between processes. This relies on the members of a group
// agreeing on MaxRedeliveries, as the consumer has one MaxDeliver.
//
// Every dead letter is:
//
//   - logged at WARN with its message ID, topic, group, reason and the
//     handler's error;
//   - kept in [Subscriber.DeadLetters] (the last
//     [SubscriberConfig.DeadLetterHistory] of them);
//   - passed to [SubscriberConfig.OnDeadLetter], if set;
//   - republished, if [SubscriberConfig.DeadLetterPrefix] is set, to
//     DeadLetterPrefix + "." + its subject with its ID and the
//     HeaderDeadLetter* headers, the handler's error in
//     [HeaderDeadLetterError]; create a stream for those subjects, and
//     subscribe to it to inspect or replay dead letters.
//
// Each dead letter is recorded once per group: by the member that handled
// its last delivery, or by one member of the group's NATS queue group for
// the advisories. Advisories are not stored: one that comes while no member
// of the group is subscribed is lost, though the message itself stays in
// the stream. A handler that fails its last delivery after its ack wait
// passed may see its message reported twice, by itself and by the
// server's advisory. A republished dead letter keeps its ID, so the
// dead-letter stream's duplicate window drops the same message dying in a
// second group within the window; give groups different prefixes if that
// matters.
//
// A handler that panics does not stop the subscriber: the panic is
// recovered and fails the delivery, with an [*async.PanicError] (the panic
// value and stack) as its error, logged at ERROR.
//
// # Clusters
//
// In a JetStream cluster, create streams with Replicas: 3 (tolerates the
// loss of one server; 5 for two). Consumers inherit the stream's replica
// count, and a PubAck then means the message is stored on a majority. The
// consumers here always ack explicitly (AckExplicitPolicy), one message at
// a time, which is what at-least-once processing needs; plain acks are not
// confirmed, so set ConfirmAcks when a redelivery after a lost ack (during
// a leader change, say) is costly. Give
// nats.Connect the URLs of several servers (it also learns the others from
// the cluster) and nats.MaxReconnects(-1). Every replica records the IDs
// of the messages it stores, so deduplication survives a leader change.
//
// # Lifecycle
//
// The caller owns the NATS connection. Unsubscribe (or [Subscriber.Close])
// stops the consumer and waits for the handlers in flight; do it before
// closing or draining the connection, whose goroutines end only then. A
// handler must not unsubscribe its own subscription.
package natsjs
