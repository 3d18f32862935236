package codec_test

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

// propertySeed fixes the random values of the property tests, so a failure
// reproduces; the failing case is logged with its index.
const propertySeed = 20240517

const propertyCases = 300

// TestPropertyRoundTrip checks that random values survive a round trip
// through each codec, and that every msgpack encoding passes the decoder's
// input validation.
func TestPropertyRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []codec.Codec{codec.JSON(), codec.Msgpack()} {
		t.Run(c.ContentType(), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(propertySeed, 1))
			for i := range propertyCases {
				in := randomOrder(rng)
				data, err := c.Encode(in)
				if err != nil {
					t.Fatalf("case %d: Encode(%+v): %v", i, in, err)
				}
				var got order
				if err := c.Decode(data, &got); err != nil {
					t.Fatalf("case %d: Decode(Encode(%+v)): %v", i, in, err)
				}
				if !reflect.DeepEqual(got.normalized(), in.normalized()) {
					t.Fatalf("case %d: round trip\n got %+v\nwant %+v", i, got, in)
				}
			}
		})
	}
	t.Run(codec.ContentTypeProtobuf, func(t *testing.T) {
		t.Parallel()
		c := codec.Protobuf()
		rng := rand.New(rand.NewPCG(propertySeed, 2))
		for i := range propertyCases {
			in := randomProto(rng)
			data, err := c.Encode(in)
			if err != nil {
				t.Fatalf("case %d: Encode(%v): %v", i, in, err)
			}
			got := &testpb.OrderPlaced{}
			if err := c.Decode(data, got); err != nil {
				t.Fatalf("case %d: Decode: %v", i, err)
			}
			if !proto.Equal(got, in) {
				t.Fatalf("case %d: round trip\n got %v\nwant %v", i, got, in)
			}
		}
	})
}

// randomString returns valid UTF-8 (JSON and proto3 strings require it)
// mixing ASCII, control characters and runes from every plane.
func randomString(rng *rand.Rand) string {
	n := rng.IntN(12)
	var b strings.Builder
	for range n {
		var r rune
		switch rng.IntN(4) {
		case 0:
			r = rune(rng.IntN(0x20)) // control characters, escaped in JSON
		case 1, 2:
			r = rune(0x20 + rng.IntN(0x5f))
		default:
			r = rune(rng.IntN(0x110000))
			if r >= 0xd800 && r <= 0xdfff { // surrogates are not valid UTF-8
				r = 'x'
			}
		}
		b.WriteRune(r)
	}
	return b.String()
}

func randomFloat(rng *rand.Rand) float64 {
	switch rng.IntN(4) {
	case 0:
		return 0
	case 1:
		return float64(rng.Int64N(1e6)) / 100
	default:
		for {
			f := math.Float64frombits(rng.Uint64())
			if !math.IsNaN(f) && !math.IsInf(f, 0) {
				return f
			}
		}
	}
}

func randomStrings(rng *rand.Rand) []string {
	switch rng.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	s := make([]string, 1+rng.IntN(5))
	for i := range s {
		s[i] = randomString(rng)
	}
	return s
}

func randomAddress(rng *rand.Rand) address {
	a := address{Street: randomString(rng), City: randomString(rng)}
	if rng.IntN(2) == 0 {
		a.Geo = &geo{Lat: randomFloat(rng), Lng: randomFloat(rng)}
	}
	return a
}

func randomOrder(rng *rand.Rand) order {
	o := order{
		ID:          randomString(rng),
		AmountCents: rng.Int64() - math.MaxInt64/2,
		Items:       randomStrings(rng),
		Shipping:    randomAddress(rng),
		Paid:        rng.IntN(2) == 0,
		Ratio:       randomFloat(rng),
	}
	if rng.IntN(2) == 0 {
		b := randomAddress(rng)
		o.Billing = &b
	}
	if rng.IntN(3) > 0 {
		o.Labels = map[string]string{}
		for range rng.IntN(4) {
			o.Labels[randomString(rng)] = randomString(rng)
		}
	}
	if rng.IntN(3) > 0 {
		o.Quantities = map[string]int{}
		for range rng.IntN(4) {
			o.Quantities[randomString(rng)] = rng.IntN(1000) - 500
		}
	}
	if rng.IntN(4) > 0 {
		// Years 1 to 9999, the range JSON can represent, in a random fixed
		// zone.
		sec := rng.Int64N(253402300799-(-62135596800)) + (-62135596800)
		zone := time.FixedZone("Z", (rng.IntN(48)-24)*1800)
		o.PlacedAt = time.Unix(sec, rng.Int64N(1e9)).In(zone)
	}
	for range rng.IntN(3) {
		o.Lines = append(o.Lines, line{SKU: randomString(rng), Quantity: rng.Int32() - math.MaxInt32/2, Price: randomFloat(rng)})
	}
	return o
}

func randomProto(rng *rand.Rand) *testpb.OrderPlaced {
	m := &testpb.OrderPlaced{
		Id:          randomString(rng),
		AmountCents: rng.Int64() - math.MaxInt64/2,
		Items:       randomStrings(rng),
	}
	if rng.IntN(2) == 0 {
		m.Shipping = &testpb.Address{Street: randomString(rng), City: randomString(rng), Country: randomString(rng)}
	}
	if rng.IntN(2) == 0 {
		m.Labels = map[string]string{}
		for range rng.IntN(4) {
			m.Labels[randomString(rng)] = randomString(rng)
		}
	}
	for range rng.IntN(3) {
		m.Lines = append(m.Lines, &testpb.Line{Sku: randomString(rng), Quantity: rng.Int32(), UnitPrice: randomFloat(rng)})
	}
	return m
}
