package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/transmanager/transmanager/txm"
)

// This file is the PostgreSQL engine, for pgx and database/sql stores: its
// SQL text, its saves (NOTIFY, COPY), its claims, the plans it pins and its
// migration lock; postgres_wake.go is its LISTEN connection. Its statements take
// the time from the database clock (statement_timestamp()) and durations
// as microseconds.

// postgresEngine is the engine of PostgreSQL stores.
type postgresEngine struct{}

var _ lockingEngine = postgresEngine{}

// newPostgres returns a store on a pgx pool (postgres.New).
func newPostgres(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("sqlstore: postgres: nil pool")
	}
	s, err := newStore(postgresEngine{}, cfg)
	if err != nil {
		return nil, err
	}
	s.pool = pool
	s.be = pgxBackend{pgxQuerier: pgxQuerier{pool}, b: pool}
	return s, nil
}

// newPostgresDB returns a store on a database/sql handle of pgx's stdlib
// driver (postgres.NewDB).
func newPostgresDB(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("sqlstore: postgres: nil db")
	}
	if _, ok := db.Driver().(*stdlib.Driver); !ok {
		return nil, fmt.Errorf("sqlstore: postgres: db must use the pgx stdlib driver, got %T", db.Driver())
	}
	s, err := newStore(postgresEngine{}, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = sqlBackend{sqlQuerier: sqlQuerier{db}, db: db}
	return s, nil
}

func (postgresEngine) name() string { return "postgres" }

func (postgresEngine) quote(ident string) string { return quoteIdent(ident) }

func (postgresEngine) checkConfig(Config) error { return nil }

// candidates selects, in save order, up to {limit} available messages that
// come before the first message holding their key (if any). Every earlier
// message of a candidate's key is thus published or also a candidate.
//
// PostgreSQL looks the first holder of each key up in held_idx with a
// LATERAL join, which it memoizes per key: scanning the pending messages
// from the oldest, it stops after {limit} candidates. (An anti-join on the
// same condition was planned as a nested loop over all holders, many
// times slower with hundreds of parked keys.) The probe is not skipped when no message
// holds a key: finding that out scans held_idx from its start, through the
// entries of every message claimed since the last vacuum, which under a
// steady load made each claim O(throughput × vacuum interval), which the
// commit-to-publish latency showed at once.
// A probe for a message without a key costs nothing: NULL matches no key.
const pgCandidates = `SELECT o.id, o.seq, o.partition_key, o.ctid
    FROM {outbox} o
    ` + pgFirstHolder + `
    WHERE ` + pgBeforeHolder + `
    ORDER BY o.seq
    LIMIT {limit}`

// pgFirstHolder joins each message o of a claim to the first message that
// holds its key (first_holder, see holdsKey), looked up in held_idx.
const pgFirstHolder = `LEFT JOIN LATERAL (
        SELECT h.seq FROM {outbox} h
        WHERE h.partition_key = o.partition_key
            AND ` + holdsKey + `
        ORDER BY h.seq
        LIMIT 1
    ) first_holder ON true`

// pgBeforeHolder is true of a message o that is available and comes before
// the first message holding its key, if any.
const pgBeforeHolder = `o.` + available + `
      AND (first_holder.seq IS NULL OR o.seq < first_holder.seq)`

