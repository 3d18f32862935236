package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/transmanager/transmanager/async"
)

// Defaults of [Config] and of subscriptions that leave an option zero.
const (
	// DefaultAckWait is how long a delivered message may stay unsettled
	// before it is redelivered.
	DefaultAckWait = 30 * time.Second
	// DefaultRedeliveryDelay is how long a NAcked or failed message waits
	// before its next delivery.
	DefaultRedeliveryDelay = 100 * time.Millisecond
	// DefaultMaxRedeliveries is how many times a message is redelivered
	// after its first delivery before it goes to the dead letters.
	DefaultMaxRedeliveries = 10
)

// ErrNotInFlight is returned by Extend when the delivery it is called on no
// longer holds the message: the message was settled, or its ack wait passed
// and it was handed back for redelivery. Check it with errors.Is.
var ErrNotInFlight = errors.New("memory: message not in flight")

// Config configures a [Broker]. The zero value is ready to use.
type Config struct {
	// AckWait is how long a delivered message may stay unsettled before it
	// is delivered again, for subscriptions that do not set
	// [async.AckWait]. Zero or negative means [DefaultAckWait] (30s).
	AckWait time.Duration
	// RedeliveryDelay is how long a NAcked or failed message waits before
	// its next delivery, for subscriptions that do not set
	// [async.RedeliveryDelay]. Zero means [DefaultRedeliveryDelay] (100ms);
	// negative means no delay.
	RedeliveryDelay time.Duration
	// MaxRedeliveries is how many times a message is redelivered after its
	// first delivery before it goes to the dead letters, for subscriptions
	// that do not set [async.MaxRedeliveries]. Zero means
	// [DefaultMaxRedeliveries] (10); negative means no limit.
	MaxRedeliveries int
	// Now is the clock for [async.IncomingMessage.ReceivedAt] and
	// [DeadLetter.At]. Nil means [time.Now]. Ack waits and redelivery
	// delays always run on real timers.
	Now func() time.Time
	// Logger receives a debug record for each handler error and a warning
	// for each dead letter. Nil discards them.
	Logger *slog.Logger
}

// DeadLetter is a message that the broker gave up on.
type DeadLetter struct {
	// Message is the message as it was published.
	Message async.Message
	// Topic is the topic it was published to.
	Topic string
	// Group is the consumer group that gave up on it; "" for a private
	// subscription.
	Group string
	// Reason says why: "killed" for [async.IncomingMessage.Kill], or the
	// exceeded redelivery limit followed by the last failure (the first
	// line of the handler's error, "ack wait expired" or "nacked").
	Reason string
	// HandlerErr is the error the handler of the last delivery returned:
	// the failure that used up the last redelivery, or, for a message
	// killed by its handler, what the handler returned after Kill (a
	// decode error of a typed inbox, for example). A handler that panicked
	// left an [*async.PanicError]. nil when the last delivery's handler
	// returned nil or did not return within its ack wait.
	HandlerErr error
	// Deliveries is how many times the group delivered the message.
	Deliveries int
	// At is when the message went to the dead letters, by [Config.Now].
	At time.Time
}

// settings are the resolved delivery options of one subscription.
type settings struct {
	ackWait time.Duration
	// delay <= 0 redelivers at once.
	delay time.Duration
	// maxRedeliveries < 0 means no limit.
	maxRedeliveries int
}

// Broker is an in-process message broker. It implements
// [async.MessagePublisher] and [async.MessageSubscriber]; see the package
// documentation for its delivery semantics. A Broker is safe for
// concurrent use. Create one with [New] and stop it with [Broker.Close].
type Broker struct {
	defaults settings
	now      func() time.Time
	log      *slog.Logger

	mu          sync.RWMutex
	closed      bool
	topics      map[string]*topic
	subs        map[*subscription]struct{}
	nextPrivate uint64

	workers sync.WaitGroup

	deadMu sync.Mutex
	dead   map[string][]DeadLetter
}

// topic holds the groups subscribed to one topic, keyed by group name
// (private groups get a key no group name can take).
type topic struct {
	groups map[string]*group
}

