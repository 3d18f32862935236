package txm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

// OutboxProcessor is an interface that outlines the start process for
// message processing. Implementations of this interface must be able to
// initiate the processing of outgoing messages.
type OutboxProcessor interface {
	Start(ctx context.Context) error
}

// ErrAlreadyStarted is returned by Start on a processor that was started
// before. Check it with errors.Is.
var ErrAlreadyStarted = errors.New("txm: processor already started")

// Processor is the relay: it takes saved messages from an [OutboxStore],
// publishes them and marks them published once the publisher confirmed
// them. It is the [OutboxProcessor] returned by [NewOutboxProcessor].
//
// A batch claimed from the store is spread over [ProcessorConfig.Workers]
// workers. Messages that share a partition key ([async.MetaPartitionKey])
// are published one after another in their order: a key has at most one
// message in flight, and any idle worker takes the next ready message of any
// key. When one of them fails, the rest of its key in the batch is released
// unpublished, so a key's messages never overtake each other. Messages
// without a key are spread freely.
//
// A failed publish costs the batch nothing: the message's attempts go up and
// its next attempt waits per [ProcessorConfig.Retry], and after the maximum
// number of attempts, or at once for an error marked with
// [retry.Permanent], it goes to dead letters. Both need a store that
// implements [Claimer] and [DeadLetterStore]; with a store that has only the
// three [OutboxStore] methods, failed messages stay unpublished and the
// relay retries them with growing delays ([ProcessorConfig.StoreRetry]).
//
// A message with a delivery time ([WithDeliverAt]) is claimed only from
// that time on, outside its key's order; an idle relay wakes for it when
// its store implements [DueReporter], and otherwise finds it at its next
// poll. A message whose expiry ([WithExpiresAt]) has passed is never
// published: it goes to dead letters with the cause [ExpiredCause], or is
// dropped with [ProcessorConfig.DropExpired], and a failed publish whose
// retry would come after the expiry expires the message at once.
//
// Errors of the store are logged and retried with growing delays: the relay
// never stops on its own, except when its store was closed (a claim fails
// with [async.ErrClosed]) or cannot claim as configured; then Start returns
// that error.
type Processor struct {
	pub     async.MessagePublisher
	apub    async.AsyncPublisher
	store   OutboxStore
	claimer Claimer
	locker  LockingClaimer // set when cfg.LockClaims
	dead    DeadLetterStore
	purger  Purger // set when cfg.Retention.Published > 0
	waker   Waker
	full    FullWaker   // the waker, when it can tell that it covers every save
	due     DueReporter // tells an idle relay when the next message falls due
	expObs  ExpiredObserver
	cfg     ProcessorConfig
	initErr error
	breaker *breaker

	dueMu   sync.Mutex
	nextDue time.Time     // earliest retry this relay scheduled; zero: none
	kick    chan struct{} // wakes an idle claim loop: nextDue moved earlier, or a settled batch freed messages

	mu       sync.Mutex
	started  bool
	stopOnce sync.Once
	stopCh   chan struct{} // closed by Stop: claim no more
	stopped  chan struct{} // closed when Start returns
	hardStop context.CancelFunc
	// unsupported is the claim error that made Start give up: the store
	// cannot claim as configured (errors.ErrUnsupported) or was closed
	// (async.ErrClosed).
	unsupported error
}

var _ OutboxProcessor = (*Processor)(nil)

// NewOutboxProcessor creates and returns a new instance of an
// outboxProcessor with the given message publisher and outbox store. This
// processor is responsible for retrieving unpublished messages from the
// store and publishing them using the publisher.
//
// It uses the defaults of [ProcessorConfig]; [NewOutboxProcessorWithConfig]
// sets them. The value returned is a [*Processor]. A nil publisher or store
// makes Start return an error matching [ErrNilArgument].
func NewOutboxProcessor(publisher async.MessagePublisher, store OutboxStore) OutboxProcessor {
	p, err := NewOutboxProcessorWithConfig(publisher, store, ProcessorConfig{})
	if err != nil {
		return &Processor{initErr: err, stopCh: make(chan struct{}), stopped: make(chan struct{})}
	}
	return p
}

