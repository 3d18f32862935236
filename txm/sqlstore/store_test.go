package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// The tests in this file run on every kind of store: SQLite always, and
// PostgreSQL through pgx and database/sql when TXM_POSTGRES_URL is set.

func forEachKind(t *testing.T, fn func(t *testing.T, kind backendKind)) {
	t.Helper()
	for _, kind := range allKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			fn(t, kind)
		})
	}
}

func newMsg(topic, key string) async.Message {
	md := async.Metadata{async.MetaContentType: "application/json"}
	if key != "" {
		md[async.MetaPartitionKey] = key
	}
	return async.NewMessage(topic, "Thing", []byte(`{"n":1}`), async.WithMetadata(md))
}

func ids(c []txm.Claimed) []string {
	out := make([]string, len(c))
	for i, m := range c {
		out[i] = m.Message.ID()
	}
	return out
}

func msgIDs(ms []async.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID()
	}
	return out
}

func mustSave(t *testing.T, o *Outbox, msgs ...async.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := o.Save(context.Background(), m); err != nil {
			t.Fatalf("save %s: %v", m.ID(), err)
		}
	}
}

func mustClaim(t *testing.T, o *Outbox, limit int, lease time.Duration) []txm.Claimed {
	t.Helper()
	return mustClaimIn(t, context.Background(), o, limit, lease)
}

// mustClaimIn claims with ctx, which may carry a transaction.
func mustClaimIn(t *testing.T, ctx context.Context, o *Outbox, limit int, lease time.Duration) []txm.Claimed {
	t.Helper()
	c, err := o.Claim(ctx, limit, lease)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		sent := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
		m := async.NewMessage("orders.placed", "OrderPlaced", []byte{0, 1, 2, 0xff},
			async.WithID("not-a-uuid: any string"),
			async.WithSentAt(sent),
			async.WithMetadata(async.Metadata{
				async.MetaPartitionKey: "order-1", "s": "x", "n": 3, "b": true,
			}))
		mustSave(t, s.Outbox(), m)
		c := mustClaim(t, s.Outbox(), 10, time.Minute)
		if len(c) != 1 {
			t.Fatalf("claimed %d messages, want 1", len(c))
		}
		got := c[0].Message
		if got.ID() != m.ID() || got.Subject() != m.Subject() || got.MessageName() != m.MessageName() ||
			string(got.Data()) != string(m.Data()) || !got.SentAt().Equal(sent) || c[0].Attempts != 0 {
			t.Fatalf("claimed %+v (attempts %d), want %+v", got, c[0].Attempts, m)
		}
		md := got.Metadata()
		if md.PartitionKey() != "order-1" || md.GetString("s") != "x" {
			t.Fatalf("metadata %v", md)
		}
		if n, ok := md.GetInt("n"); !ok || n != 3 {
			t.Fatalf("metadata n = %v, want 3", md["n"])
		}
		if b, ok := md.GetBool("b"); !ok || !b {
			t.Fatalf("metadata b = %v, want true", md["b"])
		}

		// Empty payload and metadata survive as empty, not nil.
		e := async.NewMessage("t", "N", nil)
		mustSave(t, s.Outbox(), e)
		msgs, err := s.Outbox().FindUnpublished(ctx, 10)
		if err != nil || len(msgs) != 1 || msgs[0].ID() != e.ID() {
			t.Fatalf("find unpublished: %v %v", msgs, err)
		}
		if msgs[0].Data() == nil || len(msgs[0].Data()) != 0 || msgs[0].Metadata() == nil {
			t.Fatalf("empty message read back as data %v metadata %v", msgs[0].Data(), msgs[0].Metadata())
		}
	})
}

func TestSaveRejectsBadMessages(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		tests := []struct {
			name string
			msg  async.Message
		}{
			{"nil", nil},
			{"empty id", emptyID{async.NewMessage("t", "N", nil)}},
			{"unencodable metadata", async.NewMessage("t", "N", nil, async.WithMetadata(async.Metadata{"f": func() {}}))},
		}
		for _, tt := range tests {
			if err := s.Outbox().Save(ctx, tt.msg); err == nil {
				t.Errorf("%s: Save returned nil", tt.name)
			}
			if _, err := s.Outbox().SaveMany(ctx, []async.Message{tt.msg}); err == nil {
				t.Errorf("%s: SaveMany returned nil", tt.name)
			}
		}
	})
}