// New returns a running broker configured by cfg.
func New(cfg Config) *Broker {
	b := &Broker{
		defaults: settings{
			ackWait:         cfg.AckWait,
			delay:           cfg.RedeliveryDelay,
			maxRedeliveries: cfg.MaxRedeliveries,
		},
		now:    cfg.Now,
		log:    cfg.Logger,
		topics: make(map[string]*topic),
		subs:   make(map[*subscription]struct{}),
		dead:   make(map[string][]DeadLetter),
	}
	if b.defaults.ackWait <= 0 {
		b.defaults.ackWait = DefaultAckWait
	}
	if b.defaults.delay == 0 {
		b.defaults.delay = DefaultRedeliveryDelay
	}
	switch {
	case b.defaults.maxRedeliveries == 0:
		b.defaults.maxRedeliveries = DefaultMaxRedeliveries
	case b.defaults.maxRedeliveries < 0:
		b.defaults.maxRedeliveries = -1
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	return b
}

// resolve fills the zero options of cfg from the broker's defaults.
func (b *Broker) resolve(cfg async.SubscriberConfig) settings {
	s := b.defaults
	if cfg.AckWait > 0 {
		s.ackWait = cfg.AckWait
	}
	if cfg.RedeliveryDelay > 0 {
		s.delay = cfg.RedeliveryDelay
	}
	switch {
	case cfg.MaxRedeliveries > 0:
		s.maxRedeliveries = cfg.MaxRedeliveries
	case cfg.MaxRedeliveries < 0:
		s.maxRedeliveries = -1
	}
	return s
}

// Publish hands a copy of msg to every group subscribed to topicName and
// returns; it does not wait for handlers. The delivered message's Subject
// is topicName. With no group on the topic the message is dropped. Publish
// fails with the context's error when ctx is done, and with an error
// matching [async.ErrClosed] after [Broker.Close].
func (b *Broker) Publish(ctx context.Context, topicName string, msg async.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory: publish to %q: %w", topicName, err)
	}
	if msg == nil {
		return fmt.Errorf("memory: publish to %q: nil message", topicName)
	}
	if topicName == "" {
		return fmt.Errorf("memory: publish message %s: empty topic name", msg.ID())
	}
	stored := async.Clone(msg)

	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return fmt.Errorf("memory: publish to %q: %w", topicName, async.ErrClosed)
	}
	if t := b.topics[topicName]; t != nil {
		for _, g := range t.groups {
			g.enqueue(stored)
		}
	}
	return nil
}

// Subscribe starts delivering the messages published to topicName from now
// on to handler, with the options opts (see [async.SubscriberConfig]; zero
// options take the broker's [Config]). It starts Concurrency handler
// goroutines (one when 0). ctx bounds the call only: handlers receive a
// context that keeps ctx's values, is not cancelled with ctx, is
// cancelled by [Broker.Close], and carries the subscription's group
// ([async.GroupFromContext]; none for a private subscription), which
// txm.InboxHandler checks against its inbox's. Subscribe fails on invalid options, and
// with an error matching [async.ErrClosed] after Close.
//
// The subscription's Unsubscribe stops its deliveries and waits for its
// handlers in flight to return; their messages are settled as usual, so a
// failed one is redelivered to the group's other or next subscription. A
// private subscription's undelivered messages are dropped. Calling
// Unsubscribe again returns nil. It must not be called from the
// subscription's own handler: it would wait for itself.
func (b *Broker) Subscribe(ctx context.Context, topicName string, handler async.MessageHandler, opts ...async.SubscriberOption) (async.Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memory: subscribe to %q: %w", topicName, err)
	}
	if topicName == "" {
		return nil, errors.New("memory: subscribe: empty topic name")
	}
	if handler == nil {
		return nil, fmt.Errorf("memory: subscribe to %q: nil handler", topicName)
	}
	cfg, err := async.NewSubscriberConfig(opts...)
	if err != nil {
		return nil, fmt.Errorf("memory: subscribe to %q: %w", topicName, err)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("memory: subscribe to %q: %w", topicName, async.ErrClosed)
	}
	t := b.topics[topicName]
	if t == nil {
		t = &topic{groups: make(map[string]*group)}
		b.topics[topicName] = t
	}
	key := cfg.GroupName
	if key == "" {
		b.nextPrivate++
		key = "\x00private-" + strconv.FormatUint(b.nextPrivate, 10)
	}
	g := t.groups[key]
	if g == nil {
		g = newGroup(b, topicName, cfg.GroupName, key)
		t.groups[key] = g
	}

	hctx, cancel := context.WithCancel(async.WithGroup(context.WithoutCancel(ctx), cfg.GroupName))
	s := &subscription{b: b, g: g, handler: handler, cfg: b.resolve(cfg), ctx: hctx, cancel: cancel}
	g.mu.Lock()
	g.subs++
	g.mu.Unlock()
	b.subs[s] = struct{}{}

	n := max(cfg.Concurrency, 1)
	s.wg.Add(n)
	b.workers.Add(n)
	for range n {
		go s.work()
	}
	return s, nil
}

