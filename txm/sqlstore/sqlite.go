package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/transmanager/transmanager/txm"
)

// This file is the SQLite engine: its SQL text, its saves, its claim and
// its migration lock. SQLite runs in the process, so its clock is the
// process's: its statements take the current time as their last parameter,
// in Unix microseconds like every time it stores. It has one writer at a
// time, so statements need no row locks and it has no locked claims.

// sqliteEngine is the engine of SQLite stores.
type sqliteEngine struct{}

// newSQLite returns a store on a database/sql handle of the
// modernc.org/sqlite driver (sqlite.New, sqlite.Open).
func newSQLite(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: sqlite: nil db")
	}
	s, err := newStore(sqliteEngine{}, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = sqlBackend{sqlQuerier: sqlQuerier{db}, db: db}
	return s, nil
}

func (sqliteEngine) name() string { return "sqlite" }

func (sqliteEngine) quote(ident string) string { return quoteIdent(ident) }

func (sqliteEngine) checkConfig(cfg Config) error {
	if cfg.Schema != "" {
		return fmt.Errorf("sqlstore: Config.Schema must be empty for SQLite, got %q", cfg.Schema)
	}
	return nil
}

// sqliteCandidates is candidates for SQLite, which has no LATERAL: it runs
// the NOT EXISTS as a correlated lookup in held_idx.
const sqliteCandidates = `SELECT o.seq
    FROM {outbox} o
    WHERE o.` + available + `
      AND NOT EXISTS (
        SELECT 1 FROM {outbox} h
        WHERE h.partition_key = o.partition_key AND h.seq < o.seq
            AND ` + holdsKey + `)
    ORDER BY o.seq
    LIMIT {limit}`

