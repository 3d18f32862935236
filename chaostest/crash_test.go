package chaostest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// crashConfig is the size of one crash-cycle run.
type crashConfig struct {
	broker    string
	kills     int
	killEvery time.Duration
	rate      int
	relays    int
	consumers int
	keys      int
	drain     time.Duration
}

func crashConfigFromFlags() crashConfig {
	return crashConfig{
		broker: *flagBroker, kills: *flagKills, killEvery: *flagKillEvery, rate: *flagRate,
		relays: max(*flagRelays, 1), consumers: max(*flagConsumers, 1), keys: max(*flagKeys, 1), drain: *flagDrain,
	}
}

// TestCrashCycles is the crash-cycle suite on the broker -chaos.broker
// names (by default a private nats-server of the module version with
// sync_interval: always).
func TestCrashCycles(t *testing.T) {
	runCrashCycles(t, crashConfigFromFlags())
}

// TestCrashCyclesNATS29 runs a shorter crash-cycle suite on a private
// instance of the system's nats-server (Debian's 2.9), for compatibility.
func TestCrashCyclesNATS29(t *testing.T) {
	cfg := crashConfigFromFlags()
	cfg.broker = "system"
	cfg.kills = max(cfg.kills/3, 1)
	runCrashCycles(t, cfg)
}

// The relays' settings. The bound on duplicates on the wire follows from
// them: a relay killed holds at most batch × batchesInFlight messages
// published but not yet marked.
const (
	relayWorkers         = 4
	relayBatch           = 50
	relayBatchesInFlight = 2
	relayLease           = 3 * time.Second
	consumerAckWait      = 5 * time.Second
	// consumerMaxAckPending bounds the group's unacked deliveries, so a
	// consumer killed leaves at most this many to be delivered again.
	consumerMaxAckPending = 64
)

func runCrashCycles(t *testing.T, cfg crashConfig) {
	e := newEnv(t, cfg.broker)
	logDir := t.TempDir()

	var procs, relays []*proc
	for i := range cfg.relays {
		p := e.relayProc(t, fmt.Sprintf("relay-%d", i), relayConfig{
			lockClaims: i%2 == 1, workers: relayWorkers, batch: relayBatch, batchesInFlight: relayBatchesInFlight,
			lease: relayLease, publishTimeout: 5 * time.Second,
		}, logDir)
		relays = append(relays, p)
		procs = append(procs, p)
	}
	for i := range cfg.consumers {
		procs = append(procs, e.consumerProc(t, fmt.Sprintf("consumer-%d", i), consumerAckWait, logDir))
	}
	for _, p := range procs {
		p.start()
	}
	started := time.Now()
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
		}
		if t.Failed() {
			for _, p := range procs {
				t.Logf("%s (last lines of %s):\n%s", p.name, p.log, p.tail(30))
			}
		}
	})

	// Producers write while the kills go on.
	l := newLedger()
	pctx, stopProducers := context.WithCancel(context.Background())
	var pwg sync.WaitGroup
	pwg.Go(func() { e.produce(pctx, l, 4, cfg.keys, cfg.rate) })

	kills := map[string]int{}
	for range cfg.kills {
		time.Sleep(time.Duration(float64(cfg.killEvery) * (0.5 + rand.Float64())))
		p := procs[rand.IntN(len(procs))]
		p.kill()
		kills[p.kind]++
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		p.start()
	}
	stopProducers()
	pwg.Wait()
	killPhase := time.Since(started)
	committed, rolledBack := l.counts()
	if len(l.commitErrs) > 0 {
		t.Errorf("%d commits ended with an unknown outcome, e.g. %v", len(l.commitErrs), l.commitErrs[0])
	}
	if len(l.refused) > 0 {
		t.Errorf("%d producer transactions failed before their commit, e.g. %v", len(l.refused), l.refused[0])
	}
	if committed == 0 {
		t.Fatal("no transaction committed")
	}

	// Everything committed is handled in the end.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.drain+time.Minute)
	defer cancel()
	deadline := time.Now().Add(cfg.drain)
	var handled, pending int
	for {
		if err := e.pool.QueryRow(ctx, `SELECT count(DISTINCT msg_id) FROM `+e.table("effects")).Scan(&handled); err != nil {
			t.Fatal(err)
		}
		if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM `+e.table("txm_outbox")).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if handled >= committed && pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("after %v of draining: %d of %d committed messages handled, %d still in the outbox", cfg.drain, handled, committed, pending)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	drainTime := time.Since(started) - killPhase

	// A graceful stop ends every process with status 0.
	for _, p := range procs {
		if err := p.stop(30 * time.Second); err != nil {
			t.Errorf("SIGTERM: %v", err)
		}
	}
	for _, p := range procs {
		for _, f := range p.unexpected() {
			t.Errorf("%s", f)
		}
	}

	r := e.check(t, ctx, l)
	relayKills := kills["relay"]
	bound := relayKills * relayBatch * relayBatchesInFlight
	if r.wireDuplicates > bound {
		t.Errorf("wire duplicates: %d copies of messages in the stream beyond the first, more than the %d that can be in flight at %d relay kills (%d × batch %d × %d batches in flight)",
			r.wireDuplicates, bound, relayKills, relayKills, relayBatch, relayBatchesInFlight)
	}
	redeliveryBound := kills["consumer"]*consumerMaxAckPending + r.wireDuplicates
	if r.redeliveries > redeliveryBound {
		t.Errorf("redeliveries: %d, more than the %d that can be unacked at %d consumer kills (MaxAckPending %d) plus the stream's duplicates",
			r.redeliveries, redeliveryBound, kills["consumer"], consumerMaxAckPending)
	}
	t.Logf("crash cycles on %s (%s): %d relays (%d with locked claims), %d consumers, %d keys",
		e.broker, serverVersion(e), cfg.relays, cfg.relays/2, cfg.consumers, cfg.keys)
	t.Logf("kills: %d (relays %d, consumers %d) over %v; drained in %v",
		cfg.kills, kills["relay"], kills["consumer"], killPhase.Round(time.Second), drainTime.Round(time.Second))
	t.Logf("messages committed: %d; rolled back on purpose: %d; lost: %d; double effects: %d; rolled back published: %d, handled: %d",
		committed, rolledBack, r.lost, r.doubleEffects, r.rolledBackPublished, r.rolledBackHandled)
	t.Logf("per-key order violations in the stream: %d over %d keys; wire duplicates: %d copies in the stream (bound %d); redeliveries to consumers: %d (bound %d, absorbed by the inbox)",
		r.orderViolations, r.keys, r.wireDuplicates, bound, r.redeliveries, redeliveryBound)
}

// result is what the ledger check found.
type result struct {
	lost, doubleEffects, unknownEffects        int
	rolledBackPublished, rolledBackHandled     int
	unknownPublished, missingInStream          int
	orderViolations, keys                      int
	wireDuplicates, redeliveries, businessRows int
}

// check compares the ledger with the business rows, the effects, the
// deliveries and the stream, and reports every discrepancy as an error.
func (e *env) check(t *testing.T, ctx context.Context, l *ledger) result {
	t.Helper()
	var r result
	l.mu.Lock()
	defer l.mu.Unlock()

	// The business rows are exactly the committed transactions.
	rows, err := e.pool.Query(ctx, `SELECT id FROM `+e.table("orders"))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		r.businessRows++
		if _, ok := l.committed[id]; !ok {
			t.Errorf("business row %s is not a committed transaction of the producers", id)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if r.businessRows != len(l.committed) {
		t.Errorf("%d business rows, %d committed transactions", r.businessRows, len(l.committed))
	}

	// Effects: each committed message exactly once, nothing else.
	effects := map[string]int{}
	rows, err = e.pool.Query(ctx, `SELECT msg_id, count(*) FROM `+e.table("effects")+` GROUP BY msg_id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		effects[id] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var examples []string
	for id := range l.committed {
		switch n := effects[id]; {
		case n == 0:
			r.lost++
			examples = append(examples, id+" never handled")
		case n > 1:
			r.doubleEffects += n - 1
			examples = append(examples, fmt.Sprintf("%s handled %d times", id, n))
		}
	}
	for id := range effects {
		if _, ok := l.rolledBack[id]; ok {
			r.rolledBackHandled++
			examples = append(examples, id+" rolled back but handled")
		} else if _, ok := l.committed[id]; !ok {
			r.unknownEffects++
			examples = append(examples, id+" handled but never written")
		}
	}
	if len(examples) > 0 {
		t.Errorf("effects: %d lost, %d double, %d rolled back handled, %d unknown; e.g. %s",
			r.lost, r.doubleEffects, r.rolledBackHandled, r.unknownEffects, strings.Join(examples[:min(len(examples), 5)], "; "))
	}

	if err := e.pool.QueryRow(ctx, `SELECT count(*) - count(DISTINCT msg_id) FROM `+e.table("deliveries")).Scan(&r.redeliveries); err != nil {
		t.Fatal(err)
	}
	e.checkStream(t, ctx, l, &r)
	return r
}

