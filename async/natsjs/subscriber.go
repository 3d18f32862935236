package natsjs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// Defaults of [SubscriberConfig].
const (
	// DefaultAckWait is the default of [SubscriberConfig.AckWait].
	DefaultAckWait = 30 * time.Second
	// DefaultMaxRedeliveries is the default of
	// [SubscriberConfig.MaxRedeliveries].
	DefaultMaxRedeliveries = 10
	// DefaultRedeliveryDelay is the default of
	// [SubscriberConfig.RedeliveryDelay].
	DefaultRedeliveryDelay = time.Second
	// DefaultDeadLetterHistory is the default of
	// [SubscriberConfig.DeadLetterHistory].
	DefaultDeadLetterHistory = 1000
	// DefaultEphemeralInactiveThreshold is the default of
	// [SubscriberConfig.EphemeralInactiveThreshold].
	DefaultEphemeralInactiveThreshold = time.Minute
	// DefaultPullWait is the default of [SubscriberConfig.PullWait].
	DefaultPullWait = 5 * time.Second
)

// SubscriberConfig configures a [Subscriber]. The zero value is ready to
// use. AckWait, MaxRedeliveries and RedeliveryDelay are the defaults of
// subscriptions whose [async.SubscriberConfig] leaves them zero.
type SubscriberConfig struct {
	// AckWait is the consumer's ack wait: how long a delivery may stay
	// unsettled before JetStream redelivers it. 0 uses DefaultAckWait
	// (30s).
	AckWait time.Duration

	// MaxRedeliveries is how many times a message is redelivered after its
	// first delivery; the consumer's MaxDeliver is MaxRedeliveries+1. 0
	// uses DefaultMaxRedeliveries (10); a negative value means no limit.
	MaxRedeliveries int

	// RedeliveryDelay is the delay of the NakWithDelay sent when a handler
	// fails or calls NAck. 0 uses DefaultRedeliveryDelay (1s).
	RedeliveryDelay time.Duration

	// MaxAckPending is the consumer's MaxAckPending: how many deliveries
	// may be unsettled at once across all members of a group. 0 leaves the
	// server's default (1000 unless the account limits it); a negative
	// value means no limit. Set 1 for strict order: then a NAcked message is
	// redelivered before any later one is delivered.
	MaxAckPending int

	// PullWait is how long one pull request waits at the server for
	// messages before the subscription sends the next one. It bounds how
	// long a pull request lost by the server (or by a reconnect) can hold
	// up deliveries. 0 uses DefaultPullWait (5s); values under 1s use 1s.
	PullWait time.Duration

	// ConfirmAcks makes Ack wait for the server to confirm it
	// (jetstream.Msg.DoubleAck), so an acked message is not redelivered.
	// false (the default) sends acks without waiting; a lost ack then
	// shows up as a redelivery, which an inbox absorbs.
	ConfirmAcks bool

	// ConsumerName names the durable consumer of a group on a topic. nil
	// uses [DefaultConsumerName]. All members of a group, in every process,
	// must compute the same name. The result must be a valid JetStream
	// consumer name (no white space, '.', '*', '>', '/' or '\').
	ConsumerName func(topic, group string) string

	// EphemeralInactiveThreshold is how long the server keeps the
	// consumer of a private subscription (GroupName "") after its client
	// went away without unsubscribing, for example during a disconnection.
	// 0 uses DefaultEphemeralInactiveThreshold (1 minute).
	EphemeralInactiveThreshold time.Duration

	// DeadLetterPrefix, when set, republishes every dead letter to
	// DeadLetterPrefix + "." + its subject, through JetStream, with its
	// headers and ID and the HeaderDeadLetter* headers, the handler's error
	// in [HeaderDeadLetterError]. A stream must capture those subjects. ""
	// (the default) republishes nothing.
	DeadLetterPrefix string

	// DeadLetterHistory is how many dead letters [Subscriber.DeadLetters]
	// keeps, the oldest dropped first. 0 uses DefaultDeadLetterHistory
	// (1000); a negative value keeps none.
	DeadLetterHistory int

	// OnDeadLetter, when set, is called with each dead letter recorded,
	// after it was republished. It runs on the goroutine that recorded it
	// (the handler's, or the advisory subscription's), one call at a time
	// per subscription, and must not block for long.
	OnDeadLetter func(DeadLetter)

	// Logger receives what has no caller to return to: every dead letter
	// (WARN, with its ID, topic, group and the handler's error), handler
	// failures (DEBUG; ERROR for a panic, with its stack), failed automatic
	// acks and naks, consumer errors and dead-letter failures. nil uses
	// slog.Default().
	Logger *slog.Logger
}

