package txm_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// fastRetry retries quickly and without jitter.
var fastRetry = retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, Multiplier: 2, RandomizationFactor: -1}

func newRelay(t *testing.T, pub async.MessagePublisher, store txm.OutboxStore, cfg txm.ProcessorConfig) *txm.Processor {
	t.Helper()
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := txm.NewOutboxProcessorWithConfig(pub, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRelayPublishesCommittedMessagesOnly(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	save := txm.OutboxPublisher(store.Outbox())(nil)

	var committed, rolledBack []string
	err := store.InTx(ctx, func(ctx context.Context) error {
		for range 3 {
			m := async.NewMessage("orders", "Test", []byte("ok"))
			committed = append(committed, m.ID())
			if err := save.Publish(ctx, "orders", m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("business rule failed")
	err = store.InTx(ctx, func(ctx context.Context) error {
		for range 2 {
			m := async.NewMessage("orders", "Test", []byte("no"))
			rolledBack = append(rolledBack, m.ID())
			if err := save.Publish(ctx, "orders", m); err != nil {
				return err
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx = %v, want %v", err, boom)
	}

	pub := newRecordingPublisher()
	stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{}))
	waitFor(t, "committed messages published", 5*time.Second, func() bool { return len(pub.publishedIDs()) >= 3 })
	stop()

	got := pub.publishedIDs()
	for _, id := range committed {
		if got[id] != 1 {
			t.Errorf("committed message %s published %d times, want 1", id, got[id])
		}
	}
	for _, id := range rolledBack {
		if got[id] != 0 {
			t.Errorf("rolled-back message %s was published", id)
		}
	}
	if left, err := store.Outbox().FindUnpublished(ctx, 10); err != nil || len(left) != 0 {
		t.Errorf("FindUnpublished after relay = %d messages, %v; want none", len(left), err)
	}
}

// stepClock fires every wait at once and records its duration, except waits
// of the poll interval, which block so an idle relay does not spin.
type stepClock struct {
	mu     sync.Mutex
	poll   time.Duration
	delays []time.Duration
}

func (c *stepClock) Now() time.Time { return time.Now() }
func (c *stepClock) After(d time.Duration) <-chan time.Time {
	if d == c.poll {
		return nil
	}
	c.mu.Lock()
	c.delays = append(c.delays, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}

func TestRelaySurvivesFailingPublisherWithGrowingDelays(t *testing.T) {
	t.Parallel()
	const failures = 5
	store := &listStore{}
	msg := async.NewMessage("orders", "Test", nil)
	if err := store.Save(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	pub := newRecordingPublisher()
	pub.setFail(func(_ async.Message, attempt int) error {
		if attempt <= failures {
			return fmt.Errorf("broker unavailable (attempt %d)", attempt)
		}
		return nil
	})
	clock := &stepClock{poll: time.Hour}
	relay := newRelay(t, pub, store, txm.ProcessorConfig{
		PollInterval: time.Hour,
		Clock:        clock,
		StoreRetry:   retry.Policy{InitialInterval: 10 * time.Millisecond, Multiplier: 2, MaxInterval: time.Second, RandomizationFactor: -1},
	})
	stop := startRelay(t, relay)
	waitFor(t, "the message to be published", 5*time.Second, func() bool { return pub.publishedIDs()[msg.ID()] == 1 })
	stop()

	if got := pub.attemptsOf(msg.ID()); got != failures+1 {
		t.Errorf("publish attempts = %d, want %d", got, failures+1)
	}
	clock.mu.Lock()
	delays := clock.delays
	clock.mu.Unlock()
	if len(delays) < failures {
		t.Fatalf("relay waited %d times between failures, want %d: %v", len(delays), failures, delays)
	}
	for i := 1; i < failures; i++ {
		if delays[i] <= delays[i-1] {
			t.Errorf("delays do not grow: %v", delays[:failures])
			break
		}
	}
}

func TestRelayDeadLettersPoisonAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	out := store.Outbox()

	poison := keyed("orders", "p")
	behindPoison := keyed("orders", "p")
	var others []async.Message
	for i := range 20 {
		others = append(others, keyed("orders", fmt.Sprintf("k%d", i%4)))
	}
	for _, m := range append([]async.Message{poison, behindPoison}, others...) {
		if err := out.Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecordingPublisher()
	pub.setFail(func(m async.Message, _ int) error {
		if m.ID() == poison.ID() {
			return errors.New("message too large for the broker")
		}
		return nil
	})
	obs := newObserver()
	stop := startRelay(t, newRelay(t, pub, out, txm.ProcessorConfig{
		Workers: 4, Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, RandomizationFactor: -1, MaxAttempts: 3},
		Observer: obs,
	}))
	select {
	case id := <-obs.deadCh:
		if id != poison.ID() {
			t.Fatalf("dead letter %s, want the poison message %s", id, poison.ID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the poison message never went to dead letters")
	}
	waitFor(t, "other keys published", 5*time.Second, func() bool { return len(pub.publishedIDs()) == len(others) })
	stop()

	if got := pub.attemptsOf(poison.ID()); got != 3 {
		t.Errorf("poison publish attempts = %d, want exactly 3", got)
	}
	if got := pub.attemptsOf(behindPoison.ID()); got != 0 {
		t.Errorf("the message behind the poison of the same key was attempted %d times, want 0 (key parked)", got)
	}
	dead, err := out.DeadLetters(ctx, txm.DeadLetterFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Message.ID() != poison.ID() || dead[0].Attempts != 3 || dead[0].LastError == "" {
		t.Fatalf("dead letters = %+v, want the poison with 3 attempts and its error", dead)
	}

	// Replay after the broker accepts it: the key flows again, in order.
	pub.setFail(nil)
	if n, err := out.Replay(ctx, txm.DeadLetterFilter{IDs: []string{poison.ID()}}); err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	stop2 := startRelay(t, newRelay(t, pub, out, txm.ProcessorConfig{}))
	waitFor(t, "the replayed key published", 5*time.Second, func() bool { return pub.publishedIDs()[behindPoison.ID()] == 1 })
	stop2()
	pub.mu.Lock()
	defer pub.mu.Unlock()
	var order []string
	for _, m := range pub.published {
		if m.Metadata().PartitionKey() == "p" {
			order = append(order, m.ID())
		}
	}
	if len(order) != 2 || order[0] != poison.ID() || order[1] != behindPoison.ID() {
		t.Errorf("key p published as %v, want [%s %s]", order, poison.ID(), behindPoison.ID())
	}
}

func TestRelayPermanentErrorDeadLettersAtOnce(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	msg := async.NewMessage("orders", "Test", nil)
	if err := store.Outbox().Save(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	pub := newRecordingPublisher()
	pub.setFail(func(async.Message, int) error { return retry.Permanent(errors.New("subject not allowed")) })
	obs := newObserver()
	stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Observer: obs, Retry: fastRetry}))
	select {
	case <-obs.deadCh:
	case <-time.After(5 * time.Second):
		t.Fatal("a permanent error did not dead-letter the message")
	}
	stop()
	if got := pub.attemptsOf(msg.ID()); got != 1 {
		t.Errorf("attempts = %d, want 1", got)
	}
}

// TestRelayOrdersEachKeyUnderRandomFailures is a property test: with random
// keys, random failures and 8 workers, every key's messages are confirmed
// exactly once and in the order they were saved.
func TestRelayOrdersEachKeyUnderRandomFailures(t *testing.T) {
	t.Parallel()
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, seed))
			ctx := context.Background()
			store := memstore.New(memstore.Config{})
			want := map[string][]string{}
			const n = 600
			for range n {
				key := fmt.Sprintf("key-%d", rng.IntN(23))
				if rng.IntN(10) == 0 {
					key = "" // some messages have no key
				}
				m := keyed("orders", key)
				if key == "" {
					m = async.NewMessage("orders", "Test", nil)
				}
				want[key] = append(want[key], m.ID())
				if err := store.Outbox().Save(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			var frng sync.Mutex
			pub := newRecordingPublisher()
			pub.setFail(func(async.Message, int) error {
				frng.Lock()
				defer frng.Unlock()
				if rng.IntN(5) == 0 {
					return errors.New("injected failure")
				}
				return nil
			})
			stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{
				Workers: 8, BatchSize: 50, Retry: retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, RandomizationFactor: -1, MaxAttempts: -1},
			}))
			waitFor(t, "every message published", 20*time.Second, func() bool { return len(pub.publishedIDs()) == n })
			stop()

			pub.mu.Lock()
			defer pub.mu.Unlock()
			got := map[string][]string{}
			for _, m := range pub.published {
				k := m.Metadata().PartitionKey()
				got[k] = append(got[k], m.ID())
			}
			if len(pub.published) != n {
				t.Fatalf("%d confirmed publishes, want %d (each message once)", len(pub.published), n)
			}
			for key, ids := range want {
				if key == "" {
					continue // unkeyed messages have no order
				}
				if fmt.Sprint(got[key]) != fmt.Sprint(ids) {
					t.Fatalf("key %s published as\n%v\nwant\n%v", key, got[key], ids)
				}
			}
		})
	}
}

func TestRelayRenewsLeaseDuringSlowPublish(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	ids := saveOrders(t, store, 4)
	pub := newRecordingPublisher()
	pub.hang = func(async.Message) time.Duration { return 500 * time.Millisecond } // far past the lease
	cfg := txm.ProcessorConfig{Workers: 4, Lease: 150 * time.Millisecond}
	stop1 := startRelay(t, newRelay(t, pub, store.Outbox(), cfg))
	stop2 := startRelay(t, newRelay(t, pub, store.Outbox(), cfg))
	waitFor(t, "all published", 5*time.Second, func() bool { return len(pub.publishedIDs()) == len(ids) })
	stop1()
	stop2()
	assertPublishedOnce(t, pub, ids, "the lease must be renewed")
}

// A batch claimed ahead waits for the publish of the batch before it; its
// leases must be renewed meanwhile, or a second relay publishes it too.
func TestRelayRenewsLeasesOfBatchClaimedAhead(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	ids := saveOrders(t, store, 2)
	pub := newRecordingPublisher()
	started := make(chan struct{}, len(ids)+1)
	pub.hang = func(async.Message) time.Duration { started <- struct{}{}; return 600 * time.Millisecond }
	cfg := txm.ProcessorConfig{Workers: 1, BatchSize: 1, BatchesInFlight: 2, Lease: 150 * time.Millisecond}
	stop1 := startRelay(t, newRelay(t, pub, store.Outbox(), cfg))
	<-started // the first batch is publishing, the second is claimed ahead
	time.Sleep(50 * time.Millisecond)
	stop2 := startRelay(t, newRelay(t, pub, store.Outbox(), cfg))
	waitFor(t, "all published", 5*time.Second, func() bool { return len(pub.publishedIDs()) == len(ids) })
	stop1()
	stop2()
	assertPublishedOnce(t, pub, ids, "a batch claimed ahead must keep its lease")
}

func TestRelayStopReleasesClaimsAndLosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	ids := saveOrders(t, store, 10)
	stuck := newRecordingPublisher()
	started := make(chan struct{}, 10)
	stuck.hang = func(async.Message) time.Duration { started <- struct{}{}; return time.Hour }
	relay := newRelay(t, stuck, store.Outbox(), txm.ProcessorConfig{Workers: 2, Lease: time.Hour})
	go func() { _ = relay.Start(ctx) }()
	<-started
	stopCtx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := relay.Stop(stopCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want deadline exceeded (publishes were stuck)", err)
	}
	select {
	case <-relay.Stopped():
	default:
		t.Fatal("Stopped() not closed after Stop returned")
	}
	// The stuck claims were released: a new relay publishes everything at
	// once although the lease was an hour.
	good := newRecordingPublisher()
	stop := startRelay(t, newRelay(t, good, store.Outbox(), txm.ProcessorConfig{}))
	waitFor(t, "all messages published by the second relay", 5*time.Second, func() bool { return len(good.publishedIDs()) == len(ids) })
	stop()
	if n := len(stuck.publishedIDs()); n != 0 {
		t.Errorf("stuck publisher confirmed %d messages, want 0", n)
	}
}

func TestRelaySoftStopFinishesInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	m := async.NewMessage("orders", "Test", nil)
	if err := store.Outbox().Save(ctx, m); err != nil {
		t.Fatal(err)
	}
	pub := newRecordingPublisher()
	started := make(chan struct{}, 1)
	pub.hang = func(async.Message) time.Duration { started <- struct{}{}; return 50 * time.Millisecond }
	relay := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{})
	go func() { _ = relay.Start(ctx) }()
	<-started
	if err := relay.Stop(ctx); err != nil {
		t.Fatalf("Stop = %v", err)
	}
	if pub.publishedIDs()[m.ID()] != 1 {
		t.Error("the publish in flight at Stop was not finished")
	}
	if left, _ := store.Outbox().FindUnpublished(ctx, 10); len(left) != 0 {
		t.Error("the message published during Stop was not marked published")
	}
}

