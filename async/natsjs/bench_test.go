package natsjs_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/natsjs"
)

// benchTopic creates a file-backed stream of its own for a benchmark.
func benchTopic(b *testing.B, js jetstream.JetStream) string {
	b.Helper()
	suffix := randSuffix()
	topic := "txmbench." + suffix
	name := "TXMBENCH_" + suffix
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := natsjs.EnsureStream(ctx, js, jetstream.StreamConfig{
		Name: name, Subjects: []string{topic}, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	}); err != nil {
		b.Fatalf("create stream: %v", err)
	}
	b.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	return topic
}

// benchMessages returns n messages of 256-byte payloads for topic.
func benchMessages(topic string, n int) []async.Message {
	payload := make([]byte, 256)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = async.NewMessage(topic, "Bench", payload,
			async.WithMetadata(async.Metadata{async.MetaContentType: "application/octet-stream"}))
	}
	return msgs
}

// BenchmarkPublishSync publishes one message at a time, each waiting for
// its PubAck. One op is one message.
func BenchmarkPublishSync(b *testing.B) {
	_, js := setup(b)
	topic := benchTopic(b, js)
	pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{})
	msgs := benchMessages(topic, b.N)
	ctx := context.Background()
	b.SetBytes(256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := pub.Publish(ctx, topic, msgs[i]); err != nil {
			b.Fatalf("Publish: %v", err)
		}
	}
}

// BenchmarkPublishBatch publishes batches with PublishBatch. One op is one
// message, so the results compare with BenchmarkPublishSync directly.
func BenchmarkPublishBatch(b *testing.B) {
	for _, size := range []int{100, 500} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			_, js := setup(b)
			topic := benchTopic(b, js)
			pub := natsjs.NewPublisher(js, natsjs.PublisherConfig{MaxPending: size})
			msgs := benchMessages(topic, b.N)
			ctx := context.Background()
			b.SetBytes(256)
			b.ReportAllocs()
			b.ResetTimer()
			for start := 0; start < b.N; start += size {
				batch := msgs[start:min(start+size, b.N)]
				errs, err := pub.PublishBatch(ctx, batch)
				if err != nil {
					b.Fatalf("PublishBatch: %v", err)
				}
				for i, e := range errs {
					if e != nil {
						b.Fatalf("PublishBatch message %d: %v", start+i, e)
					}
				}
			}
		})
	}
}
