package brokertest_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/brokertest"
	"github.com/transmanager/transmanager/async/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestRunWithHarnessOptions runs the suite on the memory broker with every
// Harness field set: a custom topic namer, dead letters and shorter timing.
func TestRunWithHarnessOptions(t *testing.T) {
	b := memory.New(memory.Config{})
	t.Cleanup(func() { _ = b.Close() })

	var mu sync.Mutex
	topics := map[string]bool{}
	var n atomic.Int64
	brokertest.Run(t, brokertest.Harness{
		New: func(*testing.T) (async.MessagePublisher, async.MessageSubscriber) { return b, b },
		Topic: func(t *testing.T) string {
			name := fmt.Sprintf("custom.topic.%d", n.Add(1))
			mu.Lock()
			defer mu.Unlock()
			if topics[name] {
				t.Fatalf("topic %q handed out twice", name)
			}
			topics[name] = true
			return name
		},
		DeadLetters: func(_ *testing.T, topic string) []string {
			var ids []string
			for _, dl := range b.DeadLetters(topic) {
				ids = append(ids, dl.Message.ID())
			}
			return ids
		},
		Timing: brokertest.Timing{AckWait: 300 * time.Millisecond, RedeliveryDelay: 30 * time.Millisecond},
	})
}