// Subscriber delivers JetStream messages to handlers. It implements
// [async.MessageSubscriber]. Each subscription consumes from the stream
// that captures its topic, found with StreamNameBySubject; streams are never
// created implicitly (see [EnsureStream]).
//
// A subscription with a GroupName uses a durable pull consumer, named by
// [SubscriberConfig.ConsumerName], that delivers all messages the stream
// holds for the topic, starting with the oldest the first time and
// continuing where the group left off afterwards; the members of a group
// share its messages. A subscription without a group uses an ephemeral
// consumer that delivers the messages published after Subscribe returns,
// and is deleted on Unsubscribe. Consumer settings are updated to the
// subscription's options on every Subscribe, and a subscription whose
// consumer disappears creates it again (see the package documentation).
//
// Close the Subscriber (or unsubscribe every subscription) before closing
// the NATS connection.
type Subscriber struct {
	js             jetstream.JetStream
	cfg            SubscriberConfig
	log            *slog.Logger
	history        int
	requestTimeout time.Duration

	mu     sync.Mutex
	closed bool
	subs   map[*subscription]struct{}

	dlMu        sync.Mutex
	deadLetters []DeadLetter
}

var _ async.MessageSubscriber = (*Subscriber)(nil)

// NewSubscriber returns a subscriber that consumes through js.
func NewSubscriber(js jetstream.JetStream, cfg SubscriberConfig) *Subscriber {
	if cfg.AckWait <= 0 {
		cfg.AckWait = DefaultAckWait
	}
	if cfg.MaxRedeliveries == 0 {
		cfg.MaxRedeliveries = DefaultMaxRedeliveries
	}
	if cfg.RedeliveryDelay <= 0 {
		cfg.RedeliveryDelay = DefaultRedeliveryDelay
	}
	if cfg.ConsumerName == nil {
		cfg.ConsumerName = DefaultConsumerName
	}
	if cfg.PullWait <= 0 {
		cfg.PullWait = DefaultPullWait
	}
	cfg.PullWait = max(cfg.PullWait, time.Second)
	if cfg.EphemeralInactiveThreshold <= 0 {
		cfg.EphemeralInactiveThreshold = DefaultEphemeralInactiveThreshold
	}
	history := cfg.DeadLetterHistory
	if history == 0 {
		history = DefaultDeadLetterHistory
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	timeout := js.Options().DefaultTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Subscriber{
		js:             js,
		cfg:            cfg,
		log:            log,
		history:        history,
		requestTimeout: timeout,
		subs:           make(map[*subscription]struct{}),
	}
}

// DefaultConsumerName returns group + "_" + topic with every character
// outside [A-Za-z0-9_-] replaced by "_", shortened to 64 bytes, followed by
// "_" and 8 hex digits of a hash of the exact group and topic, so that
// different pairs never share a consumer. For example group "billing" and
// topic "orders.placed" give "billing_orders_placed_" plus the hash.
func DefaultConsumerName(topic, group string) string {
	var b strings.Builder
	clean := func(s string) {
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
				b.WriteByte(c)
			} else {
				b.WriteByte('_')
			}
		}
	}
	clean(group)
	b.WriteByte('_')
	clean(topic)
	name := b.String()
	if len(name) > 64 {
		name = name[:64]
	}
	h := fnv.New32a()
	h.Write([]byte(group))
	h.Write([]byte{0})
	h.Write([]byte(topic))
	return fmt.Sprintf("%s_%08x", name, h.Sum32())
}

