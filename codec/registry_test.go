package codec_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

func TestRegistryFor(t *testing.T) {
	t.Parallel()
	eu := testCodec{"application/x-eu"}
	def := testCodec{"application/x-default"}
	reg := codec.NewRegistry(def)
	for pattern, c := range map[string]codec.Codec{
		"orders.placed": codec.Protobuf(),
		"orders.*":      codec.Msgpack(),
		"orders.eu.*":   eu,
		"payments":      codec.JSON(),
	} {
		if err := reg.Register(pattern, c); err != nil {
			t.Fatalf("Register(%q): %v", pattern, err)
		}
	}
	for _, tc := range []struct {
		topic string
		want  string // content type of the expected codec
	}{
		{"orders.placed", codec.ContentTypeProtobuf},   // exact beats patterns
		{"orders.cancelled", codec.ContentTypeMsgpack}, // pattern
		{"orders.eu", codec.ContentTypeMsgpack},        // "orders.*" matches one more segment
		{"orders.eu.placed", "application/x-eu"},       // longer prefix wins
		{"orders.eu.de.placed", "application/x-eu"},    // patterns match deeper topics
		{"orders.eu.", codec.ContentTypeMsgpack},       // "orders.eu.*" needs something after the dot
		{"orders", "application/x-default"},            // the prefix alone does not match
		{"orders.", "application/x-default"},           // nor the prefix and the dot
		{"ordersx.placed", "application/x-default"},    // prefixes end at a dot
		{"payments", codec.ContentTypeJSON},            // exact
		{"payments.refunded", "application/x-default"}, // an exact name is no pattern
		{"", "application/x-default"},
		{"inventory.reserved", "application/x-default"},
	} {
		if got := reg.For(tc.topic).ContentType(); got != tc.want {
			t.Errorf("For(%q) = %s, want %s", tc.topic, got, tc.want)
		}
	}
}

func TestRegistryDefaults(t *testing.T) {
	t.Parallel()
	var zero codec.Registry
	for name, reg := range map[string]*codec.Registry{
		"NewRegistry(nil)": codec.NewRegistry(nil),
		"zero Registry":    &zero,
	} {
		if got := reg.For("any.topic").ContentType(); got != codec.ContentTypeJSON {
			t.Errorf("%s: default codec = %s, want JSON", name, got)
		}
		for _, ct := range []string{codec.ContentTypeJSON, codec.ContentTypeMsgpack, codec.ContentTypeProtobuf} {
			if c, err := reg.ByContentType(ct); err != nil || c.ContentType() != ct {
				t.Errorf("%s: ByContentType(%q) = %v, %v", name, ct, c, err)
			}
		}
	}
	// A zero Registry accepts registrations too.
	if err := zero.Register("orders.*", codec.Msgpack()); err != nil {
		t.Fatal(err)
	}
	if got := zero.For("orders.placed").ContentType(); got != codec.ContentTypeMsgpack {
		t.Errorf("zero Registry: For after Register = %s", got)
	}
	// The default codec's content type is known for decoding.
	custom := codec.NewRegistry(testCodec{"application/x-custom"})
	if _, err := custom.ByContentType("application/x-custom"); err != nil {
		t.Errorf("default codec's content type unknown: %v", err)
	}
}

func TestRegistryRegisterErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		pattern string
		c       codec.Codec
		want    error // nil: any error
	}{
		{"", codec.JSON(), codec.ErrInvalidPattern},
		{"*", codec.JSON(), codec.ErrInvalidPattern},
		{".*", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.*.placed", codec.JSON(), codec.ErrInvalidPattern},
		{"*.placed", codec.JSON(), codec.ErrInvalidPattern},
		{"orders*", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.**", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.*.*", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.>", codec.JSON(), codec.ErrInvalidPattern},
		{">", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.>.placed", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.*.>", codec.JSON(), codec.ErrInvalidPattern},
		{"orders..placed", codec.JSON(), codec.ErrInvalidPattern},
		{".orders", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.", codec.JSON(), codec.ErrInvalidPattern},
		{"orders..*", codec.JSON(), codec.ErrInvalidPattern},
		{"orders.*", nil, codec.ErrNilValue},
		{"orders.placed", nil, codec.ErrNilValue},
		{"orders.placed", testCodec{""}, nil},
		{"orders.placed", testCodec{" ; charset=utf-8"}, nil},
	} {
		reg := codec.NewRegistry(nil)
		err := reg.Register(tc.pattern, tc.c)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Register(%q, %v) = %v, want an error matching %v", tc.pattern, tc.c, err, tc.want)
			continue
		}
		if tc.pattern != "" && !strings.Contains(err.Error(), tc.pattern) {
			t.Errorf("error %q does not name the pattern %q", err, tc.pattern)
		}
		if errors.Is(err, codec.ErrInvalidPattern) && !strings.Contains(err.Error(), `"orders.*"`) {
			t.Errorf("error %q does not name the supported forms", err)
		}
		// A refused registration changes nothing.
		if got := reg.For("orders.placed").ContentType(); got != codec.ContentTypeJSON {
			t.Errorf("after a failed Register, For = %s", got)
		}
	}
}

func TestRegistryReplace(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(nil)
	for _, c := range []codec.Codec{codec.Msgpack(), codec.Protobuf(), codec.JSON()} {
		if err := reg.Register("orders.*", c); err != nil {
			t.Fatal(err)
		}
		if got := reg.For("orders.placed"); got.ContentType() != c.ContentType() {
			t.Errorf("after registering %s, For = %s", c.ContentType(), got.ContentType())
		}
	}
}

func TestRegistryByContentType(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(nil)
	for _, tc := range []struct {
		contentType string
		want        string // "" for unknown
	}{
		{"application/json", codec.ContentTypeJSON},
		{"APPLICATION/JSON", codec.ContentTypeJSON},
		{"application/json; charset=utf-8", codec.ContentTypeJSON},
		{"Application/Json;charset=UTF-8", codec.ContentTypeJSON},
		{"  application/msgpack  ", codec.ContentTypeMsgpack},
		{"application/protobuf", codec.ContentTypeProtobuf},
		{"application/xml", ""},
		{"application/json-seq", ""},
		{"json", ""},
		{"", ""},
		{";", ""},
	} {
		c, err := reg.ByContentType(tc.contentType)
		switch {
		case tc.want == "":
			if !errors.Is(err, codec.ErrUnknownContentType) || c != nil {
				t.Errorf("ByContentType(%q) = %v, %v; want ErrUnknownContentType", tc.contentType, c, err)
			} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.contentType)) {
				t.Errorf("error %q does not name the content type", err)
			}
		case err != nil || c.ContentType() != tc.want:
			t.Errorf("ByContentType(%q) = %v, %v; want %s", tc.contentType, c, err, tc.want)
		}
	}
}

func TestRegistryKnown(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(nil)
	avro := testCodec{"application/x-avro"}
	if _, err := reg.ByContentType("application/x-avro"); !errors.Is(err, codec.ErrUnknownContentType) {
		t.Fatalf("before Known: %v", err)
	}
	reg.Known(avro, nil, testCodec{""}) // nil and unnamed codecs are ignored
	c, err := reg.ByContentType("Application/X-Avro; v=1")
	if err != nil || c != codec.Codec(avro) {
		t.Fatalf("after Known: %v, %v", c, err)
	}
	if got := reg.For("orders.placed").ContentType(); got != codec.ContentTypeJSON {
		t.Errorf("Known changed the encoding codec to %s", got)
	}
	// Registering for encoding makes a content type known as well.
	thrift := testCodec{"application/x-thrift"}
	if err := reg.Register("legacy.*", thrift); err != nil {
		t.Fatal(err)
	}
	if c, err := reg.ByContentType("application/x-thrift"); err != nil || c != codec.Codec(thrift) {
		t.Errorf("registered codec not known for decoding: %v, %v", c, err)
	}
	// A later codec with the same content type replaces the known one.
	other := testCodec{"APPLICATION/X-AVRO"}
	reg.Known(other)
	if c, _ := reg.ByContentType("application/x-avro"); c != codec.Codec(other) {
		t.Errorf("ByContentType after a replacing Known = %v", c)
	}
}

// TestRegistryCodecSwitch moves a topic from msgpack to JSON while a
// message encoded with msgpack is still in flight.
func TestRegistryCodecSwitch(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(codec.JSON())
	if err := reg.Register("orders.placed", codec.Msgpack()); err != nil {
		t.Fatal(err)
	}
	want := sampleOrder()
	inFlight, ct, err := reg.Encode("orders.placed", want)
	if err != nil || ct != codec.ContentTypeMsgpack {
		t.Fatalf("Encode = %v, %q", err, ct)
	}
	if err := reg.Register("orders.placed", codec.JSON()); err != nil {
		t.Fatal(err)
	}
	var got order
	if err := reg.Decode("orders.placed", ct, inFlight, &got); err != nil {
		t.Fatalf("decoding the in-flight msgpack message after the switch: %v", err)
	}
	if got.ID != want.ID || got.AmountCents != want.AmountCents || len(got.Lines) != 2 {
		t.Errorf("decoded %+v", got)
	}
	data, ct, err := reg.Encode("orders.placed", want)
	if err != nil || ct != codec.ContentTypeJSON || data[0] != '{' {
		t.Fatalf("Encode after the switch = %q, %q, %v; want JSON", data, ct, err)
	}
	// Without a content type, Decode falls back to the topic's codec now:
	// JSON, which cannot read the old msgpack bytes.
	if err := reg.Decode("orders.placed", "", inFlight, &got); !errors.Is(err, codec.ErrMalformed) {
		t.Errorf("Decode without content type = %v, want ErrMalformed from the JSON codec", err)
	}
	if err := reg.Decode("orders.placed", "", data, &got); err != nil {
		t.Errorf("Decode without content type of JSON data: %v", err)
	}
}