// flakyStore fails its first claims.
type flakyStore struct {
	txm.OutboxStore
	mu       sync.Mutex
	failures int
}

func (s *flakyStore) FindUnpublished(ctx context.Context, n int) ([]async.Message, error) {
	s.mu.Lock()
	if s.failures > 0 {
		s.failures--
		s.mu.Unlock()
		return nil, errors.New("connection refused")
	}
	s.mu.Unlock()
	return s.OutboxStore.FindUnpublished(ctx, n)
}

func TestRelayKeepsGoingThroughStoreErrors(t *testing.T) {
	t.Parallel()
	store := &listStore{}
	m := async.NewMessage("orders", "Test", nil)
	if err := store.Save(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	flaky := &flakyStore{OutboxStore: store, failures: 4}
	pub := newRecordingPublisher()
	stop := startRelay(t, newRelay(t, pub, flaky, txm.ProcessorConfig{StoreRetry: fastRetry}))
	waitFor(t, "publish after store errors", 5*time.Second, func() bool { return pub.publishedIDs()[m.ID()] == 1 })
	stop()
}

func TestRelayStartErrors(t *testing.T) {
	t.Parallel()
	if err := txm.NewOutboxProcessor(nil, memstore.New(memstore.Config{}).Outbox()).Start(context.Background()); err == nil {
		t.Error("Start with a nil publisher returned nil")
	}
	relay := newRelay(t, newRecordingPublisher(), memstore.New(memstore.Config{}).Outbox(), txm.ProcessorConfig{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := relay.Start(cancelled); err != nil {
		t.Fatalf("first Start = %v", err)
	}
	if err := relay.Start(context.Background()); !errors.Is(err, txm.ErrAlreadyStarted) {
		t.Errorf("second Start = %v, want ErrAlreadyStarted", err)
	}
	if _, err := txm.NewOutboxProcessorWithConfig(newRecordingPublisher(), seedOnly{}, txm.ProcessorConfig{Workers: -1}); err == nil {
		t.Error("negative Workers accepted")
	}
	_, err := txm.NewOutboxProcessorWithConfig(newRecordingPublisher(), memstore.New(memstore.Config{}).Outbox(), txm.ProcessorConfig{LockClaims: true})
	if err == nil || !strings.Contains(err.Error(), "LockingClaimer") {
		t.Errorf("LockClaims on a store without locked claims: %v, want an error naming LockingClaimer", err)
	}
}

func TestCancelledStartReturnsNil(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	relay := txm.NewOutboxProcessor(newRecordingPublisher(), memstore.New(memstore.Config{}).Outbox())
	if err := relay.Start(ctx); err != nil {
		t.Fatalf("Start with a cancelled context = %v, want nil", err)
	}
}

// wavePublisher is an asynchronous publisher that records its batches.
type wavePublisher struct {
	mu    sync.Mutex
	waves [][]string
	fail  map[string]bool
}

func (p *wavePublisher) Publish(context.Context, string, async.Message) error {
	return errors.New("the relay must use PublishBatch")
}

func (p *wavePublisher) PublishBatch(_ context.Context, msgs []async.Message) ([]error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var wave []string
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		wave = append(wave, string(m.Data()))
		if p.fail[string(m.Data())] {
			errs[i] = errors.New("nak")
		}
	}
	p.waves = append(p.waves, wave)
	return errs, nil
}

func TestRelayAsyncPublisherKeepsKeyOrderInWaves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	save := func(key, data string) {
		md := async.Metadata{}
		if key != "" {
			md[async.MetaPartitionKey] = key
		}
		if err := store.Outbox().Save(ctx, async.NewMessage("t", "T", []byte(data), async.WithMetadata(md))); err != nil {
			t.Fatal(err)
		}
	}
	save("a", "a1")
	save("b", "b1")
	save("a", "a2")
	save("", "u1")
	save("b", "b2")
	save("a", "a3")
	pub := &wavePublisher{fail: map[string]bool{"b1": true}}
	relay := newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{BatchSize: 10, Retry: retry.Policy{InitialInterval: time.Hour, RandomizationFactor: -1}})
	stop := startRelay(t, relay)
	waitFor(t, "three waves", 5*time.Second, func() bool { pub.mu.Lock(); defer pub.mu.Unlock(); return len(pub.waves) >= 3 })
	stop()
	pub.mu.Lock()
	defer pub.mu.Unlock()
	want := "[[u1 a1 b1] [a2] [a3]]"
	if got := fmt.Sprint(pub.waves); got != want {
		t.Errorf("waves = %s, want %s (b2 waits behind the failed b1)", got, want)
	}
}

