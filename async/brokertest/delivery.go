package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// testPublishSubscribe: a published message arrives with its payload, ID,
// name, subject and SentAt.
func (s *suite) testPublishSubscribe(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	s.subscribe(t, sub, topic, c.handler(0, nil))

	// Sub-millisecond digits on purpose: brokers must keep at least the
	// milliseconds.
	sentAt := time.Now().Add(-90*time.Minute - 123456*time.Nanosecond)
	cases := []struct {
		name string
		data []byte
	}{
		{"text", []byte("hello, broker")},
		{"binary", []byte{0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, '\r', '\n', 0}},
		{"empty", nil},
		{"64KiB", bytes.Repeat([]byte("0123456789abcdef"), 4096)},
	}
	msgs := make([]async.Message, len(cases))
	for i, tc := range cases {
		msgs[i] = async.NewMessage(topic, "Test"+tc.name, tc.data, async.WithSentAt(sentAt))
	}
	before := time.Now()
	publish(t, pub, topic, msgs...)
	recs := c.waitN(t, len(msgs), s.long())
	after := time.Now()

	got := make(map[string]record, len(recs))
	for _, r := range recs {
		if _, dup := got[r.id]; dup {
			t.Errorf("message %s delivered twice", r.id)
		}
		got[r.id] = r
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := msgs[i]
			r, ok := got[want.ID()]
			if !ok {
				t.Fatalf("message %s not delivered; delivered: %s", want.ID(), describe(recs))
			}
			if r.subject != topic {
				t.Errorf("Subject() = %q, want the topic %q", r.subject, topic)
			}
			if r.name != want.MessageName() {
				t.Errorf("MessageName() = %q, want %q", r.name, want.MessageName())
			}
			if !bytes.Equal(r.data, tc.data) {
				t.Errorf("Data() = %q (%d bytes), want %q (%d bytes)", abbrev(r.data), len(r.data), abbrev(tc.data), len(tc.data))
			}
			if d := r.sentAt.Sub(sentAt).Abs(); d >= time.Millisecond {
				t.Errorf("SentAt() = %v, want %v to the millisecond (off by %v)", r.sentAt, sentAt, d)
			}
			if r.receivedAt.IsZero() {
				t.Error("ReceivedAt() is zero")
			} else if r.receivedAt.Before(before.Add(-time.Second)) || r.receivedAt.After(after.Add(time.Second)) {
				t.Errorf("ReceivedAt() = %v, want between publishing (%v) and receipt (%v)", r.receivedAt, before, after)
			}
		})
	}
}

