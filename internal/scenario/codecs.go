package scenario

import (
	"encoding/json"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/transmanager/transmanager/codec"
)

// The codecs a scenario's typed messages can be encoded with.
const (
	CodecJSON    = "json"
	CodecMsgpack = "msgpack"
)

// Codecs lists them.
var Codecs = []string{CodecJSON, CodecMsgpack}

// scenarioCodec returns the registry the library's side of a scenario
// encodes with, and the raw functions its hand-written baseline calls
// instead: encoding/json, or vmihailenco/msgpack directly. "" is JSON.
func scenarioCodec(name string) (*codec.Registry, func(any) ([]byte, error), func([]byte, any) error, error) {
	switch name {
	case "", CodecJSON:
		return codec.NewRegistry(codec.JSON()), json.Marshal, json.Unmarshal, nil
	case CodecMsgpack:
		return codec.NewRegistry(codec.Msgpack()), msgpack.Marshal, msgpack.Unmarshal, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown codec %q (want one of %v)", name, Codecs)
}
