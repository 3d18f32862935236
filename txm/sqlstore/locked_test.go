package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// openTx begins a transaction with s.InTx in a goroutine and returns the
// context that carries it and a function that ends it (commit or roll back)
// and returns InTx's error. The transaction is rolled back at cleanup if
// the test did not end it.
func openTx(t *testing.T, s *Store) (ctx context.Context, end func(commit bool) error) {
	t.Helper()
	ctxs := make(chan context.Context, 1)
	decide := make(chan bool, 1)
	result := make(chan error, 1)
	go func() {
		result <- s.InTx(context.Background(), func(ctx context.Context) error {
			ctxs <- ctx
			if !<-decide {
				return errRolledBack
			}
			return nil
		})
	}()
	select {
	case ctx = <-ctxs:
	case err := <-result:
		t.Fatalf("begin: %v", err)
	}
	var once sync.Once
	var err error
	end = func(commit bool) error {
		once.Do(func() {
			decide <- commit
			if err = <-result; errors.Is(err, errRolledBack) {
				err = nil
			}
		})
		return err
	}
	t.Cleanup(func() { _ = end(false) })
	return ctx, end
}

var errRolledBack = errors.New("rolled back by the test")

func mustExec(t *testing.T, s *testStore, stmt string, args ...any) {
	t.Helper()
	execOn(t, s.pg.pool, stmt, args...)
}

// locking returns o as the outbox of a LockingStore: the tests' stores are
// built by newStore, which every database shares.
func locking(o *Outbox) *LockingOutbox { return &LockingOutbox{o} }

// relayed returns the outbox that a relay with LockClaims set to lock
// takes: o, or o as a LockingOutbox when lock.
func relayed(o *Outbox, lock bool) txm.OutboxStore {
	if lock {
		return locking(o)
	}
	return o
}

func mustClaimLocked(t *testing.T, ctx context.Context, o *Outbox, limit int) []txm.Claimed {
	t.Helper()
	c, err := locking(o).ClaimLocked(ctx, limit, 0)
	if err != nil {
		t.Fatalf("claim locked: %v", err)
	}
	return c
}

