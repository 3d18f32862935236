package natsjs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// incoming is a JetStream delivery handed to a handler.
type incoming struct {
	envelope
	receivedAt  time.Time
	jm          jetstream.Msg
	delay       time.Duration
	confirmAcks bool

	s *subscription
	// stream, seq and delivered are the delivery's JetStream metadata:
	// where the message is and how many times it was delivered.
	stream    string
	seq       uint64
	delivered uint64

	mu      sync.Mutex
	settled bool
	// running is set while the handler runs; killed is set by a Kill
	// during that time, whose dead letter is recorded when the handler
	// returns, with its error.
	running, killed bool
}

var _ async.IncomingMessage = (*incoming)(nil)

func (m *incoming) ReceivedAt() time.Time { return m.receivedAt }

// Ack acks the delivery (confirmed by the server with DoubleAck when
// [SubscriberConfig.ConfirmAcks] is set). Like NAck and Kill, it does
// nothing and returns nil once the delivery was settled.
func (m *incoming) Ack() error {
	return m.settle("ack", func() error {
		if m.confirmAcks {
			return m.jm.DoubleAck(context.Background())
		}
		return m.jm.Ack()
	})
}

// NAck asks for a redelivery after the subscription's redelivery delay.
func (m *incoming) NAck() error {
	return m.settle("nak", func() error {
		if m.delay > 0 {
			return m.jm.NakWithDelay(m.delay)
		}
		return m.jm.Nak()
	})
}

// Kill terminates the delivery (a JetStream Term): JetStream does not
// redeliver it, and the subscriber records it as a dead letter. Called while
// the delivery's handler runs, the dead letter is recorded when the handler
// returns, with the handler's error as [DeadLetter.HandlerErr].
func (m *incoming) Kill() error {
	m.mu.Lock()
	if m.settled {
		m.mu.Unlock()
		return nil
	}
	if err := m.jm.Term(); err != nil {
		m.mu.Unlock()
		return fmt.Errorf("natsjs: term %s: %w", m.id, err)
	}
	m.settled = true
	m.killed = m.running
	running := m.running
	m.mu.Unlock()
	if !running {
		m.s.deadLetter(m, DeadLetterTerminated, nil)
	}
	return nil
}

// handlerReturned records that the handler returned and reports whether it
// killed the message meanwhile.
func (m *incoming) handlerReturned() (killed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = false
	return m.killed
}

// Extend tells the server the message is in progress, which restarts its
// ack wait. It does nothing once the delivery was settled.
func (m *incoming) Extend() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settled {
		return nil
	}
	if err := m.jm.InProgress(); err != nil {
		return fmt.Errorf("natsjs: extend %s: %w", m.id, err)
	}
	return nil
}

func (m *incoming) settle(op string, fn func() error) error {
	_, err := m.settleOnce(op, fn)
	return err
}

// settleOnce runs fn unless the delivery was settled, and reports whether
// this call settled it.
func (m *incoming) settleOnce(op string, fn func() error) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settled {
		return false, nil
	}
	if err := fn(); err != nil {
		return false, fmt.Errorf("natsjs: %s %s: %w", op, m.id, err)
	}
	m.settled = true
	return true, nil
}

func (m *incoming) isSettled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settled
}