func (postgresEngine) statements(cfg Config) statements {
	outbox, inbox := cfg.qualified(cfg.OutboxTable), cfg.qualified(cfg.InboxTable)
	var s statements
	r := strings.NewReplacer(
		"{outbox}", outbox, "{inbox}", inbox,
		"{now}", "statement_timestamp()",
		"{limit}", "$1",
	)
	f := func(q string) string { return r.Replace(q) }
	const insert = `INSERT INTO {outbox} (id, topic, name, partition_key, metadata, payload, sent_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO NOTHING`
	s.save = f(insert)
	s.saveNotify = notifying(s.save)
	s.saveMany = f(`INSERT INTO {outbox} (id, topic, name, partition_key, metadata, payload, sent_at)
    SELECT u.id, u.topic, u.name, NULLIF(u.pkey, ''), u.metadata::jsonb, u.payload, u.sent_at
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::timestamptz[])
        WITH ORDINALITY AS u(id, topic, name, pkey, metadata, payload, sent_at, ord)
    ORDER BY u.ord
    ON CONFLICT (id) DO NOTHING`)
	s.saveManyNotify = notifying(s.saveMany)
	s.claimLock = `SELECT pg_advisory_xact_lock($1)`
	s.pinByID = `SELECT set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true)`
	// claimLockOwn pins the claim's plan for the rest of the store's own
	// claim transaction (a claim in the caller's transaction leaves the
	// caller's settings alone). Plans seen under a producer's load made
	// each claim O(backlog), so that a relay once behind fell further
	// behind: with stale statistics the candidates were read by a
	// bitmap scan of the pending index and a sort of every pending
	// row, and pgx and database/sql prepare statements, whose generic
	// plan (built once, with the statistics of the moment, for any
	// limit) read the whole backlog for every claim.
	// With bitmap and sequential scans off, the only plan left reads
	// pending_idx in save order and stops at the limit, and the lock
	// and the update go by TID and primary key, whatever the
	// statistics say (TestPostgresClaimPlan checks the plan). So the
	// claim runs its one generic plan, with no planning per call (a
	// custom plan's planning is a large share of a claim); its text
	// carries the limit (Store.claimSQL), because a generic plan for
	// LIMIT $1 does not know it and made a drain's claims much slower.
	// The claim also commits without waiting for the WAL flush: a lease
	// lost in a database crash only lets the message be published again
	// (see the package documentation).
	s.claimLockOwn = `SELECT pg_advisory_xact_lock($1), set_config('enable_bitmapscan', 'off', true),
    set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true),
    set_config('synchronous_commit', 'off', true)`
	// The candidates are chosen from the statement's snapshot, then
	// locked one by one where the scan found them (a LATERAL TID probe
	// per candidate: with stale statistics a set-based lock was planned
	// as a scan of every pending row, and a probe by id with the state
	// in its condition as a scan of pending_idx per candidate; a TID
	// probe also saves the primary key's descent, a measurable share of
	// a keyed claim and mark). A row updated since the snapshot is locked in its
	// latest version or, when the TID recheck rejects that version,
	// not at all. Availability is checked on the row as locked: a
	// candidate that another transaction changed since (a late
	// MarkFailed, ExtendClaims or Replay) fails it, and one that is
	// locked right now is skipped: the later candidates of its key are
	// dropped as well, so a key is never handed out past a message the
	// claim did not get. Each step reads the previous one's rows once
	// (no join back to the candidates, which a misestimate turned into
	// a nested loop, O(limit²)), the per-key window runs only when
	// some candidate could not be locked, and the lease is written by
	// TID as well: the version locked is the one the scan found, so no
	// primary-key lookup is needed (BenchmarkStoreClaim compares claim +
	// mark with the hand-written loop, see bench/README.md).
	s.claim = f(`WITH cand AS MATERIALIZED (
    ` + pgCandidates + `
), locked AS (
    SELECT c.id, c.ctid, c.seq, c.partition_key, coalesce(l.` + strings.ReplaceAll(available, "o.", "l.") + `, false) AS got
    FROM cand c LEFT JOIN LATERAL (
        SELECT o.id, o.state, o.next_attempt_at, o.claimed_until FROM {outbox} o
        WHERE o.ctid = c.ctid
        FOR UPDATE SKIP LOCKED
    ) l ON true
), missed AS (
    SELECT coalesce(bool_or(NOT l.got), false) AS any FROM locked l
), granted AS (
    SELECT l.ctid FROM locked l WHERE NOT (SELECT m.any FROM missed m)
    UNION ALL
    SELECT x.ctid FROM (
        SELECT l.ctid, bool_and(l.got) OVER (
            PARTITION BY l.partition_key IS NULL, coalesce(l.partition_key, l.id)
            ORDER BY l.seq) AS ok
        FROM locked l
    ) x
    WHERE x.ok AND (SELECT m.any FROM missed m)
)
UPDATE {outbox} o SET claimed_until = {now} + $2::bigint * interval '1 microsecond'
WHERE o.ctid = ANY (ARRAY(SELECT g.ctid FROM granted g))
RETURNING o.seq, o.id, o.topic, o.name, o.metadata, o.payload, o.sent_at, o.attempts`)
	// The statements by a list of IDs run pinned generic plans on pgx
	// and are planned on every call elsewhere (see Store.update and
	// Store.planned). Given the array itself, the planner estimates
	// each element's selectivity, so planning grows with the batch.
	// Behind a subquery the array is one value it cannot look into,
	// planned at a small fixed cost, and the plan is the same
	// primary-key lookup.
	const byIDs = `id = ANY(ARRAY(SELECT unnest($1::text[])))`
	s.claimByLimit = strings.Replace(strings.Replace(s.claim, "LIMIT $1", "LIMIT {limit}", 1), "$2::bigint", "$1::bigint", 1)
	s.published = f(`UPDATE {outbox} SET state = 'published', published_at = {now}, claimed_until = NULL,
        dead_at = NULL
    WHERE ` + byIDs + ` AND state <> 'published'`)
	// A locked claim's messages are pending (their lock keeps them so):
	// by seq they are found in pending_idx, a bigint index, where the
	// text primary key costs a string comparison per level.
	s.publishedBySeq = f(`UPDATE {outbox} SET state = 'published', published_at = {now}, claimed_until = NULL
    WHERE seq = ANY($1::bigint[]) AND state = 'pending'`)
	if !cfg.KeepPublished {
		s.published = f(`DELETE FROM {outbox} WHERE ` + byIDs + ` AND state <> 'published'`)
		s.publishedBySeq = f(`DELETE FROM {outbox} WHERE seq = ANY($1::bigint[]) AND state = 'pending'`)
	}
	s.extend = f(`UPDATE {outbox} SET claimed_until = {now} + $2::bigint * interval '1 microsecond'
    WHERE ` + byIDs + ` AND state = 'pending' AND claimed_until IS NOT NULL`)
	s.extendLocked = f(`UPDATE {outbox} SET claimed_until = {now} + $2::bigint * interval '1 microsecond'
    WHERE ` + byIDs + ` AND state = 'pending'`)
	// The locked claim is the hand-written loop's SELECT ... FOR UPDATE
	// SKIP LOCKED: its LIMIT counts only the rows it locked, so rows
	// another transaction holds are passed over, and it writes no
	// lease. A row lock cannot be seen from another snapshot, so the
	// claim returns, with each keyed message, the previous unpublished
	// message of its key in the statement's snapshot (prev_seq, from
	// unpublished_key_idx), and LockingOutbox.ClaimLocked keeps a keyed
	// message only when it has none or kept that one: a chain from the
	// key's head, every link locked by this claim (published is final,
	// so no later commit can add a link the snapshot missed). The
	// messages behind one that holds its key (leased, retrying or dead
	// in the snapshot, found in held_idx as the lease claim finds them)
	// are left out before the LIMIT, so parked keys cost nothing; those
	// of a key whose head another transaction holds locked are scanned
	// and locked, then dropped, until this transaction ends.
	s.claimLocked = f(`SELECT o.seq, o.id, o.topic, o.name, o.metadata, o.payload, o.sent_at, o.attempts, prev.seq
    FROM {outbox} o
    LEFT JOIN LATERAL (
        SELECT h.seq FROM {outbox} h
        WHERE o.partition_key IS NOT NULL
            AND h.partition_key = o.partition_key AND h.seq < o.seq AND h.state <> 'published'
        ORDER BY h.seq DESC
        LIMIT 1
    ) prev ON true
    ` + pgFirstHolder + `
    WHERE ` + pgBeforeHolder + `
    ORDER BY o.seq
    LIMIT {limit}
    FOR UPDATE OF o SKIP LOCKED`)
	s.claimLocked = strings.Replace(s.claimLocked, "LIMIT $1", "LIMIT {limit}", 1)
	s.pinLocked = `SELECT set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true),
    set_config('plan_cache_mode', 'force_generic_plan', true),
    set_config('idle_in_transaction_session_timeout',
        coalesce($1::text, current_setting('idle_in_transaction_session_timeout')), true)`
	s.idleLocked = `SELECT set_config('idle_in_transaction_session_timeout', $1::text, true)`
	s.release = f(`UPDATE {outbox} SET claimed_until = NULL
    WHERE ` + byIDs + ` AND state = 'pending' AND claimed_until IS NOT NULL`)
	s.failed = f(`UPDATE {outbox} SET attempts = attempts + 1, last_error = $3, claimed_until = NULL,
        next_attempt_at = {now} + $2::bigint * interval '1 microsecond'
    WHERE id = $1 AND state = 'pending'`)
	s.dead = f(`UPDATE {outbox} SET state = 'dead', attempts = attempts + 1, last_error = $2,
        claimed_until = NULL, dead_at = {now}
    WHERE id = $1 AND state = 'pending'`)
	const deadFilter = `state = 'dead'
      AND ($1::text[] IS NULL OR id = ANY($1))
      AND ($2 = '' OR topic = $2)
    ORDER BY seq
    LIMIT $3`
	s.dlq = f(`SELECT ` + messageColumns + `, coalesce(last_error, ''), dead_at
    FROM {outbox}
    WHERE ` + deadFilter)
	s.replay = f(`UPDATE {outbox} SET state = 'pending', attempts = 0, next_attempt_at = NULL,
        claimed_until = NULL, dead_at = NULL, last_error = NULL
    WHERE id = ANY (ARRAY(SELECT id FROM {outbox} WHERE ` + deadFilter + ` FOR UPDATE))`)
	// A scheduled message whose time has not come is counted apart; one
	// whose time has come is pending since then (or since its save, if
	// that was later).
	s.stats = f(`SELECT topic, sum(pending)::bigint, sum(scheduled)::bigint, sum(dead)::bigint, min(oldest), min(next_due) FROM (
        SELECT topic, count(*) FILTER (WHERE NOT sched) AS pending, count(*) FILTER (WHERE sched) AS scheduled,
            0 AS dead,
            min(CASE WHEN sched THEN NULL
                WHEN attempts = 0 AND next_attempt_at IS NOT NULL THEN greatest(created_at, next_attempt_at)
                ELSE created_at END) AS oldest,
            min(next_attempt_at) FILTER (WHERE sched) AS next_due
        FROM (SELECT topic, attempts, created_at, next_attempt_at,
                coalesce(attempts = 0 AND next_attempt_at > {now}, false) AS sched
            FROM {outbox} WHERE state = 'pending') p
        GROUP BY topic
    UNION ALL
        SELECT topic, 0, 0, count(*), NULL, NULL
        FROM {outbox} WHERE state = 'dead' GROUP BY topic
    ) s
    GROUP BY topic`)
	s.schedule = f(`UPDATE {outbox} SET next_attempt_at = $2 WHERE id = $1 AND state = 'pending'`)
	s.cancel = f(`DELETE FROM {outbox} WHERE id = $1 AND ` + scheduledWaiting)
	s.scheduledMeta = f(`SELECT metadata FROM {outbox} WHERE id = $1 AND ` + scheduledWaiting + ` FOR UPDATE`)
	s.reschedule = f(`UPDATE {outbox} SET next_attempt_at = $2, metadata = $3::jsonb WHERE id = $1 AND state = 'pending'`)
	// due_idx (migration 0003) holds the messages with a next attempt
	// time: the earliest is its first entry past now.
	s.nextDue = f(`SELECT coalesce(ceil(extract(epoch FROM min(next_attempt_at) - {now}) * 1000000)::bigint, 0)
    FROM {outbox}
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL AND next_attempt_at > {now}`)
	s.purge = f(`DELETE FROM {outbox} WHERE id = ANY (ARRAY(
        SELECT id FROM {outbox}
        WHERE state = 'published' AND published_at < {now} - $1::bigint * interval '1 microsecond'
        ORDER BY published_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED))`)
	s.inboxSave = f(`INSERT INTO {inbox} (consumer_group, id, topic, name, metadata, payload, sent_at, received_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (consumer_group, id) DO NOTHING`)
	s.inboxPurge = f(`DELETE FROM {inbox} WHERE consumer_group = $1 AND id = ANY (ARRAY(
        SELECT id FROM {inbox}
        WHERE consumer_group = $1 AND created_at < {now} - $2::bigint * interval '1 microsecond'
        ORDER BY created_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED))`)
	return s
}

