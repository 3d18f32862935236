package sqlstore

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// limitsOutbox records the limits its Purge was called with.
type limitsOutbox struct {
	*Outbox
	mu     sync.Mutex
	limits []int
}

func (o *limitsOutbox) Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	o.mu.Lock()
	o.limits = append(o.limits, limit)
	o.mu.Unlock()
	return o.Outbox.Purge(ctx, olderThan, limit)
}

// publishedRows counts the outbox rows in the state 'published'.
func publishedRows(t *testing.T, s *Store) int {
	t.Helper()
	db := s.DB()
	if db == nil {
		db = stdlib.OpenDBFromPool(s.pool)
		defer db.Close()
	}
	got := queryStrings(t, db, "SELECT CAST(count(*) AS TEXT) FROM "+s.cfg.qualified(s.cfg.OutboxTable)+" WHERE state = 'published'")
	n, err := strconv.Atoi(got[0])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRelayRetentionWithKeepPublished runs the relay with Retention on a
// store that keeps published rows: the rows it published are deleted once
// older than the window, in batches of Retention.BatchSize, and Stop ends
// the retention goroutine with the relay (goleak checks).
func TestRelayRetentionWithKeepPublished(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{KeepPublished: true})
		out := &limitsOutbox{Outbox: s.Outbox()}
		var mu sync.Mutex
		published := 0
		pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error {
			mu.Lock()
			published++
			mu.Unlock()
			return nil
		})
		p, err := txm.NewOutboxProcessorWithConfig(pub, out, txm.ProcessorConfig{
			PollInterval: 10 * time.Millisecond,
			Logger:       discardLogger(),
			Retention:    txm.RetentionConfig{Published: 50 * time.Millisecond, Interval: 10 * time.Millisecond, BatchSize: 2},
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			m := newMsg("t", "k"+strconv.Itoa(i))
			if err := s.InTx(ctx, func(ctx context.Context) error { return out.Save(ctx, m) }); err != nil {
				t.Fatal(err)
			}
		}
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.Start(runCtx) }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			mu.Lock()
			n := published
			mu.Unlock()
			if n == 5 && publishedRows(t, s.Store) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("published %d of 5; %d published rows left, want retention to delete them", n, publishedRows(t, s.Store))
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		out.mu.Lock()
		defer out.mu.Unlock()
		if len(out.limits) == 0 {
			t.Fatal("Purge was never called")
		}
		for _, l := range out.limits {
			if l != 2 {
				t.Fatalf("Purge called with limit %d, want BatchSize 2", l)
			}
		}
	})
}
