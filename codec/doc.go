// Package codec turns typed message payloads into bytes and back.
//
// A [Codec] has a content type, which the encoding side writes into the
// message's metadata (async.MetaContentType), and Encode and Decode
// methods. Three codecs are built in:
//
//   - [JSON]: encoding/json, "application/json";
//   - [Msgpack]: github.com/vmihailenco/msgpack/v5, "application/msgpack";
//   - [Protobuf]: google.golang.org/protobuf, "application/protobuf", for
//     proto.Message values only.
//
// Each constructor returns a new codec; there is no package-level state to
// configure.
//
// # Choosing a codec per topic
//
// A [Registry] picks the codec that encodes a topic: one registered for the
// exact topic name, else the one of the longest matching prefix pattern
// ("orders.*", which matches every topic below "orders", as NATS's
// "orders.>" does), else the registry's default. No other wildcard is
// supported: [Registry.Register] refuses "orders.>", "orders.*.placed" and
// the like with [ErrInvalidPattern]. It decodes by content type,
// never by topic, so a topic can move from one codec to another while
// messages encoded with the old one are still in flight:
//
//	reg := codec.NewRegistry(codec.JSON())
//	err := reg.Register("orders.*", codec.Msgpack())
//	data, contentType, err := reg.Encode("orders.placed", order)
//	// ... later, on the consumer:
//	err = reg.Decode(msg.Subject(), msg.Metadata().ContentType(), msg.Data(), &order)
//
// # Errors
//
// Every error of the package matches one of its sentinels with errors.Is:
// [ErrUnknownContentType], [ErrUnsupportedType], [ErrNilValue],
// [ErrMalformed] and [ErrInvalidPattern]. Codec errors name the content type
// and the Go type involved, and wrap the underlying library's error when
// there is one. A decoding error is a property of the bytes, so retrying
// cannot fix it: consumers treat [ErrMalformed] and [ErrUnknownContentType]
// as permanent and send the message to dead letters.
//
// Decoding never panics on hostile input: JSON and protobuf decoders are
// safe by construction, and MessagePack input is validated before it
// reaches the decoder (see [Msgpack]).
package codec
