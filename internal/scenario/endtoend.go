package scenario

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// EndToEndSpec is one measured run of the whole path at a steady rate:
// producers commit Rate messages per second, each in a transaction of its
// own through a typed [txm.Outbox]; the relay (Relay, with BatchSize Batch)
// publishes them to the broker; a consumer handles them through an inbox and
// a typed [txm.Inbox]. It measures, per message committed after Warmup, the
// time from its commit to the broker's acknowledgement as the relay sees it
// and to the end of its handling (the inbox transaction committed).
//
// With PostgresURL and NATSURL it runs on a schema and a stream of its own
// on those services; with both empty, on the embedded default: a SQLite
// file and the in-process broker.
type EndToEndSpec struct {
	PostgresURL, NATSURL string
	// Dir holds the embedded default's SQLite file, removed afterwards. ""
	// means a new temporary directory.
	Dir   string
	Batch int
	Relay txm.ProcessorConfig
	// Rate is the messages committed per second; Duration how long the
	// measured part lasts, after Warmup.
	Rate             int
	Duration, Warmup time.Duration
	// Producers is how many goroutines share the rate, each committing
	// one message per transaction; 0: 4 on the embedded default, 32 on
	// PostgreSQL, whose producers commit with synchronous_commit off (see
	// [LatencySpec.DurableCommits]).
	Producers int
	// Keys > 0 gives the messages the partition keys "key-0" … "key-(Keys-1)"
	// in turn.
	Keys        int
	PayloadSize int
	// Codec encodes the messages: CodecJSON ("" too) or CodecMsgpack.
	Codec string
	// Consumers is how many messages the consumer handles at once
	// (async.Concurrency); 0: 1.
	Consumers int
	// BrokerLatency is how long each publish to the in-process broker
	// waits first, to stand for a network (embedded default only).
	BrokerLatency time.Duration
	// Memory runs on the in-memory store (txm/memstore) instead of the
	// SQLite file, with the in-process broker.
	Memory bool
}

// EndToEndResult is what an end-to-end run measured over the messages
// committed after the warm-up.
type EndToEndResult struct {
	Rate     int     `json:"rate"`
	Messages int     `json:"messages"`
	Achieved float64 `json:"achieved_per_s"`
	// Ack is commit → broker acknowledgement (the relay's publish
	// returned); Handled is commit → the consumer's inbox transaction
	// committed.
	Ack     Percentiles `json:"commit_to_ack"`
	Handled Percentiles `json:"commit_to_handled"`
}

// e2eOrder is the end-to-end scenario's typed message.
type e2eOrder struct {
	ID   string `json:"id" msgpack:"id"`
	Note string `json:"note" msgpack:"note"`
}

// e2eGroup is the consumer's group (its inbox and its subscription).
const e2eGroup = "txm-bench"

// e2eRig is where an end-to-end run happens.
type e2eRig struct {
	topic string
	// The producers' transactions and outbox; the relay's outbox and the
	// consumer's inbox.
	inTx    func(ctx context.Context, fn func(ctx context.Context) error) error
	save    txm.OutboxStore
	outbox  txm.OutboxStore
	inbox   txm.InboxStore
	pub     async.MessagePublisher
	sub     async.MessageSubscriber
	closers []func()
}

func (r *e2eRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func openEmbeddedRig(ctx context.Context, s EndToEndSpec) (_ *e2eRig, err error) {
	r := &e2eRig{topic: EmbeddedTopic}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	dir := s.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "txm-bench-"); err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { _ = os.RemoveAll(dir) })
	}
	path := filepath.Join(dir, "e2e-"+Random()+".db")
	r.closers = append(r.closers, func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(path + suffix)
		}
	})
	store, err := sqlite.Open(ctx, path, sqlstore.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { _ = store.Close() })
	if err := store.Migrate(ctx); err != nil {
		return nil, err
	}
	broker := memory.New(memory.Config{})
	r.closers = append(r.closers, func() { _ = broker.Close() })
	r.inTx, r.save, r.outbox, r.inbox = store.InTx, store.Outbox(), store.Outbox(), store.Inbox(e2eGroup)
	r.pub, r.sub = &countingPublisher{next: broker, latency: s.BrokerLatency}, broker
	return r, nil
}

func openMemoryRig(s EndToEndSpec) *e2eRig {
	store := memstore.New(memstore.Config{})
	broker := memory.New(memory.Config{})
	return &e2eRig{topic: EmbeddedTopic,
		inTx: store.InTx, save: store.Outbox(), outbox: store.Outbox(), inbox: store.Inbox(e2eGroup),
		pub: &countingPublisher{next: broker, latency: s.BrokerLatency}, sub: broker,
		closers: []func(){func() { _ = broker.Close() }}}
}

