package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/testenv"
)

// TestOutage stops a private server for about three seconds while a
// publisher and a subscriber use it: publishes fail fast with
// ErrNotConnected while it is down and work again after it restarts,
// unacked deliveries are redelivered, and every message is accounted for
// by ID: each confirmed publish is in the stream and handled, each failed
// one is retried with the same ID, and no ID is stored twice.
func TestOutage(t *testing.T) {
	testenv.URL(t, testenv.NATS) // runs with the other service tests
	srv := testenv.StartNATS(t)

	reconnected := make(chan struct{}, 10)
	nc, js := connect(t, srv.URL(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	ctx := ctxT(t, 60*time.Second)
	topic := "outage.events"
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: "OUTAGE", Subjects: []string{topic}, Storage: jetstream.FileStorage, Duplicates: 5 * time.Minute,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{AckTimeout: time.Second})

	// The handler holds the messages named "Held" until the server is
	// down, then fails them; everything else is acked.
	var (
		mu      sync.Mutex
		handled = map[string]int{}
	)
	down := make(chan struct{})
	heldIn := make(chan string, 10)
	sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{Logger: discardLogger()})
	t.Cleanup(func() { _ = sub.Close() })
	subscribe(t, sub, topic, async.MessageHandlerFunc(func(ctx context.Context, m async.IncomingMessage) error {
		if m.MessageName() == "Held" {
			select {
			case <-down:
			default:
				heldIn <- m.ID()
				<-down
				return errors.New("the server went away")
			}
		}
		mu.Lock()
		handled[m.ID()]++
		mu.Unlock()
		return nil
	}), async.GroupName("outage"), async.AckWait(time.Second), async.Concurrency(4), async.RedeliveryDelay(100*time.Millisecond))

	// Before the outage: a batch and single publishes, two of them held.
	var confirmed []string
	before := make([]async.Message, 6)
	for i := range before {
		before[i] = async.NewMessage(topic, "Before", fmt.Appendf(nil, "before %d", i))
	}
	errs, err := pub.PublishBatch(ctx, before)
	if err != nil {
		t.Fatalf("PublishBatch before the outage: %v", err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("PublishBatch before the outage, message %d: %v", i, e)
		}
		confirmed = append(confirmed, before[i].ID())
	}
	for range 2 {
		m := async.NewMessage(topic, "Held", nil)
		if err := pub.Publish(ctx, topic, m); err != nil {
			t.Fatalf("Publish before the outage: %v", err)
		}
		confirmed = append(confirmed, m.ID())
	}
	held := map[string]bool{}
	for range 2 {
		held[recv(t, heldIn, 10*time.Second, "a held message")] = true
	}

	// The outage.
	srv.Stop()
	waitFor(t, 10*time.Second, "the client to notice the outage", func() bool { return !nc.IsConnected() })
	close(down)
	var failed []async.Message
	outageStart := time.Now()
	for time.Since(outageStart) < 3*time.Second {
		m := async.NewMessage(topic, "During", nil)
		err := pub.Publish(ctx, topic, m)
		if !errors.Is(err, natsjs.ErrNotConnected) {
			t.Fatalf("Publish while the server is down: %v, want an error matching ErrNotConnected", err)
		}
		failed = append(failed, m)
		batch := []async.Message{async.NewMessage(topic, "During", nil), async.NewMessage(topic, "During", nil)}
		errs, err := pub.PublishBatch(ctx, batch)
		if err != nil {
			t.Fatalf("PublishBatch while the server is down: %v", err)
		}
		for i, e := range errs {
			if !errors.Is(e, natsjs.ErrNotConnected) {
				t.Fatalf("PublishBatch while the server is down, message %d: %v, want ErrNotConnected", i, e)
			}
		}
		failed = append(failed, batch...)
		time.Sleep(250 * time.Millisecond) // pace the attempts over the outage
	}
	t.Logf("server down %v, %d publishes failed fast; first error: %v", time.Since(outageStart).Round(time.Millisecond), len(failed),
		pub.Publish(ctx, topic, async.NewMessage(topic, "During", nil)))

	// Restart on the same port and store; the connection comes back.
	srv.Start()
	recv(t, reconnected, 15*time.Second, "the client to reconnect")

	// Retry the failed messages as a relay would (same IDs) until the
	// stream takes them, plus one already stored, which is a duplicate.
	retry := append(failed, async.NewMessage(topic, "Before", nil, async.WithID(before[0].ID())))
	for _, m := range retry {
		deadline := time.Now().Add(15 * time.Second)
		for {
			err := pub.Publish(ctx, topic, m)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Publish after the restart still fails: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // a relay's retry interval
		}
		if m.ID() != before[0].ID() {
			confirmed = append(confirmed, m.ID())
		}
	}
	after := make([]async.Message, 5)
	for i := range after {
		after[i] = async.NewMessage(topic, "After", nil)
	}
	errs, err = pub.PublishBatch(ctx, after)
	if err != nil {
		t.Fatalf("PublishBatch after the restart: %v", err)
	}
	for i, e := range errs {
		if e != nil {
			t.Fatalf("PublishBatch after the restart, message %d: %v", i, e)
		}
		confirmed = append(confirmed, after[i].ID())
	}

	// Every confirmed message is handled (the held ones after a
	// redelivery), and the stream holds each ID exactly once.
	waitFor(t, 30*time.Second, "every confirmed message to be handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range confirmed {
			if handled[id] == 0 {
				return false
			}
		}
		return true
	})
	mu.Lock()
	want := map[string]bool{}
	for _, id := range confirmed {
		want[id] = true
	}
	for id, n := range handled {
		if !want[id] {
			t.Errorf("handled unknown message %s", id)
		}
		if n > 1 {
			t.Logf("message %s handled %d times (at least once delivery)", id, n)
		}
	}
	mu.Unlock()
	for id := range held {
		if !want[id] {
			t.Errorf("held message %s not confirmed", id)
		}
	}
	stored := storedIDs(t, js, topic)
	seen := map[string]bool{}
	for _, id := range stored {
		if seen[id] {
			t.Errorf("message %s stored twice", id)
		}
		seen[id] = true
		if !want[id] {
			t.Errorf("stream holds unknown message %s", id)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("stream holds %d distinct messages, want %d", len(seen), len(want))
	}
}
