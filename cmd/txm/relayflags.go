package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/transmanager/transmanager/txm"
)

// relayEnvPrefix starts the environment variable of every relay flag: the
// flag -batches-in-flight is also TXM_RELAY_BATCHES_IN_FLIGHT.
const relayEnvPrefix = "TXM_RELAY_"

// relayEnv returns the environment variable of the relay flag name.
func relayEnv(name string) string {
	return relayEnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// relayConfig is what txm relay runs with, from its flags and environment.
type relayConfig struct {
	postgres, schema, sqlite, mysql string
	pollOnly, keepPublished         bool

	nats        string
	stream      string
	subjects    []string
	duplicates  time.Duration
	httpAddr    string
	logLevel    slog.Level
	processor   txm.ProcessorConfig // without Logger and Observer
	healthLimit time.Duration       // bound of one /healthz check
}

// The defaults of the relay's flags, which are txm.ProcessorConfig's and
// txm.RetentionConfig's.
const (
	relayDefaultWorkers           = 4
	relayDefaultBatch             = 100
	relayDefaultBatchesInFlight   = 2
	relayDefaultPollInterval      = time.Second
	relayDefaultLease             = 30 * time.Second
	relayDefaultPublishTimeout    = 30 * time.Second
	relayDefaultRetryInitial      = 100 * time.Millisecond
	relayDefaultRetryMax          = 30 * time.Second
	relayDefaultRetryMaxAttempts  = 10
	relayDefaultBreakerThreshold  = 10
	relayDefaultDrainTimeout      = 10 * time.Second
	relayDefaultRetentionInterval = time.Minute
	relayDefaultRetentionBatch    = 1000
	relayDefaultDuplicates        = 10 * time.Minute
	relayDefaultHealthTimeout     = 2 * time.Second
)

const relaySynopsis = "(-postgres URL [-schema S] | -sqlite PATH | -mysql DSN) -nats URL [-stream NAME -subjects S,...] [-http ADDR] [flags]"

const relayAbout = `
Run the relay as a process of its own: claim the messages the store's outbox
holds and publish them to NATS JetStream until SIGTERM or SIGINT, then finish
the batches in flight (for at most -drain-timeout), release the claims it did
not finish and exit with status 0. The store's tables must exist (txm
migrate). Each flag can also be set by the environment variable named after
it in brackets; a flag given on the command line wins over its variable, and
an empty variable counts as unset.

Logs are JSON records on stderr. The relay waits, logging why, until the
store and the broker answer before it claims anything, so it may start before
them. With -stream and -subjects it creates that stream (file storage) when
it does not exist; an existing stream is left as it is.

With -http, it serves /healthz (200 once the store answers a ping and the
broker a JetStream request, rechecked at each request; 503 with the reasons
otherwise, and while the relay starts or stops) and /metrics (Prometheus
text: the txm/txmotel instruments, such as txm_relay_published_total by
topic and txm_outbox_backlog, and the Go runtime's). The bound address is
logged at start, so ":0" picks a free port.`

// parseRelayFlags reads the relay's configuration from args and, for the
// flags args does not set, from the environment that getenv reads. A bad
// value is a usage error naming the flag or the variable it came from.
func parseRelayFlags(args []string, getenv func(string) string, stdout, stderr io.Writer) (relayConfig, error) {
	fs := newFlagSet("relay", relaySynopsis, relayAbout)
	c := relayConfig{logLevel: slog.LevelInfo}
	p := &c.processor
	var subjects string

	fs.StringVar(&c.postgres, "postgres", "", "PostgreSQL URL of the store (a pgx pool; pool_max_conns in the URL sets its size)")
	fs.StringVar(&c.schema, "schema", "", "PostgreSQL schema of the tables (default: the search path)")
	fs.StringVar(&c.sqlite, "sqlite", "", "SQLite database file of the store")
	fs.StringVar(&c.mysql, "mysql", "", "MySQL or MariaDB DSN of the store (github.com/go-sql-driver/mysql), e.g. user:pass@tcp(host:3306)/app")
	fs.BoolVar(&c.pollOnly, "poll-only", false, "PostgreSQL: no LISTEN/NOTIFY, find new messages by polling (behind a pooler in transaction mode)")
	fs.BoolVar(&c.keepPublished, "keep-published", false, "keep published messages in the outbox until retention removes them (sqlstore's Config.KeepPublished)")
	fs.StringVar(&c.nats, "nats", "", "NATS server URL, or several separated by commas (required)")
	fs.StringVar(&c.stream, "stream", "", "JetStream stream to create at start when it does not exist (with -subjects)")
	fs.StringVar(&subjects, "subjects", "", "the -stream's subjects, separated by commas, e.g. orders.>,payments.>")
	fs.DurationVar(&c.duplicates, "stream-duplicates", relayDefaultDuplicates, "duplicate window of a stream -stream creates")
	fs.StringVar(&c.httpAddr, "http", "", "address of the /healthz and /metrics listener, e.g. 127.0.0.1:9090 (default: none)")
	fs.DurationVar(&c.healthLimit, "health-timeout", relayDefaultHealthTimeout, "bound of one /healthz check of the store and the broker")
	fs.Var(levelFlag{&c.logLevel}, "log-level", "lowest `level` logged: debug, info, warn or error")

	fs.IntVar(&p.Workers, "workers", relayDefaultWorkers, "messages of a batch published at once (ProcessorConfig.Workers)")
	fs.IntVar(&p.BatchSize, "batch", relayDefaultBatch, "messages claimed per round trip to the store (ProcessorConfig.BatchSize)")
	fs.IntVar(&p.BatchesInFlight, "batches-in-flight", relayDefaultBatchesInFlight, "batches claimed and not yet published (ProcessorConfig.BatchesInFlight)")
	fs.BoolVar(&p.LockClaims, "lock-claims", false, "PostgreSQL and MySQL: claim by row locks held in a transaction until a batch is settled, instead of leases (ProcessorConfig.LockClaims)")
	fs.DurationVar(&p.PollInterval, "poll-interval", relayDefaultPollInterval, "wait when the store is empty and no wake-up arrives (ProcessorConfig.PollInterval)")
	fs.DurationVar(&p.Lease, "lease", relayDefaultLease, "claim lease, renewed every third of it while a batch publishes (ProcessorConfig.Lease)")
	fs.DurationVar(&p.PublishTimeout, "publish-timeout", relayDefaultPublishTimeout, "bound of one publish or one batch publish (ProcessorConfig.PublishTimeout)")
	fs.DurationVar(&p.Retry.InitialInterval, "retry-initial", relayDefaultRetryInitial, "delay before a failed message's first retry, doubling from there (ProcessorConfig.Retry.InitialInterval)")
	fs.DurationVar(&p.Retry.MaxInterval, "retry-max", relayDefaultRetryMax, "longest delay between a message's retries (ProcessorConfig.Retry.MaxInterval)")
	fs.IntVar(&p.Retry.MaxAttempts, "retry-max-attempts", relayDefaultRetryMaxAttempts, "failed publishes after which a message goes to dead letters; -1: never (ProcessorConfig.Retry.MaxAttempts)")
	fs.DurationVar(&p.StoreRetry.InitialInterval, "store-retry-initial", relayDefaultRetryInitial, "first delay after a store error (ProcessorConfig.StoreRetry.InitialInterval)")
	fs.DurationVar(&p.StoreRetry.MaxInterval, "store-retry-max", relayDefaultRetryMax, "longest delay after store errors, and of an open circuit's cooldown (ProcessorConfig.StoreRetry.MaxInterval)")
	fs.IntVar(&p.BreakerThreshold, "breaker-threshold", relayDefaultBreakerThreshold, "consecutive failed publishes that open a topic's circuit; -1: no breaker (ProcessorConfig.BreakerThreshold)")
	fs.BoolVar(&p.DropExpired, "drop-expired", false, "drop a message whose expiry passed instead of moving it to dead letters (ProcessorConfig.DropExpired)")
	fs.DurationVar(&p.DrainTimeout, "drain-timeout", relayDefaultDrainTimeout, "how long a stopping relay keeps publishing the batches in flight (ProcessorConfig.DrainTimeout)")
	fs.DurationVar(&p.Retention.Published, "retention-published", 0, "delete published messages older than this, with -keep-published; 0: off (ProcessorConfig.Retention.Published)")
	fs.DurationVar(&p.Retention.Interval, "retention-interval", relayDefaultRetentionInterval, "time between retention passes (ProcessorConfig.Retention.Interval)")
	fs.IntVar(&p.Retention.BatchSize, "retention-batch", relayDefaultRetentionBatch, "rows one retention statement deletes at most (ProcessorConfig.Retention.BatchSize)")

	fs.VisitAll(func(f *flag.Flag) { f.Usage += " [$" + relayEnv(f.Name) + "]" })
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return c, err
	}

	// The variables of the flags the command line did not set.
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	fromEnv := map[string]bool{}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		env := relayEnv(f.Name)
		v := getenv(env)
		if envErr != nil || onCommandLine[f.Name] || v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("relay: invalid value %q for %s (-%s): %v", v, env, f.Name, err)
			return
		}
		fromEnv[f.Name] = true
	})
	if envErr != nil {
		return c, envErr
	}
	// source names where a flag's value came from, for an error.
	source := func(name string) string {
		if fromEnv[name] {
			return relayEnv(name)
		}
		return "-" + name
	}
	for _, s := range strings.Split(subjects, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.subjects = append(c.subjects, s)
		}
	}
	if err := c.check(source); err != nil {
		return c, err
	}
	return c, nil
}