// notifying wraps an insert so that it also notifies the channel $8 when
// it inserted rows, once, in the same statement. It returns how many rows
// were inserted and how many notifications were sent (0 or 1).
func notifying(insert string) string {
	return `WITH ins AS (` + insert + ` RETURNING 1)
SELECT (SELECT count(*) FROM ins),
    (SELECT count(*) FROM (SELECT pg_notify($8, '') FROM ins LIMIT 1) n)`
}
func (s *Store) saveManyPostgres(ctx context.Context, recs []record) (int64, error) {
	q, h, err := s.querier(ctx)
	if err != nil {
		return 0, err
	}
	if pb, ok := s.be.(pgxBackend); ok && len(recs) >= copyMin {
		n, err := s.copyOutbox(ctx, pb, h, recs)
		if !errors.Is(err, errCopyConflict) {
			if err != nil {
				return 0, err
			}
			return n, s.notifyCopied(ctx, q, h)
		}
		// Some ID was stored already (or is twice in recs): nothing was
		// copied, so insert again skipping the duplicates.
	}
	ids := make([]string, len(recs))
	topics := make([]string, len(recs))
	names := make([]string, len(recs))
	keys := make([]string, len(recs))
	metas := make([]string, len(recs))
	payloads := make([][]byte, len(recs))
	sent := make([]time.Time, len(recs))
	for i, r := range recs {
		ids[i], topics[i], names[i], metas[i], payloads[i], sent[i] = r.id, r.topic, r.name, r.metadata, r.payload, r.sentAt
		if r.key != nil {
			keys[i] = *r.key
		}
	}
	args := []any{ids, topics, names, keys, metas, payloads, sent}
	var n int64
	switch {
	case s.cfg.PollOnly:
		n, err = q.exec(ctx, s.stmts.saveMany, args...)
	case !s.claimNotify():
		if n, err = q.exec(ctx, s.stmts.saveMany, args...); err == nil && n > 0 {
			s.throttledSave(h)
		}
	default:
		var notified int64
		err = queryRow(ctx, q, s.stmts.saveManyNotify, append(args, s.cfg.NotifyChannel), &n, &notified)
	}
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.saved(h)
	}
	return n, nil
}

