package sqlstore

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
)

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// pgEnv is a PostgreSQL schema of one test's own.
type pgEnv struct {
	url    string
	schema string
	pool   *pgxpool.Pool // search_path is the schema
}

// newPGEnv creates a schema with a random name, dropped at cleanup, and a
// pool whose connections use it.
func newPGEnv(t testing.TB) *pgEnv {
	t.Helper()
	u := testenv.URL(t, testenv.Postgres)
	ctx := context.Background()
	schema := randomName("txm_test_")
	admin, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
		admin.Close()
	})
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &pgEnv{url: u, schema: schema, pool: pool}
}

// sqlDB opens a database/sql handle on the env's schema.
func (e *pgEnv) sqlDB(t testing.TB) *sql.DB {
	t.Helper()
	db := stdlib.OpenDBFromPool(e.pool)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// backendKind names a way to build a store.
type backendKind string

const (
	kindPgx    backendKind = "postgres-pgx"
	kindSQLDB  backendKind = "postgres-sql"
	kindSQLite backendKind = "sqlite"
)

var allKinds = []backendKind{kindSQLite, kindPgx, kindSQLDB}

// testStore is a migrated store of one kind with what built it.
type testStore struct {
	*Store
	kind backendKind
	pg   *pgEnv // PostgreSQL kinds
	path string // SQLite
}

// newTestStore returns a migrated store of the kind, closed at cleanup.
func newTestStore(t testing.TB, kind backendKind, cfg Config) *testStore {
	t.Helper()
	ctx := context.Background()
	ts := &testStore{kind: kind}
	var err error
	switch kind {
	case kindSQLite:
		ts.path = filepath.Join(t.TempDir(), "txm.db")
		ts.Store, err = openSQLite(ctx, ts.path, cfg)
	case kindPgx:
		ts.pg = newPGEnv(t)
		ts.Store, err = newPostgres(ts.pg.pool, cfg)
	case kindSQLDB:
		ts.pg = newPGEnv(t)
		ts.Store, err = newPostgresDB(ts.pg.sqlDB(t), cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ts.Close() })
	if err := ts.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return ts
}

// incoming adapts a message to async.IncomingMessage.
type incoming struct{ async.Message }

func (incoming) ReceivedAt() time.Time { return time.Now() }
func (incoming) Ack() error            { return nil }
func (incoming) NAck() error           { return nil }
func (incoming) Extend() error         { return nil }
func (incoming) Kill() error           { return nil }

// fakePgxTx is a pgx.Tx that is never used.
type fakePgxTx struct{ pgx.Tx }

// business is a table of the test's own that stands for the application's
// writes, made in the transaction that the context carries.
type business struct {
	s     *testStore
	table string
}

func newBusiness(t testing.TB, s *testStore) *business {
	t.Helper()
	b := &business{s: s, table: randomName("orders_")}
	if err := b.exec(context.Background(), "CREATE TABLE "+b.table+" (id text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return b
}

// exec runs a statement in ctx's transaction, or on its own.
func (b *business) exec(ctx context.Context, stmt string, args ...any) error {
	if tx, ok := PgxTxFromContext(ctx); ok {
		_, err := tx.Exec(ctx, stmt, args...)
		return err
	}
	if tx, ok := TxFromContext(ctx); ok {
		_, err := tx.ExecContext(ctx, stmt, args...)
		return err
	}
	if b.s.kind == kindPgx {
		_, err := b.s.pg.pool.Exec(ctx, stmt, args...)
		return err
	}
	_, err := b.s.DB().ExecContext(ctx, stmt, args...)
	return err
}

func (b *business) insert(ctx context.Context, id string) error {
	return b.exec(ctx, "INSERT INTO "+b.table+" (id) VALUES ($1)", id)
}

func (b *business) count(t testing.TB) int {
	t.Helper()
	var n int
	var err error
	q := "SELECT count(*) FROM " + b.table
	if b.s.kind == kindPgx {
		err = b.s.pg.pool.QueryRow(context.Background(), q).Scan(&n)
	} else {
		err = b.s.DB().QueryRow(q).Scan(&n)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// inUserTx runs fn in a transaction of the caller's own (pgx for the pgx
// store, database/sql otherwise), carried by WithPgxTx or WithTx, and
// commits it or rolls it back.
func (b *business) inUserTx(ctx context.Context, commit bool, fn func(ctx context.Context) error) error {
	if b.s.kind == kindPgx {
		tx, err := b.s.pg.pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := fn(WithPgxTx(ctx, tx)); err != nil {
			return err
		}
		if commit {
			return tx.Commit(ctx)
		}
		return tx.Rollback(ctx)
	}
	tx, err := b.s.DB().BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(WithTx(ctx, tx)); err != nil {
		return err
	}
	if commit {
		return tx.Commit()
	}
	return tx.Rollback()
}

func asDup(err error) (txm.ErrDuplicateMessage, bool) {
	var d txm.ErrDuplicateMessage
	ok := errors.As(err, &d)
	return d, ok
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
