package memory_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
)

// BenchmarkPublishDeliver measures a message's way from Publish to the
// handler's return and the automatic ack, per message and group.
func BenchmarkPublishDeliver(b *testing.B) {
	for _, bc := range []struct {
		groups, concurrency int
	}{
		{1, 1},
		{1, 4},
		{2, 1},
	} {
		b.Run(fmt.Sprintf("groups=%d/concurrency=%d", bc.groups, bc.concurrency), func(b *testing.B) {
			broker := memory.New(memory.Config{})
			defer broker.Close()
			var handled atomic.Int64
			var target atomic.Int64
			target.Store(-1)
			done := make(chan struct{}, 1)
			h := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
				if handled.Add(1) == target.Load() {
					done <- struct{}{}
				}
				return nil
			})
			for g := range bc.groups {
				if _, err := broker.Subscribe(context.Background(), "bench", h,
					async.GroupName(fmt.Sprint("g", g)), async.Concurrency(bc.concurrency)); err != nil {
					b.Fatal(err)
				}
			}
			ctx := context.Background()
			msg := async.NewMessage("bench", "Bench", make([]byte, 256),
				async.WithMetadata(async.Metadata{async.MetaContentType: "application/octet-stream"}))
			b.ReportAllocs()
			published := int64(0)
			for b.Loop() {
				if err := broker.Publish(ctx, "bench", msg); err != nil {
					b.Fatal(err)
				}
				published++
			}
			want := published * int64(bc.groups)
			target.Store(want)
			if handled.Load() < want {
				<-done
			}
		})
	}
}
