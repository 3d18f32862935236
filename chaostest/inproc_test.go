package chaostest

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
)

// logRecorder is a slog handler that keeps the relay's warnings and errors,
// so a fault test can check that the relay said what went wrong.
type logRecorder struct {
	mu      sync.Mutex
	records []string
}

func (l *logRecorder) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelWarn }
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{rec: l, attrs: as}
}
func (l *logRecorder) WithGroup(string) slog.Handler { return l }
func (l *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	return (&attrHandler{rec: l}).Handle(ctx, r)
}

// attrHandler is a logRecorder with attributes from WithAttrs.
type attrHandler struct {
	rec   *logRecorder
	attrs []slog.Attr
}

func (h *attrHandler) Enabled(ctx context.Context, lvl slog.Level) bool {
	return h.rec.Enabled(ctx, lvl)
}
func (h *attrHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrHandler{rec: h.rec, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h *attrHandler) WithGroup(string) slog.Handler { return h }
func (h *attrHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	add := func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.rec.mu.Lock()
	h.rec.records = append(h.rec.records, b.String())
	h.rec.mu.Unlock()
	return nil
}

// matching returns the records that contain any of the words.
func (l *logRecorder) matching(words ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		for _, w := range words {
			if strings.Contains(strings.ToLower(r), strings.ToLower(w)) {
				out = append(out, r)
				break
			}
		}
	}
	return out
}

func (l *logRecorder) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// relayStore opens a store on a pool of its own for an in-process relay:
// its connections carry application_name appName (so a test can find its
// backends) and go to hostport instead of the URL's when hostport is set
// (a proxy).
func (e *env) relayStore(t *testing.T, appName, hostport string) *sqlstore.LockingStore {
	return e.relayStoreLogged(t, appName, hostport, nil)
}

// relayStoreLogged is relayStore with the store's own logs (its LISTEN
// connection's) going to logs; nil discards them.
func (e *env) relayStoreLogged(t *testing.T, appName, hostport string, logs *logRecorder) *sqlstore.LockingStore {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(e.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	if hostport != "" {
		host, port, _ := strings.Cut(hostport, ":")
		p, _ := strconv.Atoi(port)
		cfg.ConnConfig.Host, cfg.ConnConfig.Port = host, uint16(p)
		cfg.ConnConfig.Fallbacks = nil
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	logger := slog.New(slog.DiscardHandler)
	if logs != nil {
		logger = slog.New(logs)
	}
	store, err := postgres.New(pool, sqlstore.Config{Schema: e.schema, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store
}

// jetStream connects to url, reconnecting for ever.
func jetStream(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// inproc is a relay running in the test process.
type inproc struct {
	name   string
	logs   *logRecorder
	cancel context.CancelFunc
	done   chan error
}

// startRelay runs a relay in the test process until stop (or the test's
// end). The config's Logger is set to record the relay's warnings.
func startRelay(t *testing.T, name string, pub async.MessagePublisher, store *sqlstore.LockingStore, cfg txm.ProcessorConfig) *inproc {
	t.Helper()
	r := &inproc{name: name, logs: &logRecorder{}, done: make(chan error, 1)}
	cfg.Logger = slog.New(r.logs)
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 200 * time.Millisecond
	}
	if cfg.Retry == (txm.ProcessorConfig{}).Retry {
		cfg.Retry.InitialInterval, cfg.Retry.MaxInterval, cfg.Retry.MaxAttempts = 50*time.Millisecond, time.Second, -1
	}
	cfg.StoreRetry.InitialInterval, cfg.StoreRetry.MaxInterval = 50*time.Millisecond, time.Second
	p, err := txm.NewOutboxProcessorWithConfig(pub, store.Outbox(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- p.Start(ctx) }()
	t.Cleanup(func() { r.cancel(); <-r.done })
	return r
}

// stop ends the relay and checks that Start returned nil.
func (r *inproc) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("%s: Start returned %v, want nil", r.name, err)
		}
		r.done <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s", r.name)
	}
}

// producing runs the producers in the background until the returned stop.
func (e *env) producing(l *ledger, rate int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { e.produce(ctx, l, 4, 16, rate) })
	return func() { cancel(); wg.Wait() }
}

// outboxStates counts the outbox's rows by state.
func (e *env) outboxStates(ctx context.Context) (map[string]int, error) {
	rows, err := e.pool.Query(ctx, `SELECT state, count(*) FROM `+e.table("txm_outbox")+` GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, err
		}
		out[s] = n
	}
	return out, rows.Err()
}

// waitPublished waits until the outbox is empty, then checks the stream
// against the ledger: every committed message in it, once per key order,
// nothing else.
func (e *env) waitPublished(t *testing.T, l *ledger, timeout time.Duration) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	deadline := time.Now().Add(timeout)
	for {
		states, err := e.outboxStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(states) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the outbox still holds %v", timeout, states)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var r result
	l.mu.Lock()
	defer l.mu.Unlock()
	// A fault that ends the producers' sessions too (the read-only
	// database's) can cut a COMMIT: its business row says how it ended.
	if c, rb, err := e.resolve(ctx, l); err != nil {
		t.Fatal(err)
	} else if c+rb > 0 {
		t.Logf("%d commits cut by the fault: %d committed, %d rolled back (by their business rows), e.g. %v", c+rb, c, rb, l.commitErrs[0])
	}
	e.checkStream(t, ctx, l, &r)
	return r
}

// summary is a fault test's line of figures.
func summary(l *ledger, r result) string {
	c, rb := l.counts()
	return fmt.Sprintf("committed %d, rolled back %d, lost %d, order violations %d, rolled back published %d, stream duplicates %d",
		c, rb, r.missingInStream, r.orderViolations, r.rolledBackPublished, r.wireDuplicates)
}
