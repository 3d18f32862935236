package memory

import (
	"maps"
	"time"

	"github.com/transmanager/transmanager/async"
)

// delivery is one delivery of a message to a handler. It owns copies of the
// message's metadata and payload, so a handler that changes them affects
// neither other groups nor later deliveries.
type delivery struct {
	id, subject, name string
	md                async.Metadata
	sentAt            time.Time
	data              []byte
	receivedAt        time.Time

	g *group
	e *entry
	// gen is e.deliveries when this delivery was made.
	gen int
	// settled is guarded by g.mu: the first of Ack, NAck and Kill (or the
	// automatic settlement after the handler returns) wins.
	settled bool
	// running (guarded by g.mu) is set while the handler runs; killed is
	// set by a Kill during that time, whose dead letter is recorded when
	// the handler returns.
	running, killed bool
}

var _ async.IncomingMessage = (*delivery)(nil)

func newDelivery(g *group, e *entry, receivedAt time.Time) *delivery {
	md := maps.Clone(e.msg.Metadata())
	if md == nil {
		md = async.Metadata{}
	}
	return &delivery{
		id:         e.msg.ID(),
		subject:    g.topic,
		name:       e.msg.MessageName(),
		md:         md,
		sentAt:     e.msg.SentAt(),
		data:       append([]byte(nil), e.msg.Data()...),
		receivedAt: receivedAt,
		g:          g,
		e:          e,
		gen:        e.deliveries,
		running:    true,
	}
}

// ID returns the message's ID.
func (d *delivery) ID() string { return d.id }

// Subject returns the topic the message was published to.
func (d *delivery) Subject() string { return d.subject }

// MessageName returns the message's name.
func (d *delivery) MessageName() string { return d.name }

// Metadata returns this delivery's copy of the message's metadata.
func (d *delivery) Metadata() async.Metadata { return d.md }

// SentAt returns when the producer created the message.
func (d *delivery) SentAt() time.Time { return d.sentAt }

// Data returns this delivery's copy of the payload.
func (d *delivery) Data() []byte { return d.data }

// ReceivedAt returns when this delivery was made, by [Config.Now].
func (d *delivery) ReceivedAt() time.Time { return d.receivedAt }

// Ack settles the message as processed. It always returns nil.
func (d *delivery) Ack() error {
	d.g.ack(d)
	return nil
}

// NAck asks for a redelivery after the redelivery delay. It always returns
// nil; it does nothing when this delivery was settled already or its ack
// wait passed.
func (d *delivery) NAck() error {
	d.g.nack(d, "nacked")
	return nil
}

// Extend pushes the ack deadline back by the subscription's ack wait. It
// fails with [ErrNotInFlight] when this delivery was settled or its ack wait
// passed, and with [async.ErrClosed] after the broker's Close.
func (d *delivery) Extend() error { return d.g.extend(d) }

// Kill settles the message as unprocessable and records it in the dead
// letters. Called while the delivery's handler runs, the dead letter is
// recorded when the handler returns, with the handler's error as
// [DeadLetter.HandlerErr]. It always returns nil; it does nothing when this
// delivery or another one settled the message already.
func (d *delivery) Kill() error {
	d.g.killDelivery(d)
	return nil
}
