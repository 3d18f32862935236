package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// Store is a durable outbox and inbox in one PostgreSQL or SQLite database.
// [Store.Outbox] and [Store.Inbox] return its two sides; both run in the
// transaction that a context carries (see [WithTx], [WithPgxTx] and
// [Store.InTx]). A Store is safe for concurrent use.
type Store struct {
	cfg     Config
	dialect dialect
	be      backend
	stmts   statements

	pool *pgxpool.Pool // postgres.New
	db   *sql.DB       // the database/sql stores
	owns bool          // sqlite.Open, mysql.Open: Close closes db

	claimKey int64 // advisory lock key of claims (PostgreSQL)
	leased   leasedSeqs
	// claimByLimit caches the claim statement per limit (Store.claimSQL).
	claimMu      sync.Mutex
	claimByLimit map[claimKey]string
	migrateKey   int64 // advisory lock key of Migrate (PostgreSQL)
	tables       string

	wake chan struct{}

	// writing queues the relay's own writes on SQLite (claims and the
	// updates that settle them, outside a caller's transaction) in the
	// process: SQLite takes one writer at a time, and a writer that finds
	// the lock taken waits in its busy handler, which sleeps 1 ms and more
	// between tries. It holds a token while a write runs.
	writing chan struct{}

	notifyMu   sync.Mutex  // guards lastNotify and trailing
	lastNotify time.Time   // when this store last notified
	trailing   *time.Timer // a trailing NOTIFY scheduled for skipped saves
	followUp   bool        // the trailing NOTIFY is followed by a later one
	notifyWG   sync.WaitGroup

	mu            sync.Mutex // guards listenStarted against Close
	closed        atomic.Bool
	closeCtx      context.Context // cancelled by Close
	cancel        context.CancelFunc
	closeOnce     sync.Once
	listenStarted bool
	listenWG      sync.WaitGroup
	listenReady   sync.Once
	listening     chan struct{} // closed once LISTEN first succeeds
	listenUp      atomic.Bool   // the LISTEN connection listens now
}

// newPostgres returns a store on a pgx pool (postgres.New).
func newPostgres(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("sqlstore: postgres: nil pool")
	}
	s, err := newStore(postgres, cfg)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	s.be = pgxBackend{pgxQuerier: pgxQuerier{pool}, b: pool}
	return s, nil
}

// newPostgresDB returns a store on a database/sql handle of pgx's stdlib
// driver (postgres.NewDB).
func newPostgresDB(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: postgres: nil db")
	}
	if _, ok := db.Driver().(*stdlib.Driver); !ok {
		return nil, fmt.Errorf("sqlstore: postgres: db must use the pgx stdlib driver, got %T", db.Driver())
	}
	s, err := newStore(postgres, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = sqlBackend{sqlQuerier: sqlQuerier{db}, db: db}
	return s, nil
}

// newSQLite returns a store on a database/sql handle of the
// modernc.org/sqlite driver (sqlite.New, sqlite.Open).
func newSQLite(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: sqlite: nil db")
	}
	s, err := newStore(sqlite, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = sqlBackend{sqlQuerier: sqlQuerier{db}, db: db}
	return s, nil
}

// newMySQL returns a store on a database/sql handle of the MySQL driver
// (github.com/go-sql-driver/mysql).
func newMySQL(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errMySQLDB
	}
	s, err := newStore(mysql, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = newMySQLBackend(db)
	return s, nil
}

func newStore(d dialect, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults(d)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		closeCtx:     ctx,
		cancel:       cancel,
		cfg:          cfg,
		dialect:      d,
		stmts:        newStatements(d, cfg),
		claimKey:     lockKey("txm/claim/" + cfg.Schema + "/" + cfg.OutboxTable),
		claimByLimit: map[claimKey]string{},
		migrateKey:   lockKey("txm/migrate/" + cfg.Schema + "/" + cfg.MigrationsTable),
		tables:       cfg.OutboxTable + "," + cfg.InboxTable,
		wake:         make(chan struct{}, 1),
		writing:      make(chan struct{}, 1),
		listening:    make(chan struct{}),
	}, nil
}

// lockKey returns a PostgreSQL advisory lock key for name.
func lockKey(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64())
}

// Outbox returns the store's outbox.
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

// Inbox returns the inbox of a consumer group: the group's records are its
// own, so two groups each process the same message once. Any string,
// including "", names a group.
func (s *Store) Inbox(group string) *Inbox { return &Inbox{s: s, group: group} }