func (sqliteEngine) statements(cfg Config) statements {
	outbox, inbox := cfg.qualified(cfg.OutboxTable), cfg.qualified(cfg.InboxTable)
	var s statements
	// SQLite: one writer at a time, so statements need no row locks; a
	// claim is a single UPDATE, atomic on its own.
	r := strings.NewReplacer("{outbox}", outbox, "{inbox}", inbox)
	f := func(q string, now string) string {
		return strings.NewReplacer("{now}", now, "{limit}", "$1").Replace(r.Replace(q))
	}
	s.save = f(`INSERT INTO {outbox} (id, topic, name, partition_key, metadata, payload, sent_at, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, {now})
    ON CONFLICT (id) DO NOTHING`, "$8")
	s.claimable = f(`SELECT count(*) FROM (`+sqliteCandidates+`)`, "$2")
	s.claim = f(`UPDATE {outbox} SET claimed_until = {now} + $2
    WHERE seq IN (`+sqliteCandidates+`)
    RETURNING `+messageColumns, "$3")
	s.published = f(`UPDATE {outbox} SET state = 'published', published_at = {now}, claimed_until = NULL,
        dead_at = NULL
    WHERE id IN (SELECT value FROM json_each($1)) AND state <> 'published'`, "$2")
	if !cfg.KeepPublished {
		// The time parameter stays, unused, so both forms take the same
		// arguments.
		s.published = f(`DELETE FROM {outbox}
    WHERE id IN (SELECT value FROM json_each($1)) AND state <> 'published' AND $2 IS NOT NULL`, "$2")
	}
	s.extend = f(`UPDATE {outbox} SET claimed_until = {now} + $2
    WHERE id IN (SELECT value FROM json_each($1)) AND state = 'pending' AND claimed_until IS NOT NULL`, "$3")
	s.release = f(`UPDATE {outbox} SET claimed_until = NULL
    WHERE id IN (SELECT value FROM json_each($1)) AND state = 'pending' AND claimed_until IS NOT NULL`, "")
	s.failed = f(`UPDATE {outbox} SET attempts = attempts + 1, last_error = $3, claimed_until = NULL,
        next_attempt_at = {now} + $2
    WHERE id = $1 AND state = 'pending'`, "$4")
	s.dead = f(`UPDATE {outbox} SET state = 'dead', attempts = attempts + 1, last_error = $2,
        claimed_until = NULL, dead_at = {now}
    WHERE id = $1 AND state = 'pending'`, "$3")
	const deadFilter = `state = 'dead' AND state <> 'published'
      AND (state = 'dead' OR claimed_until IS NOT NULL OR next_attempt_at IS NOT NULL)
      AND ($1 IS NULL OR id IN (SELECT value FROM json_each($1)))
      AND ($2 = '' OR topic = $2)
    ORDER BY seq
    LIMIT $3`
	s.dlq = f(`SELECT `+messageColumns+`, coalesce(last_error, ''), dead_at
    FROM {outbox}
    WHERE `+deadFilter, "")
	s.replay = f(`UPDATE {outbox} SET state = 'pending', attempts = 0, next_attempt_at = NULL,
        claimed_until = NULL, dead_at = NULL, last_error = NULL
    WHERE seq IN (SELECT seq FROM {outbox} WHERE `+deadFilter+`)`, "")
	// A scheduled message whose time has not come is counted apart; one
	// whose time has come is pending since then (or since its save, if
	// that was later).
	s.stats = f(`SELECT topic, sum(pending), sum(scheduled), sum(dead), min(oldest), min(next_due) FROM (
        SELECT topic, sum(NOT sched) AS pending, sum(sched) AS scheduled, 0 AS dead,
            min(CASE WHEN sched THEN NULL
                WHEN attempts = 0 AND next_attempt_at IS NOT NULL THEN max(created_at, next_attempt_at)
                ELSE created_at END) AS oldest,
            min(CASE WHEN sched THEN next_attempt_at END) AS next_due
        FROM (SELECT topic, attempts, created_at, next_attempt_at,
                coalesce(attempts = 0 AND next_attempt_at > {now}, 0) AS sched
            FROM {outbox} WHERE state = 'pending')
        GROUP BY topic
    UNION ALL
        SELECT topic, 0, 0, count(*), NULL, NULL
        FROM {outbox} WHERE state = 'dead' GROUP BY topic
    )
    GROUP BY topic`, "$1")
	s.schedule = f(`UPDATE {outbox} SET next_attempt_at = $2 WHERE id = $1 AND state = 'pending'`, "")
	s.cancel = f(`DELETE FROM {outbox} WHERE id = $1 AND `+scheduledWaiting, "$2")
	s.scheduledMeta = f(`SELECT metadata FROM {outbox} WHERE id = $1 AND `+scheduledWaiting, "$2")
	s.reschedule = f(`UPDATE {outbox} SET next_attempt_at = $2, metadata = $3 WHERE id = $1 AND state = 'pending'`, "")
	// due_idx (migration 0002) holds the messages with a next attempt time.
	s.nextDue = f(`SELECT coalesce(min(next_attempt_at) - {now}, 0)
    FROM {outbox}
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL AND next_attempt_at > {now}`, "$1")
	s.purge = f(`DELETE FROM {outbox} WHERE seq IN (
        SELECT seq FROM {outbox}
        WHERE state = 'published' AND published_at < {now} - $1
        ORDER BY published_at
        LIMIT $2)`, "$3")
	s.inboxSave = f(`INSERT INTO {inbox} (consumer_group, id, topic, name, metadata, payload, sent_at, received_at, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {now})
    ON CONFLICT (consumer_group, id) DO NOTHING`, "$9")
	s.inboxPurge = f(`DELETE FROM {inbox} WHERE rowid IN (
        SELECT rowid FROM {inbox}
        WHERE consumer_group = $1 AND created_at < {now} - $2
        ORDER BY created_at
        LIMIT $3)`, "$4")
	return s
}

// sqliteSaveMany returns the multi-row insert of n messages, with eight
// anonymous parameters per message: the seven of statements.save, then the
// time. (Numbered or named parameters make SQLite's parser look each one up
// in a list, quadratic in their number, which a batch of 1000 felt.)
func sqliteSaveMany(cfg Config, n int) string {
	return multiRowInsert(cfg, n, "(?, ?, ?, ?, ?, ?, ?, ?)", "ON CONFLICT (id) DO NOTHING")
}

// sqliteBatch is how many messages one SQLite insert carries: 8 parameters
// each stays well below SQLite's limit of 32766.
const sqliteBatch = 500

