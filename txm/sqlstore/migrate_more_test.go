package sqlstore

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
)

// TestMigrateCreatesSchema migrates a store whose Config.Schema does not
// exist yet: Migrate creates it, and the store works in it.
func TestMigrateCreatesSchema(t *testing.T) {
	for _, kind := range []backendKind{kindPgx, kindSQLDB} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			u := testenv.URL(t, testenv.Postgres)
			pool, err := pgxpool.New(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			schema := randomName("txm_app_")
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
					t.Errorf("drop schema: %v", err)
				}
			})
			s := storeOn(t, kind, pool, Config{Schema: schema})
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate with a new schema: %v", err)
			}
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
			if !strings.Contains(s.MigrationSQL(), `CREATE SCHEMA IF NOT EXISTS "`+schema+`"`) {
				t.Fatalf("MigrationSQL does not create the schema:\n%s", s.MigrationSQL())
			}
			mustSave(t, s.Outbox(), newMsg("t", "k"))
			if got := mustClaim(t, s.Outbox(), 10, time.Minute); len(got) != 1 {
				t.Fatalf("claimed %d messages, want 1", len(got))
			}
			var n int
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".txm_outbox").Scan(&n); err != nil || n != 1 {
				t.Fatalf("rows in %s.txm_outbox: %d, %v", schema, n, err)
			}
		})
	}
}

// TestUnmigratedStoreSaysMigrate runs outbox and inbox operations on a
// database without the store's tables: each error matches ErrNotMigrated,
// says to run Migrate and keeps the driver's error.
func TestUnmigratedStoreSaysMigrate(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		stores, _ := unmigrated(t, kind, 1)
		s := stores[0]
		o, in := s.Outbox(), s.Inbox("g")
		for _, c := range []struct {
			op string
			fn func() error
		}{
			{"Save", func() error {
				return s.InTx(ctx, func(ctx context.Context) error { return o.Save(ctx, newMsg("t", "k")) })
			}},
			{"Claim", func() error { _, err := o.Claim(ctx, 10, time.Minute); return err }},
			{"FindUnpublished", func() error { _, err := o.FindUnpublished(ctx, 10); return err }},
			{"Stats", func() error { _, err := o.Stats(ctx); return err }},
			{"Purge", func() error { _, err := o.Purge(ctx, time.Hour, 10); return err }},
			{"DeadLetters", func() error { _, err := o.DeadLetters(ctx, txm.DeadLetterFilter{}); return err }},
			{"Inbox.Save", func() error {
				return s.InTx(ctx, func(ctx context.Context) error { return in.Save(ctx, incoming{newMsg("t", "")}) })
			}},
			{"PurgeInbox", func() error { _, err := in.PurgeInbox(ctx, time.Hour, 10); return err }},
		} {
			err := c.fn()
			if !errors.Is(err, ErrNotMigrated) {
				t.Errorf("%s: %v, want ErrNotMigrated", c.op, err)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, "Migrate") || !strings.Contains(msg, "txm_") {
				t.Errorf("%s: %q does not say to migrate and which table is missing", c.op, msg)
			}
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := o.Stats(ctx); err != nil {
			t.Fatalf("Stats after Migrate: %v", err)
		}
	})
}

// TestMigrationFS checks that the files of MigrationFS are MigrationSQL's
// statements, version by version, and that applying them in name order, as
// a migration tool does, builds what Migrate builds, after which Migrate
// changes nothing.
func TestMigrationFS(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		byTool, schemaByTool := unmigrated(t, kind, 1)
		byMigrate, schemaByMigrate := unmigrated(t, kind, 1)
		fsys := byTool[0].MigrationFS()
		entries, err := fs.ReadDir(fsys, ".")
		if err != nil {
			t.Fatal(err)
		}
		ms, err := byTool[0].migrations()
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != len(ms) || entries[0].Name() != "0001_init.up.sql" {
			t.Fatalf("files %v, want one VERSION_NAME.up.sql per version (%d)", entries, len(ms))
		}
		var all strings.Builder
		for _, e := range entries {
			text, err := fs.ReadFile(fsys, e.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(text), "-- +goose Up\n") {
				t.Errorf("%s does not start with goose's annotation", e.Name())
			}
			all.Write(text)
			if err := execScript(ctx, byTool[0], string(text)); err != nil {
				t.Fatalf("applying %s: %v", e.Name(), err)
			}
		}
		if got, want := sqlLines(all.String()), sqlLines(byTool[0].MigrationSQL()); !slices.Equal(got, want) {
			t.Fatalf("MigrationFS's statements\n%s\nMigrationSQL's\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if err := byMigrate[0].Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		tool, migrate := schemaByTool(), schemaByMigrate()
		if !slices.Equal(tool, migrate) {
			t.Fatalf("MigrationFS built\n%s\nMigrate built\n%s", strings.Join(tool, "\n"), strings.Join(migrate, "\n"))
		}
		if a, b := appliedVersions(t, byTool[0]), appliedVersions(t, byMigrate[0]); !slices.Equal(a, b) {
			t.Fatalf("versions recorded by MigrationFS %v, by Migrate %v", a, b)
		}
		if err := byTool[0].Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if after := schemaByTool(); !slices.Equal(tool, after) {
			t.Fatal("Migrate after MigrationFS changed the schema")
		}
	})
}

// sqlLines returns a script's lines without comments and blank lines.
func sqlLines(script string) []string {
	var out []string
	for line := range strings.Lines(script) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "--") {
			continue
		}
		out = append(out, line)
	}
	return out
}
