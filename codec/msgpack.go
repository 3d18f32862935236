package codec

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// maxPooled is the largest payload whose encoder or decoder state goes back
// to the pool; larger ones are dropped so the pool does not pin big
// buffers.
const maxPooled = 64 << 10

// msgpackCodec is the MessagePack codec. It pools encoders and decoders,
// each with its buffer or reader, so a call allocates little more than its
// result.
type msgpackCodec struct {
	encoders sync.Pool // of *msgpackEncoder
	decoders sync.Pool // of *msgpackDecoder
}

type msgpackEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

type msgpackDecoder struct {
	r   bytes.Reader
	dec *msgpack.Decoder
}

// Msgpack returns the codec for MessagePack (github.com/vmihailenco/msgpack/v5),
// with content type "application/msgpack" ([ContentTypeMsgpack]).
//
// Struct fields are named by their `msgpack` tag and, when a field has
// none, by its `json` tag, so one struct definition serves both [JSON] and
// Msgpack; without either tag the Go field name is used.
//
// Times are written as MessagePack timestamps, which keep the instant but
// not the time zone: they decode in the local zone. Map entries are written
// in Go's map iteration order, so encoding a value with maps twice may give
// different bytes (unlike [JSON], which sorts map keys).
//
// Before decoding, the input is checked to hold exactly one well-formed
// MessagePack value whose declared lengths fit in the data and whose nesting
// is at most 10000 levels deep, so a short hostile input cannot make the
// decoder allocate gigabytes or overflow its stack; anything else is an
// error matching [ErrMalformed].
func Msgpack() Codec { return &msgpackCodec{} }

func (*msgpackCodec) ContentType() string { return ContentTypeMsgpack }

func (c *msgpackCodec) Encode(v any) ([]byte, error) {
	if err := checkEncodable(ContentTypeMsgpack, v); err != nil {
		return nil, err
	}
	e, _ := c.encoders.Get().(*msgpackEncoder)
	if e == nil {
		e = &msgpackEncoder{enc: msgpack.NewEncoder(nil)}
	}
	e.buf.Reset()
	e.enc.Reset(&e.buf)
	e.enc.SetCustomStructTag("json")
	err := e.enc.Encode(v)
	var data []byte
	if err == nil {
		data = bytes.Clone(e.buf.Bytes())
	}
	if e.buf.Cap() <= maxPooled {
		e.enc.Reset(nil)
		c.encoders.Put(e)
	}
	if err != nil {
		return nil, encodeError(ContentTypeMsgpack, v, ErrUnsupportedType, "", err)
	}
	return data, nil
}

func (c *msgpackCodec) Decode(data []byte, v any) error {
	if err := checkTarget(ContentTypeMsgpack, v); err != nil {
		return err
	}
	if err := checkMsgpack(data); err != nil {
		return decodeError(ContentTypeMsgpack, v, ErrMalformed, "", err)
	}
	d, _ := c.decoders.Get().(*msgpackDecoder)
	if d == nil {
		d = &msgpackDecoder{dec: msgpack.NewDecoder(nil)}
	}
	d.r.Reset(data)
	// Reset clears every option, so the preallocation option (which starts
	// a goroutine per decoded type that never ends) stays off.
	d.dec.Reset(&d.r)
	d.dec.SetCustomStructTag("json")
	panicked, err := decodeGuarded(d.dec, v)
	d.r.Reset(nil) // do not keep the caller's bytes
	if !panicked && len(data) <= maxPooled {
		c.decoders.Put(d)
	}
	if err != nil {
		return decodeError(ContentTypeMsgpack, v, ErrMalformed, "", err)
	}
	return nil
}

// decodeGuarded decodes with dec and turns a panic of the decoder into an
// error. The input is validated before, so this is a second line of
// defence: the decoder panics on a few inputs that are well-formed
// MessagePack but cannot be stored in Go, such as a map key that is an
// array.
func decodeGuarded(dec *msgpack.Decoder, v any) (panicked bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked, err = true, fmt.Errorf("msgpack: decoder panicked: %v", p)
		}
	}()
	return false, dec.Decode(v)
}
