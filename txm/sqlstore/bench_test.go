package sqlstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

// The benchmarks behind the numbers in the package documentation. Run
// them with TXM_POSTGRES_URL set (the PostgreSQL ones skip without it):
//
//	go test -run '^$' -bench . ./txm/sqlstore/

func benchMessages(n int) []async.Message {
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":"1234","total":1250}`),
			async.WithMetadata(async.Metadata{
				async.MetaPartitionKey: fmt.Sprintf("order-%d", i%50),
				async.MetaContentType:  "application/json",
				async.MetaTraceParent:  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			}))
	}
	return msgs
}

// BenchmarkSave saves one message per transaction from concurrent
// goroutines, with and without NOTIFY.
func BenchmarkSave(b *testing.B) {
	for _, bc := range []struct {
		name string
		kind backendKind
		cfg  Config
	}{
		{"postgres-notify", kindPgx, Config{}},
		{"postgres-pollonly", kindPgx, Config{PollOnly: true}},
		{"sqlite", kindSQLite, Config{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := newTestStore(b, bc.kind, bc.cfg)
			ctx := context.Background()
			b.SetParallelism(4) // 4 goroutines per GOMAXPROCS: 8 on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Outbox().Save(ctx, benchMessages(1)[0]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkSaveMany saves 1000 messages in one call.
func BenchmarkSaveMany(b *testing.B) {
	for _, kind := range []backendKind{kindPgx, kindSQLite} {
		b.Run(string(kind), func(b *testing.B) {
			s := newTestStore(b, kind, Config{PollOnly: true})
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				msgs := benchMessages(1000)
				b.StartTimer()
				if n, err := s.Outbox().SaveMany(ctx, msgs); err != nil || n != len(msgs) {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkClaim claims and publishes batches of 100 from a backlog.
func BenchmarkClaim(b *testing.B) {
	for _, kind := range []backendKind{kindPgx, kindSQLDB, kindSQLite} {
		b.Run(string(kind), func(b *testing.B) {
			s := newTestStore(b, kind, Config{PollOnly: true})
			ctx := context.Background()
			for b.Loop() {
				b.StopTimer()
				if _, err := s.Outbox().SaveMany(ctx, benchMessages(100)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				c, err := s.Outbox().Claim(ctx, 100, time.Minute)
				if err != nil || len(c) != 100 {
					b.Fatal(len(c), err)
				}
				if err := s.Outbox().MarkPublished(ctx, ids(c)...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClaimFew claims the few messages a relay finds under a light,
// steady load (unkeyed, 256-byte payloads), and nothing at all, on a table
// with some history. Only the claim is timed.
func BenchmarkClaimFew(b *testing.B) {
	s := newTestStore(b, kindPgx, Config{PollOnly: true})
	ctx := context.Background()
	plain := func(n int) []async.Message {
		msgs := make([]async.Message, n)
		for i := range msgs {
			msgs[i] = async.NewMessage("orders.placed", "OrderPlaced", make([]byte, 256),
				async.WithMetadata(async.Metadata{async.MetaContentType: "application/json"}))
		}
		return msgs
	}
	for range 20 {
		if _, err := s.Outbox().SaveMany(ctx, plain(500)); err != nil {
			b.Fatal(err)
		}
		c, err := s.Outbox().Claim(ctx, 500, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Outbox().MarkPublished(ctx, ids(c)...); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []int{0, 1, 10, 50} {
		b.Run(fmt.Sprintf("messages=%d", n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				if _, err := s.Outbox().SaveMany(ctx, plain(n)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				c, err := s.Outbox().Claim(ctx, 500, time.Minute)
				if err != nil || len(c) != n {
					b.Fatalf("claimed %d of %d: %v", len(c), n, err)
				}
				b.StopTimer()
				if err := s.Outbox().MarkPublished(ctx, ids(c)...); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
