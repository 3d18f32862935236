package codec_test

import (
	"errors"
	"testing"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

// The fuzz targets check that decoding never panics, whatever the bytes,
// and that every error matches the sentinel it should. Seeds are in
// testdata/fuzz/<FuzzName>/ and in the f.Add calls.

// checkDecodeError fails the test when err is not nil and matches none of
// the wanted sentinels.
func checkDecodeError(t *testing.T, err error, wanted ...error) {
	t.Helper()
	if err != nil && !matchesSentinel(err, wanted...) {
		t.Fatalf("error %v matches none of %v", err, wanted)
	}
}

// fuzzGeneric decodes data into a generic value and, when that works,
// checks that the value encodes again to bytes that decode.
func fuzzGeneric(t *testing.T, c codec.Codec, data []byte) {
	var v any
	err := c.Decode(data, &v)
	checkDecodeError(t, err, codec.ErrMalformed)
	if err != nil {
		return
	}
	again, err := c.Encode(v)
	if err != nil {
		if errors.Is(err, codec.ErrNilValue) && v == nil {
			return // the input was null
		}
		t.Fatalf("%s: decoded %#v but cannot encode it again: %v", c.ContentType(), v, err)
	}
	var w any
	if err := c.Decode(again, &w); err != nil {
		t.Fatalf("%s: re-encoded %#v to %x, which does not decode: %v", c.ContentType(), v, again, err)
	}
}

func addCommonSeeds(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("null"))
	f.Add([]byte{0xc0})
	f.Add([]byte{0x0a, 0x03, 'o', '-', '1', 0x10, 0xe2, 0x09})
}

func FuzzJSONDecode(f *testing.F) {
	addCommonSeeds(f)
	good, err := codec.JSON().Encode(sampleOrder())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"id":"o-1","placed_at":"2024-13-45T99:00:00Z"}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`))
	c := codec.JSON()
	f.Fuzz(func(t *testing.T, data []byte) {
		var o order
		checkDecodeError(t, c.Decode(data, &o), codec.ErrMalformed)
		var m map[string]any
		checkDecodeError(t, c.Decode(data, &m), codec.ErrMalformed)
		fuzzGeneric(t, c, data)
	})
}

func FuzzMsgpackDecode(f *testing.F) {
	addCommonSeeds(f)
	good, err := codec.Msgpack().Encode(sampleOrder())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})       // a huge array
	f.Add([]byte{0x81, 0x91, 0x01, 0x01})             // an array as map key
	f.Add([]byte{0xd6, 0xff, 0x00, 0x00, 0x00, 0x01}) // a timestamp
	c := codec.Msgpack()
	f.Fuzz(func(t *testing.T, data []byte) {
		var o order
		checkDecodeError(t, c.Decode(data, &o), codec.ErrMalformed)
		var m map[any]any
		checkDecodeError(t, c.Decode(data, &m), codec.ErrMalformed)
		var lines []line
		checkDecodeError(t, c.Decode(data, &lines), codec.ErrMalformed)
		fuzzGeneric(t, c, data)
	})
}

func FuzzProtobufDecode(f *testing.F) {
	addCommonSeeds(f)
	good, err := codec.Protobuf().Encode(sampleProto())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0x0a, 0x01, 0xff}) // a string that is not UTF-8
	c := codec.Protobuf()
	f.Fuzz(func(t *testing.T, data []byte) {
		m := &testpb.OrderPlaced{}
		err := c.Decode(data, m)
		checkDecodeError(t, err, codec.ErrMalformed)
		if err != nil {
			return
		}
		// What decodes encodes again, to bytes that decode to the same.
		again, err := c.Encode(m)
		if err != nil {
			t.Fatalf("decoded %v but cannot encode it again: %v", m, err)
		}
		m2 := &testpb.OrderPlaced{}
		if err := c.Decode(again, m2); err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
	})
}

func FuzzRegistryDecode(f *testing.F) {
	reg := codec.NewRegistry(codec.JSON())
	if err := reg.Register("orders.*", codec.Msgpack()); err != nil {
		f.Fatal(err)
	}
	for _, c := range []codec.Codec{codec.JSON(), codec.Msgpack(), codec.Protobuf()} {
		var v any = sampleOrder()
		if c.ContentType() == codec.ContentTypeProtobuf {
			v = sampleProto()
		}
		data, err := c.Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(c.ContentType(), data)
	}
	f.Add("", []byte(`{"id":"o-1"}`))
	f.Add("APPLICATION/JSON; charset=utf-8", []byte(`{"id":1}`))
	f.Add("application/xml", []byte("<order/>"))
	f.Fuzz(func(t *testing.T, contentType string, data []byte) {
		_, lookupErr := reg.ByContentType(contentType)
		isProto := false
		if c, err := reg.ByContentType(contentType); err == nil {
			isProto = c.ContentType() == codec.ContentTypeProtobuf
		}
		var o order
		err := reg.Decode("orders.placed", contentType, data, &o)
		switch {
		case contentType != "" && lookupErr != nil:
			if !errors.Is(err, codec.ErrUnknownContentType) {
				t.Fatalf("content type %q is unknown, but Decode = %v", contentType, err)
			}
		case isProto:
			if !errors.Is(err, codec.ErrUnsupportedType) {
				t.Fatalf("protobuf into a struct = %v, want ErrUnsupportedType", err)
			}
		default:
			checkDecodeError(t, err, codec.ErrMalformed)
		}
		m := &testpb.OrderPlaced{}
		err = reg.Decode("orders.placed", contentType, data, m)
		checkDecodeError(t, err, codec.ErrMalformed, codec.ErrUnknownContentType)
	})
}
