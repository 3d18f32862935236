package txmotel_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/txmotel"
)

// batchBroker publishes batches only, failing the messages named in fail;
// it reports the size of each batch on batches while there is room.
type batchBroker struct {
	mu      sync.Mutex
	fail    map[string]bool
	got     []async.Message
	batches chan int
}

func (b *batchBroker) Publish(context.Context, string, async.Message) error {
	return errors.New("the batch path was lost: Publish called")
}

func (b *batchBroker) PublishBatch(_ context.Context, msgs []async.Message) ([]error, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		b.got = append(b.got, m)
		if b.fail[m.MessageName()] {
			errs[i] = errors.New("nak")
		}
	}
	select {
	case b.batches <- len(msgs):
	default:
	}
	return errs, nil
}

// TestMiddlewareKeepsBatchPublishing: the save and publish middleware
// implement async.AsyncPublisher exactly when what they wrap does, and the
// relay publishes through the publish middleware in batches.
func TestMiddlewareKeepsBatchPublishing(t *testing.T) {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(ctx) }()
	mp := sdkmetric.NewMeterProvider()
	defer func() { _ = mp.Shutdown(ctx) }()
	tel, err := txmotel.New(txmotel.Config{MeterProvider: mp, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	plain := async.MessagePublisherFunc(func(context.Context, string, async.Message) error { return nil })
	for name, mw := range map[string]async.MessagePublisherMiddleware{"SaveMiddleware": tel.SaveMiddleware(), "PublishMiddleware": tel.PublishMiddleware()} {
		if _, ok := mw(plain).(async.AsyncPublisher); ok {
			t.Errorf("%s over a plain publisher claims batch publishing", name)
		}
		if _, ok := mw(&batchBroker{}).(async.AsyncPublisher); !ok {
			t.Errorf("%s over an AsyncPublisher does not implement async.AsyncPublisher", name)
		}
	}

	// SaveMiddleware's batch stores the trace context in each message.
	reqCtx, reqSpan := tp.Tracer("test").Start(ctx, "request")
	saved := &batchBroker{batches: make(chan int, 1)}
	msgs := []async.Message{async.NewMessage("orders", "ok", nil), async.NewMessage("orders", "bad", nil)}
	if _, err := tel.SaveMiddleware()(saved).(async.AsyncPublisher).PublishBatch(reqCtx, msgs); err != nil {
		t.Fatal(err)
	}
	reqSpan.End()
	for i, m := range saved.got {
		if m.ID() != msgs[i].ID() || m.Metadata().GetString(async.MetaTraceParent) == "" {
			t.Errorf("saved %s with metadata %v, want %s with a traceparent", m.ID(), m.Metadata(), msgs[i].ID())
		}
	}

	// The relay publishes the traced messages through the publish
	// middleware in one batch, with a span per message.
	store := memstore.New(memstore.Config{})
	for _, m := range saved.got {
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	broker := &batchBroker{fail: map[string]bool{"bad": true}, batches: make(chan int, 10)}
	relay, err := txm.NewOutboxProcessorWithConfig(async.ChainPublisher(broker, tel.PublishMiddleware()), store.Outbox(),
		txm.ProcessorConfig{Logger: slog.New(slog.DiscardHandler), PollInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- relay.Start(runCtx) }()
	select {
	case n := <-broker.batches:
		if n != 2 {
			t.Errorf("the first batch held %d messages, want 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the relay published no batch through the publish middleware within 5s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	status := map[string]codes.Code{}
	for _, s := range spans.Ended() {
		if s.Name() != "publish orders" {
			continue
		}
		if s.Parent().TraceID() != reqSpan.SpanContext().TraceID() {
			t.Errorf("publish span in trace %s, want the request's %s", s.Parent().TraceID(), reqSpan.SpanContext().TraceID())
		}
		for _, a := range s.Attributes() {
			if a.Key == "messaging.message.id" {
				status[a.Value.AsString()] = s.Status().Code
			}
		}
	}
	if status[msgs[0].ID()] != codes.Unset || status[msgs[1].ID()] != codes.Error {
		t.Errorf("publish span statuses %v, want unset for %s and error for %s", status, msgs[0].ID(), msgs[1].ID())
	}
}
