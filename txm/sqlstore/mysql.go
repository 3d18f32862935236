package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transmanager/transmanager/txm"
)

// This file is the MySQL and MariaDB engine: its SQL text, its claim, its
// migration lock and the binding of its parameters. The database needs
// FOR UPDATE SKIP LOCKED: MySQL 8.0.1 or later, MariaDB 10.6 or later.
//
// MySQL statements are written, as PostgreSQL's, with numbered parameters
// ($1, $2 ...), so that every database takes the same arguments in the same
// order; mysqlBind turns them into the driver's ? placeholders, repeating
// an argument that a statement uses twice, and writes a list argument
// ([]string or []int64) as one placeholder per element. Times come from the
// database's clock in UTC (UTC_TIMESTAMP(6)) and are stored in DATETIME(6)
// columns as UTC; durations are microseconds.

// mysqlNow is the database clock in UTC, to the microsecond.
const mysqlNow = "UTC_TIMESTAMP(6)"

// mysqlAvailable is available (see statements.go) for MySQL, on the row o.
const mysqlAvailable = `o.state = 'pending'
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= {now})
      AND (o.claimed_until IS NULL OR o.claimed_until <= {now})`

// mysqlHolder is true when a message holds back the key of the row o
// before it, read from claim_idx: a pending message of the key
// (published_at is NULL until a message is published) that holdsKey, or
// a dead one. The two states are asked apart so that each lookup is by
// state and key, the first two columns of claim_idx: with state IN (...),
// MariaDB reads the range of the states alone, every pending message, for
// each row o.
const mysqlHolder = `(EXISTS (
        SELECT 1 FROM {outbox} h FORCE INDEX ({claim_idx})
        WHERE h.state = 'pending' AND h.held_key = o.partition_key
            AND h.published_at IS NULL AND h.seq < o.seq
            AND ` + holdsKey + `)
      OR EXISTS (
        SELECT 1 FROM {outbox} h FORCE INDEX ({claim_idx})
        WHERE h.state = 'dead' AND h.held_key = o.partition_key
            AND h.published_at IS NULL AND h.seq < o.seq))`

// mysqlCandidatesSQL selects available messages after the seq $2 that come
// before the first message holding their key, as sqliteCandidates does,
// with their keys, and outside the ranges of seqs and keys that mysqlSkip
// writes in place of {skip} and, in the first part, the keys held that
// mysqlUnheld writes in place of {unheld}: up to $1 of each of its two
// parts, in save order within
// each, which Store.mysqlCandidates merges into the first $1. It reads
// without locking; Store.mysqlPick locks them afterwards. claim_idx has the
// pending messages that are ready to publish (held_key is NULL) in save
// order with their keys, which the first part reads from the index alone,
// and apart, by key, the others, of which the second part takes those
// whose lease ran out or whose retry or time is due. The statement reads
// both, whatever the statistics say (FORCE INDEX): a scan of the primary
// key reads every published message kept.
const mysqlCandidatesSQL = `(SELECT o.seq, o.partition_key
    FROM {outbox} o FORCE INDEX ({claim_idx})
    WHERE o.state = 'pending' AND o.held_key IS NULL AND o.published_at IS NULL AND o.seq > $2{skip}{unheld}
      AND (o.partition_key IS NULL OR NOT ` + mysqlHolder + `)
    ORDER BY o.seq
    LIMIT $1)
UNION ALL
(SELECT o.seq, o.partition_key
    FROM {outbox} o FORCE INDEX ({claim_idx})
    WHERE o.state = 'pending' AND o.held_key IS NOT NULL AND o.published_at IS NULL AND o.seq > $2{skip}
      AND ` + mysqlAvailable + `
      AND (o.partition_key IS NULL OR NOT ` + mysqlHolder + `)
    ORDER BY o.seq
    LIMIT $1)`

// mysqlEngine is the engine of MySQL and MariaDB stores.
type mysqlEngine struct {
	// own holds the messages that locked claims of the store's own open
	// transactions hold (see mysqlOwnLocks).
	own *mysqlOwnLocks
	// keyed is whether the store's last claim read candidates with
	// partition keys: only then does the next one read the keys held
	// (Store.mysqlHeldKeys), a statement that a backlog without keys
	// has no use for.
	keyed *atomic.Bool
}

var _ lockingEngine = mysqlEngine{}

// mysqlOwnLocks is the set of messages that locked claims in transactions
// of the store's own (Store.InTx) hold until those transactions end, with
// their partition keys. A claim reads its candidates around them
// (mysqlSkip) and drops those it reads anyway before it locks: a relay
// that claims its next batch while it publishes one (BatchesInFlight)
// would otherwise read the batch in flight as its first candidates, fail
// to lock any of them, and read again. Their keys stay blocked for the
// claim, as they would be if it had failed to lock them.
type mysqlOwnLocks struct {
	mu   sync.Mutex
	keys map[int64]sql.NullString
}

// add records rows, locked in the transaction of h until it ends.
func (l *mysqlOwnLocks) add(h *txHolder, rows []claimedRow) {
	if len(rows) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[int64]sql.NullString{}
	}
	seqs := make([]int64, len(rows))
	for i, r := range rows {
		key := r.Message.Metadata().PartitionKey()
		l.keys[r.seq] = sql.NullString{String: key, Valid: key != ""}
		seqs[i] = r.seq
	}
	h.onEnd(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, seq := range seqs {
			delete(l.keys, seq)
		}
	})
}

// snapshot returns the seqs held now and their keys; nil maps for none.
func (l *mysqlOwnLocks) snapshot() (map[int64]bool, map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.keys) == 0 {
		return nil, nil
	}
	seqs := make(map[int64]bool, len(l.keys))
	keys := map[string]bool{}
	for seq, key := range l.keys {
		seqs[seq] = true
		if key.Valid {
			keys[key.String] = true
		}
	}
	return seqs, keys
}