// TestPostgresClaimLocked checks what a locked claim takes and how long it
// holds it: messages in save order, a key's messages only in a chain from
// its head; none that another claim holds, locked or leased, nor any later
// message of their keys; held until its transaction ends, which commits
// the outcomes written in it or, rolled back, frees the messages at once.
func TestPostgresClaimLocked(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true, KeepPublished: true})
		o := s.Outbox()
		a1, n1, a2, b1, n2, a3, b2 := newMsg("t", "a"), newMsg("t", ""), newMsg("t", "a"), newMsg("t", "b"), newMsg("t", ""), newMsg("t", "a"), newMsg("t", "b")
		mustSave(t, o, a1, n1, a2, b1, n2, a3, b2)
		want := func(what string, got []txm.Claimed, msgs ...async.Message) {
			t.Helper()
			if !slices.Equal(ids(got), msgIDs(msgs)) {
				t.Fatalf("%s: %v, want %v", what, ids(got), msgIDs(msgs))
			}
		}

		if _, err := locking(o).ClaimLocked(ctx, 10, 0); err == nil {
			t.Fatal("a locked claim without a transaction succeeded")
		}

		tx1, end1 := openTx(t, s.Store)
		want("first locked claim, limit 3", mustClaimLocked(t, tx1, o, 3), a1, n1, a2)
		// A second locked claim takes the rest but for a3, whose key
		// tx1 holds; a lease claim takes nothing while both hold theirs.
		tx2, end2 := openTx(t, s.Store)
		want("locked claim beside tx1", mustClaimLocked(t, tx2, o, 10), b1, n2, b2)
		want("lease claim beside tx1 and tx2", mustClaim(t, o, 10, time.Minute))
		if err := end2(false); err != nil {
			t.Fatal(err)
		}
		want("lease claim after tx2 rolled back", mustClaim(t, o, 10, time.Minute), b1, n2, b2)
		if err := o.ReleaseClaims(ctx, n2.ID(), b2.ID()); err != nil { // keep b1 leased
			t.Fatal(err)
		}

		// tx1 publishes a1 and n1 and fails a2: key a parks behind a2.
		if err := o.MarkPublished(tx1, a1.ID(), n1.ID()); err != nil {
			t.Fatal(err)
		}
		if err := o.MarkFailed(tx1, a2.ID(), time.Hour, "broker down"); err != nil {
			t.Fatal(err)
		}
		if err := end1(true); err != nil {
			t.Fatal(err)
		}
		// b1 is leased (above), so b2 waits behind it; a3 waits behind a2.
		tx3, end3 := openTx(t, s.Store)
		want("claim after tx1", mustClaimLocked(t, tx3, o, 10), n2)
		if err := o.ExtendClaims(tx3, time.Hour, n2.ID()); err != nil {
			t.Fatal(err)
		}
		if err := end3(true); err != nil {
			t.Fatal(err)
		}
		if err := o.ReleaseClaims(ctx, b1.ID()); err != nil {
			t.Fatal(err)
		}
		// Key b is free again: a rolled-back claim takes b1 and b2, and
		// frees them at once.
		tx4, end4 := openTx(t, s.Store)
		want("claim after b1's release", mustClaimLocked(t, tx4, o, 10), b1, b2)
		if err := end4(false); err != nil {
			t.Fatal(err)
		}
		want("lease claim after the rollback", mustClaim(t, o, 10, time.Minute), b1, b2)

		// A parked key costs a claim nothing: behind a dead head, its
		// messages are left out before the limit, so a claim of 2 still
		// reaches the message saved after them.
		p1, p2, p3, x := newMsg("t", "p"), newMsg("t", "p"), newMsg("t", "p"), newMsg("t", "")
		mustSave(t, o, p1, p2, p3, x)
		if err := o.MarkDead(ctx, p1.ID(), "poison"); err != nil {
			t.Fatal(err)
		}
		tx5, end5 := openTx(t, s.Store)
		want("claim past a parked key", mustClaimLocked(t, tx5, o, 2), x)
		if err := end5(false); err != nil {
			t.Fatal(err)
		}
		mustExec(t, s, "DELETE FROM txm_outbox WHERE partition_key = 'p' OR id = $1", x.ID())

		var states []string
		rows, err := s.pg.pool.Query(ctx, "SELECT id || ' ' || state || ' ' || attempts || ' ' || (claimed_until IS NOT NULL) FROM txm_outbox ORDER BY seq")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var r string
			if err := rows.Scan(&r); err != nil {
				t.Fatal(err)
			}
			states = append(states, r)
		}
		wantStates := []string{
			a1.ID() + " published 0 false", n1.ID() + " published 0 false", a2.ID() + " pending 1 false",
			b1.ID() + " pending 0 true", n2.ID() + " pending 0 true", a3.ID() + " pending 0 false", b2.ID() + " pending 0 true",
		}
		if !slices.Equal(states, wantStates) {
			t.Fatalf("rows:\n%v\nwant\n%v", states, wantStates)
		}
	})
}

// TestSQLiteHandMadeLockingOutbox: SQLite's store is no LockingStore (a
// transaction held across a publish would stop every save), but a
// LockingOutbox can be written by hand around its outbox; its claim then
// fails with an error, without running a statement.
func TestSQLiteHandMadeLockingOutbox(t *testing.T) {
	s := newTestStore(t, kindSQLite, Config{})
	mustSave(t, s.Outbox(), newMsg("t", ""))
	err := s.InTx(context.Background(), func(ctx context.Context) error {
		_, err := locking(s.Outbox()).ClaimLocked(ctx, 10, 0)
		return err
	})
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("locked claim on SQLite: %v, want errors.ErrUnsupported", err)
	}
	if c := mustClaim(t, s.Outbox(), 10, time.Minute); len(c) != 1 {
		t.Fatalf("a lease claim after the refused locked claim got %d messages, want 1", len(c))
	}
}

