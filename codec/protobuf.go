package codec

import "google.golang.org/protobuf/proto"

// protobufCodec is the protocol buffers codec; it has no state.
type protobufCodec struct{}

// Protobuf returns the codec for protocol buffers in the binary wire
// format, with content type "application/protobuf" ([ContentTypeProtobuf]).
// It encodes and decodes [proto.Message] values only (pointers to generated
// message structs); any other value is an error matching
// [ErrUnsupportedType]. Decode resets the target message before it decodes,
// as [proto.Unmarshal] does.
func Protobuf() Codec { return protobufCodec{} }

func (protobufCodec) ContentType() string { return ContentTypeProtobuf }

func (protobufCodec) Encode(v any) ([]byte, error) {
	if v == nil {
		return nil, encodeError(ContentTypeProtobuf, v, ErrNilValue, "", nil)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, encodeError(ContentTypeProtobuf, v, ErrUnsupportedType, "the value must be a proto.Message", nil)
	}
	if isNilPointer(v) {
		return nil, encodeError(ContentTypeProtobuf, v, ErrNilValue, "", nil)
	}
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, encodeError(ContentTypeProtobuf, v, ErrUnsupportedType, "", err)
	}
	return data, nil
}

func (protobufCodec) Decode(data []byte, v any) error {
	if v == nil {
		return decodeError(ContentTypeProtobuf, v, ErrNilValue, "", nil)
	}
	m, ok := v.(proto.Message)
	if !ok {
		return decodeError(ContentTypeProtobuf, v, ErrUnsupportedType, "the target must be a proto.Message", nil)
	}
	if isNilPointer(v) {
		return decodeError(ContentTypeProtobuf, v, ErrNilValue, "", nil)
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return decodeError(ContentTypeProtobuf, v, ErrMalformed, "", err)
	}
	return nil
}