// copyMin is the smallest batch that SaveMany copies (pgx stores): below
// it the insert from unnest() is as fast, and needs no savepoint.
const copyMin = 32

// errCopyConflict reports a COPY that failed on a duplicate ID.
var errCopyConflict = errors.New("copy: duplicate ID")

// outboxCopyColumns are the columns copyOutbox writes.
var outboxCopyColumns = []string{"id", "topic", "name", "partition_key", "metadata", "payload", "sent_at"}

// copyOutbox inserts recs with COPY, all or none. COPY has no ON CONFLICT:
// a duplicate ID fails the whole COPY, reported as errCopyConflict. In a
// transaction the COPY runs under a savepoint, so that its failure leaves
// the transaction usable.
func (s *Store) copyOutbox(ctx context.Context, pb pgxBackend, h *txHolder, recs []record) (int64, error) {
	src := pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := recs[i]
		return []any{r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt}, nil
	})
	table := s.cfg.identifier(s.cfg.OutboxTable)
	if h == nil {
		n, err := pb.b.CopyFrom(ctx, table, outboxCopyColumns, src)
		return n, copyError(err)
	}
	sp, err := h.pgx.Begin(ctx) // a savepoint
	if err != nil {
		return 0, err
	}
	n, err := sp.CopyFrom(ctx, table, outboxCopyColumns, src)
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return 0, fmt.Errorf("%w (rolling back to the savepoint: %w)", err, rerr)
		}
		return 0, copyError(err)
	}
	return n, sp.Commit(ctx)
}