// TestBuildLocking: BuildLocking builds the stores of the databases that
// claim by locking and refuses SQLite's, leaving the handle to its owner.
func TestBuildLocking(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "build.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, owned := range []bool{false, true} {
		s, err := BuildLocking(seam.Handle{Database: seam.SQLite, DB: db, Owned: owned}, Config{})
		if err == nil || s != nil || !strings.Contains(err.Error(), "sqlite cannot claim by locking") {
			t.Fatalf("BuildLocking on SQLite (owned %t) = %v, %v; want an error saying SQLite cannot claim by locking", owned, s, err)
		}
		if err := db.Ping(); err != nil {
			t.Fatalf("the handle after the refusal (owned %t): %v", owned, err)
		}
	}
	pgDB, err := sql.Open("pgx", "") // opens no connection
	if err != nil {
		t.Fatal(err)
	}
	defer pgDB.Close()
	s, err := BuildLocking(seam.Handle{Database: seam.Postgres, DB: pgDB}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := any(s.Outbox()).(txm.LockingClaimer); !ok {
		t.Fatal("the PostgreSQL store's outbox is no txm.LockingClaimer")
	}
}

// TestPostgresKilledLockedRelay kills a relay's backend in the middle of a
// locked batch: nothing it did in the batch stays, and another relay takes
// the messages over at once, in order, without waiting for a lease.
func TestPostgresKilledLockedRelay(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		e := newPGEnv(t)
		other := e.producer(t, ctx)
		var msgs []async.Message
		for i := range 6 {
			key := ""
			if i < 3 {
				key = fmt.Sprintf("k%d", i)
			}
			msgs = append(msgs, newMsg("t", key))
		}
		mustSave(t, other.Outbox(), msgs...)

		poolA := e.newPool(t, 1)
		pidA := backendPID(t, poolA)
		relayA := storeOn(t, kind, poolA, Config{PollOnly: true})
		txA, endA := openTx(t, relayA)
		if c := mustClaimLocked(t, txA, relayA.Outbox(), 100); !slices.Equal(ids(c), msgIDs(msgs)) {
			t.Fatalf("relay A claimed %v", ids(c))
		}
		if err := relayA.Outbox().MarkPublished(txA, msgs[0].ID()); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pidA); err != nil {
			t.Fatal(err)
		}
		if err := endA(true); err == nil {
			t.Fatal("relay A committed after its backend was terminated")
		}
		var got []txm.Claimed
		waitFor(t, 5*time.Second, "PostgreSQL to end relay A's transaction", func() bool {
			got = mustClaim(t, other.Outbox(), 100, time.Minute)
			return len(got) > 0
		})
		if !slices.Equal(ids(got), msgIDs(msgs)) {
			t.Fatalf("relay B took over %v, want all six (relay A's mark rolled back)", ids(got))
		}
	})
}

// TestPostgresLockingAndLeasingRelays drains 6,000 messages with two
// relays that claim by locking and two that lease, each on a connection
// of its own, over 40 partition keys and over 3: every message is
// published exactly once, none is held by two relays at once, and each key
// comes out in save order.
func TestPostgresLockingAndLeasingRelays(t *testing.T) {
	for _, keys := range []int{40, 3} {
		t.Run(fmt.Sprintf("keys=%d", keys), func(t *testing.T) {
			t.Parallel()
			lockingAndLeasingRelays(t, keys)
		})
	}
}

