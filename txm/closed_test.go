package txm_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// seedClosable offers the three seed methods only, so the relay reads
// through FindUnpublished.
type seedClosable struct {
	txm.OutboxStore
	closed atomic.Bool
}

func (s *seedClosable) FindUnpublished(ctx context.Context, n int) ([]async.Message, error) {
	if s.closed.Load() {
		return nil, closedErr("find unpublished")
	}
	return s.OutboxStore.FindUnpublished(ctx, n)
}

func closedErr(op string) error { return errors.Join(errors.New("memstore: "+op), async.ErrClosed) }

// TestRelayStopsOnClosedStore checks that Start returns an error matching
// async.ErrClosed once its store is closed, instead of logging the failed
// claim and retrying it forever.
func TestRelayStopsOnClosedStore(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store func() (txm.OutboxStore, func())
	}{
		{"claimer", func() (txm.OutboxStore, func()) {
			s := &closingClaimer{Outbox: memstore.New(memstore.Config{}).Outbox()}
			return s, func() { s.closed.Store(true) }
		}},
		{"seed methods only", func() (txm.OutboxStore, func()) {
			s := &seedClosable{OutboxStore: seedOnly{memstore.New(memstore.Config{}).Outbox()}}
			return s, func() { s.closed.Store(true) }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store, closeStore := tc.store()
			pub := newRecordingPublisher()
			m := async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"))
			if err := store.Save(context.Background(), m); err != nil {
				t.Fatal(err)
			}
			relay := newRelay(t, pub, store, txm.ProcessorConfig{StoreRetry: fastRetry})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- relay.Start(ctx) }()
			<-pub.changed // the relay runs: it published the message
			closeStore()
			select {
			case err := <-done:
				if !errors.Is(err, async.ErrClosed) {
					t.Fatalf("Start on a closed store = %v, want an error matching async.ErrClosed", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Start kept running for 10s after its store was closed")
			}
		})
	}
}

// closingClaimer is a memstore outbox whose claims fail with
// async.ErrClosed once closed.
type closingClaimer struct {
	*memstore.Outbox
	closed atomic.Bool
}

func (o *closingClaimer) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	if o.closed.Load() {
		return nil, closedErr("claim")
	}
	return o.Outbox.Claim(ctx, limit, lease)
}