// DB returns the database/sql handle of a store built on one
// (postgres.NewDB, sqlite.New, sqlite.Open, mysql.New, mysql.Open), and nil
// for a pgx store (postgres.New).
func (s *Store) DB() *sql.DB { return s.db }

// Close stops the store's LISTEN connection and, for a store opened by
// sqlite.Open or mysql.Open, closes the database. Later calls of the store's methods
// return an error matching [async.ErrClosed]. Close does not wait for
// calls in flight. Calling it again returns nil.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed.Store(true)
		s.cancel()
		s.mu.Unlock()
		s.notifyMu.Lock()
		if s.trailing != nil && s.trailing.Stop() {
			s.notifyWG.Done()
		}
		s.trailing = nil
		s.notifyMu.Unlock()
		s.notifyWG.Wait()
		s.listenWG.Wait()
		if s.owns {
			err = s.db.Close()
		}
	})
	if err != nil {
		return fmt.Errorf("sqlstore: close: %w", err)
	}
	return nil
}

// InTx runs fn in a transaction and commits it when fn returns nil; it
// rolls it back when fn returns an error (returned as it is) or panics (the
// panic goes on). The context passed to fn carries the transaction: the
// store's methods run in it, and fn's own statements get it from
// [TxFromContext] or [PgxTxFromContext]. When ctx carries a transaction
// already, InTx runs fn in it and leaves the commit to its owner. After a
// commit that saved outbox messages, the store wakes its relay.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if s.closed.Load() {
		return s.fail(ctx, "in tx", async.ErrClosed)
	}
	if h := holderFrom(ctx); h != nil {
		if _, err := s.be.fromHolder(h); err != nil {
			return s.fail(ctx, "in tx", err)
		}
		return fn(ctx)
	}
	tx, err := s.be.begin(ctx)
	if err != nil {
		return s.fail(ctx, "begin", err)
	}
	h := tx.holder()
	h.owner = s
	committed := false
	defer func() {
		if !committed {
			// Roll back on error and on panic; a panic continues after.
			_ = tx.rollback(context.WithoutCancel(ctx))
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, h)); err != nil {
		return err
	}
	if err := tx.commit(ctx); err != nil {
		committed = true // a failed commit ends the transaction too
		return s.fail(ctx, "commit", err)
	}
	committed = true
	if h.saved.Load() {
		s.signal()
	}
	if h.throttled.Load() {
		s.trailingNotify(false)
	}
	return nil
}

// runTx runs fn in the transaction of ctx or, without one, in a new
// transaction of its own. It reports whether it committed a transaction of
// its own.
func (s *Store) runTx(ctx context.Context, fn func(q querier) error) (own bool, err error) {
	if h := holderFrom(ctx); h != nil {
		q, err := s.be.fromHolder(h)
		if err != nil {
			return false, err
		}
		return false, fn(q)
	}
	tx, err := s.be.begin(ctx)
	if err != nil {
		return false, err
	}
	if err := fn(tx); err != nil {
		_ = tx.rollback(context.WithoutCancel(ctx))
		return false, err
	}
	if err := tx.commit(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// querier returns where a statement runs: the transaction ctx carries, or
// the pool. holder is the transaction's, nil for the pool.
func (s *Store) querier(ctx context.Context) (q querier, h *txHolder, err error) {
	if s.closed.Load() {
		return nil, nil, async.ErrClosed
	}
	if h := holderFrom(ctx); h != nil {
		q, err := s.be.fromHolder(h)
		return q, h, err
	}
	return s.be, nil, nil
}

// claimNotify reports whether a save should NOTIFY in its own statement:
// when no notification went out within [Config.NotifyInterval]. A save that
// does not, and inserts, calls trailingNotify.
func (s *Store) claimNotify() bool {
	if s.cfg.NotifyInterval < 0 {
		return true
	}
	now := time.Now()
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if now.Sub(s.lastNotify) >= s.cfg.NotifyInterval {
		s.lastNotify = now
		return true
	}
	return false
}

// throttledSave notes a save that skipped its NOTIFY. In a transaction
// that InTx began, the NOTIFY follows the commit; otherwise a trailing
// NOTIFY follows at the end of the interval, and, for a save in a caller's
// transaction, whose commit the store cannot see, a second one later.
func (s *Store) throttledSave(h *txHolder) {
	switch {
	case h != nil && h.owner == s:
		h.throttled.Store(true)
	default:
		s.trailingNotify(h != nil)
	}
}

// followUpDelay is how long after a trailing NOTIFY a second one goes out
// for saves in callers' transactions that may commit after the first.
const followUpDelay = 50 * time.Millisecond

// trailingNotify makes sure one NOTIFY follows at the end of the current
// interval, for the saves that did not notify themselves; with followUp, a
// second NOTIFY follows followUpDelay after it.
func (s *Store) trailingNotify(followUp bool) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	s.followUp = s.followUp || followUp
	if s.trailing != nil || s.closed.Load() {
		return
	}
	s.scheduleNotify(max(s.cfg.NotifyInterval-time.Since(s.lastNotify), 0))
}

// scheduleNotify sends a NOTIFY after wait. notifyMu must be held.
func (s *Store) scheduleNotify(wait time.Duration) {
	s.notifyWG.Add(1)
	s.trailing = time.AfterFunc(wait, func() {
		defer s.notifyWG.Done()
		ctx, cancel := context.WithTimeout(s.closeCtx, 5*time.Second)
		defer cancel()
		if _, err := s.be.exec(ctx, `SELECT pg_notify($1, '')`, s.cfg.NotifyChannel); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Warn("sqlstore: trailing NOTIFY failed; relays in other processes will poll", "error", err)
		}
		s.notifyMu.Lock()
		defer s.notifyMu.Unlock()
		s.trailing = nil
		s.lastNotify = time.Now()
		if s.followUp && !s.closed.Load() {
			s.followUp = false
			s.scheduleNotify(followUpDelay)
		}
	})
}

