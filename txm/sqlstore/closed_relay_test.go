package sqlstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
)

// TestRelayStopsWhenStoreIsClosed checks that a relay whose store was
// closed returns an error matching async.ErrClosed from Start, instead of
// logging "claim: async: closed" and retrying forever.
func TestRelayStopsWhenStoreIsClosed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		kind backendKind
		lock bool
	}{
		{"sqlite", kindSQLite, false},
		{"postgres-pgx", kindPgx, false},
		{"postgres-pgx-locked", kindPgx, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newTestStore(t, tc.kind, Config{})
			ctx := context.Background()
			published := make(chan struct{}, 1)
			pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
				select {
				case published <- struct{}{}:
				default:
				}
				return nil
			})
			if err := s.InTx(ctx, func(ctx context.Context) error {
				return s.Outbox().Save(ctx, async.NewMessage("orders.placed", "OrderPlaced", []byte("{}")))
			}); err != nil {
				t.Fatal(err)
			}
			relay, err := txm.NewOutboxProcessorWithConfig(pub, relayed(s.Outbox(), tc.lock), txm.ProcessorConfig{
				LockClaims: tc.lock, PollInterval: 10 * time.Millisecond, Logger: discardLogger(),
				StoreRetry: retry.Policy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond},
			})
			if err != nil {
				t.Fatal(err)
			}
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- relay.Start(runCtx) }()
			<-published // the relay runs
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, async.ErrClosed) {
					t.Fatalf("Start on a closed store = %v, want an error matching async.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Start kept running for 10s after the store was closed")
			}
		})
	}
}
