package txm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/retry"
)

// Outbox publishes typed messages: it encodes a T with the codec its
// registry chooses for the topic and publishes the message through a
// publisher, normally one wrapped by [OutboxPublisher] so the publish is a
// save in the caller's transaction:
//
//	out := txm.NewOutbox[OrderPlaced](txm.OutboxPublisher(store)(nil), txm.WithCodecs(codecs))
//	err := out.Publish(ctx, "orders.placed", OrderPlaced{ID: id}, txm.WithPartitionKey(id))
//
// On [OutboxPublisher], a Publish whose ctx carries no transaction of the
// store fails with an error matching [ErrNoTransaction] unless ctx is marked
// by [Standalone]. The message carries the codec's content type and the
// partition key in its metadata. An Outbox is safe for concurrent use.
type Outbox[T any] struct {
	pub    async.MessagePublisher
	codecs *codec.Registry
	name   string
	ptr    bool  // T is a pointer type: encode v itself, not &v
	err    error // a nil publisher: returned by every Publish
}

// TypedOption configures an [Outbox] or an [Inbox].
type TypedOption func(*typedConfig)

type typedConfig struct {
	codecs *codec.Registry
	name   string
}

// WithCodecs sets the registry that chooses codecs per topic. Default: a
// registry whose default codec is JSON.
func WithCodecs(r *codec.Registry) TypedOption { return func(c *typedConfig) { c.codecs = r } }

// WithMessageName sets the name an [Outbox] gives its messages. Default:
// the name of T's type ("OrderPlaced" for OrderPlaced or *OrderPlaced).
func WithMessageName(name string) TypedOption { return func(c *typedConfig) { c.name = name } }

func newTypedConfig[T any](opts []TypedOption) (typedConfig, bool) {
	var cfg typedConfig
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	if cfg.codecs == nil {
		cfg.codecs = codec.NewRegistry(nil)
	}
	t := reflect.TypeFor[T]()
	ptr := t.Kind() == reflect.Pointer
	if cfg.name == "" {
		if ptr {
			cfg.name = t.Elem().Name()
		} else {
			cfg.name = t.Name()
		}
	}
	return cfg, ptr
}

// NewOutbox returns an Outbox that publishes through pub. Nil options are
// ignored. With a nil pub, every Publish returns an error matching
// [ErrNilArgument] (Message still builds messages).
func NewOutbox[T any](pub async.MessagePublisher, opts ...TypedOption) *Outbox[T] {
	cfg, ptr := newTypedConfig[T](opts)
	o := &Outbox[T]{pub: pub, codecs: cfg.codecs, name: cfg.name, ptr: ptr}
	if isNil(pub) {
		o.err = nilArgument("NewOutbox", "publisher")
	}
	return o
}

// PublishOption sets a field of one published message. Options are plain
// values: passing them costs no allocation.
type PublishOption struct {
	id      string
	key     string
	headers async.Metadata
	sched   schedule // WithDeliverAt, WithDelay, WithExpiresAt, WithTTL
}

// WithPartitionKey sets the message's partition key: the relay publishes
// the messages of one key in order.
func WithPartitionKey(key string) PublishOption { return PublishOption{key: key} }

// WithMessageID sets the message's ID instead of a new UUIDv7. Saving the
// same ID twice stores it once.
func WithMessageID(id string) PublishOption { return PublishOption{id: id} }

// WithHeaders adds metadata to the message. The content type, partition
// key, delivery time and expiry set by the Outbox and the other options
// take precedence over the same keys here.
func WithHeaders(md async.Metadata) PublishOption { return PublishOption{headers: md} }

// Publish encodes v with the topic's codec and publishes it to topic.
// Encoding errors match the codec package's sentinels (errors.Is).
func (o *Outbox[T]) Publish(ctx context.Context, topic string, v T, opts ...PublishOption) error {
	if o.err != nil {
		return o.err
	}
	msg, err := o.Message(topic, v, opts...)
	if err != nil {
		return err
	}
	return o.pub.Publish(ctx, topic, msg)
}

