// Package txmotel connects transmanager to OpenTelemetry through the OTel
// API only: the application chooses and configures the SDK.
//
// Metrics (all with a "topic" attribute where a message is involved):
//
//   - txm.relay.published, txm.relay.retried, txm.relay.dead_lettered:
//     counters of the relay's outcomes;
//   - txm.relay.expired: messages the relay did not publish because their
//     expiry passed, with a "dropped" attribute (false: dead-lettered);
//   - txm.inbox.duplicates: duplicates absorbed by the inbox;
//   - txm.inbox.expired: expired deliveries the inbox skipped;
//   - txm.relay.publish.duration (s): how long a confirmed publish took;
//   - txm.relay.delivery.lag (s): from the message's SentAt to its
//     confirmation;
//   - txm.relay.batch.size: messages per claimed batch;
//   - txm.outbox.backlog (due messages), txm.outbox.scheduled (messages
//     whose delivery time has not come), txm.outbox.dead and
//     txm.outbox.oldest_pending.age (s, scheduled messages not due yet
//     left out): gauges read from a [txm.StatsReporter] at each
//     collection, when Config.Stats is set.
//
// Tracing: [Telemetry.SaveMiddleware] stores the caller's trace context in
// the message metadata when the message is saved;
// [Telemetry.PublishMiddleware] wraps the relay's publisher in a producer
// span continuing that context; [Telemetry.HandlerMiddleware] continues it
// on the consumer side with a consumer span. One trace spans save, publish
// and handle. The save and publish middleware keep the batch publishing
// ([async.AsyncPublisher]) of the publisher they wrap.
//
//	tel, err := txmotel.New(txmotel.Config{Stats: store.Outbox()})
//	save := async.ChainPublisher(txm.OutboxPublisher(store.Outbox())(nil), tel.SaveMiddleware())
//	relay, err := txm.NewOutboxProcessorWithConfig(
//		async.ChainPublisher(broker, tel.PublishMiddleware()), store.Outbox(),
//		txm.ProcessorConfig{Observer: tel})
//	handler := async.ChainHandler(typed, tel.HandlerMiddleware(),
//		txm.InboxHandlerWithConfig(inbox, txm.InboxConfig{OnDuplicate: tel.Duplicate}))
package txmotel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

const scope = "github.com/transmanager/transmanager/txm/txmotel"

// Config configures [New]. Zero fields take the defaults their comments
// name.
type Config struct {
	// MeterProvider creates the instruments. Default: otel.GetMeterProvider().
	MeterProvider metric.MeterProvider
	// TracerProvider creates the spans. Default: otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator writes and reads trace context in message metadata.
	// Default: W3C trace context (traceparent, tracestate).
	Propagator propagation.TextMapPropagator
	// Stats, when set, feeds the backlog and oldest-pending gauges.
	Stats txm.StatsReporter
	// StatsTimeout bounds one Stats call during a collection. Default 5s.
	StatsTimeout time.Duration
}

// Telemetry records the relay's and the inbox's events as OpenTelemetry
// metrics and spans. It implements [txm.Observer].
type Telemetry struct {
	tracer     trace.Tracer
	prop       propagation.TextMapPropagator
	published  metric.Int64Counter
	retried    metric.Int64Counter
	dead       metric.Int64Counter
	duplicates metric.Int64Counter
	expired    metric.Int64Counter
	inExpired  metric.Int64Counter
	duration   metric.Float64Histogram
	lag        metric.Float64Histogram
	batch      metric.Int64Histogram
	reg        metric.Registration
}

var (
	_ txm.Observer        = (*Telemetry)(nil)
	_ txm.ExpiredObserver = (*Telemetry)(nil)
)

