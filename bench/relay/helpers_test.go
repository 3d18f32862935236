package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// waitClock makes goroutines wait a precise time without burning a core
// each: callers park on a channel, as on a socket read, and one goroutine
// watches the clock and wakes them when their time has come.
//
// The obvious ways do not work for a simulated broker latency on this
// kind of machine (see BenchmarkRelayWait, 2-core Linux VM):
// time.Sleep(100µs) waited 0.98 ms on average, the runtime's timers having
// a granularity near 1 ms there (time.Sleep(1ms) waited 1.08–1.14 ms); a
// spin-wait on time.Since in each publishing goroutine is exact alone
// (100.2µs) but burns one CPU per waiting goroutine, so 16 goroutines
// spinning 100µs managed 19.6k waits/s where the network-like ideal is
// 160k, and they starve the relay of CPU. waitClock spins in one goroutine
// only, only while someone waits, and yields with runtime.Gosched on every
// turn so that the relay's goroutines get the CPU whenever they have work:
// it measured 101.8µs and 156k waits/s for 16 goroutines waiting 100µs.
type waitClock struct {
	mu    sync.Mutex
	queue []waiter // deadlines never decrease: every wait is taken under mu with one d
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

type waiter struct {
	deadline time.Time
	ch       chan struct{}
}

func newWaitClock() *waitClock {
	c := &waitClock{kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// wait blocks for d (measured from the call) or until ctx ends. All waits
// of one clock must use the same d, so that the queue stays in deadline
// order.
func (c *waitClock) wait(ctx context.Context, d time.Duration) error {
	ch := make(chan struct{})
	c.mu.Lock()
	c.queue = append(c.queue, waiter{deadline: time.Now().Add(d), ch: ch})
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *waitClock) run() {
	defer close(c.done)
	var due []waiter
	for {
		c.mu.Lock()
		now := time.Now()
		n := 0
		for n < len(c.queue) && !c.queue[n].deadline.After(now) {
			n++
		}
		due = append(due[:0], c.queue[:n]...)
		c.queue = append(c.queue[:0], c.queue[n:]...)
		idle := len(c.queue) == 0
		c.mu.Unlock()
		for _, w := range due {
			close(w.ch)
		}
		if !idle {
			select {
			case <-c.stop:
				return
			default:
			}
			runtime.Gosched()
			continue
		}
		select {
		case <-c.kick:
		case <-c.stop:
			return
		}
	}
}

// close stops the clock's goroutine. Waits still queued never end, so it
// is called only once no publish is in flight (or none that matters).
func (c *waitClock) close() {
	close(c.stop)
	<-c.done
}

// latencyPublisher confirms every publish after a fixed latency and counts
// the confirmations; it closes reached when the count reaches target.
type latencyPublisher struct {
	lat     time.Duration
	clock   *waitClock // nil when lat is 0
	target  int64
	reached chan struct{} // closed at the target-th confirmation
	at      time.Time     // when the target was reached; read after reached is closed
	count   atomic.Int64

	// record, when set, keeps every published ID (harness tests only).
	record bool
	mu     sync.Mutex
	seen   map[string]int
}

func newLatencyPublisher(lat time.Duration, target int) *latencyPublisher {
	p := &latencyPublisher{lat: lat, target: int64(target), reached: make(chan struct{}), seen: map[string]int{}}
	if lat > 0 {
		p.clock = newWaitClock()
	}
	return p
}

// Publish waits for the latency, then confirms msg.
func (p *latencyPublisher) Publish(ctx context.Context, _ string, msg async.Message) error {
	if p.clock != nil {
		if err := p.clock.wait(ctx, p.lat); err != nil {
			return fmt.Errorf("latency publisher: %w", err)
		}
	}
	if p.record {
		p.mu.Lock()
		p.seen[msg.ID()]++
		p.mu.Unlock()
	}
	if p.count.Add(1) == p.target {
		p.at = time.Now()
		close(p.reached)
	}
	return nil
}

func (p *latencyPublisher) close() {
	if p.clock != nil {
		p.clock.close()
	}
}

// relayStore is what both the relay and the baseline need of a store.
type relayStore interface {
	txm.OutboxStore
	txm.Claimer
	txm.BatchSaver
}

// relayPayload is a typical small JSON event.
var relayPayload = []byte(`{"id":"0192f7a0-7c1e-7d2a-9b1e-5f3c2a1d0e9f","customer":"c-1042","cents":12999,"items":["kettle","mug","tea"]}`)

// relayFixtures builds pre-filled stores for the cells of one benchmark
// run and keeps what is costly to build again: the messages of the last
// size asked for, and one SQLite file per size, filled once and copied for
// every drain (filling SQLite takes seconds, a copy milliseconds).
type relayFixtures struct {
	dir string // where the SQLite templates live

	mu        sync.Mutex
	msgsKey   [2]int // n, keys of msgs
	msgs      []async.Message
	templates map[[2]int]string // n, keys -> template file
}

// newRelayFixtures returns fixtures whose files are removed when tb ends.
func newRelayFixtures(tb testing.TB) *relayFixtures {
	return &relayFixtures{dir: tb.TempDir(), templates: map[[2]int]string{}}
}

// messages returns n messages without partition keys (keys > 0 gives them
// that many distinct keys, round robin). The stores copy what they save, so
// the same messages fill every store of a cell.
func (f *relayFixtures) messages(n, keys int) []async.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.msgs == nil || f.msgsKey != [2]int{n, keys} {
		f.msgs, f.msgsKey = relayMessages(n, keys), [2]int{n, keys}
	}
	return f.msgs
}

func relayMessages(n, keys int) []async.Message {
	msgs := make([]async.Message, n)
	for i := range msgs {
		md := async.Metadata{async.MetaContentType: "application/json"}
		if keys > 0 {
			md[async.MetaPartitionKey] = fmt.Sprintf("order-%d", i%keys)
		}
		msgs[i] = async.NewMessage("orders.placed", "OrderPlaced", relayPayload, async.WithMetadata(md))
	}
	return msgs
}

// store returns a store of the given kind ("mem" or "sqlite") holding n
// pending messages with keys partition keys, closed when tb ends.
func (f *relayFixtures) store(tb testing.TB, kind string, n, keys int) relayStore {
	tb.Helper()
	switch kind {
	case "mem":
		o := memstore.New(memstore.Config{}).Outbox()
		fill(tb, o, f.messages(n, keys))
		return o
	case "sqlite":
		tpl := f.sqliteTemplate(tb, n, keys)
		path := filepath.Join(tb.TempDir(), "outbox.db")
		if err := copyFile(path, tpl); err != nil {
			tb.Fatal(err)
		}
		return openSQLite(tb, path)
	default:
		tb.Fatalf("unknown store %q", kind)
		return nil
	}
}

// sqliteTemplate returns the path of a checkpointed SQLite file that holds
// n pending messages, building it the first time.
func (f *relayFixtures) sqliteTemplate(tb testing.TB, n, keys int) string {
	tb.Helper()
	k := [2]int{n, keys}
	f.mu.Lock()
	path, ok := f.templates[k]
	f.mu.Unlock()
	if ok {
		return path
	}
	path = filepath.Join(f.dir, fmt.Sprintf("template-%d-%d.db", n, keys))
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlstore.Config{PollOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	fill(tb, s.Outbox(), f.messages(n, keys))
	// Move everything from the WAL into the main file, which alone is
	// copied.
	if _, err := s.DB().ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		tb.Fatal(err)
	}
	if err := s.Close(); err != nil {
		tb.Fatal(err)
	}
	f.mu.Lock()
	f.templates[k] = path
	f.mu.Unlock()
	return path
}

func openSQLite(tb testing.TB, path string) relayStore {
	tb.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlstore.Config{PollOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	return s.Outbox()
}

func copyFile(dst, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}

// fill saves msgs in chunks.
func fill(tb testing.TB, s relayStore, msgs []async.Message) {
	tb.Helper()
	ctx := context.Background()
	for i := 0; i < len(msgs); i += 1000 {
		chunk := msgs[i:min(i+1000, len(msgs))]
		if n, err := s.SaveMany(ctx, chunk); err != nil || n != len(chunk) {
			tb.Fatalf("pre-fill: saved %d of %d: %v", n, len(chunk), err)
		}
	}
}

// relayCell is one point of the matrix.
type relayCell struct {
	store   string
	lat     time.Duration
	workers int
	batch   int
	keys    int // distinct partition keys; 0: none
	// inflight is the relay's BatchesInFlight; 0: its default (2). The
	// baseline always works one batch at a time.
	inflight int
}

// drainTimeout bounds one drain, so that a stuck relay fails the benchmark
// instead of hanging it.
const drainTimeout = 3 * time.Minute

// lease is the claim lease of both the relay and the baseline.
const lease = 30 * time.Second

// drainRelay runs the relay on s until pub has confirmed its target and
// returns the time from Start to the last confirmation. It stops the relay
// before it returns.
func drainRelay(tb testing.TB, s relayStore, pub *latencyPublisher, c relayCell) time.Duration {
	tb.Helper()
	p, err := txm.NewOutboxProcessorWithConfig(pub, s, txm.ProcessorConfig{
		Workers:         c.workers,
		BatchSize:       c.batch,
		BatchesInFlight: c.inflight,
		PollInterval:    5 * time.Millisecond,
		Lease:           lease,
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	go func() { _ = p.Start(context.Background()) }()
	var took time.Duration
	select {
	case <-pub.reached:
		took = pub.at.Sub(start)
	case <-time.After(drainTimeout):
		tb.Errorf("relay confirmed %d of %d messages in %v", pub.count.Load(), pub.target, drainTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Stop(ctx); err != nil {
		tb.Errorf("stopping the relay: %v", err)
	}
	return took
}

// drainBaseline is the hand-written minimal relay: claim a batch, split it
// into workers equal parts, publish each part in its own goroutine, mark the
// batch published; no ordering by key, no retries, no observer, no lease
// renewal. It returns the time from its start to the last confirmation.
func drainBaseline(tb testing.TB, s relayStore, pub *latencyPublisher, c relayCell) time.Duration {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(drainTimeout)
	for {
		select {
		case <-pub.reached:
			return pub.at.Sub(start)
		default:
		}
		if time.Now().After(deadline) {
			tb.Errorf("baseline confirmed %d of %d messages in %v", pub.count.Load(), pub.target, drainTimeout)
			return 0
		}
		batch, err := s.Claim(ctx, c.batch, lease)
		if err != nil {
			tb.Errorf("baseline: claim: %v", err)
			return 0
		}
		if len(batch) == 0 {
			// Everything is claimed; the last confirmations are on their
			// way (this happens only with a concurrent drain, in tests).
			select {
			case <-pub.reached:
			case <-time.After(time.Millisecond):
			}
			continue
		}
		w := min(c.workers, len(batch))
		var wg sync.WaitGroup
		var failed atomic.Bool
		for k := range w {
			part := batch[k*len(batch)/w : (k+1)*len(batch)/w]
			wg.Go(func() {
				for _, m := range part {
					if err := pub.Publish(ctx, m.Message.Subject(), m.Message); err != nil {
						failed.Store(true)
						return
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() {
			tb.Error("baseline: publish failed")
			return 0
		}
		ids := make([]string, len(batch))
		for i, m := range batch {
			ids[i] = m.Message.ID()
		}
		if err := s.MarkPublished(ctx, ids...); err != nil {
			tb.Errorf("baseline: mark published: %v", err)
			return 0
		}
	}
}

// errIncomplete marks a drain that did not complete.
var errIncomplete = errors.New("drain did not complete")
