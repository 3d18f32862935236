package natsjs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/testenv"
)

// TestDeadLetters: killed messages and messages out of redeliveries are
// reported with their ID, read back from the stream, and republished under
// DeadLetterPrefix.
func TestDeadLetters(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	prefix := "txmtest.dlq." + randSuffix()
	newStream(t, js, "TXMTEST_DLQ_"+randSuffix(), prefix+".>")

	observed := make(chan natsjs.DeadLetter, 10)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{
		DeadLetterPrefix: prefix,
		OnDeadLetter:     func(dl natsjs.DeadLetter) { observed <- dl },
	})
	killed := async.NewMessage(topic, "Killed", []byte("kill me"), async.WithMetadata(async.Metadata{async.MetaPartitionKey: "k1"}))
	failing := async.NewMessage(topic, "Failing", []byte("always fails"))
	h := async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
		if m.ID() == killed.ID() {
			return m.Kill()
		}
		return fmt.Errorf("cannot handle %s", m.ID())
	})
	subscribe(t, sub, topic, h, async.MaxRedeliveries(2), async.RedeliveryDelay(20*time.Millisecond), async.GroupName("dl"))
	publishAll(t, js, topic, killed, failing)

	want := map[string]struct {
		msg        async.Message
		reason     natsjs.DeadLetterReason
		deliveries uint64
		seq        uint64
		handlerErr string
	}{
		killed.ID():  {killed, natsjs.DeadLetterTerminated, 1, 1, ""},
		failing.ID(): {failing, natsjs.DeadLetterMaxDeliveries, 3, 2, "cannot handle " + failing.ID()},
	}
	for range want {
		dl := recv(t, observed, 10*time.Second, "a dead letter")
		w, ok := want[dl.ID]
		if !ok {
			t.Fatalf("unexpected dead letter %+v", dl)
		}
		if dl.Err != nil {
			t.Errorf("dead letter %s: Err = %v", dl.ID, dl.Err)
		}
		if got := fmt.Sprint(dl.HandlerErr); w.handlerErr == "" && dl.HandlerErr != nil || w.handlerErr != "" && got != w.handlerErr {
			t.Errorf("dead letter %s: HandlerErr = %v, want %q", dl.ID, dl.HandlerErr, w.handlerErr)
		}
		if dl.Group != "dl" {
			t.Errorf("dead letter %s: Group = %q, want dl", dl.ID, dl.Group)
		}
		if dl.Reason != w.reason || dl.Deliveries != w.deliveries || dl.Sequence != w.seq || dl.Topic != topic ||
			dl.Consumer != natsjs.DefaultConsumerName(topic, "dl") || dl.Stream == "" || dl.At.IsZero() {
			t.Errorf("dead letter %+v, want reason %s, %d deliveries, sequence %d, topic %q", dl, w.reason, w.deliveries, w.seq, topic)
		}
		if dl.Message == nil {
			t.Fatalf("dead letter %s has no message", dl.ID)
		}
		if dl.Message.ID() != dl.ID || string(dl.Message.Data()) != string(w.msg.Data()) || dl.Message.MessageName() != w.msg.MessageName() ||
			dl.Message.Metadata().PartitionKey() != w.msg.Metadata().PartitionKey() {
			t.Errorf("dead letter message %s %q %q %v, want %s %q %q %v", dl.Message.ID(), dl.Message.MessageName(), dl.Message.Data(), dl.Message.Metadata(),
				w.msg.ID(), w.msg.MessageName(), w.msg.Data(), w.msg.Metadata())
		}
	}
	if got := sub.DeadLetters(); len(got) != 2 {
		t.Errorf("DeadLetters() has %d entries, want 2", len(got))
	}

	// The republished copies reach a subscriber of the dead-letter topic
	// with the original ID and the dead-letter headers as metadata.
	dlq := newSubscriber(t, js, natsjs.SubscriberConfig{})
	dh, got := chanHandler(nil)
	subscribe(t, dlq, prefix+".>", dh, async.GroupName("inspect"))
	for range want {
		m := recv(t, got, 10*time.Second, "a republished dead letter")
		w, ok := want[m.ID()]
		if !ok {
			t.Fatalf("unexpected message %s on the dead-letter topic", m.ID())
		}
		md := m.Metadata()
		if m.Subject() != prefix+"."+topic || string(m.Data()) != string(w.msg.Data()) ||
			md.GetString(natsjs.HeaderDeadLetterReason) != string(w.reason) ||
			md.GetString(natsjs.HeaderDeadLetterTopic) != topic ||
			md.GetString(natsjs.HeaderDeadLetterSequence) != fmt.Sprint(w.seq) ||
			md.GetString(natsjs.HeaderDeadLetterDeliveries) != fmt.Sprint(w.deliveries) ||
			md.GetString(natsjs.HeaderDeadLetterConsumer) != natsjs.DefaultConsumerName(topic, "dl") ||
			md.GetString(natsjs.HeaderDeadLetterStream) == "" ||
			md.GetString(natsjs.HeaderDeadLetterError) != w.handlerErr ||
			md.PartitionKey() != w.msg.Metadata().PartitionKey() {
			t.Errorf("republished %s on %q with data %q and metadata %v", m.ID(), m.Subject(), m.Data(), md)
		}
	}
}

