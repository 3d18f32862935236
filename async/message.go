package async

import (
	"maps"
	"time"
	"unsafe"
)

// Message is an outgoing or stored message: an identifier, the topic it is
// published to (its subject), a name for its kind, metadata and the encoded
// payload.
type Message interface {
	// ID identifies the message; stores and inboxes deduplicate by it.
	ID() string
	// Subject is the topic the message is published to.
	Subject() string
	// MessageName names the kind of message, for example "OrderPlaced".
	MessageName() string
	// Metadata carries headers such as the content type and partition key.
	Metadata() Metadata
	// SentAt is when the message was created by its producer.
	SentAt() time.Time
	// Data is the encoded payload.
	Data() []byte
}

// IncomingMessage is a message delivered by a broker to a handler, with the
// controls that settle its delivery.
type IncomingMessage interface {
	Message
	// ReceivedAt is when this delivery reached the subscriber.
	ReceivedAt() time.Time
	// Ack settles the message as processed. Acking twice is not an error.
	Ack() error
	// NAck asks for a redelivery after the subscriber's redelivery delay.
	NAck() error
	// Extend pushes back the ack deadline of a message still being worked on.
	Extend() error
	// Kill settles the message as unprocessable: it is not redelivered and
	// goes to the broker's dead letters where it has them.
	Kill() error
}

// MessageOption configures a message built by [NewMessage].
type MessageOption func(*message)

// WithID sets the message identifier instead of a new UUIDv7.
func WithID(id string) MessageOption { return func(m *message) { m.id = id } }

// WithMetadata merges md into the message's metadata.
func WithMetadata(md Metadata) MessageOption {
	return func(m *message) {
		if m.metadata == nil {
			m.metadata = make(Metadata, len(md))
		}
		maps.Copy(m.metadata, md)
	}
}

// WithSentAt sets the creation time instead of time.Now.
func WithSentAt(t time.Time) MessageOption { return func(m *message) { m.sentAt = t } }

// NewMessage returns a message for the given subject (topic), name and
// payload. Its ID is a new UUIDv7 string unless [WithID] gives one, its
// SentAt is the current time unless [WithSentAt] gives one, and its metadata
// is never nil.
func NewMessage(subject, name string, data []byte, opts ...MessageOption) Message {
	m := &message{subject: subject, name: name, data: data}
	for _, opt := range opts {
		opt(m)
	}
	return m.complete()
}

// NewID returns a new message identifier: a UUIDv7 string (RFC 9562),
// which sorts by creation time; IDs made by one process sort in the order
// they were made.
func NewID() string {
	b := new([36]byte)
	newV7(b)
	return unsafe.String(&b[0], len(b))
}

// Envelope holds the fields of a message for [NewMessageFromEnvelope].
type Envelope struct {
	// ID identifies the message; "" means a new UUIDv7.
	ID      string
	Subject string
	Name    string
	// Metadata is taken over by the message, not copied; nil means empty.
	Metadata Metadata
	// SentAt is the creation time; zero means now.
	SentAt time.Time
	// Data is taken over by the message, not copied.
	Data []byte
}

// NewMessageFromEnvelope returns a message with the envelope's fields. It
// takes over Metadata and Data without copying them, so the caller must not
// change them afterwards; it is the cheapest way to build a message.
func NewMessageFromEnvelope(e Envelope) Message {
	m := &message{id: e.ID, subject: e.Subject, name: e.Name, metadata: e.Metadata, sentAt: e.SentAt, data: e.Data}
	return m.complete()
}

// complete fills the fields left empty: a new UUIDv7, the current time and
// empty metadata.
func (m *message) complete() *message {
	if m.id == "" {
		newV7(&m.idBuf)
		m.id = unsafe.String(&m.idBuf[0], len(m.idBuf))
	}
	if m.sentAt.IsZero() {
		m.sentAt = time.Now()
	}
	if m.metadata == nil {
		m.metadata = Metadata{}
	}
	return m
}

type message struct {
	idBuf    [36]byte // holds a generated ID, so it costs no allocation of its own
	id       string
	subject  string
	name     string
	metadata Metadata
	sentAt   time.Time
	data     []byte
}

func (m *message) ID() string          { return m.id }
func (m *message) Subject() string     { return m.subject }
func (m *message) MessageName() string { return m.name }
func (m *message) Metadata() Metadata  { return m.metadata }
func (m *message) SentAt() time.Time   { return m.sentAt }
func (m *message) Data() []byte        { return m.data }

// Clone returns a copy of msg that shares nothing mutable with it: the
// metadata map and the payload are copied. Stores and brokers keep clones so
// a caller that reuses its buffers cannot change what was saved.
func Clone(msg Message) Message {
	return &message{
		id:       msg.ID(),
		subject:  msg.Subject(),
		name:     msg.MessageName(),
		metadata: maps.Clone(msg.Metadata()),
		sentAt:   msg.SentAt(),
		data:     append([]byte(nil), msg.Data()...),
	}
}
