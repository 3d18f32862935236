package sqlstore

import (
	"strings"
)

// dialect is the SQL flavour of a store.
type dialect int

const (
	postgres dialect = iota
	sqlite
	mysql
)

func (d dialect) String() string {
	switch d {
	case sqlite:
		return "sqlite"
	case mysql:
		return "mysql"
	}
	return "postgres"
}

// statements holds a store's SQL text, with its table names filled in.
//
// PostgreSQL statements take the time from the database clock
// (statement_timestamp()) and durations as microseconds. SQLite runs in the
// process, so its clock is the process's: SQLite statements take the current
// time as their last parameter, in Unix microseconds like every stored time.
type statements struct {
	save       string // $1..$7 (SQLite: $8 now); PostgreSQL: exec, rows affected
	saveNotify string // PostgreSQL: $8 channel; returns (inserted, notified)
	saveMany   string // PostgreSQL: $1..$7 arrays; SQLite: built per batch
	// saveManyNotify is saveMany that also notifies $8 (PostgreSQL).
	saveManyNotify string
	claimLock      string // PostgreSQL: $1 lock key
	// pinByID goes before an update by ID in an implicit transaction of
	// the store's own (pgx): it pins the update's plan to index scans and
	// lets it run its one generic plan (PostgreSQL).
	pinByID string
	// claimLockOwn is claimLock for a transaction the store owns: it also
	// pins the claim's plan and commits it asynchronously (see
	// newStatements).
	claimLockOwn string
	claim        string // $1 limit, $2 lease µs (SQLite: $3 now)
	// claimLocked locks {limit} due messages, each the oldest unpublished
	// message of its key or without a key, without leasing them
	// (PostgreSQL; see Outbox.ClaimLocked).
	claimLocked string
	// pinLocked pins claimLocked's plan for the rest of a transaction the
	// store began, and sets its idle_in_transaction_session_timeout to $1
	// milliseconds unless $1 is NULL (PostgreSQL).
	pinLocked string
	// idleLocked sets the idle_in_transaction_session_timeout of a
	// caller's transaction to $1 milliseconds (PostgreSQL).
	idleLocked string
	// extendLocked is extend for messages locked by claimLocked in the
	// same transaction: they have no lease to renew yet (PostgreSQL).
	extendLocked string
	// claimByLimit is claim with {limit} in the place of $1 and the lease
	// as $1 (PostgreSQL; see Store.claimSQL).
	claimByLimit string
	// claimable reads whether a claim would find anything (SQLite): $1
	// limit (1), $2 now.
	claimable string
	// lockCandidates locks a claim's candidates, $1 their seqs, with SKIP
	// LOCKED and reads whether each is still available (MySQL, see
	// Store.mysqlClaim).
	lockCandidates string
	// leaseBySeq leases the messages $1 (seqs) for $2 µs (MySQL).
	leaseBySeq string
	published  string // $1 ids (SQLite: $2 now); a DELETE unless Config.KeepPublished
	// publishedBySeq is published for pending messages by their seqs, $1:
	// those a claim of this store returned (PostgreSQL).
	publishedBySeq string
	extend         string // $1 ids, $2 lease µs (SQLite: $3 now)
	release        string // $1 ids
	failed         string // $1 id, $2 retry µs, $3 cause (SQLite: $4 now)
	dead           string // $1 id, $2 cause (SQLite: $3 now)
	dlq            string // $1 ids or NULL, $2 topic or '', $3 limit
	replay         string // $1 ids or NULL, $2 topic or '', $3 limit
	stats          string
	purge          string // $1 age µs, $2 limit (SQLite: $3 now)
	inboxSave      string // $1..$8 (SQLite: $9 now)
	inboxPurge     string // $1 group, $2 age µs, $3 limit (SQLite: $4 now)
}

// The columns a message is read from, in the order scanMessage expects.
const messageColumns = "seq, id, topic, name, metadata, payload, sent_at, attempts"

// available is true of a pending message that is due and not leased at the
// time {now}.
const available = `state = 'pending'
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= {now})
      AND (o.claimed_until IS NULL OR o.claimed_until <= {now})`

// holdsKey is true of a message that holds back the later messages of its
// partition key at the time {now}: leased, waiting for a retry, or dead. Its
// first two lines repeat the predicate of the held_idx index, so that both
// databases use the index.
const holdsKey = `h.state <> 'published'
            AND (h.state = 'dead' OR h.claimed_until IS NOT NULL OR h.next_attempt_at IS NOT NULL)
            AND (h.state = 'dead' OR h.claimed_until > {now} OR h.next_attempt_at > {now})`

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

func newStatements(d dialect, cfg Config) statements {
	outbox, inbox := cfg.qualified(cfg.OutboxTable), cfg.qualified(cfg.InboxTable)
	if d == mysql {
		return newMySQLStatements(cfg)
	}
	var s statements
	if d == postgres {
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
		// unpublished_key_idx), and Outbox.ClaimLocked keeps a keyed
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
		s.stats = f(`SELECT topic, sum(pending)::bigint, sum(dead)::bigint, min(oldest) FROM (
        SELECT topic, count(*) AS pending, 0 AS dead, min(created_at) AS oldest
        FROM {outbox} WHERE state = 'pending' GROUP BY topic
    UNION ALL
        SELECT topic, 0, count(*), NULL
        FROM {outbox} WHERE state = 'dead' GROUP BY topic
    ) s
    GROUP BY topic`)
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
	s.stats = f(`SELECT topic, sum(pending), sum(dead), min(oldest) FROM (
        SELECT topic, count(*) AS pending, 0 AS dead, min(created_at) AS oldest
        FROM {outbox} WHERE state = 'pending' GROUP BY topic
    UNION ALL
        SELECT topic, 0, count(*), NULL
        FROM {outbox} WHERE state = 'dead' GROUP BY topic
    )
    GROUP BY topic`, "")
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

// notifying wraps an insert so that it also notifies the channel $8 when
// it inserted rows, once, in the same statement. It returns how many rows
// were inserted and how many notifications were sent (0 or 1).
func notifying(insert string) string {
	return `WITH ins AS (` + insert + ` RETURNING 1)
SELECT (SELECT count(*) FROM ins),
    (SELECT count(*) FROM (SELECT pg_notify($8, '') FROM ins LIMIT 1) n)`
}

// sqliteSaveMany returns the multi-row insert of n messages, with eight
// anonymous parameters per message: the seven of statements.save, then the
// time. (Numbered or named parameters make SQLite's parser look each one up
// in a list, quadratic in their number, which a batch of 1000 felt.)
func sqliteSaveMany(cfg Config, n int) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(cfg.qualified(cfg.OutboxTable))
	b.WriteString(" (id, topic, name, partition_key, metadata, payload, sent_at, created_at) VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return b.String()
}
