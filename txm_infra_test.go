package transmanager_test

// End-to-end tests on real infrastructure: PostgreSQL for the outbox and the
// inbox, NATS JetStream as the broker. They need TXM_POSTGRES_URL and
// TXM_NATS_URL; the outage tests also start nats-servers of their own on
// free loopback ports (and stop only those).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/codec"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// Headers the tests put on some messages to steer the consumer's fault
// injection.
const (
	// infraHdrRedeliver: the consumer handles the message, then NAcks it
	// once, so the broker delivers it again after it was processed.
	infraHdrRedeliver = "txm-test-redeliver"
	// infraHdrFailOnce: the handler writes its row, then fails once, so the
	// inbox record and the row roll back together.
	infraHdrFailOnce = "txm-test-fail-once"
	// infraHdrHold: the consumer holds the first delivery until the broker
	// is down. "commit" handles it first (its ack is lost), "fail" fails it
	// afterwards (its NAck is lost).
	infraHdrHold = "txm-test-hold"
)

// infraOrder travels as JSON, infraPayment as msgpack.
type infraOrder struct {
	OrderID  string `json:"order_id" msgpack:"order_id"`
	Customer string `json:"customer" msgpack:"customer"`
	Cents    int64  `json:"cents" msgpack:"cents"`
}

type infraPayment struct {
	OrderID string `json:"order_id" msgpack:"order_id"`
	Cents   int64  `json:"cents" msgpack:"cents"`
	Method  string `json:"method" msgpack:"method"`
}

// infraNoLeaks checks, after every other cleanup of the test, that the test
// left no goroutine behind. Call it first.
func infraNoLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