// New creates the instruments.
func New(cfg Config) (*Telemetry, error) {
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if cfg.StatsTimeout <= 0 {
		cfg.StatsTimeout = 5 * time.Second
	}
	m := cfg.MeterProvider.Meter(scope)
	t := &Telemetry{tracer: cfg.TracerProvider.Tracer(scope), prop: cfg.Propagator}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	t.published, err = m.Int64Counter("txm.relay.published", metric.WithDescription("Messages the broker confirmed."), metric.WithUnit("{message}"))
	add(err)
	t.retried, err = m.Int64Counter("txm.relay.retried", metric.WithDescription("Failed publishes that will be retried."), metric.WithUnit("{message}"))
	add(err)
	t.dead, err = m.Int64Counter("txm.relay.dead_lettered", metric.WithDescription("Messages moved to dead letters."), metric.WithUnit("{message}"))
	add(err)
	t.duplicates, err = m.Int64Counter("txm.inbox.duplicates", metric.WithDescription("Redeliveries absorbed by the inbox."), metric.WithUnit("{message}"))
	add(err)
	t.expired, err = m.Int64Counter("txm.relay.expired", metric.WithDescription("Messages not published because their expiry passed."), metric.WithUnit("{message}"))
	add(err)
	t.inExpired, err = m.Int64Counter("txm.inbox.expired", metric.WithDescription("Deliveries skipped because their expiry passed."), metric.WithUnit("{message}"))
	add(err)
	t.duration, err = m.Float64Histogram("txm.relay.publish.duration", metric.WithDescription("Time a confirmed publish took."), metric.WithUnit("s"))
	add(err)
	t.lag, err = m.Float64Histogram("txm.relay.delivery.lag", metric.WithDescription("Time from a message's creation to its confirmation."), metric.WithUnit("s"))
	add(err)
	t.batch, err = m.Int64Histogram("txm.relay.batch.size", metric.WithDescription("Messages per claimed batch."), metric.WithUnit("{message}"))
	add(err)
	if cfg.Stats != nil {
		backlog, err := m.Int64ObservableGauge("txm.outbox.backlog", metric.WithDescription("Pending messages that are due."), metric.WithUnit("{message}"))
		add(err)
		scheduled, err := m.Int64ObservableGauge("txm.outbox.scheduled", metric.WithDescription("Scheduled messages whose delivery time has not come."), metric.WithUnit("{message}"))
		add(err)
		deadGauge, err := m.Int64ObservableGauge("txm.outbox.dead", metric.WithDescription("Messages in dead letters."), metric.WithUnit("{message}"))
		add(err)
		age, err := m.Float64ObservableGauge("txm.outbox.oldest_pending.age", metric.WithDescription("Age of the oldest pending message."), metric.WithUnit("s"))
		add(err)
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("txmotel: create instruments: %w", err)
		}
		t.reg, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
			ctx, cancel := context.WithTimeout(ctx, cfg.StatsTimeout)
			defer cancel()
			st, err := cfg.Stats.Stats(ctx)
			if err != nil {
				return fmt.Errorf("txmotel: read outbox stats: %w", err)
			}
			now := time.Now()
			for topic, ts := range st.ByTopic {
				attrs := metric.WithAttributes(attribute.String("topic", topic))
				o.ObserveInt64(backlog, ts.Pending, attrs)
				o.ObserveInt64(scheduled, ts.Scheduled, attrs)
				o.ObserveInt64(deadGauge, ts.Dead, attrs)
				ageSec := 0.0
				if !ts.OldestPending.IsZero() {
					ageSec = now.Sub(ts.OldestPending).Seconds()
				}
				o.ObserveFloat64(age, ageSec, attrs)
			}
			return nil
		}, backlog, scheduled, deadGauge, age)
		add(err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("txmotel: create instruments: %w", err)
	}
	return t, nil
}

// Close unregisters the gauges' callback.
func (t *Telemetry) Close() error {
	if t.reg == nil {
		return nil
	}
	return t.reg.Unregister()
}

func topicAttr(m async.Message) metric.MeasurementOption {
	return metric.WithAttributes(attribute.String("topic", m.Subject()))
}

// Claimed implements [txm.Observer].
func (t *Telemetry) Claimed(n int) { t.batch.Record(context.Background(), int64(n)) }

// Published implements [txm.Observer].
func (t *Telemetry) Published(msg async.Message, took, sinceSent time.Duration) {
	ctx := context.Background()
	t.published.Add(ctx, 1, topicAttr(msg))
	t.duration.Record(ctx, took.Seconds(), topicAttr(msg))
	t.lag.Record(ctx, sinceSent.Seconds(), topicAttr(msg))
}

// Retried implements [txm.Observer].
func (t *Telemetry) Retried(msg async.Message, _ int, _ error) {
	t.retried.Add(context.Background(), 1, topicAttr(msg))
}

// Dead implements [txm.Observer].
func (t *Telemetry) Dead(msg async.Message, _ int, _ error) {
	t.dead.Add(context.Background(), 1, topicAttr(msg))
}

// Expired implements [txm.ExpiredObserver].
func (t *Telemetry) Expired(msg async.Message, dropped bool) {
	t.expired.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("topic", msg.Subject()), attribute.Bool("dropped", dropped)))
}

// InboxExpired counts an expired delivery skipped by the inbox; it fits
// [txm.InboxConfig.OnExpired].
func (t *Telemetry) InboxExpired(ctx context.Context, msg async.IncomingMessage) {
	t.inExpired.Add(ctx, 1, topicAttr(msg))
}

// Duplicate counts a duplicate absorbed by the inbox; it fits
// [txm.InboxConfig.OnDuplicate].
func (t *Telemetry) Duplicate(ctx context.Context, msg async.IncomingMessage) {
	t.duplicates.Add(ctx, 1, topicAttr(msg))
}

