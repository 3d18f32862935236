package mysql_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// tablesConfig returns a configuration with tables of the test's own,
// dropped at cleanup.
func tablesConfig(t testing.TB, cfg sqlstore.Config) sqlstore.Config {
	t.Helper()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	prefix := "txm_t" + hex.EncodeToString(b)
	cfg.OutboxTable = prefix + "_outbox"
	cfg.InboxTable = prefix + "_inbox"
	cfg.MigrationsTable = prefix + "_migrations"
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dsn := testenv.URL(t, testenv.MySQL)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := mysql.Open(ctx, dsn, sqlstore.Config{})
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer admin.Close()
		for _, table := range []string{cfg.OutboxTable, cfg.InboxTable, cfg.MigrationsTable} {
			if _, err := admin.DB().ExecContext(ctx, "DROP TABLE IF EXISTS `"+table+"`"); err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		}
	})
	return cfg
}

// newStore returns a migrated store on tables of the test's own, closed at
// cleanup.
func newStore(t testing.TB, cfg sqlstore.Config) *sqlstore.LockingStore {
	t.Helper()
	return newStoreOn(t, tablesConfig(t, cfg))
}

// newStoreOn returns a migrated store with cfg, closed at cleanup.
func newStoreOn(t testing.TB, cfg sqlstore.Config) *sqlstore.LockingStore {
	t.Helper()
	ctx := context.Background()
	s, err := mysql.Open(ctx, testenv.URL(t, testenv.MySQL), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}
