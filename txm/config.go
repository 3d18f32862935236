package txm

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

// ProcessorConfig configures the relay built by [NewOutboxProcessorWithConfig].
// The zero value is usable: every zero field takes the default its comment
// names.
type ProcessorConfig struct {
	// Workers is how many messages of a batch are published at once.
	// Messages that share a partition key are published one after another:
	// a key has at most one message in flight. It does not apply to a
	// publisher that implements [async.AsyncPublisher] (JetStream), which
	// gets each batch in waves, with every message of a wave in flight at
	// once. Default 4.
	Workers int

	// BatchSize is how many messages the relay claims from the store at a
	// time. Default 100.
	BatchSize int

	// BatchesInFlight bounds how many claimed batches the relay holds
	// before their publish ends: while one batch is being published, up
	// to BatchesInFlight-1 more are claimed ahead, and the outcome of the
	// batch published before (MarkPublished and the like) is recorded at
	// the same time, so the store's round trips overlap the broker's. 1
	// claims only after the previous batch is settled. It applies to
	// stores that implement [Claimer]; with the seed's three methods the
	// relay always works one batch at a time. Default 2.
	BatchesInFlight int

	// LockClaims makes the relay claim each batch by locking its messages
	// in a store transaction that it holds until the batch is settled: the
	// outcomes (MarkPublished and the like) commit with it. A claim then
	// writes no lease and a batch costs one commit instead of two; a relay
	// that dies frees its messages at once instead of after the lease, and
	// one that stops responding while connected loses them when its
	// transaction has waited 2 × PublishTimeout + 1s for its next
	// statement (the transaction's idle_in_transaction_session_timeout).
	// Each batch in flight holds a database connection and an open
	// transaction for the length of its publish, and a key's next messages
	// can be claimed only once the batch holding its earlier ones has
	// committed, so claiming ahead does not help a backlog of a few busy
	// keys. Per-key order is kept as with leases. The store must implement
	// [LockingClaimer] (the outbox of sqlstore's LockingStore, on
	// PostgreSQL and MySQL; SQLite's does not): NewOutboxProcessorWithConfig
	// fails otherwise. Default false: leases.
	LockClaims bool

	// PollInterval is how long the relay waits for new messages when the
	// store is empty and no wake-up arrives (see [Waker]). With a store
	// whose wake-ups come for every save (see [FullWaker]), the relay also
	// waits (for a wake-up, at most PollInterval) after a claim that came
	// back with fewer than BatchSize messages, instead of claiming again at
	// once; a settled batch that freed the later messages of its keys wakes
	// it too. Default 1s.
	PollInterval time.Duration

	// Lease is how long a claim lasts on stores that implement [Claimer].
	// The relay renews the leases of a batch every Lease/3 while it is still
	// publishing it. Default 30s.
	Lease time.Duration

	// PublishTimeout bounds one publish (or one batch publish on an
	// [async.AsyncPublisher]). Default 30s.
	PublishTimeout time.Duration

	// Retry schedules a message's next attempt after a failed publish: the
	// delay before attempt n+1 is Retry.Delay(n). Its MaxAttempts is the
	// number of failed publishes after which a message goes to dead letters
	// (on stores that implement [DeadLetterStore]); 0 means the default of
	// 10, a negative value means never. The zero Policy means
	// [retry.DefaultPolicy].
	Retry retry.Policy

	// StoreRetry is the backoff used when the store itself fails (claiming
	// or marking): the relay keeps going and retries with growing delays,
	// and with stores that only have the three [OutboxStore] methods it also
	// paces retries of failed publishes. The zero Policy means
	// [retry.DefaultPolicy]; its MaxAttempts and MaxElapsedTime are ignored:
	// the relay never gives up.
	StoreRetry retry.Policy

	// BreakerThreshold is how many consecutive failed publishes open a
	// topic's circuit: its messages then wait (their claims are held, not
	// counted as attempts) for a cooldown taken from [ProcessorConfig.StoreRetry]
	// that grows with each opening, so a broken topic does not starve the
	// others. Default 10; a negative value disables the breaker.
	BreakerThreshold int

	// DrainTimeout bounds how long Start keeps publishing the batch in
	// flight after its context is cancelled. Default 10s.
	DrainTimeout time.Duration

	// Logger receives the relay's logs. Every record is logged with a
	// context derived from the one given to Start (LogAttrs), so a
	// trace-aware handler sees its values. The start record's claim_mode
	// attribute says how the relay claims: "locked" ([ProcessorConfig.LockClaims]),
	// "leases" (a [Claimer]) or "unpublished" (FindUnpublished, for a
	// store without claims). Default: slog.Default().
	Logger *slog.Logger

	// Clock is the relay's time source. Default: the system clock.
	Clock Clock

	// Observer receives the relay's events, for metrics. Default: none.
	Observer Observer

	// DropExpired makes the relay drop a message whose expiry
	// ([async.MetaExpiresAt], see [WithExpiresAt]) has passed, marking it
	// done without publishing it, instead of moving it to dead letters with
	// the cause [ExpiredCause]. A dropped message leaves no dead letter
	// behind, so it parks nothing of its key. Either way the Observer's
	// Expired is called when it implements [ExpiredObserver]. A store
	// without [DeadLetterStore] always drops. Default false: dead letters.
	DropExpired bool

	// Retention makes the relay delete old published messages, off the
	// hot path: in a goroutine of its own that Start starts and stops, a
	// pass at start and one every Retention.Interval, each deleting those
	// published more than Retention.Published ago in batches of
	// Retention.BatchSize through the store's [Purger]. The zero value
	// (Published 0) turns it off, the default: sqlstore deletes published
	// messages as it marks them, unless its Config.KeepPublished is set.
	// Inbox records are not the relay's: see [RunRetention].
	Retention RetentionConfig
}

