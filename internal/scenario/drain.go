package scenario

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// A drain implementation: the strong hand-written loop, or the relay with
// a configuration.
const (
	ImplLoop         = "loop"          // Loop on its own minimal table
	ImplRelayDefault = "relay-default" // ProcessorConfig{BatchSize: batch}
	ImplRelayLock    = "relay-lock"    // the recommended configuration: LockClaims
	// ImplLoopOutbox is, on MySQL only, the loop of [MySQLLoop] run on the
	// library's outbox table instead of its own: what the table costs.
	ImplLoopOutbox = "loop-outbox"
)

// Impls lists the drain implementations.
var Impls = []string{ImplLoop, ImplRelayLock, ImplRelayDefault}

// DrainSpec is one measured drain: a backlog of Messages messages of
// PayloadSize bytes, saved before the timed part, drained from PostgreSQL
// into JetStream by Impl with batches of Batch.
type DrainSpec struct {
	PostgresURL, NATSURL string
	// MySQLURL, when set, runs the drain on MySQL or MariaDB instead of
	// PostgreSQL: a DSN of github.com/go-sql-driver/mysql, in whose server
	// the drain creates a database of its own; the loop is [MySQLLoop].
	MySQLURL    string
	Impl        string
	Batch       int
	Messages    int
	PayloadSize int
	// Keys gives the relay's messages that many partition keys, round
	// robin; 0: none. The loop keeps no key order and ignores it.
	Keys int
	// Relay, when set, replaces the relay's configuration (BatchSize is
	// still Batch); PublisherConfig is the JetStream publisher's.
	Relay           *txm.ProcessorConfig
	PublisherConfig natsjs.PublisherConfig
	// Timed, when set, is called as the timed part starts; the function
	// it returns, as it ends (to profile the drain alone, for example).
	Timed func() (end func())
}

// DrainResult is what a drain measured. The CPU figures are per message,
// in microseconds, over the timed part only.
type DrainResult struct {
	Impl       string  `json:"impl"`
	Batch      int     `json:"batch"`
	Workers    int     `json:"workers,omitempty"` // set by callers that sweep ProcessorConfig.Workers
	Messages   int     `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_s"`
	RelayUS    float64 `json:"relay_cpu_us"`
	PostgresUS float64 `json:"postgres_cpu_us"`
	MySQLUS    float64 `json:"mysql_cpu_us,omitempty"`
	NATSUS     float64 `json:"nats_cpu_us"`
	TotalUS    float64 `json:"total_cpu_us"`
	// Allocs is the heap objects this process allocated per message.
	Allocs float64 `json:"allocs_per_msg"`
}

// RelayConfig returns the relay configuration of impl at batch size batch.
func RelayConfig(impl string, batch int) (txm.ProcessorConfig, error) {
	switch impl {
	case ImplRelayDefault:
		return txm.ProcessorConfig{BatchSize: batch}, nil
	case ImplRelayLock:
		return txm.ProcessorConfig{BatchSize: batch, LockClaims: true}, nil
	}
	return txm.ProcessorConfig{}, fmt.Errorf("unknown relay implementation %q (want one of %v)", impl, Impls)
}

// Drain sets up a schema and a stream of its own, fills the backlog,
// settles the table (VACUUM ANALYZE, CHECKPOINT), drains it with the timer
// and the CPU counters running, checks that every message was published
// once and marked, and removes what it set up. Run one drain per process
// when the CPU figures matter: the garbage and caches of an earlier drain
// would count against the next.
func Drain(ctx context.Context, s DrainSpec) (DrainResult, error) {
	if s.Impl == ImplLoopOutbox && s.MySQLURL == "" {
		return DrainResult{}, fmt.Errorf("%s runs on MySQL only", ImplLoopOutbox)
	}
	if s.Impl != ImplLoop && s.Impl != ImplLoopOutbox && !slices.Contains(Impls, s.Impl) && s.Relay == nil {
		return DrainResult{}, fmt.Errorf("unknown implementation %q (want one of %v or %s)", s.Impl, Impls, ImplLoopOutbox)
	}
	if s.MySQLURL != "" {
		return drainMySQL(ctx, s)
	}
	e, err := Open(ctx, s.PostgresURL, s.NATSURL)
	if err != nil {
		return DrainResult{}, err
	}
	defer e.Close()
	return drainOn(ctx, s, e)
}

// drainDatabase is where a drain runs: the strong loop's table and the
// library's outbox in one database, and the stream they publish to.
type drainDatabase interface {
	// startLoop creates the loop's table with n rows of payload and
	// returns the loop's drain with batches of size.
	startLoop(ctx context.Context, n, size int, payload []byte) (drain func(context.Context) (int, error), err error)
	LoopUnpublished(ctx context.Context) (int, error)
	// outboxStore returns a store on the library's tables; the caller
	// closes it.
	outboxStore(ctx context.Context) (*sqlstore.LockingStore, error)
	FillOutbox(ctx context.Context, store *sqlstore.LockingStore, msgs []async.Message) error
	OutboxUnpublished(ctx context.Context) (int, error)
	Messages(n, keys int, payload []byte) []async.Message
	DrainRelay(ctx context.Context, store *sqlstore.LockingStore, n int, cfg txm.ProcessorConfig, pubCfg natsjs.PublisherConfig) (time.Duration, error)
	StreamMessages(ctx context.Context) (uint64, error)
}

