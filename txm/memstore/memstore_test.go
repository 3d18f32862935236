package memstore_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
	"github.com/transmanager/transmanager/txm/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newStores(t *testing.T) storetest.Stores {
	clock := &fakeClock{now: time.Now()}
	s := memstore.New(memstore.Config{Now: clock.Now})
	return storetest.Stores{
		Outbox:  s.Outbox(),
		Inbox:   func(group string) txm.InboxStore { return s.Inbox(group) },
		Advance: clock.Advance,
		Now:     clock.Now,
	}
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{New: newStores})
}

// TestConformanceRealClock runs the suite as a database store would, with
// a real clock and short leases.
func TestConformanceRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("real-clock suite skipped in -short mode")
	}
	storetest.Run(t, storetest.Harness{
		New: func(*testing.T) storetest.Stores {
			s := memstore.New(memstore.Config{})
			return storetest.Stores{Outbox: s.Outbox(), Inbox: func(g string) txm.InboxStore { return s.Inbox(g) }}
		},
		Lease: 100 * time.Millisecond,
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestSaveOfIDHeldByLiveTransactionWaits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		commit  bool
		wantDup bool
	}{
		{name: "Commit", commit: true, wantDup: true},
		{name: "Rollback", commit: false, wantDup: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := ctx(t)
			s := memstore.New(memstore.Config{})
			in := s.Inbox("g")
			m := inMsg{async.NewMessage("t", "T", nil)}
			saved, finish := make(chan struct{}), make(chan struct{})
			txDone := make(chan error, 1)
			go func() {
				txDone <- s.InTx(ctx, func(ctx context.Context) error {
					if err := in.Save(ctx, m); err != nil {
						return err
					}
					if err := s.Outbox().Save(ctx, m); err != nil {
						return err
					}
					close(saved)
					<-finish
					if !tc.commit {
						return errors.New("roll back")
					}
					return nil
				})
			}()
			<-saved
			inErr, outErr := make(chan error, 1), make(chan error, 1)
			go func() { inErr <- in.Save(ctx, m) }()
			go func() { outErr <- s.Outbox().Save(ctx, m) }()
			// The saves must wait for the transaction.
			select {
			case err := <-inErr:
				t.Fatalf("inbox Save returned %v while the transaction holding the ID was live", err)
			case err := <-outErr:
				t.Fatalf("outbox Save returned %v while the transaction holding the ID was live", err)
			case <-time.After(20 * time.Millisecond):
			}
			close(finish)
			err := <-txDone
			if tc.commit && err != nil {
				t.Fatalf("InTx = %v", err)
			}
			for name, ch := range map[string]chan error{"inbox": inErr, "outbox": outErr} {
				err := <-ch
				if got := errors.Is(err, txm.ErrDuplicateMessage("")); got != tc.wantDup || (!got && err != nil) {
					t.Errorf("%s Save after the transaction ended = %v, want duplicate %v", name, err, tc.wantDup)
				}
			}
		})
	}
}

func TestWaitingSaveHonoursContext(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.Config{})
	m := async.NewMessage("t", "T", nil)
	release := make(chan struct{})
	held := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.InTx(context.Background(), func(ctx context.Context) error {
			if err := s.Outbox().Save(ctx, m); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
	}()
	<-held
	c, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := s.Outbox().Save(c, m); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Save waiting on a live transaction = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSaveThroughEndedTransaction(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.Config{})
	var kept context.Context
	if err := s.InTx(context.Background(), func(ctx context.Context) error {
		kept = ctx
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Outbox().Save(kept, async.NewMessage("t", "T", nil)); !errors.Is(err, memstore.ErrTxDone) {
		t.Errorf("Save through an ended transaction = %v, want ErrTxDone", err)
	}
}

func TestTransactionsOfTwoStoresAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := memstore.New(memstore.Config{}), memstore.New(memstore.Config{})
	ma, mb := async.NewMessage("t", "T", nil), async.NewMessage("t", "T", nil)
	err := a.InTx(context.Background(), func(ctx context.Context) error {
		if err := b.InTx(ctx, func(ctx context.Context) error { return b.Outbox().Save(ctx, mb) }); err != nil {
			return err
		}
		if err := a.Outbox().Save(ctx, ma); err != nil {
			return err
		}
		return errors.New("roll back a")
	})
	if err == nil {
		t.Fatal("InTx = nil, want the error of fn")
	}
	if got, _ := a.Outbox().FindUnpublished(context.Background(), 10); len(got) != 0 {
		t.Errorf("store a has %d messages after its rollback, want 0", len(got))
	}
	if got, _ := b.Outbox().FindUnpublished(context.Background(), 10); len(got) != 1 {
		t.Errorf("store b has %d messages after its own commit, want 1", len(got))
	}
}

func TestClaimedMessagesAreCopies(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.Config{})
	m := async.NewMessage("t", "T", []byte("data"), async.WithMetadata(async.Metadata{"k": "v"}))
	if err := s.Outbox().Save(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	got, err := s.Outbox().Claim(context.Background(), 1, time.Nanosecond)
	if err != nil || len(got) != 1 {
		t.Fatalf("Claim = %v, %v", got, err)
	}
	got[0].Message.Metadata()["k"] = "changed"
	got[0].Message.Data()[0] = 'X'
	if err := s.Outbox().ReleaseClaims(context.Background(), m.ID()); err != nil {
		t.Fatal(err)
	}
	again, _ := s.Outbox().FindUnpublished(context.Background(), 1)
	if len(again) != 1 || again[0].Metadata().GetString("k") != "v" || string(again[0].Data()) != "data" {
		t.Errorf("stored message changed through a claimed copy: %v", again)
	}
}

func TestInvalidMessages(t *testing.T) {
	t.Parallel()
	s := memstore.New(memstore.Config{})
	c := context.Background()
	for name, err := range map[string]error{
		"nil outbox":      s.Outbox().Save(c, nil),
		"empty ID outbox": s.Outbox().Save(c, noID{async.NewMessage("t", "T", nil)}),
		"nil inbox":       s.Inbox("g").Save(c, nil),
	} {
		if err == nil {
			t.Errorf("%s: Save = nil, want an error", name)
		}
	}
	if _, err := s.Outbox().SaveMany(c, []async.Message{async.NewMessage("t", "T", nil), nil}); err == nil {
		t.Error("SaveMany with a nil message = nil, want an error")
	}
	if got, _ := s.Outbox().FindUnpublished(c, 10); len(got) != 0 {
		t.Errorf("a failed SaveMany stored %d messages", len(got))
	}
}

func TestDefaultLease(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Now()}
	for _, tc := range []struct {
		name  string
		lease time.Duration
		want  time.Duration
	}{
		{"Zero", 0, 30 * time.Second},
		{"Set", time.Minute, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{now: clock.Now()}
			s := memstore.New(memstore.Config{Now: clock.Now, DefaultLease: tc.lease})
			if err := s.Outbox().Save(context.Background(), async.NewMessage("t", "T", nil)); err != nil {
				t.Fatal(err)
			}
			if got, _ := s.Outbox().FindUnpublished(context.Background(), 10); len(got) != 1 {
				t.Fatalf("FindUnpublished returned %d, want 1", len(got))
			}
			clock.Advance(tc.want - time.Millisecond)
			if got, _ := s.Outbox().FindUnpublished(context.Background(), 10); len(got) != 0 {
				t.Fatalf("FindUnpublished within the default lease returned %d, want 0", len(got))
			}
			clock.Advance(time.Millisecond)
			if got, _ := s.Outbox().FindUnpublished(context.Background(), 10); len(got) != 1 {
				t.Fatalf("FindUnpublished after the default lease returned %d, want 1", len(got))
			}
		})
	}
}

