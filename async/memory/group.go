package memory

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/transmanager/transmanager/async"
)

// entryState is where a message stands in its group.
type entryState uint8

const (
	// queued: waiting in one of the group's queues for a worker.
	queued entryState = iota
	// inFlight: handed to a handler, with an ack deadline timer.
	inFlight
	// delayed: waiting for its redelivery timer.
	delayed
	// done: acked, killed, dead or dropped; never delivered again.
	done
)

// entry is one message in one group. Its fields are guarded by the group's
// mutex.
type entry struct {
	msg        async.Message
	state      entryState
	deliveries int
	// cfg holds the options of the subscription that delivered it last.
	cfg   settings
	timer *time.Timer
	// token identifies the armed timer; a callback whose token is stale
	// does nothing.
	token uint64
}

// group is a consumer group of one topic: its subscriptions' workers
// compete for its messages.
type group struct {
	b     *Broker
	topic string
	name  string
	key   string

	mu   sync.Mutex
	cond sync.Cond
	subs int
	// closed: the broker is closed or the private group ended; nothing is
	// delivered or timed any more.
	closed bool
	// retries holds redeliveries, served before fresh messages.
	retries queue
	fresh   queue
	// armed holds the entries with a running timer, to stop on close.
	armed map[*entry]struct{}
}

func newGroup(b *Broker, topicName, name, key string) *group {
	g := &group{b: b, topic: topicName, name: name, key: key, armed: make(map[*entry]struct{})}
	g.cond.L = &g.mu
	return g
}

// enqueue adds a newly published message.
func (g *group) enqueue(msg async.Message) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.fresh.push(&entry{msg: msg})
	g.cond.Signal()
}

// next blocks until a message is ready for s and returns its delivery, or
// returns nil once s is stopped or the group closed.
func (g *group) next(s *subscription) *delivery {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		if s.stopped || g.closed {
			return nil
		}
		if e := g.pop(); e != nil {
			e.state = inFlight
			e.deliveries++
			e.cfg = s.cfg
			g.arm(e, s.cfg.ackWait, g.onAckWait)
			return newDelivery(g, e, g.b.now())
		}
		g.cond.Wait()
	}
}

// pop returns the next queued entry, redeliveries first, skipping entries
// settled while they waited.
func (g *group) pop() *entry {
	for _, q := range []*queue{&g.retries, &g.fresh} {
		for e := q.pop(); e != nil; e = q.pop() {
			if e.state == queued {
				return e
			}
		}
	}
	return nil
}

// arm starts e's timer, replacing any running one; fn runs after d unless
// the timer is disarmed or re-armed first.
func (g *group) arm(e *entry, d time.Duration, fn func(*entry, uint64)) {
	g.disarm(e)
	token := e.token
	e.timer = time.AfterFunc(d, func() { fn(e, token) })
	g.armed[e] = struct{}{}
}

// disarm stops e's timer and makes a callback already on its way stale.
func (g *group) disarm(e *entry) {
	e.token++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
		delete(g.armed, e)
	}
}

// onAckWait runs when a delivery's ack deadline passes.
func (g *group) onAckWait(e *entry, token uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.token != token || e.state != inFlight || g.closed {
		return
	}
	g.retry(e, "ack wait expired", nil, true)
}

// onRedeliver runs when a redelivery delay ends.
func (g *group) onRedeliver(e *entry, token uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if e.token != token || e.state != delayed || g.closed {
		return
	}
	g.disarm(e)
	g.requeue(e)
}

// retry hands e back for another delivery (at once, or after the
// redelivery delay), or to the dead letters when it has no redelivery left;
// err is the handler's error, nil when the delivery failed otherwise.
func (g *group) retry(e *entry, reason string, err error, now bool) {
	g.disarm(e)
	if limit := e.cfg.maxRedeliveries; limit >= 0 && e.deliveries > limit {
		g.kill(e, fmt.Sprintf("exceeded %d redeliveries: %s", limit, reason), err)
		return
	}
	switch {
	case g.closed:
		e.state = done
	case now || e.cfg.delay <= 0:
		g.requeue(e)
	default:
		e.state = delayed
		g.arm(e, e.cfg.delay, g.onRedeliver)
	}
}