// NewOutboxProcessorWithConfig returns a relay configured by cfg. It returns
// an error naming the field when cfg is invalid, and one matching
// [ErrNilArgument] when publisher or store is nil.
func NewOutboxProcessorWithConfig(publisher async.MessagePublisher, store OutboxStore, cfg ProcessorConfig) (*Processor, error) {
	if isNil(publisher) {
		return nil, nilArgument("NewOutboxProcessor", "publisher")
	}
	if isNil(store) {
		return nil, nilArgument("NewOutboxProcessor", "store")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := &Processor{
		pub:     publisher,
		store:   store,
		cfg:     cfg,
		breaker: newBreaker(cfg.BreakerThreshold, cfg.StoreRetry),
		stopCh:  make(chan struct{}),
		stopped: make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	p.apub, _ = publisher.(async.AsyncPublisher)
	p.claimer, _ = store.(Claimer)
	p.dead, _ = store.(DeadLetterStore)
	p.waker, _ = store.(Waker)
	p.full, _ = store.(FullWaker)
	p.due, _ = store.(DueReporter)
	p.expObs, _ = cfg.Observer.(ExpiredObserver)
	if cfg.LockClaims {
		if p.locker, _ = store.(LockingClaimer); p.locker == nil {
			return nil, fmt.Errorf("txm: ProcessorConfig.LockClaims: the store (%T) does not implement LockingClaimer", store)
		}
	}
	if cfg.Retention.Published > 0 {
		if p.purger, _ = store.(Purger); p.purger == nil {
			return nil, fmt.Errorf("txm: ProcessorConfig.Retention: the store (%T) does not implement Purger", store)
		}
	}
	return p, nil
}

// Start relays messages until ctx is cancelled or [Processor.Stop] is
// called. It then stops claiming, finishes the batch in flight (for at most
// [ProcessorConfig.DrainTimeout] after ctx ends), releases the claims it did
// not finish and returns nil. It returns an error only when the processor
// cannot run: it was built with a nil publisher or store, it was started
// before, its store cannot claim as configured (a claim failed with an
// error matching [errors.ErrUnsupported]), or its store was closed (a
// claim failed with an error matching [async.ErrClosed]; the error
// returned matches it too).
func (p *Processor) Start(ctx context.Context) error {
	if p.initErr != nil {
		return p.initErr
	}
	p.mu.Lock()
	if p.started {
		p.mu.Unlock()
		return ErrAlreadyStarted
	}
	p.started = true
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	p.hardStop = cancelWork
	p.mu.Unlock()
	defer close(p.stopped)
	defer cancelWork()
	defer p.startRetention(ctx)() // ProcessorConfig.Retention, in its own goroutine

	// After ctx ends, in-flight work gets DrainTimeout before it is cut.
	loopDone := make(chan struct{})
	defer close(loopDone)
	go func() {
		select {
		case <-ctx.Done():
		case <-loopDone:
			return
		}
		select {
		case <-p.cfg.Clock.After(p.cfg.DrainTimeout):
			cancelWork()
		case <-loopDone:
		}
	}()

	p.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "txm: relay started",
		slog.Int("workers", p.cfg.Workers), slog.Int("batch_size", p.cfg.BatchSize),
		slog.String("claim_mode", p.claimMode()), slog.Bool("async_publish", p.apub != nil))
	p.run(ctx, workCtx)
	if p.unsupported != nil {
		why := "txm: relay stopped: the store cannot claim as configured"
		if errors.Is(p.unsupported, async.ErrClosed) {
			why = "txm: relay stopped: the store is closed"
		}
		p.cfg.Logger.LogAttrs(context.WithoutCancel(ctx), slog.LevelError, why, slog.Any("error", p.unsupported))
		return fmt.Errorf("txm: relay: %w", p.unsupported)
	}
	p.cfg.Logger.LogAttrs(context.WithoutCancel(ctx), slog.LevelInfo, "txm: relay stopped")
	return nil
}

// claimMode names how the relay takes messages from its store, for its
// start log: "locked" (ProcessorConfig.LockClaims), "leases" (a [Claimer])
// or "unpublished" (the seed's FindUnpublished, for a store without claims).
func (p *Processor) claimMode() string {
	switch {
	case p.locker != nil:
		return "locked"
	case p.claimer != nil:
		return "leases"
	default:
		return "unpublished"
	}
}

// Stop asks a started relay to stop claiming, waits for the batch in flight
// to finish and for Start to return. When ctx ends first, it cancels the
// publishes in flight (their claims are released, not counted as attempts),
// waits for Start to return and returns ctx's error. Stop on a relay that
// was never started returns nil at once.
func (p *Processor) Stop(ctx context.Context) error {
	p.mu.Lock()
	started := p.started
	hard := p.hardStop
	p.mu.Unlock()
	p.stopOnce.Do(func() { close(p.stopCh) })
	if !started {
		return nil
	}
	select {
	case <-p.stopped:
		return nil
	case <-ctx.Done():
		hard()
		<-p.stopped
		return ctx.Err()
	}
}

// Stopped returns a channel that is closed when Start has returned.
func (p *Processor) Stopped() <-chan struct{} { return p.stopped }

func (p *Processor) stopping(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	case <-p.stopCh:
		return true
	default:
		return false
	}
}