// Subscribe starts delivering the messages of topicName to handler (see
// [Subscriber] for the consumers it uses). The options map onto the
// consumer: AckWait to AckWait, MaxRedeliveries to MaxDeliver =
// MaxRedeliveries+1 (-1 when negative), RedeliveryDelay to the delay of
// NakWithDelay, Concurrency to the number of handlers running at once;
// zero options take the [SubscriberConfig] defaults.
//
// A handler that returns nil gets its message acked unless it settled it;
// one that returns an error gets it NAcked with the redelivery delay, or,
// on the last delivery MaxRedeliveries allows, terminated and recorded as
// a dead letter with the error. A handler that panics fails its delivery
// the same way, with an [*async.PanicError].
// Handlers receive a context that carries ctx's values but is not
// cancelled with it, and carries the subscription's group
// ([async.GroupFromContext]; none for a private subscription), which
// txm.InboxHandler checks against its inbox's. ctx bounds only the setup.
//
// Errors wrap [ErrNoStream] when no stream captures topicName, and
// [async.ErrClosed] after Close.
func (sub *Subscriber) Subscribe(ctx context.Context, topicName string, handler async.MessageHandler, opts ...async.SubscriberOption) (async.Subscription, error) {
	if handler == nil {
		return nil, errors.New("natsjs: subscribe: nil handler")
	}
	sc, err := async.NewSubscriberConfig(opts...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: subscribe to %q: %w", topicName, err)
	}
	if sub.isClosed() {
		return nil, fmt.Errorf("natsjs: subscribe to %q: %w", topicName, async.ErrClosed)
	}
	stream, err := sub.js.StreamNameBySubject(ctx, topicName)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("natsjs: subscribe to %q: %w: %w", topicName, ErrNoStream, err)
		}
		return nil, fmt.Errorf("natsjs: subscribe to %q: find its stream: %w", topicName, err)
	}

	s := &subscription{
		sub:         sub,
		topic:       topicName,
		group:       sc.GroupName,
		stream:      stream,
		handler:     handler,
		hctx:        async.WithGroup(context.WithoutCancel(ctx), sc.GroupName),
		delay:       sc.RedeliveryDelay,
		concurrency: max(sc.Concurrency, 1),
	}
	if s.delay == 0 {
		s.delay = sub.cfg.RedeliveryDelay
	}
	s.dlCtx, s.dlCancel = context.WithCancel(context.Background())

	s.cc = sub.consumerConfig(topicName, sc)
	if sc.GroupName != "" {
		s.cc.Durable = sub.cfg.ConsumerName(topicName, sc.GroupName)
		s.consumer = s.cc.Durable
	} else {
		// A named ephemeral consumer keeps its name, and so its
		// advisory subjects, when the subscription recreates it.
		s.ephemeral = true
		s.cc.Name = "txm_" + randomToken()
		s.cc.DeliverPolicy = jetstream.DeliverNewPolicy
		s.cc.InactiveThreshold = sub.cfg.EphemeralInactiveThreshold
		s.consumer = s.cc.Name
	}
	if err := s.createConsumer(ctx); err != nil {
		s.dlCancel()
		return nil, fmt.Errorf("natsjs: subscribe to %q: %w", topicName, err)
	}
	if err := s.subscribeAdvisories(); err != nil {
		_ = s.deleteEphemeral()
		return nil, fmt.Errorf("natsjs: subscribe to %q: %w", topicName, err)
	}
	s.slots = make(chan struct{}, s.concurrency)
	s.stopCtx, s.stopFetch = context.WithCancel(context.Background())
	s.loopDone = make(chan struct{})
	go s.loop()

	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		_ = s.stop()
		return nil, fmt.Errorf("natsjs: subscribe to %q: %w", topicName, async.ErrClosed)
	}
	sub.subs[s] = struct{}{}
	sub.mu.Unlock()
	return s, nil
}

func (sub *Subscriber) consumerConfig(topic string, sc async.SubscriberConfig) jetstream.ConsumerConfig {
	ackWait := sc.AckWait
	if ackWait == 0 {
		ackWait = sub.cfg.AckWait
	}
	redeliveries := sc.MaxRedeliveries
	if redeliveries == 0 {
		redeliveries = sub.cfg.MaxRedeliveries
	}
	maxDeliver := -1
	if redeliveries > 0 {
		maxDeliver = redeliveries + 1
	}
	maxAckPending := sub.cfg.MaxAckPending
	if maxAckPending < 0 {
		maxAckPending = -1
	}
	return jetstream.ConsumerConfig{
		FilterSubject: topic,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: maxAckPending,
	}
}

func (sub *Subscriber) isClosed() bool {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return sub.closed
}

// Close unsubscribes every subscription, waiting for their handlers in
// flight, and makes later Subscribe calls fail with [async.ErrClosed]. It
// does not close the NATS connection. Calling it again returns nil.
func (sub *Subscriber) Close() error {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return nil
	}
	sub.closed = true
	subs := make([]*subscription, 0, len(sub.subs))
	for s := range sub.subs {
		subs = append(subs, s)
	}
	sub.mu.Unlock()
	var errs []error
	for _, s := range subs {
		errs = append(errs, s.Unsubscribe())
	}
	return errors.Join(errs...)
}