func lockingAndLeasingRelays(t *testing.T, keys int) {
	const (
		total   = 6000
		batch   = 200
		relays  = 4
		timeout = 60 * time.Second
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	e := newPGEnv(t)
	msgs, order := saveBacklog(t, ctx, e.producer(t, ctx), total, func(i int) string {
		if i%3 == 0 {
			return ""
		}
		return fmt.Sprintf("key-%d", i%keys)
	})

	ledger := newRelayLedger(order)
	stores := make([]*Store, relays)
	for r := range stores {
		kind := pgKinds[(r/2)%len(pgKinds)] // each way on pgx and on database/sql
		stores[r] = storeOn(t, kind, e.newPool(t, 1), Config{PollOnly: true})
	}
	// Even relays claim by locking, odd ones lease.
	err := ledger.drain(ctx, relays, func(ctx context.Context, r int) (int, error) {
		s := stores[r]
		o := s.Outbox()
		if r%2 == 1 {
			return ledger.leased(ctx, r, o, batch)
		}
		var c []txm.Claimed
		err := s.InTx(ctx, func(ctx context.Context) (err error) {
			if c, err = locking(o).ClaimLocked(ctx, batch, time.Minute); err != nil || len(c) == 0 {
				return err
			}
			if err := ledger.take(r, c); err != nil {
				return err
			}
			return o.MarkPublished(ctx, ids(c)...)
		})
		if err != nil {
			return 0, err
		}
		ledger.put(c) // after the commit: until then the rows are locked
		return len(c), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ledger.check(t, msgs)
}

// TestPostgresLockedRelayStopFreesClaims stops a relay with LockClaims
// while its publisher hangs and batches wait behind it: Start returns, no
// transaction stays open (goleak checks the goroutines that held them) and
// every message is pending and free to claim at once, none leased.
func TestPostgresLockedRelayStopFreesClaims(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		o := s.Outbox()
		var msgs []async.Message
		for range 20 {
			msgs = append(msgs, newMsg("t", ""))
		}
		mustSave(t, o, msgs...)
		publishing := make(chan struct{}, 1)
		pub := async.MessagePublisherFunc(func(ctx context.Context, _ string, _ async.Message) error {
			select {
			case publishing <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		})
		p, err := txm.NewOutboxProcessorWithConfig(pub, locking(o), txm.ProcessorConfig{
			LockClaims: true, BatchSize: 5, BatchesInFlight: 3, Workers: 1,
			DrainTimeout: 100 * time.Millisecond, Logger: discardLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		started := make(chan error, 1)
		go func() { started <- p.Start(runCtx) }()
		select {
		case <-publishing:
		case <-time.After(10 * time.Second):
			t.Fatal("the relay never published")
		}
		time.Sleep(50 * time.Millisecond) // let it claim ahead
		stop()
		select {
		case err := <-started:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Start did not return after its context was cancelled")
		}
		var leased, pending int
		err = s.pg.pool.QueryRow(ctx, "SELECT count(*) FILTER (WHERE claimed_until IS NOT NULL), count(*) FILTER (WHERE state = 'pending') FROM txm_outbox").Scan(&leased, &pending)
		if err != nil || leased != 0 || pending != len(msgs) {
			t.Fatalf("after Stop: %d leased, %d pending, %v; want 0 leased, %d pending", leased, pending, err, len(msgs))
		}
		tx, end := openTx(t, s.Store)
		got := mustClaimLocked(t, tx, o, 100)
		_ = end(false)
		// The messages whose publish was cut short wait for their retry;
		// every other one is free.
		if len(got) < len(msgs)-5 {
			t.Fatalf("claimed %d of %d messages after Stop", len(got), len(msgs))
		}
	})
}

// TestPostgresClaimLockedPlan: with the settings a locked claim pins in the
// relay's transaction, its plan reads pending_idx in save order, looks each
// key's head and each message's predecessor up in unpublished_key_idx and
// stops at the limit, also with statistics
// taken when the relay was caught up and a backlog they have not seen.
func TestPostgresClaimLockedPlan(t *testing.T) {
	ctx := context.Background()
	e := newPGEnv(t)
	pool := e.newPool(t, 1)
	s := storeOn(t, kindPgx, pool, Config{PollOnly: true})
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Every other message keyed, over 50 keys.
	saveMany := func(n int) {
		t.Helper()
		saveBacklog(t, ctx, s, n, func(i int) string {
			if i%2 == 0 {
				return fmt.Sprintf("k%d", i%50)
			}
			return ""
		})
	}
	saveMany(20000)
	execOn(t, pool, "UPDATE txm_outbox SET state = 'published', published_at = now()")
	execOn(t, pool, "VACUUM ANALYZE txm_outbox")
	saveMany(3000)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, s.stmts.pinLocked, nil); err != nil {
		t.Fatal(err)
	}
	var plan string
	if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+s.limited(true, 100)).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plan, "Bitmap") || strings.Contains(plan, "Seq Scan") || strings.Contains(plan, `"Sort"`) ||
		strings.Count(plan, "txm_outbox_pending_idx") != 1 || strings.Count(plan, "txm_outbox_unpublished_key_idx") != 1 || strings.Count(plan, "txm_outbox_held_idx") != 1 {
		t.Fatalf("the locked claim's plan reads the backlog, not the indexes it should:\n%s", plan)
	}
}

// TestPostgresLockedRelayStopsWithoutAConnection starts a relay with
// LockClaims on a pool whose only connection the test holds: its claim
// waits for a connection, and the hard stop (DrainTimeout after Start's
// context ends) ends that wait, so Start returns (goleak then checks that
// no goroutine is left).
func TestPostgresLockedRelayStopsWithoutAConnection(t *testing.T) {
	ctx := context.Background()
	e := newPGEnv(t)
	migrator := e.producer(t, ctx)
	mustSave(t, migrator.Outbox(), newMsg("t", ""))
	pool := e.newPool(t, 1)
	s := storeOn(t, kindPgx, pool, Config{PollOnly: true})
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()

	pub := async.MessagePublisherFunc(func(context.Context, string, async.Message) error { return nil })
	p, err := txm.NewOutboxProcessorWithConfig(pub, locking(s.Outbox()), txm.ProcessorConfig{
		LockClaims: true, DrainTimeout: 200 * time.Millisecond, Logger: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	started := make(chan error, 1)
	go func() { started <- p.Start(runCtx) }()
	time.Sleep(100 * time.Millisecond) // the claim now waits for the held connection
	stop()
	select {
	case err := <-started:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Start did not return while its claim waited for a connection")
	}
}

// TestPostgresClaimLockedIdleTimeout: a locked claim with an idle limit
// whose transaction then waits longer than that (a relay that stopped
// responding) loses its claim: PostgreSQL ends the session, another claim
// takes the messages, and the late commit fails. In a transaction of the
// caller's, the limit is set the same way.
func TestPostgresClaimLockedIdleTimeout(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		o := s.Outbox()
		m := newMsg("t", "k")
		mustSave(t, o, m)

		tx, end := openTx(t, s.Store)
		if c, err := locking(o).ClaimLocked(tx, 10, 300*time.Millisecond); err != nil || len(c) != 1 {
			t.Fatalf("locked claim: %v, %v", ids(c), err)
		}
		if c := mustClaim(t, o, 10, time.Minute); len(c) != 0 {
			t.Fatalf("lease claim while the locked claim holds: %v", ids(c))
		}
		var got []txm.Claimed
		waitFor(t, 5*time.Second, "PostgreSQL to end the idle transaction", func() bool {
			got = mustClaim(t, o, 10, time.Minute)
			return len(got) > 0
		})
		if !slices.Equal(ids(got), []string{m.ID()}) {
			t.Fatalf("claimed after the idle limit: %v", ids(got))
		}
		if err := o.MarkPublished(tx, m.ID()); err == nil {
			if err := end(true); err == nil {
				t.Fatal("the idle transaction still committed")
			}
		}
		if err := o.ReleaseClaims(ctx, m.ID()); err != nil {
			t.Fatal(err)
		}

		if kind != kindPgx {
			return
		}
		callerTx, err := s.pg.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer callerTx.Rollback(ctx)
		if c, err := locking(o).ClaimLocked(WithPgxTx(ctx, callerTx), 10, 300*time.Millisecond); err != nil || len(c) != 1 {
			t.Fatalf("locked claim in the caller's transaction: %v, %v", ids(c), err)
		}
		var setting string
		if err := callerTx.QueryRow(ctx, "SHOW idle_in_transaction_session_timeout").Scan(&setting); err != nil || setting != "300ms" {
			t.Fatalf("idle_in_transaction_session_timeout in the caller's transaction: %q, %v", setting, err)
		}
	})
}

// TestPostgresMarkPublishedByLockedSeq: in a locked claim's transaction,
// MarkPublished of the messages it returned deletes their rows through
// pending_idx, by seq; a list with any other ID takes the primary key.
// Both remove exactly the rows named.
func TestPostgresMarkPublishedByLockedSeq(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		o := s.Outbox()
		m1, m2, m3, m4 := newMsg("t", ""), newMsg("t", "k"), newMsg("t", ""), newMsg("t", "")
		mustSave(t, o, m1, m2, m3)
		err := s.InTx(ctx, func(ctx context.Context) error {
			c := mustClaimLocked(t, ctx, o, 2)
			if got := ids(c); !slices.Equal(got, []string{m1.ID(), m2.ID()}) {
				t.Fatalf("claimed %v, want %s and %s", got, m1.ID(), m2.ID())
			}
			h := holderFrom(ctx)
			seqs, ok := h.lockedSeqs(ids(c))
			if !ok {
				t.Fatal("the claimed messages' seqs were not recorded")
			}
			if _, ok := h.lockedSeqs([]string{m1.ID(), m3.ID()}); ok {
				t.Fatal("an ID that was not claimed has a recorded seq")
			}
			var plan strings.Builder
			q, _, err := s.querier(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := q.query(ctx, "EXPLAIN "+s.stmts.publishedBySeq, seqs)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan.WriteString(line + "\n")
			}
			_ = rows.Close()
			if !strings.Contains(plan.String(), "txm_outbox_pending_idx") {
				t.Errorf("the mark by seq does not use pending_idx:\n%s", plan.String())
			}
			if err := o.MarkPublished(ctx, m1.ID()); err != nil { // by seq
				t.Fatal(err)
			}
			return o.MarkPublished(ctx, m2.ID(), m4.ID()) // m4 was not claimed: by ID
		})
		if err != nil {
			t.Fatal(err)
		}
		left := outboxIDs(t, s)
		if !slices.Equal(left, []string{m3.ID()}) {
			t.Fatalf("rows left %v, want only %s", left, m3.ID())
		}
	})
}

