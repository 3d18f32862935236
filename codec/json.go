package codec

import "encoding/json"

// jsonCodec is the JSON codec; it has no state.
type jsonCodec struct{}

// JSON returns the codec for encoding/json, with content type
// "application/json" ([ContentTypeJSON]). Values are encoded as
// [json.Marshal] does and decoded as [json.Unmarshal] does: struct tags,
// [json.Marshaler] and [json.Unmarshaler] apply.
func JSON() Codec { return jsonCodec{} }

func (jsonCodec) ContentType() string { return ContentTypeJSON }

func (jsonCodec) Encode(v any) ([]byte, error) {
	if err := checkEncodable(ContentTypeJSON, v); err != nil {
		return nil, err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, encodeError(ContentTypeJSON, v, ErrUnsupportedType, "", err)
	}
	return data, nil
}

func (jsonCodec) Decode(data []byte, v any) error {
	if err := checkTarget(ContentTypeJSON, v); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(ContentTypeJSON, v, ErrMalformed, "", err)
	}
	return nil
}