func TestRelayCircuitBreakerHoldsFailingTopic(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	var good, bad []string
	for i := range 40 {
		topic := "good"
		if i%4 == 0 {
			topic = "bad"
		}
		m := async.NewMessage(topic, "Test", nil)
		if topic == "bad" {
			bad = append(bad, m.ID())
		} else {
			good = append(good, m.ID())
		}
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecordingPublisher()
	var mu sync.Mutex
	badAttempts := 0
	pub.setFail(func(m async.Message, _ int) error {
		if m.Subject() == "bad" {
			mu.Lock()
			badAttempts++
			mu.Unlock()
			return errors.New("no responders for subject")
		}
		return nil
	})
	const threshold = 3
	stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{
		Workers: 1, BatchSize: 8, BreakerThreshold: threshold,
		Retry:      retry.Policy{InitialInterval: time.Millisecond, MaxInterval: time.Millisecond, RandomizationFactor: -1, MaxAttempts: -1},
		StoreRetry: retry.Policy{InitialInterval: time.Hour, RandomizationFactor: -1}, // the cooldown
	}))
	waitFor(t, "the good topic drained", 5*time.Second, func() bool { return len(pub.publishedIDs()) == len(good) })
	stop()
	mu.Lock()
	defer mu.Unlock()
	if badAttempts != threshold {
		t.Errorf("the failing topic was attempted %d times, want %d (then held by the open circuit)", badAttempts, threshold)
	}
	stats, err := store.Outbox().Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.ByTopic["bad"].Pending != int64(len(bad)) || stats.Dead != 0 {
		t.Errorf("bad topic pending %d, dead %d; want %d pending, none dead", stats.ByTopic["bad"].Pending, stats.Dead, len(bad))
	}
}

