package natsjs_test

import (
	"context"
	"errors"
	"fmt"
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
	}{
		killed.ID():  {killed, natsjs.DeadLetterTerminated, 1, 1},
		failing.ID(): {failing, natsjs.DeadLetterMaxDeliveries, 3, 2},
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

// TestDeadLetterMessageGone: when the stream no longer holds the message,
// the dead letter still reports its place, with Err set.
func TestDeadLetterMessageGone(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	observed := make(chan natsjs.DeadLetter, 1)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{OnDeadLetter: func(dl natsjs.DeadLetter) { observed <- dl }})
	ctx := ctxT(t, 10*time.Second)
	subscribe(t, sub, topic, async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
		// Purge the stream before killing, so the advisory points at a
		// message that is gone.
		name, err := js.StreamNameBySubject(ctx, topic)
		if err != nil {
			return err
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			return err
		}
		if err := st.Purge(ctx); err != nil {
			return err
		}
		return m.Kill()
	}))
	publishAll(t, js, topic, async.NewMessage(topic, "Gone", nil))
	dl := recv(t, observed, 10*time.Second, "the dead letter")
	if !errors.Is(dl.Err, jetstream.ErrMsgNotFound) {
		t.Errorf("dead letter Err = %v, want an error matching jetstream.ErrMsgNotFound", dl.Err)
	}
	if dl.Message != nil || dl.ID != "" || dl.Sequence != 1 || dl.Reason != natsjs.DeadLetterTerminated {
		t.Errorf("dead letter %+v, want sequence 1, terminated, no message and an error", dl)
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