func abbrev(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// testMetadata: string metadata survives the broker.
func (s *suite) testMetadata(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	s.subscribe(t, sub, topic, c.handler(0, nil))

	md := async.Metadata{
		async.MetaContentType:  "application/json; charset=utf-8",
		async.MetaPartitionKey: "order-42",
		async.MetaTraceParent:  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		async.MetaTraceState:   "vendor1=opaque,vendor2=x",
		"x-custom":             "a value with spaces, commas, and = signs",
		"x-empty":              "",
	}
	msg := async.NewMessage(topic, "WithMetadata", []byte("{}"), async.WithMetadata(md))
	publish(t, pub, topic, msg)
	r := c.waitN(t, 1, s.long())[0]

	if r.md == nil {
		t.Fatal("Metadata() is nil")
	}
	for key, want := range md {
		got := r.md.GetString(key)
		if got != want {
			t.Errorf("Metadata()[%q] = %q, want %q", key, got, want)
		}
	}
	if got := r.md.ContentType(); got != md[async.MetaContentType] {
		t.Errorf("Metadata().ContentType() = %q, want %q", got, md[async.MetaContentType])
	}
	if got := r.md.PartitionKey(); got != md[async.MetaPartitionKey] {
		t.Errorf("Metadata().PartitionKey() = %q, want %q", got, md[async.MetaPartitionKey])
	}
}

// testPublishCopies: changing the caller's payload buffer and metadata map
// after Publish returns changes nothing delivered.
func (s *suite) testPublishCopies(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	s.subscribe(t, sub, topic, c.handler(0, nil))

	data := []byte("original payload")
	msg := async.NewMessage(topic, "Copied", data, async.WithMetadata(async.Metadata{"x-key": "original"}))
	publish(t, pub, topic, msg)
	copy(data, "CHANGED CHANGED!")
	msg.Metadata().Set("x-key", "changed")
	msg.Metadata().Set("x-added", "added")

	r := c.waitN(t, 1, s.long())[0]
	if string(r.data) != "original payload" {
		t.Errorf("Data() = %q, want %q: the broker kept the caller's buffer", r.data, "original payload")
	}
	if got := r.md.GetString("x-key"); got != "original" {
		t.Errorf("Metadata()[x-key] = %q, want %q: the broker kept the caller's map", got, "original")
	}
	if _, ok := r.md["x-added"]; ok {
		t.Error("Metadata() has x-added, set after Publish returned: the broker kept the caller's map")
	}
}

// settleCase is one way for a handler to treat a message.
type settleCase struct {
	name string
	// act handles the first delivery of the case's message; problems go
	// to c.
	act func(c *collector, msg async.IncomingMessage) error
}

// caseRun runs settle cases side by side: one message per case, published
// to one topic with one subscription, so the cases share their waits.
type caseRun struct {
	topic string
	msgs  []async.Message // by case
	c     *collector

	mu sync.Mutex
	// actedAt is when act started on each message's first delivery.
	actedAt map[string]time.Time
}

// runCases subscribes a handler that runs each case's act on the first
// delivery of its message and returns nil on later deliveries, then
// publishes the messages.
func (s *suite) runCases(t *testing.T, cases []settleCase, opts ...async.SubscriberOption) *caseRun {
	t.Helper()
	pub, sub := s.h.New(t)
	r := &caseRun{topic: s.topic(t), c: newCollector(), actedAt: map[string]time.Time{}}
	byID := make(map[string]settleCase, len(cases))
	for _, tc := range cases {
		msg := async.NewMessage(r.topic, "Case", []byte(tc.name))
		r.msgs = append(r.msgs, msg)
		byID[msg.ID()] = tc
	}
	s.subscribe(t, sub, r.topic, r.c.handler(0, func(_ context.Context, msg async.IncomingMessage, _ int) error {
		tc, ok := byID[msg.ID()]
		if !ok {
			r.c.problem("delivery of unknown message %s", msg.ID())
			return nil
		}
		r.mu.Lock()
		_, again := r.actedAt[msg.ID()]
		if !again {
			// Taken before settling, so a measured redelivery gap is
			// never shorter than the broker's.
			r.actedAt[msg.ID()] = time.Now()
		}
		r.mu.Unlock()
		if again {
			return nil
		}
		return tc.act(r.c, msg)
	}), opts...)
	publish(t, pub, r.topic, r.msgs...)
	return r
}

// waitEach waits until every message was delivered at least n times and
// returns the deliveries.
func (r *caseRun) waitEach(t *testing.T, n int, timeout time.Duration) []record {
	t.Helper()
	return r.c.waitFor(t, timeout, fmt.Sprintf("%d deliveries of each of %d messages", n, len(r.msgs)), func(recs []record) bool {
		counts := byID(recs)
		for _, m := range r.msgs {
			if counts[m.ID()] < n {
				return false
			}
		}
		return true
	})
}

// testAck: a message settled as processed is delivered once, whatever the
// handler does after settling.
func (s *suite) testAck(t *testing.T) {
	errHandler := errors.New("handler error after settling")
	cases := []settleCase{
		{"return nil", func(*collector, async.IncomingMessage) error { return nil }},
		{"Ack then return nil", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Ack then return nil: Ack", msg.Ack)
			return nil
		}},
		{"Ack twice", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Ack twice: first Ack", msg.Ack)
			mustSettle(c, "Ack twice: second Ack", msg.Ack)
			return nil
		}},
		{"Ack then return error", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Ack then return error: Ack", msg.Ack)
			return errHandler
		}},
		{"Ack then NAck", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Ack then NAck: Ack", msg.Ack)
			_ = msg.NAck() // an error is allowed; a redelivery is not
			return nil
		}},
	}
	r := s.runCases(t, cases)
	r.waitEach(t, 1, s.long())
	recs := r.c.expectQuiet(t, len(cases), s.quiet(), "an acked message was redelivered")
	r.c.checkProblems(t)
	for _, msg := range r.msgs {
		s.checkNotDeadLetter(t, r.topic, msg.ID())
	}
	counts := byID(recs)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := counts[r.msgs[i].ID()]; n != 1 {
				t.Errorf("delivered %d times, want once", n)
			}
		})
	}
}

