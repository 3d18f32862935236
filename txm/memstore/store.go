package memstore

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/transmanager/transmanager/async"
)

// ErrTxDone is returned by a save made through the context of a transaction
// that has already committed or rolled back, for example from a goroutine
// that outlived the function given to [Store.InTx]. Check it with
// errors.Is.
var ErrTxDone = errors.New("memstore: transaction already committed or rolled back")

// Config configures a [Store]. The zero value is ready to use.
type Config struct {
	// Now is the store's clock: it stamps save, publish and dead times and
	// decides when leases end and retries fall due. Nil means time.Now.
	// Tests pass a fake clock to move time forward without waiting.
	Now func() time.Time

	// DefaultLease is the lease that FindUnpublished takes on the messages
	// it returns, and that Claim and ExtendClaims use when given a lease of
	// zero or less. Zero (or a negative value) means 30 seconds.
	DefaultLease time.Duration
}

const defaultLease = 30 * time.Second

// Store holds one in-memory outbox and the inboxes of any number of
// consumer groups, which share its transactions. Create it with [New]; it
// is safe for concurrent use.
type Store struct {
	now   func() time.Time
	lease time.Duration
	wake  chan struct{}
	out   *Outbox

	mu sync.Mutex
	// Outbox state.
	seq       uint64
	entries   map[string]*entry // every stored outbox message, by ID
	queue     list.List         // of *entry: pending and keyed dead messages, in save order
	published list.List         // of *entry: published messages, in publish order
	dead      map[string]*entry // dead messages, by ID
	pending   map[string]int64  // pending messages by topic
	deadTopic map[string]int64  // dead messages by topic
	sched     map[string]*entry // pending scheduled messages, by ID
	waiting   map[string]*entry // pending messages with a due time (scheduled or retried), until claimed
	outRes    map[string]*tx    // outbox IDs saved by uncommitted transactions
	// Inbox state.
	inbox map[inboxKey]time.Time // committed inbox records, with their save time
	inRes map[inboxKey]*tx       // inbox records saved by uncommitted transactions
}

type inboxKey struct{ group, id string }

// New returns an empty store configured by cfg.
func New(cfg Config) *Store {
	s := &Store{
		now:       cfg.Now,
		lease:     cfg.DefaultLease,
		wake:      make(chan struct{}, 1),
		entries:   make(map[string]*entry),
		dead:      make(map[string]*entry),
		pending:   make(map[string]int64),
		deadTopic: make(map[string]int64),
		sched:     make(map[string]*entry),
		waiting:   make(map[string]*entry),
		outRes:    make(map[string]*tx),
		inbox:     make(map[inboxKey]time.Time),
		inRes:     make(map[inboxKey]*tx),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.lease <= 0 {
		s.lease = defaultLease
	}
	s.out = &Outbox{s: s}
	return s
}

// Outbox returns the store's outbox. Every call returns the same value.
func (s *Store) Outbox() *Outbox { return s.out }

// Inbox returns the inbox of the consumer group named group. Each group
// keeps its own record of IDs, so every group accepts a message once; all
// inboxes share the store's transactions with the outbox.
func (s *Store) Inbox(group string) *Inbox { return &Inbox{s: s, group: group} }

// ctxKey carries a store's transaction in a context. It holds the store so
// that transactions of different stores can travel in one context.
type ctxKey struct{ s *Store }

// tx is a transaction: the saves buffered until commit. Its fields are
// guarded by the store's mutex.
type tx struct {
	outbox []async.Message // clones, in save order
	inbox  []inboxKey
	ops    []schedOp // cancels and reschedules of committed messages, in call order
	ended  bool
	done   chan struct{} // closed when the transaction ends
}

func (s *Store) txFrom(ctx context.Context) *tx {
	t, _ := ctx.Value(ctxKey{s}).(*tx)
	return t
}

// InTx runs fn in a transaction. Saves made through the context fn receives,
// in the outbox and in every inbox of s, are buffered and applied at once
// when fn returns nil; when fn returns an error or panics they are
// discarded (and the panic goes on). A save inside the transaction sees the
// committed messages and the transaction's own saves: a duplicate returns
// an error matching [txm.ErrDuplicateMessage] and leaves the transaction
// intact. Saving an ID that another live transaction saved waits until that
// transaction ends, as a database's unique index would.
//
// When ctx already carries a transaction of s, InTx runs fn in it and
// leaves commit to its owner, returning fn's error.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if fn == nil {
		return errors.New("memstore: InTx: nil function")
	}
	if t := s.txFrom(ctx); t != nil {
		return fn(ctx)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memstore: begin transaction: %w", err)
	}
	t := &tx{done: make(chan struct{})}
	finished := false
	defer func() {
		if !finished { // fn panicked or called runtime.Goexit
			s.rollback(t)
		}
	}()
	err := fn(context.WithValue(ctx, ctxKey{s}, t))
	finished = true
	if err != nil {
		s.rollback(t)
		return err
	}
	s.commit(t)
	return nil
}

func (s *Store) rollback(t *tx) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked(t)
}

// endLocked releases t's reservations and marks it ended.
func (s *Store) endLocked(t *tx) {
	if t.ended {
		return
	}
	for _, p := range t.outbox {
		delete(s.outRes, p.ID())
	}
	for _, k := range t.inbox {
		delete(s.inRes, k)
	}
	for _, op := range t.ops {
		if op.e.lockedBy == t {
			op.e.lockedBy = nil
		}
	}
	t.ended = true
	close(t.done)
}

func (s *Store) commit(t *tx) {
	s.mu.Lock()
	now := s.now()
	for _, p := range t.outbox {
		s.insertLocked(p, now)
	}
	for _, k := range t.inbox {
		s.inbox[k] = now
	}
	for _, op := range t.ops {
		s.applyLocked(op)
	}
	saved := len(t.outbox) > 0 || len(t.ops) > 0
	s.endLocked(t)
	s.mu.Unlock()
	if saved {
		s.signal()
	}
}

// signal wakes the relay without blocking; wake-ups coalesce.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// reserve claims a key for a save and reports whether it was free. It is
// called with s.mu held and returns with it held. isTaken reports whether
// the key is committed; owner returns the live transaction that saved it,
// if any. When another transaction holds the key, reserve waits (without
// the lock) until that transaction ends or ctx is done.
func (s *Store) reserve(ctx context.Context, t *tx, isTaken func() bool, owner func() *tx) (free bool, err error) {
	for {
		if t != nil && t.ended {
			return false, ErrTxDone
		}
		if isTaken() {
			return false, nil
		}
		o := owner()
		if o == nil {
			return true, nil
		}
		if o == t {
			return false, nil
		}
		s.mu.Unlock()
		select {
		case <-o.done:
			s.mu.Lock()
		case <-ctx.Done():
			s.mu.Lock()
			return false, ctx.Err()
		}
	}
}
