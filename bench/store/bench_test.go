package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// The store benchmarks: sqlstore's write, batch-save, claim and inbox paths
// against hand-written SQL on the same database, in the same run. Every
// PostgreSQL sub-benchmark works in a schema of its own, created and
// migrated with sqlstore's Migrate and dropped afterwards; they skip
// without TXM_POSTGRES_URL. bench/README.md has the commands and what each
// one measures.

// storeCustomers is how many customers (and partition keys) the business
// transactions spread over.
const storeCustomers = 100

// storeWritePath is one way to run the business transaction.
type storeWritePath struct {
	driver string // "pgx" or "sql" (database/sql with pgx's stdlib driver)
	path   string
	// What the transaction writes besides the order: nothing, the
	// hand-written insert (with or without NOTIFY), or a library Save.
	kind storeWriteKind
	cfg  sqlstore.Config // the library's store
}

type storeWriteKind int

const (
	storeWriteNone storeWriteKind = iota
	storeWriteRaw
	storeWriteRawNotify
	storeWriteLib
)

var storeWritePaths = []storeWritePath{
	{driver: "pgx", path: "raw", kind: storeWriteRaw},
	{driver: "pgx", path: "lib-pollonly", kind: storeWriteLib, cfg: sqlstore.Config{PollOnly: true}},
	{driver: "pgx", path: "raw-notify", kind: storeWriteRawNotify},
	{driver: "pgx", path: "lib-notify-every", kind: storeWriteLib, cfg: sqlstore.Config{NotifyInterval: -1}},
	{driver: "pgx", path: "lib-notify-2ms", kind: storeWriteLib, cfg: sqlstore.Config{}},
	{driver: "pgx", path: "lib-notify-10ms", kind: storeWriteLib, cfg: sqlstore.Config{NotifyInterval: 10 * time.Millisecond}},
	{driver: "pgx", path: "none", kind: storeWriteNone},
	{driver: "sql", path: "raw", kind: storeWriteRaw},
	{driver: "sql", path: "lib-pollonly", kind: storeWriteLib, cfg: sqlstore.Config{PollOnly: true}},
	{driver: "sql", path: "none", kind: storeWriteNone},
}

// BenchmarkStoreWrite measures the business transaction (BEGIN; INSERT an
// order; save one message; COMMIT) from 1 and 8 concurrent clients, with
// pgx and with database/sql:
//
//   - raw: the hand-written outbox INSERT ... ON CONFLICT DO NOTHING of the
//     same row, no NOTIFY (the baseline);
//   - lib-pollonly: the library's Save with PollOnly (no NOTIFY);
//   - raw-notify: the hand-written insert and pg_notify in one statement;
//   - lib-notify-every: Save with a NOTIFY in every transaction
//     (NotifyInterval < 0);
//   - lib-notify-2ms: Save with the default NotifyInterval (at most one
//     NOTIFY per 2ms per store, and a trailing one), and lib-notify-10ms
//     with NotifyInterval 10ms;
//   - none: the order alone, for scale.
//
// The paths write the same tables in turn, in blocks of 100 transactions
// per client, so that they share the machine's conditions. A listener
// (a store's Wakeups, drained as a relay would) hears the NOTIFYs, as in
// production. The metrics are transactions per second per path and their
// ratio to raw.
func BenchmarkStoreWrite(b *testing.B) {
	for _, clients := range []int{1, 8} {
		for _, driver := range []string{"pgx", "sql"} {
			b.Run(fmt.Sprintf("clients=%d/driver=%s", clients, driver), func(b *testing.B) {
				// Two spare connections: the throttled NOTIFY's trailing
				// pg_notify takes one from the pool.
				e := newStorePG(b, clients+2)
				var db *sql.DB
				if driver == "sql" {
					db = e.sqlDB(b, clients+2)
				}
				block := 100 * clients
				var paths []storeMixPath
				for _, p := range storeWritePaths {
					if p.driver != driver {
						continue
					}
					op := storeWriteOp(b, e, db, p)
					if p.kind == storeWriteRawNotify {
						e.listen(b, op)
					}
					// Warm up: open and prepare every connection.
					_, err := storeBlock(context.Background(), clients, 4*clients, op)
					storeCheck(b, "warm-up "+p.path, err)
					paths = append(paths, storeMixPath{name: p.path, run: func(ctx context.Context) (time.Duration, int, error) {
						took, err := storeBlock(ctx, clients, block, op)
						return took, block, err
					}})
				}
				e.settle(b, false)
				storeMix(b, "tps", paths)
			})
		}
	}
}

