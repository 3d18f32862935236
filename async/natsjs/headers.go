package natsjs

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// Header names written by the [Publisher] and read back by the
// [Subscriber]. Metadata keys are written as headers under their own names,
// without a prefix, so the well-known keys of package async
// ([async.MetaContentType], [async.MetaPartitionKey],
// [async.MetaTraceParent], [async.MetaTraceState]) appear as the headers
// other NATS tools expect, for example "traceparent".
const (
	// HeaderMsgID carries the message ID. JetStream drops a message whose
	// ID it stored within the stream's duplicate window.
	HeaderMsgID = jetstream.MsgIDHeader
	// HeaderMessageName carries [async.Message.MessageName]. It is omitted
	// when the name is empty.
	HeaderMessageName = async.MetaMessageName
	// HeaderSentAt carries [async.Message.SentAt] in RFC 3339 with
	// nanoseconds, in UTC. It is omitted when the time is zero.
	HeaderSentAt = async.MetaSentAt
)

// Headers added to a message republished to a dead-letter subject (see
// [SubscriberConfig.DeadLetterPrefix]). They reach the dead-letter
// consumer's handler as metadata.
const (
	// HeaderDeadLetterReason is [DeadLetterMaxDeliveries] or
	// [DeadLetterTerminated].
	HeaderDeadLetterReason = "dead-letter-reason"
	// HeaderDeadLetterTopic is the topic of the subscription that gave up.
	HeaderDeadLetterTopic = "dead-letter-topic"
	// HeaderDeadLetterStream and HeaderDeadLetterSequence locate the
	// original message in its stream.
	HeaderDeadLetterStream   = "dead-letter-stream"
	HeaderDeadLetterSequence = "dead-letter-sequence"
	// HeaderDeadLetterConsumer names the JetStream consumer that gave up.
	HeaderDeadLetterConsumer = "dead-letter-consumer"
	// HeaderDeadLetterDeliveries is how many times it was delivered.
	HeaderDeadLetterDeliveries = "dead-letter-deliveries"
	// HeaderDeadLetterError is [DeadLetter.HandlerErr]: the error of the
	// handler that gave up on the message, on one line (line breaks become
	// " | "), cut to 4096 bytes. It is omitted when there is none.
	HeaderDeadLetterError = "dead-letter-error"
)

// invalidHeaderKeyChars are the printable ASCII characters that nats.go
// refuses in header names.
const invalidHeaderKeyChars = "\"()/,:;<=>?@[\\]{}"

// reservedHeader reports whether key is a header that NATS or JetStream
// interpret (every "Nats-" header, and the "Status" and "Description" of
// control messages), which metadata must not set.
func reservedHeader(key string) bool {
	return len(key) >= 5 && strings.EqualFold(key[:5], "nats-") ||
		strings.EqualFold(key, "status") || strings.EqualFold(key, "description")
}

func validHeaderKey(key string) bool {
	if key == "" {
		return false
	}
	for i := 0; i < len(key); i++ {
		if !headerKeyChars[key[i]] {
			return false
		}
	}
	return true
}

// headerKeyChars holds the bytes that a header name may have: printable
// ASCII but for invalidHeaderKeyChars.
var headerKeyChars = func() (ok [256]bool) {
	for c := 33; c <= 126; c++ {
		ok[c] = strings.IndexByte(invalidHeaderKeyChars, byte(c)) < 0
	}
	return ok
}()

// validHeaderValue reports whether v survives the NATS header encoding
// unchanged: nats.go trims surrounding white space and turns CR and LF into
// spaces.
func validHeaderValue(v string) bool {
	if v == "" {
		return true
	}
	if c := v[0]; c == ' ' || c == '\t' {
		return false
	}
	if c := v[len(v)-1]; c == ' ' || c == '\t' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' {
			return false
		}
	}
	return true
}

// toNatsMsg builds the NATS message that carries msg on subject.
func toNatsMsg(subject string, msg async.Message) (*nats.Msg, error) {
	id := msg.ID()
	if id == "" {
		return nil, fmt.Errorf("%w: empty message ID", ErrInvalidMessage)
	}
	if !validHeaderValue(id) {
		return nil, fmt.Errorf("%w: message ID %q has surrounding white space or a line break", ErrInvalidMessage, id)
	}
	md := msg.Metadata()
	h := make(nats.Header, len(md)+3)
	// One backing array holds every header's single value.
	vals := make([]string, 0, len(md)+3)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	for k, raw := range md {
		switch {
		case !validHeaderKey(k):
			return nil, fmt.Errorf("%w: message %s: metadata key %q is not a valid header name", ErrInvalidMessage, id, k)
		case reservedHeader(k):
			return nil, fmt.Errorf("%w: message %s: metadata key %q is a reserved NATS header", ErrInvalidMessage, id, k)
		}
		v, ok := raw.(string)
		if !ok {
			v = md.GetString(k)
		}
		if !validHeaderValue(v) {
			return nil, fmt.Errorf("%w: message %s: metadata %q: value %q has surrounding white space or a line break", ErrInvalidMessage, id, k, v)
		}
		set(k, v)
	}
	if name := msg.MessageName(); name != "" {
		if !validHeaderValue(name) {
			return nil, fmt.Errorf("%w: message %s: name %q has surrounding white space or a line break", ErrInvalidMessage, id, name)
		}
		set(HeaderMessageName, name)
	} else {
		delete(h, HeaderMessageName)
	}
	if t := msg.SentAt(); !t.IsZero() {
		set(HeaderSentAt, t.UTC().Format(time.RFC3339Nano))
	} else {
		delete(h, HeaderSentAt)
	}
	set(HeaderMsgID, id)
	return &nats.Msg{Subject: subject, Header: h, Data: msg.Data()}, nil
}

// envelope is a message read back from NATS headers.
type envelope struct {
	id       string
	subject  string
	name     string
	metadata async.Metadata
	sentAt   time.Time
	data     []byte
}

// fromNats reads a message from a NATS subject, headers and payload. A
// message without [HeaderMsgID] (published by another producer) gets the ID
// "<stream>:<sequence>", stable across redeliveries; one without a valid
// [HeaderSentAt] gets its stream timestamp.
func fromNats(subject string, h nats.Header, data []byte, stream string, seq uint64, stored time.Time) envelope {
	e := envelope{subject: subject, data: data, metadata: make(async.Metadata, len(h))}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		switch {
		case k == HeaderMsgID:
			e.id = vs[0]
		case k == HeaderMessageName:
			e.name = vs[0]
		case k == HeaderSentAt:
			if t, err := time.Parse(time.RFC3339Nano, vs[0]); err == nil {
				e.sentAt = t
			}
		case reservedHeader(k):
		default:
			e.metadata[k] = vs[0]
		}
	}
	if e.id == "" {
		e.id = stream + ":" + strconv.FormatUint(seq, 10)
	}
	if e.sentAt.IsZero() {
		e.sentAt = stored
	}
	return e
}

func (e *envelope) ID() string               { return e.id }
func (e *envelope) Subject() string          { return e.subject }
func (e *envelope) MessageName() string      { return e.name }
func (e *envelope) Metadata() async.Metadata { return e.metadata }
func (e *envelope) SentAt() time.Time        { return e.sentAt }
func (e *envelope) Data() []byte             { return e.data }
