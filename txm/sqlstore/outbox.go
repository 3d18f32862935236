package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/txm"
)

// Outbox is the outbox side of a [Store]. It implements [txm.OutboxStore]
// and every optional capability of the relay but one: [txm.Transactor],
// [txm.Claimer], [txm.DeadLetterStore], [txm.BatchSaver],
// [txm.StatsReporter], [txm.Purger], [txm.FullWaker], [txm.Scheduler] and
// [txm.DueReporter]. The exception, [txm.LockingClaimer], is
// [LockingOutbox]'s, the outbox of a database that can claim by locking.
type Outbox struct{ s *Store }

var (
	_ txm.OutboxStore     = (*Outbox)(nil)
	_ txm.Transactor      = (*Outbox)(nil)
	_ txm.Claimer         = (*Outbox)(nil)
	_ txm.DeadLetterStore = (*Outbox)(nil)
	_ txm.BatchSaver      = (*Outbox)(nil)
	_ txm.StatsReporter   = (*Outbox)(nil)
	_ txm.Purger          = (*Outbox)(nil)
	_ txm.FullWaker       = (*Outbox)(nil)
)

// errNilMessage is returned for a nil message.
var errNilMessage = errors.New("nil message")

// errEmptyID is returned for a message without an ID.
var errEmptyID = errors.New("message has an empty ID")

// InTx is [Store.InTx].
func (o *Outbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return o.s.InTx(ctx, fn)
}

// Save stores msg as pending. It runs in the transaction ctx carries, so the
// message commits or rolls back with the caller's writes; without one it
// commits on its own and wakes the relay. An ID already stored returns an
// error matching [txm.ErrDuplicateMessage] and leaves the transaction
// usable: the insert skips the conflict instead of failing. On PostgreSQL
// (unless PollOnly) the same statement also NOTIFYs the relays, which
// PostgreSQL delivers at commit.
func (o *Outbox) Save(ctx context.Context, msg async.Message) error {
	s := o.s
	q, h, err := s.querier(ctx)
	if err != nil {
		return s.fail(ctx, "outbox save", err)
	}
	r, err := s.encode(msg)
	if err != nil {
		return s.fail(ctx, "outbox save", err)
	}
	if !r.deliverAt.IsZero() && h == nil {
		// The insert and its delivery time commit together: no relay
		// sees the message before it has its time.
		return s.InTx(ctx, func(ctx context.Context) error { return o.Save(ctx, msg) })
	}
	args := []any{r.id, r.topic, r.name, r.key, r.metadata, r.payload, s.eng.timeArg(r.sentAt)}
	n, err := s.eng.save(ctx, s, q, h, args)
	if err != nil {
		return s.fail(ctx, "outbox save", err)
	}
	if n == 0 {
		return s.fail(ctx, "outbox save", txm.ErrDuplicateMessage(r.id))
	}
	if !r.deliverAt.IsZero() {
		if err := s.schedule(ctx, q, r); err != nil {
			return s.fail(ctx, "outbox save", err)
		}
	}
	s.saved(h)
	return nil
}

// saved notes a save: at once without a transaction, after the commit of
// one that InTx began; the relay learns of saves in a caller's own
// transaction from NOTIFY (PostgreSQL) or its next poll.
func (s *Store) saved(h *txHolder) {
	if h == nil {
		s.signal()
		return
	}
	h.saved.Store(true)
}

