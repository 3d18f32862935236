package codec_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves a goroutine behind: the concurrency
// tests start some, and msgpack's decoder can start one per type that never
// ends when its preallocation option is on.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