func TestReplayKeepsSaveOrderAcrossUnkeyedDeadLetters(t *testing.T) {
	t.Parallel()
	c := context.Background()
	s := memstore.New(memstore.Config{})
	o := s.Outbox()
	var ids []string
	for i := range 6 {
		m := async.NewMessage("t", "T", nil)
		if i%2 == 0 {
			m.Metadata().Set(async.MetaPartitionKey, "k")
		}
		ids = append(ids, m.ID())
		if err := o.Save(c, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{ids[1], ids[3], ids[0]} {
		if err := o.MarkDead(c, id, "dead"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := o.Replay(c, txm.DeadLetterFilter{}); err != nil || n != 3 {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	got, err := o.Claim(c, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i, cl := range got {
		if i >= len(ids) || cl.Message.ID() != ids[i] {
			t.Fatalf("Claim after Replay returned %d messages out of save order", len(got))
		}
	}
	if len(got) != len(ids) {
		t.Fatalf("Claim after Replay returned %d messages, want %d", len(got), len(ids))
	}
}

func BenchmarkSave(b *testing.B) {
	s := memstore.New(memstore.Config{})
	c := context.Background()
	msgs := make([]async.Message, b.N)
	for i := range msgs {
		msgs[i] = async.NewMessage("orders", "OrderPlaced", []byte(`{"n":1}`),
			async.WithID(strconv.Itoa(i)),
			async.WithMetadata(async.Metadata{async.MetaPartitionKey: strconv.Itoa(i % 64)}))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Outbox().Save(c, msgs[i]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClaimMark(b *testing.B) {
	const batch = 100
	c := context.Background()
	s := memstore.New(memstore.Config{})
	o := s.Outbox()
	msgs := make([]async.Message, b.N)
	for i := range msgs {
		msgs[i] = async.NewMessage("orders", "OrderPlaced", []byte(`{"n":1}`),
			async.WithID(strconv.Itoa(i)),
			async.WithMetadata(async.Metadata{async.MetaPartitionKey: strconv.Itoa(i % 64)}))
	}
	if _, err := o.SaveMany(c, msgs); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, batch)
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		got, err := o.Claim(c, batch, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(got) == 0 {
			b.Fatalf("Claim returned nothing with %d of %d done", done, b.N)
		}
		ids = ids[:0]
		for _, cl := range got {
			ids = append(ids, cl.Message.ID())
		}
		if err := o.MarkPublished(c, ids...); err != nil {
			b.Fatal(err)
		}
		done += len(got)
	}
}

// noID is a message without an ID.
type noID struct{ async.Message }

func (noID) ID() string { return "" }

// inMsg is an IncomingMessage for the tests of this file.
type inMsg struct{ async.Message }

func (inMsg) ReceivedAt() time.Time { return time.Time{} }
func (inMsg) Ack() error            { return nil }
func (inMsg) NAck() error           { return nil }
func (inMsg) Extend() error         { return nil }
func (inMsg) Kill() error           { return nil }
