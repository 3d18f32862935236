package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// testGroupShares: two subscriptions of one group share the messages: each
// message is handled once in total, and both subscriptions get some. Each
// subscription's first handler call waits (less than the ack wait) until
// the other subscription has a message too, so a broker that lets an idle
// subscription take waiting messages always splits them.
func (s *suite) testGroupShares(t *testing.T) {
	const n = 20
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	group := s.unique(t, "group")
	c := newCollector()
	var got [2]atomic.Int64
	both := make(chan struct{})
	var bothOnce sync.Once
	for i := range 2 {
		s.subscribe(t, sub, topic, c.handler(i, func(ctx context.Context, _ async.IncomingMessage, _ int) error {
			if got[i].Add(1) == 1 && got[1-i].Load() > 0 {
				bothOnce.Do(func() { close(both) })
			}
			select {
			case <-both:
			case <-time.After(s.ackWait / 2):
			case <-ctx.Done():
			}
			return nil
		}), async.GroupName(group))
	}
	msgs := newMessages(topic, n)
	publish(t, pub, topic, msgs...)
	c.waitFor(t, s.long(), fmt.Sprintf("all %d messages", n), func(recs []record) bool { return len(byID(recs)) >= n })
	recs := c.expectQuiet(t, n, s.quiet(), "messages of one group were delivered more than once")

	counts := byID(recs)
	for _, id := range ids(msgs) {
		if counts[id] != 1 {
			t.Errorf("message %s handled %d times across the group, want once", id, counts[id])
		}
	}
	var per [2]int
	for _, r := range recs {
		per[r.sub]++
	}
	t.Logf("split of %d messages: %d and %d", n, per[0], per[1])
	for i, k := range per {
		if k == 0 {
			t.Errorf("subscription %d of group %q got no message; the other got %d", i, group, per[1-i])
		}
	}
}

// testGroupsFanOut: every group, and every private subscription, gets every
// message once. Two groups of two kinds, two private subscriptions, and a
// group next to private subscriptions all share one topic.
func (s *suite) testGroupsFanOut(t *testing.T) {
	const n = 10
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	groupA, groupB := s.unique(t, "group"), s.unique(t, "group")
	// "" is a private subscription.
	groups := []string{groupA, groupB, "", ""}
	c := newCollector()
	for i, g := range groups {
		var opts []async.SubscriberOption
		if g != "" {
			opts = append(opts, async.GroupName(g))
		}
		s.subscribe(t, sub, topic, c.handler(i, nil), opts...)
	}
	msgs := newMessages(topic, n)
	publish(t, pub, topic, msgs...)
	want := n * len(groups)
	c.waitN(t, want, s.long())
	recs := c.expectQuiet(t, want, s.quiet(), "more deliveries than messages times subscriptions")
	for i, g := range groups {
		counts := map[string]int{}
		for _, r := range recs {
			if r.sub == i {
				counts[r.id]++
			}
		}
		for _, id := range ids(msgs) {
			if counts[id] != 1 {
				t.Errorf("subscription %d (group %q) got message %s %d times, want once", i, g, id, counts[id])
			}
		}
	}
}

// testOrder: one subscription with Concurrency 1 sees messages in publish
// order.
func (s *suite) testOrder(t *testing.T) {
	const n = 100
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	s.subscribe(t, sub, topic, c.handler(0, nil), async.Concurrency(1))
	msgs := newMessages(topic, n)
	publish(t, pub, topic, msgs...)
	recs := c.waitN(t, n, s.long())
	for i, r := range recs[:n] {
		if r.id != msgs[i].ID() {
			t.Fatalf("delivery %d is %q (id %s), want %q (id %s); order: %s", i+1, r.data, r.id, msgs[i].Data(), msgs[i].ID(), describe(recs))
		}
	}
}

