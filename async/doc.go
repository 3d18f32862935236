// Package async holds the untyped messaging contracts that every other
// package of transmanager builds on: [Message], [IncomingMessage],
// [MessagePublisher], [MessageHandler], [MessageSubscriber], their function
// adapters and middleware types, and the well-known [Metadata] keys.
//
// It is a leaf package: it imports nothing else of this module, so brokers,
// stores and codecs can all depend on it without cycles.
//
// # Messages
//
// A [Message] is an envelope around an opaque payload. [NewMessage] builds
// one with a UUIDv7 identifier unless [WithID] gives another:
//
//	msg := async.NewMessage("orders.placed", "OrderPlaced", payload,
//		async.WithMetadata(async.Metadata{async.MetaPartitionKey: orderID}))
//
// A broker hands a subscriber an [IncomingMessage], which adds the delivery
// controls Ack, NAck, Extend and Kill.
//
// # Consumer groups
//
// A subscription with [SubscriberConfig.GroupName] belongs to a consumer
// group. The subscribers of this module call their handlers with a context
// that says which ([WithGroup], read with [GroupFromContext]), so that
// middleware can check it is wired for the group it runs in; txm.InboxHandler
// refuses the messages of a subscription whose group is not its inbox's.
//
// # Middleware
//
// [MessagePublisherMiddleware] and [MessageHandlerMiddleware] wrap a
// publisher or handler. [ChainPublisher] and [ChainHandler] apply a list of
// middleware with the first one outermost, so it sees a call first.
package async