// storeWriteOp returns the business transaction of path p: on db when it
// is not nil, else on the env's pgx pool.
func storeWriteOp(tb testing.TB, e *storePG, db *sql.DB, p storeWritePath) func(ctx context.Context, i int) error {
	tb.Helper()
	var s *sqlstore.LockingStore
	if p.kind == storeWriteLib {
		if db != nil {
			s = e.sqlStore(tb, db, p.cfg)
		} else {
			s = e.store(tb, p.cfg)
		}
	}
	outboxRow := func(ctx context.Context, customer string, exec func(ctx context.Context, stmt string, args ...any) error, save func(ctx context.Context, m async.Message) error) error {
		switch p.kind {
		case storeWriteRaw:
			return exec(ctx, e.sql.insert, storeNewRow(customer).args()...)
		case storeWriteRawNotify:
			return exec(ctx, e.sql.insertNotify, append(storeNewRow(customer).args(), e.schema)...)
		case storeWriteLib:
			return save(ctx, storeMessage(customer))
		}
		return nil
	}
	if db != nil {
		return func(ctx context.Context, i int) error {
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return fmt.Errorf("begin: %w", err)
			}
			defer func() { _ = tx.Rollback() }()
			customer := storeKey(i, storeCustomers)
			if _, err := tx.ExecContext(ctx, e.sql.order, async.NewID(), customer, int64(12999)); err != nil {
				return fmt.Errorf("insert order: %w", err)
			}
			exec := func(ctx context.Context, stmt string, args ...any) error {
				_, err := tx.ExecContext(ctx, stmt, args...)
				return err
			}
			save := func(ctx context.Context, m async.Message) error {
				return s.Outbox().Save(sqlstore.WithTx(ctx, tx), m)
			}
			if err := outboxRow(ctx, customer, exec, save); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			return tx.Commit()
		}
	}
	return func(ctx context.Context, i int) error {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		customer := storeKey(i, storeCustomers)
		if _, err := tx.Exec(ctx, e.sql.order, async.NewID(), customer, int64(12999)); err != nil {
			return fmt.Errorf("insert order: %w", err)
		}
		exec := func(ctx context.Context, stmt string, args ...any) error {
			_, err := tx.Exec(ctx, stmt, args...)
			return err
		}
		save := func(ctx context.Context, m async.Message) error {
			return s.Outbox().Save(sqlstore.WithPgxTx(ctx, tx), m)
		}
		if err := outboxRow(ctx, customer, exec, save); err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		return tx.Commit(ctx)
	}
}

// storeSaveManyPaths are the ways BenchmarkStoreSaveMany writes a batch.
var storeSaveManyPaths = []struct {
	db, path string
}{
	{"postgres", "copy"},
	{"postgres", "lib-pollonly"},
	{"postgres", "lib-notify"},
	{"postgres", "lib-sql-pollonly"},
	{"postgres", "raw-unnest"},
	{"postgres", "raw-unnest-conflict"},
	{"sqlite", "raw-values"},
	{"sqlite", "raw-values-500"},
	{"sqlite", "lib"},
}

