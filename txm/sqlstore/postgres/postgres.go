// Package postgres builds a [sqlstore.LockingStore] on PostgreSQL, through
// a pgx pool ([New]) or a database/sql handle of pgx's stdlib driver
// ([NewDB]).
//
// The PostgreSQL store is the fullest: saves NOTIFY the relays of every
// process (LISTEN, see [sqlstore.Config.PollOnly] and
// [sqlstore.Config.NotifyInterval]), large batches are written with COPY
// (pgx), and the relay can claim by locking instead of leasing: the
// store's outbox is a [sqlstore.LockingOutbox], a txm.LockingClaimer
// ([sqlstore.LockingOutbox.ClaimLocked]).
package postgres

import (
	"database/sql"
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// New returns a store on a pgx pool. It does no I/O: call
// [sqlstore.Store.Migrate] to create the tables, or apply
// [sqlstore.Store.MigrationSQL] with your own migration tool. Close does
// not close the pool. [sqlstore.WithPgxTx] hands the store a transaction
// of the pool.
func New(pool *pgxpool.Pool, cfg sqlstore.Config) (*sqlstore.LockingStore, error) {
	if pool == nil {
		return nil, errors.New("sqlstore/postgres: New: nil pool")
	}
	return sqlstore.BuildLocking(seam.Handle{Database: seam.Postgres, Pool: pool}, cfg)
}

// NewDB returns a store on a database/sql handle opened with pgx's stdlib
// driver (github.com/jackc/pgx/v5/stdlib, driver name "pgx"). It does no
// I/O. Close does not close db. [sqlstore.WithTx] hands the store a
// transaction of db.
func NewDB(db *sql.DB, cfg sqlstore.Config) (*sqlstore.LockingStore, error) {
	if db == nil {
		return nil, errors.New("sqlstore/postgres: NewDB: nil db")
	}
	return sqlstore.BuildLocking(seam.Handle{Database: seam.Postgres, DB: db}, cfg)
}