func (p *Processor) run(ctx, workCtx context.Context) {
	if p.claimer == nil || p.cfg.BatchesInFlight <= 1 {
		p.claimLoop(ctx, workCtx, func(b batch) int { return p.process(workCtx, b) })
		return
	}
	// Pipelined: this goroutine claims ahead while a second one publishes,
	// with at most BatchesInFlight batches claimed and not yet published,
	// and a third records the outcomes of the batch published before, so
	// that the store's write of one batch overlaps the publish of the next.
	batches := make(chan batch, p.cfg.BatchesInFlight-2)
	published := make(chan publishedBatch)
	settled := make(chan struct{})
	go func() {
		defer close(settled)
		for b := range published {
			p.settle(workCtx, b.batch, b.outcomes)
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(published)
		for b := range batches {
			if p.stopping(ctx) {
				p.release(workCtx, b) // claimed ahead, never started
				continue
			}
			published <- publishedBatch{b, p.publish(workCtx, b)}
		}
	}()
	p.claimLoop(ctx, workCtx, func(b batch) int {
		select {
		case batches <- b:
		case <-ctx.Done():
			p.release(workCtx, b)
		case <-p.stopCh:
			p.release(workCtx, b)
		}
		return 0
	})
	close(batches)
	<-done
	<-settled
}

// publishedBatch is a published batch on its way to be settled.
type publishedBatch struct {
	batch    batch
	outcomes []outcome
}

// batch is a claimed batch: its messages and, when the relay locks its
// claims, the transaction that holds them.
type batch struct {
	items []Claimed
	held  *heldTx // nil for leased claims
	// renewing stops the renewal of a leased batch's claims, which runs
	// from the claim until the batch is published or released, so that a
	// batch claimed ahead keeps its leases while it waits. Nil when none.
	renewing func()
}

// stopRenewing stops renewing the batch's leases, if they are renewed.
func (b batch) stopRenewing() {
	if b.renewing != nil {
		b.renewing()
	}
}

// heldTx is the store transaction of a locked claim, run by a goroutine of
// its own (the store's InTx) until the batch is settled.
type heldTx struct {
	ctx   context.Context // carries the transaction
	end   chan bool       // true: commit; false: roll back
	ended chan error      // InTx's result
}

// finish ends the transaction and returns the commit's error.
func (t *heldTx) finish(commit bool) error {
	t.end <- commit
	return <-t.ended
}

// errRollback makes InTx roll a locked claim back.
var errRollback = errors.New("txm: roll back the claim")

// claimLoop claims batches until the relay stops and hands each to handle,
// which returns how many of its publishes failed. It waits for a wake-up or
// the poll interval when the store is empty, and backs off when the store
// fails.
func (p *Processor) claimLoop(ctx, workCtx context.Context, handle func(batch) int) {
	storeFailures, publishFailures := 0, 0
	for !p.stopping(ctx) {
		batch, err := p.claim(workCtx)
		if errors.Is(err, errors.ErrUnsupported) || errors.Is(err, async.ErrClosed) {
			p.unsupported = err
			return
		}
		if err != nil {
			storeFailures++
			delay := p.cfg.StoreRetry.Delay(storeFailures)
			p.cfg.Logger.LogAttrs(ctx, slog.LevelError, "txm: relay: claiming messages failed",
				slog.Any("error", err), slog.Int("failures", storeFailures), slog.Duration("retry_in", delay))
			p.wait(ctx, delay, false)
			continue
		}
		storeFailures = 0
		if len(batch.items) == 0 {
			p.askDue(ctx)
			p.wait(ctx, p.idleWait(), true)
			continue
		}
		failed := handle(batch)
		// With claims, the store schedules each failed message's retry.
		// Without them the same messages come back at once, so pace them.
		if p.claimer == nil && failed > 0 {
			publishFailures++
			p.wait(ctx, p.cfg.StoreRetry.Delay(publishFailures), false)
			continue
		}
		publishFailures = 0
		// A claim that came back short took everything it could: when every
		// save brings a wake-up, what is committed after it will wake the
		// loop, and a settled batch kicks it for the keys it held. Claiming
		// again at once would mostly come back empty.
		if p.full != nil && p.claimer != nil && len(batch.items) < p.cfg.BatchSize && p.full.WakesForAllSaves() {
			p.askDue(ctx)
			p.wait(ctx, p.idleWait(), true)
		}
	}
}

// release gives a batch's claims back to the store unpublished.
func (p *Processor) release(ctx context.Context, b batch) {
	b.stopRenewing()
	if b.held != nil {
		if err := b.held.finish(false); err != nil {
			p.cfg.Logger.LogAttrs(ctx, slog.LevelError, "txm: relay: rolling back a claim failed", slog.Any("error", err))
		}
		return
	}
	ids := make([]string, len(b.items))
	for i, c := range b.items {
		ids[i] = c.Message.ID()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.PublishTimeout)
	defer cancel()
	p.storeCall(sctx, storeCallTries, "release claims", func(ctx context.Context) error {
		return p.claimer.ReleaseClaims(ctx, ids...)
	})
}

// retryAt notes that a message falls due at t, so an idle relay does not
// sleep past it.
func (p *Processor) retryAt(t time.Time) {
	p.dueMu.Lock()
	earlier := p.nextDue.IsZero() || t.Before(p.nextDue)
	if earlier {
		p.nextDue = t
	}
	p.dueMu.Unlock()
	if earlier {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// askDue asks a store that implements [DueReporter] when its next message
// falls due, so that an idle relay wakes for it.
func (p *Processor) askDue(ctx context.Context) {
	if p.due == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	in, ok, err := p.due.NextDue(dctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "txm: relay: asking the store for its next due message failed; polling", slog.Any("error", err))
		}
		return
	}
	if !ok || in <= 0 {
		return
	}
	t := p.cfg.Clock.Now().Add(in)
	p.dueMu.Lock()
	if p.nextDue.IsZero() || t.Before(p.nextDue) {
		p.nextDue = t
	}
	p.dueMu.Unlock()
}

// idleWait is how long an idle relay waits: the poll interval, or less when
// a retry it scheduled, or the store's next due message, falls due sooner.
func (p *Processor) idleWait() time.Duration {
	p.dueMu.Lock()
	defer p.dueMu.Unlock()
	if p.nextDue.IsZero() {
		return p.cfg.PollInterval
	}
	d := p.nextDue.Sub(p.cfg.Clock.Now())
	if d <= 0 {
		p.nextDue = time.Time{} // due now: claim again, then poll as usual
		return time.Millisecond
	}
	return min(d, p.cfg.PollInterval)
}

// wait blocks for d, until the relay stops, or, when wakeable, until the
// store reports new messages.
func (p *Processor) wait(ctx context.Context, d time.Duration, wakeable bool) {
	var wake, kick <-chan struct{}
	if wakeable {
		kick = p.kick
		if p.waker != nil {
			wake = p.waker.Wakeups()
		}
	}
	select {
	case <-p.cfg.Clock.After(d):
	case <-wake:
	case <-kick:
	case <-ctx.Done():
	case <-p.stopCh:
	}
}

func (p *Processor) claim(ctx context.Context) (batch, error) {
	if p.locker != nil {
		return p.claimLocked(ctx)
	}
	if p.claimer != nil {
		items, err := p.claimer.Claim(ctx, p.cfg.BatchSize, p.cfg.Lease)
		if err != nil {
			return batch{}, fmt.Errorf("claim: %w", err)
		}
		b := batch{items: items}
		if len(items) > 0 {
			b.renewing = p.renewLeases(ctx, items)
		}
		return b, nil
	}
	msgs, err := p.store.FindUnpublished(ctx, p.cfg.BatchSize)
	if err != nil {
		return batch{}, fmt.Errorf("find unpublished: %w", err)
	}
	items := make([]Claimed, len(msgs))
	for i, m := range msgs {
		items[i] = Claimed{Message: m}
	}
	return batch{items: items}, nil
}

// claimLocked claims a batch in a store transaction that a goroutine of
// its own holds open until the batch is settled (heldTx.finish). An empty
// claim's transaction is rolled back before it returns. The transaction
// stops with ctx until it holds a batch (so a stop does not wait for a
// connection from an exhausted pool), and outlives a hard stop from then on,
// so that the batch can still be settled.
func (p *Processor) claimLocked(ctx context.Context) (batch, error) {
	type claimed struct {
		items []Claimed
		ctx   context.Context
		err   error
	}
	got := make(chan claimed, 1)
	held := &heldTx{end: make(chan bool, 1), ended: make(chan error, 1)}
	txCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	detach := context.AfterFunc(ctx, cancel)
	go func() {
		defer cancel()
		defer detach() // an empty or failed claim never detached
		ran := false
		err := p.locker.InTx(txCtx, func(txCtx context.Context) error {
			ran = true
			items, err := p.locker.ClaimLocked(txCtx, p.cfg.BatchSize, p.lockedIdle())
			if err == nil && len(items) > 0 && !detach() {
				items, err = nil, ctx.Err() // stopped during the claim
			}
			got <- claimed{items, txCtx, err}
			if err != nil || len(items) == 0 || !<-held.end {
				return errRollback
			}
			return nil
		})
		if errors.Is(err, errRollback) {
			err = nil
		}
		if !ran { // the transaction did not begin: its error is the claim's
			got <- claimed{err: err}
		}
		held.ended <- err
	}()
	// got is sent exactly once, before held.ended: the claim's outcome is
	// read from it alone, never from whichever of the two a select sees
	// first.
	c := <-got
	if c.err != nil || len(c.items) == 0 {
		<-held.ended
		if c.err != nil && ctx.Err() == nil {
			return batch{}, fmt.Errorf("claim locked: %w", c.err)
		}
		return batch{}, nil
	}
	held.ctx = c.ctx
	return batch{items: c.items, held: held}, nil
}

// lockedIdle is how long a locked claim's transaction may wait for its next
// statement before the store ends it: a batch claimed ahead waits for the
// publish before it, then for its own, each at most PublishTimeout.
func (p *Processor) lockedIdle() time.Duration { return 2*p.cfg.PublishTimeout + time.Second }

// outcome is what became of one message of a batch.
type outcome struct {
	state outcomeState
	err   error
	wait  time.Duration // for stateDeferred: how long the topic stays open
}

type outcomeState uint8

const (
	stateSkipped   outcomeState = iota // not attempted: released unpublished
	statePublished                     // confirmed by the publisher
	stateFailed                        // the publisher returned an error
	stateDeferred                      // its topic's circuit is open: held until the cooldown ends
	stateExpired                       // its expiry passed: not published
)

// process publishes one batch and settles every message of it in the
// store. It returns how many publishes failed.
func (p *Processor) process(ctx context.Context, b batch) int {
	return p.settle(ctx, b, p.publish(ctx, b))
}

// publish publishes one batch, renewing its leases meanwhile, and returns
// what became of each message.
func (p *Processor) publish(ctx context.Context, b batch) []outcome {
	batch := b.items
	p.cfg.Observer.Claimed(len(batch))
	outcomes := make([]outcome, len(batch))

	if p.apub != nil {
		p.publishWaves(ctx, batch, outcomes)
	} else {
		p.publishLanes(ctx, batch, outcomes)
	}
	b.stopRenewing()
	return outcomes
}

// partitionKey returns the key the message is ordered by ([SequenceKey]),
// "" for none.
func partitionKey(m async.Message) string { return SequenceKey(m.Metadata()) }

// publishLanes publishes a batch with the workers. A key has at most one
// message in flight: its next message becomes ready only once the previous
// one was confirmed, so a key's messages never overtake each other, and any
// idle worker takes the next ready message, so a busy key does not hold the
// other keys back. When a message fails (or its topic's circuit is open),
// the rest of its key is left unpublished and released.
func (p *Processor) publishLanes(ctx context.Context, batch []Claimed, outcomes []outcome) {
	queues := make(map[string][]int) // the waiting messages of each key
	ready := make(chan int, len(batch))
	for i, c := range batch {
		key := partitionKey(c.Message)
		if key == "" {
			ready <- i
			continue
		}
		if _, ok := queues[key]; !ok {
			ready <- i // the key's first message
			queues[key] = []int{}
			continue
		}
		queues[key] = append(queues[key], i)
	}
	var mu sync.Mutex
	remaining := len(batch)
	// done settles message i: the key's next message becomes ready, or, when
	// park is set, the rest of the key is dropped. The last one closes ready.
	done := func(i int, park bool) {
		mu.Lock()
		defer mu.Unlock()
		remaining--
		if key := partitionKey(batch[i].Message); key != "" {
			q := queues[key]
			switch {
			case park:
				remaining -= len(q)
				queues[key] = nil
			case len(q) > 0:
				queues[key] = q[1:]
				ready <- q[0]
			}
		}
		if remaining == 0 {
			close(ready)
		}
	}
	var g errgroup.Group
	for range min(p.cfg.Workers, len(batch)) {
		g.Go(func() error {
			for i := range ready {
				msg := batch[i].Message
				if ctx.Err() != nil {
					done(i, true) // cut by a hard stop: released, not counted
					continue
				}
				if expired(msg, p.cfg.Clock.Now()) {
					outcomes[i] = outcome{state: stateExpired}
					done(i, !p.dropsExpired()) // a dead letter parks its key
					continue
				}
				if wait := p.breaker.openFor(msg.Subject(), p.cfg.Clock.Now()); wait > 0 {
					outcomes[i] = outcome{state: stateDeferred, wait: wait}
					done(i, true)
					continue
				}
				if err := p.publishOne(ctx, msg); err != nil {
					if ctx.Err() == nil {
						outcomes[i] = outcome{state: stateFailed, err: err}
						p.topicFailed(ctx, msg, err)
					}
					done(i, true)
					continue
				}
				p.breaker.success(msg.Subject())
				outcomes[i] = outcome{state: statePublished}
				done(i, false)
			}
			return nil
		})
	}
	_ = g.Wait() // workers report through outcomes, never through errors
}

func (p *Processor) publishOne(ctx context.Context, msg async.Message) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
	defer cancel()
	start := p.cfg.Clock.Now()
	err := func() (err error) {
		defer async.RecoverPanic(&err) // a panicking publisher fails this attempt
		return p.pub.Publish(ctx, msg.Subject(), msg)
	}()
	if err != nil {
		return err
	}
	now := p.cfg.Clock.Now()
	p.cfg.Observer.Published(msg, now.Sub(start), now.Sub(msg.SentAt()))
	return nil
}

