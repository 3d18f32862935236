package scenario

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// EmbeddedTopic is the topic of the embedded drain's messages.
const EmbeddedTopic = "txmscn.embedded.events"

// EmbeddedDrainSpec is one measured drain on the embedded default: a
// backlog of Messages messages of PayloadSize bytes in a SQLite file,
// drained by the relay with Relay's configuration (BatchSize is Batch)
// into the in-process broker (async/memory).
type EmbeddedDrainSpec struct {
	// Dir holds the SQLite file, removed afterwards. "" means a new
	// temporary directory.
	Dir         string
	Batch       int
	Messages    int
	PayloadSize int
	Relay       txm.ProcessorConfig
	// BrokerLatency is how long each publish waits before the broker
	// takes the message, to stand for a broker over a network. 0 means
	// none.
	BrokerLatency time.Duration
	// Memory drains the in-memory store (txm/memstore) instead of a
	// SQLite file.
	Memory bool
}

// DrainEmbedded fills a SQLite outbox of its own, drains it with the timer
// and the CPU counters running, checks that every message reached the
// broker and none is left unpublished, and removes the file. The result's
// Impl is "relay"; its PostgresUS and NATSUS are 0.
func DrainEmbedded(ctx context.Context, s EmbeddedDrainSpec) (_ DrainResult, err error) {
	if s.Messages <= 0 || s.Batch <= 0 {
		return DrainResult{}, fmt.Errorf("embedded drain: Messages and Batch must be positive (got %d, %d)", s.Messages, s.Batch)
	}
	if s.Memory {
		return drainMemory(ctx, s)
	}
	dir := s.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "txm-bench-"); err != nil {
			return DrainResult{}, err
		}
		defer os.RemoveAll(dir)
	}
	path := filepath.Join(dir, "drain-"+Random()+".db")
	defer func() {
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(path + suffix)
		}
	}()
	store, err := sqlite.Open(ctx, path, sqlstore.Config{PollOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return DrainResult{}, err
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		return DrainResult{}, err
	}
	payload := Payload(s.PayloadSize)
	msgs := make([]async.Message, s.Messages)
	for i := range msgs {
		msgs[i] = async.NewMessage(EmbeddedTopic, "OrderPlaced", payload,
			async.WithMetadata(async.Metadata{async.MetaContentType: "application/json"}))
	}
	for chunk := range slices.Chunk(msgs, 5000) {
		if k, err := store.Outbox().SaveMany(ctx, chunk); err != nil || k != len(chunk) {
			return DrainResult{}, fmt.Errorf("SaveMany: %d of %d: %v", k, len(chunk), err)
		}
	}
	msgs = nil
	broker := memory.New(memory.Config{})
	defer broker.Close()
	pub := &countingPublisher{next: broker, latency: s.BrokerLatency}

	cfg := s.Relay
	cfg.BatchSize = s.Batch
	runtime.GC() // the fill's garbage is not the drain's
	before, err := ReadCPU()
	if err != nil {
		return DrainResult{}, err
	}
	var after CPU
	var afterErr error
	took, err := drainWith(ctx, pub, store.Outbox(), s.Messages, cfg, func() { after, afterErr = ReadCPU() })
	if err != nil {
		return DrainResult{}, err
	}
	if afterErr != nil {
		return DrainResult{}, afterErr
	}
	var left int
	if err := store.DB().QueryRowContext(ctx, "SELECT count(*) FROM "+sqlstore.DefaultOutboxTable+
		" WHERE state <> 'published'").Scan(&left); err != nil || left != 0 {
		return DrainResult{}, fmt.Errorf("after the drain: %d rows unpublished (%v)", left, err)
	}
	if n := pub.published.Load(); n < int64(s.Messages) {
		return DrainResult{}, fmt.Errorf("after the drain: the broker took %d messages, want %d", n, s.Messages)
	}
	cpu := after.Sub(before)
	self := cpu.Self
	return DrainResult{
		Impl: "relay", Batch: s.Batch, Messages: s.Messages,
		Seconds:    took.Seconds(),
		MsgsPerSec: float64(s.Messages) / took.Seconds(),
		RelayUS:    float64(self) / float64(time.Microsecond) / float64(s.Messages),
		TotalUS:    float64(self) / float64(time.Microsecond) / float64(s.Messages),
		Allocs:     float64(cpu.Allocs) / float64(s.Messages),
	}, nil
}

