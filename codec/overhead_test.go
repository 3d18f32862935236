package codec_test

import (
	"encoding/json"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/protobuf/proto"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

// TestAllocationOverhead checks the allocation budget of the hot path: a
// codec allocates at most 2 more times than the raw library call, and the
// registry adds nothing to the codec. The time budget is measured by the
// benchmarks.
func TestAllocationOverhead(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	reg := codec.NewRegistry(codec.JSON())
	if err := reg.Register("orders.mp", codec.Msgpack()); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("orders.pb", codec.Protobuf()); err != nil {
		t.Fatal(err)
	}
	value, pbValue := benchOrder(), benchProto()
	jsonData, _ := json.Marshal(value)
	mpData, _ := codec.Msgpack().Encode(value)
	mpRaw, _ := msgpack.Marshal(value) // field names, not json tags: for the raw decoder
	pbData, _ := proto.Marshal(pbValue)
	for _, tc := range []struct {
		name                 string
		topic                string
		c                    codec.Codec
		value                any
		data                 []byte
		contentType          string
		target               func() any
		rawEncode, rawDecode func()
	}{
		{
			name: "json", topic: "orders.json", c: codec.JSON(), value: value, data: jsonData,
			contentType: codec.ContentTypeJSON, target: func() any { return new(order) },
			rawEncode: func() { _, _ = json.Marshal(value) },
			rawDecode: func() { _ = json.Unmarshal(jsonData, new(order)) },
		},
		{
			name: "msgpack", topic: "orders.mp", c: codec.Msgpack(), value: value, data: mpData,
			contentType: codec.ContentTypeMsgpack, target: func() any { return new(order) },
			rawEncode: func() { _, _ = msgpack.Marshal(value) },
			rawDecode: func() { _ = msgpack.Unmarshal(mpRaw, new(order)) },
		},
		{
			name: "protobuf", topic: "orders.pb", c: codec.Protobuf(), value: pbValue, data: pbData,
			contentType: codec.ContentTypeProtobuf, target: func() any { return new(testpb.OrderPlaced) },
			rawEncode: func() { _, _ = proto.Marshal(pbValue) },
			rawDecode: func() { _ = proto.Unmarshal(pbData, new(testpb.OrderPlaced)) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rawEnc := testing.AllocsPerRun(50, tc.rawEncode)
			enc := testing.AllocsPerRun(50, func() {
				if _, err := tc.c.Encode(tc.value); err != nil {
					t.Fatal(err)
				}
			})
			regEnc := testing.AllocsPerRun(50, func() {
				if _, _, err := reg.Encode(tc.topic, tc.value); err != nil {
					t.Fatal(err)
				}
			})
			rawDec := testing.AllocsPerRun(50, tc.rawDecode)
			dec := testing.AllocsPerRun(50, func() {
				if err := tc.c.Decode(tc.data, tc.target()); err != nil {
					t.Fatal(err)
				}
			})
			regDec := testing.AllocsPerRun(50, func() {
				if err := reg.Decode(tc.topic, tc.contentType, tc.data, tc.target()); err != nil {
					t.Fatal(err)
				}
			})
			t.Logf("encode: raw %v, codec %v, registry %v; decode: raw %v, codec %v, registry %v",
				rawEnc, enc, regEnc, rawDec, dec, regDec)
			if enc > rawEnc+2 || dec > rawDec+2 {
				t.Errorf("codec allocates more than 2 times over the raw library")
			}
			if regEnc > enc || regDec > dec {
				t.Errorf("the registry adds allocations to the codec's")
			}
		})
	}
}
