package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
)

func TestDefaultConsumerName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		topic, group string
		prefix       string
	}{
		{"orders.placed", "billing", "billing_orders_placed_"},
		{"orders.*", "billing", "billing_orders___"},
		{"a b/c\\d>e", "g", "g_a_b_c_d_e_"},
		{"ordres.événement", "grp", "grp_ordres___v__nement_"},
		{strings.Repeat("x", 100), "g", "g_" + strings.Repeat("x", 62) + "_"},
	}
	seen := map[string]string{}
	for _, tc := range cases {
		name := natsjs.DefaultConsumerName(tc.topic, tc.group)
		if !strings.HasPrefix(name, tc.prefix) || len(name) != len(tc.prefix)+8 {
			t.Errorf("DefaultConsumerName(%q, %q) = %q, want %q and 8 hex digits", tc.topic, tc.group, name, tc.prefix)
		}
		if strings.ContainsAny(name, ".*> /\\\t") {
			t.Errorf("DefaultConsumerName(%q, %q) = %q is not a valid consumer name", tc.topic, tc.group, name)
		}
		if again := natsjs.DefaultConsumerName(tc.topic, tc.group); again != name {
			t.Errorf("DefaultConsumerName is not deterministic: %q then %q", name, again)
		}
		seen[name] = tc.group + "/" + tc.topic
	}
	// Pairs that clean up to the same text still get different names.
	for _, pair := range [][2][2]string{
		{{"b_c", "a"}, {"c", "a_b"}},
		{{"orders.placed", "g"}, {"orders_placed", "g"}},
	} {
		x := natsjs.DefaultConsumerName(pair[0][0], pair[0][1])
		y := natsjs.DefaultConsumerName(pair[1][0], pair[1][1])
		if x == y {
			t.Errorf("topic/group %v and %v share the consumer name %q", pair[0], pair[1], x)
		}
	}
}

func nopHandler() async.MessageHandler {
	return async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return nil })
}

func newSubscriber(t *testing.T, js jetstream.JetStream, cfg natsjs.SubscriberConfig) *natsjs.Subscriber {
	t.Helper()
	sub := natsjs.NewSubscriber(js, cfg)
	t.Cleanup(func() {
		if err := sub.Close(); err != nil {
			t.Errorf("close subscriber: %v", err)
		}
	})
	return sub
}

func subscribe(t *testing.T, sub *natsjs.Subscriber, topic string, h async.MessageHandler, opts ...async.SubscriberOption) async.Subscription {
	t.Helper()
	s, err := sub.Subscribe(ctxT(t, 10*time.Second), topic, h, opts...)
	if err != nil {
		t.Fatalf("Subscribe(%q): %v", topic, err)
	}
	t.Cleanup(func() {
		if err := s.Unsubscribe(); err != nil {
			t.Errorf("Unsubscribe: %v", err)
		}
	})
	return s
}

func publishAll(t *testing.T, js jetstream.JetStream, topic string, msgs ...async.Message) {
	t.Helper()
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	for _, m := range msgs {
		if err := pub.Publish(ctxT(t, 10*time.Second), topic, m); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
}

func TestSubscribeErrors(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)

	sub := newSubscriber(t, js, natsjs.SubscriberConfig{})
	_, err := sub.Subscribe(ctxT(t, 10*time.Second), "txmtest.nostream."+randSuffix(), nopHandler())
	if !errors.Is(err, natsjs.ErrNoStream) {
		t.Errorf("Subscribe to a topic without a stream: %v, want an error matching ErrNoStream", err)
	}
	if _, err := sub.Subscribe(ctxT(t, 10*time.Second), topic, nil); err == nil {
		t.Error("Subscribe with a nil handler returned no error")
	}

	closed := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{})
	s, err := closed.Subscribe(ctxT(t, 10*time.Second), topic, nopHandler(), async.GroupName("g"))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := closed.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := closed.Close(); err != nil {
		t.Errorf("second Close: %v, want nil", err)
	}
	if err := s.Unsubscribe(); err != nil {
		t.Errorf("Unsubscribe after Close: %v, want nil", err)
	}
	if _, err := closed.Subscribe(ctxT(t, 10*time.Second), topic, nopHandler()); !errors.Is(err, async.ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want an error matching async.ErrClosed", err)
	}
}