// uniqueViolation is PostgreSQL's SQLSTATE for a unique constraint
// violation.
const uniqueViolation = "23505"

// copyError returns errCopyConflict for a unique violation of the outbox's
// primary key, and err otherwise.
func copyError(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == uniqueViolation {
		return fmt.Errorf("%w: %w", errCopyConflict, err)
	}
	return err
}

// notifyCopied wakes the relays after a COPY, which cannot NOTIFY in the
// same statement: with a NOTIFY of its own in the transaction (delivered
// at commit) when no notification went out within the interval.
func (s *Store) notifyCopied(ctx context.Context, q querier, h *txHolder) error {
	switch {
	case s.cfg.PollOnly:
	case s.claimNotify():
		if _, err := q.exec(ctx, `SELECT pg_notify($1, '')`, s.cfg.NotifyChannel); err != nil {
			return err
		}
	default:
		s.throttledSave(h)
	}
	s.saved(h)
	return nil
}

// scanLocked reads a locked claim's rows, in save order, and keeps each
// message without a key, and each keyed message whose previous unpublished
// message (prev_seq) it has none of or kept: a chain from the key's head.
// The rows it drops stay locked, untouched, until the transaction ends.
// It returns the seq of each message kept beside it.
func scanLocked(rows rows) ([]txm.Claimed, []int64, error) {
	defer rows.Close()
	var out []txm.Claimed
	var seqs []int64
	var kept map[int64]bool // keyed messages kept, by seq
	var prev sql.NullInt64
	scanner := newMessageScanner(&prev)
	for rows.Next() {
		prev = sql.NullInt64{}
		seq, msg, attempts, err := scanner.scan(rows)
		if err != nil {
			return nil, nil, err
		}
		if prev.Valid && !kept[prev.Int64] {
			continue
		}
		if msg.Metadata().PartitionKey() != "" {
			if kept == nil {
				kept = map[int64]bool{}
			}
			kept[seq] = true
		}
		out = append(out, txm.Claimed{Message: msg, Attempts: attempts})
		seqs = append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	return out, seqs, rows.Close()
}

// claimSQL returns the claim statement for limit. On PostgreSQL the limit
// is written into the statement's text, one statement per limit (the
// relay's batch size), so that its one cached generic plan knows the limit:
// a generic plan for LIMIT $1 assumes a tenth of the table and slowed the
// drain of a backlog, and planning every claim for its arguments is a
// large share of a claim's cost.
func (s *Store) claimSQL(limit int) string { return s.limited(false, limit) }

// limited returns the lease claim or, when locked, the locked claim with
// limit written into its text.
func (s *Store) limited(locked bool, limit int) string {
	key := claimKey{locked, limit}
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if q, ok := s.claimByLimit[key]; ok {
		return q
	}
	tmpl := s.stmts.claimByLimit
	if locked {
		tmpl = s.stmts.claimLocked
	}
	q := strings.Replace(tmpl, "{limit}", strconv.Itoa(limit), 1)
	// A relay claims with its batch size; a caller that varies the limit
	// gets a statement per call rather than an ever-growing cache.
	if len(s.claimByLimit) < maxClaimStatements {
		s.claimByLimit[key] = q
	}
	return q
}

// claimKey identifies a claim statement of Store.limited.
type claimKey struct {
	locked bool
	limit  int
}

// maxClaimStatements bounds the claim statements a store keeps, one per
// limit and kind.
const maxClaimStatements = 8

// save inserts a message and, unless PollOnly, NOTIFYs the relays in the
// same statement, delivered at commit, when no notification went out
// within Config.NotifyInterval; a save that skips its NOTIFY schedules one
// (Store.throttledSave).
func (postgresEngine) save(ctx context.Context, s *Store, q querier, h *txHolder, args []any) (n int64, err error) {
	switch {
	case s.cfg.PollOnly:
		return q.exec(ctx, s.stmts.save, args...)
	case !s.claimNotify():
		if n, err = q.exec(ctx, s.stmts.save, args...); err == nil && n > 0 {
			s.throttledSave(h)
		}
		return n, err
	default:
		var notified int64
		err = queryRow(ctx, q, s.stmts.saveNotify, append(args, s.cfg.NotifyChannel), &n, &notified)
		return n, err
	}
}

func (postgresEngine) saveMany(ctx context.Context, s *Store, recs []record) (int64, error) {
	return s.saveManyPostgres(ctx, recs)
}

// claim leases with one statement under the claim's advisory lock: on pgx
// outside a transaction, the lock and the claim go in one round trip.
func (postgresEngine) claim(ctx context.Context, s *Store, limit int, lease time.Duration) (out []claimedRow, err error) {
	if pb, ok := s.be.(pgxBackend); ok && holderFrom(ctx) == nil {
		err = pb.lockedQuery(ctx, s.stmts.claimLockOwn, []any{s.claimKey}, s.claimSQL(limit), []any{lease.Microseconds()},
			func(r rows) (err error) {
				out, err = scanClaimed(r)
				return err
			})
		return out, err
	}
	lock := s.stmts.claimLockOwn
	if holderFrom(ctx) != nil {
		lock = s.stmts.claimLock
	}
	_, err = s.runTx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, lock, s.claimKey); err != nil {
			return err
		}
		rows, err := q.query(ctx, s.claimSQL(limit), lease.Microseconds())
		if err != nil {
			return err
		}
		out, err = scanClaimed(rows)
		return err
	})
	return out, err
}