// SaveMany stores msgs as pending in their order, skipping the IDs already
// stored (or repeated in msgs) without error, and returns how many it
// inserted. Like Save it runs in the transaction ctx carries. A pgx store
// writes 32 messages or more with COPY, and falls back to an insert that
// skips duplicates when the COPY meets one (see the package documentation);
// other batches take one statement (PostgreSQL) or one transaction
// (SQLite).
func (o *Outbox) SaveMany(ctx context.Context, msgs []async.Message) (int, error) {
	s := o.s
	if _, _, err := s.querier(ctx); err != nil {
		return 0, s.fail(ctx, "outbox save many", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	recs := make([]record, len(msgs))
	for i, m := range msgs {
		r, err := s.encode(m)
		if err != nil {
			return 0, s.fail(ctx, "outbox save many", fmt.Errorf("message %d: %w", i, err))
		}
		recs[i] = r
	}
	if slices.ContainsFunc(recs, func(r record) bool { return !r.deliverAt.IsZero() }) {
		return o.saveManyScheduled(ctx, msgs, recs)
	}
	n, err := s.eng.saveMany(ctx, s, recs)
	if err != nil {
		return 0, s.fail(ctx, "outbox save many", err)
	}
	return int(n), nil
}

// saveManyScheduled is SaveMany of a batch with scheduled messages, in one
// transaction: the unscheduled records as a batch, the scheduled ones one
// by one, each with its delivery time.
func (o *Outbox) saveManyScheduled(ctx context.Context, msgs []async.Message, recs []record) (int, error) {
	s := o.s
	if holderFrom(ctx) == nil {
		n := 0
		err := s.InTx(ctx, func(ctx context.Context) error {
			var err error
			n, err = o.SaveMany(ctx, msgs)
			return err
		})
		return n, err
	}
	q, h, err := s.querier(ctx)
	if err != nil {
		return 0, s.fail(ctx, "outbox save many", err)
	}
	var plain, sched []record
	seen := make(map[string]bool, len(recs))
	for _, r := range recs {
		switch {
		case !r.deliverAt.IsZero() && !seen[r.id]:
			sched = append(sched, r)
		case r.deliverAt.IsZero():
			plain = append(plain, r)
		}
		seen[r.id] = true
	}
	var n int64
	if len(plain) > 0 {
		if n, err = s.eng.saveMany(ctx, s, plain); err != nil {
			return 0, s.fail(ctx, "outbox save many", err)
		}
	}
	m, err := s.saveScheduled(ctx, q, h, sched)
	if err != nil {
		return 0, s.fail(ctx, "outbox save many", err)
	}
	if m > 0 {
		s.saved(h)
	}
	return int(n + m), nil
}

// saveManyRows saves recs with multi-row inserts of up to batch messages,
// in one transaction: the one ctx carries or one of its own. insert
// returns the insert of n messages, and row appends one message's
// arguments.
func (s *Store) saveManyRows(ctx context.Context, recs []record, batch int, insert func(n int) string, row func(args []any, r record) []any) (int64, error) {
	var n int64
	own, err := s.runTx(ctx, func(q querier) error {
		for chunk := range slices.Chunk(recs, batch) {
			args := make([]any, 0, 8*len(chunk))
			for _, r := range chunk {
				args = row(args, r)
			}
			k, err := q.exec(ctx, insert(len(chunk)), args...)
			if err != nil {
				return err
			}
			n += k
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n > 0 {
		if own {
			s.signal()
		} else {
			s.saved(holderFrom(ctx))
		}
	}
	return n, nil
}

// FindUnpublished claims up to limit messages with [Config.DefaultLease]
// and returns them; see [Outbox.Claim].
func (o *Outbox) FindUnpublished(ctx context.Context, limit int) ([]async.Message, error) {
	claimed, err := o.claim(ctx, "find unpublished", limit, o.s.cfg.DefaultLease)
	if err != nil {
		return nil, err
	}
	msgs := make([]async.Message, len(claimed))
	for i, c := range claimed {
		msgs[i] = c.Message
	}
	return msgs, nil
}

// Claim leases up to limit due messages for lease (0 or less:
// [Config.DefaultLease]), taken with the database's clock, and returns them
// in save order with their attempts. A limit of 0 or less returns nothing. A message comes out
// only when every earlier message of its partition key is published or
// comes out before it in the same result; a key whose earliest unpublished
// message is leased, waiting for a retry or dead is parked. Messages
// without a partition key are independent. See the package documentation
// for how concurrent claims stay correct.
func (o *Outbox) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	return o.claim(ctx, "claim", limit, lease)
}

func (o *Outbox) claim(ctx context.Context, op string, limit int, lease time.Duration) ([]txm.Claimed, error) {
	s := o.s
	if _, _, err := s.querier(ctx); err != nil {
		return nil, s.fail(ctx, op, err)
	}
	if limit <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		lease = s.cfg.DefaultLease
	}
	out, err := s.eng.claim(ctx, s, limit, lease)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	slices.SortFunc(out, func(a, b claimedRow) int { return cmp.Compare(a.seq, b.seq) })
	if s.stmts.publishedBySeq != "" {
		s.leased.add(out)
	}
	claimed := make([]txm.Claimed, len(out))
	for i, r := range out {
		claimed[i] = r.Claimed
	}
	return claimed, nil
}

// LockingOutbox is the outbox of a [LockingStore], a store on PostgreSQL
// or MySQL/MariaDB: an [Outbox] that can also claim by locking, and so
// implements [txm.LockingClaimer] besides everything [Outbox] implements.
// SQLite's outbox is an [Outbox] only: a transaction held across a publish
// would hold SQLite's one write lock and stop every save, so a relay with
// [txm.ProcessorConfig.LockClaims] refuses it when it is built.
type LockingOutbox struct{ *Outbox }

var _ txm.LockingClaimer = (*LockingOutbox)(nil)

// InTx is [Store.InTx], except that on MySQL/MariaDB it begins its
// transaction at READ COMMITTED, as the relay's locked claims need: at
// InnoDB's default, REPEATABLE READ, a claim that passes over a row
// another transaction holds at the end of the table locks the gap after
// it, and every save then waits until the claim ends. The relay runs its
// locked claims in it; run your own writes in [Store.InTx], which keeps
// the server's level. On PostgreSQL, whose default is READ COMMITTED
// already, it is Store.InTx.
func (o *LockingOutbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	s := o.s
	begin := s.be.begin
	if c, ok := s.be.(claimBeginner); ok {
		begin = c.beginClaim
	}
	return s.inTx(ctx, begin, fn)
}

// claimBeginner is a backend that begins a locked claim's transaction
// otherwise than its others (LockingOutbox.InTx).
type claimBeginner interface {
	beginClaim(ctx context.Context) (txn, error)
}

// errNeedsTx is returned by ClaimLocked without a transaction in ctx.
var errNeedsTx = errors.New("a locked claim needs a transaction in the context (run it in InTx)")

// ClaimLocked locks up to limit due messages that are not leased in the
// transaction ctx carries and returns them in save order, without leasing
// them: they stay claimed, skipped by every other claim, until that
// transaction ends, and are free again at once if it rolls back or its
// connection dies. Record their outcome (MarkPublished, MarkFailed,
// MarkDead) in the same transaction, so that it commits with the end of
// the claim; [Outbox.ExtendClaims] in it leases them past its end. A keyed
// message is returned only when every earlier message of its key is
// published or comes before it in the same result, as with
// [Outbox.Claim]; a key whose head another claim holds yields nothing
// (its later messages are locked by this claim and left out, until its
// transaction ends). A limit of 0 or less returns nothing.
//
// With idle > 0 the transaction's idle_in_transaction_session_timeout is
// set to idle: PostgreSQL ends the session, and so the claim, when the
// transaction waits longer than that for its next statement, as a lease
// would expire (the relay passes 2 × PublishTimeout + 1s). In a transaction
// the store began ([Store.InTx]), the claim's plan is also pinned as in a
// lease claim (sequential and bitmap scans off, one generic plan) for the
// rest of the transaction. MySQL has no such timeout: the session's
// wait_timeout is set to idle, rounded up to whole seconds, which ends
// the session, and so the claim, the same way.
func (o *LockingOutbox) ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]txm.Claimed, error) {
	s := o.s
	const op = "claim locked"
	q, h, err := s.querier(ctx)
	// A LockingOutbox made by hand around the outbox of another database
	// fails here rather than running statements it has no engine for.
	le, locks := s.eng.(lockingEngine)
	switch {
	case err != nil:
		return nil, s.fail(ctx, op, err)
	case !locks:
		return nil, s.fail(ctx, op, fmt.Errorf("%s has no locked claims: %w", s.eng.name(), errors.ErrUnsupported))
	case h == nil:
		return nil, s.fail(ctx, op, errNeedsTx)
	case limit <= 0:
		return nil, nil
	}
	h.lockedClaim.Store(true)
	claimed, seqs, err := le.claimLocked(ctx, s, q, h, limit, idle)
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	h.addLocked(seqs, claimed)
	return claimed, nil
}

type claimedRow struct {
	seq int64
	txm.Claimed
}

func scanClaimed(rows rows) ([]claimedRow, error) {
	defer rows.Close()
	var out []claimedRow
	scanner := newMessageScanner()
	for rows.Next() {
		var r claimedRow
		var err error
		r.seq, r.Message, r.Attempts, err = scanner.scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, rows.Close()
}

// messageScanner reads messages from rows of messageColumns followed by
// extra columns. One scanner serves every row of a result, so that its
// destinations are allocated once per result instead of once per row; a
// message it returns shares nothing with the next.
type messageScanner struct {
	seq, attempts     int64
	id, topic, name   string
	metadata, payload []byte
	sentAt            dbTime
	dest              []any
	// text is whether dest holds the destinations of
	// newTextMessageScanner, from which scan sets seq, attempts and
	// metadata.
	text                  bool
	seqText, attemptsText dbInt
	metadataText          sql.RawBytes
}

func newMessageScanner(extra ...any) *messageScanner {
	m := &messageScanner{}
	m.dest = append([]any{&m.seq, &m.id, &m.topic, &m.name, &m.metadata, &m.payload, &m.sentAt, &m.attempts}, extra...)
	return m
}

// newTextMessageScanner is newMessageScanner for database/sql rows whose
// driver returns numbers as text (MySQL's text protocol): it parses the
// integers without the string that database/sql's conversion makes of
// each, and decodes the metadata where the driver holds it (sql.RawBytes,
// valid until the next row) instead of from a copy.
func newTextMessageScanner(extra ...any) *messageScanner {
	m := &messageScanner{text: true}
	m.dest = append([]any{&m.seqText, &m.id, &m.topic, &m.name, &m.metadataText, &m.payload, &m.sentAt, &m.attemptsText}, extra...)
	return m
}

// scan reads the current row.
func (m *messageScanner) scan(rows rows) (seq int64, msg async.Message, attempts int, err error) {
	m.payload = nil // the message keeps it: the next row gets its own
	if err := rows.Scan(m.dest...); err != nil {
		return 0, nil, 0, err
	}
	if m.text {
		m.seq, m.attempts, m.metadata = m.seqText.n, m.attemptsText.n, m.metadataText
	}
	md, err := decodeMetadata(m.metadata) // copies what it keeps: the buffer is reused
	if err != nil {
		return 0, nil, 0, fmt.Errorf("message %s: %w", m.id, err)
	}
	payload := m.payload
	if payload == nil {
		payload = []byte{}
	}
	// md is this message's own: the envelope takes it over without a copy.
	msg = async.NewMessageFromEnvelope(async.Envelope{ID: m.id, Subject: m.topic, Name: m.name, Metadata: md, SentAt: m.sentAt.t, Data: payload})
	return m.seq, msg, int(m.attempts), nil
}

// scanMessage reads one row with a scanner of its own.
func scanMessage(rows rows, extra ...any) (seq int64, msg async.Message, attempts int, err error) {
	return newMessageScanner(extra...).scan(rows)
}

// MarkPublished records that the broker confirmed the messages: they leave
// the pending messages (or the dead letters) for good. It deletes their
// rows, or, with [Config.KeepPublished], marks them published until Purge
// deletes them. Unknown and already published IDs are ignored.
func (o *Outbox) MarkPublished(ctx context.Context, ids ...string) error {
	if h := holderFrom(ctx); h != nil && len(ids) > 0 {
		// Marked (or not, on an error), their rows are gone or published,
		// or may be: marked again, they are looked up by ID.
		defer h.forgetLocked(ids)
		// Messages locked by a claim of this transaction and not settled
		// in it since are pending and cannot change meanwhile: they are
		// found by their seq.
		if seqs, ok := h.lockedSeqs(ids); ok {
			return o.s.markLocked(ctx, seqs)
		}
	}
	if len(ids) > 0 && o.s.stmts.publishedBySeq != "" {
		// Leased by a claim of this store: pending unless marked since,
		// which forgot them.
		if seqs, ok := o.s.leased.take(ids); ok {
			return o.s.update(ctx, "mark published", true, o.s.stmts.publishedBySeq, seqs)
		}
	}
	return o.s.update(ctx, "mark published", len(ids) > 0, o.s.stmts.published, o.s.eng.idsArg(ids), sqliteNow)
}

// markLocked marks published the messages seqs, every one locked by a
// claim of the transaction in ctx and pending (MarkPublished and MarkDead
// forget the messages they settle, see txHolder.forgetLocked): where the
// engine has publishedRun, each run of at least minRun consecutive seqs by
// its range, the others by publishedBySeq.
func (s *Store) markLocked(ctx context.Context, seqs []int64) error {
	if s.stmts.publishedRun == "" {
		return s.update(ctx, "mark published", true, s.stmts.publishedBySeq, seqs)
	}
	runs, rest := seqRuns(slices.Compact(slices.Sorted(slices.Values(seqs))))
	for _, r := range runs {
		// The LIMIT ends the scan at the run's end: InnoDB would
		// otherwise lock the row past it to see that the range ended,
		// and that row may be another claim's.
		if err := s.update(ctx, "mark published", true, s.stmts.publishedRun, r.first, r.last, r.len()); err != nil {
			return err
		}
	}
	return s.update(ctx, "mark published", len(rest) > 0, s.stmts.publishedBySeq, rest)
}

// ExtendClaims renews the lease of pending messages that are leased, for
// lease (0 or less: [Config.DefaultLease]) from now on the database's
// clock. Other IDs are ignored, except in a transaction that made a locked
// claim ([LockingOutbox.ClaimLocked]), where it leases pending messages
// that are not leased as well.
func (o *Outbox) ExtendClaims(ctx context.Context, lease time.Duration, ids ...string) error {
	if lease <= 0 {
		lease = o.s.cfg.DefaultLease
	}
	stmt := o.s.stmts.extend
	if h := holderFrom(ctx); h != nil && h.lockedClaim.Load() {
		stmt = o.s.stmts.extendLocked
	}
	return o.s.update(ctx, "extend claims", len(ids) > 0, stmt, o.s.eng.idsArg(ids), lease.Microseconds(), sqliteNow)
}

// ReleaseClaims ends the lease of messages without counting an attempt, so
// they can be claimed again at once.
func (o *Outbox) ReleaseClaims(ctx context.Context, ids ...string) error {
	o.s.leased.forget(ids...)
	if err := o.s.update(ctx, "release claims", len(ids) > 0, o.s.stmts.release, o.s.eng.idsArg(ids)); err != nil {
		return err
	}
	if len(ids) > 0 {
		o.s.signal()
	}
	return nil
}

// MarkFailed records a failed publish of a pending message: it ends the
// lease, adds one to its attempts, keeps cause as its last error and makes
// it due again after retryAfter (0 or less: at once). Its partition key
// stays parked until then. Unknown IDs and messages that are not pending
// are ignored. When the retry falls due, [Outbox.Wakeups] signals the relay
// of this process.
func (o *Outbox) MarkFailed(ctx context.Context, id string, retryAfter time.Duration, cause string) error {
	o.s.leased.forget(id)
	retryAfter = max(retryAfter, 0)
	if err := o.s.update(ctx, "mark failed", true, o.s.stmts.failed, id, retryAfter.Microseconds(), cause, sqliteNow); err != nil {
		return err
	}
	// Wake the relay when the retry falls due, so it does not wait for its
	// next poll. Wake-ups coalesce, so a spare one costs one empty claim.
	time.AfterFunc(retryAfter, o.s.signal)
	return nil
}

// MarkDead moves a pending message to the dead letters: it ends the lease,
// adds one to its attempts and keeps cause as its last error. Its partition
// key stays parked behind it until it is replayed. Unknown IDs and messages
// that are not pending are ignored.
func (o *Outbox) MarkDead(ctx context.Context, id string, cause string) error {
	o.s.leased.forget(id)
	if h := holderFrom(ctx); h != nil {
		// No longer pending: marked published, it is looked up by ID.
		defer h.forgetLocked([]string{id})
	}
	return o.s.update(ctx, "mark dead", true, o.s.stmts.dead, id, cause, sqliteNow)
}

// nowArg stands for the current time in a statement's arguments: SQLite
// statements take it as their last parameter, PostgreSQL ones use the
// database clock instead. [Store.args] replaces or drops it.
type nowArg struct{}

// sqliteNow is the nowArg placeholder.
var sqliteNow nowArg

// update runs a statement that changes rows, unless run is false.
func (s *Store) update(ctx context.Context, op string, run bool, stmt string, args ...any) error {
	q, _, err := s.querier(ctx)
	if err != nil {
		return s.fail(ctx, op, err)
	}
	if !run {
		return nil
	}
	if err := s.eng.update(ctx, s, q, holderFrom(ctx), stmt, s.args(args)); err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
}

// planned is the engine's planned.
func (s *Store) planned(args []any) []any { return s.eng.planned(args) }

// args replaces sqliteNow with the engine's current time, or drops it
// when the engine's statements take the database's clock.
func (s *Store) args(args []any) []any {
	out := args[:0:0]
	for _, a := range args {
		if _, ok := a.(nowArg); ok {
			if now, ok := s.eng.now(); ok {
				out = append(out, now)
			}
			continue
		}
		out = append(out, a)
	}
	return out
}

// DeadLetters returns the dead letters that filter selects, in save order.
func (o *Outbox) DeadLetters(ctx context.Context, filter txm.DeadLetterFilter) ([]txm.DeadLetter, error) {
	s := o.s
	q, _, err := s.querier(ctx)
	if err != nil {
		return nil, s.fail(ctx, "dead letters", err)
	}
	rows, err := q.query(ctx, s.stmts.dlq, s.planned(s.filterArgs(filter))...)
	if err != nil {
		return nil, s.fail(ctx, "dead letters", err)
	}
	defer rows.Close()
	var out []txm.DeadLetter
	for rows.Next() {
		var d txm.DeadLetter
		var deadAt dbTime
		_, d.Message, d.Attempts, err = scanMessage(rows, &d.LastError, &deadAt)
		if err != nil {
			return nil, s.fail(ctx, "dead letters", err)
		}
		d.DeadAt = deadAt.t
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(ctx, "dead letters", err)
	}
	return out, nil
}

// Replay moves the dead letters that filter selects back to pending, due at
// once with their attempts reset to zero and their last error cleared, and
// returns how many it moved. Each keeps its place in its key's order, which
// unparks the key, and the relay is woken.
func (o *Outbox) Replay(ctx context.Context, filter txm.DeadLetterFilter) (int, error) {
	s := o.s
	q, h, err := s.querier(ctx)
	if err != nil {
		return 0, s.fail(ctx, "replay", err)
	}
	n, err := q.exec(ctx, s.stmts.replay, s.planned(s.filterArgs(filter))...)
	if err != nil {
		return 0, s.fail(ctx, "replay", err)
	}
	if n > 0 {
		s.saved(h)
	}
	return int(n), nil
}

func (s *Store) filterArgs(f txm.DeadLetterFilter) []any { return s.eng.filterArgs(f) }

// Stats reports the pending (due), scheduled (delivery time not come yet)
// and dead messages per topic and in total, the time the oldest pending
// message became due and the next delivery time, on the database's clock.
func (o *Outbox) Stats(ctx context.Context) (txm.OutboxStats, error) {
	s := o.s
	stats := txm.OutboxStats{ByTopic: map[string]txm.TopicStats{}}
	q, _, err := s.querier(ctx)
	if err != nil {
		return stats, s.fail(ctx, "stats", err)
	}
	rows, err := q.query(ctx, s.stmts.stats, s.planned(s.args([]any{sqliteNow}))...)
	if err != nil {
		return stats, s.fail(ctx, "stats", err)
	}
	defer rows.Close()
	for rows.Next() {
		var topic string
		var t txm.TopicStats
		var oldest, next dbTime
		if err := rows.Scan(&topic, &t.Pending, &t.Scheduled, &t.Dead, &oldest, &next); err != nil {
			return stats, s.fail(ctx, "stats", err)
		}
		t.OldestPending, t.NextDue = oldest.t, next.t
		stats.ByTopic[topic] = t
		stats.Pending += t.Pending
		stats.Scheduled += t.Scheduled
		stats.Dead += t.Dead
		if !t.OldestPending.IsZero() && (stats.OldestPending.IsZero() || t.OldestPending.Before(stats.OldestPending)) {
			stats.OldestPending = t.OldestPending
		}
		if !t.NextDue.IsZero() && (stats.NextDue.IsZero() || t.NextDue.Before(stats.NextDue)) {
			stats.NextDue = t.NextDue
		}
	}
	if err := rows.Err(); err != nil {
		return stats, s.fail(ctx, "stats", err)
	}
	return stats, nil
}

// Purge deletes at most limit messages published more than olderThan ago
// (on the database's clock), oldest first, and returns how many it
// deleted; a limit of 0 or less deletes nothing. A deleted message's ID can
// be saved again. Call it again
// while it returns limit to purge in small batches; concurrent purgers skip
// each other's rows.
func (o *Outbox) Purge(ctx context.Context, olderThan time.Duration, limit int) (int, error) {
	return o.s.purge(ctx, "purge", o.s.stmts.purge, olderThan, limit)
}

func (s *Store) purge(ctx context.Context, op, stmt string, olderThan time.Duration, limit int, pre ...any) (int, error) {
	q, _, err := s.querier(ctx)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	if limit <= 0 {
		return 0, nil
	}
	args := append(pre, max(olderThan, 0).Microseconds(), limit, sqliteNow)
	n, err := q.exec(ctx, stmt, s.planned(s.args(args))...)
	if err != nil {
		return 0, s.fail(ctx, op, err)
	}
	return int(n), nil
}

// Wakeups returns the channel that receives a value after messages were
// saved: at once for saves that commit on their own, after the commit for
// InTx, and, on PostgreSQL unless PollOnly, for every commit that saved
// messages in any process. It also receives one after ReleaseClaims and
// Replay, and when a retry scheduled by MarkFailed falls due. PostgreSQL
// stores LISTEN on a connection of their own, opened at the first call,
// reconnected with backoff and closed by Close. Wake-ups coalesce: the
// channel holds at most one value, and several relays on one store share
// it.
func (o *Outbox) Wakeups() <-chan struct{} {
	o.s.eng.listen(o.s)
	return o.s.wake
}

// WakesForAllSaves reports whether Wakeups currently receives a value for
// every commit that saves messages, in any process: on PostgreSQL unless
// PollOnly, while the LISTEN connection listens (from the first call of
// Wakeups until Close, except while it reconnects). SQLite stores report
// false: other processes may write to the same file.
func (o *Outbox) WakesForAllSaves() bool { return o.s.listenUp.Load() }

// record is a message ready to be stored.
type record struct {
	id, topic, name string
	key             *string
	metadata        string // JSON
	payload         []byte
	sentAt          time.Time
	deliverAt       time.Time // zero: not scheduled
}

func (s *Store) encode(msg async.Message) (record, error) {
	if msg == nil {
		return record{}, errNilMessage
	}
	r := record{id: msg.ID(), topic: msg.Subject(), name: msg.MessageName(), payload: msg.Data(), sentAt: msg.SentAt()}
	if r.id == "" {
		return record{}, errEmptyID
	}
	md := msg.Metadata()
	// A scheduled message is outside its key's sequence: stored without
	// the key, which its metadata keeps.
	if k := txm.SequenceKey(md); k != "" {
		r.key = &k
	}
	var err error
	if r.deliverAt, _, err = txm.ScheduleOf(md); err != nil {
		return record{}, fmt.Errorf("message %s: %w", r.id, err)
	}
	if r.metadata, err = encodeMetadata(md); err != nil {
		return record{}, fmt.Errorf("message %s: %w", r.id, err)
	}
	if r.payload == nil {
		r.payload = []byte{}
	}
	return r, nil
}

func encodeMetadata(md async.Metadata) (string, error) {
	if len(md) == 0 {
		return "{}", nil
	}
	if s, ok := encodeFlatStrings(md); ok {
		return s, nil
	}
	b, err := json.Marshal(md)
	if err != nil {
		return "", fmt.Errorf("encoding metadata as JSON: %w", err)
	}
	return string(b), nil
}

// encodeFlatStrings encodes the common shape of metadata, a few string
// values, each key and value of printable ASCII that JSON writes as it is,
// byte for byte as json.Marshal does (keys sorted), without its reflection.
// It reports false for any other metadata.
func encodeFlatStrings(md async.Metadata) (string, bool) {
	var keysBuf [8]string
	if len(md) > len(keysBuf) {
		return "", false
	}
	keys := keysBuf[:0]
	n := 1
	for k, v := range md {
		s, ok := v.(string)
		if !ok || !plainJSON(k) || !plainJSON(s) {
			return "", false
		}
		keys = append(keys, k)
		n += len(k) + len(s) + 6
	}
	slices.Sort(keys)
	var b strings.Builder
	b.Grow(n)
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(k)
		b.WriteString(`":"`)
		b.WriteString(md[k].(string))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String(), true
}

// plainJSON reports whether json.Marshal writes s between its quotes as it
// is: printable ASCII without a quote, a backslash or the characters it
// escapes for HTML.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func decodeMetadata(b []byte) (async.Metadata, error) {
	if len(b) == 0 {
		return async.Metadata{}, nil
	}
	if md, ok := decodeFlatStrings(b); ok {
		return md, nil
	}
	md := async.Metadata{}
	if err := json.Unmarshal(b, &md); err != nil {
		return nil, fmt.Errorf("decoding metadata: %w", err)
	}
	return md, nil
}

// decodeFlatStrings decodes the common shape of stored metadata, a JSON
// object whose values are all strings without escapes, as jsonb prints it
// or encoding/json writes it, much faster than json.Unmarshal (a claim
// decodes the metadata of every message). It reports false for
// anything else, which decodeMetadata leaves to json.Unmarshal.
func decodeFlatStrings(b []byte) (async.Metadata, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	md := make(async.Metadata, 4)
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return md, skipSpace(b, i+1) == len(b)
	}
	for {
		key, next, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		value, next, ok := plainString(b, skipSpace(b, i+1))
		if !ok {
			return nil, false
		}
		md[internKey(key)] = internValue(value)
		i = skipSpace(b, next)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return md, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// plainString reads the JSON string at b[i:] if it has no escape and no
// control character and is valid UTF-8, and returns its bytes (within b)
// and the index after its closing quote.
func plainString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			v := b[i+1 : j]
			if !utf8.Valid(v) {
				return nil, 0, false
			}
			return v, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// The metadata keys and values that nearly every message carries: decoded
// to these, they cost no allocation per message (a string stored in an
// any is otherwise allocated, key and value alike).
var (
	commonKeys   = []string{async.MetaContentType, async.MetaPartitionKey, async.MetaTraceParent, async.MetaTraceState}
	commonValues = []any{codec.ContentTypeJSON, codec.ContentTypeMsgpack, codec.ContentTypeProtobuf}
)

func internKey(b []byte) string {
	for _, k := range commonKeys {
		if string(b) == k { // compared without a conversion
			return k
		}
	}
	return string(b)
}

func internValue(b []byte) any {
	for _, v := range commonValues {
		if string(b) == v.(string) {
			return v
		}
	}
	return string(b)
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func nowMicros() int64 { return time.Now().UnixMicro() }

// dbInt scans an integer column, NULL as 0. A driver's text (MySQL's
// text protocol) is parsed in place, where database/sql's conversion to an
// int64 makes a string of it first.
type dbInt struct{ n int64 }

func (d *dbInt) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		d.n = 0
	case int64:
		d.n = x
	case []byte:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return fmt.Errorf("sqlstore: cannot scan %q as an integer: %w", x, err)
		}
		d.n = n
	default:
		return fmt.Errorf("sqlstore: cannot scan %T as an integer", v)
	}
	return nil
}

