package storetest

import (
	"sync"
	"time"

	"github.com/transmanager/transmanager/async"
)

// incoming is an async.IncomingMessage whose settle calls are counted, so
// the suite can check that a store does not settle what it saves.
type incoming struct {
	async.Message
	received time.Time

	mu                          sync.Mutex
	acks, nacks, extends, kills int
}

func newIncoming(topic string) *incoming {
	return &incoming{Message: newMsg(topic, ""), received: time.Now()}
}

func (m *incoming) ReceivedAt() time.Time { return m.received }

func (m *incoming) Ack() error    { return m.count(&m.acks) }
func (m *incoming) NAck() error   { return m.count(&m.nacks) }
func (m *incoming) Extend() error { return m.count(&m.extends) }
func (m *incoming) Kill() error   { return m.count(&m.kills) }

func (m *incoming) count(n *int) error {
	m.mu.Lock()
	*n++
	m.mu.Unlock()
	return nil
}

// settled reports how many settle calls the message received.
func (m *incoming) settled() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acks + m.nacks + m.extends + m.kills
}

var _ async.IncomingMessage = (*incoming)(nil)