// signal wakes the relay without blocking; wake-ups coalesce.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// ErrNotMigrated reports that an outbox or inbox statement found its table
// missing (PostgreSQL's undefined_table, SQLSTATE 42P01, or SQLite's "no
// such table"): the store's tables were not created. Run [Store.Migrate]
// (or `txm migrate`), or apply [Store.MigrationSQL] or [Store.MigrationFS]
// with your migration tool. The error wraps the driver's; check it with
// errors.Is.
var ErrNotMigrated = errors.New("sqlstore: the store's tables do not exist (run Store.Migrate or `txm migrate`)")

// undefinedTable is PostgreSQL's SQLSTATE for a missing table.
const undefinedTable = "42P01"

// isUndefinedTable reports whether err says that a table does not exist.
func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == undefinedTable
	}
	// modernc.org/sqlite reports "SQL logic error: no such table: NAME (1)".
	return strings.Contains(err.Error(), "no such table") || isMySQLNoTable(err)
}

// fail wraps err with the operation's name. When ctx is done, the result
// matches ctx's error as well, whatever the driver returned. A missing
// table, outside Migrate, matches [ErrNotMigrated] as well.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if op != "migrate" && !errors.Is(err, ErrNotMigrated) && isUndefinedTable(err) {
		err = fmt.Errorf("%w: %w", ErrNotMigrated, err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("sqlstore: %s: %w: %w", op, cerr, err)
	}
	if s.closed.Load() && !errors.Is(err, async.ErrClosed) {
		return fmt.Errorf("sqlstore: %s: %w: %w", op, async.ErrClosed, err)
	}
	return fmt.Errorf("sqlstore: %s: %w", op, err)
}

// Build returns a store on a handle made by the package of its database:
// call [postgres.New], [postgres.NewDB], [sqlite.New], [sqlite.Open],
// [mysql.New] or [mysql.Open], whose handle type is internal to this
// module. It does no I/O.
//
// [postgres.New]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/postgres#New
// [postgres.NewDB]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/postgres#NewDB
// [sqlite.New]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/sqlite#New
// [sqlite.Open]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/sqlite#Open
// [mysql.New]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/mysql#New
// [mysql.Open]: https://pkg.go.dev/github.com/transmanager/transmanager/txm/sqlstore/mysql#Open
func Build(h seam.Handle, cfg Config) (*Store, error) {
	var s *Store
	var err error
	switch h.Database {
	case seam.Postgres:
		if h.Pool != nil {
			s, err = newPostgres(h.Pool, cfg)
		} else {
			s, err = newPostgresDB(h.DB, cfg)
		}
	case seam.SQLite:
		s, err = newSQLite(h.DB, cfg)
	case seam.MySQL:
		s, err = newMySQL(h.DB, cfg)
	default:
		return nil, fmt.Errorf("sqlstore: Build: unknown database %d", h.Database)
	}
	if err != nil {
		return nil, err
	}
	s.owns = h.Owned
	return s, nil
}
