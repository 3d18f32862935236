package natsjs_test

import (
	"sync"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/brokertest"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/internal/testenv"
)

// TestConformance runs the broker conformance suite against the server at
// TXM_NATS_URL, each sub-test on a connection and a stream of its own.
func TestConformance(t *testing.T) {
	url := testenv.URL(t, testenv.NATS)
	_, admin := connect(t, url)

	var mu sync.Mutex
	var subs []*natsjs.Subscriber
	brokertest.Run(t, brokertest.Harness{
		New: func(t *testing.T) (async.MessagePublisher, async.MessageSubscriber) {
			_, js := connect(t, url)
			sub := natsjs.NewSubscriber(js, natsjs.SubscriberConfig{})
			t.Cleanup(func() {
				if err := sub.Close(); err != nil {
					t.Errorf("close subscriber: %v", err)
				}
			})
			mu.Lock()
			subs = append(subs, sub)
			mu.Unlock()
			return natsjs.NewPublisher(js, natsjs.PublisherConfig{}), sub
		},
		Topic: func(t *testing.T) string { return newTopic(t, admin) },
		DeadLetters: func(t *testing.T, topic string) []string {
			mu.Lock()
			defer mu.Unlock()
			var ids []string
			for _, sub := range subs {
				for _, dl := range sub.DeadLetters() {
					if dl.Topic == topic {
						ids = append(ids, dl.ID)
					}
				}
			}
			return ids
		},
	})
}
