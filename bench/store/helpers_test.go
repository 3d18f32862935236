package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/benchutil"
	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// Helpers of the store benchmarks (bench_test.go): the library's store
// calls and the hand-written SQL they are measured against.

// storePayloadSize is the size of every benchmark message's payload.
const storePayloadSize = 256

// storeLease is the claim lease of the store and of the hand-written claims.
const storeLease = 30 * time.Second

// storeTopic and storeName are the topic and name of every message.
const (
	storeTopic = "orders.placed"
	storeName  = "OrderPlaced"
)

// storePayload is the 256-byte JSON payload of every message.
var storePayload = scenario.Payload(storePayloadSize)

// storeKey returns the partition key of the i-th message when there are
// keys distinct keys, or "" (no key) when keys is 0.
func storeKey(i, keys int) string {
	if keys == 0 {
		return ""
	}
	return fmt.Sprintf("customer-%d", i%keys)
}

// storeMessage returns a new message as the library's users build it: a
// new UUIDv7, the payload, and metadata with a content type and, unless
// key is "", a partition key.
func storeMessage(key string) async.Message {
	md := async.Metadata{async.MetaContentType: "application/json"}
	if key != "" {
		md[async.MetaPartitionKey] = key
	}
	return async.NewMessage(storeTopic, storeName, storePayload, async.WithMetadata(md))
}

// storeRow is an outbox row as hand-written code writes it: the values
// that sqlstore's Save writes into the same columns.
type storeRow struct {
	id, topic, name string
	key             *string // NULL without a partition key
	metadata        string  // JSON
	payload         []byte
	sentAt          time.Time
}

// storeNewRow returns a new row for a message with the given partition key
// ("" for none), built the way hand-written code would: a new ID and the
// metadata marshalled to JSON.
func storeNewRow(key string) storeRow {
	md := map[string]string{async.MetaContentType: "application/json"}
	r := storeRow{id: async.NewID(), topic: storeTopic, name: storeName, payload: storePayload, sentAt: time.Now()}
	if key != "" {
		md[async.MetaPartitionKey] = key
		r.key = &key
	}
	b, _ := json.Marshal(md) // a map of strings always encodes
	r.metadata = string(b)
	return r
}

// storeRowOf returns the row of msg, as hand-written code would write it.
func storeRowOf(msg async.Message) storeRow {
	r := storeRow{id: msg.ID(), topic: msg.Subject(), name: msg.MessageName(), payload: msg.Data(), sentAt: msg.SentAt()}
	md := msg.Metadata().Strings()
	if k := md[async.MetaPartitionKey]; k != "" {
		r.key = &k
	}
	b, _ := json.Marshal(md) // a map of strings always encodes
	r.metadata = string(b)
	return r
}

// args returns the row's values in the order of storeSQL.insert.
func (r storeRow) args() []any {
	return []any{r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt}
}

// storeSQL holds the hand-written statements of the baselines, with the
// benchmark's table names filled in.
type storeSQL struct {
	order string // the business row: $1 id, $2 customer, $3 cents
	// insert is the minimal hand-written outbox insert: the columns and
	// values sqlstore's Save writes, ON CONFLICT DO NOTHING, no NOTIFY.
	insert string
	// insertNotify is insert that also notifies $8 in the same statement.
	insertNotify string
	// insertUnnest inserts one row per element of seven column arrays.
	insertUnnest string
	// claimSelect and claimLease are the two statements of the
	// hand-written claim's transaction; claimOne is both in one statement.
	claimSelect, claimLease, claimOne string
	// claimLocked is the claim of a loop that holds its transaction
	// until the batch is marked: the row locks are its claim.
	claimLocked string
	published   string // $1 ids
	inbox       string // $1 group .. $8 received_at
}