func TestRelayPipelinedBatchesPublishEverythingOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	const n = 500
	for i := range n {
		m := keyed("orders", fmt.Sprintf("k%d", i%17))
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	pub := newRecordingPublisher()
	stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{Workers: 3, BatchSize: 16, BatchesInFlight: 4}))
	waitFor(t, "all published", 10*time.Second, func() bool { return len(pub.publishedIDs()) == n })
	stop()
	for id, c := range pub.publishedIDs() {
		if c != 1 {
			t.Errorf("%s published %d times", id, c)
		}
	}
}

func TestRelayWakesForItsOwnRetries(t *testing.T) {
	t.Parallel()
	store := memstore.New(memstore.Config{})
	m := async.NewMessage("orders", "Test", nil)
	if err := store.Outbox().Save(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	pub := newRecordingPublisher()
	pub.setFail(func(_ async.Message, attempt int) error {
		if attempt == 1 {
			return errors.New("timeout")
		}
		return nil
	})
	// An hour's poll: only the retry's own due time can bring the message back.
	stop := startRelay(t, newRelay(t, pub, store.Outbox(), txm.ProcessorConfig{
		PollInterval: time.Hour,
		Retry:        retry.Policy{InitialInterval: 20 * time.Millisecond, RandomizationFactor: -1},
	}))
	waitFor(t, "the retried message published", 5*time.Second, func() bool { return pub.publishedIDs()[m.ID()] == 1 })
	stop()
}

// slowMarkOutbox is a memstore outbox whose MarkPublished waits until
// release is closed, reporting each call on marking.
type slowMarkOutbox struct {
	*memstore.Outbox
	marking chan []string
	release chan struct{}
}

func (o *slowMarkOutbox) MarkPublished(ctx context.Context, ids ...string) error {
	o.marking <- ids
	<-o.release
	return o.Outbox.MarkPublished(ctx, ids...)
}

// The store's record of one batch runs while the next batch is published:
// a slow MarkPublished does not hold back the publish behind it, and Stop
// still waits for every batch to be recorded.
func TestRelayPublishesNextBatchWhileMarking(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	first, second := async.NewMessage("orders", "Test", nil), async.NewMessage("orders", "Test", nil)
	for _, m := range []async.Message{first, second} {
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	out := &slowMarkOutbox{Outbox: store.Outbox(), marking: make(chan []string, 2), release: make(chan struct{})}
	pub := newRecordingPublisher()
	relay := newRelay(t, pub, out, txm.ProcessorConfig{BatchSize: 1})
	stopped := make(chan struct{})
	go func() { defer close(stopped); _ = relay.Start(ctx) }()

	if ids := <-out.marking; len(ids) != 1 || ids[0] != first.ID() {
		t.Fatalf("first MarkPublished got %v, want [%s]", ids, first.ID())
	}
	waitFor(t, "the second batch published while the first is being marked", 5*time.Second, func() bool {
		return pub.publishedIDs()[second.ID()] == 1
	})
	stopDone := make(chan error, 1)
	go func() { stopDone <- relay.Stop(ctx) }()
	select {
	case err := <-stopDone:
		t.Fatalf("Stop returned (%v) while a batch was still being marked", err)
	case <-time.After(20 * time.Millisecond):
	}
	close(out.release)
	if err := <-stopDone; err != nil {
		t.Fatalf("Stop = %v", err)
	}
	<-stopped
	if left, _ := store.Outbox().FindUnpublished(ctx, 10); len(left) != 0 {
		t.Errorf("%d messages left unpublished after Stop", len(left))
	}
}

// gatedPublisher returns a recording publisher whose publish of stuck
// waits until gate is closed.
func gatedPublisher(stuck async.Message) (pub *recordingPublisher, gate chan struct{}) {
	gate = make(chan struct{})
	pub = newRecordingPublisher()
	pub.setFail(func(m async.Message, _ int) error {
		if m.ID() == stuck.ID() {
			<-gate
		}
		return nil
	})
	return pub, gate
}

// claimSpy is a memstore outbox that counts Claim calls and reports on
// empty a claim that began after armed was set and came back empty.
type claimSpy struct {
	*memstore.Outbox
	calls atomic.Int32
	armed atomic.Bool
	empty chan struct{}
}

func newClaimSpy(store *memstore.Store) *claimSpy {
	return &claimSpy{Outbox: store.Outbox(), empty: make(chan struct{}, 1)}
}

func (o *claimSpy) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	o.calls.Add(1)
	armed := o.armed.Load()
	c, err := o.Outbox.Claim(ctx, limit, lease)
	if armed && err == nil && len(c) == 0 {
		select {
		case o.empty <- struct{}{}:
		default:
		}
	}
	return c, err
}

// A key's next message, saved while the one before it is in flight, is
// parked by the claims made meanwhile; once the one before it is marked
// published the relay claims it at once, without waiting for the poll
// interval or another save.
func TestRelayClaimsParkedKeyAfterSettle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	first, second := keyed("orders", "k"), keyed("orders", "k")
	if err := store.Outbox().Save(ctx, first); err != nil {
		t.Fatal(err)
	}
	pub, gate := gatedPublisher(first)
	out := newClaimSpy(store)
	stop := startRelay(t, newRelay(t, pub, out, txm.ProcessorConfig{PollInterval: time.Hour}))
	waitFor(t, "the first message in flight", 5*time.Second, func() bool { return pub.attemptsOf(first.ID()) == 1 })
	out.armed.Store(true)
	if err := store.Outbox().Save(ctx, second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-out.empty: // the save's wake-up found the second message parked
	case <-time.After(5 * time.Second):
		t.Fatal("no claim after the second save")
	}
	close(gate)
	waitFor(t, "the parked message published", 5*time.Second, func() bool { return pub.publishedIDs()[second.ID()] == 1 })
	stop()
}

