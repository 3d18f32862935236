package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// Store is a durable outbox and inbox in one PostgreSQL, MySQL/MariaDB or
// SQLite database. [Store.Outbox] and [Store.Inbox] return its two sides;
// both run in the transaction that a context carries (see [WithTx],
// [WithPgxTx] and [Store.InTx]). A Store is safe for concurrent use. The
// stores of the databases that can claim by locking are [LockingStore]s.
type Store struct {
	cfg   Config
	eng   engine
	be    backend
	stmts statements

	pool *pgxpool.Pool // postgres.New
	db   *sql.DB       // the database/sql stores
	owns bool          // sqlite.Open, mysql.Open: Close closes db

	leased leasedSeqs
	tables string // the key of the store's versions in the migrations table

	wake chan struct{}

	// writing queues the relay's own writes on SQLite (claims and the
	// updates that settle them, outside a caller's transaction) in the
	// process: SQLite takes one writer at a time, and a writer that finds
	// the lock taken waits in its busy handler, which sleeps 1 ms and more
	// between tries. It holds a token while a write runs.
	writing chan struct{}

	// pgState is what a PostgreSQL store keeps besides: its advisory
	// locks, claim statements, NOTIFY throttle and LISTEN connection.
	pgState

	mu        sync.Mutex // guards pgState.listenStarted against Close
	closed    atomic.Bool
	closeCtx  context.Context // cancelled by Close
	cancel    context.CancelFunc
	closeOnce sync.Once
}

func newStore(e engine, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults(e)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		closeCtx: ctx,
		cancel:   cancel,
		cfg:      cfg,
		eng:      e,
		stmts:    e.statements(cfg),
		pgState:  newPGState(cfg),
		tables:   cfg.OutboxTable + "," + cfg.InboxTable,
		wake:     make(chan struct{}, 1),
		writing:  make(chan struct{}, 1),
	}, nil
}

// Outbox returns the store's outbox.
func (s *Store) Outbox() *Outbox { return &Outbox{s: s} }

// LockingStore is a [Store] whose database can claim by locking:
// PostgreSQL or MySQL/MariaDB, as postgres.New, postgres.NewDB, mysql.New
// and mysql.Open return it. Its [LockingStore.Outbox] implements
// [txm.LockingClaimer], so that a relay with
// [txm.ProcessorConfig.LockClaims] accepts it; every other method is the
// embedded Store's.
type LockingStore struct{ *Store }

// Outbox returns the store's outbox, which can also claim by locking.
func (s *LockingStore) Outbox() *LockingOutbox { return &LockingOutbox{s.Store.Outbox()} }

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
		s.pgState.stop()
		if c, ok := s.be.(interface{ close() error }); ok {
			// What the backend holds on the handle, such as MySQL's
			// prepared statements, before the handle.
			err = c.close()
		}
		if s.owns {
			err = errors.Join(err, s.db.Close())
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
	return s.inTx(ctx, s.be.begin, fn)
}

// inTx is InTx with the transaction begun by begin.
func (s *Store) inTx(ctx context.Context, begin func(context.Context) (txn, error), fn func(ctx context.Context) error) error {
	if s.closed.Load() {
		return s.fail(ctx, "in tx", async.ErrClosed)
	}
	if h := holderFrom(ctx); h != nil {
		if _, err := s.be.fromHolder(h); err != nil {
			return s.fail(ctx, "in tx", err)
		}
		return fn(ctx)
	}
	tx, err := begin(ctx)
	if err != nil {
		return s.fail(ctx, "begin", err)
	}
	h := tx.holder()
	h.owner = s
	defer h.ended()
	committed := false
	defer func() {
		if !committed {
			// Roll back on error and on panic; a panic continues after.
			rctx := context.WithoutCancel(ctx)
			if stmt := h.atEnd(); stmt != "" {
				_, _ = tx.exec(rctx, stmt)
			}
			_ = tx.rollback(rctx)
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, h)); err != nil {
		return err
	}
	if stmt := h.atEnd(); stmt != "" {
		if _, err := tx.exec(ctx, stmt); err != nil {
			return s.fail(ctx, "commit", err)
		}
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

// fail wraps err with the operation's name. When ctx is done, the result
// matches ctx's error as well, whatever the driver returned. A missing
// table, outside Migrate, matches [ErrNotMigrated] as well.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if op != "migrate" && !errors.Is(err, ErrNotMigrated) && s.eng.noTable(err) {
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

// BuildLocking is [Build] for the databases that can claim by locking
// (PostgreSQL and MySQL/MariaDB): it returns their store as a
// [LockingStore], and fails for a database without locked claims
// (SQLite), whose store Build returns. It does no I/O.
func BuildLocking(h seam.Handle, cfg Config) (*LockingStore, error) {
	s, err := Build(h, cfg)
	if err != nil {
		return nil, err
	}
	if _, ok := s.eng.(lockingEngine); !ok {
		// The handle's owner closes its database on this error: the
		// store only ends what it started.
		s.owns = false
		_ = s.Close()
		return nil, fmt.Errorf("sqlstore: BuildLocking: %s cannot claim by locking (build its store with Build)", s.eng.name())
	}
	return &LockingStore{s}, nil
}
