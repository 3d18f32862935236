package sqlstore

import (
	"context"
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/stdlib"
	"golang.org/x/sync/errgroup"
)

// unmigrated returns n stores of the kind on one fresh database (SQLite
// file or PostgreSQL schema), not migrated, and a function that describes
// that database's schema.
func unmigrated(t *testing.T, kind backendKind, n int) ([]*Store, func() []string) {
	t.Helper()
	ctx := context.Background()
	var stores []*Store
	if kind == kindSQLite {
		path := filepath.Join(t.TempDir(), "txm.db")
		for range n {
			s, err := openSQLite(ctx, path, Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			stores = append(stores, s)
		}
		return stores, func() []string { return sqliteSchema(t, stores[0].DB()) }
	}
	e := newPGEnv(t)
	for range n {
		stores = append(stores, storeOn(t, kind, e.pool, Config{}))
	}
	return stores, func() []string { return pgSchema(t, e) }
}

func sqliteSchema(t *testing.T, db *sql.DB) []string {
	t.Helper()
	return queryStrings(t, db, `SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_master ORDER BY name`)
}

func pgSchema(t *testing.T, e *pgEnv) []string {
	t.Helper()
	db := e.sqlDB(t)
	var out []string
	for _, q := range []string{
		`SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') || ' ' || is_identity
		 FROM information_schema.columns WHERE table_schema = $1 ORDER BY table_name, column_name`,
		`SELECT indexname || ': ' || replace(indexdef, $1, 'S') FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname`,
		`SELECT conname || ': ' || pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = $1::regnamespace ORDER BY conname`,
	} {
		out = append(out, queryStrings(t, db, q, e.schema)...)
	}
	return out
}

func queryStrings(t *testing.T, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func appliedVersions(t *testing.T, s *Store) []string {
	t.Helper()
	db := s.DB()
	if db == nil {
		db = stdlib.OpenDBFromPool(s.pool)
		defer db.Close()
	}
	return queryStrings(t, db, "SELECT tables || ' ' || version || ' ' || name FROM "+s.cfg.qualified(s.cfg.MigrationsTable)+" ORDER BY version")
}

// TestMigrateConcurrently starts four processes' Migrate at once on a new
// database: all succeed and each version is applied and recorded once.
func TestMigrateConcurrently(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		stores, schema := unmigrated(t, kind, 4)
		var g errgroup.Group
		for _, s := range stores {
			g.Go(func() error { return s.Migrate(ctx) })
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		ms, err := stores[0].migrations()
		if err != nil {
			t.Fatal(err)
		}
		got := appliedVersions(t, stores[0])
		if len(got) != len(ms) || len(ms) == 0 || got[0] != "txm_outbox,txm_inbox 1 init" {
			t.Fatalf("recorded versions %v, want each of the %d versions once", got, len(ms))
		}
		before := schema()
		if err := stores[1].Migrate(ctx); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
		if after := schema(); !slices.Equal(before, after) {
			t.Fatalf("Migrate again changed the schema:\n%v\n%v", before, after)
		}
		mustSave(t, stores[2].Outbox(), newMsg("t", "k"))
	})
}

// TestMigrationSQLIsWhatMigrateApplies applies MigrationSQL by hand to one
// database and Migrate to another: the schemas and the recorded versions
// are the same, and Migrate after MigrationSQL changes nothing.
func TestMigrationSQLIsWhatMigrateApplies(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		byTool, schemaByTool := unmigrated(t, kind, 1)
		byMigrate, schemaByMigrate := unmigrated(t, kind, 1)
		text := byTool[0].MigrationSQL()
		if !strings.Contains(text, "txm_outbox") || !strings.Contains(text, "txm_migrations") {
			t.Fatalf("MigrationSQL:\n%s", text)
		}
		if text != byMigrate[0].MigrationSQL() {
			t.Fatal("MigrationSQL differs between two stores of one configuration")
		}
		if err := execScript(ctx, byTool[0], text); err != nil {
			t.Fatalf("applying MigrationSQL: %v", err)
		}
		if err := byMigrate[0].Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		tool, migrate := schemaByTool(), schemaByMigrate()
		if !slices.Equal(tool, migrate) {
			t.Fatalf("MigrationSQL built\n%s\nMigrate built\n%s", strings.Join(tool, "\n"), strings.Join(migrate, "\n"))
		}
		if a, b := appliedVersions(t, byTool[0]), appliedVersions(t, byMigrate[0]); !slices.Equal(a, b) {
			t.Fatalf("versions recorded by MigrationSQL %v, by Migrate %v", a, b)
		}
		if err := byTool[0].Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if after := schemaByTool(); !slices.Equal(tool, after) {
			t.Fatal("Migrate after MigrationSQL changed the schema")
		}
	})
}

// execScript runs a multi-statement script as a migration tool would.
func execScript(ctx context.Context, s *Store, script string) error {
	if s.pool != nil {
		_, err := s.pool.Exec(ctx, script)
		return err
	}
	_, err := s.DB().ExecContext(ctx, script)
	return err
}