// publishWaves publishes a batch through an asynchronous publisher in
// waves: each wave holds every unkeyed message not yet sent and the next
// message of every key that has not failed, so one wave costs one round of
// confirmations and a key's messages still never overtake each other.
func (p *Processor) publishWaves(ctx context.Context, batch []Claimed, outcomes []outcome) {
	queues := make(map[string][]int)
	var order []string
	var wave []int
	now := p.cfg.Clock.Now()
	var held map[string]bool // keys whose head was deferred
	for i, c := range batch {
		key := partitionKey(c.Message)
		if held[key] {
			continue // released with the rest of its key
		}
		if expired(c.Message, now) {
			outcomes[i] = outcome{state: stateExpired}
			if key != "" && !p.dropsExpired() { // a dead letter parks its key
				if held == nil {
					held = map[string]bool{}
				}
				held[key] = true
			}
			continue
		}
		if wait := p.breaker.openFor(c.Message.Subject(), now); wait > 0 {
			outcomes[i] = outcome{state: stateDeferred, wait: wait}
			if key != "" {
				if held == nil {
					held = map[string]bool{}
				}
				held[key] = true
			}
			continue
		}
		if key == "" {
			wave = append(wave, i)
			continue
		}
		if _, ok := queues[key]; !ok {
			order = append(order, key)
		}
		queues[key] = append(queues[key], i)
	}
	for {
		for _, key := range order {
			if q := queues[key]; len(q) > 0 {
				wave = append(wave, q[0])
				queues[key] = q[1:]
			}
		}
		if len(wave) == 0 || ctx.Err() != nil {
			return
		}
		msgs := make([]async.Message, len(wave))
		for j, i := range wave {
			msgs[j] = batch[i].Message
		}
		start := p.cfg.Clock.Now()
		wctx, cancel := context.WithTimeout(ctx, p.cfg.PublishTimeout)
		errs, err := func() (errs []error, err error) {
			// A panicking publisher fails every message of the call.
			defer async.RecoverPanic(&err)
			return p.apub.PublishBatch(wctx, msgs)
		}()
		cancel()
		if ctx.Err() != nil {
			return // cut by a hard stop: released, not counted
		}
		now = p.cfg.Clock.Now()
		for j, i := range wave {
			perr := err
			if perr == nil && j < len(errs) {
				perr = errs[j]
			} else if perr == nil {
				perr = errors.New("txm: publisher returned no result for the message")
			}
			msg := batch[i].Message
			if perr != nil {
				outcomes[i] = outcome{state: stateFailed, err: perr}
				p.topicFailed(ctx, msg, perr)
				if key := partitionKey(msg); key != "" {
					delete(queues, key) // park the rest of the key
				}
				continue
			}
			outcomes[i] = outcome{state: statePublished}
			p.breaker.success(msg.Subject())
			p.cfg.Observer.Published(msg, now.Sub(start), now.Sub(msg.SentAt()))
		}
		wave = wave[:0]
	}
}