func openServicesRig(ctx context.Context, s EndToEndSpec) (_ *e2eRig, err error) {
	e, err := Open(ctx, s.PostgresURL, s.NATSURL)
	if err != nil {
		return nil, err
	}
	r := &e2eRig{topic: e.Topic, closers: []func(){func() { _ = e.Close() }}}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	pcfg, err := pgxpool.ParseConfig(s.PostgresURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = int32(s.Producers)
	pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, pool.Close)
	relay, err := e.Store(false)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { _ = relay.Close() })
	if err := relay.Migrate(ctx); err != nil {
		return nil, err
	}
	producer, err := postgres.New(pool, sqlstore.Config{Schema: e.Schema, NotifyChannel: e.Schema,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { _ = producer.Close() })
	r.inTx, r.save, r.outbox, r.inbox = producer.InTx, producer.Outbox(), relay.Outbox(), relay.Inbox(e2eGroup)
	sub := natsjs.NewSubscriber(e.JS, natsjs.SubscriberConfig{})
	r.closers = append(r.closers, func() { _ = sub.Close() })
	r.pub, r.sub = natsjs.NewPublisher(e.JS, natsjs.PublisherConfig{}), sub
	return r, nil
}

// e2eTimes records when each message was committed, acknowledged by the
// broker and handled, by message ID.
type e2eTimes struct {
	mu                        sync.Mutex
	committed, acked, handled map[string]time.Time
}

func newE2ETimes(n int) *e2eTimes {
	return &e2eTimes{committed: make(map[string]time.Time, n), acked: make(map[string]time.Time, n),
		handled: make(map[string]time.Time, n)}
}

func (t *e2eTimes) stamp(m map[string]time.Time, at time.Time, ids ...string) {
	t.mu.Lock()
	for _, id := range ids {
		if _, ok := m[id]; !ok {
			m[id] = at
		}
	}
	t.mu.Unlock()
}

// missing counts the committed messages not yet acknowledged or handled.
func (t *e2eTimes) missing() (acks, handled int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.committed {
		if _, ok := t.acked[id]; !ok {
			acks++
		}
		if _, ok := t.handled[id]; !ok {
			handled++
		}
	}
	return acks, handled
}

// stampingPublisher records when the broker acknowledged each message.
type stampingPublisher struct {
	next  async.MessagePublisher
	times *e2eTimes
}

func (p *stampingPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	if err := p.next.Publish(ctx, topic, msg); err != nil {
		return err
	}
	p.times.stamp(p.times.acked, time.Now(), msg.ID())
	return nil
}

// stampingBatchPublisher is a stampingPublisher over a batch publisher,
// which the relay keeps using as such.
type stampingBatchPublisher struct {
	stampingPublisher
	batch async.AsyncPublisher
}

func (p *stampingBatchPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	errs, err := p.batch.PublishBatch(ctx, msgs)
	if err != nil {
		return errs, err
	}
	now := time.Now()
	ids := make([]string, 0, len(msgs))
	for i, m := range msgs {
		if i >= len(errs) || errs[i] == nil {
			ids = append(ids, m.ID())
		}
	}
	p.times.stamp(p.times.acked, now, ids...)
	return errs, nil
}

func stamping(next async.MessagePublisher, times *e2eTimes) async.MessagePublisher {
	p := stampingPublisher{next: next, times: times}
	if b, ok := next.(async.AsyncPublisher); ok {
		return &stampingBatchPublisher{stampingPublisher: p, batch: b}
	}
	return &p
}

