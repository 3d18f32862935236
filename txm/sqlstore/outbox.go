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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/txm"
)

// Outbox is the outbox side of a [Store]. It implements [txm.OutboxStore]
// and every optional capability of the relay: [txm.Transactor],
// [txm.Claimer], [txm.LockingClaimer] (PostgreSQL only),
// [txm.DeadLetterStore], [txm.BatchSaver], [txm.StatsReporter],
// [txm.Purger] and [txm.FullWaker].
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
	_ txm.LockingClaimer  = (*Outbox)(nil)
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
	args := []any{r.id, r.topic, r.name, r.key, r.metadata, r.payload, s.timeArg(r.sentAt)}
	var n int64
	switch {
	case s.dialect == sqlite:
		n, err = q.exec(ctx, s.stmts.save, append(args, nowMicros())...)
	case s.cfg.PollOnly, s.dialect == mysql:
		n, err = q.exec(ctx, s.stmts.save, args...)
	case !s.claimNotify():
		if n, err = q.exec(ctx, s.stmts.save, args...); err == nil && n > 0 {
			s.throttledSave(h)
		}
	default:
		var notified int64
		err = queryRow(ctx, q, s.stmts.saveNotify, append(args, s.cfg.NotifyChannel), &n, &notified)
	}
	if err != nil {
		return s.fail(ctx, "outbox save", err)
	}
	if n == 0 {
		return s.fail(ctx, "outbox save", txm.ErrDuplicateMessage(r.id))
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
	var n int64
	var err error
	if s.dialect == postgres {
		n, err = s.saveManyPostgres(ctx, recs)
	} else {
		n, err = s.saveManyRows(ctx, recs)
	}
	if err != nil {
		return 0, s.fail(ctx, "outbox save many", err)
	}
	return int(n), nil
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

// sqliteBatch is how many messages one SQLite insert carries: 8 parameters
// each stays well below SQLite's limit of 32766.
const sqliteBatch = 500

// saveManyRows saves recs with multi-row inserts in one transaction
// (SQLite, MySQL).
func (s *Store) saveManyRows(ctx context.Context, recs []record) (int64, error) {
	var n int64
	own, err := s.runTx(ctx, func(q querier) error {
		now := nowMicros()
		for chunk := range slices.Chunk(recs, sqliteBatch) {
			args := make([]any, 0, 8*len(chunk))
			stmt := sqliteSaveMany(s.cfg, len(chunk))
			if s.dialect == mysql {
				stmt = mysqlSaveMany(s.cfg, len(chunk))
				for _, r := range chunk {
					args = append(args, r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt)
				}
			} else {
				for _, r := range chunk {
					args = append(args, r.id, r.topic, r.name, r.key, r.metadata, r.payload, r.sentAt.UnixMicro(), now)
				}
			}
			k, err := q.exec(ctx, stmt, args...)
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
	var out []claimedRow
	read := func(q querier, args ...any) error {
		rows, err := q.query(ctx, s.claimSQL(limit), args...)
		if err != nil {
			return err
		}
		out, err = scanClaimed(rows)
		return err
	}
	var err error
	if s.dialect == sqlite {
		err = s.claimSQLite(ctx, read, limit, lease)
	} else if s.dialect == mysql {
		out, err = s.mysqlClaim(ctx, limit, lease)
	} else if pb, ok := s.be.(pgxBackend); ok && holderFrom(ctx) == nil {
		err = pb.lockedQuery(ctx, s.stmts.claimLockOwn, []any{s.claimKey}, s.claimSQL(limit), []any{lease.Microseconds()},
			func(r rows) (err error) {
				out, err = scanClaimed(r)
				return err
			})
	} else {
		lock := s.stmts.claimLockOwn
		if holderFrom(ctx) != nil {
			lock = s.stmts.claimLock
		}
		_, err = s.runTx(ctx, func(q querier) error {
			if _, err := q.exec(ctx, lock, s.claimKey); err != nil {
				return err
			}
			return read(q, lease.Microseconds())
		})
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	slices.SortFunc(out, func(a, b claimedRow) int { return cmp.Compare(a.seq, b.seq) })
	if s.dialect != sqlite {
		s.leased.add(out)
	}
	claimed := make([]txm.Claimed, len(out))
	for i, r := range out {
		claimed[i] = r.Claimed
	}
	return claimed, nil
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
// the session, and so the claim, the same way. On SQLite, where a
// transaction holds the database's one write lock, it fails with an error
// matching [errors.ErrUnsupported].
func (o *Outbox) ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]txm.Claimed, error) {
	s := o.s
	const op = "claim locked"
	q, h, err := s.querier(ctx)
	switch {
	case err != nil:
		return nil, s.fail(ctx, op, err)
	case s.dialect == sqlite:
		return nil, s.fail(ctx, op, fmt.Errorf("locked claims need PostgreSQL or MySQL: %w", errors.ErrUnsupported))
	case h == nil:
		return nil, s.fail(ctx, op, errNeedsTx)
	case limit <= 0:
		return nil, nil
	}
	h.lockedClaim.Store(true)
	if s.dialect == mysql {
		if idle > 0 {
			err = mysqlIdle(ctx, q, idle)
		}
		var picked []claimedRow
		if err == nil {
			picked, err = s.mysqlPick(ctx, q, limit)
		}
		if err != nil {
			return nil, s.fail(ctx, op, err)
		}
		claimed := make([]txm.Claimed, len(picked))
		seqs := make([]int64, len(picked))
		for i, r := range picked {
			claimed[i], seqs[i] = r.Claimed, r.seq
		}
		h.addLocked(seqs, claimed)
		return claimed, nil
	}
	stmt := s.limited(true, limit)
	var idleMs any // NULL: leave the timeout as it is
	if idle > 0 {
		idleMs = strconv.FormatInt(max(idle.Milliseconds(), 1), 10)
	}
	var claimed []txm.Claimed
	var seqs []int64
	if h.pgx != nil && h.owner == s {
		err = pgxBackend{b: h.pgx}.lockedQuery(ctx, s.stmts.pinLocked, []any{idleMs}, stmt, nil, func(r rows) (err error) {
			claimed, seqs, err = scanLocked(r)
			return err
		})
	} else {
		switch {
		case h.owner == s:
			_, err = q.exec(ctx, s.stmts.pinLocked, idleMs)
		case idle > 0:
			_, err = q.exec(ctx, s.stmts.idleLocked, idleMs)
		}
		var r rows
		if err == nil {
			if r, err = q.query(ctx, stmt); err == nil {
				claimed, seqs, err = scanLocked(r)
			}
		}
	}
	if err != nil {
		return nil, s.fail(ctx, op, err)
	}
	h.addLocked(seqs, claimed)
	return claimed, nil
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
func (s *Store) claimSQL(limit int) string {
	if s.dialect != postgres {
		return s.stmts.claim
	}
	return s.limited(false, limit)
}

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
}

func newMessageScanner(extra ...any) *messageScanner {
	m := &messageScanner{}
	m.dest = append([]any{&m.seq, &m.id, &m.topic, &m.name, &m.metadata, &m.payload, &m.sentAt, &m.attempts}, extra...)
	return m
}

// scan reads the current row.
func (m *messageScanner) scan(rows rows) (seq int64, msg async.Message, attempts int, err error) {
	m.payload = nil // the message keeps it: the next row gets its own
	if err := rows.Scan(m.dest...); err != nil {
		return 0, nil, 0, err
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
		// Messages locked by a claim of this transaction are pending and
		// cannot change meanwhile: they are found by their seq.
		if seqs, ok := h.lockedSeqs(ids); ok {
			return o.s.update(ctx, "mark published", true, o.s.stmts.publishedBySeq, seqs)
		}
	}
	if o.s.dialect != sqlite && len(ids) > 0 {
		// Leased by a claim of this store: pending unless marked since,
		// which forgot them.
		if seqs, ok := o.s.leased.take(ids); ok {
			return o.s.update(ctx, "mark published", true, o.s.stmts.publishedBySeq, seqs)
		}
	}
	return o.s.update(ctx, "mark published", len(ids) > 0, o.s.stmts.published, o.s.idsArg(ids), sqliteNow)
}

// ExtendClaims renews the lease of pending messages that are leased, for
// lease (0 or less: [Config.DefaultLease]) from now on the database's
// clock. Other IDs are ignored, except in a transaction that made a locked
// claim ([Outbox.ClaimLocked]), where it leases pending messages that are
// not leased as well.
func (o *Outbox) ExtendClaims(ctx context.Context, lease time.Duration, ids ...string) error {
	if lease <= 0 {
		lease = o.s.cfg.DefaultLease
	}
	stmt := o.s.stmts.extend
	if h := holderFrom(ctx); h != nil && h.lockedClaim.Load() {
		stmt = o.s.stmts.extendLocked
	}
	return o.s.update(ctx, "extend claims", len(ids) > 0, stmt, o.s.idsArg(ids), lease.Microseconds(), sqliteNow)
}

// ReleaseClaims ends the lease of messages without counting an attempt, so
// they can be claimed again at once.
func (o *Outbox) ReleaseClaims(ctx context.Context, ids ...string) error {
	o.s.leased.forget(ids...)
	if err := o.s.update(ctx, "release claims", len(ids) > 0, o.s.stmts.release, o.s.idsArg(ids)); err != nil {
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
	h := holderFrom(ctx)
	if pb, ok := s.be.(pgxBackend); ok && h == nil {
		// The update's one generic plan, pinned to index scans: no
		// planning per call, and no sequential scan kept from a plan
		// built while the table looked empty.
		_, err = pb.pinnedExec(ctx, s.stmts.pinByID, stmt, s.args(args))
	} else if h != nil && h.pgx != nil && h.owner == s && h.lockedClaim.Load() {
		// A locked claim pinned the plans of the store's own transaction
		// (pinLocked) for the rest of it: the same generic plan.
		_, err = q.exec(ctx, stmt, s.args(args)...)
	} else {
		if s.dialect == sqlite && h == nil {
			release, qerr := s.queueWrite(ctx)
			if qerr != nil {
				return s.fail(ctx, op, qerr)
			}
			defer release()
		}
		_, err = q.exec(ctx, stmt, s.planned(s.args(args))...)
	}
	if err != nil {
		return s.fail(ctx, op, err)
	}
	return nil
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
// (pinByID) pin their plans instead. SQLite plans every statement for its
// arguments.
func (s *Store) planned(args []any) []any {
	if s.dialect != postgres {
		return args
	}
	return append([]any{pgx.QueryExecModeCacheDescribe}, args...)
}

// args replaces sqliteNow with the current time for SQLite and drops it
// for PostgreSQL.
func (s *Store) args(args []any) []any {
	out := args[:0:0]
	for _, a := range args {
		if _, ok := a.(nowArg); ok {
			if s.dialect == sqlite {
				out = append(out, nowMicros())
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

func (s *Store) filterArgs(f txm.DeadLetterFilter) []any {
	if s.dialect == mysql {
		return mysqlFilterArgs(f)
	}
	var ids any
	if len(f.IDs) > 0 {
		ids = s.idsArg(f.IDs)
	}
	var limit any
	if f.Limit > 0 {
		limit = f.Limit
	} else if s.dialect == sqlite {
		limit = -1
	}
	return []any{ids, f.Topic, limit}
}

// Stats reports the pending and dead messages per topic and in total, and
// the save time of the oldest pending message.
func (o *Outbox) Stats(ctx context.Context) (txm.OutboxStats, error) {
	s := o.s
	stats := txm.OutboxStats{ByTopic: map[string]txm.TopicStats{}}
	q, _, err := s.querier(ctx)
	if err != nil {
		return stats, s.fail(ctx, "stats", err)
	}
	rows, err := q.query(ctx, s.stmts.stats, s.planned(nil)...)
	if err != nil {
		return stats, s.fail(ctx, "stats", err)
	}
	defer rows.Close()
	for rows.Next() {
		var topic string
		var t txm.TopicStats
		var oldest dbTime
		if err := rows.Scan(&topic, &t.Pending, &t.Dead, &oldest); err != nil {
			return stats, s.fail(ctx, "stats", err)
		}
		t.OldestPending = oldest.t
		stats.ByTopic[topic] = t
		stats.Pending += t.Pending
		stats.Dead += t.Dead
		if !t.OldestPending.IsZero() && (stats.OldestPending.IsZero() || t.OldestPending.Before(stats.OldestPending)) {
			stats.OldestPending = t.OldestPending
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
	o.s.startListener()
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
	if k := md.PartitionKey(); k != "" {
		r.key = &k
	}
	var err error
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
	b, err := json.Marshal(md)
	if err != nil {
		return "", fmt.Errorf("encoding metadata as JSON: %w", err)
	}
	return string(b), nil
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

// timeArg returns t as the store's dialect stores it.
func (s *Store) timeArg(t time.Time) any {
	if s.dialect == sqlite {
		return t.UnixMicro()
	}
	return t
}

// idsArg returns ids as the store's dialect takes a list: an array for
// PostgreSQL, a list for MySQL's mysqlBind, a JSON array for SQLite's
// json_each.
func (s *Store) idsArg(ids []string) any {
	if s.dialect != sqlite {
		return ids
	}
	b, _ := json.Marshal(ids) // strings always encode
	return string(b)
}

func nowMicros() int64 { return time.Now().UnixMicro() }

// mysqlDateTime is how MySQL prints a DATETIME(6).
const mysqlDateTime = "2006-01-02 15:04:05.999999"

// dbTime scans a time stored by either dialect: a timestamptz or Unix
// microseconds; NULL is the zero time.
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