// subscription is one handler's consumption of a topic.
type subscription struct {
	sub         *Subscriber
	topic       string
	group       string
	stream      string
	consumer    string
	ephemeral   bool
	handler     async.MessageHandler
	hctx        context.Context
	delay       time.Duration
	concurrency int
	cc          jetstream.ConsumerConfig

	// cons is the consumer handle; only the loop uses it after Subscribe.
	cons      jetstream.Consumer
	slots     chan struct{} // one per handler running or message being fetched
	wg        sync.WaitGroup
	stopCtx   context.Context
	stopFetch context.CancelFunc
	loopDone  chan struct{}

	advisories   []*nats.Subscription
	dlMu         sync.Mutex
	dlClosed     bool
	dlWG         sync.WaitGroup
	dlCtx        context.Context
	dlCancel     context.CancelFunc
	streamHandle jetstream.Stream
	// reportMu makes OnDeadLetter run one call at a time per subscription.
	reportMu sync.Mutex

	once sync.Once
}

// createConsumer creates the subscription's consumer, or updates it to the
// subscription's options when it exists.
func (s *subscription) createConsumer(ctx context.Context) error {
	var cons jetstream.Consumer
	var err error
	if s.ephemeral {
		cons, err = s.sub.js.CreateConsumer(ctx, s.stream, s.cc)
	} else {
		cons, err = s.sub.js.CreateOrUpdateConsumer(ctx, s.stream, s.cc)
	}
	if err != nil {
		return fmt.Errorf("create consumer %s on stream %s: %w", s.consumer, s.stream, err)
	}
	s.cons = cons
	return nil
}

// loop pulls messages until Unsubscribe. Each pull request asks for as many
// messages as there are free handler slots, so no message waits in the
// client for a handler while its ack wait runs. A request ends when it got
// its messages or after PullWait; the next one starts only then, so a
// request the server lost costs at most PullWait.
func (s *subscription) loop() {
	defer close(s.loopDone)
	var backoff time.Duration
	for {
		// Wait for a free slot, then take every free slot.
		select {
		case s.slots <- struct{}{}:
		case <-s.stopCtx.Done():
			return
		}
		n := 1
	take:
		for n < s.concurrency {
			select {
			case s.slots <- struct{}{}:
				n++
			default:
				break take
			}
		}
		got, err := s.fetch(n)
		s.release(n - got)
		if s.stopCtx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 0
			continue
		}
		s.sub.log.Warn("natsjs: pull", "topic", s.topic, "stream", s.stream, "consumer", s.consumer, "error", err)
		backoff = min(max(2*backoff, 100*time.Millisecond), s.sub.cfg.PullWait)
		select {
		case <-time.After(backoff):
		case <-s.stopCtx.Done():
			return
		}
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
			errors.Is(err, jetstream.ErrNoHeartbeat) || errors.Is(err, nats.ErrNoResponders) {
			s.recreate()
		}
	}
}

// fetch runs one pull request for up to n messages and hands them to
// handlers. It returns how many messages it got (each holding a slot until
// its handler returns) and the request's error, nil when it just expired.
func (s *subscription) fetch(n int) (int, error) {
	ctx, cancel := context.WithTimeout(s.stopCtx, s.sub.cfg.PullWait)
	defer cancel()
	// The server sends heartbeats while the request waits; without them
	// (the consumer is gone, or the request was lost) the fetch ends with
	// ErrNoHeartbeat after two heartbeat intervals.
	batch, err := s.cons.Fetch(n, jetstream.FetchContext(ctx), jetstream.FetchHeartbeat(s.sub.cfg.PullWait/4))
	if err != nil {
		return 0, err
	}
	got := 0
	for jm := range batch.Messages() {
		got++
		if s.stopCtx.Err() != nil {
			// Fetched after Unsubscribe began: hand it straight back.
			_ = jm.Nak()
			s.release(1)
			continue
		}
		in := s.incoming(jm)
		if s.concurrency == 1 {
			s.handle(in)
			s.release(1)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.release(1)
			s.handle(in)
		}()
	}
	err = batch.Error()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
		err = nil
	}
	return got, err
}

// recreate creates the consumer again after the server lost it (an
// ephemeral consumer past its inactive threshold, a deleted durable).
func (s *subscription) recreate() {
	ctx, cancel := context.WithTimeout(s.stopCtx, s.sub.requestTimeout)
	defer cancel()
	if _, err := s.cons.Info(ctx); err == nil || !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return
	}
	if err := s.createConsumer(ctx); err != nil {
		s.sub.log.Warn("natsjs: recreate consumer", "topic", s.topic, "error", err)
		return
	}
	s.sub.log.Info("natsjs: recreated consumer", "topic", s.topic, "stream", s.stream, "consumer", s.consumer)
}