// claimSQLite claims with one UPDATE. Without a transaction in ctx it
// first looks, with a read that does not wait for SQLite's write lock,
// whether there is anything to claim: an idle relay's polls then neither
// take the lock from writers nor wait for a long transaction.
func (s *Store) claimSQLite(ctx context.Context, read func(q querier, args ...any) error, limit int, lease time.Duration) error {
	q, h, err := s.querier(ctx)
	if err != nil {
		return err
	}
	if h == nil {
		var n int64
		if err := queryRow(ctx, q, s.stmts.claimable, []any{1, nowMicros()}, &n); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		release, err := s.queueWrite(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	return read(q, limit, lease.Microseconds(), nowMicros())
}

// queueWrite waits until no other write of this store's relay runs
// (SQLite), or until ctx ends.
func (s *Store) queueWrite(ctx context.Context) (release func(), err error) {
	select {
	case s.writing <- struct{}{}:
		return func() { <-s.writing }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (sqliteEngine) save(ctx context.Context, s *Store, q querier, _ *txHolder, args []any) (int64, error) {
	return q.exec(ctx, s.stmts.save, append(args, nowMicros())...)
}

func (sqliteEngine) saveMany(ctx context.Context, s *Store, recs []record) (int64, error) {
	now := nowMicros()
	return s.saveManyRows(ctx, recs, sqliteBatch, func(n int) string { return sqliteSaveMany(s.cfg, n) },
		func(args []any, r record) []any {
			return append(args, r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt.UnixMicro(), now)
		})
}

// claim claims with one UPDATE. Without a transaction in ctx it first
// looks, with a read that does not wait for SQLite's write lock, whether
// there is anything to claim: an idle relay's polls then neither take the
// lock from writers nor wait for a long transaction.
func (sqliteEngine) claim(ctx context.Context, s *Store, limit int, lease time.Duration) ([]claimedRow, error) {
	q, h, err := s.querier(ctx)
	if err != nil {
		return nil, err
	}
	if h == nil {
		var n int64
		if err := queryRow(ctx, q, s.stmts.claimable, []any{1, nowMicros()}, &n); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, nil
		}
		release, err := s.queueWrite(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	rows, err := q.query(ctx, s.stmts.claim, limit, lease.Microseconds(), nowMicros())
	if err != nil {
		return nil, err
	}
	return scanClaimed(rows)
}

// update queues the relay's writes outside a transaction (queueWrite).
func (sqliteEngine) update(ctx context.Context, s *Store, q querier, h *txHolder, stmt string, args []any) error {
	if h == nil {
		release, err := s.queueWrite(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	_, err := q.exec(ctx, stmt, args...)
	return err
}

func (sqliteEngine) now() (any, bool) { return nowMicros(), true }

func (sqliteEngine) timeArg(t time.Time) any { return t.UnixMicro() }

// idsArg returns ids as a JSON array, for json_each.
func (sqliteEngine) idsArg(ids []string) any {
	b, _ := json.Marshal(ids) // strings always encode
	return string(b)
}

func (e sqliteEngine) filterArgs(f txm.DeadLetterFilter) []any {
	var ids any
	if len(f.IDs) > 0 {
		ids = e.idsArg(f.IDs)
	}
	limit := -1 // no limit
	if f.Limit > 0 {
		limit = f.Limit
	}
	return []any{ids, f.Topic, limit}
}

// planned returns args: SQLite plans every statement for its arguments.
func (sqliteEngine) planned(args []any) []any { return args }

// noTable: modernc.org/sqlite reports "SQL logic error: no such table:
// NAME (1)".
func (sqliteEngine) noTable(err error) bool { return strings.Contains(err.Error(), "no such table") }

func (sqliteEngine) migrationsTableSQL(cfg Config) string {
	return `CREATE TABLE IF NOT EXISTS ` + cfg.qualified(cfg.MigrationsTable) + ` (
    tables     TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    name       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000000 AS INTEGER)),
    PRIMARY KEY (tables, version)
) STRICT;
`
}
func (sqliteEngine) recordSQL(table, tables string, m migration) string {
	return postgresEngine{}.recordSQL(table, tables, m) // the same ON CONFLICT DO NOTHING
}

func (sqliteEngine) execMigration(ctx context.Context, q querier, text string) error {
	_, err := q.exec(ctx, text)
	return err
}

// migrate applies the versions in one transaction that takes the write
// lock at BEGIN (BEGIN IMMEDIATE), on a connection of its own, whatever
// the handle's _txlock: processes migrating at once take turns.
func (sqliteEngine) migrate(ctx context.Context, s *Store, apply func(q querier) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := sqlQuerier{conn}
	if _, err := q.exec(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if err := apply(q); err != nil {
		_, _ = q.exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	if _, err := q.exec(ctx, "COMMIT"); err != nil {
		_, _ = q.exec(context.WithoutCancel(ctx), "ROLLBACK")
		return err
	}
	return nil
}

// listen does nothing: other processes may write to the same file, and
// the relay finds their saves by polling.
func (sqliteEngine) listen(*Store) {}
