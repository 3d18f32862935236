package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var errTruncated = errors.New("msgpack: unexpected end of data")

// checkMsgpack reports whether data holds exactly one well-formed
// MessagePack value: every code is valid, every declared length fits in the
// bytes that are left (an array or map cannot announce more elements than
// there are bytes, since each element takes one at least), and nesting is
// at most maxDepth levels deep. It reads data once and does not allocate
// unless it fails.
func checkMsgpack(data []byte) error {
	if len(data) == 0 {
		return errTruncated
	}
	n, err := skipMsgpack(data, 0)
	if err != nil {
		return err
	}
	if n != len(data) {
		return fmt.Errorf("msgpack: %d bytes after the value", len(data)-n)
	}
	return nil
}

// skipMsgpack returns the length of the value at the start of data, which is
// nested depth levels deep.
func skipMsgpack(data []byte, depth int) (int, error) {
	if len(data) == 0 {
		return 0, errTruncated
	}
	c := data[0]
	switch {
	case c <= 0x7f, c >= 0xe0: // positive and negative fixint
		return 1, nil
	case c <= 0x8f: // fixmap
		return skipElems(data, 1, 2*int(c&0x0f), depth)
	case c <= 0x9f: // fixarray
		return skipElems(data, 1, int(c&0x0f), depth)
	case c <= 0xbf: // fixstr
		return skipBytes(data, 1, int(c&0x1f))
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return 1, nil
	case 0xc4, 0xd9: // bin8, str8
		n, err := length(data, 1)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 2, n)
	case 0xc5, 0xda: // bin16, str16
		n, err := length(data, 2)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 3, n)
	case 0xc6, 0xdb: // bin32, str32
		n, err := length(data, 4)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 5, n)
	case 0xc7: // ext8: length, type, data
		n, err := length(data, 1)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 3, n)
	case 0xc8: // ext16
		n, err := length(data, 2)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 4, n)
	case 0xc9: // ext32
		n, err := length(data, 4)
		if err != nil {
			return 0, err
		}
		return skipBytes(data, 6, n)
	case 0xcc, 0xd0: // uint8, int8
		return skipBytes(data, 1, 1)
	case 0xcd, 0xd1: // uint16, int16
		return skipBytes(data, 1, 2)
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return skipBytes(data, 1, 4)
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return skipBytes(data, 1, 8)
	case 0xd4: // fixext1: type, data
		return skipBytes(data, 2, 1)
	case 0xd5: // fixext2
		return skipBytes(data, 2, 2)
	case 0xd6: // fixext4
		return skipBytes(data, 2, 4)
	case 0xd7: // fixext8
		return skipBytes(data, 2, 8)
	case 0xd8: // fixext16
		return skipBytes(data, 2, 16)
	case 0xdc: // array16
		n, err := length(data, 2)
		if err != nil {
			return 0, err
		}
		return skipElems(data, 3, n, depth)
	case 0xdd: // array32
		n, err := length(data, 4)
		if err != nil {
			return 0, err
		}
		return skipElems(data, 5, n, depth)
	case 0xde: // map16
		n, err := length(data, 2)
		if err != nil {
			return 0, err
		}
		return skipElems(data, 3, 2*n, depth)
	case 0xdf: // map32
		n, err := length(data, 4)
		if err != nil {
			return 0, err
		}
		return skipElems(data, 5, 2*n, depth)
	}
	return 0, fmt.Errorf("msgpack: invalid code 0x%02x", c)
}

// length reads the big-endian length of size bytes that follows the code.
func length(data []byte, size int) (int, error) {
	if len(data) < 1+size {
		return 0, errTruncated
	}
	switch size {
	case 1:
		return int(data[1]), nil
	case 2:
		return int(binary.BigEndian.Uint16(data[1:])), nil
	default:
		return int(binary.BigEndian.Uint32(data[1:])), nil
	}
}

// skipBytes returns head+n when data holds that many bytes.
func skipBytes(data []byte, head, n int) (int, error) {
	if head > len(data) || n > len(data)-head {
		return 0, errTruncated
	}
	return head + n, nil
}

// skipElems skips n values after a container header of head bytes.
func skipElems(data []byte, head, n, depth int) (int, error) {
	if n == 0 {
		return head, nil
	}
	if depth >= maxDepth {
		return 0, fmt.Errorf("msgpack: nesting deeper than %d levels", maxDepth)
	}
	if n > len(data)-head {
		return 0, fmt.Errorf("msgpack: %d elements declared but only %d bytes left", n, len(data)-head)
	}
	pos := head
	for range n {
		m, err := skipMsgpack(data[pos:], depth+1)
		if err != nil {
			return 0, err
		}
		pos += m
	}
	return pos, nil
}