// renewLeases extends the claims of a batch every Lease/3 until the
// returned function is called.
func (p *Processor) renewLeases(ctx context.Context, batch []Claimed) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	ids := make([]string, len(batch))
	for i, c := range batch {
		ids[i] = c.Message.ID()
	}
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-p.cfg.Clock.After(p.cfg.Lease / 3):
			}
			// Renewing every claim of the batch is cheap and never wrong:
			// settled messages are no longer leased by the store's rules.
			if err := p.claimer.ExtendClaims(ctx, p.cfg.Lease, ids...); err != nil && ctx.Err() == nil {
				p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "txm: relay: renewing leases failed", slog.Any("error", err))
			}
		}
	}()
	return func() { close(done); <-exited }
}

// settle records the outcomes of a batch in the store. It uses a context
// that outlives a hard stop, so claims are released even then. A locked
// claim's outcomes are written in its transaction, which settle then
// commits; a store call that fails there is not retried (the failed
// statement ends the transaction), and a failed commit leaves the batch's
// messages pending, to be published again: the inbox absorbs the
// duplicates.
func (p *Processor) settle(ctx context.Context, b batch, outcomes []outcome) int {
	batch, tries := b.items, storeCallTries
	if b.held != nil {
		ctx, tries = b.held.ctx, 1
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.PublishTimeout)
	defer cancel()
	var published, skipped []string
	var deferred map[time.Duration][]string
	failed := 0
	for i, c := range batch {
		switch outcomes[i].state {
		case statePublished:
			published = append(published, c.Message.ID())
		case stateSkipped:
			skipped = append(skipped, c.Message.ID())
		case stateDeferred:
			if deferred == nil {
				deferred = map[time.Duration][]string{}
			}
			deferred[outcomes[i].wait] = append(deferred[outcomes[i].wait], c.Message.ID())
		}
	}
	// Messages of an open topic keep their claim until the cooldown ends:
	// they are not counted as attempts, and no relay takes them meanwhile.
	for wait, ids := range deferred {
		if p.claimer == nil {
			break
		}
		p.storeCall(sctx, tries, "hold claims", func(ctx context.Context) error {
			return p.claimer.ExtendClaims(ctx, wait, ids...)
		})
	}
	if len(published) > 0 {
		p.storeCall(sctx, tries, "mark published", func(ctx context.Context) error {
			return p.store.MarkPublished(ctx, published...)
		})
	}
	for i, c := range batch {
		switch outcomes[i].state {
		case stateFailed:
			failed++
			p.fail(sctx, tries, c, outcomes[i].err)
		case stateExpired:
			p.expire(sctx, tries, c)
		}
	}
	if len(skipped) > 0 && p.claimer != nil && b.held == nil { // a rollback or commit frees them
		p.storeCall(sctx, tries, "release claims", func(ctx context.Context) error {
			return p.claimer.ReleaseClaims(ctx, skipped...)
		})
	}
	if b.held != nil {
		if err := b.held.finish(true); err != nil {
			p.cfg.Logger.LogAttrs(ctx, slog.LevelError, "txm: relay: committing a batch's outcome failed; its messages will be published again",
				slog.Int("messages", len(batch)), slog.Any("error", err))
		}
	}
	// The batch's claims have ended: the later messages of its keys (which
	// a claim made meanwhile had to leave out) and the messages left
	// unattempted are free now. Wake an idle claim loop for them, which
	// would otherwise wait for the next save or the poll interval.
	if p.claimer != nil && (len(skipped) > 0 || slices.ContainsFunc(batch, func(c Claimed) bool { return partitionKey(c.Message) != "" })) {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return failed
}

// topicFailed feeds a failed publish to the topic's circuit breaker.
// Permanent errors say nothing about the topic's health.
func (p *Processor) topicFailed(ctx context.Context, msg async.Message, err error) {
	if retry.IsPermanent(err) {
		return
	}
	if d := p.breaker.failure(msg.Subject(), p.cfg.Clock.Now()); d > 0 {
		p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "txm: relay: topic keeps failing; holding its messages",
			slog.String("topic", msg.Subject()), slog.Duration("cooldown", d), slog.Any("error", err))
	}
}