// BenchmarkStoreSaveMany saves 1000 messages (256-byte payloads, 100
// partition keys) into an empty outbox:
//
//   - postgres/copy: pgx's CopyFrom of the same rows into the same table
//     (the baseline; COPY cannot skip duplicates, SaveMany does);
//   - postgres/lib-*: SaveMany on pgx (PollOnly, or with its one NOTIFY)
//     and on database/sql (PollOnly);
//   - postgres/raw-unnest and raw-unnest-conflict: hand-written INSERT ...
//     SELECT FROM unnest() of one array per column, without and with ON
//     CONFLICT (id) DO NOTHING, to show where the time goes between COPY
//     and SaveMany;
//   - sqlite/raw-values: a hand-written 1000-row INSERT ... VALUES in one
//     transaction (the baseline), and raw-values-500: two 500-row inserts
//     in one transaction, as SaveMany does;
//   - sqlite/lib: SaveMany.
//
// Every path starts from the same kind of []async.Message and turns it into
// rows inside the measurement; the paths run in turn, one batch each per
// round. The metrics are messages per second per path and their ratio to
// the baseline.
func BenchmarkStoreSaveMany(b *testing.B) {
	const n = 1000
	for _, db := range []string{"postgres", "sqlite"} {
		b.Run("db="+db, func(b *testing.B) {
			var empty func(ctx context.Context) error
			var pg *storePG
			var lite *storeSQLite
			if db == "postgres" {
				pg = newStorePG(b, 4)
				empty = func(ctx context.Context) error {
					_, err := pg.pool.Exec(ctx, "TRUNCATE "+pg.outbox)
					return err
				}
			} else {
				lite = newStoreSQLite(b)
				empty = func(ctx context.Context) error {
					_, err := lite.db.ExecContext(ctx, "DELETE FROM "+lite.outbox)
					return err
				}
			}
			var paths []storeMixPath
			for _, p := range storeSaveManyPaths {
				if p.db != db {
					continue
				}
				var save func(ctx context.Context, msgs []async.Message) (int, error)
				if pg != nil {
					save = storePGSaveMany(b, pg, p.path)
				} else {
					save = storeSQLiteSaveMany(lite, p.path)
				}
				paths = append(paths, storeMixPath{name: p.path, run: func(ctx context.Context) (time.Duration, int, error) {
					if err := empty(ctx); err != nil {
						return 0, 0, fmt.Errorf("empty the outbox: %w", err)
					}
					msgs := make([]async.Message, n)
					for i := range msgs {
						msgs[i] = storeMessage(storeKey(i, storeCustomers))
					}
					start := time.Now()
					k, err := save(ctx, msgs)
					took := time.Since(start)
					if err == nil && k != n {
						err = fmt.Errorf("saved %d of %d", k, n)
					}
					return took, n, err
				}})
			}
			if pg != nil {
				pg.settle(b, false)
			}
			storeMix(b, "msgs/s", paths)
		})
	}
}

// storeOutboxColumns are the columns that the hand-written inserts write.
var storeOutboxColumns = []string{"id", "topic", "name", "partition_key", "metadata", "payload", "sent_at"}

func storePGSaveMany(tb testing.TB, e *storePG, path string) func(ctx context.Context, msgs []async.Message) (int, error) {
	tb.Helper()
	switch path {
	case "copy":
		table := pgx.Identifier{e.schema, sqlstore.DefaultOutboxTable}
		return func(ctx context.Context, msgs []async.Message) (int, error) {
			rows := make([][]any, len(msgs))
			for i, m := range msgs {
				rows[i] = storeRowOf(m).args()
			}
			n, err := e.pool.CopyFrom(ctx, table, storeOutboxColumns, pgx.CopyFromRows(rows))
			return int(n), err
		}
	case "lib-pollonly":
		return e.store(tb, sqlstore.Config{PollOnly: true}).Outbox().SaveMany
	case "lib-notify":
		s := e.store(tb, sqlstore.Config{})
		storeDrainWakeups(tb, s.Store) // a listener, as a relay would have
		return s.Outbox().SaveMany
	case "lib-sql-pollonly":
		return e.sqlStore(tb, e.sqlDB(tb, 2), sqlstore.Config{PollOnly: true}).Outbox().SaveMany
	}
	stmt := e.sql.insertUnnest
	if path == "raw-unnest-conflict" {
		stmt += ` ON CONFLICT (id) DO NOTHING`
	}
	return func(ctx context.Context, msgs []async.Message) (int, error) {
		cols := storeColumnsOf(msgs)
		tag, err := e.pool.Exec(ctx, stmt, cols.ids, cols.topics, cols.names, cols.keys, cols.metadata, cols.payloads, cols.sentAt)
		return int(tag.RowsAffected()), err
	}
}

// storeColumns are messages as one array per outbox column.
type storeColumns struct {
	ids, topics, names, metadata []string
	keys                         []*string
	payloads                     [][]byte
	sentAt                       []time.Time
}

func storeColumnsOf(msgs []async.Message) storeColumns {
	c := storeColumns{
		ids: make([]string, len(msgs)), topics: make([]string, len(msgs)), names: make([]string, len(msgs)),
		metadata: make([]string, len(msgs)), keys: make([]*string, len(msgs)), payloads: make([][]byte, len(msgs)),
		sentAt: make([]time.Time, len(msgs)),
	}
	for i, m := range msgs {
		r := storeRowOf(m)
		c.ids[i], c.topics[i], c.names[i], c.keys[i], c.metadata[i], c.payloads[i], c.sentAt[i] =
			r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt
	}
	return c
}