// TestDeadLetterOncePerGroup: the members of a group, on different
// connections, report each dead letter once between them.
func TestDeadLetterOncePerGroup(t *testing.T) {
	t.Parallel()
	url := testenv.URL(t, testenv.NATS)
	_, admin := connect(t, url)
	topic := newTopic(t, admin)
	const n = 6
	observed := make(chan natsjs.DeadLetter, 2*n)
	for range 2 {
		_, js := connect(t, url)
		sub := newSubscriber(t, js, natsjs.SubscriberConfig{OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl }})
		subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
			return m.Kill()
		}), async.GroupName("pair"))
	}
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = async.NewMessage(topic, "Doomed", nil)
	}
	publishAll(t, admin, topic, msgs...)
	seen := map[string]bool{}
	for range n {
		dl := recv(t, observed, 10*time.Second, "a dead letter")
		if seen[dl.ID] {
			t.Errorf("dead letter %s reported twice", dl.ID)
		}
		seen[dl.ID] = true
	}
	expectNone(t, observed, 300*time.Millisecond, "dead letter reported by a second member of the group")
}

func TestDeadLetterHistory(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	cases := []struct {
		name    string
		history int
		want    int
	}{
		{"bounded", 2, 2},
		{"none kept", -1, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := newTopic(t, js)
			observed := make(chan natsjs.DeadLetter, 10)
			sub := newSubscriber(t, js, natsjs.SubscriberConfig{
				DeadLetterHistory: tc.history,
				OnDeadLetter:      func(dl natsjs.DeadLetter) { observed <- dl },
			})
			subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
				return m.Kill()
			}))
			msgs := []async.Message{async.NewMessage(topic, "1", nil), async.NewMessage(topic, "2", nil), async.NewMessage(topic, "3", nil)}
			publishAll(t, js, topic, msgs...)
			for range msgs {
				recv(t, observed, 10*time.Second, "a dead letter")
			}
			got := sub.DeadLetters()
			if len(got) != tc.want {
				t.Fatalf("DeadLetters() has %d entries, want %d", len(got), tc.want)
			}
			for i, dl := range got {
				if want := msgs[len(msgs)-tc.want+i].ID(); dl.ID != want {
					t.Errorf("DeadLetters()[%d] = %s, want %s (the newest, oldest first)", i, dl.ID, want)
				}
			}
		})
	}
}

// TestDeadLetterMessageGone: when the stream no longer holds the message
// an advisory points at, the dead letter still reports its place, with Err
// set.
func TestDeadLetterMessageGone(t *testing.T) {
	t.Parallel()
	nc, js := setup(t)
	topic := newTopic(t, js)
	observed := make(chan natsjs.DeadLetter, 1)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl }, Logger: discardLogger()})
	subscribe(t, sub, topic, async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil }), async.GroupName("gone"))
	ctx := ctxT(t, 10*time.Second)
	stream, err := js.StreamNameBySubject(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	// The advisory the server would send for a sequence the stream does
	// not hold (any longer).
	consumer := natsjs.DefaultConsumerName(topic, "gone")
	adv := fmt.Sprintf(`{"stream":%q,"consumer":%q,"stream_seq":42,"deliveries":3}`, stream, consumer)
	if err := nc.Publish("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+stream+"."+consumer, []byte(adv)); err != nil {
		t.Fatal(err)
	}
	dl := recv(t, observed, 10*time.Second, "the dead letter")
	if !errors.Is(dl.Err, jetstream.ErrMsgNotFound) {
		t.Errorf("dead letter Err = %v, want an error matching jetstream.ErrMsgNotFound", dl.Err)
	}
	if dl.Message != nil || dl.ID != "" || dl.Sequence != 42 || dl.Deliveries != 3 || dl.Reason != natsjs.DeadLetterMaxDeliveries ||
		dl.Group != "gone" || dl.Consumer != consumer || dl.HandlerErr != nil {
		t.Errorf("dead letter %+v, want sequence 42, 3 deliveries, max_deliveries, group gone, no message and an error", dl)
	}
}

