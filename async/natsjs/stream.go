package natsjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// EnsureStream creates the stream cfg describes, or updates the stream of
// that name to cfg when it exists, and returns it. Neither the [Publisher]
// nor the [Subscriber] ever creates a stream; call EnsureStream at start-up
// (or manage streams with the nats CLI or your deployment tooling).
//
// Set cfg.Duplicates to at least the longest time a relay may retry one
// message; see the package documentation. Some settings (for example the
// storage type) cannot change on an existing stream: then the update fails
// with the server's error.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" {
		return nil, errors.New("natsjs: EnsureStream: StreamConfig.Name is required")
	}
	st, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("natsjs: ensure stream %s: %w", cfg.Name, err)
	}
	return st, nil
}