func newStoreSQL(outbox, inbox, orders string) storeSQL {
	const returning = `RETURNING id, topic, name, metadata, payload, sent_at, attempts`
	// leaseFree selects the pending rows that no relay holds a lease on:
	// without it a claim would take messages leased by an earlier one.
	const leaseFree = `state = 'pending' AND (claimed_until IS NULL OR claimed_until <= statement_timestamp())`
	insert := `INSERT INTO ` + outbox + ` (id, topic, name, partition_key, metadata, payload, sent_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING`
	return storeSQL{
		order:        `INSERT INTO ` + orders + ` (id, customer, cents) VALUES ($1, $2, $3)`,
		insert:       insert,
		insertNotify: `WITH ins AS (` + insert + ` RETURNING 1) SELECT pg_notify($8, '') FROM ins`,
		insertUnnest: `INSERT INTO ` + outbox + ` (id, topic, name, partition_key, metadata, payload, sent_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bytea[], $7::timestamptz[])`,
		claimSelect: `SELECT id FROM ` + outbox + ` WHERE ` + leaseFree + `
    ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
		claimLease: `UPDATE ` + outbox + ` SET claimed_until = statement_timestamp() + $2::bigint * interval '1 microsecond'
    WHERE id = ANY($1) ` + returning,
		claimOne: `UPDATE ` + outbox + ` SET claimed_until = statement_timestamp() + $2::bigint * interval '1 microsecond'
    WHERE id = ANY (ARRAY(SELECT id FROM ` + outbox + ` WHERE ` + leaseFree + `
        ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)) ` + returning,
		claimLocked: `SELECT id, topic, name, metadata, payload, sent_at, attempts FROM ` + outbox + ` WHERE ` + leaseFree + `
    ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED`,
		published: `UPDATE ` + outbox + ` SET state = 'published', published_at = statement_timestamp(), claimed_until = NULL
    WHERE id = ANY($1)`,
		inbox: `INSERT INTO ` + inbox + ` (consumer_group, id, topic, name, metadata, payload, sent_at, received_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (consumer_group, id) DO NOTHING`,
	}
}

// storePG is a PostgreSQL schema of one benchmark run's own, created and
// migrated by sqlstore's Migrate, with an orders table for the business
// rows, and dropped in cleanup.
type storePG struct {
	url    string
	schema string
	pool   *pgxpool.Pool
	sql    storeSQL
	// outbox, inbox and orders are the qualified table names.
	outbox, inbox, orders string
	// filler is a PollOnly store that pre-fills the outbox.
	filler *sqlstore.LockingStore
}

// newStorePG creates the schema and a pool of at most conns connections.
func newStorePG(tb testing.TB, conns int) *storePG {
	tb.Helper()
	u := testenv.URL(tb, testenv.Postgres)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &storePG{url: u, schema: "txm_storebench_" + scenario.Random()}
	admin, err := pgx.Connect(ctx, u)
	if err != nil {
		tb.Fatalf("connect to PostgreSQL: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+e.schema); err != nil {
		_ = admin.Close(ctx)
		tb.Fatalf("create schema: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+e.schema+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", e.schema, err)
		}
		_ = admin.Close(ctx)
	})
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		tb.Fatalf("parse %s: %v", u, err)
	}
	cfg.MaxConns = int32(conns)
	if e.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(e.pool.Close)
	e.filler = e.store(tb, sqlstore.Config{PollOnly: true})
	if err := e.filler.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	e.outbox = e.schema + "." + sqlstore.DefaultOutboxTable
	e.inbox = e.schema + "." + sqlstore.DefaultInboxTable
	e.orders = e.schema + ".orders"
	if _, err := e.pool.Exec(ctx, `CREATE TABLE `+e.orders+` (id text PRIMARY KEY, customer text NOT NULL, cents bigint NOT NULL)`); err != nil {
		tb.Fatalf("create orders: %v", err)
	}
	e.sql = newStoreSQL(e.outbox, e.inbox, e.orders)
	return e
}

// config fills in the env's schema, a NOTIFY channel of its own (so that
// other processes' listeners do not hear it) and a silent logger.
// The store keeps published rows (Config.KeepPublished), as the
// hand-written statements it is measured against mark them published.
func (e *storePG) config(cfg sqlstore.Config) sqlstore.Config {
	cfg.KeepPublished = true
	cfg.Schema = e.schema
	cfg.NotifyChannel = e.schema
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// store returns a pgx store on the env's pool, closed in cleanup.
func (e *storePG) store(tb testing.TB, cfg sqlstore.Config) *sqlstore.LockingStore {
	tb.Helper()
	s, err := postgres.New(e.pool, e.config(cfg))
	if err != nil {
		tb.Fatalf("NewPostgres: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// genericStore returns a PollOnly pgx store on a pool of its own (two
// connections, closed in cleanup) whose sessions plan every prepared
// statement generically (plan_cache_mode = force_generic_plan).
func (e *storePG) genericStore(tb testing.TB) *sqlstore.LockingStore {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		tb.Fatalf("parse %s: %v", e.url, err)
	}
	cfg.MaxConns = 2
	cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	s, err := postgres.New(pool, e.config(sqlstore.Config{PollOnly: true}))
	if err != nil {
		tb.Fatalf("NewPostgres: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// sqlDB opens a database/sql handle (pgx's stdlib driver) of at most
// conns connections, closed in cleanup.
func (e *storePG) sqlDB(tb testing.TB, conns int) *sql.DB {
	tb.Helper()
	cc, err := pgx.ParseConfig(e.url)
	if err != nil {
		tb.Fatalf("parse %s: %v", e.url, err)
	}
	db := stdlib.OpenDB(*cc)
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// sqlStore returns a database/sql store on db, closed in cleanup.
func (e *storePG) sqlStore(tb testing.TB, db *sql.DB, cfg sqlstore.Config) *sqlstore.LockingStore {
	tb.Helper()
	s, err := postgres.NewDB(db, e.config(cfg))
	if err != nil {
		tb.Fatalf("NewPostgresDB: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// exec runs a statement outside any measurement.
func (e *storePG) exec(tb testing.TB, stmt string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := e.pool.Exec(ctx, stmt); err != nil {
		tb.Fatalf("%s: %v", stmt, err)
	}
}

// settle flushes the dirty buffers (CHECKPOINT, so that no checkpoint
// started by an earlier run's writes lands in the measurement) and, when
// analyze is true, vacuums and analyzes the outbox so that every claim
// starts from the same table and plans.
func (e *storePG) settle(tb testing.TB, analyze bool) {
	tb.Helper()
	if analyze {
		e.exec(tb, "VACUUM ANALYZE "+e.outbox)
	}
	e.exec(tb, "CHECKPOINT")
}

// fill empties the outbox and saves n messages with the store's SaveMany,
// the i-th with storeKey(i, keys).
func (e *storePG) fill(tb testing.TB, n, keys int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e.exec(tb, "TRUNCATE "+e.outbox)
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = storeMessage(storeKey(i, keys))
	}
	for chunk := range slices.Chunk(msgs, 1000) {
		if k, err := e.filler.Outbox().SaveMany(ctx, chunk); err != nil || k != len(chunk) {
			tb.Fatalf("SaveMany: %d of %d: %v", k, len(chunk), err)
		}
	}
}

// counts returns the outbox's published rows and the others.
func (e *storePG) counts(tb testing.TB) (published, other int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state = 'published'),
        count(*) FILTER (WHERE state <> 'published') FROM `+e.outbox).Scan(&published, &other); err != nil {
		tb.Fatalf("count: %v", err)
	}
	return published, other
}

// storeBlock runs op n times from clients goroutines, which take the
// iterations (0 to n-1) from a shared counter, and returns the time the n
// calls took.
func storeBlock(ctx context.Context, clients, n int, op func(ctx context.Context, i int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := op(ctx, int(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	return took, <-errs
}

// storeMixPath is one path of a benchmark that interleaves its paths: run
// does one block of work, and returns the time the work took (its own
// preparation excluded) and how many units (transactions, messages) it
// did.
type storeMixPath struct {
	name string
	run  func(ctx context.Context) (took time.Duration, units int, err error)
}

// storeMix runs every path once per round, b.N rounds, rotating their
// order each round so that each path runs equally often in each position
// and all of them share the machine's ups and downs (it is shared with
// other work). It reports each path's rate as "<unit>:<path>" and, for
// every path but the first (the baseline), its rate divided by the
// baseline's as "ratio:<path>". ns/op is the wall time of a round,
// preparation included: read the rates.
func storeMix(b *testing.B, unit string, paths []storeMixPath) {
	b.Helper()
	took := make([]time.Duration, len(paths))
	units := make([]int, len(paths))
	ctx := context.Background()
	round := 0
	for b.Loop() {
		for j := range paths {
			k := (round + j) % len(paths)
			d, u, err := paths[k].run(ctx)
			if err != nil {
				b.Fatalf("%s: %v", paths[k].name, err)
			}
			took[k] += d
			units[k] += u
		}
		round++
	}
	base := float64(units[0]) / took[0].Seconds()
	for k, p := range paths {
		rate := float64(units[k]) / took[k].Seconds()
		b.ReportMetric(rate, unit+":"+p.name)
		if k > 0 {
			b.ReportMetric(rate/base, "ratio:"+p.name)
		}
	}
}

// storeDrainWakeups receives the store's wake-ups until cleanup, as a
// relay would (so that PostgreSQL has a listener to deliver NOTIFY to),
// and returns a channel that a wake-up reaches too.
func storeDrainWakeups(tb testing.TB, s *sqlstore.Store) <-chan struct{} {
	tb.Helper()
	wake := s.Outbox().Wakeups()
	seen := make(chan struct{}, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-wake:
				select {
				case seen <- struct{}{}:
				default:
				}
			case <-stop:
				return
			}
		}
	}()
	tb.Cleanup(func() {
		close(stop)
		<-done
	})
	return seen
}

// storeAwaitListen runs op (a save in a transaction of the caller's, which
// only NOTIFY reports) until a wake-up arrives, so that the store's LISTEN
// is up before the measurement.
func storeAwaitListen(tb testing.TB, seen <-chan struct{}, op func(ctx context.Context, i int) error) {
	tb.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for i := -1; time.Now().Before(deadline); i-- {
		if err := op(ctx, i); err != nil {
			tb.Fatalf("save while waiting for LISTEN: %v", err)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-seen:
			t.Stop()
			return
		case <-t.C:
		}
	}
	tb.Fatal("no NOTIFY wake-up within 10s: LISTEN is not up")
}

// newStoreIncoming returns a received message for the inbox benchmarks.
func newStoreIncoming() benchutil.Delivery {
	return benchutil.Delivery{Message: storeMessage("customer-7"), At: time.Now()}
}

// storeSQLite is a SQLite database file of one benchmark run's own, opened
// and migrated by sqlstore.
type storeSQLite struct {
	store  *sqlstore.Store
	db     *sql.DB
	outbox string
	inbox  string
}

func newStoreSQLite(tb testing.TB) *storeSQLite {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "bench.db"), sqlstore.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("OpenSQLite: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return &storeSQLite{store: s, db: s.DB(), outbox: sqlstore.DefaultOutboxTable, inbox: sqlstore.DefaultInboxTable}
}

// storeSQLiteInsert returns the hand-written multi-row insert of n rows
// into the SQLite outbox: the columns sqlstore writes, times as Unix
// microseconds.
func storeSQLiteInsert(outbox string, n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + outbox + ` (id, topic, name, partition_key, metadata, payload, sent_at, created_at) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return b.String()
}

// storeSQLiteInboxInsert is the hand-written SQLite inbox insert.
func storeSQLiteInboxInsert(inbox string) string {
	return `INSERT INTO ` + inbox + ` (consumer_group, id, topic, name, metadata, payload, sent_at, received_at, created_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (consumer_group, id) DO NOTHING`
}

// storeCheck fails when err is not nil.
func storeCheck(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

// listen starts a listener on the env's NOTIFY channel (a store's Wakeups,
// drained as a relay would) and runs op, a transaction that notifies,
// until the listener hears it.
func (e *storePG) listen(tb testing.TB, op func(ctx context.Context, i int) error) {
	tb.Helper()
	storeAwaitListen(tb, storeDrainWakeups(tb, e.store(tb, sqlstore.Config{}).Store), op)
}