// newMySQL returns a store on a database/sql handle of the MySQL driver
// (github.com/go-sql-driver/mysql).
func newMySQL(db *sql.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errMySQLDB
	}
	s, err := newStore(mysqlEngine{own: &mysqlOwnLocks{}, keyed: &atomic.Bool{}}, cfg)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.be = newMySQLBackend(db, newMySQLPrepared(s.closeCtx, db, s.stmts.save, s.stmts.inboxSave))
	return s, nil
}

func (mysqlEngine) name() string { return "mysql" }

// quote quotes with backticks (MySQL without ANSI_QUOTES).
func (mysqlEngine) quote(ident string) string { return "`" + ident + "`" }

func (mysqlEngine) checkConfig(Config) error { return nil }

func (mysqlEngine) statements(cfg Config) statements {
	r := strings.NewReplacer(
		"{outbox}", cfg.qualified(cfg.OutboxTable), "{inbox}", cfg.qualified(cfg.InboxTable),
		"{now}", mysqlNow,
		"{claim_idx}", cfg.quote(cfg.OutboxTable+"_claim_idx"), "{id_key}", cfg.quote(cfg.OutboxTable+"_id_key"),
	)
	f := r.Replace
	var s statements
	// ON DUPLICATE KEY UPDATE of a column to itself changes nothing, so a
	// duplicate ID counts 0 rows affected (without the CLIENT_FOUND_ROWS
	// flag, see mysql.Open) and, unlike INSERT IGNORE, turns no other error
	// into a warning.
	s.save = f(`INSERT INTO {outbox} (id, topic, name, partition_key, metadata, payload, sent_at, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, {now})
    ON DUPLICATE KEY UPDATE id = id`)
	s.claim = f(mysqlCandidatesSQL)
	// heldKeys reads the keys held now (see holdsKey), each with the seq
	// of its first holder, by pending messages and by dead ones, from
	// claim_idx in the order of its first two columns, where a key's
	// first holder is its first entry.
	s.heldKeys = f(`(SELECT h.held_key, min(h.seq) FROM {outbox} h FORCE INDEX ({claim_idx})
    WHERE h.state = 'pending' AND h.held_key > '' AND h.published_at IS NULL AND ` + holdsKey + `
    GROUP BY h.held_key)
UNION ALL
(SELECT h.held_key, min(h.seq) FROM {outbox} h FORCE INDEX ({claim_idx})
    WHERE h.state = 'dead' AND h.held_key > '' AND h.published_at IS NULL
    GROUP BY h.held_key)
LIMIT $1`)
	// lockReady is the locked claim of a backlog without partition keys
	// at READ COMMITTED (Store.mysqlPickReady): it locks, in one read of
	// the primary key from the first message ready to publish after the
	// seq $2, up to $1 ready messages in save order, passing over those
	// another transaction holds and outside the runs of seqs that mysqlSkip
	// writes in place of {skip}, and reads with each whether it has no key.
	// At READ COMMITTED a locking read of a range takes no gap locks, and a
	// row it reads but that the WHERE turns down it does not keep locked.
	s.lockReady = f(`SELECT o.seq, o.id, o.topic, o.name, o.metadata, o.payload, o.sent_at, o.attempts,
        o.partition_key IS NULL
    FROM {outbox} o FORCE INDEX (PRIMARY)
    WHERE o.seq >= (SELECT coalesce(min(r.seq), 0) FROM {outbox} r FORCE INDEX ({claim_idx})
            WHERE r.state = 'pending' AND r.held_key IS NULL AND r.published_at IS NULL AND r.seq > $2)
      AND o.state = 'pending' AND o.held_key IS NULL AND o.published_at IS NULL AND o.seq > $2{skip}
    ORDER BY o.seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED`)
	// dueHeld reads whether a pending message that holds its key is
	// available again: its lease ran out, or its retry or its time is due
	// (the second part of mysqlCandidatesSQL, from claim_idx).
	s.dueHeld = f(`SELECT 1 FROM {outbox} o FORCE INDEX ({claim_idx})
    WHERE o.state = 'pending' AND o.held_key IS NOT NULL AND o.published_at IS NULL AND ` + mysqlAvailable + `
    LIMIT 1`)
	// lockCandidates locks the candidates (a list of seqs) where it finds them,
	// passing over the rows that another transaction holds, and reads each
	// one as it is now, with whether it is still available.
	s.lockCandidates = f(`SELECT o.seq, o.id, o.topic, o.name, o.metadata, o.payload, o.sent_at, o.attempts,
        (` + mysqlAvailable + `) AS available
    FROM {outbox} o
    WHERE o.seq IN ($1)
    ORDER BY o.seq
    FOR UPDATE SKIP LOCKED`)
	// lockRun locks a run of candidates, $1 to $2, $3 of them, by range,
	// whose next row (the run's last candidate) the claim holds already
	// (see Store.mysqlLock).
	s.lockRun = f(`SELECT o.seq, o.id, o.topic, o.name, o.metadata, o.payload, o.sent_at, o.attempts,
        (` + mysqlAvailable + `) AS available
    FROM {outbox} o FORCE INDEX (PRIMARY)
    WHERE o.seq BETWEEN $1 AND $2
    ORDER BY o.seq LIMIT $3
    FOR UPDATE SKIP LOCKED`)
	// The statements that change messages by seq or ID name the index
	// (FORCE INDEX): with stale statistics the optimizer may read claim_idx
	// instead, whose range scan locks the next pending message too, which
	// the batch a relay claimed ahead holds, and the relay's own two
	// transactions then wait for each other.
	s.leaseBySeq = f(`UPDATE {outbox} FORCE INDEX (PRIMARY) SET claimed_until = {now} + INTERVAL $2 MICROSECOND WHERE seq IN ($1)`)
	s.published = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET state = 'published', published_at = {now}, claimed_until = NULL,
        dead_at = NULL
    WHERE id IN ($1) AND state <> 'published'`)
	// seq is the clustered primary key: the messages a claim of this store
	// returned are found by it.
	s.publishedBySeq = f(`UPDATE {outbox} FORCE INDEX (PRIMARY) SET state = 'published', published_at = {now}, claimed_until = NULL
    WHERE seq IN ($1) AND state = 'pending'`)
	// A run of consecutive seqs that a locked claim of the transaction
	// holds, every row of it there, pending and the claim's (see
	// Store.markLocked), so none is filtered out, read in order with a
	// LIMIT of its length, so that the scan ends at the run's last row: a
	// range read on to the row after it would lock that row too, or wait
	// for the claim ahead that holds it, and read down from the last row,
	// InnoDB locks the gap after it, which holds up every save while the
	// run ends the table.
	s.publishedRun = f(`UPDATE {outbox} FORCE INDEX (PRIMARY) SET state = 'published', published_at = {now}, claimed_until = NULL
    WHERE seq BETWEEN $1 AND $2
    ORDER BY seq LIMIT $3`)
	if !cfg.KeepPublished {
		// A single-table DELETE takes no index hint; this form does.
		s.published = f(`DELETE o FROM {outbox} o FORCE INDEX ({id_key}) WHERE o.id IN ($1) AND o.state <> 'published'`)
		s.publishedBySeq = f(`DELETE o FROM {outbox} o FORCE INDEX (PRIMARY) WHERE o.seq IN ($1) AND o.state = 'pending'`)
		// The multi-table form takes no LIMIT: this one has no hint, and
		// a range of the primary key is the plan (TestMySQLMarkRunPlan).
		s.publishedRun = f(`DELETE FROM {outbox} WHERE seq BETWEEN $1 AND $2 ORDER BY seq LIMIT $3`)
	}
	s.extendLocked = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET claimed_until = {now} + INTERVAL $2 MICROSECOND
    WHERE id IN ($1) AND state = 'pending'`)
	s.extend = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET claimed_until = {now} + INTERVAL $2 MICROSECOND
    WHERE id IN ($1) AND state = 'pending' AND claimed_until IS NOT NULL`)
	s.release = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET claimed_until = NULL
    WHERE id IN ($1) AND state = 'pending' AND claimed_until IS NOT NULL`)
	s.failed = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET attempts = attempts + 1, last_error = $3, claimed_until = NULL,
        next_attempt_at = {now} + INTERVAL $2 MICROSECOND
    WHERE id = $1 AND state = 'pending'`)
	s.dead = f(`UPDATE {outbox} FORCE INDEX ({id_key}) SET state = 'dead', attempts = attempts + 1, last_error = $2,
        claimed_until = NULL, dead_at = {now}
    WHERE id = $1 AND state = 'pending'`)
	// The filter's arguments (mysqlFilterArgs): $1 the number of IDs, $2
	// the IDs, $3 the topic or '', $4 the limit. claim_idx has the dead
	// letters by key: they are sorted into save order, few as they are.
	const deadFilter = `state = 'dead'
      AND ($1 = 0 OR id IN ($2))
      AND ($3 = '' OR topic = $3)
    ORDER BY seq
    LIMIT $4`
	s.dlq = f(`SELECT ` + messageColumns + `, coalesce(last_error, ''), dead_at
    FROM {outbox}
    WHERE ` + deadFilter)
	s.replay = f(`UPDATE {outbox} SET state = 'pending', attempts = 0, next_attempt_at = NULL,
        claimed_until = NULL, dead_at = NULL, last_error = NULL
    WHERE ` + deadFilter)
	// A scheduled message whose time has not come is counted apart; one
	// whose time has come is pending since then (or since its save, if
	// that was later).
	s.stats = f(`SELECT topic, CAST(sum(pending) AS SIGNED), CAST(sum(scheduled) AS SIGNED), CAST(sum(dead) AS SIGNED),
        min(oldest), min(next_due) FROM (
        SELECT topic, sum(NOT sched) AS pending, sum(sched) AS scheduled, 0 AS dead,
            min(CASE WHEN sched THEN NULL
                WHEN attempts = 0 AND next_attempt_at IS NOT NULL THEN GREATEST(created_at, next_attempt_at)
                ELSE created_at END) AS oldest,
            min(CASE WHEN sched THEN next_attempt_at END) AS next_due
        FROM (SELECT topic, attempts, created_at, next_attempt_at,
                coalesce(attempts = 0 AND next_attempt_at > {now}, 0) AS sched
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
	s.reschedule = f(`UPDATE {outbox} SET next_attempt_at = $2, metadata = $3 WHERE id = $1 AND state = 'pending'`)
	// A pending message with a next attempt time holds its key (held_key
	// is not NULL): so said, this reads those in claim_idx, not every
	// pending message, which a relay that found its keys blocked by its
	// own batch in flight would read at each claim.
	s.nextDue = f(`SELECT coalesce(TIMESTAMPDIFF(MICROSECOND, {now}, min(next_attempt_at)), 0)
    FROM {outbox} FORCE INDEX ({claim_idx})
    WHERE state = 'pending' AND held_key IS NOT NULL AND next_attempt_at > {now}`)
	// A published message holds no key (held_key IS NULL): so said, and
	// ordered as claim_idx is, the oldest published messages are read from
	// it with nothing to sort.
	s.purge = f(`DELETE FROM {outbox}
    WHERE state = 'published' AND held_key IS NULL AND published_at < {now} - INTERVAL $1 MICROSECOND
    ORDER BY state, held_key, published_at
    LIMIT $2`)
	s.inboxSave = f(`INSERT INTO {inbox} (consumer_group, id, topic, name, metadata, payload, sent_at, received_at, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {now})
    ON DUPLICATE KEY UPDATE id = id`)
	s.inboxPurge = f(`DELETE FROM {inbox}
    WHERE consumer_group = $1 AND created_at < {now} - INTERVAL $2 MICROSECOND
    ORDER BY created_at
    LIMIT $3`)
	return s
}

// mysqlSaveMany returns the multi-row insert of n messages, with the seven
// parameters of statements.save per message.
func mysqlSaveMany(cfg Config, n int) string {
	return multiRowInsert(cfg, n, "(?, ?, ?, ?, ?, ?, ?, "+mysqlNow+")", "ON DUPLICATE KEY UPDATE id = id")
}

// mysqlBatch is how many messages one MySQL insert carries.
const mysqlBatch = 500

// claim leases up to limit messages (see mysqlPick) in a transaction: the
// one ctx carries, or one of its own.
func (mysqlEngine) claim(ctx context.Context, s *Store, limit int, lease time.Duration) ([]claimedRow, error) {
	var out []claimedRow
	err := mysqlRetry(ctx, holderFrom(ctx) == nil, func() error {
		_, err := s.runTx(ctx, func(q querier) error {
			var err error
			if out, err = s.mysqlPick(ctx, q, limit); err != nil || len(out) == 0 {
				return err
			}
			seqs := make([]int64, len(out))
			for i, r := range out {
				seqs[i] = r.seq
			}
			return mysqlChunks([]any{seqs, lease.Microseconds()}, func(args []any) error {
				_, err := q.exec(ctx, s.stmts.leaseBySeq, args...)
				return err
			})
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// mysqlRetries is how many times a statement or transaction of the store's
// own runs again after InnoDB chose it as a deadlock's victim.
const mysqlRetries = 3

// mysqlRetry runs fn, and again, up to mysqlRetries times, while it fails
// on a deadlock (ER_LOCK_DEADLOCK, 1213) and own is true: InnoDB rolled
// the whole transaction back, which can be run again only when it is the
// store's own. Concurrent claims and marks lock rows of the same indexes
// in different orders, which InnoDB resolves this way.
func mysqlRetry(ctx context.Context, own bool, fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		if err == nil || !own || i == mysqlRetries || !strings.Contains(err.Error(), "Error 1213") || ctx.Err() != nil {
			return err
		}
	}
}

// mysqlPick locks, in the transaction of q, up to limit messages that a
// claim may take, and returns them in save order. It reads candidates
// without locking, locks them with SKIP LOCKED, and keeps, in save order,
// each one it locked that is still available, except a keyed message after
// one of its key that it could not lock or that is no longer available
// (another claim holds it, or it failed since): a key is never handed out
// past a message the claim did not get. When it could lock none of a
// window of candidates (another claim, such as the batch a relay claimed
// ahead, holds them all), it reads the next window, after the last
// candidate, until it locks some or runs out. A lease claim leases what it
// returns; a locked claim (LockingOutbox.ClaimLocked) keeps the locks
// until its transaction ends.
//
// The candidates are read apart from the lock, and locked by primary key,
// because InnoDB's locking read of a range in REPEATABLE READ also locks
// the gaps between the rows it scans: a SELECT ... ORDER BY seq LIMIT n FOR
// UPDATE would make every save wait for the claim's transaction to end.
func (s *Store) mysqlPick(ctx context.Context, q querier, limit int) ([]claimedRow, error) {
	eng := s.eng.(mysqlEngine)
	own, blocked := eng.own.snapshot()
	var held []mysqlHeldGroup
	if eng.keyed.Load() {
		var err error
		if held, err = s.mysqlHeldKeys(ctx, q); err != nil {
			return nil, err
		}
	}
	keyed := len(held) > 0 || len(blocked) > 0
	defer func() { eng.keyed.Store(keyed) }()
	var after int64
	for {
		// The messages held by the store's own transactions are left
		// out by the statement where they make runs of seqs, and the
		// messages of keys blocked already (mysqlSkip); those it reads
		// anyway are dropped here.
		stmt, skip, covered := mysqlSkip(s.stmts.claim, own, blocked)
		stmt, skip = mysqlUnheld(stmt, skip, held)
		read := limit + len(own) - covered
		all, err := s.mysqlCandidates(ctx, q, stmt, read, after, skip)
		if err != nil || len(all) == 0 {
			return nil, err
		}
		keyed = keyed || slices.ContainsFunc(all, func(c mysqlCandidate) bool { return c.key.Valid })
		// The first limit candidates not held by the store's own
		// transactions, up to the seq last.
		cands := make([]mysqlCandidate, 0, min(len(all), limit))
		var last int64
		more := len(all) == read
		for _, c := range all {
			if len(cands) == limit {
				more = true
				break
			}
			if last = c.seq; !own[c.seq] {
				cands = append(cands, c)
			}
		}
		// A message of a key blocked already would be dropped: it is not
		// locked, so that the claim holds no row it does not return.
		try := make([]mysqlCandidate, 0, len(cands))
		for _, c := range cands {
			if !c.key.Valid || !blocked[c.key.String] {
				try = append(try, c)
			}
		}
		var locked map[int64]claimedRow
		if len(try) > 0 {
			if locked, err = s.mysqlLock(ctx, q, try); err != nil {
				return nil, err
			}
		}
		out := make([]claimedRow, 0, len(locked))
		for _, c := range cands {
			r, got := locked[c.seq]
			if c.key.Valid {
				if blocked[c.key.String] {
					continue
				}
				if !got {
					if blocked == nil {
						blocked = map[string]bool{}
					}
					blocked[c.key.String] = true
					continue
				}
			} else if !got {
				continue
			}
			out = append(out, r)
		}
		if len(out) > 0 || !more {
			return out, nil
		}
		after = last
	}
}

// mysqlPickReady is the locked claim of a transaction at READ COMMITTED
// that the store began (LockingOutbox.InTx, as the relay runs it) while
// the backlog has no partition keys and no message waits to be taken
// again: one locking read (lockReady) instead of mysqlPick's read of
// candidates and locks of them, which at REPEATABLE READ would lock the
// gaps between the rows read. It returns ok false, having returned
// nothing, when it cannot answer for the claim: the store's last claim
// read keys (the engine's keyed), a transaction of the store holds keyed
// messages, a held message is due again (dueHeld), or the read locked a
// keyed message, whose key's earlier messages it may have passed over.
// mysqlPick then claims in the same transaction; what the read locked and
// mysqlPick does not return stays locked until the transaction ends, as
// it does once, when keys appear in a backlog without them.
func (s *Store) mysqlPickReady(ctx context.Context, q querier, limit int) (_ []claimedRow, ok bool, _ error) {
	eng := s.eng.(mysqlEngine)
	own, blocked := eng.own.snapshot()
	if eng.keyed.Load() || len(blocked) > 0 {
		return nil, false, nil
	}
	due, err := q.query(ctx, s.stmts.dueHeld)
	if err != nil {
		return nil, false, err
	}
	found := due.Next()
	if err := due.Close(); err != nil || found {
		return nil, false, err
	}
	stmt, skip, _ := mysqlSkip(s.stmts.lockReady, own, nil)
	rows, err := q.query(ctx, stmt, append([]any{limit, 0}, skip...)...)
	if err != nil {
		return nil, false, err
	}
	var unkeyed bool
	scanner := newTextMessageScanner(dbBool{&unkeyed})
	out := make([]claimedRow, 0, limit)
	all := true
	for rows.Next() {
		unkeyed = false
		seq, msg, attempts, err := scanner.scan(rows)
		if err != nil {
			_ = rows.Close()
			return nil, false, err
		}
		all = all && unkeyed
		out = append(out, claimedRow{seq: seq, Claimed: txm.Claimed{Message: msg, Attempts: attempts}})
	}
	if err := rows.Close(); err != nil {
		return nil, false, err
	}
	if !all {
		eng.keyed.Store(true)
		return nil, false, nil
	}
	return out, true, nil
}

// mysqlSkipRuns is how many runs of seqs the candidates statement leaves
// out at most.
const mysqlSkipRuns = 4

// mysqlSkip returns stmt (mysqlCandidatesSQL) with {skip} written as
// conditions that leave out the longest runs of consecutive seqs in own,
// up to mysqlSkipRuns of them, their bounds as the arguments from $3 on,
// and the messages of the keys in blocked, up to mysqlMaxList of them, as
// the list argument after those; it also returns how many seqs of own the
// runs cover. A relay's batch in flight is one run or a few: a list of its
// seqs in a NOT IN would be read by MariaDB, from 1000 values on, as a
// table of its own. Its keys are blocked while it is in flight: when it
// spans every key of the backlog, as it does with few keys, the statement
// reads past all their messages in the index instead of returning them,
// page after page, for the caller to drop.
func mysqlSkip(stmt string, own map[int64]bool, blocked map[string]bool) (string, []any, int) {
	seqs := slices.Sorted(maps.Keys(own))
	type run struct{ lo, hi int64 }
	var runs []run
	for _, seq := range seqs {
		if n := len(runs); n > 0 && runs[n-1].hi == seq-1 {
			runs[n-1].hi = seq
		} else {
			runs = append(runs, run{seq, seq})
		}
	}
	slices.SortStableFunc(runs, func(a, b run) int { return cmp.Compare(b.hi-b.lo, a.hi-a.lo) })
	runs = runs[:min(len(runs), mysqlSkipRuns)]
	var cond strings.Builder
	args := make([]any, 0, 2*len(runs))
	covered := 0
	for i, r := range runs {
		fmt.Fprintf(&cond, " AND o.seq NOT BETWEEN $%d AND $%d", 3+2*i, 4+2*i)
		args = append(args, r.lo, r.hi)
		covered += int(r.hi - r.lo + 1)
	}
	if len(blocked) > 0 {
		keys := slices.Sorted(maps.Keys(blocked))
		keys = keys[:min(len(keys), mysqlMaxList)]
		fmt.Fprintf(&cond, " AND (o.partition_key IS NULL OR o.partition_key NOT IN ($%d))", 3+len(args))
		args = append(args, keys)
	}
	return strings.ReplaceAll(stmt, "{skip}", cond.String()), args, covered
}

// mysqlHeldGroups is how many groups of keys held a claim's read of
// candidates leaves out at most (see mysqlUnheld).
const mysqlHeldGroups = 4

// mysqlHeldGroup is keys held, each first held at the seq last or before.
type mysqlHeldGroup struct {
	keys []string
	last int64
}

// mysqlHeldKeys reads the keys held now, up to mysqlMaxList of them, in
// groups (see mysqlUnheld).
func (s *Store) mysqlHeldKeys(ctx context.Context, q querier) ([]mysqlHeldGroup, error) {
	rows, err := q.query(ctx, s.stmts.heldKeys, mysqlMaxList)
	if err != nil {
		return nil, err
	}
	first := map[string]int64{}
	for rows.Next() {
		var k string
		var seq int64
		if err := rows.Scan(&k, &seq); err != nil {
			_ = rows.Close()
			return nil, err
		}
		if f, ok := first[k]; !ok || seq < f {
			first[k] = seq
		}
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	return mysqlGroupHeld(first), nil
}

// mysqlGroupHeld splits the keys held, by the seq at which each is first
// held, into up to mysqlHeldGroups groups at the widest gaps between those
// seqs, so that a key first held late, a retry at the end of the backlog,
// leaves the others their own bound.
func mysqlGroupHeld(first map[string]int64) []mysqlHeldGroup {
	if len(first) == 0 {
		return nil
	}
	keys := slices.SortedFunc(maps.Keys(first), func(a, b string) int {
		return cmp.Or(cmp.Compare(first[a], first[b]), cmp.Compare(a, b))
	})
	// The ends of the groups: after the widest gaps, and the last key.
	gaps := make([]int, 0, len(keys)-1)
	for i := range len(keys) - 1 {
		gaps = append(gaps, i)
	}
	slices.SortStableFunc(gaps, func(a, b int) int {
		return cmp.Compare(first[keys[b+1]]-first[keys[b]], first[keys[a+1]]-first[keys[a]])
	})
	ends := append(gaps[:min(len(gaps), mysqlHeldGroups-1)], len(keys)-1)
	slices.Sort(ends)
	groups := make([]mysqlHeldGroup, 0, len(ends))
	lo := 0
	for _, end := range ends {
		g := mysqlHeldGroup{keys: slices.Sorted(slices.Values(keys[lo : end+1])), last: first[keys[end]]}
		groups = append(groups, g)
		lo = end + 1
	}
	return groups
}

// mysqlUnheld returns stmt with {unheld} written as conditions that leave
// out, for each group of keys held, the messages of its keys after the
// seq last of the group, with those as the arguments after args. Each of
// those messages comes after its key's first holder: the lookup of
// holders (mysqlHolder) passes over them too, but at the cost of two
// lookups in the index for each message read, where this is a look-up in a
// list. A relay whose batches in flight lease every key of the backlog
// read the whole backlog so, at each claim, to return nothing. It applies
// to the messages ready to publish (the first part of mysqlCandidatesSQL);
// the held ones are few.
func mysqlUnheld(stmt string, args []any, groups []mysqlHeldGroup) (string, []any) {
	var cond strings.Builder
	for _, g := range groups {
		fmt.Fprintf(&cond, " AND (o.partition_key IS NULL OR o.seq <= $%d OR o.partition_key NOT IN ($%d))", 3+len(args), 4+len(args))
		args = append(args, g.last, g.keys)
	}
	return strings.ReplaceAll(stmt, "{unheld}", cond.String()), args
}

// mysqlCandidate is a message that a claim may take, as read without
// locking.
type mysqlCandidate struct {
	seq int64
	key sql.NullString
}

// mysqlCandidates reads the first limit candidates after the seq after,
// in save order.
func (s *Store) mysqlCandidates(ctx context.Context, q querier, stmt string, limit int, after int64, skip []any) ([]mysqlCandidate, error) {
	rows, err := q.query(ctx, stmt, append([]any{limit, after}, skip...)...)
	if err != nil {
		return nil, err
	}
	cands := make([]mysqlCandidate, 0, limit)
	var (
		seq dbInt
		key sql.NullString
	)
	for rows.Next() {
		if err := rows.Scan(&seq, &key); err != nil {
			_ = rows.Close()
			return nil, err
		}
		cands = append(cands, mysqlCandidate{seq: seq.n, key: key})
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	// The two parts come one after the other: merged here, since an ORDER
	// BY of the whole UNION would make MariaDB write them to a temporary
	// table and sort it.
	slices.SortFunc(cands, func(a, b mysqlCandidate) int { return cmp.Compare(a.seq, b.seq) })
	return cands[:min(len(cands), limit)], nil
}

// mysqlLock locks the candidates that no other transaction holds and
// returns, by seq, those still available. It locks a run of at least
// minRun consecutive candidates by its range, which InnoDB reads at a
// fraction of the cost of as many seqs in a list, once it holds the run's
// last one, locked by list with the other candidates: a locking read of a
// range in REPEATABLE READ reads on past a row it skips, to the next row
// it can lock, which may be any later message or the end of the table,
// whose lock holds up every save; that row is then one the claim holds.
// A run whose last candidate it could not lock is locked by list.
func (s *Store) mysqlLock(ctx context.Context, q querier, cands []mysqlCandidate) (map[int64]claimedRow, error) {
	seqs := make([]int64, len(cands))
	for i, c := range cands {
		seqs[i] = c.seq
	}
	runs, list := seqRuns(seqs)
	for _, r := range runs {
		list = append(list, r.last)
	}
	slices.Sort(list)
	locked := make(map[int64]claimedRow, len(cands))
	held := make(map[int64]bool, len(list))
	var ok bool
	scanner := newTextMessageScanner(dbBool{&ok})
	read := func(stmt string, args []any) error {
		rows, err := q.query(ctx, stmt, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			ok = false
			seq, msg, attempts, err := scanner.scan(rows)
			if err != nil {
				_ = rows.Close()
				return err
			}
			held[seq] = true
			if ok {
				locked[seq] = claimedRow{seq: seq, Claimed: txm.Claimed{Message: msg, Attempts: attempts}}
			}
		}
		return rows.Close()
	}
	byList := func(seqs []int64) error {
		return mysqlChunks([]any{seqs}, func(args []any) error { return read(s.stmts.lockCandidates, args) })
	}
	if err := byList(list); err != nil {
		return nil, err
	}
	var rest []int64
	for _, r := range runs {
		if !held[r.last] {
			for seq := r.first; seq < r.last; seq++ {
				rest = append(rest, seq)
			}
			continue
		}
		if err := read(s.stmts.lockRun, []any{r.first, r.last - 1, r.len() - 1}); err != nil {
			return nil, err
		}
	}
	if len(rest) > 0 {
		if err := byList(rest); err != nil {
			return nil, err
		}
	}
	return locked, nil
}

// mysqlIdle makes MySQL end the session of the transaction q runs in, and
// so the transaction, when it waits longer than idle for its next
// statement: MySQL has no timeout for an idle transaction, so it sets the
// session's wait_timeout, in whole seconds, rounded up. A transaction that
// Store.InTx began sets it back (mysqlIdleReset) before it ends; in a
// caller's transaction the setting stays with the connection: the server
// closes it when it sits idle in the pool for that long, and the driver
// replaces it.
// mysqlIdleReset gives the session the server's wait_timeout again.
const mysqlIdleReset = "SET SESSION wait_timeout = @@GLOBAL.wait_timeout"

func mysqlIdle(ctx context.Context, q querier, idle time.Duration) error {
	secs := int64((idle + time.Second - 1) / time.Second)
	_, err := q.exec(ctx, "SET SESSION wait_timeout = "+strconv.FormatInt(secs, 10))
	return err
}

// filterArgs returns the arguments of the dead-letter filter.
func (mysqlEngine) filterArgs(f txm.DeadLetterFilter) []any {
	limit := int64(math.MaxInt64)
	if f.Limit > 0 {
		limit = int64(f.Limit)
	}
	ids := f.IDs
	if ids == nil {
		ids = []string{}
	}
	return []any{len(f.IDs), ids, f.Topic, limit}
}

// migrationsTableSQL creates the table where Migrate records versions.
// Config.Schema names a database, which must exist.
func (mysqlEngine) migrationsTableSQL(cfg Config) string {
	return `CREATE TABLE IF NOT EXISTS ` + cfg.qualified(cfg.MigrationsTable) + ` (
    tables     VARCHAR(255) NOT NULL,
    version    INT          NOT NULL,
    name       VARCHAR(255) NOT NULL,
    applied_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (tables, version)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
`
}

// mysqlLockName returns the name of the GET_LOCK lock of Migrate: MySQL
// takes names of at most 64 characters.
func mysqlLockName(cfg Config) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(cfg.Schema + "/" + cfg.MigrationsTable))
	return "txm/migrate/" + strconv.FormatUint(h.Sum64(), 16)
}

// mysqlLockWait is how long one GET_LOCK call waits; Migrate calls it
// again until it gets the lock or its context ends.
const mysqlLockWait = 1

// migrate runs apply on a connection of its own that holds the
// store's migration lock (GET_LOCK, held by the session until
// RELEASE_LOCK or until the connection ends), so that processes migrating
// at once take turns. MySQL commits DDL as it runs it, so the versions are
// not applied in one transaction: each statement is idempotent instead.
func (mysqlEngine) migrate(ctx context.Context, s *Store, apply func(q querier) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := mysqlQuerier{q: sqlQuerier{conn}}
	name := mysqlLockName(s.cfg)
	for {
		var got sql.NullInt64
		if err := queryRow(ctx, q, `SELECT GET_LOCK($1, $2)`, []any{name, mysqlLockWait}, &got); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if got.Valid && got.Int64 == 1 {
			break
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
	}
	defer func() {
		_, _ = q.exec(context.WithoutCancel(ctx), `SELECT RELEASE_LOCK($1)`, name)
	}()
	return apply(q)
}

// mysqlStatements splits a migration into its statements: the driver runs
// one statement per call. A statement ends with a line, not a comment,
// that ends with ";".
func mysqlStatements(text string) []string {
	var out []string
	var b strings.Builder
	for line := range strings.Lines(text) {
		trimmed := strings.TrimSpace(line)
		if b.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "--")) {
			continue
		}
		b.WriteString(line)
		if !strings.HasPrefix(trimmed, "--") && strings.HasSuffix(trimmed, ";") {
			out = append(out, b.String())
			b.Reset()
		}
	}
	if strings.TrimSpace(b.String()) != "" {
		out = append(out, b.String())
	}
	return out
}

// mysqlQuerier runs statements written with numbered parameters on a
// database/sql querier of the MySQL driver (see mysqlBind). With prep, it
// runs the statements that prep prepares through it, on the store's handle
// or in tx, a transaction of that handle.
type mysqlQuerier struct {
	q    querier
	prep *mysqlPrepared
	tx   *sql.Tx
}

func (m mysqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	if h, ok := m.prep.lookup(query, args); ok {
		return m.prep.exec(ctx, m.q, m.tx, h.text, args)
	}
	query, args = mysqlBind(query, args)
	return m.q.exec(ctx, query, args...)
}

func (m mysqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	query, args = mysqlBind(query, args)
	return m.q.query(ctx, query, args...)
}

// mysqlBackend is a database/sql backend whose statements go through
// mysqlBind, and the saves through its querier's prep.
type mysqlBackend struct {
	mysqlQuerier
	sql sqlBackend
}

func newMySQLBackend(db *sql.DB, prep *mysqlPrepared) mysqlBackend {
	b := sqlBackend{sqlQuerier: sqlQuerier{db}, db: db}
	return mysqlBackend{mysqlQuerier: mysqlQuerier{q: b, prep: prep}, sql: b}
}

// close closes the prepared statements (Store.Close).
func (b mysqlBackend) close() error { return b.prep.close() }

func (b mysqlBackend) begin(ctx context.Context) (txn, error) { return b.beginWith(ctx, nil) }

// beginClaim begins the transaction of a locked claim at READ COMMITTED
// (see LockingOutbox.InTx).
func (b mysqlBackend) beginClaim(ctx context.Context) (txn, error) {
	t, err := b.beginWith(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	t.holder().readCommitted = true
	return t, nil
}

func (b mysqlBackend) beginWith(ctx context.Context, opts *sql.TxOptions) (txn, error) {
	t, err := b.sql.beginWith(ctx, opts)
	if err != nil {
		return nil, err
	}
	return mysqlTxn{mysqlQuerier: mysqlQuerier{q: t, prep: b.prep, tx: t.holder().sql}, t: t}, nil
}

func (b mysqlBackend) fromHolder(h *txHolder) (querier, error) {
	q, err := b.sql.fromHolder(h)
	if err != nil {
		return nil, err
	}
	if h.owner == nil || h.owner.db != b.sql.db {
		// The caller's transaction (WithTx), or another store's: of a
		// handle the statements were not prepared on.
		return mysqlQuerier{q: q}, nil
	}
	return mysqlQuerier{q: q, prep: b.prep, tx: h.sql}, nil
}

type mysqlTxn struct {
	mysqlQuerier
	t txn
}

func (t mysqlTxn) commit(ctx context.Context) error   { return t.t.commit(ctx) }
func (t mysqlTxn) rollback(ctx context.Context) error { return t.t.rollback(ctx) }
func (t mysqlTxn) holder() *txHolder                  { return t.t.holder() }

// mysqlBind rewrites a statement's numbered parameters ($1, $2 ...) as ?
// placeholders and returns the arguments in their order: an argument used
// twice is passed twice, and a list ([]string or []int64) becomes one
// placeholder per element (NULL for an empty list, which matches nothing
// in an IN list). A statement without $ is returned as it is.
func mysqlBind(query string, args []any) (string, []any) {
	if !strings.Contains(query, "$") {
		return query, args
	}
	var b strings.Builder
	b.Grow(len(query))
	out := make([]any, 0, len(args))
	for i := 0; i < len(query); i++ {
		c := query[i]
		if c != '$' || i+1 >= len(query) || query[i+1] < '0' || query[i+1] > '9' {
			b.WriteByte(c)
			continue
		}
		start, j := i, i+1
		for j < len(query) && query[j] >= '0' && query[j] <= '9' {
			j++
		}
		n, _ := strconv.Atoi(query[start+1 : j])
		i = j - 1
		if n < 1 || n > len(args) {
			// Left for the server to reject: a statement with a
			// parameter it was not given is a bug of the store's.
			b.WriteString(query[start:j])
			continue
		}
		switch a := args[n-1].(type) {
		case []string:
			writeList(&b, len(a))
			for _, v := range a {
				out = append(out, v)
			}
		case []int64:
			writeList(&b, len(a))
			for _, v := range a {
				out = append(out, v)
			}
		default:
			b.WriteByte('?')
			out = append(out, a)
		}
	}
	return b.String(), out
}

func writeList(b *strings.Builder, n int) {
	if n == 0 {
		b.WriteString("NULL")
		return
	}
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
	}
}

// noTable reports whether err is MySQL's ER_NO_SUCH_TABLE (1146), as the
// driver prints it.
func (mysqlEngine) noTable(err error) bool {
	return strings.Contains(err.Error(), "Error 1146")
}

// errMySQLDB is returned for a nil handle.
var errMySQLDB = errors.New("sqlstore: mysql: nil db")

func (mysqlEngine) save(ctx context.Context, s *Store, q querier, _ *txHolder, args []any) (int64, error) {
	return q.exec(ctx, s.stmts.save, args...)
}

func (mysqlEngine) saveMany(ctx context.Context, s *Store, recs []record) (int64, error) {
	return s.saveManyRows(ctx, recs, mysqlBatch, func(n int) string { return mysqlSaveMany(s.cfg, n) },
		func(args []any, r record) []any {
			return append(args, r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt)
		})
}

// claimLocked picks messages as a lease claim does, or, in a transaction
// of LockingOutbox.InTx, in one locking read where it can
// (mysqlPickReady), and keeps them locked until the transaction ends.
// MySQL has no timeout for an idle transaction: with idle > 0 it sets the
// session's (mysqlIdle).
func (e mysqlEngine) claimLocked(ctx context.Context, s *Store, q querier, h *txHolder, limit int, idle time.Duration) ([]txm.Claimed, []int64, error) {
	if idle > 0 {
		if err := mysqlIdle(ctx, q, idle); err != nil {
			return nil, nil, err
		}
		if h.owner == s {
			h.setAtEnd(mysqlIdleReset)
		}
	}
	var (
		picked []claimedRow
		ok     bool
		err    error
	)
	if h.owner == s && h.readCommitted {
		picked, ok, err = s.mysqlPickReady(ctx, q, limit)
	}
	if err == nil && !ok {
		picked, err = s.mysqlPick(ctx, q, limit)
	}
	if err != nil {
		return nil, nil, err
	}
	if h.owner == s {
		e.own.add(h, picked)
	}
	claimed := make([]txm.Claimed, len(picked))
	seqs := make([]int64, len(picked))
	for i, r := range picked {
		claimed[i], seqs[i] = r.Claimed, r.seq
	}
	return claimed, seqs, nil
}

func (mysqlEngine) update(ctx context.Context, _ *Store, q querier, h *txHolder, stmt string, args []any) error {
	return mysqlRetry(ctx, h == nil, func() error {
		return mysqlChunks(args, func(args []any) error {
			_, err := q.exec(ctx, stmt, args...)
			return err
		})
	})
}

// mysqlMaxList is the most values that one list argument (see mysqlBind)
// carries in one statement. MariaDB runs an IN list of 1000 values or more
// (in_predicate_conversion_threshold) as a join with a table of them, in
// a locking read or a multi-table DELETE too, where it locks what it
// reads in an order of its own instead of looking the rows up by key.
const mysqlMaxList = 999

// mysqlChunks calls fn with args, or, when the list argument among them
// has more than mysqlMaxList values, once per chunk of that many, with
// the other arguments unchanged.
func mysqlChunks(args []any, fn func(args []any) error) error {
	for i, a := range args {
		switch l := a.(type) {
		case []string:
			if len(l) > mysqlMaxList {
				return mysqlChunked(args, i, l, fn)
			}
		case []int64:
			if len(l) > mysqlMaxList {
				return mysqlChunked(args, i, l, fn)
			}
		}
	}
	return fn(args)
}

// mysqlChunked calls fn once per chunk of list, the argument i of args.
func mysqlChunked[T any](args []any, i int, list []T, fn func(args []any) error) error {
	for part := range slices.Chunk(list, mysqlMaxList) {
		a := slices.Clone(args)
		a[i] = part
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

func (mysqlEngine) now() (any, bool) { return nil, false }

// timeArg returns t: the driver writes it in UTC (mysql.Open sets loc).
func (mysqlEngine) timeArg(t time.Time) any { return t }

// idsArg returns ids as a list, which mysqlBind writes one placeholder
// per ID.
func (mysqlEngine) idsArg(ids []string) any { return ids }

func (mysqlEngine) planned(args []any) []any { return args }

func (mysqlEngine) recordSQL(table, tables string, m migration) string {
	return fmt.Sprintf("INSERT INTO %s (tables, version, name) VALUES ('%s', %d, '%s') ON DUPLICATE KEY UPDATE version = version;\n",
		table, tables, m.version, strings.ReplaceAll(m.name, "'", "''"))
}

// execMigration runs a migration statement by statement: the driver runs
// one per call.
func (mysqlEngine) execMigration(ctx context.Context, q querier, text string) error {
	for _, stmt := range mysqlStatements(text) {
		if _, err := q.exec(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// listen does nothing: MySQL has no LISTEN, and relays find the saves of
// other processes by polling.
func (mysqlEngine) listen(*Store) {}