// testConcurrency: Concurrency(3) runs three handlers at once, and no more.
func (s *suite) testConcurrency(t *testing.T) {
	const limit, n = 3, 7
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	var inFlight, most atomic.Int64
	full := make(chan struct{})
	var fullOnce sync.Once
	s.subscribe(t, sub, topic, c.handler(0, func(ctx context.Context, _ async.IncomingMessage, _ int) error {
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if now <= m || most.CompareAndSwap(m, now) {
				break
			}
		}
		if now >= limit {
			fullOnce.Do(func() { close(full) })
		}
		select {
		case <-full:
		case <-time.After(s.ackWait / 2):
		case <-ctx.Done():
		}
		return nil
	}), async.Concurrency(limit))
	msgs := newMessages(topic, n)
	publish(t, pub, topic, msgs...)
	c.waitFor(t, s.long(), fmt.Sprintf("all %d messages", n), func(recs []record) bool { return len(byID(recs)) >= n })
	if got := most.Load(); got != limit {
		t.Errorf("at most %d handlers ran at once, want %d (Concurrency(%d))", got, limit, limit)
	}
}

// testUnsubscribe: Unsubscribe waits for the handler in flight, stops
// deliveries, and may be called again.
func (s *suite) testUnsubscribe(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	started := make(chan struct{})
	release := make(chan struct{})
	var returned atomic.Bool
	subscription := s.subscribe(t, sub, topic, c.handler(0, func(_ context.Context, _ async.IncomingMessage, n int) error {
		if n > 1 {
			return nil
		}
		close(started)
		select {
		case <-release:
		case <-time.After(s.long()):
			c.problem("handler not released within %v", s.long())
		}
		returned.Store(true)
		return nil
	}))
	publish(t, pub, topic, async.NewMessage(topic, "InFlight", []byte("in flight")))
	select {
	case <-started:
	case <-time.After(s.long()):
		t.Fatalf("no delivery within %v", s.long())
	}

	unsubscribed := make(chan error, 1)
	go func() { unsubscribed <- subscription.Unsubscribe() }()
	// Give Unsubscribe a moment to (wrongly) return before the handler does.
	select {
	case err := <-unsubscribed:
		close(release)
		t.Fatalf("Unsubscribe returned (err %v) while a handler was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-unsubscribed:
		if err != nil {
			t.Errorf("Unsubscribe: %v", err)
		}
	case <-time.After(s.long()):
		t.Fatalf("Unsubscribe did not return within %v of the handler's release", s.long())
	}
	if !returned.Load() {
		t.Error("Unsubscribe returned before the handler in flight did")
	}
	if err := subscription.Unsubscribe(); err != nil {
		t.Errorf("second Unsubscribe: %v, want nil", err)
	}

	publish(t, pub, topic, async.NewMessage(topic, "AfterUnsubscribe", []byte("too late")))
	c.expectQuiet(t, 1, s.quiet(), "a message published after Unsubscribe was delivered")
	c.checkProblems(t)
}

// testPublishCancelled: Publish with a cancelled context fails with an
// error matching context.Canceled.
func (s *suite) testPublishCancelled(t *testing.T) {
	pub, _ := s.h.New(t)
	topic := s.topic(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := pub.Publish(ctx, topic, async.NewMessage(topic, "Cancelled", []byte("never")))
	if err == nil {
		t.Fatal("Publish with a cancelled context returned nil")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Publish with a cancelled context: %v, want an error matching context.Canceled", err)
	}
}

// testSubscribeInvalid: Subscribe rejects options that
// async.NewSubscriberConfig rejects.
func (s *suite) testSubscribeInvalid(t *testing.T) {
	_, sub := s.h.New(t)
	topic := s.topic(t)
	cases := []struct {
		name string
		opt  async.SubscriberOption
	}{
		{"negative Concurrency", async.Concurrency(-1)},
		{"negative AckWait", async.AckWait(-time.Second)},
		{"negative RedeliveryDelay", async.RedeliveryDelay(-time.Second)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil })
			subscription, err := sub.Subscribe(t.Context(), topic, h, tc.opt)
			if err == nil {
				if subscription != nil {
					_ = subscription.Unsubscribe()
				}
				t.Fatalf("Subscribe with %s returned no error", tc.name)
			}
		})
	}
}
