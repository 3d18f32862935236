package sqlstore

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClaimOrderAndParking(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		o := s.Outbox()
		a1, b1, n1, a2, b2, n2, a3 := newMsg("t", "a"), newMsg("t", "b"), newMsg("t", ""), newMsg("t", "a"), newMsg("u", "b"), newMsg("t", ""), newMsg("t", "a")
		mustSave(t, o, a1, b1, n1, a2, b2, n2, a3)

		// A limit cuts the save order.
		c := mustClaim(t, o, 2, time.Minute)
		if want := msgIDs([]async.Message{a1, b1}); !slices.Equal(ids(c), want) {
			t.Fatalf("claim 2: %v, want %v", ids(c), want)
		}
		// a and b are parked behind their leased heads; keyless n1, n2 flow.
		c = mustClaim(t, o, 10, time.Minute)
		if want := msgIDs([]async.Message{n1, n2}); !slices.Equal(ids(c), want) {
			t.Fatalf("claim with leased heads: %v, want %v", ids(c), want)
		}
		// Publishing a1 unparks a (a2, a3 in order); b stays behind b1.
		if err := o.MarkPublished(ctx, a1.ID()); err != nil {
			t.Fatal(err)
		}
		c = mustClaim(t, o, 10, time.Minute)
		if want := msgIDs([]async.Message{a2, a3}); !slices.Equal(ids(c), want) {
			t.Fatalf("claim after publishing a1: %v, want %v", ids(c), want)
		}
		// b1 fails: b waits for the retry; releasing a2, a3 gives them back.
		if err := o.MarkFailed(ctx, b1.ID(), time.Hour, "broker down"); err != nil {
			t.Fatal(err)
		}
		if err := o.ReleaseClaims(ctx, a2.ID(), a3.ID()); err != nil {
			t.Fatal(err)
		}
		c = mustClaim(t, o, 10, time.Minute)
		if want := msgIDs([]async.Message{a2, a3}); !slices.Equal(ids(c), want) {
			t.Fatalf("claim with b waiting: %v, want %v", ids(c), want)
		}
		// b1 dies: b stays parked, and it is a dead letter.
		if err := o.MarkDead(ctx, b1.ID(), "gave up"); err != nil {
			t.Fatal(err)
		}
		if c = mustClaim(t, o, 10, time.Minute); len(c) != 0 {
			t.Fatalf("claim with b dead: %v, want nothing", ids(c))
		}
		dl, err := o.DeadLetters(ctx, txm.DeadLetterFilter{})
		if err != nil || len(dl) != 1 || dl[0].Message.ID() != b1.ID() || dl[0].Attempts != 2 || dl[0].LastError != "gave up" || dl[0].DeadAt.IsZero() {
			t.Fatalf("dead letters: %+v, %v", dl, err)
		}
		// Replay: b1 comes back first, with no attempts, then b2.
		n, err := o.Replay(ctx, txm.DeadLetterFilter{Topic: "t"})
		if err != nil || n != 1 {
			t.Fatalf("replay: %d, %v", n, err)
		}
		c = mustClaim(t, o, 10, time.Minute)
		if want := msgIDs([]async.Message{b1, b2}); !slices.Equal(ids(c), want) || c[0].Attempts != 0 {
			t.Fatalf("claim after replay: %v (attempts %d), want %v", ids(c), c[0].Attempts, want)
		}
	})
}

