package scenario

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// LatencySpec is one measured run of commit-to-PubAck latency: producers
// commit Rate messages per second, one message per transaction with a
// NOTIFY, for Duration after Warmup, while Impl relays them to JetStream,
// woken by LISTEN as a relay in another process would be.
type LatencySpec struct {
	PostgresURL, NATSURL string
	Impl                 string // ImplLoop, ImplRelayLock or ImplRelayDefault
	Rate                 int    // messages per second
	Duration, Warmup     time.Duration
	// Producers is how many goroutines, each with a connection of its
	// own, share the rate; 0: 32. A durable commit waits for its WAL
	// flush, so one producer commits a few hundred messages per second.
	Producers int
	Batch     int // the relay's or loop's batch size; 0: 500
	// DurableCommits makes the producers' commits wait for their WAL
	// flush. By default they do not (synchronous_commit off, for the
	// producers only): a transaction that notifies holds a lock of the
	// whole database through its commit, so durable notifying commits top
	// out at one WAL flush each, one after another, on a small machine,
	// whatever the relay (see "Latency" in bench/README.md).
	DurableCommits bool
	// NotifyInterval is the producers' store's sqlstore.Config.NotifyInterval
	// (0: its default).
	NotifyInterval time.Duration
	PayloadSize    int
}