// drainOn is Drain on db.
func drainOn(ctx context.Context, s DrainSpec, db drainDatabase) (DrainResult, error) {
	payload := Payload(s.PayloadSize)
	var run func(ctx context.Context) (time.Duration, error)
	var unpublished func(ctx context.Context) (int, error)
	if s.Impl == ImplLoop {
		drain, err := db.startLoop(ctx, s.Messages, s.Batch, payload)
		if err != nil {
			return DrainResult{}, err
		}
		run = timedLoop(drain, s.Messages)
		unpublished = db.LoopUnpublished
	} else {
		c, err := s.relayConfig()
		if err != nil {
			return DrainResult{}, err
		}
		store, err := filledOutbox(ctx, db, s.Messages, s.Keys, payload)
		if err != nil {
			return DrainResult{}, err
		}
		defer store.Close()
		run = func(ctx context.Context) (time.Duration, error) {
			return db.DrainRelay(ctx, store, s.Messages, c, s.PublisherConfig)
		}
		unpublished = db.OutboxUnpublished
	}
	return measureDrain(ctx, s, run, unpublished, db.StreamMessages)
}

// filledOutbox returns a store on db's library tables, migrated, with a
// backlog of n messages of payload over keys partition keys; the caller
// closes it.
func filledOutbox(ctx context.Context, db drainDatabase, n, keys int, payload []byte) (*sqlstore.LockingStore, error) {
	store, err := db.outboxStore(ctx)
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx); err != nil {
		_ = store.Close()
		return nil, err
	}
	if err := db.FillOutbox(ctx, store, db.Messages(n, keys, payload)); err != nil {
		_ = store.Close()
		return nil, err
	}
	return store, nil
}

// timedLoop returns a timed run of a loop's drain that must publish n
// messages.
func timedLoop(drain func(context.Context) (int, error), n int) func(context.Context) (time.Duration, error) {
	return func(ctx context.Context) (time.Duration, error) {
		start := time.Now()
		got, err := drain(ctx)
		if err == nil && got != n {
			err = fmt.Errorf("the loop published %d messages, want %d", got, n)
		}
		return time.Since(start), err
	}
}

// relayConfig returns the relay's configuration of s.
func (s DrainSpec) relayConfig() (txm.ProcessorConfig, error) {
	c := txm.ProcessorConfig{}
	if s.Relay != nil {
		c = *s.Relay
	} else {
		var err error
		if c, err = RelayConfig(s.Impl, s.Batch); err != nil {
			return c, err
		}
	}
	c.BatchSize = s.Batch
	return c, nil
}

// measureDrain runs the drain run, filled and ready, with the timer and
// the CPU counters running, and checks that every message was published
// once (streamMessages) and none is left (unpublished).
func measureDrain(ctx context.Context, s DrainSpec, run func(ctx context.Context) (time.Duration, error),
	unpublished func(ctx context.Context) (int, error), streamMessages func(ctx context.Context) (uint64, error)) (DrainResult, error) {
	runtime.GC() // the fill's garbage is not the drain's
	before, err := ReadCPU()
	if err != nil {
		return DrainResult{}, err
	}
	end := func() {}
	if s.Timed != nil {
		end = s.Timed()
	}
	took, err := run(ctx)
	end()
	if err != nil {
		return DrainResult{}, err
	}
	after, err := ReadCPU()
	if err != nil {
		return DrainResult{}, err
	}
	if n, err := unpublished(ctx); err != nil || n != 0 {
		return DrainResult{}, fmt.Errorf("after the drain: %d rows unpublished (%v)", n, err)
	}
	if n, err := streamMessages(ctx); err != nil || n != uint64(s.Messages) {
		return DrainResult{}, fmt.Errorf("after the drain: %d messages in the stream, want %d (%v)", n, s.Messages, err)
	}
	cpu := after.Sub(before)
	// Only the database the drain ran on counts.
	if s.MySQLURL != "" {
		cpu.Postgres = 0
	} else {
		cpu.MySQL = 0
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(s.Messages) }
	return DrainResult{
		Impl: s.Impl, Batch: s.Batch, Messages: s.Messages,
		Seconds:    took.Seconds(),
		MsgsPerSec: float64(s.Messages) / took.Seconds(),
		RelayUS:    per(cpu.Self), PostgresUS: per(cpu.Postgres), MySQLUS: per(cpu.MySQL), NATSUS: per(cpu.NATS),
		TotalUS: per(cpu.Total()),
		Allocs:  float64(cpu.Allocs) / float64(s.Messages),
	}, nil
}