func storeSQLiteSaveMany(e *storeSQLite, path string) func(ctx context.Context, msgs []async.Message) (int, error) {
	if path == "lib" {
		return e.store.Outbox().SaveMany
	}
	chunk := 1000
	if path == "raw-values-500" {
		chunk = 500
	}
	return func(ctx context.Context, msgs []async.Message) (int, error) {
		now := time.Now().UnixMicro()
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer func() { _ = tx.Rollback() }()
		var n int64
		for part := range slices.Chunk(msgs, chunk) {
			args := make([]any, 0, 8*len(part))
			for _, m := range part {
				r := storeRowOf(m)
				args = append(args, r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt.UnixMicro(), now)
			}
			res, err := tx.ExecContext(ctx, storeSQLiteInsert(e.outbox, len(part)), args...)
			if err != nil {
				return 0, err
			}
			k, err := res.RowsAffected()
			if err != nil {
				return 0, err
			}
			n += k
		}
		return int(n), tx.Commit()
	}
}

// BenchmarkStoreClaim drains an outbox pre-filled with 10,000 messages,
// without partition keys and with 1000 keys, in batches of 100 and 500:
//
//   - raw-tx: the baseline, a transaction of SELECT id ... WHERE state =
//     'pending' (and not leased) ORDER BY seq LIMIT n FOR UPDATE SKIP
//     LOCKED and an UPDATE that leases those rows for 30s and returns them,
//     then UPDATE ... SET state = 'published' WHERE id = ANY($1);
//   - raw-1stmt: the same claim as a single UPDATE ... WHERE id = ANY
//     (ARRAY(SELECT ... FOR UPDATE SKIP LOCKED)) RETURNING, one round
//     trip, and the same mark;
//   - store: the store's Claim (advisory lock, per-key parking, one round
//     trip) and MarkPublished;
//   - store-generic: the same on a pool whose sessions set plan_cache_mode
//     = force_generic_plan; the store's claim sets its own plan settings
//     in its transaction, so this is a second sample of the store's path
//     that shows a session's setting does not change the claim.
//
// A round drains once with each path, in turn; the fill and a VACUUM
// ANALYZE before each drain are not measured. The metrics are messages
// per second per path and their ratio to raw-tx.
func BenchmarkStoreClaim(b *testing.B) {
	storeClaimMatrix(b, []string{"raw-tx", "raw-1stmt", "store", "store-generic"},
		func(b *testing.B, e *storePG, path string, limit int) func(ctx context.Context) (int, error) {
			if path == "store-generic" {
				return storeDrainStore(e.genericStore(b).Store, limit)
			}
			return storeDrain(e, path, limit)
		})
}

// storeClaimMatrix runs, for 0 and 1000 keys and limits 100 and 500, a
// round of drains of 10,000 pre-filled messages, one with each path's
// drain loop (the first path is the baseline of the ratios), and checks
// that each drain published every message.
func storeClaimMatrix(b *testing.B, paths []string, drainFor func(b *testing.B, e *storePG, path string, limit int) func(ctx context.Context) (int, error)) {
	const n = 10000
	for _, keys := range []int{0, 1000} {
		for _, limit := range []int{100, 500} {
			b.Run(fmt.Sprintf("keys=%d/limit=%d", keys, limit), func(b *testing.B) {
				e := newStorePG(b, 2)
				var mix []storeMixPath
				for _, path := range paths {
					drain := drainFor(b, e, path, limit)
					mix = append(mix, storeMixPath{name: path, run: func(ctx context.Context) (time.Duration, int, error) {
						e.fill(b, n, keys)
						e.settle(b, true)
						start := time.Now()
						got, err := drain(ctx)
						took := time.Since(start)
						if err != nil {
							return 0, 0, err
						}
						if published, other := e.counts(b); got != n || published != n || other != 0 {
							return 0, 0, fmt.Errorf("drained %d: %d published, %d not; want %d", got, published, other, n)
						}
						return took, n, nil
					}})
				}
				storeMix(b, "msgs/s", mix)
			})
		}
	}
}