// LatencyResult is what a latency run measured, in milliseconds, over the
// messages committed after the warm-up. MaxGap is the longest time
// between two PubAcks while a committed message waited for its PubAck: a
// stall of the relay shows there.
type LatencyResult struct {
	Impl     string  `json:"impl"`
	Rate     int     `json:"rate"`
	Messages int     `json:"messages"`
	Achieved float64 `json:"achieved_per_s"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	MaxGap   float64 `json:"max_gap_ms"`
}

// ackTimes records when each message was committed and when its PubAck
// came back, by message ID.
type ackTimes struct {
	mu        sync.Mutex
	committed map[string]time.Time
	acked     map[string]time.Time
}

func newAckTimes(n int) *ackTimes {
	return &ackTimes{committed: make(map[string]time.Time, n), acked: make(map[string]time.Time, n)}
}

func (a *ackTimes) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	now := time.Now()
	id := m.Header.Get(jetstream.MsgIDHeader)
	a.mu.Lock()
	if _, ok := a.acked[id]; !ok {
		a.acked[id] = now
	}
	a.mu.Unlock()
}

func (a *ackTimes) commit(id string, at time.Time) {
	a.mu.Lock()
	a.committed[id] = at
	a.mu.Unlock()
}

// waitAcked waits until every committed message has its PubAck.
func (a *ackTimes) waitAcked(ctx context.Context) error {
	for {
		a.mu.Lock()
		missing := 0
		for id := range a.committed {
			if _, ok := a.acked[id]; !ok {
				missing++
			}
		}
		a.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d committed messages without a PubAck: %w", missing, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Latency runs one latency measurement in a schema and stream of its own.
func Latency(ctx context.Context, s LatencySpec) (LatencyResult, error) {
	if s.Producers <= 0 {
		s.Producers = 32
	}
	if s.Batch <= 0 {
		s.Batch = 500
	}
	if s.Rate <= 0 || s.Duration <= 0 {
		return LatencyResult{}, errors.New("latency: Rate and Duration must be positive")
	}
	e, err := Open(ctx, s.PostgresURL, s.NATSURL)
	if err != nil {
		return LatencyResult{}, err
	}
	defer e.Close()
	pcfg, err := pgxpool.ParseConfig(s.PostgresURL)
	if err != nil {
		return LatencyResult{}, err
	}
	pcfg.MaxConns = int32(s.Producers)
	if !s.DurableCommits {
		pcfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	}
	producerPool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return LatencyResult{}, err
	}
	defer producerPool.Close()
	payload := Payload(s.PayloadSize)
	total := int(float64(s.Rate) * (s.Warmup + s.Duration).Seconds())
	times := newAckTimes(total)
	js, err := jetstream.New(e.NC, jetstream.WithPublishAsyncAckHandler(times.onAck),
		jetstream.WithPublishAsyncMaxPending(LoopMaxPending))
	if err != nil {
		return LatencyResult{}, err
	}

	var relay func(ctx context.Context) error
	var produce func(ctx context.Context) (string, error) // commits one message, returns its ID
	if s.Impl == ImplLoop {
		if err := e.CreateLoopTable(ctx); err != nil {
			return LatencyResult{}, err
		}
		loop := newLoop(e.Pool, js, LoopTable(e.Schema), s.Batch)
		relay = func(ctx context.Context) error { return ListenAndDrain(ctx, e.URL, e.Schema, time.Second, loop.Drain) }
		// What a user writes: the insert and the NOTIFY in the business
		// transaction.
		insert := `INSERT INTO ` + LoopTable(e.Schema) + ` (subject, payload) VALUES ($1, $2) RETURNING id`
		notify := `SELECT pg_notify('` + e.Schema + `', '')`
		produce = func(ctx context.Context) (string, error) {
			var id int64
			err := pgx.BeginFunc(ctx, producerPool, func(tx pgx.Tx) error {
				if err := tx.QueryRow(ctx, insert, e.Topic, payload).Scan(&id); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, notify)
				return err
			})
			return strconv.FormatInt(id, 10), err
		}
	} else {
		cfg, err := RelayConfig(s.Impl, s.Batch)
		if err != nil {
			return LatencyResult{}, err
		}
		relayStore, err := e.Store(false)
		if err != nil {
			return LatencyResult{}, err
		}
		defer relayStore.Close()
		if err := relayStore.Migrate(ctx); err != nil {
			return LatencyResult{}, err
		}
		store, err := postgres.New(producerPool, sqlstore.Config{Schema: e.Schema, NotifyChannel: e.Schema,
			NotifyInterval: s.NotifyInterval, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return LatencyResult{}, err
		}
		defer store.Close()
		cfg.Logger = slog.New(slog.DiscardHandler)
		p, err := txm.NewOutboxProcessorWithConfig(natsjs.NewPublisher(js, natsjs.PublisherConfig{}), relayStore.Outbox(), cfg)
		if err != nil {
			return LatencyResult{}, err
		}
		relay = p.Start
		out := txm.OutboxPublisher(store.Outbox())(nil)
		md := async.Metadata{async.MetaContentType: "application/json"}
		produce = func(ctx context.Context) (string, error) {
			msg := async.NewMessage(e.Topic, "OrderPlaced", payload, async.WithMetadata(md))
			err := store.InTx(ctx, func(ctx context.Context) error { return out.Publish(ctx, e.Topic, msg) })
			return msg.ID(), err
		}
	}

	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
	}()

	// Producers: each commits its share of the rate on a fixed schedule,
	// and at once when it fell behind it.
	start := time.Now()
	measureFrom := start.Add(s.Warmup)
	end := measureFrom.Add(s.Duration)
	interval := time.Duration(float64(time.Second) * float64(s.Producers) / float64(s.Rate))
	var wg sync.WaitGroup
	errs := make(chan error, s.Producers)
	var measured sync.Map
	for p := range s.Producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				due := start.Add(time.Duration(p)*interval/time.Duration(s.Producers) + time.Duration(i)*interval)
				if due.After(end) {
					return
				}
				if d := time.Until(due); d > 0 {
					time.Sleep(d)
				}
				id, err := produce(ctx)
				at := time.Now()
				if err != nil {
					errs <- fmt.Errorf("producer: %w", err)
					return
				}
				times.commit(id, at)
				if due.After(measureFrom) || due.Equal(measureFrom) {
					measured.Store(id, true)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return LatencyResult{}, err
	}
	producedFor := time.Since(measureFrom)
	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := times.waitAcked(waitCtx); err != nil {
		return LatencyResult{}, err
	}
	select {
	case err := <-relayDone:
		relayDone <- err
		if err != nil {
			return LatencyResult{}, fmt.Errorf("the relay stopped: %w", err)
		}
	default:
	}

	times.mu.Lock()
	defer times.mu.Unlock()
	var lat []time.Duration
	var acks []time.Time
	measured.Range(func(k, _ any) bool {
		id := k.(string)
		lat = append(lat, max(times.acked[id].Sub(times.committed[id]), 0))
		return true
	})
	for id, at := range times.acked {
		if c := times.committed[id]; !c.Before(measureFrom) {
			acks = append(acks, at)
		}
	}
	slices.SortFunc(acks, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	for i := 1; i < len(acks); i++ {
		gap = max(gap, acks[i].Sub(acks[i-1]))
	}
	slices.Sort(lat)
	at := func(q float64) float64 { return ms(lat[int(q*float64(len(lat)-1)+0.5)]) }
	if len(lat) == 0 {
		return LatencyResult{}, errors.New("latency: no message measured")
	}
	return LatencyResult{Impl: s.Impl, Rate: s.Rate, Messages: len(lat),
		Achieved: float64(len(lat)) / producedFor.Seconds(),
		P50:      at(0.50), P90: at(0.90), P99: at(0.99), Max: ms(lat[len(lat)-1]), MaxGap: ms(gap)}, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ListenAndDrain runs drain as a hand-written relay in its own process
// would: it drains until drain finds nothing, then waits for a NOTIFY on
// channel (a connection of its own to pgURL LISTENs) or for poll, and
// drains again. It returns nil when ctx ends.
func ListenAndDrain(ctx context.Context, pgURL, channel string, poll time.Duration, drain func(context.Context) (int, error)) error {
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		return fmt.Errorf("loop: listen: %w", err)
	}
	if _, err := conn.Exec(ctx, `LISTEN "`+channel+`"`); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return fmt.Errorf("loop: listen: %w", err)
	}
	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		for {
			if _, err := conn.WaitForNotification(ctx); err != nil {
				return // ctx ended (or the connection failed: the poll goes on)
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	defer func() { <-listening }()
	timer := time.NewTimer(poll)
	defer timer.Stop()
	for {
		_, err := drain(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		timer.Reset(poll)
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-timer.C:
		}
	}
}
