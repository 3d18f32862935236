package txmotel_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/txmotel"
)

// TestScheduledAndExpiredMetrics: the backlog gauge leaves out scheduled
// messages not due yet, which the scheduled gauge counts, and expiries at
// the relay and the inbox are counted.
func TestScheduledAndExpiredMetrics(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(ctx) }()
	store := memstore.New(memstore.Config{})
	tel, err := txmotel.New(txmotel.Config{MeterProvider: mp, Stats: store.Outbox()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Close() }()

	now := time.Now()
	later := async.NewMessage("reminders", "Remind", nil, async.WithMetadata(async.Metadata{
		async.MetaDeliverAt: async.FormatTime(now.Add(time.Hour))}))
	gone := async.NewMessage("prices", "Price", nil, async.WithMetadata(async.Metadata{
		async.MetaExpiresAt: async.FormatTime(now.Add(-time.Second))}))
	if err := store.InTx(ctx, func(ctx context.Context) error {
		if err := store.Outbox().Save(ctx, later); err != nil {
			return err
		}
		return store.Outbox().Save(ctx, gone)
	}); err != nil {
		t.Fatal(err)
	}
	published := make(chan struct{}, 10)
	pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error { published <- struct{}{}; return nil })
	relay, err := txm.NewOutboxProcessorWithConfig(pub, store.Outbox(), txm.ProcessorConfig{
		Observer: tel, DropExpired: true, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- relay.Start(runCtx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := store.Outbox().Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the expired message is still pending: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(published) != 0 {
		t.Fatalf("%d messages published, want none", len(published))
	}
	h := txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{OnExpired: tel.InboxExpired})(
		async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil }))
	if err := h.HandleMessage(ctx, &deliver{Message: gone}); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	dropped := false
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					got[m.Name] += p.Value
					if v, ok := p.Attributes.Value("dropped"); ok && m.Name == "txm.relay.expired" {
						dropped = v.AsBool()
					}
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					got[m.Name] += p.Value
				}
			}
		}
	}
	want := map[string]int64{"txm.relay.expired": 1, "txm.inbox.expired": 1, "txm.outbox.scheduled": 1, "txm.outbox.backlog": 0}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s = %d, want %d (all: %v)", name, got[name], n, got)
		}
	}
	if !dropped {
		t.Error("txm.relay.expired has dropped=false, want true with DropExpired")
	}
}
