package memory_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
)

func TestGroupLifetime(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{})

	// Nothing subscribed: the message is dropped.
	publish(t, b, "t", async.NewMessage("t", "M", []byte("before any group")))

	named := make(sink, 10)
	private := make(sink, 10)
	namedSub := subscribe(t, b, "t", named.handler(nil), async.GroupName("g"))
	privateSub := subscribe(t, b, "t", private.handler(nil))
	named.none(t, 20*time.Millisecond)
	private.none(t, 20*time.Millisecond)

	if err := namedSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := privateSub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	publish(t, b, "t", async.NewMessage("t", "M", []byte("while unsubscribed")))

	// The named group kept the message for its next subscription; a new
	// private subscription is a new group and does not see it.
	private2 := make(sink, 10)
	subscribe(t, b, "t", private2.handler(nil))
	subscribe(t, b, "t", named.handler(nil), async.GroupName("g"))
	if got := named.next(t); string(got.Data()) != "while unsubscribed" {
		t.Errorf("named group got %q, want the message published while it had no subscription", got.Data())
	}
	named.none(t, 20*time.Millisecond)
	private2.none(t, 20*time.Millisecond)
}

func TestLateAckAfterAckWait(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{})
	got := make(sink, 10)
	var first sync.Once
	extendErr := make(chan error, 1)
	subscribe(t, b, "t", got.handler(func(msg async.IncomingMessage) error {
		first.Do(func() {
			// Simulated slow work that outlives the ack wait. With one
			// handler the redelivery waits in the queue, and the late Ack
			// (on return) settles it there.
			<-time.After(120 * time.Millisecond)
			extendErr <- msg.Extend()
		})
		return nil
	}), async.AckWait(30*time.Millisecond), async.Concurrency(1))
	publish(t, b, "t", async.NewMessage("t", "M", nil))
	got.next(t)
	if err := <-extendErr; !errors.Is(err, memory.ErrNotInFlight) {
		t.Errorf("Extend after the ack wait passed: %v, want an error matching ErrNotInFlight", err)
	}
	got.none(t, 150*time.Millisecond)
}

func TestExtendAfterSettling(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		settle func(async.IncomingMessage) error
	}{
		{"Ack", async.IncomingMessage.Ack},
		{"NAck", async.IncomingMessage.NAck},
		{"Kill", async.IncomingMessage.Kill},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, memory.Config{})
			errs := make(chan error, 10)
			var once sync.Once
			subscribe(t, b, "t", async.MessageHandlerFunc(func(_ context.Context, msg async.IncomingMessage) error {
				once.Do(func() {
					if err := tc.settle(msg); err != nil {
						t.Errorf("%s: %v", tc.name, err)
					}
					errs <- msg.Extend()
				})
				return nil
			}))
			publish(t, b, "t", async.NewMessage("t", "M", nil))
			select {
			case err := <-errs:
				if !errors.Is(err, memory.ErrNotInFlight) {
					t.Errorf("Extend after %s: %v, want an error matching ErrNotInFlight", tc.name, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no delivery within 5s")
			}
		})
	}
}

func TestDeliveriesAreIsolated(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{RedeliveryDelay: -1})
	seen := make(chan string, 10)
	// Each group's handler records what it sees, then vandalises the
	// delivery; group a also fails its first delivery.
	for _, g := range []string{"a", "c"} {
		var once sync.Once
		subscribe(t, b, "t", async.MessageHandlerFunc(func(_ context.Context, msg async.IncomingMessage) error {
			seen <- g + ": " + string(msg.Data()) + " k=" + msg.Metadata().GetString("k")
			msg.Metadata().Set("k", "vandalised")
			copy(msg.Data(), "XXXX")
			var err error
			if g == "a" {
				once.Do(func() { err = errors.New("retry") })
			}
			return err
		}), async.GroupName(g))
	}
	publish(t, b, "t", async.NewMessage("t", "M", []byte("data"), async.WithMetadata(async.Metadata{"k": "v"})))
	counts := map[string]int{}
	for range 3 {
		select {
		case got := <-seen:
			counts[got]++
		case <-time.After(5 * time.Second):
			t.Fatalf("3 deliveries did not come within 5s; got %v", counts)
		}
	}
	if want := map[string]int{"a: data k=v": 2, "c: data k=v": 1}; !maps.Equal(counts, want) {
		t.Errorf("deliveries saw %v, want %v", counts, want)
	}
}