type emptyID struct{ async.Message }

func (emptyID) ID() string { return "" }

func TestDuplicateSave(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		m := newMsg("t", "k")
		mustSave(t, s.Outbox(), m)
		err := s.Outbox().Save(ctx, async.NewMessage("other", "Other", nil, async.WithID(m.ID())))
		var dup txm.ErrDuplicateMessage
		if !errors.As(err, &dup) || string(dup) != m.ID() {
			t.Fatalf("second save: %v, want ErrDuplicateMessage(%s)", err, m.ID())
		}
		c := mustClaim(t, s.Outbox(), 10, time.Minute)
		if len(c) != 1 || c[0].Message.Subject() != "t" {
			t.Fatalf("the duplicate replaced the stored message: %+v", c)
		}
	})
}

// TestDuplicateInLiveTransaction saves a duplicate inside the caller's
// transaction, which must still commit its business row and first message.
func TestDuplicateInLiveTransaction(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		b := newBusiness(t, s)
		m := newMsg("t", "")
		err := b.inUserTx(ctx, true, func(ctx context.Context) error {
			if err := b.insert(ctx, "order-1"); err != nil {
				return err
			}
			if err := s.Outbox().Save(ctx, m); err != nil {
				return err
			}
			if err := s.Outbox().Save(ctx, m); !errors.Is(err, txm.ErrDuplicateMessage("")) {
				return fmt.Errorf("duplicate save in tx: %v", err)
			}
			if err := s.Inbox("g").Save(ctx, incoming{m}); err != nil {
				return err
			}
			if err := s.Inbox("g").Save(ctx, incoming{m}); !errors.Is(err, txm.ErrDuplicateMessage("")) {
				return fmt.Errorf("duplicate inbox save in tx: %v", err)
			}
			return b.insert(ctx, "order-2") // the transaction is still usable
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := b.count(t); got != 2 {
			t.Fatalf("business rows: %d, want 2", got)
		}
		if c := mustClaim(t, s.Outbox(), 10, time.Minute); len(c) != 1 || c[0].Message.ID() != m.ID() {
			t.Fatalf("claimed %v, want the message", ids(c))
		}
	})
}

// TestRolledBackTransaction rolls back a business transaction of the
// caller's own that saved a message: nothing of it remains.
func TestRolledBackTransaction(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		b := newBusiness(t, s)
		m := newMsg("t", "k")
		err := b.inUserTx(ctx, false, func(ctx context.Context) error {
			if err := b.insert(ctx, "order-1"); err != nil {
				return err
			}
			if err := s.Outbox().Save(ctx, m); err != nil {
				return err
			}
			if n, err := s.Outbox().SaveMany(ctx, []async.Message{newMsg("t", "k")}); err != nil || n != 1 {
				return fmt.Errorf("save many: %d %v", n, err)
			}
			return s.Inbox("g").Save(ctx, incoming{m})
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := b.count(t); got != 0 {
			t.Fatalf("business rows after rollback: %d", got)
		}
		if c := mustClaim(t, s.Outbox(), 10, time.Minute); len(c) != 0 {
			t.Fatalf("claimed %v after rollback", ids(c))
		}
		// The inbox record rolled back too: the message is new again.
		if err := s.Inbox("g").Save(ctx, incoming{m}); err != nil {
			t.Fatalf("inbox save after rollback: %v", err)
		}
		// And the outbox ID is free.
		mustSave(t, s.Outbox(), m)
	})
}

