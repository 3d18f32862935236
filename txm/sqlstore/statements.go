package sqlstore

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
	// (PostgreSQL; see LockingOutbox.ClaimLocked).
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
	// lockReady locks up to $1 messages ready to publish after the seq
	// $2, with whether each has no key (MySQL, see Store.mysqlPickReady).
	lockReady string
	// dueHeld reads whether a held message is available again (MySQL).
	dueHeld string
	// lockRun locks the candidates $1 to $2, $3 of them, by range (MySQL).
	lockRun string
	// heldKeys reads up to $1 rows of a key held now and the seq of its
	// first holder, by pending and by dead messages (MySQL, see
	// Store.mysqlHeldKeys).
	heldKeys string
	// leaseBySeq leases the messages $1 (seqs) for $2 µs (MySQL).
	leaseBySeq string
	published  string // $1 ids (SQLite: $2 now); a DELETE unless Config.KeepPublished
	// publishedBySeq is published for pending messages by their seqs, $1:
	// those a claim of this store returned (PostgreSQL).
	publishedBySeq string
	// publishedRun is publishedBySeq for the seqs $1 to $2, $3 of them,
	// every one locked by a claim of the transaction: a range that stops
	// at its end, where an IN list of as many seqs looks each one up
	// (MySQL; see Store.markLocked).
	publishedRun string
	extend       string // $1 ids, $2 lease µs (SQLite: $3 now)
	release      string // $1 ids
	failed       string // $1 id, $2 retry µs, $3 cause (SQLite: $4 now)
	dead         string // $1 id, $2 cause (SQLite: $3 now)
	dlq          string // $1 ids or NULL, $2 topic or '', $3 limit
	replay       string // $1 ids or NULL, $2 topic or '', $3 limit
	stats        string // SQLite: $1 now
	// schedule sets the delivery time $2 of the message $1 just inserted
	// (see schedule.go).
	schedule string
	// cancel deletes the scheduled message $1 that no relay claimed or
	// attempted (SQLite: $2 now).
	cancel string
	// scheduledMeta reads, and on PostgreSQL and MySQL locks, the metadata
	// of the scheduled message $1 that no relay claimed or attempted
	// (SQLite: $2 now).
	scheduledMeta string
	// reschedule sets the delivery time $2 and the metadata $3 of the
	// message $1.
	reschedule string
	// nextDue reads the microseconds until the earliest next attempt time
	// still to come of a pending message, 0 for none (SQLite: $1 now).
	nextDue    string
	purge      string // $1 age µs, $2 limit (SQLite: $3 now)
	inboxSave  string // $1..$8 (SQLite: $9 now)
	inboxPurge string // $1 group, $2 age µs, $3 limit (SQLite: $4 now)
}

// The columns a message is read from, in the order scanMessage expects.
const messageColumns = "seq, id, topic, name, metadata, payload, sent_at, attempts"

// available is true of a pending message that is due and not leased at the
// time {now}.
const available = `state = 'pending'
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= {now})
      AND (o.claimed_until IS NULL OR o.claimed_until <= {now})`

// scheduledWaiting is true of a scheduled message that no relay claimed
// or attempted at the time {now}: attempts stay 0 and the next attempt time
// is set only for a message saved with a delivery time.
const scheduledWaiting = `state = 'pending' AND attempts = 0 AND next_attempt_at IS NOT NULL
      AND (claimed_until IS NULL OR claimed_until <= {now})`

// holdsKey is true of a message that holds back the later messages of its
// partition key at the time {now}: leased, waiting for a retry, or dead. Its
// first two lines repeat the predicate of the held_idx index, so that both
// databases use the index.
const holdsKey = `h.state <> 'published'
            AND (h.state = 'dead' OR h.claimed_until IS NOT NULL OR h.next_attempt_at IS NOT NULL)
            AND (h.state = 'dead' OR h.claimed_until > {now} OR h.next_attempt_at > {now})`