// attempts records the handler calls of an always failing subscription.
type attempts struct {
	mu     sync.Mutex
	at     []time.Time
	notify chan struct{}
}

func newAttempts() *attempts { return &attempts{notify: make(chan struct{}, 1)} }

func (a *attempts) handler() async.MessageHandler {
	return async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
		a.mu.Lock()
		a.at = append(a.at, time.Now())
		a.mu.Unlock()
		select {
		case a.notify <- struct{}{}:
		default:
		}
		return errors.New("fail")
	})
}

// wait waits for n calls and returns their times.
func (a *attempts) wait(t *testing.T, n int) []time.Time {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		a.mu.Lock()
		at := append([]time.Time(nil), a.at...)
		a.mu.Unlock()
		if len(at) >= n {
			return at
		}
		select {
		case <-a.notify:
		case <-timeout:
			t.Fatalf("%d handler calls within 5s, want %d", len(at), n)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  memory.Config
		opts []async.SubscriberOption
		// wantDeliveries before the dead letter; 0: no limit, checked by
		// seeing 30 deliveries and no dead letter.
		wantDeliveries int
		// minGap is the least time between the first two deliveries.
		minGap time.Duration
	}{
		{
			name:           "zero config: redelivery delay 100ms",
			opts:           []async.SubscriberOption{async.MaxRedeliveries(1)},
			wantDeliveries: 2,
			minGap:         memory.DefaultRedeliveryDelay,
		},
		{
			name:           "zero config: 10 redeliveries",
			cfg:            memory.Config{RedeliveryDelay: -1},
			wantDeliveries: memory.DefaultMaxRedeliveries + 1,
		},
		{
			name:           "Config.MaxRedeliveries",
			cfg:            memory.Config{RedeliveryDelay: -1, MaxRedeliveries: 3},
			wantDeliveries: 4,
		},
		{
			name: "Config.MaxRedeliveries negative: no limit",
			cfg:  memory.Config{RedeliveryDelay: -1, MaxRedeliveries: -1},
		},
		{
			name: "option overrides config: no limit",
			cfg:  memory.Config{RedeliveryDelay: -1, MaxRedeliveries: 1},
			opts: []async.SubscriberOption{async.MaxRedeliveries(-1)},
		},
		{
			name:           "option overrides config: delay",
			cfg:            memory.Config{RedeliveryDelay: -1, MaxRedeliveries: 1},
			opts:           []async.SubscriberOption{async.RedeliveryDelay(60 * time.Millisecond)},
			wantDeliveries: 2,
			minGap:         60 * time.Millisecond,
		},
		{
			name:           "Config.RedeliveryDelay",
			cfg:            memory.Config{RedeliveryDelay: 60 * time.Millisecond, MaxRedeliveries: 1},
			wantDeliveries: 2,
			minGap:         60 * time.Millisecond,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBroker(t, tc.cfg)
			a := newAttempts()
			sub := subscribe(t, b, "t", a.handler(), tc.opts...)
			publish(t, b, "t", async.NewMessage("t", "M", nil))
			if tc.wantDeliveries == 0 {
				a.wait(t, 30)
				if err := sub.Unsubscribe(); err != nil {
					t.Fatal(err)
				}
				if dl := b.DeadLetters("t"); len(dl) != 0 {
					t.Errorf("dead letter with no redelivery limit: %+v", dl)
				}
				return
			}
			at := a.wait(t, tc.wantDeliveries)
			if gap := at[1].Sub(at[0]); gap < tc.minGap {
				t.Errorf("second delivery %v after the first, want at least %v", gap, tc.minGap)
			}
			waitDead(t, b, "t", 1)
			if d := b.DeadLetters("t")[0].Deliveries; d != tc.wantDeliveries {
				t.Errorf("dead letter after %d deliveries, want %d", d, tc.wantDeliveries)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if len(a.at) != tc.wantDeliveries {
				t.Errorf("%d deliveries, want %d", len(a.at), tc.wantDeliveries)
			}
		})
	}
}

