package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
)

// streamMsgs returns the messages stored in the stream capturing topic, in
// stream order.
func streamMsgs(t *testing.T, js jetstream.JetStream, topic string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	name, err := js.StreamNameBySubject(ctx, topic)
	if err != nil {
		t.Fatalf("stream of %q: %v", topic, err)
	}
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

func storedIDs(t *testing.T, js jetstream.JetStream, topic string) []string {
	t.Helper()
	var ids []string
	for _, m := range streamMsgs(t, js, topic) {
		ids = append(ids, m.Header.Get(natsjs.HeaderMsgID))
	}
	return ids
}

func TestPublishStoresHeaders(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	sentAt := time.Date(2024, 2, 3, 4, 5, 6, 789, time.UTC)
	msg := async.NewMessage(topic, "OrderPlaced", []byte("payload"), async.WithSentAt(sentAt),
		async.WithMetadata(async.Metadata{async.MetaContentType: "application/json", async.MetaTraceParent: "00-abc-def-01", "attempt": 3}))
	if err := pub.Publish(ctxT(t, 10*time.Second), topic, msg); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	stored := streamMsgs(t, js, topic)
	if len(stored) != 1 {
		t.Fatalf("stream holds %d messages, want 1", len(stored))
	}
	h := stored[0].Header
	for k, want := range map[string]string{
		"Nats-Msg-Id":   msg.ID(),
		"message-name":  "OrderPlaced",
		"sent-at":       "2024-02-03T04:05:06.000000789Z",
		"content-type":  "application/json",
		"traceparent":   "00-abc-def-01",
		"attempt":       "3",
		"partition-key": "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("header %q = %q, want %q", k, got, want)
		}
	}
	if string(stored[0].Data) != "payload" || stored[0].Subject != topic {
		t.Errorf("stored %q on %q, want %q on %q", stored[0].Data, stored[0].Subject, "payload", topic)
	}
}

func TestPublishDuplicateIDIsSuccess(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	msg := async.NewMessage(topic, "Once", []byte("x"))
	for i := range 3 {
		if err := pub.Publish(ctxT(t, 10*time.Second), topic, msg); err != nil {
			t.Fatalf("Publish #%d: %v", i+1, err)
		}
	}
	// The batch path dedups as well, within a batch and across calls.
	errs, err := pub.PublishBatch(ctxT(t, 10*time.Second), []async.Message{msg, msg})
	if err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	for i, e := range errs {
		if e != nil {
			t.Errorf("PublishBatch message %d: %v, want nil (a duplicate is confirmed)", i, e)
		}
	}
	if ids := storedIDs(t, js, topic); len(ids) != 1 || ids[0] != msg.ID() {
		t.Errorf("stream holds IDs %v, want just %s", ids, msg.ID())
	}
}

func TestPublishErrors(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name  string
		ctx   context.Context
		topic string
		msg   async.Message
		is    error
	}{
		{"no stream captures the topic", context.Background(), "txmtest.nostream." + randSuffix(), async.NewMessage("x", "N", nil), jetstream.ErrNoStreamResponse},
		{"reserved metadata key", context.Background(), topic, async.NewMessage(topic, "N", nil, async.WithMetadata(async.Metadata{"Nats-Expected-Stream": "OTHER"})), natsjs.ErrInvalidMessage},
		{"value with a line break", context.Background(), topic, async.NewMessage(topic, "N", nil, async.WithMetadata(async.Metadata{"k": "a\nb"})), natsjs.ErrInvalidMessage},
		{"cancelled context", cancelled, topic, async.NewMessage(topic, "N", nil), context.Canceled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := pub.Publish(tc.ctx, tc.topic, tc.msg)
			if !errors.Is(err, tc.is) {
				t.Fatalf("Publish: %v, want an error matching %v", err, tc.is)
			}
			// Only a message that can never be sent is a permanent failure.
			var pe *backoff.PermanentError
			if want := tc.is == natsjs.ErrInvalidMessage; errors.As(err, &pe) != want {
				t.Errorf("Publish: %v is permanent: %v, want %v", err, !want, want)
			}
		})
	}
	t.Cleanup(func() {
		if ids := storedIDs(t, js, topic); len(ids) != 0 {
			t.Errorf("failed publishes stored %v", ids)
		}
	})
}

