package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// Helpers of the PostgreSQL -> JetStream drain and latency benchmarks
// (drain_bench_test.go). Their names start with pgjs so they do not clash
// with the relay benchmarks' helpers of the same package.

// pgjsPayloadSize is the size of every benchmark message's payload.
const pgjsPayloadSize = 256

// pgjsLease is the claim lease of the relay and of the hand-written loop.
const pgjsLease = 30 * time.Second

// pgjsDrainTimeout bounds one drain.
const pgjsDrainTimeout = 5 * time.Minute

func pgjsRandom() string {
	buf := make([]byte, 5)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

func pgjsDiscardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// pgjsEnv is a benchmark's PostgreSQL schema and JetStream stream, both of
// its own and removed in cleanup.
type pgjsEnv struct {
	url    string
	schema string
	pool   *pgxpool.Pool
	// store is a PollOnly store: the drains do not need wake-ups.
	store  *sqlstore.Store
	outbox string // the qualified outbox table

	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	topic  string
}

func newPGJSEnv(b testing.TB) *pgjsEnv {
	b.Helper()
	pgURL := testenv.URL(b, testenv.Postgres)
	natsURL := testenv.URL(b, testenv.NATS)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &pgjsEnv{url: pgURL, schema: "txm_drain_" + pgjsRandom()}

	admin, err := pgxpool.New(ctx, pgURL)
	if err != nil {
		b.Fatalf("connect to PostgreSQL: %v", err)
	}
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+e.schema); err != nil {
		admin.Close()
		b.Fatalf("create schema: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP SCHEMA "+e.schema+" CASCADE"); err != nil {
			b.Errorf("drop schema %s: %v", e.schema, err)
		}
		admin.Close()
	})
	e.pool = e.newPool(b)
	e.store = e.newStore(b, true)
	if err := e.store.Migrate(ctx); err != nil {
		b.Fatalf("migrate: %v", err)
	}
	e.outbox = e.schema + "." + sqlstore.DefaultOutboxTable

	e.nc, err = nats.Connect(natsURL, nats.Name("txm drain benchmark"))
	if err != nil {
		b.Fatalf("connect to NATS: %v", err)
	}
	b.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		b.Fatalf("jetstream: %v", err)
	}
	name := "TXMDRAIN_" + strings.ToUpper(pgjsRandom())
	e.topic = "txmdrain." + strings.ToLower(name) + ".events"
	e.stream, err = natsjs.EnsureStream(ctx, e.js, jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{e.topic},
		Storage:  jetstream.FileStorage,
		// Long enough for the relay's retries in a real deployment; short
		// here so that the server's duplicate map stays small.
		Duplicates: 10 * time.Second,
	})
	if err != nil {
		b.Fatalf("create stream: %v", err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.js.DeleteStream(ctx, name); err != nil {
			b.Errorf("delete stream %s: %v", name, err)
		}
	})
	return e
}

// newPool opens a pool on the env's database, closed in cleanup.
func (e *pgjsEnv) newPool(b testing.TB) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(e.url)
	if err != nil {
		b.Fatalf("parse %s: %v", e.url, err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatalf("pool: %v", err)
	}
	b.Cleanup(pool.Close)
	return pool
}

