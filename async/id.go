package async

import (
	"encoding/hex"

	"github.com/google/uuid"
)

// newV7 writes a new UUIDv7 (RFC 9562, from google/uuid, which keeps IDs
// made by one process in creation order) in its canonical 36-character text
// form into dst, without allocating the string.
func newV7(dst *[36]byte) {
	u, err := uuid.NewV7()
	if err != nil {
		// NewV7 fails only when the system's random source does; a random
		// UUIDv4 is still a valid, unique identifier.
		u = uuid.New()
	}
	hex.Encode(dst[0:8], u[0:4])
	dst[8] = '-'
	hex.Encode(dst[9:13], u[4:6])
	dst[13] = '-'
	hex.Encode(dst[14:18], u[6:8])
	dst[18] = '-'
	hex.Encode(dst[19:23], u[8:10])
	dst[23] = '-'
	hex.Encode(dst[24:], u[10:])
}
