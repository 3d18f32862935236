package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
)

// TestProcessorEndToEnd runs txm's relay on each store with a poll
// interval of a minute, so only wake-ups can make it publish in time. On
// PostgreSQL the messages are saved through another pool, so they arrive
// through LISTEN; on SQLite through the store, inside InTx. Every third
// message fails once and comes back through MarkFailed. On PostgreSQL it
// runs with leases and with locked claims (ProcessorConfig.LockClaims),
// pipelined and one batch at a time.
func TestProcessorEndToEnd(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		t.Run("leases", func(t *testing.T) { processorEndToEnd(t, kind, false, 0) })
		if kind != kindSQLite {
			t.Run("locks", func(t *testing.T) { processorEndToEnd(t, kind, true, 0) })
			t.Run("locks-inflight1", func(t *testing.T) { processorEndToEnd(t, kind, true, 1) })
		}
	})
}

func processorEndToEnd(t *testing.T, kind backendKind, lock bool, inFlight int) {
	{
		ctx := context.Background()
		channel := randomName("txm_e2e_")
		relayStore := newTestStore(t, kind, Config{NotifyChannel: channel})
		producer := relayStore.Store
		if kind != kindSQLite {
			producer = storeOn(t, kindPgx, relayStore.pg.newPool(t, 2), Config{NotifyChannel: channel})
		}
		const total = 60
		var (
			mu        sync.Mutex
			published = map[string]int{}
			failed    = map[string]bool{}
			all       = make(chan struct{})
		)
		pub := async.MessagePublisherFunc(func(_ context.Context, topic string, msg async.Message) error {
			mu.Lock()
			defer mu.Unlock()
			if n, _ := msg.Metadata().GetInt("n"); n%3 == 0 && !failed[msg.ID()] {
				failed[msg.ID()] = true
				return errors.New("broker hiccup")
			}
			published[msg.ID()]++
			if len(published) == total {
				close(all)
			}
			return nil
		})
		observed := observedOutbox{Outbox: relayStore.Outbox(), empty: make(chan struct{}, 1), idle: new(atomic.Int64)}
		p, err := txm.NewOutboxProcessorWithConfig(pub, observed, txm.ProcessorConfig{
			PollInterval:    time.Minute,
			BatchSize:       16,
			LockClaims:      lock,
			BatchesInFlight: inFlight,
			Retry:           retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 20 * time.Millisecond, RandomizationFactor: retry.NoJitter},
			Logger:          discardLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		var g errgroup.Group
		g.Go(func() error { return p.Start(runCtx) })
		defer func() {
			stop()
			if err := g.Wait(); err != nil {
				t.Error(err)
			}
		}()
		// Wait for the relay to find its outbox empty and go to sleep, so
		// that what follows depends on the wake-ups.
		select {
		case <-observed.empty:
		case <-time.After(10 * time.Second):
			t.Fatal("the relay never claimed")
		}
		for i := range total {
			m := async.NewMessage("t", "N", nil, async.WithMetadata(async.Metadata{
				"n": i, async.MetaPartitionKey: fmt.Sprintf("k%d", i%4),
			}))
			err := producer.InTx(ctx, func(ctx context.Context) error { return producer.Outbox().Save(ctx, m) })
			if err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-all:
		case <-time.After(20 * time.Second):
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("published %d of %d messages", len(published), total)
		}
		waitFor(t, 5*time.Second, "the outbox to empty", func() bool {
			st, err := relayStore.Outbox().Stats(ctx)
			return err == nil && st.Pending == 0
		})
		mu.Lock()
		defer mu.Unlock()
		for id, n := range published {
			if n != 1 {
				t.Fatalf("%s published %d times", id, n)
			}
		}
		// A locked claim's transaction may wait 2 × PublishTimeout (30s by
		// default) + 1s.
		if idle := time.Duration(observed.idle.Load()); lock && idle != 61*time.Second {
			t.Fatalf("the relay's locked claims had an idle limit of %v, want 61s", idle)
		}
	}
}

// TestSQLiteConcurrentWriters has savers and relays on separate handles of
// one SQLite file, as separate processes would have: no write fails with
// SQLITE_BUSY and every message is published once.
func TestSQLiteConcurrentWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "txm.db")
	open := func() *Store {
		s, err := openSQLite(ctx, path, Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	first := open()
	if err := first.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	const savers, perSaver, relays = 4, 150, 2
	var g errgroup.Group
	for range savers {
		s := open()
		g.Go(func() error {
			for i := range perSaver {
				m := newMsg("t", fmt.Sprintf("k%d", i%7))
				var err error
				if i%2 == 0 {
					err = s.Outbox().Save(ctx, m)
				} else {
					err = s.InTx(ctx, func(ctx context.Context) error {
						if err := s.Inbox("g").Save(ctx, incoming{m}); err != nil {
							return err
						}
						return s.Outbox().Save(ctx, m)
					})
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
	var published atomic.Int64
	var mu sync.Mutex
	seen := map[string]bool{}
	for range relays {
		s := open()
		g.Go(func() error {
			deadline := time.Now().Add(30 * time.Second)
			for published.Load() < savers*perSaver {
				if time.Now().After(deadline) {
					return fmt.Errorf("published %d of %d", published.Load(), savers*perSaver)
				}
				c, err := s.Outbox().Claim(ctx, 50, time.Minute)
				if err != nil {
					return err
				}
				mu.Lock()
				for _, m := range c {
					if seen[m.Message.ID()] {
						mu.Unlock()
						return fmt.Errorf("%s claimed twice", m.Message.ID())
					}
					seen[m.Message.ID()] = true
				}
				mu.Unlock()
				if err := s.Outbox().MarkPublished(ctx, ids(c)...); err != nil {
					return err
				}
				published.Add(int64(len(c)))
				if len(c) == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		sql  bool // SQLite
	}{
		{"injection in a table name", Config{OutboxTable: `x"; DROP TABLE users; --`}, false},
		{"space in a table name", Config{InboxTable: "my inbox"}, false},
		{"leading digit", Config{MigrationsTable: "1table"}, false},
		{"too long", Config{OutboxTable: "a234567890123456789012345678901234567890123456789"}, false},
		{"bad schema", Config{Schema: "public.x"}, false},
		{"bad channel", Config{NotifyChannel: "a-b"}, false},
		{"same tables", Config{OutboxTable: "t", InboxTable: "T"}, false},
		{"negative lease", Config{DefaultLease: -time.Second}, false},
		{"schema on SQLite", Config{Schema: "main"}, true},
	}
	for _, tt := range tests {
		var e engine = postgresEngine{}
		if tt.sql {
			e = sqliteEngine{}
		}
		if _, err := newStore(e, tt.cfg); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	s, err := newStore(postgresEngine{}, Config{Schema: "Tenant_1", OutboxTable: "Outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.cfg.qualified(s.cfg.OutboxTable); got != `"Tenant_1"."Outbox"` {
		t.Fatalf("qualified name %s", got)
	}
	if s.cfg.InboxTable != DefaultInboxTable || s.cfg.DefaultLease != DefaultLease || s.cfg.NotifyChannel != DefaultNotifyChannel || s.cfg.Logger == nil {
		t.Fatalf("defaults not applied: %+v", s.cfg)
	}
	if _, err := newPostgres(nil, Config{}); err == nil {
		t.Error("newPostgres(nil) accepted")
	}
	if _, err := newSQLite(nil, Config{}); err == nil {
		t.Error("newSQLite(nil) accepted")
	}
	if _, err := newPostgresDB(nil, Config{}); err == nil {
		t.Error("newPostgresDB(nil) accepted")
	}
	if _, err := openSQLite(context.Background(), "", Config{}); err == nil {
		t.Error("openSQLite(\"\") accepted")
	}
}

// observedOutbox reports the claims that found nothing; embedding *Outbox
// keeps every capability for the relay to discover.
type observedOutbox struct {
	*Outbox
	empty chan struct{}
	idle  *atomic.Int64 // the idle limit of the last locked claim
}

func (o observedOutbox) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	c, err := o.Outbox.Claim(ctx, limit, lease)
	if err == nil && len(c) == 0 {
		select {
		case o.empty <- struct{}{}:
		default:
		}
	}
	return c, err
}

func (o observedOutbox) ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]txm.Claimed, error) {
	o.idle.Store(int64(idle))
	c, err := locking(o.Outbox).ClaimLocked(ctx, limit, idle)
	if err == nil && len(c) == 0 {
		select {
		case o.empty <- struct{}{}:
		default:
		}
	}
	return c, err
}

// TestPostgresRelaySurvivesKilledConnections terminates every connection of
// the relay's pool three times while it drains 2,000 messages, with leases
// and with locked claims: the relay recovers by itself, every message is
// published (a batch whose marks were lost is published again, never
// lost), each key's first publications come in save order, and the outbox
// ends with nothing pending.
func TestPostgresRelaySurvivesKilledConnections(t *testing.T) {
	for _, lock := range []bool{false, true} {
		t.Run(fmt.Sprintf("lock=%v", lock), func(t *testing.T) {
			t.Parallel()
			relaySurvivesKilledConnections(t, lock)
		})
	}
}

func relaySurvivesKilledConnections(t *testing.T, lock bool) {
	const total, keys = 2000, 20
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	e := newPGEnv(t)
	producer := e.producer(t, ctx)
	msgs, order := saveBacklog(t, ctx, producer, total, func(i int) string {
		if i%2 == 1 {
			return ""
		}
		return fmt.Sprintf("k%d", i%keys)
	})

	app := randomName("txm_relay_")
	relayStore := storeOn(t, kindPgx, e.newPool(t, 4, "application_name", app), Config{PollOnly: true})

	var (
		mu        sync.Mutex
		times     = map[string]int{}
		firstSeen = map[string][]int{} // key -> save positions, in first-publication order
	)
	pub := async.MessagePublisherFunc(func(ctx context.Context, _ string, msg async.Message) error {
		time.Sleep(200 * time.Microsecond) // keep batches in flight when the connections die
		mu.Lock()
		defer mu.Unlock()
		times[msg.ID()]++
		if k := msg.Metadata().PartitionKey(); k != "" && times[msg.ID()] == 1 {
			firstSeen[k] = append(firstSeen[k], order[msg.ID()])
		}
		return nil
	})
	published := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(times)
	}
	p, err := txm.NewOutboxProcessorWithConfig(pub, relayed(relayStore.Outbox(), lock), txm.ProcessorConfig{
		BatchSize: 50, Workers: 4, LockClaims: lock, PollInterval: 20 * time.Millisecond,
		Retry:      retry.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxAttempts: -1},
		StoreRetry: retry.Policy{InitialInterval: 10 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Lease:      time.Second, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return p.Start(runCtx) })
	for kill, at := range []int{300, 900, 1500} {
		waitFor(t, 30*time.Second, fmt.Sprintf("%d messages published before kill %d", at, kill+1), func() bool { return published() >= at })
		var killed int
		err := e.pool.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&killed)
		if err != nil || killed == 0 {
			t.Fatalf("kill %d: terminated %d connections, %v", kill+1, killed, err)
		}
	}
	waitFor(t, 60*time.Second, "every message to be published", func() bool { return published() == total })
	waitFor(t, 30*time.Second, "the outbox to empty", func() bool {
		st, err := producer.Outbox().Stats(ctx)
		return err == nil && st.Pending == 0
	})
	stop()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	again := 0
	for _, m := range msgs {
		switch n := times[m.ID()]; {
		case n == 0:
			t.Fatalf("message %d was never published", order[m.ID()])
		case n > 1:
			again++
		}
	}
	checkKeyOrder(t, firstSeen)
	t.Logf("%d of %d messages published again after their marks were lost", again, total)
}