// newStore returns a store on the env's tables, closed in cleanup.
func (e *pgjsEnv) newStore(b testing.TB, pollOnly bool) *sqlstore.Store {
	b.Helper()
	cfg := sqlstore.Config{Schema: e.schema, NotifyChannel: e.schema, PollOnly: pollOnly, Logger: pgjsDiscardLogger()}
	// TXM_DRAIN_NOTIFY_INTERVAL sets Config.NotifyInterval (a Go
	// duration; negative: a NOTIFY with every save).
	if v := os.Getenv("TXM_DRAIN_NOTIFY_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("TXM_DRAIN_NOTIFY_INTERVAL: %v", err)
		}
		cfg.NotifyInterval = d
	}
	s, err := sqlstore.NewPostgres(e.pool, cfg)
	if err != nil {
		b.Fatalf("NewPostgres: %v", err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// pgjsMessages returns n new messages of pgjsPayloadSize bytes on topic,
// without partition keys, each with a content type.
func pgjsMessages(topic string, n int) []async.Message { return pgjsKeyedMessages(topic, n, 0) }

// pgjsKeyedMessages is pgjsMessages with the i-th message's partition key
// "key-(i mod keys)", none when keys is 0.
func pgjsKeyedMessages(topic string, n, keys int) []async.Message {
	payload := []byte(`{"order_id":"0192f7a0-7c1e-7d2a-9b1e-5f3c2a1d0e9f","customer":"c-1042","cents":12999,"note":"`)
	payload = append(payload, strings.Repeat("x", pgjsPayloadSize-len(payload)-2)...)
	payload = append(payload, `"}`...)
	msgs := make([]async.Message, n)
	for i := range msgs {
		md := async.Metadata{async.MetaContentType: "application/json"}
		if keys > 0 {
			md[async.MetaPartitionKey] = "key-" + strconv.Itoa(i%keys)
		}
		msgs[i] = async.NewMessage(topic, "OrderPlaced", payload, async.WithMetadata(md))
	}
	return msgs
}

// fill empties the outbox and the stream, then saves n new messages with
// the store's SaveMany and refreshes the table's statistics, so both
// drains start from identical rows and plans.
func (e *pgjsEnv) fill(b testing.TB, n int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e.reset(b)
	for chunk := range slices.Chunk(pgjsKeyedMessages(e.topic, n, pgjsEnvInt(b, "TXM_DRAIN_KEYS", 0)), 5000) {
		if k, err := e.store.Outbox().SaveMany(ctx, chunk); err != nil || k != len(chunk) {
			b.Fatalf("SaveMany: %d of %d: %v", k, len(chunk), err)
		}
	}
	if _, err := e.pool.Exec(ctx, "VACUUM ANALYZE "+e.outbox); err != nil {
		b.Fatalf("vacuum: %v", err)
	}
}

// reset empties the outbox and the stream.
func (e *pgjsEnv) reset(b testing.TB) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.pool.Exec(ctx, "TRUNCATE "+e.outbox); err != nil {
		b.Fatalf("truncate: %v", err)
	}
	if err := e.stream.Purge(ctx); err != nil {
		b.Fatalf("purge stream: %v", err)
	}
}

// check verifies that a drain published n messages: no row left
// unpublished (the relay deletes the rows it publishes, the hand-written
// loops on this table mark them) and n messages in the stream.
func (e *pgjsEnv) check(b testing.TB, n int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var other int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM `+e.outbox+` WHERE state <> 'published'`).Scan(&other); err != nil {
		b.Fatalf("count: %v", err)
	}
	info, err := e.stream.Info(ctx)
	if err != nil {
		b.Fatalf("stream info: %v", err)
	}
	if other != 0 || info.State.Msgs != uint64(n) {
		b.Fatalf("after the drain: %d rows unpublished, %d messages in the stream; want 0, %d", other, info.State.Msgs, n)
	}
}

// pgjsPhases adds up where a drain spends its time.
type pgjsPhases struct {
	claim, publish, mark          atomic.Int64 // nanoseconds
	claims, marks                 atomic.Int64 // calls
	claimed, empty                atomic.Int64 // messages claimed, claims that got none
	maxClaim, maxPublish, maxMark atomic.Int64 // the longest call, nanoseconds
}

// add records one call of a phase.
func (p *pgjsPhases) add(total, longest, calls *atomic.Int64, d time.Duration) {
	total.Add(int64(d))
	if calls != nil {
		calls.Add(1)
	}
	for {
		m := longest.Load()
		if int64(d) <= m || longest.CompareAndSwap(m, int64(d)) {
			return
		}
	}
}

func (p *pgjsPhases) String() string {
	c, pub, m := time.Duration(p.claim.Load()), time.Duration(p.publish.Load()), time.Duration(p.mark.Load())
	total := c + pub + m
	if total == 0 {
		return "no phases recorded"
	}
	pct := func(d time.Duration) float64 { return 100 * float64(d) / float64(total) }
	per := func(d time.Duration, n int64) time.Duration {
		if n == 0 {
			return 0
		}
		return d / time.Duration(n)
	}
	longest := func(v *atomic.Int64) time.Duration { return time.Duration(v.Load()).Round(time.Microsecond) }
	return fmt.Sprintf("claim %.0f%% (%d calls, %d empty, %.1f messages and %v each, longest %v), publish+acks %.0f%% (%v, longest %v), mark %.0f%% (%d calls, %v each, longest %v)",
		pct(c), p.claims.Load(), p.empty.Load(), float64(p.claimed.Load())/float64(max(p.claims.Load(), 1)),
		per(c, p.claims.Load()).Round(time.Microsecond), longest(&p.maxClaim),
		pct(pub), pub.Round(time.Millisecond), longest(&p.maxPublish),
		pct(m), p.marks.Load(), per(m, p.marks.Load()).Round(time.Microsecond), longest(&p.maxMark))
}

// pgjsCountingOutbox is the store's outbox with a MarkPublished that counts:
// done is closed once target messages are marked. It embeds the outbox, so
// the relay still finds every optional capability.
type pgjsCountingOutbox struct {
	*sqlstore.Outbox
	phases *pgjsPhases
	// times, when set, records when each message's claim began and ended.
	times  *pgjsAckTimes
	target int64
	marked atomic.Int64
	once   sync.Once
	done   chan struct{}
}

func (o *pgjsCountingOutbox) Claim(ctx context.Context, limit int, lease time.Duration) ([]txm.Claimed, error) {
	start := time.Now()
	c, err := o.Outbox.Claim(ctx, limit, lease)
	return o.claimed(start, c, err)
}

// ClaimLocked times a locked claim (ProcessorConfig.LockClaims) as Claim
// times a lease claim.
func (o *pgjsCountingOutbox) ClaimLocked(ctx context.Context, limit int, idle time.Duration) ([]txm.Claimed, error) {
	start := time.Now()
	c, err := o.Outbox.ClaimLocked(ctx, limit, idle)
	return o.claimed(start, c, err)
}

// InTx counts the messages marked in the transaction once it commits: a
// locked claim's marks take effect then.
func (o *pgjsCountingOutbox) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	var inTx atomic.Int64
	if err := o.Outbox.InTx(context.WithValue(ctx, pgjsMarkedKey{}, &inTx), fn); err != nil {
		return err
	}
	o.count(inTx.Load())
	return nil
}

// pgjsMarkedKey carries the count of a transaction's marked messages.
type pgjsMarkedKey struct{}

func (o *pgjsCountingOutbox) count(n int64) {
	if n > 0 && o.marked.Add(n) >= o.target {
		o.once.Do(func() { close(o.done) })
	}
}

func (o *pgjsCountingOutbox) claimed(start time.Time, c []txm.Claimed, err error) ([]txm.Claimed, error) {
	end := time.Now()
	o.phases.add(&o.phases.claim, &o.phases.maxClaim, &o.phases.claims, end.Sub(start))
	if o.times != nil && len(c) > 0 {
		o.times.mu.Lock()
		for _, m := range c {
			o.times.claimed[m.Message.ID()] = [2]time.Time{start, end}
		}
		o.times.mu.Unlock()
	}
	o.phases.claimed.Add(int64(len(c)))
	if len(c) == 0 {
		o.phases.empty.Add(1)
	}
	return c, err
}

func (o *pgjsCountingOutbox) MarkPublished(ctx context.Context, ids ...string) error {
	start := time.Now()
	err := o.Outbox.MarkPublished(ctx, ids...)
	o.phases.add(&o.phases.mark, &o.phases.maxMark, &o.phases.marks, time.Since(start))
	if err != nil {
		return err
	}
	if inTx, ok := ctx.Value(pgjsMarkedKey{}).(*atomic.Int64); ok {
		inTx.Add(int64(len(ids)))
		return nil
	}
	o.count(int64(len(ids)))
	return nil
}

// drainRelay runs the relay (natsjs.Publisher, the store's Claim and
// MarkPublished) until it marked n messages published; inFlight is its
// BatchesInFlight, 0 for the default. The timer runs from Start to the
// last MarkPublished.
func (e *pgjsEnv) drainRelay(b *testing.B, n, batch, workers, inFlight int, lock bool, pubCfg natsjs.PublisherConfig) {
	b.Helper()
	phases := &pgjsPhases{}
	out := &pgjsCountingOutbox{Outbox: e.store.Outbox(), phases: phases, target: int64(n), done: make(chan struct{})}
	pub := &pgjsPhasePublisher{next: natsjs.NewPublisher(e.js, pubCfg), phases: phases}
	relay, err := txm.NewOutboxProcessorWithConfig(pub, out, txm.ProcessorConfig{
		Workers: workers, BatchSize: batch, BatchesInFlight: inFlight, Lease: pgjsLease, LockClaims: lock,
		PollInterval: 10 * time.Millisecond, Logger: pgjsDiscardLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	b.StartTimer()
	go func() {
		defer close(stopped)
		_ = relay.Start(ctx)
	}()
	select {
	case <-out.done:
	case <-time.After(pgjsDrainTimeout):
		b.Errorf("the relay marked %d of %d messages in %v", out.marked.Load(), n, pgjsDrainTimeout)
	}
	b.StopTimer()
	cancel()
	<-stopped
	b.Logf("relay: %v", phases)
}

// pgjsPhasePublisher times the relay's publishes.
type pgjsPhasePublisher struct {
	next   *natsjs.Publisher
	phases *pgjsPhases
}

func (p *pgjsPhasePublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	start := time.Now()
	err := p.next.Publish(ctx, topic, msg)
	p.phases.add(&p.phases.publish, &p.phases.maxPublish, nil, time.Since(start))
	return err
}

func (p *pgjsPhasePublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	start := time.Now()
	errs, err := p.next.PublishBatch(ctx, msgs)
	p.phases.add(&p.phases.publish, &p.phases.maxPublish, nil, time.Since(start))
	return errs, err
}

// pgjsRow is a claimed row of the hand-written loop.
type pgjsRow struct {
	id, topic, name string
	metadata        []byte
	payload         []byte
	sentAt          time.Time
}

// drainBaseline is the hand-written minimal relay on the same table: claim
// a batch with one statement (SELECT ... FOR UPDATE SKIP LOCKED inside the
// lease UPDATE, committed on its own), publish it with PublishMsgAsync,
// wait for every PubAck, mark it published with one UPDATE ... WHERE id =
// ANY($1) (committed on its own), until a claim comes back empty. Two
// round trips to PostgreSQL per batch; no partition-key ordering, no
// retries, no lease renewal, no observer.
func (e *pgjsEnv) drainBaseline(b *testing.B, n, batch int) {
	e.drainLoop(b, n, batch, false)
}

// drainBaselineTx is the hand-written loop as the brief words it,
// one transaction per batch: SELECT ... FOR UPDATE SKIP LOCKED, publish,
// wait for every PubAck, UPDATE ... WHERE id = ANY($1), COMMIT. The row
// locks are the lease (no lease column is written, so each message gets
// one new row version instead of two), held across the publish; a relay
// that dies leaves its locks until PostgreSQL notices the dead connection.
func (e *pgjsEnv) drainBaselineTx(b *testing.B, n, batch int) {
	e.drainLoop(b, n, batch, true)
}

func (e *pgjsEnv) drainLoop(b *testing.B, n, batch int, oneTx bool) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgjsDrainTimeout)
	defer cancel()
	l := e.newLoop(e.js, batch, oneTx, nil)
	b.StartTimer()
	done, err := l.drain(ctx)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("baseline: %v", &l.phases)
	if done != n {
		b.Fatalf("baseline drained %d messages, want %d", done, n)
	}
}

// pgjsLoop is the hand-written loop: its batch method claims, publishes,
// waits for the PubAcks and marks one batch.
type pgjsLoop struct {
	e           *pgjsEnv
	js          jetstream.JetStream
	size        int
	oneTx       bool
	claim, mark string
	phases      pgjsPhases
	times       *pgjsAckTimes // when set, records each message's claim, publish and confirmation
	rows        []pgjsRow
	futures     []jetstream.PubAckFuture
	ids         []string
}

// newLoop returns a loop on the env's outbox that publishes with js.
// oneTx: one transaction per batch (baseline-tx), otherwise a lease claim
// and a mark each committed on their own (baseline).
func (e *pgjsEnv) newLoop(js jetstream.JetStream, size int, oneTx bool, times *pgjsAckTimes) *pgjsLoop {
	l := &pgjsLoop{e: e, js: js, size: size, oneTx: oneTx, times: times,
		rows: make([]pgjsRow, 0, size), futures: make([]jetstream.PubAckFuture, 0, size), ids: make([]string, 0, size)}
	l.claim = `UPDATE ` + e.outbox + ` SET claimed_until = statement_timestamp() + $2::bigint * interval '1 microsecond'
WHERE id = ANY (ARRAY(
    SELECT id FROM ` + e.outbox + `
    WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= statement_timestamp())
    ORDER BY seq
    LIMIT $1
    FOR UPDATE SKIP LOCKED))
RETURNING id, topic, name, metadata, payload, sent_at`
	if oneTx {
		l.claim = `SELECT id, topic, name, metadata, payload, sent_at FROM ` + e.outbox + `
WHERE state = 'pending' AND (claimed_until IS NULL OR claimed_until <= statement_timestamp())
ORDER BY seq
LIMIT $1
FOR UPDATE SKIP LOCKED`
	}
	l.mark = `UPDATE ` + e.outbox + ` SET state = 'published', published_at = statement_timestamp(), claimed_until = NULL
WHERE id = ANY($1) AND state <> 'published'`
	return l
}

// drain runs batches until a claim comes back empty and returns how many
// messages they published.
func (l *pgjsLoop) drain(ctx context.Context) (int, error) {
	done := 0
	for {
		got, err := l.batch(ctx)
		if err != nil || got == 0 {
			return done, err
		}
		done += got
	}
}

// batch claims up to the loop's size of messages, publishes them, waits
// for every PubAck and marks them. It returns how many it published: 0
// when the claim found none.
func (l *pgjsLoop) batch(ctx context.Context) (int, error) {
	var q interface {
		Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
		Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	} = l.e.pool
	t0 := time.Now()
	args := []any{l.size, pgjsLease.Microseconds()}
	if l.oneTx {
		tx, err := l.e.pool.Begin(ctx)
		if err != nil {
			return 0, fmt.Errorf("baseline begin: %w", err)
		}
		defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
		q, args = tx, args[:1]
	}
	rows, err := q.Query(ctx, l.claim, args...)
	if err != nil {
		return 0, fmt.Errorf("baseline claim: %w", err)
	}
	l.rows = l.rows[:0]
	for rows.Next() {
		var r pgjsRow
		if err := rows.Scan(&r.id, &r.topic, &r.name, &r.metadata, &r.payload, &r.sentAt); err != nil {
			return 0, fmt.Errorf("baseline scan: %w", err)
		}
		l.rows = append(l.rows, r)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("baseline claim: %w", err)
	}
	t1 := time.Now()
	l.phases.add(&l.phases.claim, &l.phases.maxClaim, &l.phases.claims, t1.Sub(t0))
	l.phases.claimed.Add(int64(len(l.rows)))
	if len(l.rows) == 0 {
		l.phases.empty.Add(1)
		return 0, nil // the deferred rollback ends a transaction
	}
	l.futures, l.ids = l.futures[:0], l.ids[:0]
	for _, r := range l.rows {
		var md map[string]string
		if err := json.Unmarshal(r.metadata, &md); err != nil {
			return 0, fmt.Errorf("baseline metadata: %w", err)
		}
		h := make(nats.Header, len(md)+3)
		for k, v := range md {
			h[k] = []string{v}
		}
		h[jetstream.MsgIDHeader] = []string{r.id}
		h[async.MetaMessageName] = []string{r.name}
		h[async.MetaSentAt] = []string{r.sentAt.UTC().Format(time.RFC3339Nano)}
		f, err := l.js.PublishMsgAsync(&nats.Msg{Subject: r.topic, Header: h, Data: r.payload})
		if err != nil {
			return 0, fmt.Errorf("baseline publish: %w", err)
		}
		l.futures = append(l.futures, f)
		l.ids = append(l.ids, r.id)
	}
	for _, f := range l.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("baseline PubAck: %w", err)
		case <-ctx.Done():
			return 0, fmt.Errorf("baseline PubAck: %w", ctx.Err())
		}
	}
	t2 := time.Now()
	l.phases.add(&l.phases.publish, &l.phases.maxPublish, nil, t2.Sub(t1))
	if l.times != nil {
		l.times.mu.Lock()
		for _, id := range l.ids {
			l.times.claimed[id] = [2]time.Time{t0, t1}
			l.times.sent[id] = t1
			l.times.confirmed[id] = t2
		}
		l.times.mu.Unlock()
	}
	if _, err := q.Exec(ctx, l.mark, l.ids); err != nil {
		return 0, fmt.Errorf("baseline mark: %w", err)
	}
	if tx, ok := q.(pgx.Tx); ok {
		if err := tx.Commit(ctx); err != nil {
			return 0, fmt.Errorf("baseline commit: %w", err)
		}
	}
	l.phases.add(&l.phases.mark, &l.phases.maxMark, &l.phases.marks, time.Since(t2))
	return len(l.ids), nil
}

// listenLoop runs l as a relay in its own process would
// (scenario.ListenAndDrain): it drains the outbox until a claim comes back
// empty, then waits for a NOTIFY on the env's channel or for poll.
func (e *pgjsEnv) listenLoop(ctx context.Context, l *pgjsLoop, poll time.Duration) error {
	return scenario.ListenAndDrain(ctx, e.url, e.schema, poll, l.drain)
}

// pgjsAckTimes records when the JetStream client received each message's
// PubAck (jetstream.WithPublishAsyncAckHandler) and when the relay's
// publisher returned it confirmed, by message ID.
type pgjsAckTimes struct {
	mu        sync.Mutex
	acked     map[string]time.Time
	confirmed map[string]time.Time
	claimed   map[string][2]time.Time // start and end of the claim
	sent      map[string]time.Time    // start of the PublishBatch call
}

// newPGJSAckTimes sizes the maps for n messages up front, so that growing
// them does not take CPU from the system under measurement.
func newPGJSAckTimes(n int) *pgjsAckTimes {
	return &pgjsAckTimes{acked: make(map[string]time.Time, n), confirmed: make(map[string]time.Time, n),
		claimed: make(map[string][2]time.Time, n), sent: make(map[string]time.Time, n)}
}

// onAck is the JetStream context's PubAck handler.
func (a *pgjsAckTimes) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	now := time.Now()
	id := m.Header.Get(jetstream.MsgIDHeader)
	a.mu.Lock()
	if _, ok := a.acked[id]; !ok {
		a.acked[id] = now
	}
	a.mu.Unlock()
}

func (a *pgjsAckTimes) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.confirmed)
}

// pgjsTimingPublisher wraps the relay's publisher and records when each
// message came back confirmed.
type pgjsTimingPublisher struct {
	next   *natsjs.Publisher
	times  *pgjsAckTimes
	phases *pgjsPhases
}

func (p *pgjsTimingPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	err := p.next.Publish(ctx, topic, msg)
	if err == nil {
		p.record(time.Now(), msg)
	}
	return err
}

func (p *pgjsTimingPublisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	start := time.Now()
	p.times.mu.Lock()
	for _, m := range msgs {
		if _, ok := p.times.sent[m.ID()]; !ok {
			p.times.sent[m.ID()] = start
		}
	}
	p.times.mu.Unlock()
	errs, err := p.next.PublishBatch(ctx, msgs)
	now := time.Now()
	p.phases.add(&p.phases.publish, &p.phases.maxPublish, nil, now.Sub(start))
	if err != nil {
		return errs, err
	}
	for i, m := range msgs {
		if i < len(errs) && errs[i] == nil {
			p.record(now, m)
		}
	}
	return errs, nil
}

func (p *pgjsTimingPublisher) record(at time.Time, msgs ...async.Message) {
	p.times.mu.Lock()
	defer p.times.mu.Unlock()
	for _, m := range msgs {
		if _, ok := p.times.confirmed[m.ID()]; !ok {
			p.times.confirmed[m.ID()] = at
		}
	}
}

// pgjsPercentiles returns the p50, p90, p99 and maximum of ds, which it
// sorts.
func pgjsPercentiles(ds []time.Duration) (p50, p90, p99, maxD time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1)+0.5)] }
	return at(0.50), at(0.90), at(0.99), ds[len(ds)-1]
}

func pgjsMillis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pgjsEnvInt reads a positive integer from env, or returns def.
func pgjsEnvInt(b testing.TB, env string, def int) int {
	b.Helper()
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", env, v)
	}
	return n
}