// Message builds the message Publish would publish, without publishing it.
func (o *Outbox[T]) Message(topic string, v T, opts ...PublishOption) (async.Message, error) {
	var value any = &v
	if o.ptr {
		value = v
	}
	data, contentType, err := o.codecs.Encode(topic, value)
	if err != nil {
		return nil, fmt.Errorf("txm: encode %s for %s: %w", o.name, topic, err)
	}
	var id, key string
	var sched schedule
	n := 1
	for _, opt := range opts {
		n += len(opt.headers)
		if opt.sched.set != 0 {
			sched.merge(opt.sched)
			n += 2
		}
		if opt.key != "" {
			key, n = opt.key, n+1
		}
		if opt.id != "" {
			id = opt.id
		}
	}
	md := make(async.Metadata, n)
	for _, opt := range opts {
		for k, val := range opt.headers {
			md[k] = val
		}
	}
	md[async.MetaContentType] = contentType
	if key != "" {
		md[async.MetaPartitionKey] = key
	}
	if err := sched.apply(md, time.Now()); err != nil {
		return nil, fmt.Errorf("txm: message %s for %s: %w", o.name, topic, err)
	}
	return async.NewMessageFromEnvelope(async.Envelope{ID: id, Subject: topic, Name: o.name, Metadata: md, Data: data}), nil
}

// HandlerFunc handles one typed message. msg is the delivery, for its ID,
// metadata and delivery controls.
type HandlerFunc[T any] func(ctx context.Context, payload T, msg async.IncomingMessage) error

// Inbox is a typed [async.MessageHandler]: it decodes each message with the
// codec named by the message's content type and calls a [HandlerFunc].
// Wrap it with [InboxHandler] to process each message once:
//
//	h := txm.InboxHandler(inboxStore)(txm.NewInbox(handleOrderPlaced))
//
// A message that cannot be decoded (unknown content type, malformed bytes)
// is killed, so it goes to the broker's dead letters and is not retried, and
// HandleMessage returns a [*DecodeError] marked permanent with
// [retry.Permanent].
type Inbox[T any] struct {
	handle HandlerFunc[T]
	codecs *codec.Registry
	newPtr func() T // for pointer types: a new value to decode into
	err    error    // a nil handle: returned by every HandleMessage
}

// NewInbox returns an Inbox that calls handle. Nil options are ignored.
// With a nil handle, every HandleMessage returns an error matching
// [ErrNilArgument] and leaves the message unsettled, so the broker
// redelivers it per the subscription's policy.
func NewInbox[T any](handle HandlerFunc[T], opts ...TypedOption) *Inbox[T] {
	cfg, ptr := newTypedConfig[T](opts)
	in := &Inbox[T]{handle: handle, codecs: cfg.codecs}
	if handle == nil {
		in.err = nilArgument("NewInbox", "handler function")
	}
	if ptr {
		elem := reflect.TypeFor[T]().Elem()
		in.newPtr = func() T { return reflect.New(elem).Interface().(T) }
	}
	return in
}

// DecodeError reports a message whose payload could not be decoded.
type DecodeError struct {
	MessageID   string
	Topic       string
	ContentType string
	Err         error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("txm: decode message %s of %s (content type %q): %v", e.MessageID, e.Topic, e.ContentType, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// HandleMessage implements [async.MessageHandler].
func (in *Inbox[T]) HandleMessage(ctx context.Context, msg async.IncomingMessage) error {
	if in.err != nil {
		return in.err
	}
	if isNil(msg) {
		return errNilMessage
	}
	var v T
	var target any = &v
	if in.newPtr != nil {
		v = in.newPtr()
		target = v
	}
	ct := msg.Metadata().ContentType()
	if err := in.codecs.Decode(msg.Subject(), ct, msg.Data(), target); err != nil {
		derr := &DecodeError{MessageID: msg.ID(), Topic: msg.Subject(), ContentType: ct, Err: err}
		if kerr := msg.Kill(); kerr != nil {
			return errors.Join(derr, fmt.Errorf("txm: kill undecodable message: %w", kerr))
		}
		return retry.Permanent(derr)
	}
	return in.handle(ctx, v, msg)
}