func TestRetryAndLeaseExpiry(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		o := s.Outbox()
		k1, k2 := newMsg("t", "k"), newMsg("t", "k")
		mustSave(t, o, k1, k2)
		c := mustClaim(t, o, 1, time.Minute)
		if !slices.Equal(ids(c), []string{k1.ID()}) {
			t.Fatalf("claim: %v", ids(c))
		}
		start := time.Now()
		const retry = 300 * time.Millisecond
		if err := o.MarkFailed(ctx, k1.ID(), retry, "nope"); err != nil {
			t.Fatal(err)
		}
		var got []txm.Claimed
		waitFor(t, 5*time.Second, "the retry to fall due", func() bool {
			got = mustClaim(t, o, 10, 200*time.Millisecond)
			return len(got) > 0
		})
		if el := time.Since(start); el < retry-20*time.Millisecond {
			t.Fatalf("retried after %v, before retryAfter %v", el, retry)
		}
		if !slices.Equal(ids(got), []string{k1.ID(), k2.ID()}) || got[0].Attempts != 1 || got[1].Attempts != 0 {
			t.Fatalf("after the retry: %v attempts %d", ids(got), got[0].Attempts)
		}
		// The 200ms lease runs out: both come back. Extending first keeps
		// them until the longer lease ends.
		if err := o.ExtendClaims(ctx, time.Hour, k2.ID()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the lease to run out", func() bool {
			got = mustClaim(t, o, 10, time.Minute)
			return len(got) > 0
		})
		if !slices.Equal(ids(got), []string{k1.ID()}) {
			t.Fatalf("after k1's lease ran out: %v, want k1 alone (k2 is still leased)", ids(got))
		}
	})
}

func TestSaveManyAndStats(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{KeepPublished: true})
		o := s.Outbox()
		first := newMsg("a", "k")
		mustSave(t, o, first)
		msgs := []async.Message{first}
		for i := range 700 { // more than one SQLite chunk
			topic := "a"
			if i%3 == 0 {
				topic = "b"
			}
			msgs = append(msgs, newMsg(topic, "k"))
		}
		msgs = append(msgs, msgs[5]) // a duplicate within the batch
		n, err := o.SaveMany(ctx, msgs)
		if err != nil || n != 700 {
			t.Fatalf("SaveMany: %d, %v; want 700 inserted", n, err)
		}
		st, err := o.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		age := time.Since(st.OldestPending)
		if st.Pending != 701 || st.Dead != 0 || st.ByTopic["a"].Pending != 467 || st.ByTopic["b"].Pending != 234 ||
			age < -time.Minute || age > time.Minute {
			t.Fatalf("stats %+v", st)
		}
		// Save order is kept: one key, claimed in the slice's order.
		c := mustClaim(t, o, 2000, time.Minute)
		if want := msgIDs(msgs[:701]); !slices.Equal(ids(c), want) {
			t.Fatalf("claimed %d messages out of save order", len(c))
		}
		if err := o.MarkDead(ctx, c[0].Message.ID(), "x"); err != nil {
			t.Fatal(err)
		}
		if err := o.MarkPublished(ctx, ids(c[1:])...); err != nil {
			t.Fatal(err)
		}
		st, err = o.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Pending != 0 || st.Dead != 1 || st.ByTopic["a"].Dead != 1 || !st.OldestPending.IsZero() {
			t.Fatalf("stats after publishing %+v", st)
		}
		// Purge in batches, oldest first; then the IDs are free again.
		total := 0
		for {
			k, err := o.Purge(ctx, 0, 500)
			if err != nil {
				t.Fatal(err)
			}
			total += k
			if k < 500 {
				break
			}
		}
		if total != 700 {
			t.Fatalf("purged %d, want 700", total)
		}
		if k, err := o.Purge(ctx, 0, 0); err != nil || k != 0 {
			t.Fatalf("purge with limit 0: %d, %v", k, err)
		}
		mustSave(t, o, msgs[1])
		// A dead message marked published leaves the dead letters.
		if err := o.MarkPublished(ctx, first.ID()); err != nil {
			t.Fatal(err)
		}
		if dl, err := o.DeadLetters(ctx, txm.DeadLetterFilter{}); err != nil || len(dl) != 0 {
			t.Fatalf("dead letters after MarkPublished: %v %v", dl, err)
		}
	})
}

