package sqlstore

import (
	"context"
	"time"

	"github.com/transmanager/transmanager/txm"
)

// engine is what differs per database. The core (store.go, outbox.go,
// inbox.go, migrate.go) runs the outbox and the inbox once for every
// database and asks the store's engine for the steps that differ; each
// engine lives in files of its own with its SQL text and its migrations
// (migrations/NAME): postgres.go and postgres_wake.go (PostgreSQL, pgx and
// database/sql), sqlite.go (SQLite), mysql.go (MySQL and MariaDB).
//
// The engine's statements (see statements) take their arguments in one
// order on every database, the core's: an engine that numbers its
// parameters differently, or takes the current time as a parameter, says
// so through its methods below.
type engine interface {
	// name names the database: the directory of its migrations and what
	// MigrationSQL prints.
	name() string
	// quote quotes an identifier that checkIdent accepted.
	quote(ident string) string
	// checkConfig rejects what the database cannot do with cfg (defaults
	// applied).
	checkConfig(cfg Config) error
	// statements returns the store's SQL text for cfg.
	statements(cfg Config) statements

	// save runs statements.save in q with args (the seven columns of a
	// message) and returns how many rows it inserted: 0 when the ID is
	// stored already. h is the transaction ctx carries, nil for none.
	save(ctx context.Context, s *Store, q querier, h *txHolder, args []any) (int64, error)
	// saveMany inserts recs in their order, skipping stored IDs, in the
	// transaction ctx carries or one of its own, notes the saves
	// (Store.saved) and returns how many it inserted.
	saveMany(ctx context.Context, s *Store, recs []record) (int64, error)
	// claim leases up to limit messages for lease, in the transaction ctx
	// carries or one of its own (see Outbox.Claim).
	claim(ctx context.Context, s *Store, limit int, lease time.Duration) ([]claimedRow, error)
	// update runs a statement that changes rows, in q; h is the
	// transaction ctx carries, nil for none.
	update(ctx context.Context, s *Store, q querier, h *txHolder, stmt string, args []any) error

	// now returns the value that stands for the current time in a
	// statement's arguments (nowArg), or false when the statements take
	// the time from the database's clock.
	now() (any, bool)
	// timeArg returns t as the database stores it.
	timeArg(t time.Time) any
	// idsArg returns a list of IDs as the statements take one.
	idsArg(ids []string) any
	// filterArgs returns the arguments of statements.dlq and replay.
	filterArgs(f txm.DeadLetterFilter) []any
	// planned returns the arguments of a statement that reads or changes
	// rows outside a claim so that the database plans it for them.
	planned(args []any) []any
	// noTable reports whether err says that a table does not exist.
	noTable(err error) bool

	// migrationsTableSQL creates the table of applied versions, and the
	// schema of cfg if the database has schemas to create.
	migrationsTableSQL(cfg Config) string
	// recordSQL records that m was applied for the tables; its values are
	// validated identifiers and numbers, safe to inline.
	recordSQL(table, tables string, m migration) string
	// execMigration runs a migration's text in q.
	execMigration(ctx context.Context, q querier, text string) error
	// migrate runs apply so that processes migrating at once take turns,
	// and commits what it did.
	migrate(ctx context.Context, s *Store, apply func(q querier) error) error

	// listen starts what makes Wakeups receive the saves of other
	// processes (PostgreSQL's LISTEN), once; an engine without it polls.
	listen(s *Store)
}

// lockingEngine is an engine that can claim by locking (LockingOutbox.ClaimLocked).
type lockingEngine interface {
	// claimLocked locks up to limit messages in the transaction of h and
	// q, and returns them in save order with their seqs.
	claimLocked(ctx context.Context, s *Store, q querier, h *txHolder, limit int, idle time.Duration) ([]txm.Claimed, []int64, error)
}