// After a claim that came back short, a relay whose store sends wake-ups
// waits for one instead of claiming again at once: in a steady trickle of
// saves that second claim would come back empty.
func TestRelayWaitsForWakeupAfterShortClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	out := newClaimSpy(store)
	pub := newRecordingPublisher()
	stop := startRelay(t, newRelay(t, pub, out, txm.ProcessorConfig{PollInterval: time.Hour, BatchSize: 10}))
	defer stop()
	waitFor(t, "the first claim", 5*time.Second, func() bool { return out.calls.Load() == 1 })
	for i := range 3 {
		m := async.NewMessage("orders", "Test", nil)
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the message published", 5*time.Second, func() bool { return pub.publishedIDs()[m.ID()] == 1 })
		time.Sleep(50 * time.Millisecond) // room for a claim that should not come
		if got, want := out.calls.Load(), int32(2+i); got != want {
			t.Fatalf("after save %d: %d claims, want %d (one per wake-up)", i+1, got, want)
		}
	}
}

// partialWaker is a memstore outbox whose wake-ups, like those of a store
// that cannot hear other processes' saves, do not cover every save.
type partialWaker struct {
	*memstore.Outbox
	never chan struct{}
}

func (o *partialWaker) Wakeups() <-chan struct{} { return o.never }
func (o *partialWaker) WakesForAllSaves() bool   { return false }

