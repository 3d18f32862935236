package sqlstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"testing/fstest"
	"text/template"

	"github.com/transmanager/transmanager/async"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql migrations/mysql/*.sql
var migrationFiles embed.FS

// migration is one rendered, versioned migration.
type migration struct {
	version int
	name    string
	sql     string
}

// templateData is what a migration template sees.
type templateData struct {
	cfg Config
	// Outbox and Inbox are the quoted, qualified table names.
	Outbox, Inbox string
}

// OutboxName returns the quoted name of an outbox object (index or
// constraint): the table's name with suffix.
func (t templateData) OutboxName(suffix string) string {
	return t.cfg.quote(t.cfg.OutboxTable + "_" + suffix)
}

// InboxName returns the quoted name of an inbox object.
func (t templateData) InboxName(suffix string) string {
	return t.cfg.quote(t.cfg.InboxTable + "_" + suffix)
}

// migrations returns the store's migrations in version order.
func (s *Store) migrations() ([]migration, error) {
	dir := "migrations/" + s.eng.name()
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, err
	}
	data := templateData{cfg: s.cfg, Outbox: s.cfg.qualified(s.cfg.OutboxTable), Inbox: s.cfg.qualified(s.cfg.InboxTable)}
	var out []migration
	for _, e := range entries {
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name is not VERSION_NAME.sql", e.Name())
		}
		version, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		text, err := fs.ReadFile(migrationFiles, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		tmpl, err := template.New(e.Name()).Option("missingkey=error").Parse(string(text))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		var b strings.Builder
		if err := tmpl.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		out = append(out, migration{version: version, name: name, sql: b.String()})
	}
	return out, nil // fs.ReadDir sorts by name, so by version
}

// migrationsTableSQL creates the schema, if the store has one, and the
// table where Migrate records versions.
func (s *Store) migrationsTableSQL() string { return s.eng.migrationsTableSQL(s.cfg) }

// recordSQL records that m was applied.
func (s *Store) recordSQL(m migration) string {
	return s.eng.recordSQL(s.cfg.qualified(s.cfg.MigrationsTable), s.tables, m)
}

// versionFiles returns, in version order, the name and text of each
// version as a file of [Store.MigrationFS]: the version's statements and
// the insert that records it, the first also creating the schema and the
// table of applied versions.
func (s *Store) versionFiles() ([]migrationFile, error) {
	ms, err := s.migrations()
	if err != nil {
		return nil, err
	}
	out := make([]migrationFile, 0, len(ms))
	for i, m := range ms {
		var b strings.Builder
		fmt.Fprintf(&b, "-- +goose Up\n-- transmanager sqlstore (%s), version %d: %s\n", s.eng.name(), m.version, m.name)
		if i == 0 {
			b.WriteString(s.migrationsTableSQL())
		}
		b.WriteString(m.sql)
		b.WriteString(s.recordSQL(m))
		out = append(out, migrationFile{name: fmt.Sprintf("%04d_%s.up.sql", m.version, m.name), text: b.String()})
	}
	return out, nil
}

// migrationFile is one file of [Store.MigrationFS].
type migrationFile struct{ name, text string }

// MigrationSQL returns the SQL that [Store.Migrate] applies, for users of
// their own migration tool: the schema ([Config.Schema], PostgreSQL) and
// the table of applied versions, then each version's statements followed
// by the insert that records it. Every statement is idempotent (IF NOT
// EXISTS, ON CONFLICT DO NOTHING), so running Migrate after applying it
// changes nothing. Run it in one transaction. It is the concatenation of
// the files of [Store.MigrationFS].
func (s *Store) MigrationSQL() string {
	files, err := s.versionFiles()
	if err != nil {
		// The migrations are embedded and tested: this cannot happen in a
		// released build. Return the error as SQL that fails loudly.
		return "-- sqlstore: " + err.Error() + "\nSELECT sqlstore_migrations_are_broken;\n"
	}
	var b strings.Builder
	b.WriteString("-- transmanager sqlstore schema (" + s.eng.name() + ")\n")
	for _, f := range files {
		b.WriteString("\n")
		b.WriteString(f.text)
	}
	return b.String()
}

// MigrationFS returns the statements of [Store.MigrationSQL] as versioned
// files, one per version, for migration tools that read a directory: at
// its root, VERSION_NAME.up.sql (0001_init.up.sql, ...), with the store's
// table names (and schema) filled in. The names suit golang-migrate
// (iofs.New(fsys, ".")), goose (each file starts with "-- +goose Up";
// goose.SetBaseFS(fsys) and the directory ".") and Atlas
// (format=golang-migrate). Each file also records its version in
// [Config.MigrationsTable], so a [Store.Migrate] after the tool's run
// changes nothing, and the tool may apply a file again: every statement is
// idempotent. Future versions come as new files; applied ones never
// change.
func (s *Store) MigrationFS() fs.FS {
	files, err := s.versionFiles()
	if err != nil {
		// As in MigrationSQL: a file that fails loudly.
		return fstest.MapFS{"0000_broken.up.sql": {Data: []byte("-- sqlstore: " + err.Error() + "\nSELECT sqlstore_migrations_are_broken;\n")}}
	}
	fsys := fstest.MapFS{}
	for _, f := range files {
		fsys[f.name] = &fstest.MapFile{Data: []byte(f.text), Mode: 0o444}
	}
	return fsys
}

// Migrate creates or updates the store's tables: in one transaction, it
// creates [Config.Schema] if the store has one and it does not exist
// (PostgreSQL; the role then needs the CREATE privilege on the database),
// applies the versions that the migrations table does not record yet, and
// records them. Processes that start at once may all call it: on
// PostgreSQL a transaction-scoped advisory lock makes them take turns, on
// SQLite the transaction takes the write lock at BEGIN (BEGIN IMMEDIATE),
// so each version is applied once.
func (s *Store) Migrate(ctx context.Context) error {
	if s.closed.Load() {
		return s.fail(ctx, "migrate", async.ErrClosed)
	}
	ms, err := s.migrations()
	if err != nil {
		return s.fail(ctx, "migrate", err)
	}
	apply := func(q querier) error {
		if err := s.eng.execMigration(ctx, q, s.migrationsTableSQL()); err != nil {
			return fmt.Errorf("migrations table: %w", err)
		}
		rows, err := q.query(ctx, "SELECT version FROM "+s.cfg.qualified(s.cfg.MigrationsTable)+" WHERE tables = $1", s.tables)
		if err != nil {
			return err
		}
		applied := map[int]bool{}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				_ = rows.Close()
				return err
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		for _, m := range ms {
			if applied[m.version] {
				continue
			}
			if err := s.eng.execMigration(ctx, q, m.sql+s.recordSQL(m)); err != nil {
				return fmt.Errorf("version %d (%s): %w", m.version, m.name, err)
			}
		}
		return nil
	}
	if err := s.eng.migrate(ctx, s, apply); err != nil {
		return s.fail(ctx, "migrate", err)
	}
	return nil
}