// TestDeadLetterRepublishFails: without a stream for the dead-letter
// subjects the dead letter is still recorded, with Err set.
func TestDeadLetterRepublishFails(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	observed := make(chan natsjs.DeadLetter, 1)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{
		DeadLetterPrefix: "txmtest.nodlq." + randSuffix(),
		OnDeadLetter:     func(dl natsjs.DeadLetter) { observed <- dl },
		Logger:           discardLogger(),
	})
	subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
		return m.Kill()
	}))
	msg := async.NewMessage(topic, "Orphan", []byte("x"))
	publishAll(t, js, topic, msg)
	dl := recv(t, observed, 20*time.Second, "the dead letter")
	if dl.ID != msg.ID() || dl.Message == nil || !errors.Is(dl.Err, jetstream.ErrNoStreamResponse) {
		t.Errorf("dead letter ID %s message %v Err %v; want %s, the message, and an error matching ErrNoStreamResponse", dl.ID, dl.Message, dl.Err, msg.ID())
	}
}

// TestDeadLetterKeepsHandlerError: a dead letter the subscriber gives up on
// in a handler keeps the handler's error: what a handler that killed the
// message returned, the failure of the last delivery, a panic with its
// stack. It is logged at WARN with the message's ID, topic and group, and
// republished in the dead-letter-error header.
func TestDeadLetterKeepsHandlerError(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	cause := errors.New("unknown content type")
	cases := []struct {
		name       string
		handle     func(async.IncomingMessage) error
		reason     natsjs.DeadLetterReason
		deliveries uint64
		check      func(error) bool
		header     []string // parts of the dead-letter-error header
	}{
		{
			name: "killed, then failed",
			handle: func(m async.IncomingMessage) error {
				if err := m.Kill(); err != nil {
					return err
				}
				return fmt.Errorf("decode: %w", cause)
			},
			reason: natsjs.DeadLetterTerminated, deliveries: 1,
			check:  func(err error) bool { return errors.Is(err, cause) },
			header: []string{"decode: unknown content type"},
		},
		{
			name:   "last delivery failed",
			handle: func(async.IncomingMessage) error { return fmt.Errorf("charge: %w", cause) },
			reason: natsjs.DeadLetterMaxDeliveries, deliveries: 2,
			check:  func(err error) bool { return errors.Is(err, cause) },
			header: []string{"charge: unknown content type"},
		},
		{
			name:   "last delivery panicked",
			handle: func(async.IncomingMessage) error { panic("handler bug") },
			reason: natsjs.DeadLetterMaxDeliveries, deliveries: 2,
			check: func(err error) bool {
				var perr *async.PanicError
				return errors.As(err, &perr) && perr.Value == "handler bug" && strings.Contains(string(perr.Stack), "deadletter_test.go")
			},
			header: []string{"panic: handler bug | goroutine ", "deadletter_test.go"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := newTopic(t, js)
			prefix := "txmtest.dlq." + randSuffix()
			newStream(t, js, "TXMTEST_DLQ_"+randSuffix(), prefix+".>")
			var logs lockedBuffer
			observed := make(chan natsjs.DeadLetter, 10)
			sub := newSubscriber(t, js, natsjs.SubscriberConfig{
				DeadLetterPrefix: prefix,
				OnDeadLetter:     func(dl natsjs.DeadLetter) { observed <- dl },
				Logger:           slog.New(slog.NewTextHandler(&logs, nil)),
			})
			subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
				return tc.handle(m)
			}), async.MaxRedeliveries(1), async.RedeliveryDelay(10*time.Millisecond), async.GroupName("billing"))
			msg := async.NewMessage(topic, "OrderPlaced", []byte("x"))
			publishAll(t, js, topic, msg)

			dl := recv(t, observed, 10*time.Second, "the dead letter")
			if dl.ID != msg.ID() || dl.Reason != tc.reason || dl.Deliveries != tc.deliveries || dl.Err != nil || dl.Message == nil {
				t.Errorf("dead letter %+v, want %s, %s after %d deliveries, with the message", dl, msg.ID(), tc.reason, tc.deliveries)
			}
			if !tc.check(dl.HandlerErr) {
				t.Errorf("dead letter HandlerErr = %v, unexpected", dl.HandlerErr)
			}
			expectNone(t, observed, 200*time.Millisecond, "second dead letter")

			out := logs.String()
			warned := false
			for line := range strings.Lines(out) {
				if strings.Contains(line, "level=WARN") && strings.Contains(line, "dead letters") {
					warned = true
					for _, want := range []string{"id=" + msg.ID(), "topic=" + topic, "group=billing", "error="} {
						if !strings.Contains(line, want) {
							t.Errorf("the dead letter's warning lacks %q: %s", want, line)
						}
					}
				}
			}
			if !warned {
				t.Errorf("no warning for the dead letter in the log:\n%s", out)
			}

			dlq := newSubscriber(t, js, natsjs.SubscriberConfig{})
			dh, got := chanHandler(nil)
			subscribe(t, dlq, prefix+".>", dh, async.GroupName("inspect"))
			m := recv(t, got, 10*time.Second, "the republished dead letter")
			header := m.Metadata().GetString(natsjs.HeaderDeadLetterError)
			for _, part := range tc.header {
				if !strings.Contains(header, part) {
					t.Errorf("%s header %q, want it to contain %q", natsjs.HeaderDeadLetterError, header, part)
				}
			}
			if strings.ContainsAny(header, "\r\n") || len(header) > 4096 {
				t.Errorf("%s header has %d bytes and line breaks %v, want one line of at most 4096 bytes", natsjs.HeaderDeadLetterError, len(header), strings.ContainsAny(header, "\r\n"))
			}
		})
	}
}