func (s *subscription) release(n int) {
	for range n {
		<-s.slots
	}
}

func (s *subscription) incoming(jm jetstream.Msg) *incoming {
	in := &incoming{
		receivedAt:  time.Now(),
		jm:          jm,
		delay:       s.delay,
		confirmAcks: s.sub.cfg.ConfirmAcks,
		s:           s,
		running:     true,
	}
	var stored time.Time
	if md, err := jm.Metadata(); err == nil {
		in.stream, in.seq, in.delivered, stored = md.Stream, md.Sequence.Stream, md.NumDelivered, md.Timestamp
	}
	in.envelope = fromNats(jm.Subject(), jm.Headers(), jm.Data(), in.stream, in.seq, stored)
	return in
}

// handle calls the handler, under recover, and settles the delivery: a
// message the handler killed becomes a dead letter with the handler's
// error; a failure of the last delivery the consumer allows terminates the
// message and makes it a dead letter with the error (a NAck would leave the
// server to report it, without the error); any other failure NAcks it; nil
// acks it. The first settlement counts: a handler that settled the delivery
// itself is left as it is.
func (s *subscription) handle(in *incoming) {
	err := async.HandleSafely(s.hctx, s.handler, in)
	if in.handlerReturned() {
		s.deadLetter(in, DeadLetterTerminated, err)
		return
	}
	if err == nil {
		if aerr := in.Ack(); aerr != nil {
			s.sub.log.Warn("natsjs: ack", "topic", s.topic, "id", in.id, "error", aerr)
		}
		return
	}
	level := slog.LevelDebug
	if perr := (*async.PanicError)(nil); errors.As(err, &perr) {
		level = slog.LevelError
	}
	s.sub.log.Log(s.hctx, level, "natsjs: handler failed", "topic", s.topic, "group", s.group,
		"id", in.id, "delivery", in.delivered, "error", err)
	if limit := s.cc.MaxDeliver; limit > 0 && in.delivered >= uint64(limit) {
		termed, terr := in.settleOnce("term", in.jm.Term)
		switch {
		case terr != nil:
			// The server reports the message when its ack wait ends.
			s.sub.log.Warn("natsjs: term after the last delivery failed", "topic", s.topic, "id", in.id, "handler_error", err, "error", terr)
		case termed:
			s.deadLetter(in, DeadLetterMaxDeliveries, err)
		}
		return
	}
	if nerr := in.NAck(); nerr != nil {
		s.sub.log.Warn("natsjs: nak after handler error", "topic", s.topic, "id", in.id, "handler_error", err, "error", nerr)
	}
}

// Unsubscribe stops the consumer, waits for the handlers in flight, stops
// watching dead-letter advisories and, for a private subscription, deletes
// its ephemeral consumer (a group's durable consumer stays). Messages that
// reach the subscription after Unsubscribe began are not handled: they are
// NAcked at once, so another member of the group gets them without waiting
// for their ack wait (or, if they arrive while the pull ends, redelivered
// after it). Calling it again returns nil. A handler must not call Unsubscribe of its
// own subscription: it would wait for itself.
func (s *subscription) Unsubscribe() error {
	var err error
	first := false
	s.once.Do(func() {
		first = true
		s.sub.mu.Lock()
		delete(s.sub.subs, s)
		s.sub.mu.Unlock()
		err = s.stop()
	})
	if !first {
		return nil
	}
	return err
}

func (s *subscription) stop() error {
	s.stopFetch()
	<-s.loopDone
	s.wg.Wait()
	s.stopAdvisories()
	return s.deleteEphemeral()
}

// deleteEphemeral deletes the consumer of a private subscription when the
// connection is up (otherwise the server removes it after
// EphemeralInactiveThreshold).
func (s *subscription) deleteEphemeral() error {
	s.dlCancel()
	if nc := s.sub.js.Conn(); !s.ephemeral || !nc.IsConnected() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.sub.requestTimeout)
	defer cancel()
	err := s.sub.js.DeleteConsumer(ctx, s.stream, s.consumer)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("natsjs: unsubscribe from %q: delete consumer %s/%s: %w", s.topic, s.stream, s.consumer, err)
	}
	return nil
}

// randomToken returns 16 random hex digits.
func randomToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return hex.EncodeToString(b[:])
}
