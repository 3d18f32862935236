package codec_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

// benchOrder is a small, order-sized payload (about 200 bytes of JSON).
func benchOrder() order {
	return order{
		ID:          "0193e5c2-7a4b-7c1e-9f00-3b2a1c0d9e8f",
		AmountCents: 4990,
		Items:       []string{"tea", "cup", "saucer"},
		Shipping:    address{Street: "1 Main St", City: "Lisbon"},
		PlacedAt:    time.Date(2024, 5, 17, 9, 30, 15, 0, time.UTC),
		Paid:        true,
		Lines:       []line{{SKU: "T-1", Quantity: 2, Price: 4.5}},
	}
}

// benchProto is the same payload as a protobuf message.
func benchProto() *testpb.OrderPlaced {
	return &testpb.OrderPlaced{
		Id:          "0193e5c2-7a4b-7c1e-9f00-3b2a1c0d9e8f",
		AmountCents: 4990,
		Items:       []string{"tea", "cup", "saucer"},
		Shipping:    &testpb.Address{Street: "1 Main St", City: "Lisbon"},
		Lines:       []*testpb.Line{{Sku: "T-1", Quantity: 2, UnitPrice: 4.5}},
	}
}

type benchCase struct {
	name      string
	c         codec.Codec
	value     any
	newTarget func() any
	rawEncode func(v any) ([]byte, error)
	rawDecode func(data []byte, v any) error
}

func benchCases() []benchCase {
	return []benchCase{
		{"json", codec.JSON(), benchOrder(), func() any { return new(order) }, json.Marshal, json.Unmarshal},
		{"msgpack", codec.Msgpack(), benchOrder(), func() any { return new(order) }, msgpack.Marshal, msgpack.Unmarshal},
		{"protobuf", codec.Protobuf(), benchProto(), func() any { return new(testpb.OrderPlaced) },
			func(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) },
			func(data []byte, v any) error { return proto.Unmarshal(data, v.(proto.Message)) }},
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.c.Encode(bc.value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range benchCases() {
		data, err := bc.c.Encode(bc.value)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := bc.c.Decode(data, bc.newTarget()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawEncode and BenchmarkRawDecode call the libraries directly, as
// the baseline of the codecs' overhead.
func BenchmarkRawEncode(b *testing.B) {
	for _, bc := range benchCases() {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.rawEncode(bc.value); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRawDecode(b *testing.B) {
	for _, bc := range benchCases() {
		data, err := bc.rawEncode(bc.value)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := bc.rawDecode(data, bc.newTarget()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRegistry measures the registry's lookups and its Encode and
// Decode on top of a codec.
func BenchmarkRegistry(b *testing.B) {
	reg := codec.NewRegistry(codec.JSON())
	for _, p := range []string{"orders.placed", "orders.*", "orders.eu.*", "payments.*"} {
		if err := reg.Register(p, codec.Msgpack()); err != nil {
			b.Fatal(err)
		}
	}
	value := benchOrder()
	data, ct, err := reg.Encode("orders.eu.placed", value)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("For", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			reg.For("orders.eu.de.placed")
		}
	})
	b.Run("ByContentType", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.ByContentType("application/msgpack; charset=binary"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := reg.Encode("orders.eu.placed", value); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var o order
			if err := reg.Decode("orders.eu.placed", ct, data, &o); err != nil {
				b.Fatal(err)
			}
		}
	})
}
