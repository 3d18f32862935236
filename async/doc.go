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
// # Middleware
//
// [MessagePublisherMiddleware] and [MessageHandlerMiddleware] wrap a
// publisher or handler. [ChainPublisher] and [ChainHandler] apply a list of
// middleware with the first one outermost, so it sees a call first.
package async