func TestInTx(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{PollOnly: true})
		b := newBusiness(t, s)
		drain(s.Outbox().Wakeups())

		// Commit: business row and message, and a wake-up after commit.
		m1 := newMsg("t", "")
		err := s.InTx(ctx, func(ctx context.Context) error {
			if err := b.insert(ctx, "a"); err != nil {
				return err
			}
			if err := s.Outbox().Save(ctx, m1); err != nil {
				return err
			}
			select {
			case <-s.Outbox().Wakeups():
				return errors.New("woken before commit")
			default:
			}
			// Nested InTx reuses the transaction.
			return s.Outbox().InTx(ctx, func(ctx context.Context) error { return b.insert(ctx, "b") })
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.Outbox().Wakeups():
		default:
			t.Fatal("no wake-up after InTx committed a save")
		}
		if b.count(t) != 2 {
			t.Fatalf("business rows %d, want 2", b.count(t))
		}

		// Error: everything rolls back and the error comes back as it is.
		errFn := errors.New("handler failed")
		m2 := newMsg("t", "")
		err = s.Inbox("g").InTx(ctx, func(ctx context.Context) error {
			if err := b.insert(ctx, "c"); err != nil {
				return err
			}
			if err := s.Outbox().Save(ctx, m2); err != nil {
				return err
			}
			return errFn
		})
		if err != errFn {
			t.Fatalf("InTx returned %v, want the function's error", err)
		}

		// Panic: rolls back, and the panic goes on.
		m3 := newMsg("t", "")
		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Fatalf("recovered %v, want boom", r)
				}
			}()
			_ = s.InTx(ctx, func(ctx context.Context) error {
				_ = b.insert(ctx, "d")
				_ = s.Outbox().Save(ctx, m3)
				panic("boom")
			})
		}()
		if b.count(t) != 2 {
			t.Fatalf("business rows %d after rollbacks, want 2", b.count(t))
		}
		if c := mustClaim(t, s.Outbox(), 10, time.Minute); !slices.Equal(ids(c), []string{m1.ID()}) {
			t.Fatalf("claimed %v, want only %s", ids(c), m1.ID())
		}
	})
}

func TestWrongDriverTransaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, kindSQLite, Config{})
	pgxCtx := WithPgxTx(ctx, fakePgxTx{})
	if err := s.Outbox().Save(pgxCtx, newMsg("t", "")); !errors.Is(err, errTxKind) {
		t.Fatalf("save with a pgx tx on a database/sql store: %v", err)
	}
	if err := s.InTx(pgxCtx, func(context.Context) error { return nil }); !errors.Is(err, errTxKind) {
		t.Fatalf("InTx with a pgx tx on a database/sql store: %v", err)
	}
}

func TestClosedAndCancelled(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		s := newTestStore(t, kind, Config{})
		o, in := s.Outbox(), s.Inbox("g")
		m := newMsg("t", "k")
		calls := map[string]func(ctx context.Context) error{
			"save":      func(ctx context.Context) error { return o.Save(ctx, m) },
			"save many": func(ctx context.Context) error { _, err := o.SaveMany(ctx, []async.Message{m}); return err },
			"claim":     func(ctx context.Context) error { _, err := o.Claim(ctx, 10, time.Second); return err },
			"find":      func(ctx context.Context) error { _, err := o.FindUnpublished(ctx, 10); return err },
			"published": func(ctx context.Context) error { return o.MarkPublished(ctx, m.ID()) },
			"extend":    func(ctx context.Context) error { return o.ExtendClaims(ctx, time.Second, m.ID()) },
			"release":   func(ctx context.Context) error { return o.ReleaseClaims(ctx, m.ID()) },
			"failed":    func(ctx context.Context) error { return o.MarkFailed(ctx, m.ID(), time.Second, "x") },
			"dead":      func(ctx context.Context) error { return o.MarkDead(ctx, m.ID(), "x") },
			"dlq":       func(ctx context.Context) error { _, err := o.DeadLetters(ctx, txm.DeadLetterFilter{}); return err },
			"replay":    func(ctx context.Context) error { _, err := o.Replay(ctx, txm.DeadLetterFilter{}); return err },
			"stats":     func(ctx context.Context) error { _, err := o.Stats(ctx); return err },
			"purge":     func(ctx context.Context) error { _, err := o.Purge(ctx, 0, 10); return err },
			"inbox":     func(ctx context.Context) error { return in.Save(ctx, incoming{m}) },
			"purge in":  func(ctx context.Context) error { _, err := in.PurgeInbox(ctx, 0, 10); return err },
			"in tx":     func(ctx context.Context) error { return s.InTx(ctx, func(context.Context) error { return nil }) },
			"migrate":   func(ctx context.Context) error { return s.Migrate(ctx) },
		}
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		for name, call := range calls {
			if err := call(cancelled); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		for name, call := range calls {
			if err := call(context.Background()); !errors.Is(err, async.ErrClosed) {
				t.Errorf("%s after Close: %v, want async.ErrClosed", name, err)
			}
		}
	})
}

func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
