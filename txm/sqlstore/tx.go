package sqlstore

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/transmanager/transmanager/txm"
)

type txKey struct{}

var _ txm.TxReporter = (*Outbox)(nil)

// txHolder carries a transaction in a context.
type txHolder struct {
	sql *sql.Tx
	pgx pgx.Tx
	// saved records that a save ran in the transaction, so InTx wakes the
	// relay after the commit.
	saved atomic.Bool
	// throttled records that a save skipped its NOTIFY (see
	// Config.NotifyInterval), so InTx notifies after the commit.
	throttled atomic.Bool
	// lockedClaim records that a locked claim ran in the transaction, so
	// ExtendClaims leases its messages.
	lockedClaim atomic.Bool
	// locked maps the IDs of the messages that locked claims of this
	// transaction returned to their seq, so that MarkPublished finds
	// their rows by the pending index instead of the text primary key.
	lockedMu sync.Mutex
	locked   map[string]int64
	// owner is the store whose InTx began the transaction; nil for a
	// transaction of the caller's (WithTx, WithPgxTx).
	owner *Store
	// readCommitted records that the store began the transaction at READ
	// COMMITTED for locked claims (MySQL: LockingOutbox.InTx), where a
	// locking read of a range takes no gap locks.
	readCommitted bool
	// endStmt is a statement that InTx runs in the transaction before it
	// ends it, set by the engine (MySQL: undo a locked claim's session
	// setting); guarded by lockedMu.
	endStmt string
	// atEndFuncs run when InTx has ended the transaction; guarded by
	// lockedMu.
	atEndFuncs []func()
}

// onEnd makes InTx call fn once it has ended the transaction (committed or
// rolled back). It is for transactions the store began (owner set): a
// caller's transaction ends where the store does not see it.
func (h *txHolder) onEnd(fn func()) {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	h.atEndFuncs = append(h.atEndFuncs, fn)
}

// ended calls what onEnd registered.
func (h *txHolder) ended() {
	h.lockedMu.Lock()
	fns := h.atEndFuncs
	h.atEndFuncs = nil
	h.lockedMu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// setAtEnd makes InTx run stmt in the transaction before it ends it.
func (h *txHolder) setAtEnd(stmt string) {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	h.endStmt = stmt
}

// atEnd returns what setAtEnd set.
func (h *txHolder) atEnd() string {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	return h.endStmt
}

// WithTx returns a copy of ctx that carries tx, a database/sql transaction
// of the caller's. A database/sql store (built by postgres.NewDB,
// sqlite.New, sqlite.Open, mysql.New or mysql.Open) runs its statements in the transaction a
// context carries, so a save commits or rolls back with the caller's own
// writes; the caller commits it. tx must belong to the store's database.
func WithTx(ctx context.Context, tx *sql.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, &txHolder{sql: tx})
}

// WithPgxTx returns a copy of ctx that carries tx, a pgx transaction of the
// caller's. A pgx store (built by postgres.New) runs its statements in the
// transaction a context carries, so a save commits or rolls back with the
// caller's own writes; the caller commits it. tx must belong to the store's
// database.
func WithPgxTx(ctx context.Context, tx pgx.Tx) context.Context {
	return context.WithValue(ctx, txKey{}, &txHolder{pgx: tx})
}

// InTransaction reports whether ctx carries a transaction the outbox's
// Save would run in: one begun by [Store.InTx], or the caller's, put there
// by [WithPgxTx] or [WithTx] (the typed way to hand the store a
// transaction). It implements [txm.TxReporter], so [txm.OutboxPublisher]
// refuses a save outside a transaction with [txm.ErrNoTransaction]. A
// transaction of the other driver than the store's counts too: Save then
// fails on it.
func (o *Outbox) InTransaction(ctx context.Context) bool { return holderFrom(ctx) != nil }

// TxFromContext returns the database/sql transaction carried by ctx, put
// there by [WithTx] or by [Store.InTx] of a database/sql store. A function
// run by InTx uses it for its own statements.
func TxFromContext(ctx context.Context) (*sql.Tx, bool) {
	h := holderFrom(ctx)
	if h == nil || h.sql == nil {
		return nil, false
	}
	return h.sql, true
}

// PgxTxFromContext returns the pgx transaction carried by ctx, put there by
// [WithPgxTx] or by [Store.InTx] of a pgx store. A function run by InTx
// uses it for its own statements.
func PgxTxFromContext(ctx context.Context) (pgx.Tx, bool) {
	h := holderFrom(ctx)
	if h == nil || h.pgx == nil {
		return nil, false
	}
	return h.pgx, true
}

// addLocked records the seq of each message a locked claim returned.
func (h *txHolder) addLocked(seqs []int64, claimed []txm.Claimed) {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	if h.locked == nil {
		h.locked = make(map[string]int64, len(claimed))
	}
	for i, c := range claimed {
		h.locked[c.Message.ID()] = seqs[i]
	}
}

// forgetLocked forgets ids, settled in the transaction (published or
// dead): MarkPublished finds by seq, and Store.markLocked marks by range,
// only messages that are still pending.
func (h *txHolder) forgetLocked(ids []string) {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	for _, id := range ids {
		delete(h.locked, id)
	}
}

// lockedSeqs returns the seqs of ids when a locked claim of this
// transaction returned every one of them.
func (h *txHolder) lockedSeqs(ids []string) ([]int64, bool) {
	h.lockedMu.Lock()
	defer h.lockedMu.Unlock()
	if len(h.locked) == 0 {
		return nil, false
	}
	seqs := make([]int64, len(ids))
	for i, id := range ids {
		seq, ok := h.locked[id]
		if !ok {
			return nil, false
		}
		seqs[i] = seq
	}
	return seqs, true
}

func holderFrom(ctx context.Context) *txHolder {
	h, _ := ctx.Value(txKey{}).(*txHolder)
	if h == nil || (h.sql == nil && h.pgx == nil) {
		return nil
	}
	return h
}
