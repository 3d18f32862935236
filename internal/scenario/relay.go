package scenario

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// Store returns a store on the library's tables in e's schema; pollOnly
// stores do not LISTEN. The caller closes it.
func (e *Env) Store(pollOnly bool) (*sqlstore.LockingStore, error) {
	return postgres.New(e.Pool, sqlstore.Config{Schema: e.Schema, NotifyChannel: e.Schema,
		PollOnly: pollOnly, Logger: slog.New(slog.DiscardHandler)})
}

// Messages returns n messages of payload on e's topic, each with a content
// type and, when keys > 0, the partition key "key-(i mod keys)".
// outboxStore is a store that polls (drainDatabase).
func (e *Env) outboxStore(context.Context) (*sqlstore.LockingStore, error) { return e.Store(true) }

func (e *Env) Messages(n, keys int, payload []byte) []async.Message {
	msgs := make([]async.Message, n)
	for i := range msgs {
		md := async.Metadata{async.MetaContentType: "application/json"}
		if keys > 0 {
			md[async.MetaPartitionKey] = fmt.Sprintf("key-%d", i%keys)
		}
		msgs[i] = async.NewMessage(e.Topic, "OrderPlaced", payload, async.WithMetadata(md))
	}
	return msgs
}

// FillOutbox empties the library's outbox and saves msgs with SaveMany,
// then settles the table.
func (e *Env) FillOutbox(ctx context.Context, store *sqlstore.LockingStore, msgs []async.Message) error {
	table := e.Schema + "." + sqlstore.DefaultOutboxTable
	if _, err := e.Pool.Exec(ctx, "TRUNCATE "+table); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	for chunk := range slices.Chunk(msgs, 5000) {
		if k, err := store.Outbox().SaveMany(ctx, chunk); err != nil || k != len(chunk) {
			return fmt.Errorf("SaveMany: %d of %d: %v", k, len(chunk), err)
		}
	}
	return e.Settle(ctx, table)
}

// OutboxUnpublished counts the library outbox's rows not published.
func (e *Env) OutboxUnpublished(ctx context.Context) (int, error) {
	var n int
	err := e.Pool.QueryRow(ctx, "SELECT count(*) FROM "+e.Schema+"."+sqlstore.DefaultOutboxTable+
		" WHERE state <> 'published'").Scan(&n)
	return n, err
}

// DrainRelay runs the library's relay with cfg and a JetStream publisher
// with pubCfg on store until it has marked n messages published, and
// returns how long that took from Start. The relay is stopped before it
// returns.
func (e *Env) DrainRelay(ctx context.Context, store *sqlstore.LockingStore, n int, cfg txm.ProcessorConfig, pubCfg natsjs.PublisherConfig) (time.Duration, error) {
	return drainWith(ctx, natsjs.NewPublisher(e.JS, pubCfg), store.Outbox(), n, cfg, nil)
}

// drainWith runs the relay with cfg and pub on outbox, a *sqlstore.Outbox
// or a *sqlstore.LockingOutbox, until it has marked n messages published,
// calls done (when not nil) at that moment, stops the relay and returns
// how long the drain took from Start.
func drainWith(ctx context.Context, pub async.MessagePublisher, outbox txm.OutboxStore, n int, cfg txm.ProcessorConfig, done func()) (time.Duration, error) {
	out := &countingOutbox{target: int64(n), done: make(chan struct{})}
	var relayed txm.OutboxStore = out
	switch o := outbox.(type) {
	case *sqlstore.LockingOutbox:
		out.Outbox = o.Outbox
		relayed = lockingCountingOutbox{out, o}
	case *sqlstore.Outbox:
		out.Outbox = o
	default:
		return 0, fmt.Errorf("drain: %T is not a sqlstore outbox", outbox)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	relay, err := txm.NewOutboxProcessorWithConfig(pub, relayed, cfg)
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- relay.Start(runCtx) }()
	select {
	case <-out.done:
	case err := <-stopped:
		return 0, fmt.Errorf("the relay stopped after %d of %d messages: %v", out.marked.Load(), n, err)
	case <-ctx.Done():
		stop()
		<-stopped
		return 0, fmt.Errorf("the relay marked %d of %d messages: %w", out.marked.Load(), n, ctx.Err())
	}
	took := time.Since(start)
	if done != nil {
		done()
	}
	stop()
	if err := <-stopped; err != nil {
		return took, err
	}
	return took, nil
}

// countingOutbox is a store's outbox whose MarkPublished counts: done is
// closed once target messages are marked (for a locked claim, when its
// transaction commits). It embeds the outbox, so the relay finds every
// optional capability of [sqlstore.Outbox]; [lockingCountingOutbox] adds
// locked claims.
type countingOutbox struct {
	*sqlstore.Outbox
	target int64
	marked atomic.Int64
	once   sync.Once
	done   chan struct{}
}

// markedKey carries the count of a transaction's marked messages.
type markedKey struct{}

func (o *countingOutbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return o.countIn(ctx, o.Outbox.InTx, fn)
}

// countIn runs fn in the transaction of inTx and counts its marks once it
// commits.
func (o *countingOutbox) countIn(ctx context.Context, inTx func(context.Context, func(context.Context) error) error, fn func(ctx context.Context) error) error {
	var marked atomic.Int64
	if err := inTx(context.WithValue(ctx, markedKey{}, &marked), fn); err != nil {
		return err
	}
	o.count(marked.Load())
	return nil
}

func (o *countingOutbox) MarkPublished(ctx context.Context, ids ...string) error {
	if err := o.Outbox.MarkPublished(ctx, ids...); err != nil {
		return err
	}
	if inTx, ok := ctx.Value(markedKey{}).(*atomic.Int64); ok {
		inTx.Add(int64(len(ids)))
		return nil
	}
	o.count(int64(len(ids)))
	return nil
}

func (o *countingOutbox) count(n int64) {
	if n > 0 && o.marked.Add(n) >= o.target {
		o.once.Do(func() { close(o.done) })
	}
}

// lockingCountingOutbox is a countingOutbox of a [sqlstore.LockingOutbox]:
// it claims by locking too, so a relay with LockClaims accepts it. The
// claim is forwarded rather than embedded, since embedding the locking
// outbox beside the countingOutbox would make the methods both promote
// from sqlstore.Outbox ambiguous, and so drop them.
type lockingCountingOutbox struct {
	*countingOutbox
	locking *sqlstore.LockingOutbox
}

var _ txm.LockingClaimer = lockingCountingOutbox{}

// InTx runs the relay's transactions as the locking outbox does
// (sqlstore.LockingOutbox.InTx).
func (o lockingCountingOutbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return o.countIn(ctx, o.locking.InTx, fn)
}

func (o lockingCountingOutbox) ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]txm.Claimed, error) {
	return o.locking.ClaimLocked(ctx, limit, idle)
}
