package brokertest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// Default timings of the suite, used when [Timing] leaves a field zero.
const (
	// DefaultAckWait is the ack wait the suite subscribes with.
	DefaultAckWait = 500 * time.Millisecond
	// DefaultRedeliveryDelay is the redelivery delay the suite subscribes
	// with.
	DefaultRedeliveryDelay = 50 * time.Millisecond
)

// Harness describes a broker under test.
type Harness struct {
	// New returns a publisher and a subscriber of one broker (fresh or shared);
	// it registers their cleanup with t.Cleanup.
	New func(t *testing.T) (async.MessagePublisher, async.MessageSubscriber)
	// Topic returns a topic name unique to the calling test and ready to use
	// (a JetStream harness creates a stream covering it). Nil: the suite
	// derives a unique name from t.Name() and a counter. The suite calls it
	// at most once per test.
	Topic func(t *testing.T) string
	// DeadLetters returns the IDs of the messages of topic that went to dead letters
	// (killed or out of redeliveries), as the broker reports them now. Nil skips
	// the dead-letter assertions. The suite calls it with the same t it passed
	// to New for that topic.
	DeadLetters func(t *testing.T, topic string) []string
	// Timing: the suite uses AckWait(Timing.AckWait) and RedeliveryDelay(Timing.RedeliveryDelay)
	// in its subscriptions; zero values mean 500ms and 50ms.
	Timing Timing
}

// Timing holds the durations the suite subscribes with. A zero field uses
// its default.
type Timing struct {
	// AckWait is passed to every subscription with [async.AckWait].
	// 0 means [DefaultAckWait] (500ms). The suite's bounded waits scale
	// with it.
	AckWait time.Duration
	// RedeliveryDelay is passed to every subscription with
	// [async.RedeliveryDelay]. 0 means [DefaultRedeliveryDelay] (50ms).
	RedeliveryDelay time.Duration
}

// Run runs every sub-test against h. The sub-tests run in parallel with
// each other, each on the broker [Harness.New] gives it and a topic of its
// own.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil {
		t.Fatal("brokertest: Harness.New must not be nil")
	}
	s := newSuite(h)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"PublishSubscribe", s.testPublishSubscribe},
		{"MetadataRoundTrip", s.testMetadata},
		{"PublishCopiesMessage", s.testPublishCopies},
		{"Ack", s.testAck},
		{"Redelivery", s.testRedelivery},
		{"AckWaitRedelivers", s.testAckWait},
		{"ExtendPreventsRedelivery", s.testExtend},
		{"Kill", s.testKill},
		{"MaxRedeliveries", s.testMaxRedeliveries},
		{"GroupSharesMessages", s.testGroupShares},
		{"EveryGroupGetsEveryMessage", s.testGroupsFanOut},
		{"InOrderWithConcurrencyOne", s.testOrder},
		{"Concurrency", s.testConcurrency},
		{"Unsubscribe", s.testUnsubscribe},
		{"PublishCancelledContext", s.testPublishCancelled},
		{"SubscribeInvalidOptions", s.testSubscribeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t)
		})
	}
}

// suite holds what the sub-tests of one Run share.
type suite struct {
	h       Harness
	ackWait time.Duration
	delay   time.Duration
	// runID keeps derived names apart across Run calls on a broker that
	// outlives them (a NATS server with retained streams).
	runID string
	seq   atomic.Int64
}

func newSuite(h Harness) *suite {
	s := &suite{h: h, ackWait: h.Timing.AckWait, delay: h.Timing.RedeliveryDelay}
	if s.ackWait <= 0 {
		s.ackWait = DefaultAckWait
	}
	if s.delay <= 0 {
		s.delay = DefaultRedeliveryDelay
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	s.runID = hex.EncodeToString(b[:])
	return s
}

// long bounds every wait for something that must happen.
func (s *suite) long() time.Duration { return 10*s.ackWait + 5*time.Second }

// quiet is how long the suite watches for something that must not happen.
func (s *suite) quiet() time.Duration { return 2 * s.ackWait }

// topic returns the topic for t.
func (s *suite) topic(t *testing.T) string {
	t.Helper()
	if s.h.Topic != nil {
		name := s.h.Topic(t)
		if name == "" {
			t.Fatal("brokertest: Harness.Topic returned an empty name")
		}
		return name
	}
	return s.unique(t, "")
}

// unique returns a name made of prefix, t.Name(), the run ID and a counter,
// using only letters, digits, '_' and '-' so every broker accepts it.
func (s *suite) unique(t *testing.T, prefix string) string {
	base := sanitize(t.Name())
	if len(base) > 64 {
		base = base[len(base)-64:]
	}
	if prefix != "" {
		base = prefix + "_" + base
	}
	return fmt.Sprintf("%s_%s_%d", base, s.runID, s.seq.Add(1))
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		default:
			return '_'
		}
	}, name)
}

// subscribe subscribes h to topic with the suite's timing followed by
// opts, and unsubscribes in t's cleanup.
func (s *suite) subscribe(t *testing.T, sub async.MessageSubscriber, topic string, h async.MessageHandler, opts ...async.SubscriberOption) async.Subscription {
	t.Helper()
	all := append([]async.SubscriberOption{async.AckWait(s.ackWait), async.RedeliveryDelay(s.delay)}, opts...)
	subscription, err := sub.Subscribe(t.Context(), topic, h, all...)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	if subscription == nil {
		t.Fatalf("Subscribe(%q) returned a nil subscription and no error", topic)
	}
	t.Cleanup(func() {
		if err := subscription.Unsubscribe(); err != nil {
			t.Errorf("Unsubscribe in cleanup: %v", err)
		}
	})
	return subscription
}

// publish publishes msgs to topic in order.
func publish(t *testing.T, pub async.MessagePublisher, topic string, msgs ...async.Message) {
	t.Helper()
	for _, msg := range msgs {
		if err := pub.Publish(t.Context(), topic, msg); err != nil {
			t.Fatalf("Publish(%q, id %s): %v", topic, msg.ID(), err)
		}
	}
}

// newMessages returns n messages for topic whose payloads are "message 0",
// "message 1" and so on.
func newMessages(topic string, n int) []async.Message {
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = async.NewMessage(topic, "TestMessage", fmt.Appendf(nil, "message %d", i))
	}
	return msgs
}

func ids(msgs []async.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID()
	}
	return out
}

// waitDeadLetter waits until the harness reports id among the dead letters
// of topic, and checks it is there once.
func (s *suite) waitDeadLetter(t *testing.T, topic, id string) {
	t.Helper()
	if s.h.DeadLetters == nil {
		return
	}
	deadline := time.Now().Add(s.long())
	for {
		dead := s.h.DeadLetters(t, topic)
		switch n := count(dead, id); {
		case n == 1:
			return
		case n > 1:
			t.Errorf("message %s is %d times in the dead letters of %q, want once", id, n, topic)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s did not reach the dead letters of %q within %v; dead letters: %v", id, topic, s.long(), dead)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal("test context done while waiting for dead letters")
		}
	}
}

// checkNotDeadLetter checks that id is not among the dead letters of topic.
func (s *suite) checkNotDeadLetter(t *testing.T, topic, id string) {
	t.Helper()
	if s.h.DeadLetters == nil {
		return
	}
	if dead := s.h.DeadLetters(t, topic); count(dead, id) > 0 {
		t.Errorf("message %s is in the dead letters of %q but was acked", id, topic)
	}
}

func count(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}