func (postgresEngine) claimLocked(ctx context.Context, s *Store, q querier, h *txHolder, limit int, idle time.Duration) (claimed []txm.Claimed, seqs []int64, err error) {
	stmt := s.limited(true, limit)
	var idleMs any // NULL: leave the timeout as it is
	if idle > 0 {
		idleMs = strconv.FormatInt(max(idle.Milliseconds(), 1), 10)
	}
	if h.pgx != nil && h.owner == s {
		err = pgxBackend{b: h.pgx}.lockedQuery(ctx, s.stmts.pinLocked, []any{idleMs}, stmt, nil, func(r rows) (err error) {
			claimed, seqs, err = scanLocked(r)
			return err
		})
		return claimed, seqs, err
	}
	switch {
	case h.owner == s:
		_, err = q.exec(ctx, s.stmts.pinLocked, idleMs)
	case idle > 0:
		_, err = q.exec(ctx, s.stmts.idleLocked, idleMs)
	}
	if err != nil {
		return nil, nil, err
	}
	r, err := q.query(ctx, stmt)
	if err != nil {
		return nil, nil, err
	}
	return scanLocked(r)
}

func (e postgresEngine) update(ctx context.Context, s *Store, q querier, h *txHolder, stmt string, args []any) (err error) {
	if pb, ok := s.be.(pgxBackend); ok && h == nil {
		// The update's one generic plan, pinned to index scans: no
		// planning per call, and no sequential scan kept from a plan
		// built while the table looked empty.
		_, err = pb.pinnedExec(ctx, s.stmts.pinByID, stmt, args)
	} else if h != nil && h.pgx != nil && h.owner == s && h.lockedClaim.Load() {
		// A locked claim pinned the plans of the store's own transaction
		// (pinLocked) for the rest of it: the same generic plan.
		_, err = q.exec(ctx, stmt, args...)
	} else {
		_, err = q.exec(ctx, stmt, e.planned(args)...)
	}
	return err
}

