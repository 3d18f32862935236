package txm

import (
	"sync"
	"time"

	"github.com/transmanager/transmanager/retry"
)

// breaker backs off topics whose publishes keep failing, so one broken
// topic does not take the relay's workers from the others. After threshold
// consecutive failed publishes a topic is open: its messages are not
// attempted until the cooldown (growing with each opening) has passed.
// Then it is half-open: one more failure opens it again at once, a success
// closes it.
type breaker struct {
	threshold int // 0: disabled
	cooldown  retry.Policy
	mu        sync.Mutex
	topics    map[string]*topicState
}

type topicState struct {
	failures  int       // consecutive failed publishes
	openings  int       // times opened since it last closed
	openUntil time.Time // zero: closed
}

func newBreaker(threshold int, cooldown retry.Policy) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown, topics: map[string]*topicState{}}
}

// openFor reports how long topic stays open from now; 0 means it may be
// attempted.
func (b *breaker) openFor(topic string, now time.Time) time.Duration {
	if b.threshold <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.topics[topic]
	if st == nil || st.openUntil.IsZero() || !now.Before(st.openUntil) {
		return 0
	}
	return st.openUntil.Sub(now)
}

// success closes the topic.
func (b *breaker) success(topic string) {
	if b.threshold <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.topics[topic]; st != nil {
		delete(b.topics, topic)
	}
}

// failure counts a failed publish; it reports the cooldown when the topic
// opens, 0 otherwise.
func (b *breaker) failure(topic string, now time.Time) time.Duration {
	if b.threshold <= 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.topics[topic]
	if st == nil {
		st = &topicState{}
		b.topics[topic] = st
	}
	st.failures++
	if st.failures < b.threshold || now.Before(st.openUntil) {
		return 0
	}
	st.openings++
	d := b.cooldown.Delay(st.openings)
	st.openUntil = now.Add(d)
	st.failures = b.threshold - 1 // half-open after the cooldown
	return d
}