// TestConsumerConfig checks how subscription options and the subscriber's
// defaults map onto the JetStream consumer.
func TestConsumerConfig(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	cases := []struct {
		name          string
		cfg           natsjs.SubscriberConfig
		opts          []async.SubscriberOption
		ackWait       time.Duration
		maxDeliver    int
		maxAckPending int // 0: not checked (server default)
	}{
		{name: "defaults", ackWait: natsjs.DefaultAckWait, maxDeliver: natsjs.DefaultMaxRedeliveries + 1},
		{
			name:    "subscription options",
			opts:    []async.SubscriberOption{async.AckWait(2 * time.Second), async.MaxRedeliveries(3)},
			ackWait: 2 * time.Second, maxDeliver: 4,
		},
		{
			name:    "subscriber defaults",
			cfg:     natsjs.SubscriberConfig{AckWait: 7 * time.Second, MaxRedeliveries: 1, MaxAckPending: 5},
			ackWait: 7 * time.Second, maxDeliver: 2, maxAckPending: 5,
		},
		{
			name:    "options override subscriber defaults",
			cfg:     natsjs.SubscriberConfig{AckWait: 7 * time.Second, MaxRedeliveries: 1},
			opts:    []async.SubscriberOption{async.AckWait(3 * time.Second), async.MaxRedeliveries(6)},
			ackWait: 3 * time.Second, maxDeliver: 7,
		},
		{
			name:    "no redelivery limit",
			opts:    []async.SubscriberOption{async.MaxRedeliveries(-1)},
			ackWait: natsjs.DefaultAckWait, maxDeliver: -1,
		},
	}
	for _, tc := range cases {
		for _, group := range []string{"", "g"} {
			t.Run(fmt.Sprintf("%s/group %q", tc.name, group), func(t *testing.T) {
				t.Parallel()
				topic := newTopic(t, js)
				sub := newSubscriber(t, js, tc.cfg)
				s := subscribe(t, sub, topic, nopHandler(), append(tc.opts, async.GroupName(group))...)
				infos := consumers(t, js, topic)
				if len(infos) != 1 {
					t.Fatalf("stream has %d consumers, want 1", len(infos))
				}
				c := infos[0].Config
				if c.AckWait != tc.ackWait || c.MaxDeliver != tc.maxDeliver || c.AckPolicy != jetstream.AckExplicitPolicy || c.FilterSubject != topic {
					t.Errorf("consumer AckWait %v MaxDeliver %d AckPolicy %v FilterSubject %q, want %v %d explicit %q",
						c.AckWait, c.MaxDeliver, c.AckPolicy, c.FilterSubject, tc.ackWait, tc.maxDeliver, topic)
				}
				if tc.maxAckPending != 0 && c.MaxAckPending != tc.maxAckPending {
					t.Errorf("consumer MaxAckPending %d, want %d", c.MaxAckPending, tc.maxAckPending)
				}
				if group == "" {
					if c.Durable != "" || c.DeliverPolicy != jetstream.DeliverNewPolicy {
						t.Errorf("private consumer: Durable %q DeliverPolicy %v, want ephemeral, deliver new", c.Durable, c.DeliverPolicy)
					}
				} else if want := natsjs.DefaultConsumerName(topic, group); c.Durable != want || c.DeliverPolicy != jetstream.DeliverAllPolicy {
					t.Errorf("group consumer: Durable %q DeliverPolicy %v, want %q, deliver all", c.Durable, c.DeliverPolicy, want)
				}
				if err := s.Unsubscribe(); err != nil {
					t.Fatalf("Unsubscribe: %v", err)
				}
				left := len(consumers(t, js, topic))
				if group == "" && left != 0 {
					t.Errorf("private consumer still exists after Unsubscribe")
				}
				if group != "" && left != 1 {
					t.Errorf("durable consumer of group deleted by Unsubscribe")
				}
			})
		}
	}
}

func consumers(t *testing.T, js jetstream.JetStream, topic string) []*jetstream.ConsumerInfo {
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
	var out []*jetstream.ConsumerInfo
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		out = append(out, ci)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("list consumers: %v", err)
	}
	return out
}

// chanHandler sends each delivery to the returned channel, then runs fn
// (nil: returns nil).
func chanHandler(fn func(async.IncomingMessage) error) (async.MessageHandler, <-chan async.IncomingMessage) {
	ch := make(chan async.IncomingMessage, 100)
	return async.MessageHandlerFunc(func(_ context.Context, m async.IncomingMessage) error {
		ch <- m
		if fn == nil {
			return nil
		}
		return fn(m)
	}), ch
}

// expectNone checks that nothing arrives on ch for d.
func expectNone[T any](t *testing.T, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(d):
	}
}

// TestGroupResumes: a group's durable consumer keeps its place across
// subscriptions, and a new group starts with the oldest message.
func TestGroupResumes(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{})
	first := []async.Message{async.NewMessage(topic, "A", nil), async.NewMessage(topic, "B", nil)}
	publishAll(t, js, topic, first...)

	h, got := chanHandler(nil)
	s := subscribe(t, sub, topic, h, async.GroupName("workers"))
	for _, want := range first {
		if m := recv(t, got, 10*time.Second, "a message published before the group existed"); m.ID() != want.ID() {
			t.Fatalf("got %s, want %s", m.ID(), want.ID())
		}
	}
	if err := s.Unsubscribe(); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	later := async.NewMessage(topic, "C", nil)
	publishAll(t, js, topic, later)

	subscribe(t, sub, topic, h, async.GroupName("workers"))
	if m := recv(t, got, 10*time.Second, "the message published while the group was away"); m.ID() != later.ID() {
		t.Fatalf("got %s, want %s (the group should resume after its acked messages)", m.ID(), later.ID())
	}
	expectNone(t, got, 300*time.Millisecond, "redelivery of an acked message")
}