// checkStream reads the whole stream back in order: every committed message
// is in it, nothing rolled back or unknown is, and each key's messages
// appear in the order their transactions committed (seq).
func (e *env) checkStream(t *testing.T, ctx context.Context, l *ledger, r *result) {
	t.Helper()
	st, err := e.js.Stream(ctx, e.stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	total := int(info.State.Msgs)
	cons, err := e.js.OrderedConsumer(ctx, e.stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	last := map[string]int{}
	var examples []string
	for read := 0; read < total; {
		batch, err := cons.Fetch(min(total-read, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get("Nats-Msg-Id")
			var o order
			if err := json.Unmarshal(m.Data(), &o); err != nil {
				t.Errorf("stream message %s: %v", id, err)
				continue
			}
			seen[id]++
			if seen[id] > 1 {
				r.wireDuplicates++
				continue
			}
			if _, ok := l.rolledBack[id]; ok {
				r.rolledBackPublished++
				examples = append(examples, id+" rolled back but published")
			} else if _, ok := l.committed[id]; !ok {
				r.unknownPublished++
				examples = append(examples, id+" published but never written")
			}
			if prev, ok := last[o.Key]; ok && o.Seq <= prev {
				r.orderViolations++
				examples = append(examples, fmt.Sprintf("%s: seq %d published after seq %d", o.Key, o.Seq, prev))
			}
			last[o.Key] = max(last[o.Key], o.Seq)
		}
		if err := batch.Error(); err != nil {
			t.Fatalf("read the stream: %v", err)
		}
		if n == 0 {
			t.Fatalf("read the stream: %d of %d messages, then nothing", read, total)
		}
		read += n
	}
	r.keys = len(last)
	for id := range l.committed {
		if seen[id] == 0 {
			r.missingInStream++
			examples = append(examples, id+" committed but not in the stream")
		}
	}
	if len(examples) > 0 {
		t.Errorf("stream: %d rolled back published, %d unknown, %d committed missing, %d order violations; e.g. %s",
			r.rolledBackPublished, r.unknownPublished, r.missingInStream, r.orderViolations, strings.Join(examples[:min(len(examples), 5)], "; "))
	}
}

// serverVersion is the version the NATS server reports.
func serverVersion(e *env) string { return "nats-server " + e.nc.ConnectedServerVersion() }
