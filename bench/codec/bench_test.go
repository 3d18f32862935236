package codec

import (
	"context"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
	"github.com/transmanager/transmanager/internal/benchutil"
	"github.com/transmanager/transmanager/txm"
)

type order struct {
	ID       string   `json:"id" msgpack:"id"`
	Customer string   `json:"customer" msgpack:"customer"`
	Cents    int64    `json:"cents" msgpack:"cents"`
	Items    []string `json:"items" msgpack:"items"`
}

var sampleOrder = order{ID: "0192f7a0-7c1e-7d2a-9b1e-5f3c2a1d0e9f", Customer: "c-1042", Cents: 12999, Items: []string{"kettle", "mug", "tea"}}

func sampleProto() *testpb.OrderPlaced {
	return &testpb.OrderPlaced{Id: sampleOrder.ID, AmountCents: sampleOrder.Cents, Items: sampleOrder.Items}
}

// discard is a publisher that only looks at what it is given, as a broker
// client would: the metadata and the payload.
type discard struct{ n int }

func (d *discard) Publish(_ context.Context, _ string, m async.Message) error {
	d.n += len(m.Data()) + len(m.Metadata()) + len(m.ID())
	return nil
}

func codecs() []struct {
	name string
	c    codec.Codec
} {
	return []struct {
		name string
		c    codec.Codec
	}{{"json", codec.JSON()}, {"msgpack", codec.Msgpack()}, {"protobuf", codec.Protobuf()}}
}

// BenchmarkEncode compares the raw codec (baseline) with a typed publish
// through txm.Outbox: encode, build the message, publish to a discarding
// publisher.
func BenchmarkEncode(b *testing.B) {
	ctx := context.Background()
	for _, tc := range codecs() {
		reg := codec.NewRegistry(tc.c)
		b.Run(tc.name+"/raw", func(b *testing.B) {
			b.ReportAllocs()
			var v any = &sampleOrder
			if tc.name == "protobuf" {
				v = sampleProto()
			}
			for b.Loop() {
				if _, err := tc.c.Encode(v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/typed", func(b *testing.B) {
			b.ReportAllocs()
			pub := &discard{}
			if tc.name == "protobuf" {
				out := txm.NewOutbox[*testpb.OrderPlaced](pub, txm.WithCodecs(reg))
				v := sampleProto()
				for b.Loop() {
					if err := out.Publish(ctx, "orders.placed", v, txm.WithPartitionKey("c-1042")); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			out := txm.NewOutbox[order](pub, txm.WithCodecs(reg))
			for b.Loop() {
				if err := out.Publish(ctx, "orders.placed", sampleOrder, txm.WithPartitionKey("c-1042")); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode compares the raw codec (baseline) with a typed inbox:
// pick the codec by content type, decode, call the handler.
func BenchmarkDecode(b *testing.B) {
	ctx := context.Background()
	for _, tc := range codecs() {
		reg := codec.NewRegistry(tc.c)
		var msg async.Message
		var err error
		if tc.name == "protobuf" {
			msg, err = txm.NewOutbox[*testpb.OrderPlaced](nil, txm.WithCodecs(reg)).Message("orders.placed", sampleProto())
		} else {
			msg, err = txm.NewOutbox[order](nil, txm.WithCodecs(reg)).Message("orders.placed", sampleOrder)
		}
		if err != nil {
			b.Fatal(err)
		}
		in := benchutil.Delivery{Message: msg}
		data := msg.Data()
		b.Run(tc.name+"/raw", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tc.name == "protobuf" {
					if err := tc.c.Decode(data, &testpb.OrderPlaced{}); err != nil {
						b.Fatal(err)
					}
					continue
				}
				var o order
				if err := tc.c.Decode(data, &o); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/typed", func(b *testing.B) {
			b.ReportAllocs()
			var sink int64
			if tc.name == "protobuf" {
				h := txm.NewInbox(func(_ context.Context, o *testpb.OrderPlaced, _ async.IncomingMessage) error {
					sink += o.GetAmountCents()
					return nil
				}, txm.WithCodecs(reg))
				for b.Loop() {
					if err := h.HandleMessage(ctx, in); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			h := txm.NewInbox(func(_ context.Context, o order, _ async.IncomingMessage) error {
				sink += o.Cents
				return nil
			}, txm.WithCodecs(reg))
			for b.Loop() {
				if err := h.HandleMessage(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
