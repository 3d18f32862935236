package txmotel_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/txmotel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type deliver struct {
	async.Message
	acked bool
}

func (d *deliver) ReceivedAt() time.Time { return time.Now() }
func (d *deliver) Ack() error            { d.acked = true; return nil }
func (d *deliver) NAck() error           { return nil }
func (d *deliver) Extend() error         { return nil }
func (d *deliver) Kill() error           { return nil }

// TestMetricsAndTrace runs save → relay → handle with a failing and a
// poison message and reads the outcome back through an in-memory reader.
func TestMetricsAndTrace(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(ctx) }()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(ctx) }()

	store := memstore.New(memstore.Config{})
	tel, err := txmotel.New(txmotel.Config{MeterProvider: mp, TracerProvider: tp, Propagator: propagation.TraceContext{}, Stats: store.Outbox()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Close() }()

	// Save three messages inside a traced request.
	save := async.ChainPublisher(txm.OutboxPublisher(store.Outbox())(nil), tel.SaveMiddleware())
	reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "http request")
	good := async.NewMessage("orders", "OrderPlaced", []byte("{}"))
	flaky := async.NewMessage("orders", "OrderPlaced", []byte("{}"))
	poison := async.NewMessage("payments", "Charge", []byte("{}"))
	if err := store.InTx(reqCtx, func(ctx context.Context) error {
		for _, m := range []async.Message{good, flaky, poison} {
			if err := save.Publish(ctx, m.Subject(), m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()

	var mu sync.Mutex
	var delivered []async.Message
	failedOnce := false
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(delivered) }
	broker := async.MessagePublisherFunc(func(_ context.Context, _ string, m async.Message) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m.ID() == poison.ID():
			return retry.Permanent(errors.New("rejected"))
		case m.ID() == flaky.ID() && !failedOnce:
			failedOnce = true
			return errors.New("timeout")
		}
		delivered = append(delivered, m)
		return nil
	})
	relay, err := txm.NewOutboxProcessorWithConfig(async.ChainPublisher(broker, tel.PublishMiddleware()), store.Outbox(),
		txm.ProcessorConfig{Workers: 1, Logger: slog.New(slog.DiscardHandler), PollInterval: 5 * time.Millisecond, Observer: tel,
			Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, RandomizationFactor: -1}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Start(runCtx) }()
	deadline := time.Now().Add(5 * time.Second)
	for count() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(delivered) != 2 {
		t.Fatalf("delivered %d messages, want 2", len(delivered))
	}

	// The consumer continues the trace and counts a duplicate.
	inbox := store.Inbox("billing")
	h := async.ChainHandler(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil }),
		tel.HandlerMiddleware(), txm.InboxHandlerWithConfig(inbox, txm.InboxConfig{OnDuplicate: tel.Duplicate}))
	for _, m := range []async.Message{delivered[0], delivered[0]} {
		if err := h.HandleMessage(ctx, &deliver{Message: m}); err != nil {
			t.Fatal(err)
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	gauges := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sums[m.Name] += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					gauges[m.Name] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					sums[m.Name] += int64(p.Count)
				}
			}
		}
	}
	want := map[string]int64{
		"txm.relay.published":        2,
		"txm.relay.retried":          1,
		"txm.relay.dead_lettered":    1,
		"txm.inbox.duplicates":       1,
		"txm.relay.publish.duration": 2,
	}
	for name, n := range want {
		if sums[name] != n {
			t.Errorf("%s = %d, want %d (all: %v)", name, sums[name], n, sums)
		}
	}
	if gauges["txm.outbox.dead"] != 1 || gauges["txm.outbox.backlog"] != 0 {
		t.Errorf("gauges = %v, want dead 1 and backlog 0", gauges)
	}

	// One trace: the request span is the parent of the publish and process spans.
	trace := reqSpan.SpanContext().TraceID()
	var publish, process int
	for _, s := range spans.Ended() {
		if s.Name() == "http request" {
			continue
		}
		if s.SpanContext().TraceID() != trace {
			t.Errorf("span %q is in another trace", s.Name())
		}
		switch s.Name() {
		case "publish orders":
			publish++
		case "process orders":
			process++
		}
	}
	if publish < 2 || process != 2 {
		t.Errorf("publish spans %d (want >= 2), process spans %d (want 2)", publish, process)
	}
}