func TestPurgeKeepsYoungMessages(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		o := s.Outbox()
		m := newMsg("t", "")
		mustSave(t, o, m)
		if err := o.MarkPublished(ctx, m.ID()); err != nil {
			t.Fatal(err)
		}
		if n, err := o.Purge(ctx, time.Hour, 10); err != nil || n != 0 {
			t.Fatalf("purge of an hour: %d, %v; want 0", n, err)
		}
		in := s.Inbox("g")
		if err := in.Save(ctx, incoming{m}); err != nil {
			t.Fatal(err)
		}
		if n, err := in.PurgeInbox(ctx, time.Hour, 10); err != nil || n != 0 {
			t.Fatalf("inbox purge of an hour: %d, %v; want 0", n, err)
		}
	})
}

func TestDeadLetterFilters(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		o := s.Outbox()
		ms := []async.Message{newMsg("a", ""), newMsg("b", ""), newMsg("a", "k"), newMsg("a", "")}
		mustSave(t, o, ms...)
		for _, m := range ms {
			if err := o.MarkDead(ctx, m.ID(), "cause "+m.Subject()); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name   string
			filter txm.DeadLetterFilter
			want   []async.Message
		}{
			{"all", txm.DeadLetterFilter{}, ms},
			{"topic", txm.DeadLetterFilter{Topic: "a"}, []async.Message{ms[0], ms[2], ms[3]}},
			{"ids", txm.DeadLetterFilter{IDs: []string{ms[3].ID(), ms[1].ID(), "unknown"}}, []async.Message{ms[1], ms[3]}},
			{"ids and topic", txm.DeadLetterFilter{IDs: []string{ms[1].ID(), ms[2].ID()}, Topic: "a"}, []async.Message{ms[2]}},
			{"limit", txm.DeadLetterFilter{Limit: 2}, ms[:2]},
		}
		for _, tt := range tests {
			dl, err := o.DeadLetters(ctx, tt.filter)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			got := make([]string, len(dl))
			for i, d := range dl {
				got[i] = d.Message.ID()
			}
			if !slices.Equal(got, msgIDs(tt.want)) {
				t.Errorf("%s: %v, want %v", tt.name, got, msgIDs(tt.want))
			}
		}
		n, err := o.Replay(ctx, txm.DeadLetterFilter{Topic: "a", Limit: 2})
		if err != nil || n != 2 {
			t.Fatalf("replay: %d, %v", n, err)
		}
		if c := mustClaim(t, o, 10, time.Minute); !slices.Equal(ids(c), msgIDs([]async.Message{ms[0], ms[2]})) {
			t.Fatalf("claimed after replay %v", ids(c))
		}
	})
}

func TestInboxGroups(t *testing.T) {
	forEachKind(t, func(t *testing.T, kind backendKind) {
		ctx := context.Background()
		s := newTestStore(t, kind, Config{})
		m := newMsg("t", "")
		for _, g := range []string{"billing", "shipping", ""} {
			in := s.Inbox(g)
			if in.Group() != g {
				t.Fatalf("Group() = %q", in.Group())
			}
			if err := in.Save(ctx, incoming{m}); err != nil {
				t.Fatalf("group %q: %v", g, err)
			}
			if err := in.Save(ctx, incoming{m}); !isDup(err) {
				t.Fatalf("group %q, second save: %v", g, err)
			}
		}
		n, err := s.Inbox("billing").PurgeInbox(ctx, 0, 10)
		if err != nil || n != 1 {
			t.Fatalf("purge billing: %d, %v", n, err)
		}
		// billing forgot the message; shipping did not.
		if err := s.Inbox("billing").Save(ctx, incoming{m}); err != nil {
			t.Fatal(err)
		}
		if err := s.Inbox("shipping").Save(ctx, incoming{m}); !isDup(err) {
			t.Fatal(err)
		}
	})
}

func isDup(err error) bool {
	_, ok := asDup(err)
	return ok
}