// TestMessageFromOtherProducer: a message published without this package's
// headers gets a stable ID and its headers as metadata.
func TestMessageFromOtherProducer(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{RedeliveryDelay: 10 * time.Millisecond})
	var once sync.Once
	h, got := chanHandler(func(m async.IncomingMessage) error {
		var err error
		once.Do(func() { err = errors.New("fail the first delivery") })
		return err
	})
	subscribe(t, sub, topic, h)
	m := nats.NewMsg(topic)
	m.Data = []byte("raw")
	m.Header.Set("x-origin", "legacy")
	ack, err := js.PublishMsg(ctxT(t, 10*time.Second), m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	first := recv(t, got, 10*time.Second, "the message")
	again := recv(t, got, 10*time.Second, "its redelivery")
	wantID := fmt.Sprintf("%s:%d", ack.Stream, ack.Sequence)
	for _, d := range []async.IncomingMessage{first, again} {
		if d.ID() != wantID {
			t.Errorf("ID = %q, want %q", d.ID(), wantID)
		}
	}
	if first.Metadata().GetString("x-origin") != "legacy" || string(first.Data()) != "raw" || first.Subject() != topic {
		t.Errorf("got metadata %v data %q subject %q", first.Metadata(), first.Data(), first.Subject())
	}
	if d := time.Since(first.SentAt()); first.SentAt().IsZero() || d < 0 || d > time.Minute {
		t.Errorf("SentAt = %v, want the stream timestamp", first.SentAt())
	}
}

// TestStrictOrder: with MaxAckPending 1 a NAcked message is redelivered
// before any later message is delivered.
func TestStrictOrder(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{MaxAckPending: 1})
	msgs := []async.Message{async.NewMessage(topic, "1", nil), async.NewMessage(topic, "2", nil), async.NewMessage(topic, "3", nil)}
	var once sync.Once
	h, got := chanHandler(func(m async.IncomingMessage) error {
		if m.ID() == msgs[0].ID() {
			var err error
			once.Do(func() { err = m.NAck() })
			return err
		}
		return nil
	})
	subscribe(t, sub, topic, h, async.GroupName("ordered"), async.RedeliveryDelay(100*time.Millisecond))
	publishAll(t, js, topic, msgs...)
	var order []string
	for range 4 {
		order = append(order, recv(t, got, 10*time.Second, "a delivery").MessageName())
	}
	if got, want := strings.Join(order, ","), "1,1,2,3"; got != want {
		t.Errorf("delivery order %s, want %s", got, want)
	}
}

func TestConfirmAcks(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{ConfirmAcks: true})
	h, got := chanHandler(func(m async.IncomingMessage) error { return m.Ack() })
	subscribe(t, sub, topic, h, async.AckWait(300*time.Millisecond))
	publishAll(t, js, topic, async.NewMessage(topic, "A", nil))
	recv(t, got, 10*time.Second, "the message")
	expectNone(t, got, 900*time.Millisecond, "redelivery of a confirmed ack")
	info := consumers(t, js, topic)[0]
	if info.NumAckPending != 0 || info.AckFloor.Stream != 1 {
		t.Errorf("consumer ack pending %d, ack floor %d; want 0 and 1", info.NumAckPending, info.AckFloor.Stream)
	}
}

func TestEnsureStream(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	name := "TXMTEST_ENSURE_" + randSuffix()
	cfg := jetstream.StreamConfig{Name: name, Subjects: []string{"txmtest.ensure." + name}, Storage: jetstream.MemoryStorage}
	ctx := ctxT(t, 10*time.Second)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	for i := range 2 {
		if _, err := natsjs.EnsureStream(ctx, js, cfg); err != nil {
			t.Fatalf("EnsureStream #%d: %v", i+1, err)
		}
	}
	cfg.Duplicates = 30 * time.Second
	st, err := natsjs.EnsureStream(ctx, js, cfg)
	if err != nil {
		t.Fatalf("EnsureStream with a new duplicate window: %v", err)
	}
	if got := st.CachedInfo().Config.Duplicates; got != 30*time.Second {
		t.Errorf("Duplicates = %v after update, want 30s", got)
	}
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{}); err == nil {
		t.Error("EnsureStream without a name returned no error")
	}
}

