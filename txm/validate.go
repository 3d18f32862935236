package txm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/transmanager/transmanager/async"
)

// DefaultMaxMessageSize is the default of [OutboxConfig.MaxMessageSize]:
// 1 MiB, the default max_payload of a NATS server.
const DefaultMaxMessageSize = 1 << 20

// ErrMessageTooLarge is matched by the error of a Publish through
// [OutboxPublisher] (and so of [Outbox.Publish] on it) whose message is
// larger than [OutboxConfig.MaxMessageSize]. Nothing is saved, so the
// caller's transaction can roll back or go on without the message; a broker
// that can never carry the message would otherwise fail it at the relay and
// dead-letter it. The error gives the size and the limit. Checked with
// errors.Is.
var ErrMessageTooLarge = errors.New("txm: message too large")

// ErrInvalidMetadata is matched by the error of a Publish through
// [OutboxPublisher] (and so of [Outbox.Publish] on it) whose message has
// metadata that cannot be carried as a NATS or HTTP header: a key that is
// empty or has a character other than the token characters of RFC 9110
// (letters, digits and !#$%&'*+-.^_`|~; so no space, colon or control
// character), or a value with a CR or LF. Nothing is saved. The error names
// the key. It is matched as well by a delivery time or expiry
// ([async.MetaDeliverAt], [async.MetaExpiresAt]) that is not an RFC 3339
// string, by an expiry that is not after the delivery time, and by the
// error of a scheduling option given a value it cannot use ([WithDelay],
// [WithTTL]). Checked with errors.Is.
var ErrInvalidMetadata = errors.New("txm: invalid metadata")

// envelopeOverhead is what a message's size counts besides its payload,
// metadata, ID and name: what the JetStream publisher adds around them as
// headers ("NATS/1.0" and the closing CRLF, the Nats-Msg-Id, message-name
// and sent-at names and separators, and the longest sent-at value).
const envelopeOverhead = len("NATS/1.0\r\n") + len("\r\n") +
	len("Nats-Msg-Id: \r\n") + len("message-name: \r\n") +
	len("sent-at: \r\n") + len("2006-01-02T15:04:05.999999999Z")

// tokenChars marks the bytes allowed in a header name (RFC 9110 tchar).
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validMetadataKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenChars[k[i]] {
			return false
		}
	}
	return true
}

// checkMessage refuses a message the outbox must not save: invalid
// metadata, or a size above max (when max > 0). It allocates nothing for a
// valid message whose metadata values are strings or byte slices.
func checkMessage(msg async.Message, max int) error {
	size := len(msg.Data()) + len(msg.ID()) + len(msg.MessageName()) + envelopeOverhead
	for k, v := range msg.Metadata() {
		if !validMetadataKey(k) {
			return fmt.Errorf("txm: outbox: message %s: metadata key %q is not a valid header name (token characters only, no spaces, colons or control characters): %w",
				msg.ID(), k, ErrInvalidMetadata)
		}
		var n int
		var bad bool
		switch v := v.(type) {
		case string:
			n, bad = len(v), strings.ContainsAny(v, "\r\n")
		case []byte:
			n, bad = len(v), bytes.ContainsAny(v, "\r\n")
		case nil:
		default:
			s := msg.Metadata().GetString(k)
			n, bad = len(s), strings.ContainsAny(s, "\r\n")
		}
		if bad {
			return fmt.Errorf("txm: outbox: message %s: metadata %q: value has a CR or LF: %w", msg.ID(), k, ErrInvalidMetadata)
		}
		size += len(k) + len(": \r\n") + n
	}
	if _, _, err := ScheduleOf(msg.Metadata()); err != nil {
		return fmt.Errorf("txm: outbox: message %s: %w", msg.ID(), err)
	}
	if max > 0 && size > max {
		return fmt.Errorf("txm: outbox: message %s is %d bytes (payload %d), more than the maximum of %d: %w",
			msg.ID(), size, len(msg.Data()), max, ErrMessageTooLarge)
	}
	return nil
}