func (postgresEngine) now() (any, bool) { return nil, false }

func (postgresEngine) timeArg(t time.Time) any { return t }

func (postgresEngine) idsArg(ids []string) any { return ids }

func (postgresEngine) filterArgs(f txm.DeadLetterFilter) []any {
	var ids any
	if len(f.IDs) > 0 {
		ids = f.IDs
	}
	var limit any // NULL: no limit
	if f.Limit > 0 {
		limit = f.Limit
	}
	return []any{ids, f.Topic, limit}
}

// planned returns a statement's arguments so that PostgreSQL plans it for
// these arguments and the table as it is now. The drivers prepare
// statements, and after five executions PostgreSQL may switch to a
// generic plan, built once with the statistics of that moment: MarkPublished
// planned on a freshly migrated, analysed table kept a sequential scan
// while the table grew to 100,000 rows, and the relay fell behind.
// pgx's QueryExecModeCacheDescribe runs the statement unnamed, planned on
// each call (a small planning cost for these statements), in one round trip with
// binary parameters (QueryExecModeExec's text parameters measured slower
// with 500 IDs). The claim (claimLockOwn) and, on pgx, the updates by ID
// (pinByID) pin their plans instead.
func (postgresEngine) planned(args []any) []any {
	return append([]any{pgx.QueryExecModeCacheDescribe}, args...)
}