// TestGroupConsumerUpdated: subscribing a group again with other options
// updates its durable consumer.
func TestGroupConsumerUpdated(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	topic := newTopic(t, js)
	sub := newSubscriber(t, js, natsjs.SubscriberConfig{})
	for _, tc := range []struct {
		ackWait    time.Duration
		maxDeliver int
	}{{2 * time.Second, 3}, {3 * time.Second, 5}} {
		s := subscribe(t, sub, topic, nopHandler(), async.GroupName("g"), async.AckWait(tc.ackWait), async.MaxRedeliveries(tc.maxDeliver-1))
		infos := consumers(t, js, topic)
		if len(infos) != 1 || infos[0].Config.AckWait != tc.ackWait || infos[0].Config.MaxDeliver != tc.maxDeliver {
			t.Fatalf("consumers %d, first with AckWait %v MaxDeliver %d; want 1 with %v and %d",
				len(infos), infos[0].Config.AckWait, infos[0].Config.MaxDeliver, tc.ackWait, tc.maxDeliver)
		}
		if err := s.Unsubscribe(); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
	}
}

// TestSteadyDelivery: parallel subscriptions under load never stall (a
// stall would show as a gap of PullWait between deliveries).
func TestSteadyDelivery(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	for r := range 6 {
		t.Run(fmt.Sprint(r), func(t *testing.T) {
			t.Parallel()
			for round := range 3 {
				topic := newTopic(t, js)
				sub := newSubscriber(t, js, natsjs.SubscriberConfig{})
				h, got := chanHandler(nil)
				s := subscribe(t, sub, topic, h, async.Concurrency(1+round))
				msgs := make([]async.Message, 100)
				for i := range msgs {
					msgs[i] = async.NewMessage(topic, "Load", nil)
				}
				publishAll(t, js, topic, msgs...)
				for i := range msgs {
					recv(t, got, 4*time.Second, fmt.Sprintf("delivery %d of round %d", i+1, round))
				}
				if err := s.Unsubscribe(); err != nil {
					t.Fatalf("Unsubscribe: %v", err)
				}
			}
		})
	}
}

// TestConsumerRecreated: a subscription whose consumer disappears creates
// it again and goes on delivering, whether the server told the waiting pull
// request (409 consumer deleted) or the next pull request just gets no
// answer (the consumer was deleted between two requests).
func TestConsumerRecreated(t *testing.T) {
	t.Parallel()
	_, js := setup(t)
	for _, tc := range []struct {
		name        string
		group       string
		betweenPull bool
	}{
		{"private, pull waiting", "", false},
		{"group, pull waiting", "g", false},
		{"private, between pulls", "", true},
		{"group, between pulls", "g", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topic := newTopic(t, js)
			sub := newSubscriber(t, js, natsjs.SubscriberConfig{PullWait: time.Second, Logger: discardLogger()})
			inHandler := make(chan struct{})
			release := make(chan struct{})
			var once sync.Once
			h, got := chanHandler(func(m async.IncomingMessage) error {
				if m.MessageName() == "Block" {
					// A group's new consumer starts again with the oldest
					// message, so this one comes back: block only once.
					once.Do(func() {
						close(inHandler)
						<-release
					})
				}
				return nil
			})
			subscribe(t, sub, topic, h, async.GroupName(tc.group))
			infos := consumers(t, js, topic)
			if len(infos) != 1 {
				t.Fatalf("%d consumers, want 1", len(infos))
			}
			if tc.betweenPull {
				// With Concurrency 1 no pull request waits while the
				// handler runs.
				publishAll(t, js, topic, async.NewMessage(topic, "Block", nil))
				recv(t, got, 10*time.Second, "the blocking message")
				recv(t, inHandler, 10*time.Second, "the handler to block")
			}
			if err := js.DeleteConsumer(ctxT(t, 10*time.Second), infos[0].Stream, infos[0].Name); err != nil {
				t.Fatalf("delete consumer: %v", err)
			}
			if tc.betweenPull {
				close(release)
			}
			// Publish until the new consumer delivers: a private
			// subscription gets only messages published after its
			// consumer was created again.
			deadline := time.Now().Add(20 * time.Second)
			for {
				publishAll(t, js, topic, async.NewMessage(topic, "AfterDelete", nil))
				select {
				case m := <-got:
					if m.MessageName() != "AfterDelete" {
						continue
					}
				case <-time.After(300 * time.Millisecond):
					if time.Now().After(deadline) {
						t.Fatal("no delivery within 20s of deleting the consumer")
					}
					continue
				}
				break
			}
			if after := consumers(t, js, topic); len(after) != 1 || after[0].Name != infos[0].Name {
				t.Errorf("consumers after recreation: %d, want 1 named %s", len(after), infos[0].Name)
			}
		})
	}
}