// With a store whose wake-ups miss some saves, a relay claims again at once
// after a short claim: that is how it finds a message that another
// process saved meanwhile, without waiting for the poll interval.
func TestRelayClaimsAgainAfterShortClaimWithoutFullWakeups(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	first, second := async.NewMessage("orders", "Test", nil), async.NewMessage("orders", "Test", nil)
	if err := store.Outbox().Save(ctx, first); err != nil {
		t.Fatal(err)
	}
	pub, gate := gatedPublisher(first)
	out := &partialWaker{Outbox: store.Outbox(), never: make(chan struct{})}
	stop := startRelay(t, newRelay(t, pub, out, txm.ProcessorConfig{PollInterval: time.Hour, BatchesInFlight: 1}))
	defer stop()
	waitFor(t, "the first message in flight", 5*time.Second, func() bool { return pub.attemptsOf(first.ID()) == 1 })
	if err := store.Outbox().Save(ctx, second); err != nil { // heard by nobody
		t.Fatal(err)
	}
	close(gate)
	waitFor(t, "the second message published", 5*time.Second, func() bool { return pub.publishedIDs()[second.ID()] == 1 })
}

// saveOrders saves n messages on the topic "orders" and returns their IDs
// in save order.
func saveOrders(t *testing.T, store *memstore.Store, n int) []string {
	t.Helper()
	msgs := make([]async.Message, n)
	ids := make([]string, n)
	for i := range msgs {
		msgs[i] = async.NewMessage("orders", "Test", nil)
		ids[i] = msgs[i].ID()
	}
	saveAll(t, store, msgs...)
	return ids
}

// assertPublishedOnce checks that two relays published each of ids once.
func assertPublishedOnce(t *testing.T, pub *recordingPublisher, ids []string, why string) {
	t.Helper()
	for _, id := range ids {
		if n := pub.attemptsOf(id); n != 1 {
			t.Errorf("message %s published %d times by two relays, want 1 (%s)", id, n, why)
		}
	}
}
