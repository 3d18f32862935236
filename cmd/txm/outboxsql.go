package main

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/transmanager/transmanager/txm/sqlstore"
)

// outboxTables reads what inspect and migrate show beyond the store's API
// (txm.StatsReporter, txm.DeadLetterStore): the messages waiting for a
// retry, the parked partition keys and the applied migrations. The queries
// rely on the table layout documented in sqlstore's migrations (state,
// attempts, next_attempt_at, last_error, partition_key, seq) and the
// default table names, which are the tables the admin commands open.
type outboxTables struct {
	db       *sql.DB
	outbox   string // quoted, qualified
	migTable string // quoted, qualified
}

func newOutboxTables(db *sql.DB, schema string, quote func(string) string) outboxTables {
	q := func(table string) string {
		if schema != "" {
			return quote(schema) + "." + quote(table)
		}
		return quote(table)
	}
	return outboxTables{db: db,
		outbox: q(sqlstore.DefaultOutboxTable), migTable: q(sqlstore.DefaultMigrationsTable)}
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteMySQL quotes an identifier for MySQL.
func quoteMySQL(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// retrying is a pending message whose last publish failed.
type retrying struct {
	ID          string     `json:"id"`
	Topic       string     `json:"topic"`
	Key         string     `json:"partition_key,omitempty"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error"`
}

// retrying returns up to limit pending messages that failed before, in save
// order.
func (t outboxTables) retrying(ctx context.Context, limit int) ([]retrying, error) {
	rows, err := t.db.QueryContext(ctx, fmt.Sprintf(`SELECT id, topic, COALESCE(partition_key, ''), attempts, next_attempt_at, COALESCE(last_error, '')
FROM %s WHERE state = 'pending' AND attempts > 0 ORDER BY seq LIMIT %d`, t.outbox, limit))
	if err != nil {
		return nil, fmt.Errorf("retrying messages: %w", err)
	}
	defer rows.Close()
	out := []retrying{}
	for rows.Next() {
		var r retrying
		var next any
		if err := rows.Scan(&r.ID, &r.Topic, &r.Key, &r.Attempts, &next, &r.LastError); err != nil {
			return nil, fmt.Errorf("retrying messages: %w", err)
		}
		if r.NextAttempt, err = dbTime(next); err != nil {
			return nil, fmt.Errorf("retrying messages: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("retrying messages: %w", err)
	}
	return out, nil
}

// parkedKey is a partition key whose messages wait behind one that failed
// (waiting for its retry) or is dead (until it is replayed).
type parkedKey struct {
	Key     string `json:"partition_key"`
	HeldBy  string `json:"held_by"`
	State   string `json:"state"` // "retrying" or "dead"
	Waiting int64  `json:"waiting"`
}

// parkedKeys returns up to limit parked keys, each with the first message
// that holds it and the pending messages behind that one.
func (t outboxTables) parkedKeys(ctx context.Context, limit int) ([]parkedKey, error) {
	const holds = `(%[1]s.state = 'dead' OR (%[1]s.state = 'pending' AND %[1]s.attempts > 0))`
	q := fmt.Sprintf(`SELECT h.partition_key, h.id, h.state,
  (SELECT COUNT(*) FROM %[1]s w WHERE w.partition_key = h.partition_key AND w.state = 'pending' AND w.seq > h.seq)
FROM %[1]s h
WHERE h.partition_key IS NOT NULL AND %[2]s
  AND NOT EXISTS (SELECT 1 FROM %[1]s e WHERE e.partition_key = h.partition_key AND e.seq < h.seq AND %[3]s)
ORDER BY h.seq LIMIT %[4]d`, t.outbox, fmt.Sprintf(holds, "h"), fmt.Sprintf(holds, "e"), limit)
	rows, err := t.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("parked keys: %w", err)
	}
	defer rows.Close()
	out := []parkedKey{}
	for rows.Next() {
		var p parkedKey
		if err := rows.Scan(&p.Key, &p.HeldBy, &p.State, &p.Waiting); err != nil {
			return nil, fmt.Errorf("parked keys: %w", err)
		}
		if p.State == "pending" {
			p.State = "retrying"
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("parked keys: %w", err)
	}
	return out, nil
}

// appliedMigration is a version recorded in the migrations table.
type appliedMigration struct {
	version int
	name    string
}

func (m appliedMigration) String() string { return fmt.Sprintf("version %d (%s)", m.version, m.name) }

// migrations returns the versions recorded for the store's tables, in
// order. It fails when the migrations table does not exist yet.
func (t outboxTables) migrations(ctx context.Context) ([]appliedMigration, error) {
	tables := sqlstore.DefaultOutboxTable + "," + sqlstore.DefaultInboxTable
	rows, err := t.db.QueryContext(ctx, fmt.Sprintf(`SELECT tables, version, name FROM %s ORDER BY version`, t.migTable))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []appliedMigration
	for rows.Next() {
		var tt string
		var m appliedMigration
		if err := rows.Scan(&tt, &m.version, &m.name); err != nil {
			return nil, err
		}
		if tt == tables {
			out = append(out, m)
		}
	}
	return out, rows.Err()
}

// dbTime converts a time column of any store: Unix microseconds on
// SQLite, timestamptz on PostgreSQL, DATETIME on MySQL (read with
// parseTime). NULL is nil.
func dbTime(v any) (*time.Time, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case time.Time:
		return &v, nil
	case int64:
		t := time.UnixMicro(v)
		return &t, nil
	default:
		return nil, fmt.Errorf("unexpected time value %T", v)
	}
}
