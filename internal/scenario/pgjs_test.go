package scenario

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestServerFault(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("natsjs: ensure stream X: %w",
			&jetstream.APIError{Code: 500, ErrorCode: 10049, Description: "error creating store for stream"}), true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10065, Description: "subjects overlap with an existing stream"}, false},
		{errors.New("nats: timeout"), false},
		{nil, false},
	} {
		if got := serverFault(tc.err); got != tc.want {
			t.Errorf("serverFault(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
