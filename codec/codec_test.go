package codec_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

func TestContentTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		c    codec.Codec
		want string
	}{
		{codec.JSON(), "application/json"},
		{codec.Msgpack(), "application/msgpack"},
		{codec.Protobuf(), "application/protobuf"},
	} {
		if got := tc.c.ContentType(); got != tc.want {
			t.Errorf("%T.ContentType() = %q, want %q", tc.c, got, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	full := sampleOrder()
	zone := sampleOrder()
	zone.PlacedAt = time.Date(2023, 12, 31, 23, 59, 59, 1, time.FixedZone("CET", 3600))
	sparse := order{ID: "o-2", Labels: map[string]string{}, Items: []string{}}
	for _, c := range []codec.Codec{codec.JSON(), codec.Msgpack()} {
		for _, tc := range []struct {
			name string
			in   order
		}{
			{"nested struct, pointers, maps and time", full},
			{"time with a zone", zone},
			{"zero value", order{}},
			{"empty, non-nil slice and map", sparse},
		} {
			t.Run(c.ContentType()+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				data, err := c.Encode(tc.in)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				var got order
				if err := c.Decode(data, &got); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !reflect.DeepEqual(got.normalized(), tc.in.normalized()) {
					t.Errorf("round trip:\n got %+v\nwant %+v", got, tc.in)
				}
				if !got.PlacedAt.Equal(tc.in.PlacedAt) {
					t.Errorf("time %v, want the instant %v", got.PlacedAt, tc.in.PlacedAt)
				}
				// Encoding a pointer encodes what it points to. (Bytes are
				// not compared: msgpack writes maps in iteration order.)
				ptrData, err := c.Encode(&tc.in)
				if err != nil {
					t.Fatalf("Encode(pointer): %v", err)
				}
				var fromPtr order
				if err := c.Decode(ptrData, &fromPtr); err != nil {
					t.Fatalf("Decode(Encode(&v)): %v", err)
				}
				if !reflect.DeepEqual(fromPtr.normalized(), tc.in.normalized()) {
					t.Errorf("Encode(&v) decodes to %+v, want %+v", fromPtr, tc.in)
				}
			})
		}
	}
	t.Run("scalars and generic maps", func(t *testing.T) {
		t.Parallel()
		for _, c := range []codec.Codec{codec.JSON(), codec.Msgpack()} {
			for _, in := range []any{"text", int64(-42), true, []string{"a", "b"}, map[string]string{"k": "v"}} {
				data, err := c.Encode(in)
				if err != nil {
					t.Fatalf("%s: Encode(%v): %v", c.ContentType(), in, err)
				}
				got := reflect.New(reflect.TypeOf(in))
				if err := c.Decode(data, got.Interface()); err != nil {
					t.Fatalf("%s: Decode: %v", c.ContentType(), err)
				}
				if !reflect.DeepEqual(got.Elem().Interface(), in) {
					t.Errorf("%s: round trip of %v gave %v", c.ContentType(), in, got.Elem().Interface())
				}
			}
		}
	})
	t.Run("protobuf", func(t *testing.T) {
		t.Parallel()
		c := codec.Protobuf()
		for _, in := range []*testpb.OrderPlaced{sampleProto(), {}, {Id: "only-id"}} {
			data, err := c.Encode(in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got := &testpb.OrderPlaced{Id: "stale", Items: []string{"stale"}}
			if err := c.Decode(data, got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !proto.Equal(got, in) {
				t.Errorf("round trip gave %v, want %v (the target is reset first)", got, in)
			}
		}
	})
}

// TestMsgpackUsesJSONTags checks the tag fallback: a struct with only json
// tags is encoded with the json names, and an explicit msgpack tag wins.
func TestMsgpackUsesJSONTags(t *testing.T) {
	t.Parallel()
	type tagged struct {
		Name  string `json:"name"`
		Both  string `json:"json_name" msgpack:"mp_name"`
		Plain string
		Skip  string `json:"-"`
		Empty string `json:"empty,omitempty"`
	}
	data, err := codec.Msgpack().Encode(tagged{Name: "n", Both: "b", Plain: "p", Skip: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "n", "mp_name": "b", "Plain": "p"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("msgpack keys = %v, want %v", got, want)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	valid := map[string][]byte{}
	for _, c := range []codec.Codec{codec.JSON(), codec.Msgpack()} {
		data, err := c.Encode(sampleOrder())
		if err != nil {
			t.Fatal(err)
		}
		valid[c.ContentType()] = data
	}
	pbData, err := proto.Marshal(sampleProto())
	if err != nil {
		t.Fatal(err)
	}
	valid[codec.ContentTypeProtobuf] = pbData

	var nilOrder *order
	var nilProto *testpb.OrderPlaced
	deep := bytes.Repeat([]byte{0x91}, 10001) // 10001 nested one-element arrays
	deep = append(deep, 0x01)
	type call func(c codec.Codec) error
	encode := func(v any) call {
		return func(c codec.Codec) error { _, err := c.Encode(v); return err }
	}
	decode := func(data []byte, v any) call {
		return func(c codec.Codec) error { return c.Decode(data, v) }
	}
	decodeValid := func(v func() any) call {
		return func(c codec.Codec) error { return c.Decode(valid[c.ContentType()], v()) }
	}
	for _, tc := range []struct {
		name   string
		codecs []codec.Codec
		call   call
		want   error
		detail string // a part of the message besides the content type
	}{
		// Nil values and targets, for every codec.
		{"encode nil", all(), encode(nil), codec.ErrNilValue, "nil value"},
		{"encode nil pointer", []codec.Codec{codec.JSON(), codec.Msgpack()}, encode(nilOrder), codec.ErrNilValue, "*codec_test.order"},
		{"encode nil proto", pb(), encode(nilProto), codec.ErrNilValue, "*testpb.OrderPlaced"},
		{"decode into nil", all(), decodeValid(func() any { return nil }), codec.ErrNilValue, "<nil>"},
		{"decode into nil pointer", []codec.Codec{codec.JSON(), codec.Msgpack()}, decodeValid(func() any { return nilOrder }), codec.ErrNilValue, "*codec_test.order"},
		{"decode into nil proto", pb(), decodeValid(func() any { return nilProto }), codec.ErrNilValue, "*testpb.OrderPlaced"},
		{"decode into a non-pointer", []codec.Codec{codec.JSON(), codec.Msgpack()}, decodeValid(func() any { return order{} }), codec.ErrUnsupportedType, "must be a pointer"},

		// Wrong Go types.
		{"protobuf encodes a struct", pb(), encode(sampleOrder()), codec.ErrUnsupportedType, "proto.Message"},
		{"protobuf decodes into a struct", pb(), decodeValid(func() any { return &order{} }), codec.ErrUnsupportedType, "proto.Message"},
		{"protobuf decodes into a non-pointer", pb(), decodeValid(func() any { return testpb.OrderPlaced{} }), codec.ErrUnsupportedType, "proto.Message"},
		{"protobuf string that is not UTF-8", pb(), encode(&testpb.OrderPlaced{Id: "\xff"}), codec.ErrUnsupportedType, "UTF-8"},
		{"json encodes a channel", []codec.Codec{codec.JSON()}, encode(make(chan int)), codec.ErrUnsupportedType, "chan int"},
		{"json encodes NaN", []codec.Codec{codec.JSON()}, encode(math.NaN()), codec.ErrUnsupportedType, "NaN"},
		{"msgpack encodes a channel", []codec.Codec{codec.Msgpack()}, encode(make(chan int)), codec.ErrUnsupportedType, "chan int"},

		// Malformed bytes.
		{"json syntax", []codec.Codec{codec.JSON()}, decode([]byte("{not json"), &order{}), codec.ErrMalformed, "invalid character"},
		{"json truncated", []codec.Codec{codec.JSON()}, decode([]byte(`{"id":`), &order{}), codec.ErrMalformed, "unexpected end"},
		{"json empty", []codec.Codec{codec.JSON()}, decode(nil, &order{}), codec.ErrMalformed, "unexpected end"},
		{"json wrong field type", []codec.Codec{codec.JSON()}, decode([]byte(`{"amount_cents":"x"}`), &order{}), codec.ErrMalformed, "amount_cents"},
		{"json bad time", []codec.Codec{codec.JSON()}, decode([]byte(`{"placed_at":"yesterday"}`), &order{}), codec.ErrMalformed, "yesterday"},
		{"msgpack never-used code", []codec.Codec{codec.Msgpack()}, decode([]byte{0xc1}, &order{}), codec.ErrMalformed, "invalid code 0xc1"},
		{"msgpack empty", []codec.Codec{codec.Msgpack()}, decode(nil, &order{}), codec.ErrMalformed, "unexpected end"},
		{"msgpack truncated string", []codec.Codec{codec.Msgpack()}, decode([]byte{0x81, 0xa2, 'i', 'd', 0xa5, 'a'}, &order{}), codec.ErrMalformed, "unexpected end"},
		{"msgpack huge array", []codec.Codec{codec.Msgpack()}, decode([]byte{0x81, 0xa5, 'l', 'i', 'n', 'e', 's', 0xdd, 0xff, 0xff, 0xff, 0xff}, &order{}), codec.ErrMalformed, "4294967295 elements"},
		{"msgpack huge binary", []codec.Codec{codec.Msgpack()}, decode([]byte{0xc6, 0xff, 0xff, 0xff, 0xff, 0x00}, new([]byte)), codec.ErrMalformed, "unexpected end"},
		{"msgpack huge map", []codec.Codec{codec.Msgpack()}, decode([]byte{0xdf, 0x7f, 0xff, 0xff, 0xff}, new(map[string]any)), codec.ErrMalformed, "elements declared"},
		{"msgpack trailing bytes", []codec.Codec{codec.Msgpack()}, decode([]byte{0x01, 0x02}, new(int)), codec.ErrMalformed, "1 bytes after the value"},
		{"msgpack too deep", []codec.Codec{codec.Msgpack()}, decode(deep, new(any)), codec.ErrMalformed, "nesting deeper than 10000"},
		{"msgpack wrong field type", []codec.Codec{codec.Msgpack()}, decode([]byte{0x81, 0xac, 'a', 'm', 'o', 'u', 'n', 't', '_', 'c', 'e', 'n', 't', 's', 0xa1, 'x'}, &order{}), codec.ErrMalformed, "msgpack"},
		{"msgpack map key that is an array", []codec.Codec{codec.Msgpack()}, decode([]byte{0x81, 0x91, 0x01, 0x01}, new(map[any]any)), codec.ErrMalformed, "decoder panicked: runtime error: hash of unhashable type"},
		{"protobuf bad wire type", pb(), decode([]byte{0xff, 0xff, 0xff}, &testpb.OrderPlaced{}), codec.ErrMalformed, "proto"},
		{"protobuf truncated field", pb(), decode([]byte{0x0a, 0x05, 'a'}, &testpb.OrderPlaced{}), codec.ErrMalformed, "proto"},
		{"protobuf string that is not UTF-8", pb(), decode([]byte{0x0a, 0x01, 0xff}, &testpb.OrderPlaced{}), codec.ErrMalformed, "UTF-8"},
	} {
		for _, c := range tc.codecs {
			t.Run(c.ContentType()+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				err := tc.call(c)
				if !errors.Is(err, tc.want) {
					t.Fatalf("error = %v, want one matching %v", err, tc.want)
				}
				for _, s := range sentinels {
					if s != tc.want && errors.Is(err, s) {
						t.Errorf("error %v also matches %v", err, s)
					}
				}
				msg := err.Error()
				if !strings.Contains(msg, c.ContentType()) {
					t.Errorf("error %q does not name the content type %s", msg, c.ContentType())
				}
				if !strings.Contains(msg, tc.detail) {
					t.Errorf("error %q does not mention %q", msg, tc.detail)
				}
			})
		}
	}
}

func all() []codec.Codec { return []codec.Codec{codec.JSON(), codec.Msgpack(), codec.Protobuf()} }
func pb() []codec.Codec  { return []codec.Codec{codec.Protobuf()} }

// TestMalformedWrapsCause checks that the underlying decoder's error stays
// reachable with errors.As.
func TestMalformedWrapsCause(t *testing.T) {
	t.Parallel()
	err := codec.JSON().Decode([]byte("{"), &order{})
	var syntax *json.SyntaxError
	if !errors.Is(err, codec.ErrMalformed) || !errors.As(err, &syntax) {
		t.Fatalf("error = %v, want ErrMalformed wrapping a *json.SyntaxError", err)
	}
	err = codec.JSON().Decode([]byte(`{"id":1}`), &order{})
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) || typeErr.Field != "id" {
		t.Fatalf("error = %v, want a wrapped *json.UnmarshalTypeError for field id", err)
	}
}

// TestMsgpackHostileLengthsDoNotAllocate checks that a short input
// announcing a huge container is refused before the decoder allocates for
// it (msgpack v5 ignores its own allocation limit for slices).
func TestMsgpackHostileLengthsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	c := codec.Msgpack()
	hostile := []byte{0xdd, 0x0f, 0xff, 0xff, 0xff} // array of 268 million elements
	var target []line
	var ms1, ms2 runtimeMemStats
	ms1.read()
	err := c.Decode(hostile, &target)
	ms2.read()
	if !errors.Is(err, codec.ErrMalformed) {
		t.Fatalf("error = %v, want ErrMalformed", err)
	}
	if grown := ms2.totalAlloc - ms1.totalAlloc; grown > 1<<20 {
		t.Errorf("decoding a 5-byte input allocated %d bytes", grown)
	}
}