// DeadLetters returns the messages of topicName that went to the dead
// letters, oldest first: killed, or out of redeliveries. It returns copies,
// and still works after Close. Dead letters are kept for the broker's
// lifetime.
func (b *Broker) DeadLetters(topicName string) []DeadLetter {
	b.deadMu.Lock()
	defer b.deadMu.Unlock()
	src := b.dead[topicName]
	if len(src) == 0 {
		return nil
	}
	out := make([]DeadLetter, len(src))
	for i, dl := range src {
		dl.Message = async.Clone(dl.Message)
		out[i] = dl
	}
	return out
}

func (b *Broker) addDeadLetter(dl DeadLetter) {
	b.deadMu.Lock()
	b.dead[dl.Topic] = append(b.dead[dl.Topic], dl)
	b.deadMu.Unlock()
	b.log.Warn("memory: message went to dead letters",
		"topic", dl.Topic, "group", dl.Group, "id", dl.Message.ID(),
		"deliveries", dl.Deliveries, "reason", dl.Reason, "error", dl.HandlerErr)
}

// Close stops the broker: it stops deliveries and timers, cancels the
// contexts of running handlers, waits for them to return and for every
// goroutine of the broker to end. Messages not yet settled are dropped.
// After Close, Publish and Subscribe fail with [async.ErrClosed]; Ack, NAck
// and Kill still return nil, and Extend fails. Closing again returns nil.
// Close must not be called from a handler: it would wait for itself.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.workers.Wait()
		return nil
	}
	b.closed = true
	var groups []*group
	for _, t := range b.topics {
		for _, g := range t.groups {
			groups = append(groups, g)
		}
	}
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()

	// Stop deliveries first, so a handler failing on its cancelled context
	// gets no redelivery.
	for _, g := range groups {
		g.close()
	}
	for _, s := range subs {
		s.cancel()
	}
	b.workers.Wait()
	return nil
}

// subscription is one handler's subscription; its workers take messages
// from its group.
type subscription struct {
	b       *Broker
	g       *group
	handler async.MessageHandler
	cfg     settings
	ctx     context.Context
	cancel  context.CancelFunc

	// stopped is guarded by g.mu.
	stopped bool
	wg      sync.WaitGroup
	once    sync.Once
}

// Unsubscribe stops deliveries to this subscription and waits for its
// handlers in flight; see [Broker.Subscribe].
func (s *subscription) Unsubscribe() error {
	s.once.Do(s.stop)
	return nil
}

func (s *subscription) stop() {
	b, g := s.b, s.g
	b.mu.Lock()
	delete(b.subs, s)
	g.mu.Lock()
	s.stopped = true
	g.subs--
	if g.subs == 0 && g.name == "" {
		// A private group ends with its subscription.
		g.shut()
		if t := b.topics[g.topic]; t != nil {
			delete(t.groups, g.key)
			if len(t.groups) == 0 {
				delete(b.topics, g.topic)
			}
		}
	}
	g.cond.Broadcast()
	g.mu.Unlock()
	b.mu.Unlock()
	s.wg.Wait()
	s.cancel()
}

// work is one handler goroutine of s.
func (s *subscription) work() {
	defer s.b.workers.Done()
	defer s.wg.Done()
	for {
		d := s.g.next(s)
		if d == nil {
			return
		}
		err := async.HandleSafely(s.ctx, s.handler, d)
		if err != nil {
			level := slog.LevelDebug
			if perr := (*async.PanicError)(nil); errors.As(err, &perr) {
				level = slog.LevelError
			}
			s.b.log.Log(s.ctx, level, "memory: handler failed",
				"topic", s.g.topic, "group", s.g.name, "id", d.id, "delivery", d.gen, "error", err)
		}
		s.g.handled(d, err)
	}
}
