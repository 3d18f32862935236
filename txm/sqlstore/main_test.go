package sqlstore

import (
	"context"
	"testing"

	"go.uber.org/goleak"
	// The SQLite driver, which sqlite.Open registers for users.
	_ "modernc.org/sqlite"

	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openSQLite is sqlite.Open, which this package's tests cannot import.
func openSQLite(ctx context.Context, path string, cfg Config) (*Store, error) {
	db, err := seam.OpenSQLite(ctx, path)
	if err != nil {
		return nil, err
	}
	s, err := Build(seam.Handle{Database: seam.SQLite, DB: db, Owned: true}, cfg)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}
