// Package mysql builds a [sqlstore.LockingStore] on MySQL or MariaDB,
// through database/sql and github.com/go-sql-driver/mysql.
//
// The store needs FOR UPDATE SKIP LOCKED: MySQL 8.0.1 or later, or MariaDB
// 10.6 or later, with InnoDB tables. It keeps the semantics of the other
// stores: a save in the caller's transaction, duplicate IDs refused
// without breaking that transaction (INSERT ... ON DUPLICATE KEY UPDATE),
// leases on the database's clock, per-key order and parked keys, dead
// letters and replay, and retention in small batches. Its differences:
//
//   - Wake-ups are poll-based: MySQL has no LISTEN, so a relay learns of
//     the saves of other processes on its next poll
//     (txm.ProcessorConfig.PollInterval); saves of the store's own process
//     wake it at once.
//   - Locked claims ([sqlstore.LockingOutbox.ClaimLocked], which
//     txm.ProcessorConfig.LockClaims uses) hold their rows with
//     FOR UPDATE SKIP LOCKED; MySQL has no timeout for an idle
//     transaction, so the claim's idle limit is the session's wait_timeout
//     (whole seconds), which Store.InTx sets back before the transaction
//     ends. A claim reads its candidates without locking and then locks
//     them by primary key, because a locking read of a range in
//     REPEATABLE READ also locks the gaps it scans and would hold up every
//     save; it reads past the messages that the store's own open locked
//     claims hold (the batch a relay claimed ahead), and the statements
//     that settle a batch name their index, so that the relay's two open
//     transactions never wait for each other. The relay's claims run at
//     READ COMMITTED (LockingOutbox.InTx), where a locking read of a range
//     takes no gap locks: on a backlog without partition keys, and with no
//     retry due, such a claim is one locking read of the primary key,
//     passing over the rows others hold, as a hand-written SKIP LOCKED loop
//     is.
//   - [sqlstore.Store.Migrate] takes a lock of the server's (GET_LOCK) so
//     that processes migrating at once take turns; MySQL commits DDL as it
//     runs, so every statement of a version can run again and a version
//     interrupted half-way is completed by the next Migrate.
//   - [sqlstore.Config.Schema] names a database (MySQL's schema) that must
//     exist; "" is the connection's database. NotifyInterval and PollOnly
//     do not apply.
//   - Message IDs, partition keys and consumer groups are at most 255
//     characters, compared as bytes.
//   - The outbox's and the inbox's save run as statements prepared on the
//     server (the first one, which starts the prepare, as text), two per
//     connection of the store's handle: mind max_prepared_stmt_count. In
//     a transaction of your own ([sqlstore.WithTx]) they run as text.
//     Close closes them. A connection new to the pool prepares them again:
//     database/sql keeps two idle connections by default, so with more
//     concurrent transactions than that, raise the handle's
//     SetMaxIdleConns ([sqlstore.Store.DB] for a store of [Open]).
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// New returns a store on db, a handle of the MySQL driver
// (github.com/go-sql-driver/mysql). It does no I/O: call
// [sqlstore.Store.Migrate] to create the tables. Close does not close db.
//
// The handle's DSN must have parseTime=true (or the store reads the times
// it wrote itself) and must not set clientFoundRows=true, with which a
// duplicate ID would count as saved; [Open] sets both.
// [sqlstore.WithTx] hands the store a transaction of db.
func New(db *sql.DB, cfg sqlstore.Config) (*sqlstore.LockingStore, error) {
	if db == nil {
		return nil, errors.New("sqlstore/mysql: New: nil db")
	}
	return sqlstore.BuildLocking(seam.Handle{Database: seam.MySQL, DB: db}, cfg)
}

// Open connects to the database of dsn, a DSN of the MySQL driver such as
// "user:password@tcp(127.0.0.1:3306)/app", and returns a store on it that
// Close closes. It sets what the store needs on top of the DSN: parseTime,
// times in UTC, clientFoundRows off, and interpolateParams, which sends a
// statement and its arguments in one round trip. It pings the server but
// does not migrate: call [sqlstore.Store.Migrate].
func Open(ctx context.Context, dsn string, cfg sqlstore.Config) (*sqlstore.LockingStore, error) {
	dc, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlstore/mysql: Open: %w", err)
	}
	dc.ParseTime = true
	dc.Loc = time.UTC
	dc.ClientFoundRows = false
	dc.InterpolateParams = true
	conn, err := gomysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("sqlstore/mysql: Open: %w", err)
	}
	db := sql.OpenDB(conn)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("sqlstore/mysql: Open %s@%s: %w", dc.User, dc.Addr, err)
	}
	s, err := sqlstore.BuildLocking(seam.Handle{Database: seam.MySQL, DB: db, Owned: true}, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}
