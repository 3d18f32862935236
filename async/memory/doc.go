// Package memory is an in-process message broker: a [Broker] is both an
// [async.MessagePublisher] and an [async.MessageSubscriber], with consumer
// groups, acks, redelivery and dead letters. It suits tests, examples and
// single-process programs; nothing survives the process.
//
//	b := memory.New(memory.Config{})
//	defer b.Close()
//	sub, err := b.Subscribe(ctx, "orders", handler, async.GroupName("billing"))
//	...
//	err = b.Publish(ctx, "orders", msg)
//
// # Topics and groups
//
// A topic fans out to its consumer groups: each group receives every
// message published to the topic. Within a group, messages go to the
// group's subscriptions as competing consumers: each message to one of
// them, whichever has a free handler first. A subscription without
// [async.GroupName] has a private group of its own.
//
// A message reaches the groups that exist when it is published; as with
// NATS core, a group created later does not see earlier messages, and a
// message published to a topic without groups is dropped. A named group
// lives from its first subscription until [Broker.Close], like a durable
// consumer: messages published while all of its subscriptions are gone wait
// for its next subscription. A private group ends with its subscription,
// and its undelivered messages with it.
//
// # Delivery
//
// Delivery is at least once. A delivered message stays in flight until it
// is settled:
//
//   - the handler returns nil, or calls Ack: the message is done;
//   - the handler returns an error, or calls NAck: the message is delivered
//     again after the redelivery delay;
//   - the ack wait passes first: the message is delivered again at once, to
//     whichever handler of the group is free (the late handler's Ack still
//     counts if it comes before another delivery settles the message);
//     Extend pushes the deadline back by another ack wait;
//   - the handler calls Kill: the message goes to the dead letters.
//
// The first settlement of a delivery counts and later ones return nil and
// change nothing: Ack after Kill does not bring a message back, and a
// handler that settled a message before returning an error is not
// redelivered. A message that fails again after MaxRedeliveries
// redeliveries goes to the dead letters instead, with a reason naming the
// limit and the last failure; [Broker.DeadLetters] lists them. A dead
// letter keeps the error of the handler that gave up on it
// ([DeadLetter.HandlerErr]): the last failure, or what a handler that
// called Kill returned. Each dead letter is logged at WARN with its message
// ID, topic, group and error.
//
// A handler that panics does not stop the broker: the panic is recovered
// and counts as a failure of that delivery, with an [*async.PanicError]
// (the panic value and stack) as its error, logged at ERROR.
//
// Each subscription runs Concurrency handlers (one by default). With one
// handler a subscription sees messages in publish order, except that
// redeliveries go ahead of messages not yet delivered.
//
// Each delivery carries copies of the payload and metadata, and Publish
// copies the message, so neither the publisher nor a handler can change
// what another delivery sees. The delivered Subject is the topic the
// message was published to.
//
// # Defaults
//
// Subscription options left zero take the broker's [Config], whose own zero
// values are [DefaultAckWait] (30s), [DefaultRedeliveryDelay] (100ms) and
// [DefaultMaxRedeliveries] (10).
//
// # Shutting down
//
// [async.Subscription.Unsubscribe] stops a subscription and waits for its
// handlers. [Broker.Close] stops everything: it cancels the contexts passed
// to handlers, waits for them and for every goroutine of the broker, and
// drops messages not yet settled. Neither may be called from a handler they
// would wait for.
package memory