func TestPublishBatch(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	cases := []struct {
		name       string
		maxPending int
		n          int
		// bad maps indexes to broken messages and the error they must get.
		bad map[int]error
	}{
		{name: "empty batch", n: 0},
		{name: "more messages than MaxPending", maxPending: 16, n: 300},
		{name: "default MaxPending", n: 50},
		{
			name: "failures are per message", maxPending: 4, n: 12,
			bad: map[int]error{2: natsjs.ErrInvalidMessage, 5: jetstream.ErrNoStreamResponse, 11: natsjs.ErrInvalidMessage},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := newTopic(t, js)
			pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{MaxPending: tc.maxPending})
			msgs := make([]async.Message, tc.n)
			var want []string
			for i := range msgs {
				switch tc.bad[i] {
				case natsjs.ErrInvalidMessage:
					msgs[i] = async.NewMessage(topic, "Bad", nil, async.WithMetadata(async.Metadata{"bad key": "v"}))
				case jetstream.ErrNoStreamResponse:
					msgs[i] = async.NewMessage("txmtest.nostream."+randSuffix(), "Lost", nil)
				default:
					msgs[i] = async.NewMessage(topic, "Good", fmt.Appendf(nil, "%d", i))
					want = append(want, msgs[i].ID())
				}
			}
			errs, err := pub.PublishBatch(ctxT(t, 30*time.Second), msgs)
			if err != nil {
				t.Fatalf("PublishBatch: %v", err)
			}
			if len(errs) != len(msgs) {
				t.Fatalf("PublishBatch returned %d errors for %d messages", len(errs), len(msgs))
			}
			for i, e := range errs {
				if wantErr := tc.bad[i]; wantErr != nil {
					if !errors.Is(e, wantErr) {
						t.Errorf("message %d: %v, want an error matching %v", i, e, wantErr)
					}
					var pe *backoff.PermanentError
					if want := wantErr == natsjs.ErrInvalidMessage; errors.As(e, &pe) != want {
						t.Errorf("message %d: %v is permanent: %v, want %v", i, e, !want, want)
					}
				} else if e != nil {
					t.Errorf("message %d: %v, want nil", i, e)
				}
			}
			got := storedIDs(t, js, topic)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("stream holds %d IDs %v,\nwant %d in batch order %v", len(got), got, len(want), want)
			}
		})
	}
}

func TestPublishBatchCancelled(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, err := pub.PublishBatch(ctx, []async.Message{async.NewMessage(topic, "N", nil)})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("PublishBatch with a cancelled context: %v, want an error matching context.Canceled", err)
	}
	if errs != nil {
		t.Errorf("PublishBatch with a cancelled context returned per-message errors %v, want nil", errs)
	}
}

// TestPublishAckTimeout publishes to a subject that a plain NATS
// subscription (not a stream) receives and never answers.
func TestPublishAckTimeout(t *testing.T) {
	t.Parallel()
	nc, js := setup(t)
	subject := "txmtest.noack." + randSuffix()
	ns, err := nc.Subscribe(subject, func(*nats.Msg) {})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	t.Cleanup(func() { _ = ns.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{AckTimeout: 200 * time.Millisecond})

	start := time.Now()
	err = pub.Publish(context.Background(), subject, async.NewMessage(subject, "N", nil))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Publish: %v, want an error matching context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Publish took %v, want about the AckTimeout of 200ms", d)
	}

	errs, err := pub.PublishBatch(context.Background(), []async.Message{
		async.NewMessage(subject, "A", nil), async.NewMessage(subject, "B", nil),
	})
	if err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	for i, e := range errs {
		if !errors.Is(e, natsjs.ErrAckTimeout) {
			t.Errorf("message %d: %v, want an error matching ErrAckTimeout", i, e)
		}
	}
}
