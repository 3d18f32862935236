package codec

import (
	"errors"
	"reflect"
	"strings"
)

// Codec encodes values to bytes and decodes them back. Implementations are
// safe for concurrent use.
type Codec interface {
	// ContentType names the encoding, for example "application/json". It is
	// written into each message's metadata so the consumer can pick the
	// codec that decodes it.
	ContentType() string
	// Encode returns the encoding of v.
	Encode(v any) ([]byte, error)
	// Decode decodes data into v, which must be a non-nil pointer.
	Decode(data []byte, v any) error
}

// Content types of the built-in codecs.
const (
	// ContentTypeJSON is the content type of [JSON].
	ContentTypeJSON = "application/json"
	// ContentTypeMsgpack is the content type of [Msgpack].
	ContentTypeMsgpack = "application/msgpack"
	// ContentTypeProtobuf is the content type of [Protobuf].
	ContentTypeProtobuf = "application/protobuf"
)

// maxDepth is how deeply nested a msgpack value may be, the same limit as
// encoding/json's and protobuf's default recursion limit.
const maxDepth = 10000

var (
	// ErrUnknownContentType reports a content type that no codec of a
	// [Registry] decodes. Checked with errors.Is.
	ErrUnknownContentType = errors.New("codec: unknown content type")

	// ErrUnsupportedType reports a Go value that the codec cannot handle: a
	// value that is not a proto.Message given to [Protobuf], a decode target
	// that is not a pointer, or a value the underlying encoder rejects (a
	// channel or function, a NaN for JSON, a proto string that is not valid
	// UTF-8); then the encoder's error is wrapped too. Checked with
	// errors.Is.
	ErrUnsupportedType = errors.New("codec: unsupported type")

	// ErrNilValue reports a nil value to encode (a nil interface or a nil
	// pointer) or a nil decode target. Checked with errors.Is.
	ErrNilValue = errors.New("codec: nil value")

	// ErrMalformed reports bytes that cannot be decoded into the target:
	// bad syntax, truncated data, a value of the wrong kind for a field,
	// nesting deeper than 10000 levels. The decoder's own error is wrapped
	// too, so both errors.Is(err, ErrMalformed) and the cause are visible.
	// Checked with errors.Is.
	ErrMalformed = errors.New("codec: malformed data")

	// ErrInvalidPattern reports a topic pattern that [Registry.Register]
	// refuses. Checked with errors.Is.
	ErrInvalidPattern = errors.New("codec: invalid topic pattern")
)

// codecError is the error of a codec: it names the content type, the
// operation and the Go type, and unwraps to its kind (one of the sentinels)
// and to its cause when there is one.
type codecError struct {
	contentType string
	op          string // "encode" or "decode into"
	typ         reflect.Type
	kind        error
	detail      string
	cause       error
}

func (e *codecError) Error() string {
	var b strings.Builder
	b.WriteString("codec: ")
	b.WriteString(e.contentType)
	b.WriteString(": ")
	b.WriteString(e.op)
	b.WriteByte(' ')
	if e.typ == nil {
		b.WriteString("<nil>")
	} else {
		b.WriteString(e.typ.String())
	}
	b.WriteString(": ")
	b.WriteString(strings.TrimPrefix(e.kind.Error(), "codec: "))
	if e.detail != "" {
		b.WriteString(": ")
		b.WriteString(e.detail)
	}
	if e.cause != nil {
		b.WriteString(": ")
		b.WriteString(e.cause.Error())
	}
	return b.String()
}

func (e *codecError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

func encodeError(contentType string, v any, kind error, detail string, cause error) error {
	return &codecError{contentType: contentType, op: "encode", typ: reflect.TypeOf(v), kind: kind, detail: detail, cause: cause}
}

func decodeError(contentType string, v any, kind error, detail string, cause error) error {
	return &codecError{contentType: contentType, op: "decode into", typ: reflect.TypeOf(v), kind: kind, detail: detail, cause: cause}
}

// checkEncodable refuses nil values: a nil interface or a nil pointer.
func checkEncodable(contentType string, v any) error {
	if v == nil {
		return encodeError(contentType, v, ErrNilValue, "", nil)
	}
	if isNilPointer(v) {
		return encodeError(contentType, v, ErrNilValue, "", nil)
	}
	return nil
}

func isNilPointer(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// checkTarget refuses decode targets that are nil or not pointers.
func checkTarget(contentType string, v any) error {
	if v == nil {
		return decodeError(contentType, v, ErrNilValue, "", nil)
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer {
		return decodeError(contentType, v, ErrUnsupportedType, "the target must be a pointer", nil)
	}
	if rv.IsNil() {
		return decodeError(contentType, v, ErrNilValue, "", nil)
	}
	return nil
}
