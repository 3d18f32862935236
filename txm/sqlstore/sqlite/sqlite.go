// Package sqlite builds a [sqlstore.Store] on an SQLite database file,
// through database/sql and the pure-Go driver modernc.org/sqlite, which it
// registers as "sqlite". A program that imports only the other databases'
// packages does not link SQLite.
//
// SQLite has one writer at a time: the store queues its relay's writes in
// the process, claims with one UPDATE, takes the current time from the
// process's clock, and has no locked claims: it is a [sqlstore.Store], not
// a [sqlstore.LockingStore], and its outbox does not implement
// txm.LockingClaimer, so a relay with txm.ProcessorConfig.LockClaims
// refuses it when it is built. Other processes may write to the same
// file, so wake-ups are poll-based across processes.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	// The pure-Go SQLite driver, registered as "sqlite".
	_ "modernc.org/sqlite"

	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// BusyTimeout is the busy timeout of the connections of [Open], in
// milliseconds.
const BusyTimeout = seam.SQLiteBusyTimeoutMS

// New returns a store on a database/sql handle opened with the
// modernc.org/sqlite driver ("sqlite"). It does no I/O and changes no
// setting of db; [Open] opens a handle with the settings the store works
// best with (WAL, busy timeout, IMMEDIATE transactions), which a handle of
// your own should have as well. Close does not close db.
// [sqlstore.Config.Schema] must be "".
func New(db *sql.DB, cfg sqlstore.Config) (*sqlstore.Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore/sqlite: New: nil db")
	}
	return sqlstore.Build(seam.Handle{Database: seam.SQLite, DB: db}, cfg)
}

// Open opens (creating it if needed) the SQLite database file at path and
// returns a store on it that Close closes. The connections use WAL
// journaling (readers do not block the writer), synchronous=NORMAL
// (durable across process crashes; the last transactions may be lost on
// power loss), a 10s busy timeout, foreign keys, and IMMEDIATE
// transactions, which take the write lock at BEGIN so that a transaction
// never fails to upgrade from reading to writing. SQLite has one writer at
// a time, so the pool is limited to 4 connections (1 for ":memory:", whose
// connections would each get their own database). Open does not migrate:
// call [sqlstore.Store.Migrate].
func Open(ctx context.Context, path string, cfg sqlstore.Config) (*sqlstore.Store, error) {
	db, err := seam.OpenSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("sqlstore/sqlite: Open: %w", err)
	}
	s, err := sqlstore.Build(seam.Handle{Database: seam.SQLite, DB: db, Owned: true}, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}