// mustSettle calls settle and records an error as a problem.
func mustSettle(c *collector, what string, settle func() error) {
	if err := settle(); err != nil {
		c.problem("%s returned %v, want nil", what, err)
	}
}

// testRedelivery: a handler error or a NAck redelivers the message, with the
// same ID and payload, no sooner than the redelivery delay.
func (s *suite) testRedelivery(t *testing.T) {
	cases := []settleCase{
		{"handler error", func(*collector, async.IncomingMessage) error {
			return errors.New("transient failure")
		}},
		{"NAck then return nil", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "NAck then return nil: NAck", msg.NAck)
			return nil
		}},
		{"NAck then return error", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "NAck then return error: NAck", msg.NAck)
			return errors.New("transient failure after NAck")
		}},
	}
	r := s.runCases(t, cases)
	r.waitEach(t, 2, s.long())
	recs := r.c.expectQuiet(t, 2*len(cases), s.quiet(), "redeliveries were acked but delivered again")
	r.c.checkProblems(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := r.msgs[i]
			var mine []record
			for _, rec := range recs {
				if rec.id == msg.ID() {
					mine = append(mine, rec)
				}
			}
			if len(mine) != 2 {
				t.Fatalf("delivered %d times, want twice: %s", len(mine), describe(mine))
			}
			for j, rec := range mine {
				if string(rec.data) != tc.name || rec.name != msg.MessageName() {
					t.Errorf("delivery %d has name %q and data %q, want %q and %q", j+1, rec.name, rec.data, msg.MessageName(), tc.name)
				}
			}
			r.mu.Lock()
			gap := mine[1].at.Sub(r.actedAt[msg.ID()])
			r.mu.Unlock()
			if minGap := s.delay - s.delay/5; gap < minGap {
				t.Errorf("redelivered %v after settling, want at least the redelivery delay %v", gap, s.delay)
			}
			t.Logf("redelivered after %v (redelivery delay %v)", gap, s.delay)
		})
	}
}

// testAckWait: a message left unsettled past the ack wait is delivered
// again. The first delivery blocks until the redelivery arrives, so the
// subscription needs two handlers at once.
func (s *suite) testAckWait(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	redelivered := make(chan struct{})
	s.subscribe(t, sub, topic, c.handler(0, func(ctx context.Context, _ async.IncomingMessage, n int) error {
		if n > 1 {
			if n == 2 {
				close(redelivered)
			}
			return nil
		}
		select {
		case <-redelivered:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.long()):
			c.problem("first delivery: no redelivery arrived within %v", s.long())
		}
		return nil
	}), async.Concurrency(2))
	msg := async.NewMessage(topic, "Slow", []byte("slow"))
	publish(t, pub, topic, msg)
	recs := c.waitN(t, 2, s.long())
	if recs[1].id != msg.ID() {
		t.Errorf("redelivery has ID %s, want %s", recs[1].id, msg.ID())
	}
	gap := recs[1].at.Sub(recs[0].at)
	if minGap := s.ackWait - s.ackWait/5; gap < minGap {
		t.Errorf("redelivered %v after the first delivery, want at least the ack wait %v", gap, s.ackWait)
	}
	t.Logf("redelivered after %v (ack wait %v)", gap, s.ackWait)
	c.expectQuiet(t, 2, s.quiet(), "both deliveries returned nil but the message came again")
	c.checkProblems(t)
}

