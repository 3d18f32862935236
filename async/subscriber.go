package async

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrClosed is returned by publishers, subscribers and stores used after
// Close. Check it with errors.Is.
var ErrClosed = errors.New("async: closed")

// MessageSubscriber subscribes handlers to topics.
type MessageSubscriber interface {
	// Subscribe delivers the messages of topicName to handler until the
	// returned subscription is unsubscribed or the subscriber is closed.
	Subscribe(ctx context.Context, topicName string, handler MessageHandler, opts ...SubscriberOption) (Subscription, error)
}

// Subscription is one handler's subscription to a topic.
type Subscription interface {
	// Unsubscribe stops deliveries and waits for handlers in flight to
	// return. Calling it again returns nil.
	Unsubscribe() error
}

// SubscriberConfig holds the options of one subscription. The zero value
// means: no group (a private subscription), the broker's default ack wait,
// the broker's default redelivery limit and delay.
type SubscriberConfig struct {
	// GroupName names a consumer group: subscriptions with the same group
	// share the topic's messages, each message going to one of them; each
	// group receives every message. "" gives a private group.
	GroupName string
	// AckWait is how long a delivered message may stay unsettled before it
	// is redelivered. 0 uses the broker's default (30s for the memory
	// broker).
	AckWait time.Duration
	// MaxRedeliveries is how many times a message is redelivered after its
	// first delivery before it goes to dead letters. 0 uses the broker's
	// default; a negative value means no limit.
	MaxRedeliveries int
	// RedeliveryDelay is how long a NAcked or failed message waits before it
	// is delivered again. 0 uses the broker's default.
	RedeliveryDelay time.Duration
	// Concurrency is how many messages the subscription handles at once.
	// 0 or 1 means one at a time, in order.
	Concurrency int
}

// SubscriberOption sets a field of [SubscriberConfig].
type SubscriberOption func(*SubscriberConfig)

// GroupName sets [SubscriberConfig.GroupName].
func GroupName(name string) SubscriberOption { return func(c *SubscriberConfig) { c.GroupName = name } }

// AckWait sets [SubscriberConfig.AckWait].
func AckWait(d time.Duration) SubscriberOption { return func(c *SubscriberConfig) { c.AckWait = d } }

// MaxRedeliveries sets [SubscriberConfig.MaxRedeliveries].
func MaxRedeliveries(n int) SubscriberOption {
	return func(c *SubscriberConfig) { c.MaxRedeliveries = n }
}

// RedeliveryDelay sets [SubscriberConfig.RedeliveryDelay].
func RedeliveryDelay(d time.Duration) SubscriberOption {
	return func(c *SubscriberConfig) { c.RedeliveryDelay = d }
}

// Concurrency sets [SubscriberConfig.Concurrency].
func Concurrency(n int) SubscriberOption { return func(c *SubscriberConfig) { c.Concurrency = n } }

// NewSubscriberConfig applies opts to a zero config and validates it.
func NewSubscriberConfig(opts ...SubscriberOption) (SubscriberConfig, error) {
	var c SubscriberConfig
	for _, opt := range opts {
		opt(&c)
	}
	switch {
	case c.AckWait < 0:
		return c, fmt.Errorf("async: SubscriberConfig.AckWait must not be negative, got %v", c.AckWait)
	case c.RedeliveryDelay < 0:
		return c, fmt.Errorf("async: SubscriberConfig.RedeliveryDelay must not be negative, got %v", c.RedeliveryDelay)
	case c.Concurrency < 0:
		return c, fmt.Errorf("async: SubscriberConfig.Concurrency must not be negative, got %d", c.Concurrency)
	}
	return c, nil
}

// AsyncPublisher is an optional capability of a publisher that can send a
// batch without waiting for each confirmation in turn. PublishBatch
// publishes every message to its Subject, in order, then waits for the
// confirmations, and returns one error per message (nil where the broker
// confirmed it). The second result reports a failure of the whole call, such
// as a cancelled context; then no message of the batch counts as confirmed.
// The relay uses this capability when the publisher implements it.
//
// A middleware that wraps a publisher should implement AsyncPublisher
// whenever the publisher it wraps does, or the relay silently publishes
// through it one message at a time; the publisher middleware of this module
// (retry.Publisher, the txmotel middleware) do.
type AsyncPublisher interface {
	PublishBatch(ctx context.Context, msgs []Message) ([]error, error)
}