// dbBool scans a boolean column (MySQL's 0 or 1), NULL as false, as dbInt
// does an integer.
type dbBool struct{ b *bool }

func (d dbBool) Scan(v any) error {
	var n dbInt
	if x, ok := v.(bool); ok {
		*d.b = x
		return nil
	}
	if err := n.Scan(v); err != nil {
		return err
	}
	*d.b = n.n != 0
	return nil
}

// mysqlDateTime is how MySQL prints a DATETIME(6).
const mysqlDateTime = "2006-01-02 15:04:05.999999"

// dbTime scans a time stored by any engine: a timestamptz, a DATETIME or
// Unix microseconds; NULL is the zero time.
type dbTime struct{ t time.Time }

func (d *dbTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		d.t = time.Time{}
	case time.Time:
		d.t = x
	case int64:
		d.t = time.UnixMicro(x)
	case []byte:
		// MySQL's DATETIME read without the driver's parseTime: UTC.
		t, err := time.Parse(mysqlDateTime, string(x))
		if err != nil {
			return fmt.Errorf("sqlstore: cannot scan %q as a time: %w", x, err)
		}
		d.t = t
	default:
		return fmt.Errorf("sqlstore: cannot scan %T as a time", v)
	}
	return nil
}

// ScanTimestamptz is how pgx scans a timestamptz into a dbTime: directly,
// without boxing the time into an any for Scan (one allocation per row).
func (d *dbTime) ScanTimestamptz(v pgtype.Timestamptz) error {
	if !v.Valid {
		d.t = time.Time{}
		return nil
	}
	switch v.InfinityModifier {
	case pgtype.Finite:
		d.t = v.Time
	default:
		return fmt.Errorf("sqlstore: cannot scan an infinite timestamptz as a time")
	}
	return nil
}

// queryRow runs a query that returns one row and scans it.
func queryRow(ctx context.Context, q querier, stmt string, args []any, dest ...any) error {
	rows, err := q.query(ctx, stmt, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return errors.New("query returned no row")
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// multiRowInsert returns the insert of n messages into cfg's outbox, each
// row's values being values (its placeholders), ending with onConflict.
func multiRowInsert(cfg Config, n int, values, onConflict string) string {
	var b strings.Builder
	b.WriteString("INSERT INTO ")
	b.WriteString(cfg.qualified(cfg.OutboxTable))
	b.WriteString(" (id, topic, name, partition_key, metadata, payload, sent_at, created_at) VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(values)
	}
	b.WriteString(" ")
	b.WriteString(onConflict)
	return b.String()
}
