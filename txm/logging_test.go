package txm_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// traceKey stands for the span a trace-aware slog handler reads from the
// context of each record.
type traceKey struct{}

// logRecord is one record seen by ctxLog.
type logRecord struct {
	msg    string
	attrs  map[string]string
	traced bool // the record's context carried traceKey
}

// ctxLog records every record with its attributes and whether its context
// carried the trace.
type ctxLog struct {
	mu      *sync.Mutex
	records *[]logRecord
	seen    chan string // receives the message of each record of seenMsg
	seenMsg string
	pre     []slog.Attr
}

func newCtxLog() *ctxLog {
	return &ctxLog{mu: &sync.Mutex{}, records: &[]logRecord{}, seen: make(chan string, 1)}
}

func (h *ctxLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *ctxLog) WithGroup(string) slog.Handler            { return h }
func (h *ctxLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.pre = append(append([]slog.Attr(nil), h.pre...), attrs...)
	return &c
}

func (h *ctxLog) Handle(ctx context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]string{}, traced: ctx.Value(traceKey{}) != nil}
	for _, a := range h.pre {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.records = append(*h.records, rec)
	h.mu.Unlock()
	if r.Message == h.seenMsg {
		select {
		case h.seen <- r.Message:
		default:
		}
	}
	return nil
}

func (h *ctxLog) all() []logRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]logRecord(nil), *h.records...)
}

// TestRelayStartLogNamesClaimMode checks that the start log says how the
// relay claims: by locks, by leases or by the seed's FindUnpublished.
func TestRelayStartLogNamesClaimMode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		store txm.OutboxStore
		lock  bool
		want  string
	}{
		{"leases", memstore.New(memstore.Config{}).Outbox(), false, "leases"},
		{"locked", &instantLocker{}, true, "locked"},
		{"seed methods only", seedOnly{memstore.New(memstore.Config{}).Outbox()}, false, "unpublished"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := newCtxLog()
			relay := newRelay(t, newRecordingPublisher(), tc.store, txm.ProcessorConfig{LockClaims: tc.lock, Logger: slog.New(log)})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := relay.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, r := range log.all() {
				if r.msg != "txm: relay started" {
					continue
				}
				if got := r.attrs["claim_mode"]; got != tc.want {
					t.Errorf("start log claim_mode = %q, want %q (attributes %v)", got, tc.want, r.attrs)
				}
				return
			}
			t.Fatalf("no start log in %v", log.all())
		})
	}
}

// TestRelayLogsCarryContext checks that every record the relay logs comes
// with the context Start was given, so a trace-aware handler sees its trace.
func TestRelayLogsCarryContext(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{}).Outbox()
	for range 2 {
		if err := store.Save(context.Background(), async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"))); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecordingPublisher()
	pub.setFail(func(async.Message, int) error { return errors.New("broker down") })
	log := newCtxLog()
	log.seenMsg = "txm: relay: topic keeps failing; holding its messages"
	relay := newRelay(t, pub, store, txm.ProcessorConfig{
		Logger: slog.New(log), Retry: fastRetry, StoreRetry: fastRetry, BreakerThreshold: 1,
	})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), traceKey{}, "trace"))
	done := make(chan error, 1)
	go func() { done <- relay.Start(ctx) }()
	<-log.seen // the circuit breaker logged
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return")
	}
	for _, r := range log.all() {
		if !r.traced {
			t.Errorf("record %q was logged without Start's context", r.msg)
		}
	}
}
