package async

import "context"

// MessagePublisher publishes messages to topics.
type MessagePublisher interface {
	Publish(ctx context.Context, topicName string, msg Message) error
}

// MessageHandler handles messages delivered by a subscriber. A nil error
// means the message was processed; the subscriber then acks it unless the
// handler settled it already. A non-nil error asks for a redelivery.
type MessageHandler interface {
	HandleMessage(ctx context.Context, msg IncomingMessage) error
}

// MessagePublisherFunc adapts a function to [MessagePublisher].
type MessagePublisherFunc func(ctx context.Context, topicName string, msg Message) error

// Publish calls f.
func (f MessagePublisherFunc) Publish(ctx context.Context, topicName string, msg Message) error {
	return f(ctx, topicName, msg)
}

// MessageHandlerFunc adapts a function to [MessageHandler].
type MessageHandlerFunc func(ctx context.Context, msg IncomingMessage) error

// HandleMessage calls f.
func (f MessageHandlerFunc) HandleMessage(ctx context.Context, msg IncomingMessage) error {
	return f(ctx, msg)
}

// MessagePublisherMiddleware wraps a publisher.
type MessagePublisherMiddleware = func(next MessagePublisher) MessagePublisher

// MessageHandlerMiddleware wraps a handler.
type MessageHandlerMiddleware = func(next MessageHandler) MessageHandler

// ChainPublisher wraps pub in the middleware mws. The first middleware is
// the outermost: it sees each call first.
func ChainPublisher(pub MessagePublisher, mws ...MessagePublisherMiddleware) MessagePublisher {
	for i := len(mws) - 1; i >= 0; i-- {
		pub = mws[i](pub)
	}
	return pub
}

// ChainHandler wraps h in the middleware mws. The first middleware is the
// outermost: it sees each message first.
func ChainHandler(h MessageHandler, mws ...MessageHandlerMiddleware) MessageHandler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}