// BenchmarkStoreClaimLocked drains an outbox pre-filled with 10,000
// messages as BenchmarkStoreClaim does, with claims that lock instead of
// leasing, one transaction per batch:
//
//   - raw-lock: the baseline, BEGIN; SELECT ... WHERE state = 'pending'
//     (and not leased) ORDER BY seq LIMIT n FOR UPDATE SKIP LOCKED,
//     returning the message columns; UPDATE ... SET state = 'published'
//     WHERE id = ANY($1); COMMIT;
//   - store-lock: Store.InTx around LockingOutbox.ClaimLocked (which also keeps
//     each key's order) and MarkPublished,
//     as the relay runs them with ProcessorConfig.LockClaims.
//
// The metrics are messages per second per path and store-lock's ratio to
// raw-lock.
func BenchmarkStoreClaimLocked(b *testing.B) {
	storeClaimMatrix(b, []string{"raw-lock", "store-lock"},
		func(_ *testing.B, e *storePG, path string, limit int) func(ctx context.Context) (int, error) {
			return storeDrainLocked(e, path == "store-lock", limit)
		})
}

// storeDrainLocked returns a loop that claims by locking and marks
// published in one transaction per batch, with the hand-written
// statements or with the store, until nothing is left to claim.
func storeDrainLocked(e *storePG, store bool, limit int) func(ctx context.Context) (int, error) {
	batch := func(ctx context.Context) (n int, err error) {
		err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, e.sql.claimLocked, limit)
			if err != nil {
				return err
			}
			ids, err := storeScanClaimed(rows)
			if err != nil || len(ids) == 0 {
				return err
			}
			n = len(ids)
			_, err = tx.Exec(ctx, e.sql.published, ids)
			return err
		})
		return n, err
	}
	if store {
		ob := e.filler.Outbox()
		batch = func(ctx context.Context) (n int, err error) {
			err = ob.InTx(ctx, func(ctx context.Context) error {
				c, err := ob.ClaimLocked(ctx, limit, time.Minute)
				if err != nil || len(c) == 0 {
					return err
				}
				n = len(c)
				ids := make([]string, len(c))
				for i, m := range c {
					ids[i] = m.Message.ID()
				}
				return ob.MarkPublished(ctx, ids...)
			})
			return n, err
		}
	}
	return func(ctx context.Context) (int, error) {
		total := 0
		for {
			n, err := batch(ctx)
			if err != nil || n == 0 {
				return total, err
			}
			total += n
		}
	}
}

// storeClaimed is a message as the hand-written claims read it back.
type storeClaimed struct {
	id, topic, name   string
	metadata, payload []byte
	sentAt            time.Time
	attempts          int
}

func storeScanClaimed(rows pgx.Rows) ([]string, error) {
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var c storeClaimed
		if err := rows.Scan(&c.id, &c.topic, &c.name, &c.metadata, &c.payload, &c.sentAt, &c.attempts); err != nil {
			return nil, err
		}
		ids = append(ids, c.id)
	}
	return ids, rows.Err()
}

// storeDrain returns a loop that claims and marks published until the
// outbox has nothing left to claim, and returns how many it published.
func storeDrain(e *storePG, path string, limit int) func(ctx context.Context) (int, error) {
	lease := storeLease.Microseconds()
	var claim func(ctx context.Context) ([]string, error)
	switch path {
	case "raw-tx":
		claim = func(ctx context.Context) (ids []string, err error) {
			err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, e.sql.claimSelect, limit)
				if err != nil {
					return err
				}
				locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil || len(locked) == 0 {
					return err
				}
				rows, err = tx.Query(ctx, e.sql.claimLease, locked, lease)
				if err != nil {
					return err
				}
				ids, err = storeScanClaimed(rows)
				return err
			})
			return ids, err
		}
	case "raw-1stmt":
		claim = func(ctx context.Context) ([]string, error) {
			rows, err := e.pool.Query(ctx, e.sql.claimOne, limit, lease)
			if err != nil {
				return nil, err
			}
			return storeScanClaimed(rows)
		}
	default:
		return storeDrainStore(e.filler.Store, limit)
	}
	return func(ctx context.Context) (int, error) {
		total := 0
		for {
			ids, err := claim(ctx)
			if err != nil || len(ids) == 0 {
				return total, err
			}
			if _, err := e.pool.Exec(ctx, e.sql.published, ids); err != nil {
				return total, err
			}
			total += len(ids)
		}
	}
}

