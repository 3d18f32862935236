package chaostest

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

var (
	flagSoak         = flag.Bool("soak", false, "run the soak test at full size (1,000,000 messages)")
	flagSoakMessages = flag.Int("soak.messages", envInt("TXM_SOAK_MESSAGES", 0), "messages of the soak test (default 20,000, or 1,000,000 with -soak)")
)

// soakSample is one sample of the soak test.
type soakSample struct {
	at                    time.Duration
	published, handled    int64
	heap                  uint64 // live heap after a GC
	outboxRows, inboxRows int64
	outboxBytes           int64 // pg_total_relation_size
	inboxBytes            int64
}

// The soak's retention: published outbox rows and inbox records are kept
// this long, purged by passes this often.
const (
	soakKeep     = 2 * time.Second
	soakInterval = time.Second
)

// TestSoak pushes messages PostgreSQL → NATS JetStream → an inbox consumer
// in this process, sampling the live heap and the tables' sizes: the heap
// stays flat, and retention bounds the outbox (published rows kept) and the
// inbox. 20,000 messages by default; -soak sends 1,000,000, which takes
// longer than go test's default timeout:
//
//	go test ./chaostest -run Soak -soak -timeout 2h -v
func TestSoak(t *testing.T) {
	total := 20_000
	if *flagSoak {
		total = 1_000_000
	}
	if *flagSoakMessages > 0 {
		total = *flagSoakMessages
	}
	e := newEnv(t, "private")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// A store that keeps published rows, so the relay's retention is what
	// bounds the outbox.
	store, err := postgres.New(e.pool, sqlstore.Config{Schema: e.schema, KeepPublished: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })

	// A work queue: acked messages leave the stream.
	soakStream := e.stream + "_SOAK"
	topic := e.prefix + "_soak.orders"
	if _, err := natsjs.EnsureStream(ctx, e.js, jetstream.StreamConfig{
		Name: soakStream, Subjects: []string{e.prefix + "_soak.>"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}

	relay := startRelay(t, "relay", natsjs.NewPublisher(e.js, natsjs.PublisherConfig{}), store, txm.ProcessorConfig{
		LockClaims: true, BatchSize: 500, Workers: 8,
		Retention: txm.RetentionConfig{Published: soakKeep, Interval: soakInterval, BatchSize: 5000},
	})

	var handled atomic.Int64
	sub := natsjs.NewSubscriber(e.js, natsjs.SubscriberConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { _ = sub.Close() })
	inbox := store.Inbox("soak")
	h := txm.InboxHandler(inbox)(async.MessageHandlerFunc(func(ctx context.Context, m async.IncomingMessage) error {
		handled.Add(1)
		return nil
	}))
	if _, err := sub.Subscribe(ctx, topic, h, async.GroupName("soak"), async.Concurrency(16)); err != nil {
		t.Fatal(err)
	}
	var bg sync.WaitGroup
	bg.Go(func() {
		_ = txm.RunRetention(ctx, inbox.PurgeInbox, soakKeep, txm.RetentionConfig{Interval: soakInterval, BatchSize: 5000})
	})
	t.Cleanup(func() { cancel(); bg.Wait() })

	// The producer: transactions of 100 messages, paced so that the outbox
	// holds at most 20,000 unpublished ones.
	var published atomic.Int64
	out := txm.NewOutbox[order](txm.OutboxPublisher(store.Outbox())(nil), txm.WithCodecs(codec.NewRegistry(codec.JSON())))
	bg.Go(func() {
		for sent := 0; sent < total && ctx.Err() == nil; {
			n := min(100, total-sent)
			err := store.InTx(ctx, func(ctx context.Context) error {
				for i := range n {
					k := fmt.Sprintf("key-%03d", (sent+i)%64)
					if err := out.Publish(ctx, topic, order{Key: k, Seq: sent + i}, txm.WithPartitionKey(k)); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("producer: %v", err)
				}
				return
			}
			sent += n
			published.Store(int64(sent))
			for ctx.Err() == nil && int64(sent)-handled.Load() > 20_000 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})

	started := time.Now()
	var samples []soakSample
	sample := func() soakSample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		s := soakSample{at: time.Since(started), published: published.Load(), handled: handled.Load(), heap: ms.HeapAlloc}
		q := `SELECT (SELECT count(*) FROM ` + e.table("txm_outbox") + `), (SELECT count(*) FROM ` + e.table("txm_inbox") + `),
			pg_total_relation_size($1::regclass), pg_total_relation_size($2::regclass)`
		if err := e.pool.QueryRow(ctx, q, e.schema+".txm_outbox", e.schema+".txm_inbox").Scan(&s.outboxRows, &s.inboxRows, &s.outboxBytes, &s.inboxBytes); err != nil {
			t.Fatal(err)
		}
		return s
	}
	every := 2 * time.Second
	if total >= 200_000 {
		every = 10 * time.Second
	}
	deadline := time.Now().Add(2*time.Minute + time.Duration(total)*5*time.Millisecond) // 200 messages/s at the least
	for handled.Load() < int64(total) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d of %d messages handled", time.Since(started).Round(time.Second), handled.Load(), total)
		}
		time.Sleep(every)
		s := sample()
		samples = append(samples, s)
		t.Logf("%6.0fs published %8d handled %8d heap %6.1f MB outbox %6d rows %7.1f MB inbox %6d rows %7.1f MB",
			s.at.Seconds(), s.published, s.handled, mb(s.heap), s.outboxRows, mb(uint64(s.outboxBytes)), s.inboxRows, mb(uint64(s.inboxBytes)))
	}
	elapsed := time.Since(started)
	// Retention empties both tables once the traffic stops: within a few
	// passes after the last message is older than soakKeep.
	emptyBy := time.Now().Add(soakKeep + 5*soakInterval)
	end := sample()
	for (end.outboxRows != 0 || end.inboxRows != 0) && time.Now().Before(emptyBy) {
		time.Sleep(soakInterval / 4)
		end = sample()
	}
	relay.stop(t)

	if got := handled.Load(); got != int64(total) {
		t.Errorf("handled %d messages, want %d", got, total)
	}
	if end.outboxRows != 0 || end.inboxRows != 0 {
		t.Errorf("%v after the last message: outbox %d rows, inbox %d rows; retention (keep %v, every %v) should have emptied both",
			soakKeep+5*soakInterval, end.outboxRows, end.inboxRows, soakKeep, soakInterval)
	}
	rate := float64(total) / elapsed.Seconds()
	bound := int64(rate*(soakKeep+3*soakInterval).Seconds()) + 25_000 // kept rows, plus what waits to be published
	for _, s := range samples {
		if s.outboxRows > bound || s.inboxRows > bound {
			t.Errorf("at %v: outbox %d rows, inbox %d rows, above the %d that retention allows at %.0f messages/s", s.at.Round(time.Second), s.outboxRows, s.inboxRows, bound, rate)
		}
	}
	if len(samples) >= 4 {
		// Flat: the live heap of the last half of the run stays within
		// twice (plus 16 MB) the median of its first half, after warm-up.
		half := len(samples) / 2
		early := medianHeap(samples[1:half])
		for _, s := range samples[half:] {
			if s.heap > 2*early+16<<20 {
				t.Errorf("at %v the live heap is %.1f MB, against a median of %.1f MB early in the run", s.at.Round(time.Second), mb(s.heap), mb(early))
			}
		}
	}
	t.Logf("soak: %d messages in %v (%.0f/s), live heap %.1f → %.1f MB, tables at the end: outbox %d rows, inbox %d rows",
		total, elapsed.Round(time.Second), rate, mb(samples[0].heap), mb(end.heap), end.outboxRows, end.inboxRows)
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

func medianHeap(s []soakSample) uint64 {
	if len(s) == 0 {
		return 0
	}
	h := make([]uint64, len(s))
	for i := range s {
		h[i] = s[i].heap
	}
	sort.Slice(h, func(i, j int) bool { return h[i] < h[j] })
	return h[len(h)/2]
}