func infraRandom() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func infraDiscardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// infraCtx returns a context that ends with the test or after d.
func infraCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// infraWaitFor polls cond every 20ms until it holds, failing the test after
// d. describe, when not nil, adds the state seen last to the failure.
func infraWaitFor(t testing.TB, d time.Duration, what string, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if describe != nil {
				msg = ": " + describe()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// infraPG is a PostgreSQL schema of one test's own with a migrated store
// in it.
type infraPG struct {
	schema string
	pool   *pgxpool.Pool // search_path is the schema
	store  *sqlstore.LockingStore
}

// newInfraPG creates a schema with a random name (dropped in cleanup), a
// pool whose connections use it and a migrated pgx store on it, with a
// NOTIFY channel of its own so that other tests' saves do not wake it.
func newInfraPG(t *testing.T) *infraPG {
	t.Helper()
	u := testenv.URL(t, testenv.Postgres)
	ctx := infraCtx(t, 30*time.Second)
	schema := "txm_infra_" + infraRandom()
	admin, err := pgxpool.New(ctx, u)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
		admin.Close()
	})
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatalf("parse %s: %v", u, err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	t.Cleanup(pool.Close)
	store, err := postgres.New(pool, sqlstore.Config{Schema: schema, NotifyChannel: schema, Logger: infraDiscardLogger()})
	if err != nil {
		t.Fatalf("NewPostgres: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if err := store.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return &infraPG{schema: schema, pool: pool, store: store}
}

// exec runs statements in the schema.
func (p *infraPG) exec(t *testing.T, stmts ...string) {
	t.Helper()
	ctx := infraCtx(t, 30*time.Second)
	for _, s := range stmts {
		if _, err := p.pool.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// count runs a query that returns one number.
func (p *infraPG) count(t testing.TB, query string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var n int
	if err := p.pool.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// handledRows returns the consumer's rows: how many per message ID.
func (p *infraPG) handledRows(t testing.TB) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := p.pool.Query(ctx, `SELECT msg_id, count(*) FROM handled GROUP BY msg_id`)
	if err != nil {
		t.Fatalf("read handled rows: %v", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatalf("scan handled rows: %v", err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read handled rows: %v", err)
	}
	return out
}

// outboxStates returns the state of every outbox row by ID.
func (p *infraPG) outboxStates(t testing.TB) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := p.pool.Query(ctx, `SELECT id, state FROM `+sqlstore.DefaultOutboxTable)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, state string
		if err := rows.Scan(&id, &state); err != nil {
			t.Fatalf("scan outbox: %v", err)
		}
		out[id] = state
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return out
}

// pending returns the number of pending outbox messages.
func (p *infraPG) pending(t testing.TB) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := p.store.Outbox().Stats(ctx)
	if err != nil {
		t.Fatalf("outbox stats: %v", err)
	}
	return st.Pending
}

// infraConnect opens a NATS connection closed in cleanup.
func infraConnect(t *testing.T, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// infraStream creates a stream deleted in cleanup (when the server is
// still there).
func infraStream(t *testing.T, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	ctx := infraCtx(t, 10*time.Second)
	if _, err := natsjs.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatalf("create stream %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := js.DeleteStream(ctx, cfg.Name); err != nil && js.Conn().IsConnected() {
			t.Errorf("delete stream %s: %v", cfg.Name, err)
		}
	})
}

// infraStored is a message read back from a stream.
type infraStored struct {
	seq     uint64
	id      string
	subject string
	key     string
}

// infraReadStream reads every message of a stream by sequence.
func infraReadStream(t *testing.T, js jetstream.JetStream, name string) []infraStored {
	t.Helper()
	ctx := infraCtx(t, 60*time.Second)
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	var out []infraStored
	if info.State.Msgs == 0 {
		return nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s: get message %d: %v", name, seq, err)
		}
		out = append(out, infraStored{
			seq:     seq,
			id:      m.Header.Get(natsjs.HeaderMsgID),
			subject: m.Subject,
			key:     m.Header.Get(async.MetaPartitionKey),
		})
	}
	return out
}

// infraCheckStream checks that a stream holds every ID of want exactly once
// and nothing else, and that the messages of each partition key are in the
// order keyOrder gives. It returns each ID's stream sequence.
func infraCheckStream(t *testing.T, stored []infraStored, want map[string]bool, keyOrder map[string][]string) map[string]uint64 {
	t.Helper()
	seqs := make(map[string]uint64, len(stored))
	byKey := map[string][]string{}
	for _, m := range stored {
		if _, ok := seqs[m.id]; ok {
			t.Errorf("stream holds message %s twice", m.id)
			continue
		}
		seqs[m.id] = m.seq
		if !want[m.id] {
			t.Errorf("stream holds message %s, which was never committed", m.id)
		}
		if m.key != "" {
			byKey[m.key] = append(byKey[m.key], m.id)
		}
	}
	missing := 0
	for id := range want {
		if _, ok := seqs[id]; !ok {
			missing++
			if missing <= 5 {
				t.Errorf("committed message %s is not in the stream", id)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d committed messages are not in the stream", missing, len(want))
	}
	for key, ids := range keyOrder {
		if !slices.Equal(byKey[key], ids) {
			t.Errorf("partition key %s: stream order %v, want commit order %v", key, byKey[key], ids)
		}
	}
	return seqs
}

// infraRelay starts a relay and stops it in cleanup (or earlier with the
// returned function, which waits for Start to return).
func infraRelay(t *testing.T, pub async.MessagePublisher, store txm.OutboxStore, cfg txm.ProcessorConfig) (stop func()) {
	t.Helper()
	relay, err := txm.NewOutboxProcessorWithConfig(pub, store, cfg)
	if err != nil {
		t.Fatalf("NewOutboxProcessorWithConfig: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay Start: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("relay did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// infraSubscribe subscribes and unsubscribes in cleanup.
func infraSubscribe(t *testing.T, sub async.MessageSubscriber, topic string, h async.MessageHandler, opts ...async.SubscriberOption) {
	t.Helper()
	s, err := sub.Subscribe(infraCtx(t, 10*time.Second), topic, h, opts...)
	if err != nil {
		t.Fatalf("subscribe to %s: %v", topic, err)
	}
	t.Cleanup(func() {
		if err := s.Unsubscribe(); err != nil {
			t.Errorf("unsubscribe from %s: %v", topic, err)
		}
	})
}

// infraConsumer is the consumer side: the typed handlers write one row per
// call in the inbox's transaction and count their calls by ID.
type infraConsumer struct {
	mu         sync.Mutex
	calls      map[string]int // handler calls that returned nil
	failedOnce map[string]bool
	duplicates atomic.Int64 // redeliveries the inbox absorbed
}

func newInfraConsumer() *infraConsumer {
	return &infraConsumer{calls: map[string]int{}, failedOnce: map[string]bool{}}
}

// write inserts the handled row in the inbox transaction carried by ctx.
// With infraHdrFailOnce it fails the first time, after the insert, so the
// inbox record and the row must roll back together.
func (c *infraConsumer) write(ctx context.Context, msg async.IncomingMessage, orderID string) error {
	tx, ok := sqlstore.PgxTxFromContext(ctx)
	if !ok {
		return errors.New("no pgx transaction in the handler's context")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO handled (msg_id, topic, content_type, order_id) VALUES ($1, $2, $3, $4)`,
		msg.ID(), msg.Subject(), msg.Metadata().ContentType(), orderID); err != nil {
		return fmt.Errorf("insert handled row: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if msg.Metadata().GetString(infraHdrFailOnce) != "" && !c.failedOnce[msg.ID()] {
		c.failedOnce[msg.ID()] = true
		return errors.New("handler failure (injected) after its insert")
	}
	c.calls[msg.ID()]++
	return nil
}

func (c *infraConsumer) callsOf(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// handler returns the chain for one topic: faults (outermost), the
// PostgreSQL inbox of group "billing", the typed inbox and the handler.
func infraHandler[T any](c *infraConsumer, store *sqlstore.Store, codecs *codec.Registry, faults async.MessageHandlerMiddleware, orderID func(T) string) async.MessageHandler {
	typed := txm.NewInbox(func(ctx context.Context, v T, msg async.IncomingMessage) error {
		return c.write(ctx, msg, orderID(v))
	}, txm.WithCodecs(codecs))
	inbox := txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{
		OnDuplicate: func(context.Context, async.IncomingMessage) { c.duplicates.Add(1) },
	})
	return async.ChainHandler(typed, faults, inbox)
}

const infraHandledTable = `CREATE TABLE handled (
    msg_id       text NOT NULL,
    topic        text NOT NULL,
    content_type text NOT NULL,
    order_id     text NOT NULL
)` // no unique key on purpose: a second handling would show as a second row

// TestInfraEndToEnd runs the whole system on PostgreSQL and JetStream:
// producers commit orders with typed events in two codecs (JSON and
// msgpack) through the PostgreSQL outbox, a fifth of their transactions roll
// back; the relay publishes to JetStream in waves; a durable group consumes
// through the PostgreSQL inbox, which writes one row per message in its
// transaction. Some messages are NAcked after they were handled (the inbox
// must absorb the redelivery) and some handlers fail once after writing
// (the row must roll back with the inbox record). By ID: every committed
// message is in the stream once, in commit order per partition key, and
// handled exactly once in effect; no rolled-back message is saved,
// published or handled; the outbox ends with 0 pending. It runs with the
// relay's leases and with locked claims (ProcessorConfig.LockClaims).
func TestInfraEndToEnd(t *testing.T) {
	t.Run("claims=lease", func(t *testing.T) { infraEndToEnd(t, false) })
	t.Run("claims=lock", func(t *testing.T) { infraEndToEnd(t, true) })
}

func infraEndToEnd(t *testing.T, lock bool) {
	infraNoLeaks(t)
	natsURL := testenv.URL(t, testenv.NATS)
	pg := newInfraPG(t)
	pg.exec(t, `CREATE TABLE orders (id text PRIMARY KEY, customer text NOT NULL, cents bigint NOT NULL)`, infraHandledTable)
	ctx := infraCtx(t, 3*time.Minute)

	_, js := infraConnect(t, natsURL, nats.Name("txm infra e2e"))
	prefix := "txminfra." + infraRandom()
	topicOrders, topicPayments := prefix+".orders", prefix+".payments"
	stream := "TXMINFRA_" + infraRandom()
	infraStream(t, js, jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	})

	codecs := codec.NewRegistry(codec.JSON())
	if err := codecs.Register(topicPayments, codec.Msgpack()); err != nil {
		t.Fatal(err)
	}

	// The consumer.
	consumer := newInfraConsumer()
	var nacked sync.Map // ID -> true once NAcked after handling
	var injectedNAcks atomic.Int64
	faults := func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			if msg.Metadata().GetString(infraHdrRedeliver) == "" {
				return next.HandleMessage(ctx, msg)
			}
			if _, again := nacked.Load(msg.ID()); again {
				return next.HandleMessage(ctx, msg)
			}
			if err := next.HandleMessage(ctx, msg); err != nil {
				return err
			}
			// Handled and committed; NAck so the broker delivers it again.
			if err := msg.NAck(); err != nil {
				return fmt.Errorf("inject NAck: %w", err)
			}
			nacked.Store(msg.ID(), true)
			injectedNAcks.Add(1)
			return nil
		})
	}
	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{Logger: infraDiscardLogger()})
	t.Cleanup(func() { _ = sub.Close() })
	subOpts := []async.SubscriberOption{async.GroupName("billing"), async.Concurrency(4),
		async.AckWait(10 * time.Second), async.RedeliveryDelay(50 * time.Millisecond), async.MaxRedeliveries(-1)}
	infraSubscribe(t, sub, topicOrders,
		infraHandler(consumer, pg.store.Store, codecs, faults, func(o infraOrder) string { return o.OrderID }), subOpts...)
	infraSubscribe(t, sub, topicPayments,
		infraHandler(consumer, pg.store.Store, codecs, faults, func(p infraPayment) string { return p.OrderID }), subOpts...)

	// The relay: natsjs.Publisher is an async.AsyncPublisher, so it
	// publishes in waves.
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	if _, ok := any(pub).(async.AsyncPublisher); !ok {
		t.Fatal("natsjs.Publisher does not implement async.AsyncPublisher")
	}
	infraRelay(t, pub, pg.store.Outbox(), txm.ProcessorConfig{
		BatchSize: 50, PollInterval: 200 * time.Millisecond, Logger: infraDiscardLogger(),
		LockClaims: lock,
	})

	// The producers: each commits its orders one after another under its
	// own partition key; every fifth transaction rolls back after saving.
	const producers, perProducer = 4, 60
	outboxPub := txm.OutboxPublisher(pg.store.Outbox())(nil)
	orders := txm.NewOutbox[infraOrder](outboxPub, txm.WithCodecs(codecs))
	payments := txm.NewOutbox[infraPayment](outboxPub, txm.WithCodecs(codecs))
	errRollback := errors.New("business rule rejected the order (injected)")
	type produced struct {
		committed  []string // message IDs, in commit order
		keyOrder   []string // the keyed (orders topic) IDs, in commit order
		rolledBack []string
		marked     map[string]string // ID -> fault header
		orders     int
	}
	results := make([]produced, producers)
	var g errgroup.Group
	for p := range producers {
		g.Go(func() error {
			res := &results[p]
			res.marked = map[string]string{}
			customer := fmt.Sprintf("customer-%d", p)
			for i := range perProducer {
				orderID := fmt.Sprintf("order-%d-%03d", p, i)
				orderMsg, paymentMsg := async.NewID(), async.NewID()
				var orderHdr, paymentHdr async.Metadata
				switch i % 10 {
				case 1:
					orderHdr = async.Metadata{infraHdrRedeliver: "1"}
				case 3:
					paymentHdr = async.Metadata{infraHdrRedeliver: "1"}
				case 6:
					orderHdr = async.Metadata{infraHdrFailOnce: "1"}
				case 7:
					paymentHdr = async.Metadata{infraHdrFailOnce: "1"}
				}
				rollback := i%5 == 4
				err := pg.store.InTx(ctx, func(ctx context.Context) error {
					tx, ok := sqlstore.PgxTxFromContext(ctx)
					if !ok {
						return errors.New("no pgx transaction in InTx")
					}
					cents := int64(1000 + 10*i)
					if _, err := tx.Exec(ctx, `INSERT INTO orders (id, customer, cents) VALUES ($1, $2, $3)`, orderID, customer, cents); err != nil {
						return err
					}
					if err := orders.Publish(ctx, topicOrders, infraOrder{OrderID: orderID, Customer: customer, Cents: cents},
						txm.WithMessageID(orderMsg), txm.WithPartitionKey(customer), txm.WithHeaders(orderHdr)); err != nil {
						return err
					}
					if err := payments.Publish(ctx, topicPayments, infraPayment{OrderID: orderID, Cents: cents, Method: "card"},
						txm.WithMessageID(paymentMsg), txm.WithHeaders(paymentHdr)); err != nil {
						return err
					}
					if rollback {
						return errRollback
					}
					return nil
				})
				switch {
				case rollback && errors.Is(err, errRollback):
					res.rolledBack = append(res.rolledBack, orderMsg, paymentMsg)
				case err != nil:
					return fmt.Errorf("producer %d, order %d: %w", p, i, err)
				default:
					res.committed = append(res.committed, orderMsg, paymentMsg)
					res.keyOrder = append(res.keyOrder, orderMsg)
					res.orders++
					for id, h := range map[string]async.Metadata{orderMsg: orderHdr, paymentMsg: paymentHdr} {
						for k := range h {
							res.marked[id] = k
						}
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("producers: %v", err)
	}

	committed := map[string]bool{}
	rolledBack := map[string]bool{}
	keyOrder := map[string][]string{}
	marked := map[string]string{}
	committedOrders := 0
	for p, r := range results {
		for _, id := range r.committed {
			committed[id] = true
		}
		for _, id := range r.rolledBack {
			rolledBack[id] = true
		}
		for id, h := range r.marked {
			marked[id] = h
		}
		keyOrder[fmt.Sprintf("customer-%d", p)] = r.keyOrder
		committedOrders += r.orders
	}
	wantRedelivered := 0
	for _, h := range marked {
		if h == infraHdrRedeliver {
			wantRedelivered++
		}
	}
	t.Logf("%d messages committed (%d orders), %d rolled back; %d to be NAcked after handling, %d to fail once",
		len(committed), committedOrders, len(rolledBack), wantRedelivered, len(marked)-wantRedelivered)

	// Wait until every committed message has its row and every injected
	// redelivery came back and was absorbed.
	infraWaitFor(t, 90*time.Second, "every committed message to be handled", func() bool {
		return pg.count(t, `SELECT count(DISTINCT msg_id) FROM handled`) >= len(committed)
	}, func() string {
		return fmt.Sprintf("%d distinct handled of %d, %d pending in the outbox",
			pg.count(t, `SELECT count(DISTINCT msg_id) FROM handled`), len(committed), pg.pending(t))
	})
	infraWaitFor(t, 30*time.Second, "the injected redeliveries to be absorbed by the inbox", func() bool {
		return consumer.duplicates.Load() >= injectedNAcks.Load() && injectedNAcks.Load() == int64(wantRedelivered)
	}, func() string {
		return fmt.Sprintf("%d NAcks injected (want %d), %d duplicates absorbed", injectedNAcks.Load(), wantRedelivered, consumer.duplicates.Load())
	})

	// Handled exactly once in effect: one row per committed ID, none for
	// rolled-back ones, and the handler's successful calls match.
	rows := pg.handledRows(t)
	for id := range committed {
		if rows[id] != 1 {
			t.Errorf("message %s (%s) has %d handled rows, want 1", id, marked[id], rows[id])
		}
		if n := consumer.callsOf(id); n != 1 {
			t.Errorf("message %s (%s): the handler committed %d times, want 1", id, marked[id], n)
		}
	}
	for id := range rows {
		if !committed[id] {
			t.Errorf("handled row for message %s, which was never committed (rolled back: %v)", id, rolledBack[id])
		}
	}
	// The codecs: each topic's messages arrived with its codec's content
	// type and decoded.
	for topic, ct := range map[string]string{topicOrders: codec.ContentTypeJSON, topicPayments: codec.ContentTypeMsgpack} {
		if n := pg.count(t, `SELECT count(*) FROM handled WHERE topic = $1 AND content_type <> $2`, topic, ct); n != 0 {
			t.Errorf("%d messages of %s arrived with another content type than %s", n, topic, ct)
		}
		if n := pg.count(t, `SELECT count(*) FROM handled WHERE topic = $1`, topic); n != committedOrders {
			t.Errorf("%d messages of %s handled, want %d", n, topic, committedOrders)
		}
	}
	// The inbox holds one record per committed message.
	if n := pg.count(t, `SELECT count(*) FROM `+sqlstore.DefaultInboxTable+` WHERE consumer_group = 'billing'`); n != len(committed) {
		t.Errorf("inbox holds %d records, want %d", n, len(committed))
	}
	if n := pg.count(t, `SELECT count(*) FROM orders`); n != committedOrders {
		t.Errorf("%d orders committed in the database, want %d", n, committedOrders)
	}

	// The outbox: everything committed is published (the store deletes
	// published rows), nothing pending or dead, nothing of the rolled-back
	// transactions.
	states := pg.outboxStates(t)
	for id := range committed {
		if state, ok := states[id]; ok {
			t.Errorf("outbox message %s is %q, want it published and deleted", id, state)
		}
	}
	for id := range rolledBack {
		if _, ok := states[id]; ok {
			t.Errorf("outbox holds message %s of a rolled-back transaction", id)
		}
	}
	if len(states) != 0 {
		t.Errorf("outbox holds %d messages, want none", len(states))
	}
	if n := pg.pending(t); n != 0 {
		t.Errorf("outbox has %d pending messages, want 0", n)
	}

	// The stream: each committed ID once, in commit order per key.
	infraCheckStream(t, infraReadStream(t, js, stream), committed, keyOrder)
	t.Logf("%d duplicates absorbed by the inbox for %d injected NAcks", consumer.duplicates.Load(), injectedNAcks.Load())
}

// infraProxy forwards TCP connections to a target. Muting its current
// connections drops everything the target sends on them, so a client's
// requests still arrive while the replies (JetStream PubAcks) are lost.
type infraProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[*infraProxyConn]struct{}
}

type infraProxyConn struct {
	client, server net.Conn
	muted          atomic.Bool
}

func newInfraProxy(t *testing.T, target string) *infraProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &infraProxy{ln: ln, target: target, conns: map[*infraProxyConn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *infraProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *infraProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *infraProxy) handle(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		_ = client.Close()
		return
	}
	pc := &infraProxyConn{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = client.Close()
		_ = server.Close()
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(server, client)
		pc.closeBoth()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 && !pc.muted.Load() {
			if _, werr := client.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	pc.closeBoth()
	<-done
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

func (c *infraProxyConn) closeBoth() {
	_ = c.client.Close()
	_ = c.server.Close()
}

// mute drops, from now on, what the target sends on the current
// connections. New connections are not muted.
func (p *infraProxy) mute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.muted.Store(true)
	}
}

func (p *infraProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.closeBoth()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

// infraRecordingPublisher wraps the relay's publisher: it records every
// confirmation and failure by ID, and calls onBatch before a batch, which
// may hold it.
type infraRecordingPublisher struct {
	next    *natsjs.Publisher
	onBatch func(ctx context.Context, msgs []async.Message)

	mu        sync.Mutex
	confirmed map[string]int
	failures  int
}

func (p *infraRecordingPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	err := p.next.Publish(ctx, topic, msg)
	p.record([]async.Message{msg}, []error{err}, nil)
	return err
}

func (p *infraRecordingPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	if p.onBatch != nil {
		p.onBatch(ctx, msgs)
	}
	errs, err := p.next.PublishBatch(ctx, msgs)
	p.record(msgs, errs, err)
	return errs, err
}

func (p *infraRecordingPublisher) record(msgs []async.Message, errs []error, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range msgs {
		if err == nil && i < len(errs) && errs[i] == nil {
			p.confirmed[m.ID()]++
		} else {
			p.failures++
		}
	}
}

func (p *infraRecordingPublisher) counts() (confirmed, failures int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.confirmed), p.failures
}

func (p *infraRecordingPublisher) confirmations(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.confirmed[id]
}

// TestInfraRelayOutage saves 2,000 messages in PostgreSQL and relays them
// to a private nats-server that dies mid-way. The relay's connection goes
// through a proxy: after 500 confirmations the proxy drops the server's
// replies, the relay's next wave is stored by the server but its PubAcks are
// lost, and the server is killed. It stays down for about 3s while the relay
// keeps failing (MarkFailed with backoff, never dead-lettering), then
// restarts on the same port and store directory. The relay recovers by
// itself; the stream holds every saved ID exactly once (the re-published,
// unconfirmed wave is absorbed by JetStream's duplicate window), in save
// order per partition key; the outbox ends with 0 pending; and nothing was
// marked published that JetStream had not stored and acknowledged. It
// runs with the relay's leases and with locked claims, whose transactions
// stay open through the outage.
func TestInfraRelayOutage(t *testing.T) {
	t.Run("claims=lease", func(t *testing.T) { infraRelayOutage(t, false) })
	t.Run("claims=lock", func(t *testing.T) { infraRelayOutage(t, true) })
}

func infraRelayOutage(t *testing.T, lock bool) {
	infraNoLeaks(t)
	testenv.URL(t, testenv.NATS) // runs with the other service tests
	pg := newInfraPG(t)
	srv := testenv.StartNATS(t)
	proxy := newInfraProxy(t, srv.Addr())
	ctx := infraCtx(t, 3*time.Minute)

	// The observer reads the stream directly; the relay goes through the
	// proxy.
	reconnectOpts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	_, obs := infraConnect(t, srv.URL(), append(reconnectOpts, nats.Name("observer"))...)
	relayNC, relayJS := infraConnect(t, proxy.url(), append(reconnectOpts, nats.Name("relay"))...)
	const stream, topic = "RELAYOUTAGE", "outage.relay"
	infraStream(t, obs, jetstream.StreamConfig{
		Name: stream, Subjects: []string{topic}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute,
	})

	// 2,000 messages: half unkeyed, half over 10 partition keys.
	const total, keys = 2000, 10
	msgs := make([]async.Message, total)
	saved := make(map[string]bool, total)
	keyOrder := map[string][]string{}
	for i := range msgs {
		md := async.Metadata{async.MetaContentType: codec.ContentTypeJSON}
		if i%2 == 1 {
			key := fmt.Sprintf("key-%d", i%(2*keys)/2)
			md[async.MetaPartitionKey] = key
		}
		msgs[i] = async.NewMessage(topic, "Outage", fmt.Appendf(nil, `{"n":%d}`, i), async.WithMetadata(md))
		saved[msgs[i].ID()] = true
		if key := md.PartitionKey(); key != "" {
			keyOrder[key] = append(keyOrder[key], msgs[i].ID())
		}
	}
	for chunk := range slices.Chunk(msgs, 500) {
		n, err := pg.store.Outbox().SaveMany(ctx, chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("SaveMany: inserted %d of %d: %v", n, len(chunk), err)
		}
	}

	// The wave after the 500th confirmation is sent with the replies
	// muted; the test then kills the server.
	type trigger struct {
		ids       []string
		confirmed int
	}
	triggered := make(chan trigger, 1)
	var once sync.Once
	rec := &infraRecordingPublisher{
		next:      natsjs.NewPublisher(relayJS, natsjs.PublisherConfig{AckTimeout: 3 * time.Second}),
		confirmed: map[string]int{},
	}
	rec.onBatch = func(_ context.Context, wave []async.Message) {
		confirmed, _ := rec.counts()
		if confirmed < 500 {
			return
		}
		once.Do(func() {
			proxy.mute()
			ids := make([]string, len(wave))
			for i, m := range wave {
				ids[i] = m.ID()
			}
			triggered <- trigger{ids: ids, confirmed: confirmed}
		})
	}
	stopRelay := infraRelay(t, rec, pg.store.Outbox(), txm.ProcessorConfig{
		BatchSize:      100,
		LockClaims:     lock,
		PollInterval:   100 * time.Millisecond,
		PublishTimeout: 10 * time.Second,
		Retry:          retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 300 * time.Millisecond, MaxAttempts: -1},
		StoreRetry:     retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 500 * time.Millisecond},
		Logger:         infraDiscardLogger(),
	})

	var trig trigger
	select {
	case trig = <-triggered:
	case <-time.After(60 * time.Second):
		c, f := rec.counts()
		t.Fatalf("the relay did not reach 500 confirmations within 60s (%d confirmed, %d failed)", c, f)
	}
	// The muted wave reaches the server: wait until it stored all of it.
	obsStream, err := obs.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	var lastSeqAtKill uint64
	infraWaitFor(t, 10*time.Second, "the server to store the muted wave", func() bool {
		info, err := obsStream.Info(ctx)
		if err != nil {
			return false
		}
		lastSeqAtKill = info.State.LastSeq
		return info.State.Msgs >= uint64(trig.confirmed+len(trig.ids))
	}, nil)
	srv.Stop()
	killedAt := time.Now()
	infraWaitFor(t, 10*time.Second, "the relay's connection to notice the outage", func() bool { return !relayNC.IsConnected() }, nil)
	_, failuresAtKill := rec.counts()
	t.Logf("server killed after %d confirmations with a muted wave of %d stored (stream last sequence %d)",
		trig.confirmed, len(trig.ids), lastSeqAtKill)

	// The outage: about 3s, while the relay keeps trying.
	<-time.After(3*time.Second - time.Since(killedAt))
	publishedDuringOutage := map[string]bool{}
	outage := pg.outboxStates(t)
	for id := range saved {
		state, ok := outage[id]
		if !ok { // published rows are deleted
			publishedDuringOutage[id] = true
		}
		if state == "dead" {
			t.Errorf("message %s went to dead letters during the outage", id)
		}
	}
	_, failuresAtRestart := rec.counts()
	retried := pg.count(t, `SELECT count(*) FROM `+sqlstore.DefaultOutboxTable+` WHERE attempts > 0`)
	if failuresAtRestart <= failuresAtKill || retried == 0 {
		t.Errorf("the relay did not keep failing during the outage: %d failed publishes before, %d after; %d messages with attempts",
			failuresAtKill, failuresAtRestart, retried)
	}
	for _, id := range trig.ids {
		if publishedDuringOutage[id] {
			t.Errorf("message %s of the muted wave was marked published although its PubAck was lost", id)
		}
	}
	t.Logf("outage %v: %d failed publishes, %d messages with failed attempts, %d marked published",
		time.Since(killedAt).Round(time.Millisecond), failuresAtRestart-failuresAtKill, retried, len(publishedDuringOutage))

	srv.Start()
	infraWaitFor(t, 60*time.Second, "the relay to publish everything after the restart", func() bool {
		return pg.pending(t) == 0
	}, func() string {
		c, f := rec.counts()
		return fmt.Sprintf("%d pending, %d confirmed, %d failed publishes", pg.pending(t), c, f)
	})
	stopRelay()

	// The stream holds every saved ID exactly once, in order per key.
	seqs := infraCheckStream(t, infraReadStream(t, obs, stream), saved, keyOrder)
	// What was marked published during the outage had been stored before
	// the kill; so had the muted wave, whose re-publish after the restart
	// JetStream absorbed as a duplicate.
	for id := range publishedDuringOutage {
		if s, ok := seqs[id]; !ok || s > lastSeqAtKill {
			t.Errorf("message %s was marked published during the outage but is not in the stream before the kill (sequence %d)", id, s)
		}
		if rec.confirmations(id) == 0 {
			t.Errorf("message %s was marked published without a confirmation", id)
		}
	}
	for _, id := range trig.ids {
		if s := seqs[id]; s == 0 || s > lastSeqAtKill {
			t.Errorf("muted message %s is at sequence %d, want one stored before the kill (<= %d)", id, s, lastSeqAtKill)
		}
		if rec.confirmations(id) == 0 {
			t.Errorf("muted message %s was never confirmed after the restart", id)
		}
	}
	// Everything is published, each message confirmed by JetStream.
	states := pg.outboxStates(t)
	for id := range saved {
		if state, ok := states[id]; ok {
			t.Errorf("message %s is %q, want it published and deleted", id, state)
		}
		if rec.confirmations(id) == 0 {
			t.Errorf("message %s is published without a confirmation", id)
		}
	}
	c, f := rec.counts()
	t.Logf("after the restart: %d IDs confirmed, %d failed publishes in all, %d messages in the stream", c, f, len(seqs))
}

// infraHoldUntil holds a delivery until done is closed, telling the broker
// every second that it is still in progress, as a slow handler would, so it
// is not redelivered meanwhile.
func infraHoldUntil(msg async.IncomingMessage, done <-chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			_ = msg.Extend()
		}
	}
}

// TestInfraConsumerOutage kills a private nats-server while a durable
// group holds deliveries it has not acked: some were handled and committed
// (their acks are lost), some were still in progress and fail once the
// server is gone (their NAcks are lost). After the restart on the same port
// and store directory JetStream redelivers them; the PostgreSQL inbox
// absorbs the redeliveries of the handled ones and the others are handled
// then. Every ID is handled exactly once (one row, one committed handler
// call), including messages published after the restart.
func TestInfraConsumerOutage(t *testing.T) {
	infraNoLeaks(t)
	testenv.URL(t, testenv.NATS) // runs with the other service tests
	pg := newInfraPG(t)
	pg.exec(t, infraHandledTable)
	srv := testenv.StartNATS(t)
	ctx := infraCtx(t, 3*time.Minute)

	reconnected := make(chan struct{}, 1)
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	_, pubJS := infraConnect(t, srv.URL(), append(opts, nats.Name("publisher"))...)
	// The consumer's connection buffers nothing while disconnected: an ack
	// sent during the outage is lost, not delivered after the reconnect.
	subNC, subJS := infraConnect(t, srv.URL(), append(opts, nats.Name("consumer"), nats.ReconnectBufSize(-1),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case reconnected <- struct{}{}:
			default:
			}
		}))...)
	const stream, topic = "CONSUMEROUTAGE", "outage.consumer"
	infraStream(t, pubJS, jetstream.StreamConfig{
		Name: stream, Subjects: []string{topic}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute,
	})
	codecs := codec.NewRegistry(codec.Msgpack())
	pub := natsjs.NewPublisher(pubJS, natsjs.PublisherConfig{AckTimeout: 2 * time.Second})
	payments := txm.NewOutbox[infraPayment](pub, txm.WithCodecs(codecs))
	all := map[string]bool{}
	hold := map[string]string{}
	// publish publishes messages from to to; with held, a few of them are
	// held by the consumer until the outage.
	publish := func(from, to int, held bool) {
		t.Helper()
		for i := from; i < to; i++ {
			id := fmt.Sprintf("payment-%04d", i)
			var hdr async.Metadata
			switch {
			case held && i%50 == 10:
				hdr = async.Metadata{infraHdrHold: "commit"}
			case held && i%50 == 35:
				hdr = async.Metadata{infraHdrHold: "fail"}
			}
			if hdr != nil {
				hold[id] = hdr.GetString(infraHdrHold)
			}
			// Retry as a relay would, with the same ID, while JetStream
			// comes back after the restart.
			deadline := time.Now().Add(20 * time.Second)
			for {
				err := payments.Publish(ctx, topic, infraPayment{OrderID: id, Cents: int64(i), Method: "card"},
					txm.WithMessageID(id), txm.WithHeaders(hdr))
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("publish %s: %v", id, err)
				}
				time.Sleep(50 * time.Millisecond) // a relay's retry interval
			}
			all[id] = true
		}
	}
	const before, after = 300, 200
	publish(0, before, true)

	// The consumer: the held messages wait for the outage.
	consumer := newInfraConsumer()
	down := make(chan struct{})
	var heldIn, heldOut sync.WaitGroup
	heldIn.Add(len(hold))
	var seen sync.Map // ID -> delivered before
	var deliveries sync.Map
	faults := func(next async.MessageHandler) async.MessageHandler {
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			n, _ := deliveries.LoadOrStore(msg.ID(), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
			mode := msg.Metadata().GetString(infraHdrHold)
			if _, again := seen.LoadOrStore(msg.ID(), true); again || mode == "" {
				return next.HandleMessage(ctx, msg)
			}
			heldOut.Add(1)
			defer heldOut.Done()
			switch mode {
			case "commit":
				err := next.HandleMessage(ctx, msg) // commits; the ack will be lost
				heldIn.Done()
				infraHoldUntil(msg, down)
				return err
			default: // "fail": still in progress when the server dies
				heldIn.Done()
				infraHoldUntil(msg, down)
				return errors.New("the broker went away (injected)")
			}
		})
	}
	sub := natsjs.NewSubscriber(subJS, natsjs.SubscriberConfig{Logger: infraDiscardLogger()})
	t.Cleanup(func() { _ = sub.Close() })
	infraSubscribe(t, sub, topic,
		infraHandler(consumer, pg.store.Store, codecs, faults, func(p infraPayment) string { return p.OrderID }),
		async.GroupName("billing"), async.Concurrency(16), async.AckWait(3*time.Second),
		async.RedeliveryDelay(100*time.Millisecond), async.MaxRedeliveries(-1))

	// Wait until every message of the first wave is either handled or
	// held, then kill the server.
	heldDone := make(chan struct{})
	go func() { heldIn.Wait(); close(heldDone) }()
	select {
	case <-heldDone:
	case <-time.After(60 * time.Second):
		close(down)
		t.Fatal("the held messages were not all delivered within 60s")
	}
	failHeld := 0
	for _, m := range hold {
		if m == "fail" {
			failHeld++
		}
	}
	infraWaitFor(t, 60*time.Second, "the first wave to be handled", func() bool {
		return pg.count(t, `SELECT count(*) FROM handled`) == before-failHeld
	}, func() string { return fmt.Sprintf("%d rows", pg.count(t, `SELECT count(*) FROM handled`)) })
	srv.Stop()
	infraWaitFor(t, 10*time.Second, "the consumer's connection to notice the outage", func() bool { return !subNC.IsConnected() }, nil)
	close(down)
	heldOut.Wait() // their acks and NAcks went nowhere
	select {
	case <-reconnected: // drain a spurious signal
	default:
	}
	srv.Start()
	select {
	case <-reconnected:
	case <-time.After(20 * time.Second):
		t.Fatal("the consumer did not reconnect within 20s")
	}
	publish(before, before+after, false)

	commitHeld := len(hold) - failHeld
	infraWaitFor(t, 60*time.Second, "every message to be handled and the lost acks redelivered", func() bool {
		return pg.count(t, `SELECT count(DISTINCT msg_id) FROM handled`) == len(all) && consumer.duplicates.Load() >= int64(commitHeld)
	}, func() string {
		return fmt.Sprintf("%d of %d handled, %d duplicates absorbed (want >= %d)",
			pg.count(t, `SELECT count(DISTINCT msg_id) FROM handled`), len(all), consumer.duplicates.Load(), commitHeld)
	})

	rows := pg.handledRows(t)
	for id := range all {
		if rows[id] != 1 {
			t.Errorf("message %s (held: %q) has %d rows, want 1", id, hold[id], rows[id])
		}
		if n := consumer.callsOf(id); n != 1 {
			t.Errorf("message %s (held: %q): the handler committed %d times, want 1", id, hold[id], n)
		}
	}
	for id := range rows {
		if !all[id] {
			t.Errorf("row for unknown message %s", id)
		}
	}
	for id := range hold {
		n, _ := deliveries.Load(id)
		if got := n.(*atomic.Int64).Load(); got < 2 {
			t.Errorf("held message %s was delivered %d times, want a redelivery after the restart", id, got)
		}
	}
	if n := pg.count(t, `SELECT count(*) FROM `+sqlstore.DefaultInboxTable+` WHERE consumer_group = 'billing'`); n != len(all) {
		t.Errorf("inbox holds %d records, want %d", n, len(all))
	}
	t.Logf("%d messages, %d held across the outage (%d handled before it); %d duplicates absorbed by the inbox",
		len(all), len(hold), commitHeld, consumer.duplicates.Load())
}
