package chaostest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// order is the payload of the suite's messages (chaosconsumer decodes it).
type order struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// ledger is what the producers know: the messages whose transactions
// committed and those rolled back on purpose, by ID.
type ledger struct {
	mu         sync.Mutex
	committed  map[string]order
	rolledBack map[string]order
	refused    []error          // transactions that failed before their commit
	commitErrs []error          // commits whose outcome is unknown
	unknown    map[string]order // their messages, until resolve looks them up
}

func newLedger() *ledger {
	return &ledger{committed: map[string]order{}, rolledBack: map[string]order{}, unknown: map[string]order{}}
}

func (l *ledger) counts() (committed, rolledBack int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.committed), len(l.rolledBack)
}

var (
	errRollback     = errors.New("rolled back on purpose")
	errNotCommitted = errors.New("failed before the commit")
)

// produce runs producers until ctx ends: each owns the keys k with k mod
// producers = its index, so a key's messages are written one after another
// with growing seq; together they try to commit rate messages a second,
// each in a transaction with its business row, and roll back about one in
// ten on purpose.
func (e *env) produce(ctx context.Context, l *ledger, producers, keys, rate int) {
	out := txm.NewOutbox[order](txm.OutboxPublisher(e.store.Outbox())(nil), txm.WithCodecs(codec.NewRegistry(codec.JSON())))
	orders := e.table("orders")
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			var own []string
			for k := p; k < keys; k += producers {
				own = append(own, fmt.Sprintf("key-%03d", k))
			}
			if len(own) == 0 {
				return
			}
			next := map[string]int{}
			every := time.Duration(float64(time.Second) * float64(producers) / float64(max(rate, 1)))
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				key := own[rand.IntN(len(own))]
				o := order{Key: key, Seq: next[key]}
				next[key]++
				id := uuid.NewString()
				rollback := rand.IntN(10) == 0
				err := e.write(ctx, out, orders, id, o, rollback)
				l.mu.Lock()
				switch {
				case err == nil:
					l.committed[id] = o
				case errors.Is(err, errRollback):
					l.rolledBack[id] = o
				case errors.Is(err, errNotCommitted):
					l.rolledBack[id] = o
					l.refused = append(l.refused, err)
				case ctx.Err() != nil:
					// Cancelled before the commit: rolled back. A commit
					// cut by the cancellation would be unknown, so the
					// producers end through the ticker's select above.
					l.rolledBack[id] = o
				default:
					l.commitErrs = append(l.commitErrs, fmt.Errorf("%s: %w", id, err))
					l.unknown[id] = o
				}
				l.mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// write runs one producer transaction: the business row and its message.
func (e *env) write(ctx context.Context, out *txm.Outbox[order], orders, id string, o order, rollback bool) error {
	// The transaction runs to its end even when ctx is cancelled, so its
	// outcome is known.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	tx, err := e.pool.Begin(tctx)
	if err != nil {
		return fmt.Errorf("%w: begin: %w", errNotCommitted, err)
	}
	defer func() { _ = tx.Rollback(tctx) }()
	if _, err := tx.Exec(tctx, "INSERT INTO "+orders+" (id, key, seq) VALUES ($1, $2, $3)", id, o.Key, o.Seq); err != nil {
		return fmt.Errorf("%w: business row: %w", errNotCommitted, err)
	}
	if err := out.Publish(sqlstore.WithPgxTx(tctx, tx), e.topic, o, txm.WithMessageID(id), txm.WithPartitionKey(o.Key)); err != nil {
		return fmt.Errorf("%w: outbox: %w", errNotCommitted, err)
	}
	if rollback {
		// A rollback that fails leaves nothing committed either.
		_ = tx.Rollback(tctx)
		return errRollback
	}
	return tx.Commit(tctx)
}

// resolve settles the transactions whose commit ended with an unknown
// outcome (a fault cut the producer's connection during COMMIT): each
// committed if and only if its business row exists. The caller holds l.mu.
func (e *env) resolve(ctx context.Context, l *ledger) (committed, rolledBack int, err error) {
	for id, o := range l.unknown {
		var found bool
		if err := e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+e.table("orders")+` WHERE id = $1)`, id).Scan(&found); err != nil {
			return committed, rolledBack, err
		}
		if found {
			l.committed[id] = o
			committed++
		} else {
			l.rolledBack[id] = o
			rolledBack++
		}
		delete(l.unknown, id)
	}
	return committed, rolledBack, nil
}