// TestDeadLetterFromAdvisory: a message the server gives up on (here its
// handler NAcks every delivery) is reported from the consumer's advisory,
// read back from the stream, without a handler error.
func TestDeadLetterFromAdvisory(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	observed := make(chan natsjs.DeadLetter, 10)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl }, Logger: discardLogger()})
	subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
		return m.NAck()
	}), async.MaxRedeliveries(1), async.RedeliveryDelay(10*time.Millisecond), async.GroupName("nak"))
	msg := async.NewMessage(topic, "Nacked", []byte("n"))
	publishAll(t, js, topic, msg)
	dl := recv(t, observed, 10*time.Second, "the dead letter")
	if dl.ID != msg.ID() || dl.Message == nil || string(dl.Message.Data()) != "n" || dl.Reason != natsjs.DeadLetterMaxDeliveries ||
		dl.Deliveries != 2 || dl.Group != "nak" || dl.HandlerErr != nil || dl.Err != nil {
		t.Errorf("dead letter %+v, want %s read back, max_deliveries after 2 deliveries, no errors", dl, msg.ID())
	}
}

// TestHandlerPanicRedelivers: a handler that panics fails its delivery,
// which is redelivered; the subscriber goes on.
func TestHandlerPanicRedelivers(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	var logs lockedBuffer
	observed := make(chan natsjs.DeadLetter, 10)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{
		OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl },
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	})
	var calls atomic.Int32
	h, got := chanHandler(func(async.IncomingMessage) error {
		if calls.Add(1) == 1 {
			panic("first delivery")
		}
		return nil
	})
	subscribe(t, sub, topic, h, async.RedeliveryDelay(10*time.Millisecond), async.GroupName("p"))
	first, after := async.NewMessage(topic, "M", nil), async.NewMessage(topic, "M", nil)
	publishAll(t, js, topic, first)
	for range 2 {
		if m := recv(t, got, 10*time.Second, "a delivery"); m.ID() != first.ID() {
			t.Fatalf("got %s, want %s (delivered, panicked, redelivered)", m.ID(), first.ID())
		}
	}
	publishAll(t, js, topic, after)
	if m := recv(t, got, 10*time.Second, "the next message"); m.ID() != after.ID() {
		t.Fatalf("got %s, want %s after the panic", m.ID(), after.ID())
	}
	expectNone(t, observed, 200*time.Millisecond, "dead letter")
	out := logs.String()
	for _, want := range []string{"level=ERROR", "handler failed", "panic: first delivery", "id=" + first.ID(), "deadletter_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