// fail records one failed publish: a retry later, or dead letters.
func (p *Processor) fail(ctx context.Context, tries int, c Claimed, cause error) {
	msg := c.Message
	attempts := c.Attempts + 1
	log := p.cfg.Logger.With(slog.String("message_id", msg.ID()), slog.String("topic", msg.Subject()),
		slog.Int("attempts", attempts), slog.Any("error", cause))
	if p.claimer == nil {
		log.LogAttrs(ctx, slog.LevelWarn, "txm: relay: publish failed; the message stays pending")
		p.cfg.Observer.Retried(msg, attempts, cause)
		return
	}
	max := p.cfg.Retry.MaxAttempts
	if p.dead != nil && (retry.IsPermanent(cause) || (max > 0 && attempts >= max)) {
		log.LogAttrs(ctx, slog.LevelError, "txm: relay: message moved to dead letters")
		p.storeCall(ctx, tries, "mark dead", func(ctx context.Context) error {
			return p.dead.MarkDead(ctx, msg.ID(), cause.Error())
		})
		p.cfg.Observer.Dead(msg, attempts, cause)
		return
	}
	delay := p.cfg.Retry.Delay(attempts)
	if exp, ok := expiresAt(msg); ok && !p.cfg.Clock.Now().Add(delay).Before(exp) {
		log.LogAttrs(ctx, slog.LevelWarn, "txm: relay: publish failed and the retry would come after the message's expiry")
		p.expire(ctx, tries, c)
		return
	}
	log.LogAttrs(ctx, slog.LevelWarn, "txm: relay: publish failed; retrying later", slog.Duration("retry_in", delay))
	p.storeCall(ctx, tries, "mark failed", func(ctx context.Context) error {
		return p.claimer.MarkFailed(ctx, msg.ID(), delay, cause.Error())
	})
	p.retryAt(p.cfg.Clock.Now().Add(delay))
	p.cfg.Observer.Retried(msg, attempts, cause)
}