// metadataCarrier adapts message metadata to the propagator.
type metadataCarrier async.Metadata

func (c metadataCarrier) Get(key string) string { return async.Metadata(c).GetString(key) }
func (c metadataCarrier) Set(key, value string) { c[key] = value }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// SaveMiddleware stores the trace context of the saving call in the
// message's metadata (a copy: the caller's message is not changed). When
// the publisher it wraps implements [async.AsyncPublisher], so does the
// publisher it returns, storing the trace context in each message of a
// batch.
func (t *Telemetry) SaveMiddleware() async.MessagePublisherMiddleware {
	return func(next async.MessagePublisher) async.MessagePublisher {
		p := savePublisher{t: t, next: next}
		if apub, ok := next.(async.AsyncPublisher); ok {
			return saveBatchPublisher{savePublisher: p, apub: apub}
		}
		return p
	}
}

type savePublisher struct {
	t    *Telemetry
	next async.MessagePublisher
}

func (p savePublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return p.next.Publish(ctx, topic, msg)
	}
	return p.next.Publish(ctx, topic, p.t.withTrace(ctx, msg))
}

type saveBatchPublisher struct {
	savePublisher
	apub async.AsyncPublisher
}

func (p saveBatchPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return p.apub.PublishBatch(ctx, msgs)
	}
	traced := make([]async.Message, len(msgs))
	for i, m := range msgs {
		traced[i] = p.t.withTrace(ctx, m)
	}
	return p.apub.PublishBatch(ctx, traced)
}

// withTrace returns a copy of msg whose metadata holds ctx's trace context.
func (t *Telemetry) withTrace(ctx context.Context, msg async.Message) async.Message {
	md := make(async.Metadata, len(msg.Metadata())+2)
	for k, v := range msg.Metadata() {
		md[k] = v
	}
	t.prop.Inject(ctx, metadataCarrier(md))
	return async.NewMessage(msg.Subject(), msg.MessageName(), msg.Data(),
		async.WithID(msg.ID()), async.WithSentAt(msg.SentAt()), async.WithMetadata(md))
}

// PublishMiddleware wraps the relay's publisher: each publish runs in a
// producer span that continues the trace stored in the message. When the
// publisher it wraps implements [async.AsyncPublisher] (JetStream), so does
// the publisher it returns, so the relay keeps publishing in batches: each
// message of a batch gets its own span, ended with its own result.
func (t *Telemetry) PublishMiddleware() async.MessagePublisherMiddleware {
	return func(next async.MessagePublisher) async.MessagePublisher {
		p := tracedPublisher{t: t, next: next}
		if apub, ok := next.(async.AsyncPublisher); ok {
			return tracedBatchPublisher{tracedPublisher: p, apub: apub}
		}
		return p
	}
}

type tracedPublisher struct {
	t    *Telemetry
	next async.MessagePublisher
}

func (p tracedPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	ctx, span := p.t.startPublish(ctx, topic, msg)
	err := p.next.Publish(ctx, topic, msg)
	endSpan(span, err)
	return err
}

type tracedBatchPublisher struct {
	tracedPublisher
	apub async.AsyncPublisher
}

func (p tracedBatchPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	spans := make([]trace.Span, len(msgs))
	for i, m := range msgs {
		_, spans[i] = p.t.startPublish(ctx, m.Subject(), m)
	}
	errs, err := p.apub.PublishBatch(ctx, msgs)
	for i, span := range spans {
		serr := err
		if serr == nil && i < len(errs) {
			serr = errs[i]
		} else if serr == nil {
			serr = errors.New("txmotel: the publisher returned no result for the message")
		}
		endSpan(span, serr)
	}
	return errs, err
}

// startPublish starts the producer span of msg's publish to topic, a child
// of the trace stored in msg's metadata.
func (t *Telemetry) startPublish(ctx context.Context, topic string, msg async.Message) (context.Context, trace.Span) {
	ctx = t.prop.Extract(ctx, metadataCarrier(msg.Metadata()))
	return t.tracer.Start(ctx, "publish "+topic, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.destination.name", topic),
			attribute.String("messaging.message.id", msg.ID())))
}

// endSpan records err, if any, and ends span.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// HandlerMiddleware continues the message's trace on the consumer side: the
// next handler runs in a consumer span whose parent is the saving span.
func (t *Telemetry) HandlerMiddleware() async.MessageHandlerMiddleware {
	return func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			ctx = t.prop.Extract(ctx, metadataCarrier(msg.Metadata()))
			ctx, span := t.tracer.Start(ctx, "process "+msg.Subject(), trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(attribute.String("messaging.destination.name", msg.Subject()),
					attribute.String("messaging.message.id", msg.ID())))
			defer span.End()
			err := next.HandleMessage(ctx, msg)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		})
	}
}