// undefinedTable is PostgreSQL's SQLSTATE for a missing table.
const undefinedTable = "42P01"

func (postgresEngine) noTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == undefinedTable
}

func (postgresEngine) migrationsTableSQL(cfg Config) string {
	var schema string
	if cfg.Schema != "" {
		schema = "CREATE SCHEMA IF NOT EXISTS " + quoteIdent(cfg.Schema) + ";\n"
	}
	return schema + `CREATE TABLE IF NOT EXISTS ` + cfg.qualified(cfg.MigrationsTable) + ` (
    tables     text        NOT NULL,
    version    integer     NOT NULL,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (tables, version)
);
`
}

func (postgresEngine) recordSQL(table, tables string, m migration) string {
	return fmt.Sprintf("INSERT INTO %s (tables, version, name) VALUES ('%s', %d, '%s') ON CONFLICT DO NOTHING;\n",
		table, tables, m.version, strings.ReplaceAll(m.name, "'", "''"))
}

func (postgresEngine) execMigration(ctx context.Context, q querier, text string) error {
	_, err := q.exec(ctx, text)
	return err
}

// migrate applies the versions in one transaction under a
// transaction-scoped advisory lock.
func (postgresEngine) migrate(ctx context.Context, s *Store, apply func(q querier) error) error {
	tx, err := s.be.begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.exec(ctx, s.stmts.claimLock, s.migrateKey); err != nil {
		_ = tx.rollback(context.WithoutCancel(ctx))
		return fmt.Errorf("lock: %w", err)
	}
	if err := apply(tx); err != nil {
		_ = tx.rollback(context.WithoutCancel(ctx))
		return err
	}
	return tx.commit(ctx)
}

func (postgresEngine) listen(s *Store) { s.startListener() }