// drainMemory is DrainEmbedded on the in-memory store. Its drain ends
// when the broker has taken every message (the store marks each in memory
// as its publish returns); it then waits until none is left unpublished.
func drainMemory(ctx context.Context, s EmbeddedDrainSpec) (DrainResult, error) {
	store := memstore.New(memstore.Config{})
	payload := Payload(s.PayloadSize)
	msgs := make([]async.Message, s.Messages)
	for i := range msgs {
		msgs[i] = async.NewMessage(EmbeddedTopic, "OrderPlaced", payload,
			async.WithMetadata(async.Metadata{async.MetaContentType: "application/json"}))
	}
	if k, err := store.Outbox().SaveMany(ctx, msgs); err != nil || k != len(msgs) {
		return DrainResult{}, fmt.Errorf("SaveMany: %d of %d: %v", k, len(msgs), err)
	}
	msgs = nil
	broker := memory.New(memory.Config{})
	defer broker.Close()
	pub := &countingPublisher{next: broker, latency: s.BrokerLatency, target: int64(s.Messages), done: make(chan struct{})}
	cfg := s.Relay
	cfg.BatchSize = s.Batch
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := txm.NewOutboxProcessorWithConfig(pub, store.Outbox(), cfg)
	if err != nil {
		return DrainResult{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	runtime.GC()
	before, err := ReadCPU()
	if err != nil {
		return DrainResult{}, err
	}
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- relay.Start(runCtx) }()
	select {
	case <-pub.done:
	case err := <-stopped:
		return DrainResult{}, fmt.Errorf("the relay stopped after %d of %d messages: %v", pub.published.Load(), s.Messages, err)
	case <-ctx.Done():
		stop()
		<-stopped
		return DrainResult{}, fmt.Errorf("the broker took %d of %d messages: %w", pub.published.Load(), s.Messages, ctx.Err())
	}
	took := time.Since(start)
	after, err := ReadCPU()
	if err != nil {
		return DrainResult{}, err
	}
	for {
		st, err := store.Outbox().Stats(ctx)
		if err != nil {
			return DrainResult{}, err
		}
		if st.Pending == 0 {
			break
		}
		if ctx.Err() != nil {
			return DrainResult{}, fmt.Errorf("after the drain: %d messages unpublished: %w", st.Pending, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	if err := <-stopped; err != nil {
		return DrainResult{}, err
	}
	cpu := after.Sub(before)
	per := float64(cpu.Self) / float64(time.Microsecond) / float64(s.Messages)
	return DrainResult{Impl: "relay", Batch: s.Batch, Messages: s.Messages, Seconds: took.Seconds(),
		MsgsPerSec: float64(s.Messages) / took.Seconds(), RelayUS: per, TotalUS: per,
		Allocs: float64(cpu.Allocs) / float64(s.Messages)}, nil
}

// countingPublisher counts the messages the broker took, after waiting
// latency (bounded by the context) before each; done, when not nil, is
// closed once target messages were taken.
type countingPublisher struct {
	next      async.MessagePublisher
	latency   time.Duration
	published atomic.Int64
	target    int64
	done      chan struct{}
	once      sync.Once
}

func (p *countingPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if err := p.next.Publish(ctx, topic, msg); err != nil {
		return err
	}
	if p.published.Add(1) == p.target && p.done != nil {
		p.once.Do(func() { close(p.done) })
	}
	return nil
}