// testExtend: a handler that calls Extend more often than the ack wait is
// not overtaken by a redelivery.
func (s *suite) testExtend(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	done := make(chan struct{})
	work := 3 * s.ackWait
	s.subscribe(t, sub, topic, c.handler(0, func(ctx context.Context, msg async.IncomingMessage, n int) error {
		if n > 1 {
			return nil
		}
		defer close(done)
		ticker := time.NewTicker(s.ackWait / 4)
		defer ticker.Stop()
		end := time.After(work)
		for {
			select {
			case <-ticker.C:
				if err := msg.Extend(); err != nil {
					c.problem("Extend returned %v, want nil", err)
					return nil
				}
			case <-end:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}), async.Concurrency(2))
	publish(t, pub, topic, async.NewMessage(topic, "Extended", []byte("slow but alive")))
	c.waitN(t, 1, s.long())
	select {
	case <-done:
	case <-time.After(work + s.long()):
		t.Fatalf("the handler did not return within %v", work+s.long())
	}
	c.expectQuiet(t, 1, s.quiet(), fmt.Sprintf("a message extended every %v with ack wait %v was redelivered", s.ackWait/4, s.ackWait))
	c.checkProblems(t)
}

// testKill: a killed message is not redelivered, whatever the handler does
// after killing it, and it goes to the dead letters once.
func (s *suite) testKill(t *testing.T) {
	cases := []settleCase{
		{"Kill then return nil", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Kill then return nil: Kill", msg.Kill)
			return nil
		}},
		{"Kill then return error", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Kill then return error: Kill", msg.Kill)
			return errors.New("unprocessable")
		}},
		{"Kill twice", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Kill twice: first Kill", msg.Kill)
			mustSettle(c, "Kill twice: second Kill", msg.Kill)
			return nil
		}},
		{"Kill then Ack", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Kill then Ack: Kill", msg.Kill)
			mustSettle(c, "Kill then Ack: Ack after Kill", msg.Ack)
			return nil
		}},
		{"Kill then NAck", func(c *collector, msg async.IncomingMessage) error {
			mustSettle(c, "Kill then NAck: Kill", msg.Kill)
			_ = msg.NAck() // an error is allowed; a redelivery is not
			return nil
		}},
	}
	r := s.runCases(t, cases)
	r.waitEach(t, 1, s.long())
	recs := r.c.expectQuiet(t, len(cases), s.quiet(), "a killed message was redelivered")
	r.c.checkProblems(t)
	for _, msg := range r.msgs {
		s.waitDeadLetter(t, r.topic, msg.ID())
	}
	counts := byID(recs)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := counts[r.msgs[i].ID()]; n != 1 {
				t.Errorf("delivered %d times, want once", n)
			}
		})
	}
}

// testMaxRedeliveries: with MaxRedeliveries(2), a message that always fails
// is delivered exactly three times and goes to the dead letters.
func (s *suite) testMaxRedeliveries(t *testing.T) {
	pub, sub := s.h.New(t)
	topic := s.topic(t)
	c := newCollector()
	s.subscribe(t, sub, topic, c.handler(0, func(context.Context, async.IncomingMessage, int) error {
		return errors.New("always fails")
	}), async.MaxRedeliveries(2))
	msg := async.NewMessage(topic, "Failing", []byte("never works"))
	publish(t, pub, topic, msg)
	recs := c.waitN(t, 3, s.long())
	for i, r := range recs {
		if r.id != msg.ID() {
			t.Errorf("delivery %d has ID %s, want %s", i+1, r.id, msg.ID())
		}
	}
	c.expectQuiet(t, 3, s.quiet()+3*s.delay, "MaxRedeliveries(2) allows 3 deliveries")
	s.waitDeadLetter(t, topic, msg.ID())
}