// check reports a missing, contradictory or out-of-range setting as a usage
// error; source names the flag or variable a setting came from.
func (c *relayConfig) check(source func(string) string) error {
	p := &c.processor
	atLeast1 := func(name string, v int) error {
		if v < 1 {
			return usagef("relay: %s must be at least 1, got %d", source(name), v)
		}
		return nil
	}
	positive := func(name string, d time.Duration) error {
		if d <= 0 {
			return usagef("relay: %s must be positive, got %v", source(name), d)
		}
		return nil
	}
	var stores []string
	for _, s := range []struct{ name, v string }{{"postgres", c.postgres}, {"sqlite", c.sqlite}, {"mysql", c.mysql}} {
		if s.v != "" {
			stores = append(stores, source(s.name))
		}
	}
	switch {
	case len(stores) > 1:
		return usagef("relay: give one store, not %s", strings.Join(stores, " and "))
	case len(stores) == 0:
		return usagef("relay: give the store: -postgres URL, -sqlite PATH or -mysql DSN (or %s, %s, %s)",
			relayEnv("postgres"), relayEnv("sqlite"), relayEnv("mysql"))
	case c.sqlite != "" && c.schema != "":
		return usagef("relay: %s is for PostgreSQL; SQLite has none", source("schema"))
	case c.mysql != "" && c.schema != "":
		return usagef("relay: %s is for PostgreSQL; MySQL's database is the DSN's", source("schema"))
	case c.sqlite != "" && p.LockClaims:
		return usagef("relay: %s needs PostgreSQL or MySQL: SQLite has one writer at a time", source("lock-claims"))
	case c.postgres == "" && c.pollOnly:
		return usagef("relay: %s is for PostgreSQL; SQLite and MySQL are always polled", source("poll-only"))
	case c.nats == "":
		return usagef("relay: give the broker: -nats URL (or %s)", relayEnv("nats"))
	case (c.stream == "") != (len(c.subjects) == 0):
		return usagef("relay: %s and %s go together", source("stream"), source("subjects"))
	case p.Retry.MaxAttempts == 0:
		return usagef("relay: %s must not be 0 (-1: never dead-letter)", source("retry-max-attempts"))
	case p.BreakerThreshold == 0:
		return usagef("relay: %s must not be 0 (-1: no breaker)", source("breaker-threshold"))
	case p.Retention.Published < 0:
		return usagef("relay: %s must not be negative, got %v", source("retention-published"), p.Retention.Published)
	case p.Retry.MaxInterval < p.Retry.InitialInterval:
		return usagef("relay: %s (%v) must not be shorter than %s (%v)", source("retry-max"), p.Retry.MaxInterval, source("retry-initial"), p.Retry.InitialInterval)
	case p.StoreRetry.MaxInterval < p.StoreRetry.InitialInterval:
		return usagef("relay: %s (%v) must not be shorter than %s (%v)", source("store-retry-max"), p.StoreRetry.MaxInterval, source("store-retry-initial"), p.StoreRetry.InitialInterval)
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"workers", p.Workers}, {"batch", p.BatchSize}, {"batches-in-flight", p.BatchesInFlight}, {"retention-batch", p.Retention.BatchSize}} {
		if err := atLeast1(n.name, n.v); err != nil {
			return err
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"poll-interval", p.PollInterval}, {"lease", p.Lease}, {"publish-timeout", p.PublishTimeout},
		{"retry-initial", p.Retry.InitialInterval}, {"retry-max", p.Retry.MaxInterval},
		{"store-retry-initial", p.StoreRetry.InitialInterval}, {"store-retry-max", p.StoreRetry.MaxInterval},
		{"drain-timeout", p.DrainTimeout}, {"retention-interval", p.Retention.Interval},
		{"stream-duplicates", c.duplicates}, {"health-timeout", c.healthLimit},
	} {
		if err := positive(d.name, d.v); err != nil {
			return err
		}
	}
	return nil
}

// levelFlag is a -log-level value: debug, info, warn or error.
type levelFlag struct{ l *slog.Level }

func (f levelFlag) String() string {
	if f.l == nil { // the zero value flag.PrintDefaults compares with
		return ""
	}
	return strings.ToLower(f.l.String())
}

func (f levelFlag) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		*f.l = slog.LevelDebug
	case "info":
		*f.l = slog.LevelInfo
	case "warn", "warning":
		*f.l = slog.LevelWarn
	case "error":
		*f.l = slog.LevelError
	default:
		return fmt.Errorf("unknown level %q: debug, info, warn or error", s)
	}
	return nil
}