// EndToEnd runs one end-to-end measurement and removes what it set up.
func EndToEnd(ctx context.Context, s EndToEndSpec) (EndToEndResult, error) {
	embedded := s.PostgresURL == "" && s.NATSURL == ""
	switch {
	case s.Rate <= 0 || s.Duration <= 0 || s.Warmup < 0:
		return EndToEndResult{}, errors.New("end to end: Rate and Duration must be positive, Warmup not negative")
	case s.Batch <= 0:
		return EndToEndResult{}, errors.New("end to end: Batch must be positive")
	case !embedded && (s.PostgresURL == "" || s.NATSURL == ""):
		return EndToEndResult{}, errors.New("end to end: give PostgresURL and NATSURL together, or neither")
	case !embedded && s.Memory:
		return EndToEndResult{}, errors.New("end to end: Memory is for the in-process broker, without PostgresURL and NATSURL")
	case !embedded && s.BrokerLatency > 0:
		return EndToEndResult{}, errors.New("end to end: BrokerLatency is for the in-process broker")
	}
	codecs, _, _, err := scenarioCodec(s.Codec)
	if err != nil {
		return EndToEndResult{}, fmt.Errorf("end to end: %w", err)
	}
	if s.Producers <= 0 {
		s.Producers = 4
		if !embedded {
			s.Producers = 32
		}
	}
	var r *e2eRig
	switch {
	case s.Memory:
		r = openMemoryRig(s)
	case embedded:
		r, err = openEmbeddedRig(ctx, s)
	default:
		r, err = openServicesRig(ctx, s)
	}
	if err != nil {
		return EndToEndResult{}, err
	}
	defer r.close()

	total := int(float64(s.Rate) * (s.Warmup + s.Duration).Seconds())
	times := newE2ETimes(total)

	// The consumer: the inbox outermost but for the stamp, which counts
	// a message handled once its inbox transaction committed.
	handle := func(context.Context, e2eOrder, async.IncomingMessage) error { return nil }
	stampHandled := func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			if err := next.HandleMessage(ctx, msg); err != nil {
				return err
			}
			times.stamp(times.handled, time.Now(), msg.ID())
			return nil
		})
	}
	handler := async.ChainHandler(txm.NewInbox(handle, txm.WithCodecs(codecs)),
		stampHandled, txm.InboxHandler(r.inbox))
	sub, err := r.sub.Subscribe(ctx, r.topic, handler, async.GroupName(e2eGroup), async.Concurrency(max(s.Consumers, 1)))
	if err != nil {
		return EndToEndResult{}, fmt.Errorf("end to end: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	cfg := s.Relay
	cfg.BatchSize = s.Batch
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := txm.NewOutboxProcessorWithConfig(stamping(r.pub, times), r.outbox, cfg)
	if err != nil {
		return EndToEndResult{}, err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Start(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
	}()

	out := txm.NewOutbox[e2eOrder](txm.OutboxPublisher(r.save)(nil), txm.WithCodecs(codecs))
	note := strings.Repeat("x", max(s.PayloadSize-40, 0))
	run := Random()
	measured, producedFor, err := produceAtRate(ctx, s, func(ctx context.Context, p, i int) (string, error) {
		id := fmt.Sprintf("%s-%d-%d", run, p, i)
		opts := []txm.PublishOption{txm.WithMessageID(id)}
		if s.Keys > 0 {
			opts = append(opts, txm.WithPartitionKey(fmt.Sprintf("key-%d", (p+i*s.Producers)%s.Keys)))
		}
		err := r.inTx(ctx, func(ctx context.Context) error {
			return out.Publish(ctx, r.topic, e2eOrder{ID: id, Note: note}, opts...)
		})
		if err == nil {
			times.stamp(times.committed, time.Now(), id)
		}
		return id, err
	})
	if err != nil {
		return EndToEndResult{}, err
	}

	wait := time.NewTimer(time.Minute)
	defer wait.Stop()
	for {
		acks, handled := times.missing()
		if acks == 0 && handled == 0 {
			break
		}
		select {
		case err := <-relayDone:
			relayDone <- err
			return EndToEndResult{}, fmt.Errorf("end to end: the relay stopped with %d messages unacknowledged: %v", acks, err)
		case <-ctx.Done():
			return EndToEndResult{}, fmt.Errorf("end to end: %d messages unacknowledged, %d unhandled: %w", acks, handled, ctx.Err())
		case <-wait.C:
			return EndToEndResult{}, fmt.Errorf("end to end: after a minute, %d messages unacknowledged, %d unhandled", acks, handled)
		case <-time.After(10 * time.Millisecond):
		}
	}

	times.mu.Lock()
	defer times.mu.Unlock()
	ack, handled := NewHistogram(), NewHistogram()
	for _, id := range measured {
		c := times.committed[id]
		ack.Record(times.acked[id].Sub(c))
		handled.Record(times.handled[id].Sub(c))
	}
	if len(measured) == 0 {
		return EndToEndResult{}, errors.New("end to end: no message measured")
	}
	return EndToEndResult{Rate: s.Rate, Messages: len(measured),
		Achieved: float64(len(measured)) / producedFor.Seconds(),
		Ack:      ack.Percentiles(), Handled: handled.Percentiles()}, nil
}

// produceAtRate runs s.Producers goroutines that together call produce
// s.Rate times per second, on a fixed schedule (at once when one fell
// behind it), for s.Warmup + s.Duration. It returns the IDs of the
// messages due after the warm-up and how long the measured part lasted.
func produceAtRate(ctx context.Context, s EndToEndSpec, produce func(ctx context.Context, producer, i int) (string, error)) ([]string, time.Duration, error) {
	start := time.Now()
	measureFrom := start.Add(s.Warmup)
	end := measureFrom.Add(s.Duration)
	interval := time.Duration(float64(time.Second) * float64(s.Producers) / float64(s.Rate))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var measured []string
	errs := make(chan error, s.Producers)
	for p := range s.Producers {
		wg.Go(func() {
			for i := 0; ; i++ {
				due := start.Add(time.Duration(p)*interval/time.Duration(s.Producers) + time.Duration(i)*interval)
				if due.After(end) || ctx.Err() != nil {
					return
				}
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				id, err := produce(ctx, p, i)
				if err != nil {
					errs <- fmt.Errorf("producer: %w", err)
					return
				}
				if !due.Before(measureFrom) {
					mu.Lock()
					measured = append(measured, id)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	return measured, time.Since(measureFrom), nil
}
