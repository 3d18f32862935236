package natsjs_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/retry"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// tooLarge returns a message whose payload alone exceeds nc's maximum
// payload (the shared server's max_payload, 1 MiB by default).
func tooLarge(nc *nats.Conn, topic string) async.Message {
	return async.NewMessage(topic, "Big", make([]byte, 2*nc.MaxPayload()))
}

// TestPublishTooLargeIsPermanent: a message the server can never accept
// fails permanently, with its size and the limit, on both publish paths,
// and a batch goes on with its other messages.
func TestPublishTooLargeIsPermanent(t *testing.T) {
	t.Parallel()
	nc, js := setup(t)
	topic := newTopic(t, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	limit := nc.MaxPayload()
	// Headers count towards the limit: a payload that fits alone does not
	// with its metadata.
	nearLimit := async.NewMessage(topic, "Big", make([]byte, limit-10),
		async.WithMetadata(async.Metadata{"k": strings.Repeat("v", 100)}))

	check := func(t *testing.T, what string, err error) {
		t.Helper()
		if !retry.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error", what, err)
		}
		if !errors.Is(err, nats.ErrMaxPayload) {
			t.Errorf("%s: %v, want an error matching nats.ErrMaxPayload", what, err)
		}
		if err != nil && !strings.Contains(err.Error(), "max_payload is "+strconv.FormatInt(limit, 10)) {
			t.Errorf("%s: %q does not give the limit %d", what, err, limit)
		}
	}

	for _, msg := range []async.Message{tooLarge(nc, topic), nearLimit} {
		check(t, "Publish", pub.Publish(ctxT(t, 10*time.Second), topic, msg))
	}
	// Invalid headers are permanent on this path too.
	if err := pub.Publish(ctxT(t, 10*time.Second), topic, async.NewMessage(topic, "N", nil,
		async.WithMetadata(async.Metadata{"bad key": "v"}))); !retry.IsPermanent(err) || !errors.Is(err, natsjs.ErrInvalidMessage) {
		t.Errorf("Publish with an invalid header: %v, want a permanent ErrInvalidMessage", err)
	}

	good := async.NewMessage(topic, "Good", []byte("ok"))
	badKey := async.NewMessage(topic, "N", nil, async.WithMetadata(async.Metadata{"a:b": "v"}))
	errs, err := pub.PublishBatch(ctxT(t, 10*time.Second), []async.Message{tooLarge(nc, topic), good, nearLimit, badKey})
	if err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	check(t, "PublishBatch message 0", errs[0])
	if errs[1] != nil {
		t.Errorf("PublishBatch message 1: %v, want nil", errs[1])
	}
	check(t, "PublishBatch message 2", errs[2])
	if !retry.IsPermanent(errs[3]) || !errors.Is(errs[3], natsjs.ErrInvalidMessage) {
		t.Errorf("PublishBatch message 3: %v, want a permanent ErrInvalidMessage", errs[3])
	}
	if ids := storedIDs(t, js, topic); len(ids) != 1 || ids[0] != good.ID() {
		t.Errorf("stream holds %v, want just %s", ids, good.ID())
	}
}

// TestRelayDeadLettersTooLargeAtOnce: the relay on memstore gives up on a
// message JetStream can never accept after one attempt, through the batch
// path and through Publish alike, and the key behind it is not parked by
// retries.
func TestRelayDeadLettersTooLargeAtOnce(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wrap func(*natsjs.Publisher) async.MessagePublisher
	}{
		{"PublishBatch", func(p *natsjs.Publisher) async.MessagePublisher { return p }},
		// A plain publisher hides AsyncPublisher: the relay calls Publish.
		{"Publish", func(p *natsjs.Publisher) async.MessagePublisher { return async.MessagePublisherFunc(p.Publish) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, js := setup(t)
			topic := newTopic(t, js)
			ctx := ctxT(t, 30*time.Second)
			store := memstore.New(memstore.Config{})
			big := tooLarge(nc, topic)
			after := async.NewMessage(topic, "Good", []byte("ok"))
			for _, m := range []async.Message{big, after} {
				if err := store.Outbox().Save(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			relay, err := txm.NewOutboxProcessorWithConfig(tc.wrap(natsjs.NewPublisher(js, natsjs.PublisherConfig{})), store.Outbox(), txm.ProcessorConfig{
				PollInterval: 5 * time.Millisecond,
				Logger:       slog.New(slog.DiscardHandler),
				// A retried message would stay pending for an hour.
				Retry: retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, RandomizationFactor: -1, MaxAttempts: 10},
			})
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.Start(rctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Start: %v", err)
				}
			}()

			var dead []txm.DeadLetter
			waitFor(t, 10*time.Second, "the message in dead letters", func() bool {
				dead, err = store.Outbox().DeadLetters(ctx, txm.DeadLetterFilter{})
				return err == nil && len(dead) > 0
			})
			if len(dead) != 1 || dead[0].Message.ID() != big.ID() {
				t.Fatalf("dead letters %v, want just %s", dead, big.ID())
			}
			if dead[0].Attempts != 1 {
				t.Errorf("dead letter after %d attempts, want 1", dead[0].Attempts)
			}
			if !strings.Contains(dead[0].LastError, "max_payload") {
				t.Errorf("dead letter's error %q does not say why", dead[0].LastError)
			}
			waitFor(t, 10*time.Second, "the other message published", func() bool {
				ids := storedIDs(t, js, topic)
				return len(ids) == 1 && ids[0] == after.ID()
			})
		})
	}
}
