package async

import (
	"fmt"
	"strconv"
	"time"
)

// Well-known metadata keys. Brokers carry them as headers, stores persist
// them with the message.
const (
	// MetaContentType is the payload's encoding, for example
	// "application/json"; decoders choose their codec by it.
	MetaContentType = "content-type"
	// MetaPartitionKey groups messages that must be published in order.
	MetaPartitionKey = "partition-key"
	// MetaTraceParent and MetaTraceState carry W3C trace context from the
	// producer to the consumer.
	MetaTraceParent = "traceparent"
	MetaTraceState  = "tracestate"
	// MetaMessageName and MetaSentAt are used by brokers that carry the
	// envelope as headers.
	MetaMessageName = "message-name"
	MetaSentAt      = "sent-at"
	// MetaDeliverAt is the time before which the relay does not publish
	// the message, and MetaExpiresAt the time after which it is not worth
	// delivering: the relay does not publish it and the inbox skips it.
	// Both are RFC 3339 strings in UTC with nanoseconds, as
	// [FormatTime] writes them; txm.WithDeliverAt, txm.WithDelay,
	// txm.WithExpiresAt and txm.WithTTL set them.
	MetaDeliverAt = "deliver-at"
	MetaExpiresAt = "expires-at"
)

// FormatTime formats t as the time metadata keys carry it: RFC 3339 in
// UTC with nanoseconds (trailing zeros of the fraction dropped).
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// Metadata is a message's headers. Values are usually strings; the getters
// convert the common other kinds.
type Metadata map[string]any

// Get returns the value under key, or nil.
func (m Metadata) Get(key string) any { return m[key] }

// Set stores value under key. It must not be called on a nil Metadata.
func (m Metadata) Set(key string, value any) { m[key] = value }

// Del removes key.
func (m Metadata) Del(key string) { delete(m, key) }

// GetString returns the value under key as a string: strings as they are,
// byte slices and [fmt.Stringer] values converted, numbers and booleans
// formatted, and "" when the key is absent or nil.
func (m Metadata) GetString(key string) string {
	switch v := m[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case []byte:
		return string(v)
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// GetInt returns the value under key as an int. Strings are parsed; ok is
// false when the key is absent or the value is not a whole number.
func (m Metadata) GetInt(key string) (n int, ok bool) {
	switch v := m[key].(type) {
	case int:
		return v, true
	case int8:
		return int(v), true
	case int16:
		return int(v), true
	case int32:
		return int(v), true
	case int64:
		return int(v), true
	case uint8:
		return int(v), true
	case uint16:
		return int(v), true
	case uint32:
		return int(v), true
	case uint64:
		return int(v), true
	case float64:
		if v == float64(int(v)) {
			return int(v), true
		}
	case string:
		n, err := strconv.Atoi(v)
		return n, err == nil
	}
	return 0, false
}

// GetBool returns the value under key as a bool. Strings are parsed with
// [strconv.ParseBool]; ok is false when the key is absent or not a boolean.
func (m Metadata) GetBool(key string) (b bool, ok bool) {
	switch v := m[key].(type) {
	case bool:
		return v, true
	case string:
		b, err := strconv.ParseBool(v)
		return b, err == nil
	}
	return false, false
}

// GetTime returns the value under key as a time. Strings are parsed as
// RFC 3339 with optional fractional seconds; ok is false otherwise.
func (m Metadata) GetTime(key string) (t time.Time, ok bool) {
	switch v := m[key].(type) {
	case time.Time:
		return v, true
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		return t, err == nil
	}
	return time.Time{}, false
}

// ContentType returns the MetaContentType value.
func (m Metadata) ContentType() string { return m.GetString(MetaContentType) }

// DeliverAt returns the MetaDeliverAt time; ok is false when the key is
// absent or its value is not a time.
func (m Metadata) DeliverAt() (t time.Time, ok bool) { return m.GetTime(MetaDeliverAt) }

// ExpiresAt returns the MetaExpiresAt time; ok is false when the key is
// absent or its value is not a time.
func (m Metadata) ExpiresAt() (t time.Time, ok bool) { return m.GetTime(MetaExpiresAt) }

// PartitionKey returns the MetaPartitionKey value; "" means no key.
func (m Metadata) PartitionKey() string { return m.GetString(MetaPartitionKey) }

// Strings returns the metadata as string pairs, converting every value with
// [Metadata.GetString]. Brokers with string-only headers use it.
func (m Metadata) Strings() map[string]string {
	out := make(map[string]string, len(m))
	for k := range m {
		out[k] = m.GetString(k)
	}
	return out
}
