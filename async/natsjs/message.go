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

	mu      sync.Mutex
	settled bool
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

// Kill terminates the delivery: JetStream does not redeliver it and emits a
// MSG_TERMINATED advisory, which the subscriber turns into a dead letter.
func (m *incoming) Kill() error {
	return m.settle("term", m.jm.Term)
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
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.settled {
		return nil
	}
	if err := fn(); err != nil {
		return fmt.Errorf("natsjs: %s %s: %w", op, m.id, err)
	}
	m.settled = true
	return nil
}

func (m *incoming) isSettled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.settled
}
