package brokertest

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// record is what a handler saw of one delivery.
type record struct {
	id, subject, name  string
	data               []byte
	md                 async.Metadata
	sentAt, receivedAt time.Time
	// at is when the handler was called.
	at time.Time
	// sub numbers the subscription that got the delivery.
	sub int
	// n numbers the delivery among all the collector saw, from 1.
	n int
}

// then is what a recording handler does after recording a delivery; n is
// the delivery's number among all the collector saw, from 1.
type then func(ctx context.Context, msg async.IncomingMessage, n int) error

// collector records the deliveries of one or more subscriptions and lets
// the test goroutine wait for them.
type collector struct {
	mu       sync.Mutex
	recs     []record
	problems []string
	notify   chan struct{}
}

func newCollector() *collector {
	return &collector{notify: make(chan struct{}, 1)}
}

// handler returns a handler for subscription number sub that records each
// delivery and then runs fn (nil: returns nil).
func (c *collector) handler(sub int, fn then) async.MessageHandler {
	return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
		n := c.add(sub, msg)
		if fn == nil {
			return nil
		}
		return fn(ctx, msg, n)
	})
}

func (c *collector) add(sub int, msg async.IncomingMessage) int {
	rec := record{
		id:         msg.ID(),
		subject:    msg.Subject(),
		name:       msg.MessageName(),
		data:       append([]byte(nil), msg.Data()...),
		md:         maps.Clone(msg.Metadata()),
		sentAt:     msg.SentAt(),
		receivedAt: msg.ReceivedAt(),
		at:         time.Now(),
		sub:        sub,
	}
	c.mu.Lock()
	rec.n = len(c.recs) + 1
	c.recs = append(c.recs, rec)
	c.mu.Unlock()
	c.wake()
	return rec.n
}

func (c *collector) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// problem records a failure seen inside a handler; checkProblems reports
// it from the test goroutine.
func (c *collector) problem(format string, args ...any) {
	c.mu.Lock()
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
	c.mu.Unlock()
	c.wake()
}

func (c *collector) checkProblems(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Error(p)
	}
}

func (c *collector) snapshot() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]record(nil), c.recs...)
}

// waitFor waits until cond holds for the deliveries so far, at most
// timeout, and returns them. what describes cond in the failure message.
func (c *collector) waitFor(t *testing.T, timeout time.Duration, what string, cond func([]record) bool) []record {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		recs := c.snapshot()
		if cond(recs) {
			return recs
		}
		select {
		case <-c.notify:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s; deliveries so far: %s", timeout, what, describe(c.snapshot()))
		case <-t.Context().Done():
			t.Fatalf("test context done while waiting for %s", what)
		}
	}
}

// waitN waits for n deliveries at most timeout and returns them all.
func (c *collector) waitN(t *testing.T, n int, timeout time.Duration) []record {
	t.Helper()
	return c.waitFor(t, timeout, fmt.Sprintf("%d deliveries", n), func(recs []record) bool { return len(recs) >= n })
}

// expectQuiet watches for d and fails as soon as there are more than n
// deliveries. It returns the deliveries.
func (c *collector) expectQuiet(t *testing.T, n int, d time.Duration, why string) []record {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		recs := c.snapshot()
		if len(recs) > n {
			t.Fatalf("%s: got %d deliveries, want %d: %s", why, len(recs), n, describe(recs))
		}
		select {
		case <-c.notify:
		case <-timer.C:
			return c.snapshot()
		case <-t.Context().Done():
			t.Fatal("test context done during a quiet period")
		}
	}
}

// describe lists deliveries for a failure message.
func describe(recs []record) string {
	if len(recs) == 0 {
		return "none"
	}
	var b strings.Builder
	start := time.Time{}
	for i, r := range recs {
		if i == 0 {
			start = r.at
		}
		if i == 20 {
			fmt.Fprintf(&b, " ... (%d more)", len(recs)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "#%d sub %d id %s at +%v", r.n, r.sub, r.id, r.at.Sub(start).Round(time.Millisecond))
	}
	return b.String()
}

// byID counts deliveries per message ID.
func byID(recs []record) map[string]int {
	out := make(map[string]int, len(recs))
	for _, r := range recs {
		out[r.id]++
	}
	return out
}
