package sqlstore_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// nopPublisher confirms every message.
var nopPublisher = async.MessagePublisherFunc(func(context.Context, string, async.Message) error { return nil })

// lockClaims is a relay configuration with locked claims.
var lockClaims = txm.ProcessorConfig{LockClaims: true, Logger: slog.New(slog.DiscardHandler)}

// TestSQLiteOutboxIsNoLockingClaimer: SQLite cannot hold a claim's rows in
// a transaction without stopping every save, so its outbox does not
// implement txm.LockingClaimer, and a relay with LockClaims refuses it
// when it is built instead of failing once it runs.
func TestSQLiteOutboxIsNoLockingClaimer(t *testing.T) {
	ctx := context.Background()
	store, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "locking.db"), sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, ok := any(store.Outbox()).(txm.LockingClaimer); ok {
		t.Fatal("SQLite's outbox implements txm.LockingClaimer")
	}
	p, err := txm.NewOutboxProcessorWithConfig(nopPublisher, store.Outbox(), lockClaims)
	if err == nil || !strings.Contains(err.Error(), "LockingClaimer") {
		t.Fatalf("a relay with LockClaims on SQLite: %v, %v; want an error naming LockingClaimer", p, err)
	}
	// Without LockClaims the same outbox relays with leases.
	if _, err := txm.NewOutboxProcessorWithConfig(nopPublisher, store.Outbox(), txm.ProcessorConfig{}); err != nil {
		t.Fatalf("a relay with leases on SQLite: %v", err)
	}
}

// TestPostgresOutboxIsALockingClaimer: PostgreSQL's stores, pgx and
// database/sql, claim by locking, and a relay with LockClaims takes their
// outbox.
func TestPostgresOutboxIsALockingClaimer(t *testing.T) {
	url := testenv.URL(t, testenv.Postgres)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	pgx, err := postgres.New(pool, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pgx.Close()
	wantLockingClaimer(t, "postgres.New", pgx)
	// database/sql with pgx's stdlib driver, as postgres.NewDB takes it.
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	std, err := postgres.NewDB(db, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer std.Close()
	wantLockingClaimer(t, "postgres.NewDB", std)
}

// TestMySQLOutboxIsALockingClaimer: MySQL's store claims by locking, and a
// relay with LockClaims takes its outbox.
func TestMySQLOutboxIsALockingClaimer(t *testing.T) {
	dsn := testenv.URL(t, testenv.MySQL)
	store, err := mysql.Open(context.Background(), dsn, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	wantLockingClaimer(t, "mysql.Open", store)
}

func wantLockingClaimer(t *testing.T, name string, store *sqlstore.LockingStore) {
	t.Helper()
	if _, ok := any(store.Outbox()).(txm.LockingClaimer); !ok {
		t.Fatalf("the outbox of %s does not implement txm.LockingClaimer", name)
	}
	if _, err := txm.NewOutboxProcessorWithConfig(nopPublisher, store.Outbox(), lockClaims); err != nil {
		t.Fatalf("a relay with LockClaims on %s: %v", name, err)
	}
}