func (g *group) requeue(e *entry) {
	e.state = queued
	g.retries.push(e)
	g.cond.Signal()
}

// finish settles e for good.
func (g *group) finish(e *entry) {
	g.disarm(e)
	e.state = done
}

// kill settles e for good and records it as a dead letter with the
// handler's error err.
func (g *group) kill(e *entry, reason string, err error) {
	g.finish(e)
	g.deadLetter(e, reason, err)
}

func (g *group) deadLetter(e *entry, reason string, err error) {
	g.b.addDeadLetter(DeadLetter{
		Message:    e.msg,
		Topic:      g.topic,
		Group:      g.name,
		Reason:     reason,
		HandlerErr: err,
		Deliveries: e.deliveries,
		At:         g.b.now(),
	})
}

// handled settles d after its handler returned err: a message the handler
// killed goes to the dead letters with err; otherwise, unless the handler
// settled d itself, nil acks it and an error asks for a redelivery.
func (g *group) handled(d *delivery, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	d.running = false
	if d.killed {
		g.deadLetter(d.e, "killed", err)
		return
	}
	if d.settled {
		return
	}
	d.settled = true
	switch {
	case err == nil:
		if d.e.state != done {
			g.finish(d.e)
		}
	case d.e.state == inFlight && d.e.deliveries == d.gen:
		g.retry(d.e, "handler error: "+firstLine(err.Error()), err, false)
	}
}

// firstLine returns s up to its first line break.
func firstLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// ack settles d's message as processed, unless d was settled already. A
// delivery whose ack wait passed still acks its message when no other
// delivery settled it first.
func (g *group) ack(d *delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d.settled {
		return
	}
	d.settled = true
	if d.e.state != done {
		g.finish(d.e)
	}
}

// killDelivery settles d's message as unprocessable, unless d was settled
// already or another delivery settled the message. While d's handler runs,
// the dead letter waits for it to return, so it keeps the handler's error.
func (g *group) killDelivery(d *delivery) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d.settled {
		return
	}
	d.settled = true
	if d.e.state == done {
		return
	}
	if d.running {
		g.finish(d.e)
		d.killed = true
		return
	}
	g.kill(d.e, "killed", nil)
}

// nack asks for a redelivery of d's message, unless d was settled already
// or is no longer the message's current delivery.
func (g *group) nack(d *delivery, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if d.settled {
		return
	}
	d.settled = true
	if d.e.state != inFlight || d.e.deliveries != d.gen {
		return
	}
	g.retry(d.e, reason, nil, false)
}

// extend pushes back the ack deadline of d's message.
func (g *group) extend(d *delivery) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return fmt.Errorf("memory: extend message %s: %w", d.id, async.ErrClosed)
	case d.settled || d.e.state != inFlight || d.e.deliveries != d.gen:
		return fmt.Errorf("memory: extend message %s: %w", d.id, ErrNotInFlight)
	}
	g.arm(d.e, d.e.cfg.ackWait, g.onAckWait)
	return nil
}

// shut stops deliveries and timers; the caller holds g.mu.
func (g *group) shut() {
	g.closed = true
	for e := range g.armed {
		g.disarm(e)
	}
	g.cond.Broadcast()
}

// close shuts the group for the broker's Close.
func (g *group) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shut()
}

// queue is a FIFO of entries.
type queue struct {
	items []*entry
	head  int
}

func (q *queue) push(e *entry) { q.items = append(q.items, e) }

func (q *queue) pop() *entry {
	if q.head == len(q.items) {
		return nil
	}
	e := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head >= 256 && 2*q.head >= len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return e
}