func TestConfigAckWait(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{AckWait: 40 * time.Millisecond})
	got := make(sink, 10)
	release := make(chan struct{})
	var once sync.Once
	subscribe(t, b, "t", got.handler(func(async.IncomingMessage) error {
		once.Do(func() { <-release })
		return nil
	}), async.Concurrency(2))
	publish(t, b, "t", async.NewMessage("t", "M", nil))
	first := got.next(t)
	start := time.Now()
	second := got.next(t)
	close(release)
	if gap := time.Since(start); gap < 30*time.Millisecond {
		t.Errorf("redelivered %v after the first delivery, want at least Config.AckWait 40ms", gap)
	}
	if first.ID() != second.ID() {
		t.Errorf("redelivery has ID %s, want %s", second.ID(), first.ID())
	}
}

// waitDead polls, with a deadline, until topic has n dead letters.
func waitDead(t *testing.T, b *memory.Broker, topic string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(b.DeadLetters(topic)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters within 5s, want %d", len(b.DeadLetters(topic)), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestUnsubscribeHandsOverToGroup(t *testing.T) {
	t.Parallel()
	b := newBroker(t, memory.Config{RedeliveryDelay: 5 * time.Millisecond, MaxRedeliveries: -1})
	tried := make(chan struct{})
	var once sync.Once
	leaving := subscribe(t, b, "t", async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
		once.Do(func() { close(tried) })
		return errors.New("cannot handle it here")
	}), async.GroupName("g"))
	publish(t, b, "t", async.NewMessage("t", "M", []byte("handed over")))
	select {
	case <-tried:
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
	}
	if err := leaving.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	second := make(sink, 10)
	subscribe(t, b, "t", second.handler(nil), async.GroupName("g"))
	if got := second.next(t); string(got.Data()) != "handed over" {
		t.Errorf("got %q, want the message the leaving subscription failed", got.Data())
	}
}

func TestLogger(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := newBroker(t, memory.Config{Logger: logger, RedeliveryDelay: -1, MaxRedeliveries: 1})
	got := make(sink, 10)
	subscribe(t, b, "orders", got.handler(func(async.IncomingMessage) error {
		return errors.New("database down")
	}), async.GroupName("billing"))
	msg := async.NewMessage("orders", "M", nil)
	publish(t, b, "orders", msg)
	got.next(t)
	got.next(t)
	waitDead(t, b, "orders", 1)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{
		"level=DEBUG", "handler failed", "database down",
		"level=WARN", "dead letters", "id=" + msg.ID(), "group=billing", "topic=orders",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	for line := range strings.Lines(out) {
		if strings.Contains(line, "level=WARN") && !strings.Contains(line, `error="database down"`) {
			t.Errorf("the dead letter's warning lacks the handler's error: %s", line)
		}
	}
}

// TestHandlerPanic: a handler that panics fails its delivery, which is
// redelivered; the broker and the other subscriptions go on.
func TestHandlerPanic(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	b := newBroker(t, memory.Config{Logger: logger, RedeliveryDelay: -1})
	got := make(sink, 10)
	panicked := false
	subscribe(t, b, "orders", got.handler(func(m async.IncomingMessage) error {
		if !panicked {
			panicked = true
			panic("handler bug")
		}
		return nil
	}), async.GroupName("billing"))
	other := make(sink, 10)
	subscribe(t, b, "orders", other.handler(nil), async.GroupName("audit"))

	msg := async.NewMessage("orders", "M", nil)
	publish(t, b, "orders", msg)
	if first, second := got.next(t), got.next(t); first.ID() != msg.ID() || second.ID() != msg.ID() {
		t.Errorf("deliveries %s, %s; want %s twice (the panic redelivers it)", first.ID(), second.ID(), msg.ID())
	}
	if d := other.next(t); d.ID() != msg.ID() {
		t.Errorf("the other group got %s, want %s", d.ID(), msg.ID())
	}
	// The broker still works after the panic.
	after := async.NewMessage("orders", "M", nil)
	publish(t, b, "orders", after)
	if d := got.next(t); d.ID() != after.ID() {
		t.Errorf("got %s after the panic, want %s", d.ID(), after.ID())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if dls := b.DeadLetters("orders"); len(dls) != 0 {
		t.Errorf("dead letters %+v, want none", dls)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	for _, want := range []string{"level=ERROR", "handler failed", "panic: handler bug", "id=" + msg.ID(), "semantics_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