// TestPostgresMarkPublishedByLeasedSeq: the store remembers the seqs of the
// messages its lease claims returned until their outcome is recorded, and
// MarkPublished of those deletes exactly their rows.
func TestPostgresMarkPublishedByLeasedSeq(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		o := s.Outbox()
		m1, m2, m3 := newMsg("t", ""), newMsg("t", ""), newMsg("t", "")
		mustSave(t, o, m1, m2, m3)
		c := mustClaim(t, o, 2, time.Minute)
		if got := ids(c); !slices.Equal(got, []string{m1.ID(), m2.ID()}) {
			t.Fatalf("claimed %v, want %s and %s", got, m1.ID(), m2.ID())
		}
		if err := o.ReleaseClaims(ctx, m2.ID()); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.leased.take([]string{m2.ID()}); ok {
			t.Fatal("a released message's seq is still remembered")
		}
		if err := o.MarkPublished(ctx, m1.ID()); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.leased.take([]string{m1.ID()}); ok {
			t.Fatal("a published message's seq is still remembered")
		}
		left := outboxIDs(t, s)
		if !slices.Equal(left, []string{m2.ID(), m3.ID()}) {
			t.Fatalf("rows left %v, want %s and %s", left, m2.ID(), m3.ID())
		}
	})
}

// outboxIDs returns the IDs of the outbox's rows in save order.
func outboxIDs(t *testing.T, s *testStore) []string {
	t.Helper()
	rows, err := s.pg.pool.Query(context.Background(), "SELECT id FROM txm_outbox ORDER BY seq")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestPostgresLockedSettledAreForgotten: in a locked claim's transaction,
// the messages settled there (dead, or published) are no longer found by
// seq, so a later MarkPublished of them goes by ID and, as MarkPublished
// does, takes a dead letter out too; the others still go by seq.
func TestPostgresLockedSettledAreForgotten(t *testing.T) {
	forEachPGKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		o := s.Outbox()
		mustSave(t, o, newMsg("t", ""), newMsg("t", ""), newMsg("t", ""))
		err := s.InTx(ctx, func(ctx context.Context) error {
			c := ids(mustClaimLocked(t, ctx, o, 3))
			h := holderFrom(ctx)
			if err := o.MarkDead(ctx, c[0], "poison"); err != nil {
				return err
			}
			if err := o.MarkPublished(ctx, c[1]); err != nil {
				return err
			}
			for _, id := range c[:2] {
				if _, ok := h.lockedSeqs([]string{id}); ok {
					t.Errorf("%s, settled, is still found by seq", id)
				}
			}
			if _, ok := h.lockedSeqs(c[2:]); !ok {
				t.Errorf("%s, not settled, is no longer found by seq", c[2])
			}
			return o.MarkPublished(ctx, c[0], c[2])
		})
		if err != nil {
			t.Fatal(err)
		}
		if left := outboxIDs(t, s); len(left) != 0 {
			t.Fatalf("rows left %v, want none", left)
		}
	})
}
