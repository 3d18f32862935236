package codec_test

import (
	"fmt"

	"github.com/transmanager/transmanager/codec"
)

// OrderPlaced is the payload of the examples.
type OrderPlaced struct {
	ID    string `json:"id"`
	Cents int64  `json:"cents"`
}

// A topic moves from JSON to msgpack while a JSON message is still in
// flight: the consumer decodes each message by its content type.
func ExampleRegistry() {
	reg := codec.NewRegistry(codec.JSON())

	old, oldType, err := reg.Encode("orders.placed", OrderPlaced{ID: "o-1", Cents: 1250})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %s\n", oldType, old)

	// Every orders.* topic switches to msgpack.
	if err := reg.Register("orders.*", codec.Msgpack()); err != nil {
		panic(err)
	}
	data, newType, err := reg.Encode("orders.placed", OrderPlaced{ID: "o-2", Cents: 990})
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s, %d bytes\n", newType, len(data))

	for _, m := range []struct {
		contentType string
		data        []byte
	}{{oldType, old}, {newType, data}} {
		var got OrderPlaced
		if err := reg.Decode("orders.placed", m.contentType, m.data, &got); err != nil {
			panic(err)
		}
		fmt.Printf("%+v\n", got)
	}
	// Output:
	// application/json {"id":"o-1","cents":1250}
	// application/msgpack, 23 bytes
	// {ID:o-1 Cents:1250}
	// {ID:o-2 Cents:990}
}

// The most specific registration wins: an exact topic name, then the
// longest ".*" prefix, then the default codec.
func ExampleRegistry_Register() {
	reg := codec.NewRegistry(codec.JSON())
	_ = reg.Register("orders.*", codec.Msgpack())
	_ = reg.Register("orders.audit.*", codec.JSON())
	_ = reg.Register("orders.placed", codec.Protobuf())

	for _, topic := range []string{"orders.placed", "orders.cancelled", "orders.audit.placed", "orders", "payments.captured"} {
		fmt.Printf("%-20s %s\n", topic, reg.For(topic).ContentType())
	}
	// Output:
	// orders.placed        application/protobuf
	// orders.cancelled     application/msgpack
	// orders.audit.placed  application/json
	// orders               application/json
	// payments.captured    application/json
}

// Content types match without regard to case or parameters.
func ExampleRegistry_ByContentType() {
	reg := codec.NewRegistry(nil)
	c, err := reg.ByContentType("Application/JSON; charset=utf-8")
	fmt.Println(c.ContentType(), err)
	_, err = reg.ByContentType("application/xml")
	fmt.Println(err)
	// Output:
	// application/json <nil>
	// codec: unknown content type "application/xml"
}