// storeDrainStore returns a loop that claims with the store and marks
// published until there is nothing left to claim, and returns how many it
// published.
func storeDrainStore(s *sqlstore.Store, limit int) func(ctx context.Context) (int, error) {
	ob := s.Outbox()
	return func(ctx context.Context) (int, error) {
		total := 0
		for {
			c, err := ob.Claim(ctx, limit, storeLease)
			if err != nil || len(c) == 0 {
				return total, err
			}
			ids := make([]string, len(c))
			for i, m := range c {
				ids[i] = m.Message.ID()
			}
			if err := ob.MarkPublished(ctx, ids...); err != nil {
				return total, err
			}
			total += len(c)
		}
	}
}

// storeInboxGroup is the consumer group of the inbox benchmarks.
const storeInboxGroup = "billing"

// BenchmarkStoreInbox records received messages in the inbox:
//
//   - db=postgres/batch=1: one transaction per message, InTx around
//     Inbox.Save (what InboxHandler does) against the baseline, a
//     hand-written BEGIN; INSERT ... ON CONFLICT DO NOTHING; COMMIT on pgx;
//   - db=postgres/batch=100: 100 saves in one transaction, both ways;
//   - db=sqlite/batch=1: one transaction per message, both ways, on
//     database/sql.
//
// The two paths run in turn, in blocks of about 20ms. The metrics are
// messages per second per path and the library's ratio to raw.
func BenchmarkStoreInbox(b *testing.B) {
	for _, c := range []struct {
		db           string
		batch, block int
	}{{"postgres", 1, 100}, {"postgres", 100, 4}, {"sqlite", 1, 300}} {
		b.Run(fmt.Sprintf("db=%s/batch=%d", c.db, c.batch), func(b *testing.B) {
			var pg *storePG
			var lite *storeSQLite
			if c.db == "postgres" {
				pg = newStorePG(b, 2)
			} else {
				lite = newStoreSQLite(b)
			}
			var paths []storeMixPath
			for _, path := range []string{"raw", "lib"} {
				var op func(ctx context.Context) error
				if pg != nil {
					op = storePGInboxOp(b, pg, path, c.batch)
				} else {
					op = storeSQLiteInboxOp(lite, path)
				}
				one := func(ctx context.Context, _ int) error { return op(ctx) }
				_, err := storeBlock(context.Background(), 1, 10, one) // warm up
				storeCheck(b, "warm-up "+path, err)
				paths = append(paths, storeMixPath{name: path, run: func(ctx context.Context) (time.Duration, int, error) {
					took, err := storeBlock(ctx, 1, c.block, one)
					return took, c.block * c.batch, err
				}})
			}
			if pg != nil {
				pg.settle(b, false)
			}
			storeMix(b, "msgs/s", paths)
		})
	}
}

func storePGInboxOp(tb testing.TB, e *storePG, path string, batch int) func(ctx context.Context) error {
	tb.Helper()
	if path == "lib" {
		s := e.store(tb, sqlstore.Config{PollOnly: true})
		in := s.Inbox(storeInboxGroup)
		return func(ctx context.Context) error {
			return in.InTx(ctx, func(ctx context.Context) error {
				for range batch {
					if err := in.Save(ctx, newStoreIncoming()); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	return func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
			for range batch {
				r := storeNewRow("customer-7")
				if _, err := tx.Exec(ctx, e.sql.inbox, storeInboxGroup, r.id, r.topic, r.name, r.metadata, r.payload, r.sentAt, time.Now()); err != nil {
					return err
				}
			}
			return nil
		})
	}
}

func storeSQLiteInboxOp(e *storeSQLite, path string) func(ctx context.Context) error {
	if path == "lib" {
		in := e.store.Inbox(storeInboxGroup)
		return func(ctx context.Context) error {
			return in.InTx(ctx, func(ctx context.Context) error {
				return in.Save(ctx, newStoreIncoming())
			})
		}
	}
	stmt := storeSQLiteInboxInsert(e.inbox)
	return func(ctx context.Context) error {
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback() }()
		r := storeNewRow("customer-7")
		now := time.Now().UnixMicro()
		if _, err := tx.ExecContext(ctx, stmt, storeInboxGroup, r.id, r.topic, r.name, r.metadata, r.payload,
			r.sentAt.UnixMicro(), now, now); err != nil {
			return err
		}
		return tx.Commit()
	}
}
