package seam

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// SQLite settings of OpenSQLite.
const (
	SQLiteBusyTimeoutMS = 10000
	sqliteMaxConns      = 4
)

// OpenSQLite opens the SQLite database file at path with the settings the
// store works best with (see sqlite.Open) through the driver registered as
// "sqlite" (modernc.org/sqlite, which the caller imports), and pings it.
func OpenSQLite(ctx context.Context, path string) (*sql.DB, error) {
	if path == "" {
		return nil, errors.New("empty path")
	}
	memory := path == ":memory:" || strings.Contains(path, "mode=memory")
	dsn := path
	switch {
	case path == ":memory:":
		dsn = "file::memory:"
	case !strings.HasPrefix(dsn, "file:"):
		dsn = "file:" + (&url.URL{Path: path}).EscapedPath()
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	q := url.Values{}
	q.Set("_txlock", "immediate")
	q.Set("_busy_timeout", fmt.Sprint(SQLiteBusyTimeoutMS))
	q.Set("_foreign_keys", "1")
	if !memory {
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "NORMAL")
	}
	dsn += sep + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if memory {
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(sqliteMaxConns)
	}
	db.SetMaxIdleConns(sqliteMaxConns)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}