const (
	defaultWorkers          = 4
	defaultBatchSize        = 100
	defaultPollInterval     = time.Second
	defaultLease            = 30 * time.Second
	defaultPublishTimeout   = 30 * time.Second
	defaultDrainTimeout     = 10 * time.Second
	defaultMaxAttempts      = 10
	defaultBatchesInFlight  = 2
	defaultBreakerThreshold = 10
)

func (c ProcessorConfig) withDefaults() (ProcessorConfig, error) {
	switch {
	case c.Workers < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.Workers must not be negative, got %d", c.Workers)
	case c.BatchSize < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.BatchSize must not be negative, got %d", c.BatchSize)
	case c.BatchesInFlight < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.BatchesInFlight must not be negative, got %d", c.BatchesInFlight)
	case c.PollInterval < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.PollInterval must not be negative, got %v", c.PollInterval)
	case c.Lease < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.Lease must not be negative, got %v", c.Lease)
	case c.PublishTimeout < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.PublishTimeout must not be negative, got %v", c.PublishTimeout)
	case c.DrainTimeout < 0:
		return c, fmt.Errorf("txm: ProcessorConfig.DrainTimeout must not be negative, got %v", c.DrainTimeout)
	}
	ret, err := c.Retention.withDefaults("ProcessorConfig.Retention")
	if err != nil {
		return c, err
	}
	c.Retention = ret
	if c.Workers == 0 {
		c.Workers = defaultWorkers
	}
	if c.BatchSize == 0 {
		c.BatchSize = defaultBatchSize
	}
	if c.PollInterval == 0 {
		c.PollInterval = defaultPollInterval
	}
	if c.BatchesInFlight == 0 {
		c.BatchesInFlight = defaultBatchesInFlight
	}
	switch {
	case c.BreakerThreshold == 0:
		c.BreakerThreshold = defaultBreakerThreshold
	case c.BreakerThreshold < 0:
		c.BreakerThreshold = 0
	}
	if c.Lease == 0 {
		c.Lease = defaultLease
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = defaultPublishTimeout
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = defaultDrainTimeout
	}
	if c.Retry == (retry.Policy{}) {
		c.Retry = retry.DefaultPolicy()
	}
	switch {
	case c.Retry.MaxAttempts == 0:
		c.Retry.MaxAttempts = defaultMaxAttempts
	case c.Retry.MaxAttempts < 0:
		c.Retry.MaxAttempts = 0
	}
	if err := c.Retry.Validate(); err != nil {
		return c, fmt.Errorf("txm: ProcessorConfig.Retry: %w", err)
	}
	if c.StoreRetry == (retry.Policy{}) {
		c.StoreRetry = retry.DefaultPolicy()
	}
	c.StoreRetry.MaxAttempts = 0
	c.StoreRetry.MaxElapsedTime = 0
	if err := c.StoreRetry.Validate(); err != nil {
		return c, fmt.Errorf("txm: ProcessorConfig.StoreRetry: %w", err)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c, nil
}

// Clock is the relay's source of time. Tests inject a fake one to make
// waits deterministic.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Observer receives the relay's events. Implementations must be safe for
// concurrent use and quick: they run on the relay's workers. The package
// txm/txmotel turns them into OpenTelemetry metrics.
type Observer interface {
	// Claimed reports a batch taken from the store.
	Claimed(n int)
	// Published reports a message the broker confirmed, with the time the
	// publish took and the time since the message was sent.
	Published(msg async.Message, took, sinceSent time.Duration)
	// Retried reports a failed publish that will be tried again.
	Retried(msg async.Message, attempts int, err error)
	// Dead reports a message moved to dead letters.
	Dead(msg async.Message, attempts int, err error)
}

type nopObserver struct{}

func (nopObserver) Claimed(int)                                           {}
func (nopObserver) Published(async.Message, time.Duration, time.Duration) {}
func (nopObserver) Retried(async.Message, int, error)                     {}
func (nopObserver) Dead(async.Message, int, error)                        {}
