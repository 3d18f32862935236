package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// OrderPlaced is the demo's event.
type OrderPlaced struct {
	OrderID  string `json:"order_id" msgpack:"order_id"`
	Customer string `json:"customer" msgpack:"customer"`
	Cents    int64  `json:"cents" msgpack:"cents"`
}

const topicPlaced = "orders.placed"

type demoConfig struct {
	orders   int
	dbPath   string
	keep     bool
	postgres string
	mysql    string
	nats     string
	timeout  time.Duration
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", "[-db PATH | -postgres URL | -mysql DSN] [-nats URL] [-orders N] [-timeout D]", `
Run an order service that writes orders and their events in one transaction,
the relay publishing them through a network that fails and duplicates some
publishes, and a billing consumer behind an inbox; then report what happened.
Without -postgres (or -mysql) and -nats it runs on a SQLite file and the
in-process broker.`)
	var cfg demoConfig
	fs.IntVar(&cfg.orders, "orders", 40, "orders the service tries to write")
	fs.StringVar(&cfg.dbPath, "db", "", "SQLite file for the embedded default (default: a new file in a temporary directory, removed afterwards)")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary SQLite file")
	fs.StringVar(&cfg.postgres, "postgres", "", "PostgreSQL URL: use PostgreSQL instead of SQLite")
	fs.StringVar(&cfg.mysql, "mysql", "", "MySQL or MariaDB DSN, e.g. user:pass@tcp(host:3306)/db: use MySQL instead of SQLite")
	fs.StringVar(&cfg.nats, "nats", "", "NATS URL: use JetStream instead of the in-process broker")
	fs.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "give up when the whole demo has not finished by then: opening the store and broker, writing the orders, the consumer catching up")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if cfg.orders < 1 {
		return usagef("demo: -orders must be at least 1")
	}
	if cfg.postgres != "" && cfg.mysql != "" {
		return usagef("demo: give -postgres or -mysql, not both")
	}
	if cfg.timeout <= 0 {
		return usagef("demo: -timeout must be positive")
	}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, fmt.Errorf("the demo did not finish within -timeout %v", cfg.timeout))
	defer cancel()
	if err := demo(ctx, cfg, stdout); err != nil {
		if cause := context.Cause(ctx); ctx.Err() != nil && cause != nil && !errors.Is(err, cause) {
			return fmt.Errorf("%w: %w", err, cause)
		}
		return err
	}
	return nil
}

// demo runs the demo within ctx.
func demo(ctx context.Context, cfg demoConfig, stdout io.Writer) error {
	env, err := openDemoEnv(ctx, cfg, stdout)
	if err != nil {
		return err
	}
	defer env.close()
	claims := "leases"
	if env.postgres {
		claims = "locked claims"
	}
	fmt.Fprintf(stdout, "transmanager demo: store %s, broker %s, relay with %s\n\n", env.storeName, env.brokerName, claims)
	return env.run(ctx, cfg, stdout)
}

// demoEnv is the demo's wiring: a store, a broker, and the business tables.
type demoEnv struct {
	storeName, brokerName string
	postgres              bool // the store is PostgreSQL: $n placeholders
	store                 *sqlstore.Store
	relayed               txm.OutboxStore // what the relay claims from: on PostgreSQL the LockingOutbox locked claims need
	db                    *sql.DB
	pub                   async.MessagePublisher
	sub                   async.MessageSubscriber
	brokerDead            func() int // dead letters at the broker
	closers               []func()
}

func (e *demoEnv) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

func openDemoEnv(ctx context.Context, cfg demoConfig, stdout io.Writer) (*demoEnv, error) {
	env := &demoEnv{}
	ok := false
	defer func() {
		if !ok {
			env.close()
		}
	}()
	if err := env.openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if err := env.openBroker(ctx, cfg); err != nil {
		return nil, err
	}
	ok = true
	return env, nil
}

func (e *demoEnv) openStore(ctx context.Context, cfg demoConfig) error {
	if cfg.postgres != "" {
		store, db, err := openPostgresDemo(ctx, cfg.postgres)
		if err != nil {
			return err
		}
		e.store, e.relayed, e.db, e.postgres = store.Store, store.Outbox(), db, true
		e.storeName = "PostgreSQL (" + redactURL(cfg.postgres) + ")"
		e.closers = append(e.closers, func() { _ = store.Close(); _ = db.Close() })
	} else if cfg.mysql != "" {
		store, err := mysql.Open(ctx, cfg.mysql, sqlstore.Config{})
		if err != nil {
			return fmt.Errorf("demo: open MySQL: %w", err)
		}
		e.store, e.relayed, e.db = store.Store, store.Outbox(), store.DB()
		e.storeName = "MySQL"
		e.closers = append(e.closers, func() { _ = store.Close() })
	} else {
		path := cfg.dbPath
		if path == "" {
			dir, err := os.MkdirTemp("", "txm-demo-")
			if err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			path = filepath.Join(dir, "demo.db")
			if !cfg.keep {
				e.closers = append(e.closers, func() { _ = os.RemoveAll(dir) })
			}
		}
		store, err := sqlite.Open(ctx, path, sqlstore.Config{})
		if err != nil {
			return fmt.Errorf("demo: open SQLite: %w", err)
		}
		e.store, e.relayed = store, store.Outbox()
		e.db = store.DB()
		e.storeName = "SQLite (" + path + ")"
		e.closers = append(e.closers, func() { _ = store.Close() })
	}
	if err := e.store.Migrate(ctx); err != nil {
		return fmt.Errorf("demo: migrate: %w", err)
	}
	// The business tables: orders written by the service, invoices written
	// by the consumer. Fresh for every run.
	for _, stmt := range []string{
		`DROP TABLE IF EXISTS demo_orders`,
		`DROP TABLE IF EXISTS demo_invoices`,
		`CREATE TABLE demo_orders (id VARCHAR(64) PRIMARY KEY, customer TEXT NOT NULL, cents BIGINT NOT NULL)`,
		`CREATE TABLE demo_invoices (order_id VARCHAR(64) PRIMARY KEY, cents BIGINT NOT NULL)`,
	} {
		if _, err := e.db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("demo: create tables: %w", err)
		}
	}
	return nil
}

// flakyBroker stands between the relay and the broker: it fails some
// publishes and delivers some messages twice, as a real network does when
// a confirmation is lost.
type flakyBroker struct {
	next       async.MessagePublisher
	mu         sync.Mutex
	calls      int
	failed     int
	duplicated int
	confirmed  map[string]bool
}

func (f *flakyBroker) Publish(ctx context.Context, topic string, msg async.Message) error {
	n := f.count()
	if n%9 == 4 {
		return f.fail()
	}
	if err := f.next.Publish(ctx, topic, msg); err != nil {
		return err
	}
	if n%5 == 0 { // the confirmation was "lost": the message goes out again
		if err := f.next.Publish(ctx, topic, msg); err == nil {
			f.countDuplicate()
		}
	}
	f.confirm(msg)
	return nil
}

// count counts a publish and returns its number.
func (f *flakyBroker) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return f.calls
}

func (f *flakyBroker) fail() error {
	f.mu.Lock()
	f.failed++
	f.mu.Unlock()
	return errors.New("broker timeout (injected)")
}

func (f *flakyBroker) countDuplicate() {
	f.mu.Lock()
	f.duplicated++
	f.mu.Unlock()
}

func (f *flakyBroker) confirm(msg async.Message) {
	f.mu.Lock()
	f.confirmed[msg.ID()] = true
	f.mu.Unlock()
}

// newFlakyNetwork puts a flakyBroker in front of next, keeping next's
// batch publishing when it has it. It returns the publisher for the relay
// and the broker that counts.
func newFlakyNetwork(next async.MessagePublisher) (async.MessagePublisher, *flakyBroker) {
	f := &flakyBroker{next: next, confirmed: map[string]bool{}}
	if ap, ok := next.(async.AsyncPublisher); ok {
		return flakyAsyncBroker{flakyBroker: f, async: ap}, f
	}
	return f, f
}

// flakyAsyncBroker is flakyBroker in front of a broker that publishes
// batches and waits for their confirmations (JetStream), so that the relay
// takes the same batch path as it does without the fault injection.
type flakyAsyncBroker struct {
	*flakyBroker
	async async.AsyncPublisher
}

func (f flakyAsyncBroker) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	errs := make([]error, len(msgs))
	var send, again []async.Message
	var at []int
	for i, m := range msgs {
		n := f.count()
		if n%9 == 4 {
			errs[i] = f.fail()
			continue
		}
		send, at = append(send, m), append(at, i)
		if n%5 == 0 {
			again = append(again, m)
		}
	}
	if len(send) == 0 {
		return errs, nil
	}
	res, err := f.async.PublishBatch(ctx, send)
	if err != nil {
		return nil, err
	}
	for j, m := range send {
		if j >= len(res) {
			errs[at[j]] = errors.New("broker returned no result (demo)")
			continue
		}
		if errs[at[j]] = res[j]; res[j] == nil {
			f.confirm(m)
		}
	}
	if len(again) > 0 { // confirmations "lost": these go out again
		if res, err := f.async.PublishBatch(ctx, again); err == nil {
			for _, e := range res {
				if e == nil {
					f.countDuplicate()
				}
			}
		}
	}
	return errs, nil
}

func (e *demoEnv) run(ctx context.Context, cfg demoConfig, stdout io.Writer) error {
	codecs := codec.NewRegistry(codec.JSON())
	outbox := txm.NewOutbox[OrderPlaced](txm.OutboxPublisher(e.store.Outbox())(nil), txm.WithCodecs(codecs))

	// The consumer: billing writes one invoice per order, in the inbox's
	// transaction. Its first attempt at one message fails.
	var delivered, handled, duplicates, handlerFailures atomic.Int64
	var failOnce sync.Once
	contentTypes := map[string]int{}
	var ctMu sync.Mutex
	bill := func(ctx context.Context, o OrderPlaced, msg async.IncomingMessage) error {
		failed := false
		failOnce.Do(func() { failed = true })
		if failed {
			handlerFailures.Add(1)
			return errors.New("invoice service busy (injected)")
		}
		tx, ok := sqlstore.TxFromContext(ctx)
		if !ok {
			return errors.New("no transaction in the handler's context")
		}
		if _, err := tx.ExecContext(ctx, e.rebind(`INSERT INTO demo_invoices (order_id, cents) VALUES (?, ?)`), o.OrderID, o.Cents); err != nil {
			return err
		}
		handled.Add(1)
		ctMu.Lock()
		contentTypes[msg.Metadata().ContentType()]++
		ctMu.Unlock()
		return nil
	}
	counting := func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			delivered.Add(1)
			return next.HandleMessage(ctx, msg)
		})
	}
	handler := async.ChainHandler(txm.NewInbox(bill, txm.WithCodecs(codecs)),
		counting,
		txm.InboxHandlerWithConfig(e.store.Inbox("billing"), txm.InboxConfig{
			OnDuplicate: func(context.Context, async.IncomingMessage) { duplicates.Add(1) },
		}))
	sub, err := e.sub.Subscribe(ctx, topicPlaced, handler, async.GroupName("billing"),
		async.RedeliveryDelay(20*time.Millisecond), async.MaxRedeliveries(5))
	if err != nil {
		return fmt.Errorf("demo: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	// The relay, publishing through the flaky network. On PostgreSQL it
	// claims by locking (ProcessorConfig.LockClaims); SQLite leases.
	network, flaky := newFlakyNetwork(e.pub)
	relay, err := txm.NewOutboxProcessorWithConfig(network, e.relayed, txm.ProcessorConfig{
		LockClaims:   e.postgres,
		PollInterval: 100 * time.Millisecond,
		Retry:        retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond},
		Logger:       slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return err
	}
	relayCtx, stopRelay := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Start(relayCtx) }()
	defer func() {
		stopRelay()
		<-relayDone
	}()

	// The order service: each order and its event in one transaction. Every
	// seventh order breaks a business rule and rolls back. Halfway through,
	// the topic moves from JSON to msgpack.
	written, rolledBack := 0, 0
	for i := 1; i <= cfg.orders; i++ {
		if i == cfg.orders/2+1 {
			if err := codecs.Register(topicPlaced, codec.Msgpack()); err != nil {
				return err
			}
		}
		o := OrderPlaced{OrderID: fmt.Sprintf("order-%03d", i), Customer: fmt.Sprintf("customer-%d", i%4), Cents: int64(1000 + 37*i)}
		err := e.store.InTx(ctx, func(ctx context.Context) error {
			tx, _ := sqlstore.TxFromContext(ctx)
			if _, err := tx.ExecContext(ctx, e.rebind(`INSERT INTO demo_orders (id, customer, cents) VALUES (?, ?, ?)`), o.OrderID, o.Customer, o.Cents); err != nil {
				return err
			}
			if err := outbox.Publish(ctx, topicPlaced, o, txm.WithPartitionKey(o.Customer)); err != nil {
				return err
			}
			if i%7 == 0 {
				return errBusinessRule
			}
			return nil
		})
		switch {
		case errors.Is(err, errBusinessRule):
			rolledBack++
		case err != nil:
			return fmt.Errorf("demo: write order: %w", err)
		default:
			written++
		}
	}

	// Wait for the consumer to catch up: every committed order invoiced.
	caughtUp := false
	for !caughtUp {
		var n int
		if err := e.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM demo_invoices`).Scan(&n); err != nil {
			return fmt.Errorf("demo: count invoices: %w", err)
		}
		caughtUp = n >= written
		if !caughtUp {
			select {
			case <-ctx.Done():
				return fmt.Errorf("demo: the consumer did not catch up (%d of %d invoices): %w", n, written, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	stopRelay()
	if err := <-relayDone; err != nil {
		return err
	}
	relayDone <- nil // for the deferred stop
	if err := sub.Unsubscribe(); err != nil {
		return err
	}

	var orders, invoices, orphans int
	q := func(query string, dst *int) {
		if err == nil {
			err = e.db.QueryRowContext(ctx, query).Scan(dst)
		}
	}
	q(`SELECT COUNT(*) FROM demo_orders`, &orders)
	q(`SELECT COUNT(*) FROM demo_invoices`, &invoices)
	q(`SELECT COUNT(*) FROM demo_invoices WHERE order_id NOT IN (SELECT id FROM demo_orders)`, &orphans)
	if err != nil {
		return fmt.Errorf("demo: read results: %w", err)
	}
	stats, err := e.store.Outbox().Stats(ctx)
	if err != nil {
		return fmt.Errorf("demo: outbox stats: %w", err)
	}
	flaky.mu.Lock()
	published, failures, dups := len(flaky.confirmed), flaky.failed, flaky.duplicated
	flaky.mu.Unlock()

	fmt.Fprintf(stdout, "order service   %d orders committed with their event, %d rolled back (no event saved)\n", written, rolledBack)
	fmt.Fprintf(stdout, "relay           %d events published, %d publishes failed and were retried, %d sent twice by the network\n", published, failures, dups)
	if cfg.nats != "" && dups > 0 {
		fmt.Fprintf(stdout, "                (JetStream dropped the repeats: same Nats-Msg-Id within the stream's duplicate window)\n")
	}
	fmt.Fprintf(stdout, "outbox          %d pending, %d dead\n", stats.Pending, stats.Dead)
	fmt.Fprintf(stdout, "consumer        %d deliveries: %d handled, %d duplicates absorbed by the inbox, %d handler failure redelivered\n",
		delivered.Load(), handled.Load(), duplicates.Load(), handlerFailures.Load())
	ctMu.Lock()
	fmt.Fprintf(stdout, "codecs          %d events decoded from application/json, %d from application/msgpack\n",
		contentTypes["application/json"], contentTypes["application/msgpack"])
	ctMu.Unlock()
	fmt.Fprintf(stdout, "database        %d orders, %d invoices, %d invoices without an order\n", orders, invoices, orphans)

	switch {
	case orders != written || invoices != written || orphans != 0:
		return fmt.Errorf("demo: FAILED: %d orders, %d invoices, %d orphans; want %d, %d, 0", orders, invoices, orphans, written, written)
	case published != written || stats.Pending != 0:
		return fmt.Errorf("demo: FAILED: %d published, %d pending; want %d, 0", published, stats.Pending, written)
	}
	fmt.Fprintf(stdout, "\nresult          every committed order was handled exactly once in effect\n")
	return nil
}

var errBusinessRule = errors.New("order rejected by a business rule")

// rebind turns ? placeholders into $n for PostgreSQL.
func (e *demoEnv) rebind(q string) string {
	if !e.postgres {
		return q
	}
	out := make([]byte, 0, len(q)+8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = fmt.Appendf(out, "$%d", n)
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}