func TestRegistryEncodeDecodeErrors(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(nil)
	if err := reg.Register("orders.*", codec.Protobuf()); err != nil {
		t.Fatal(err)
	}
	err := reg.Decode("orders.placed", "application/xml", []byte("<x/>"), &order{})
	if !errors.Is(err, codec.ErrUnknownContentType) || !strings.Contains(err.Error(), "orders.placed") {
		t.Errorf("unknown content type: %v, want ErrUnknownContentType naming the topic", err)
	}
	_, ct, err := reg.Encode("orders.placed", sampleOrder())
	if !errors.Is(err, codec.ErrUnsupportedType) || ct != codec.ContentTypeProtobuf {
		t.Errorf("Encode of a struct on a protobuf topic = %q, %v; want ErrUnsupportedType", ct, err)
	}
	if _, _, err := reg.Encode("other", nil); !errors.Is(err, codec.ErrNilValue) {
		t.Errorf("Encode(nil) = %v, want ErrNilValue", err)
	}
	data, ct, err := reg.Encode("orders.placed", sampleProto())
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Decode("orders.placed", ct, data, &order{}); !errors.Is(err, codec.ErrUnsupportedType) {
		t.Errorf("Decode of protobuf into a struct = %v, want ErrUnsupportedType", err)
	}
	if err := reg.Decode("orders.placed", ct, data[:len(data)-1], &testpb.OrderPlaced{}); !errors.Is(err, codec.ErrMalformed) {
		t.Errorf("Decode of truncated protobuf = %v, want ErrMalformed", err)
	}
}

// TestRegistryConcurrent reads a registry from several goroutines while
// another registers codecs; run it with -race.
func TestRegistryConcurrent(t *testing.T) {
	t.Parallel()
	reg := codec.NewRegistry(nil)
	want := sampleOrder()
	jsonData, err := codec.JSON().Encode(want)
	if err != nil {
		t.Fatal(err)
	}
	const readers, rounds = 4, 300
	var wg sync.WaitGroup
	errs := make(chan error, readers+1)
	wg.Go(func() {
		for i := range rounds {
			var c codec.Codec = codec.Msgpack()
			if i%2 == 1 {
				c = codec.JSON()
			}
			if err := reg.Register("orders.*", c); err != nil {
				errs <- err
				return
			}
			if err := reg.Register(fmt.Sprintf("topic.%d", i), c); err != nil {
				errs <- err
				return
			}
			reg.Known(testCodec{fmt.Sprintf("application/x-%d", i)})
		}
	})
	for range readers {
		wg.Go(func() {
			for range rounds {
				data, ct, err := reg.Encode("orders.placed", want)
				if err != nil {
					errs <- err
					return
				}
				if ct != codec.ContentTypeJSON && ct != codec.ContentTypeMsgpack {
					errs <- fmt.Errorf("Encode chose %s", ct)
					return
				}
				var got order
				if err := reg.Decode("orders.placed", ct, data, &got); err != nil {
					errs <- err
					return
				}
				if got.ID != want.ID {
					errs <- fmt.Errorf("decoded ID %q", got.ID)
					return
				}
				if err := reg.Decode("other", "application/json", jsonData, &got); err != nil {
					errs <- err
					return
				}
				if c := reg.For("payments"); c.ContentType() != codec.ContentTypeJSON {
					errs <- fmt.Errorf("For(payments) = %s", c.ContentType())
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := reg.For("topic.299").ContentType(); got != codec.ContentTypeJSON {
		t.Errorf("last registration lost: %s", got)
	}
	if _, err := reg.ByContentType("application/x-299"); err != nil {
		t.Errorf("last Known lost: %v", err)
	}
}

// TestRegistryLookupsDoNotAllocate checks that choosing a codec costs no
// allocation, whatever the path.
func TestRegistryLookupsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	reg := codec.NewRegistry(nil)
	for _, p := range []string{"orders.placed", "orders.*", "orders.eu.*"} {
		if err := reg.Register(p, codec.Msgpack()); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"For exact", func() { reg.For("orders.placed") }},
		{"For pattern", func() { reg.For("orders.eu.de.placed") }},
		{"For default", func() { reg.For("payments.refunded.late") }},
		{"ByContentType", func() { _, _ = reg.ByContentType("application/msgpack") }},
		{"ByContentType with parameters", func() { _, _ = reg.ByContentType("application/json; charset=utf-8") }},
		{"ByContentType mixed case", func() { _, _ = reg.ByContentType("Application/JSON") }},
	} {
		if n := testing.AllocsPerRun(100, tc.fn); n != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, n)
		}
	}
}
