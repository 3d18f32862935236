package txm_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recordingPublisher publishes into memory and can fail on demand.
type recordingPublisher struct {
	mu        sync.Mutex
	published []async.Message // confirmed publishes, in order
	attempts  map[string]int  // publish calls per message ID
	fail      func(msg async.Message, attempt int) error
	hang      func(msg async.Message) time.Duration // how long a publish takes
	changed   chan struct{}
}

func newRecordingPublisher() *recordingPublisher {
	return &recordingPublisher{attempts: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (p *recordingPublisher) Publish(ctx context.Context, topic string, msg async.Message) error {
	if topic != msg.Subject() {
		return errors.New("topic differs from subject")
	}
	p.mu.Lock()
	p.attempts[msg.ID()]++
	attempt := p.attempts[msg.ID()]
	fail, hang := p.fail, p.hang
	p.mu.Unlock()
	if hang != nil {
		if d := hang(msg); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if fail != nil {
		if err := fail(msg, attempt); err != nil {
			return err
		}
	}
	p.mu.Lock()
	p.published = append(p.published, msg)
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
	return nil
}

func (p *recordingPublisher) setFail(f func(msg async.Message, attempt int) error) {
	p.mu.Lock()
	p.fail = f
	p.mu.Unlock()
}

// publishedIDs returns how often each ID was confirmed.
func (p *recordingPublisher) publishedIDs() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.published))
	for _, m := range p.published {
		out[m.ID()]++
	}
	return out
}

func (p *recordingPublisher) attemptsOf(id string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts[id]
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// startRelay runs p.Start in the background; the returned function cancels
// it and checks that Start returned nil.
func startRelay(t *testing.T, p txm.OutboxProcessor) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Start(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Start returned %v after cancellation, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Start did not return within 10s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// observer records the relay's events.
type observer struct {
	mu      sync.Mutex
	claimed int
	retried map[string]int
	dead    map[string]error
	deadCh  chan string
}

func newObserver() *observer {
	return &observer{retried: map[string]int{}, dead: map[string]error{}, deadCh: make(chan string, 100)}
}

func (o *observer) Claimed(n int)                                         { o.mu.Lock(); o.claimed += n; o.mu.Unlock() }
func (o *observer) Published(async.Message, time.Duration, time.Duration) {}
func (o *observer) Retried(m async.Message, attempts int, _ error) {
	o.mu.Lock()
	o.retried[m.ID()] = attempts
	o.mu.Unlock()
}
func (o *observer) Dead(m async.Message, _ int, err error) {
	o.mu.Lock()
	o.dead[m.ID()] = err
	o.mu.Unlock()
	o.deadCh <- m.ID()
}

// seedOnly hides every optional capability of a store: the relay sees the
// seed's three methods alone.
type seedOnly struct{ s txm.OutboxStore }

func (s seedOnly) Save(ctx context.Context, m async.Message) error { return s.s.Save(ctx, m) }
func (s seedOnly) FindUnpublished(ctx context.Context, n int) ([]async.Message, error) {
	return s.s.FindUnpublished(ctx, n)
}
func (s seedOnly) MarkPublished(ctx context.Context, ids ...string) error {
	return s.s.MarkPublished(ctx, ids...)
}

// testMessage is an IncomingMessage whose settle calls are recorded.
type testMessage struct {
	async.Message
	mu    sync.Mutex
	acks  int
	nacks int
	kills int
}

func incoming(m async.Message) *testMessage { return &testMessage{Message: m} }

func (m *testMessage) ReceivedAt() time.Time { return time.Now() }
func (m *testMessage) Ack() error            { m.mu.Lock(); m.acks++; m.mu.Unlock(); return nil }
func (m *testMessage) NAck() error           { m.mu.Lock(); m.nacks++; m.mu.Unlock(); return nil }
func (m *testMessage) Extend() error         { return nil }
func (m *testMessage) Kill() error           { m.mu.Lock(); m.kills++; m.mu.Unlock(); return nil }

func keyed(topic, key string) async.Message {
	return async.NewMessage(topic, "Test", []byte(key),
		async.WithMetadata(async.Metadata{async.MetaPartitionKey: key}))
}

// listStore is a store with the seed's three methods and no leases:
// FindUnpublished returns the same unpublished messages until they are
// marked.
type listStore struct {
	mu        sync.Mutex
	msgs      []async.Message
	published map[string]bool
}

func (s *listStore) Save(_ context.Context, m async.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, have := range s.msgs {
		if have.ID() == m.ID() {
			return txm.ErrDuplicateMessage(m.ID())
		}
	}
	s.msgs = append(s.msgs, m)
	return nil
}

func (s *listStore) FindUnpublished(_ context.Context, n int) ([]async.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []async.Message
	for _, m := range s.msgs {
		if !s.published[m.ID()] && len(out) < n {
			out = append(out, m)
		}
	}
	return out, nil
}

func (s *listStore) MarkPublished(_ context.Context, ids ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.published == nil {
		s.published = map[string]bool{}
	}
	for _, id := range ids {
		s.published[id] = true
	}
	return nil
}