// ErrExpired is the error the relay gives [Observer.Dead] for a message it
// moved to dead letters because its expiry passed (stored with the cause
// [ExpiredCause]). Checked with errors.Is.
var ErrExpired = errors.New("txm: message expired before it was published")

// dropsExpired reports whether the relay drops expired messages rather
// than moving them to dead letters.
func (p *Processor) dropsExpired() bool {
	return p.cfg.DropExpired || p.dead == nil || p.claimer == nil
}

// expire settles a message whose expiry passed (or would pass before its
// retry): dead letters with [ExpiredCause], or dropped.
func (p *Processor) expire(ctx context.Context, tries int, c Claimed) {
	msg := c.Message
	exp, _ := expiresAt(msg)
	if p.dropsExpired() {
		p.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "txm: relay: message expired; dropped",
			slog.String("message_id", msg.ID()), slog.String("topic", msg.Subject()), slog.Time("expires_at", exp))
		p.storeCall(ctx, tries, "mark expired published", func(ctx context.Context) error {
			return p.store.MarkPublished(ctx, msg.ID())
		})
		if p.expObs != nil {
			p.expObs.Expired(msg, true)
		}
		return
	}
	p.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "txm: relay: message expired; moved to dead letters",
		slog.String("message_id", msg.ID()), slog.String("topic", msg.Subject()), slog.Time("expires_at", exp))
	p.storeCall(ctx, tries, "mark expired dead", func(ctx context.Context) error {
		return p.dead.MarkDead(ctx, msg.ID(), ExpiredCause)
	})
	p.cfg.Observer.Dead(msg, c.Attempts+1, ErrExpired)
	if p.expObs != nil {
		p.expObs.Expired(msg, false)
	}
}

// storeCallTries is how many times storeCall tries a bookkeeping call
// outside a locked claim's transaction.
const storeCallTries = 3

// storeCall runs a bookkeeping call, trying it up to tries times with
// quick retries. When it still fails the claims lapse and the messages are
// published again after the lease: a duplicate the consumer's inbox
// absorbs, never a loss.
func (p *Processor) storeCall(ctx context.Context, tries int, what string, call func(context.Context) error) {
	var err error
	for try := 1; try <= tries; try++ {
		if err = call(ctx); err == nil {
			return
		}
		if try < tries {
			select {
			case <-p.cfg.Clock.After(p.cfg.StoreRetry.Delay(try)):
			case <-ctx.Done():
				try = tries
			}
		}
	}
	p.cfg.Logger.LogAttrs(ctx, slog.LevelError, "txm: relay: store call failed", slog.String("call", what), slog.Any("error", err))
}
