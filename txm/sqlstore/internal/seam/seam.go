// Package seam is how the database packages of txm/sqlstore (postgres,
// sqlite, mysql) hand the core a connection to build a store on: a
// [Handle] names the database and carries its driver's handle. Being
// internal, it can be named only by packages of this module, so a store is
// always built by the package of its database.
package seam

import (
	"database/sql"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Database names the database engine of a store.
type Database int

// The databases the core has an engine for.
const (
	Postgres Database = iota + 1
	SQLite
	MySQL
)

// Handle is a connection to a store's database.
type Handle struct {
	Database Database
	// Pool is a PostgreSQL store's pgx pool; nil for database/sql.
	Pool *pgxpool.Pool
	// DB is the database/sql handle of the other stores.
	DB *sql.DB
	// Owned makes the store's Close close DB.
	Owned bool
}
