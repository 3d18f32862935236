package codec_test

import (
	"encoding/json"
	"errors"
	"runtime"
	"time"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/codec/testpb"
)

// address is a nested struct of order.
type address struct {
	Street string `json:"street"`
	City   string `json:"city"`
	Geo    *geo   `json:"geo,omitempty"`
}

type geo struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

// order exercises nested structs, pointers, slices, maps and times. Only
// json tags are given: the msgpack codec falls back to them.
type order struct {
	ID          string            `json:"id"`
	AmountCents int64             `json:"amount_cents"`
	Items       []string          `json:"items"`
	Shipping    address           `json:"shipping"`
	Billing     *address          `json:"billing,omitempty"`
	Labels      map[string]string `json:"labels"`
	Quantities  map[string]int    `json:"quantities"`
	PlacedAt    time.Time         `json:"placed_at"`
	Paid        bool              `json:"paid"`
	Ratio       float64           `json:"ratio"`
	Lines       []line            `json:"lines"`
}

type line struct {
	SKU      string  `json:"sku"`
	Quantity int32   `json:"quantity"`
	Price    float64 `json:"price"`
}

// normalized returns o with its times in UTC: msgpack timestamps keep the
// instant but not the zone, and JSON keeps only the offset.
func (o order) normalized() order {
	o.PlacedAt = o.PlacedAt.UTC()
	return o
}

func sampleOrder() order {
	return order{
		ID:          "o-1",
		AmountCents: 1250,
		Items:       []string{"tea", "cup", "saucer"},
		Shipping:    address{Street: "1 Main St", City: "Lisbon", Geo: &geo{Lat: 38.72, Lng: -9.14}},
		Billing:     &address{Street: "2 Side St", City: "Porto"},
		Labels:      map[string]string{"channel": "web", "tier": "gold"},
		Quantities:  map[string]int{"tea": 2, "cup": 1},
		PlacedAt:    time.Date(2024, 5, 17, 9, 30, 15, 123456789, time.UTC),
		Paid:        true,
		Ratio:       0.25,
		Lines:       []line{{SKU: "T-1", Quantity: 2, Price: 4.5}, {SKU: "C-9", Quantity: 1, Price: 3.5}},
	}
}

func sampleProto() *testpb.OrderPlaced {
	return &testpb.OrderPlaced{
		Id:          "o-1",
		AmountCents: 1250,
		Items:       []string{"tea", "cup", "saucer"},
		Shipping:    &testpb.Address{Street: "1 Main St", City: "Lisbon", Country: "PT"},
		Labels:      map[string]string{"channel": "web", "tier": "gold"},
		Lines: []*testpb.Line{
			{Sku: "T-1", Quantity: 2, UnitPrice: 4.5},
			{Sku: "C-9", Quantity: 1, UnitPrice: 3.5},
		},
	}
}

// testCodec is a codec of the tests with its own content type; it encodes
// as JSON.
type testCodec struct{ contentType string }

func (c testCodec) ContentType() string           { return c.contentType }
func (testCodec) Encode(v any) ([]byte, error)    { return json.Marshal(v) }
func (testCodec) Decode(data []byte, v any) error { return json.Unmarshal(data, v) }

// sentinels are the errors every codec error must match one of.
var sentinels = []error{
	codec.ErrUnknownContentType,
	codec.ErrUnsupportedType,
	codec.ErrNilValue,
	codec.ErrMalformed,
	codec.ErrInvalidPattern,
}

// matchesSentinel reports whether err matches one of the wanted sentinels.
func matchesSentinel(err error, wanted ...error) bool {
	for _, s := range wanted {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// runtimeMemStats reads the bytes allocated so far.
type runtimeMemStats struct{ totalAlloc uint64 }

func (m *runtimeMemStats) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.totalAlloc = s.TotalAlloc
}
