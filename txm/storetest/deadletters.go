package storetest

import (
	"slices"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// deadStore returns the outbox as Claimer and DeadLetterStore, skipping the
// test when it is not both.
func (e *env) deadStore() (txm.Claimer, txm.DeadLetterStore) {
	e.t.Helper()
	d, ok := e.st.Outbox.(txm.DeadLetterStore)
	if !ok {
		e.t.Skip("store does not implement txm.DeadLetterStore")
	}
	return e.claimer(), d
}

// kill marks msgs dead with cause.
func (e *env) kill(d txm.DeadLetterStore, cause string, msgs ...async.Message) {
	e.t.Helper()
	for _, m := range msgs {
		if err := d.MarkDead(e.ctx, m.ID(), cause); err != nil {
			e.t.Fatalf("MarkDead(%s): %v", m.ID(), err)
		}
	}
}

func (e *env) deadLetters(d txm.DeadLetterStore, f txm.DeadLetterFilter) []txm.DeadLetter {
	e.t.Helper()
	got, err := d.DeadLetters(e.ctx, f)
	if err != nil {
		e.t.Fatalf("DeadLetters(%+v): %v", f, err)
	}
	return got
}

func (e *env) replay(d txm.DeadLetterStore, f txm.DeadLetterFilter) int {
	e.t.Helper()
	n, err := d.Replay(e.ctx, f)
	if err != nil {
		e.t.Fatalf("Replay(%+v): %v", f, err)
	}
	return n
}

func testDeadLetters(t *testing.T, h Harness) {
	t.Run("MarkDeadMovesToDeadLetters", func(t *testing.T) {
		e := setup(t, h)
		c, d := e.deadStore()
		k1, k2, other := newMsg("orders", "k"), newMsg("orders", "k"), newMsg("payments", "")
		e.save(e.ctx, k1, k2, other)
		equalIDs(t, "Claim(1)", claimedIDs(e.claim(c, 1, longLease)), []string{k1.ID()})
		if err := c.MarkFailed(e.ctx, k1.ID(), 0, "first failure"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		equalIDs(t, "Claim(1) after MarkFailed", claimedIDs(e.claim(c, 1, longLease)), []string{k1.ID()})
		e.kill(d, "poison message", k1)

		dead := e.deadLetters(d, txm.DeadLetterFilter{})
		equalIDs(t, "DeadLetters", deadIDs(dead), []string{k1.ID()})
		assertMessage(t, dead[0].Message, k1)
		if dead[0].Attempts != 2 {
			t.Errorf("dead letter Attempts = %d, want 2 (one MarkFailed, one MarkDead)", dead[0].Attempts)
		}
		if dead[0].LastError != "poison message" {
			t.Errorf("dead letter LastError = %q, want %q", dead[0].LastError, "poison message")
		}
		if dead[0].DeadAt.IsZero() {
			t.Error("dead letter DeadAt is zero")
		}
		// k1 is dead: k2 stays parked behind it, other flows.
		equalIDs(t, "Claim with a dead head", claimedIDs(e.claim(c, 10, longLease)), []string{other.ID()})
		e.markPublished(other.ID())
		equalIDs(t, "FindUnpublished with a dead head", msgIDs(e.find(10)), nil)
	})

	t.Run("Filters", func(t *testing.T) {
		e := setup(t, h)
		c, d := e.deadStore()
		a1, b1, a2 := newMsg("a", ""), newMsg("b", ""), newMsg("a", "")
		alive := newMsg("a", "")
		e.save(e.ctx, a1, b1, a2, alive)
		e.claim(c, 3, longLease)
		e.kill(d, "dead", a1, b1, a2)

		for _, tc := range []struct {
			name   string
			filter txm.DeadLetterFilter
			want   []string
		}{
			{"All", txm.DeadLetterFilter{}, []string{a1.ID(), b1.ID(), a2.ID()}},
			{"ByIDs", txm.DeadLetterFilter{IDs: []string{b1.ID(), a2.ID(), alive.ID(), async.NewID()}}, []string{b1.ID(), a2.ID()}},
			{"ByTopic", txm.DeadLetterFilter{Topic: "a"}, []string{a1.ID(), a2.ID()}},
			{"ByIDsAndTopic", txm.DeadLetterFilter{IDs: []string{a1.ID(), b1.ID()}, Topic: "b"}, []string{b1.ID()}},
			{"UnknownTopic", txm.DeadLetterFilter{Topic: "c"}, nil},
		} {
			sameIDs(t, "DeadLetters "+tc.name, deadIDs(e.deadLetters(d, tc.filter)), tc.want)
		}
		for _, tc := range []struct {
			name   string
			filter txm.DeadLetterFilter
			from   []string
		}{
			{"Limit", txm.DeadLetterFilter{Limit: 2}, []string{a1.ID(), b1.ID(), a2.ID()}},
			{"TopicLimit", txm.DeadLetterFilter{Topic: "a", Limit: 1}, []string{a1.ID(), a2.ID()}},
		} {
			got := deadIDs(e.deadLetters(d, tc.filter))
			if len(got) != tc.filter.Limit {
				t.Errorf("DeadLetters %s returned %v, want %d of %v", tc.name, got, tc.filter.Limit, tc.from)
			}
			for _, id := range got {
				if !slices.Contains(tc.from, id) {
					t.Errorf("DeadLetters %s returned %s, not one of %v", tc.name, id, tc.from)
				}
			}
		}
	})

	t.Run("ReplayByID", func(t *testing.T) {
		e := setup(t, h)
		c, d := e.deadStore()
		k1, k2 := newMsg("orders", "k"), newMsg("orders", "k")
		e.save(e.ctx, k1, k2)
		e.claim(c, 1, longLease)
		if err := c.MarkFailed(e.ctx, k1.ID(), 0, "down"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		e.claim(c, 1, longLease)
		e.kill(d, "gave up", k1)
		equalIDs(t, "Claim with a dead head", claimedIDs(e.claim(c, 10, longLease)), nil)

		if n := e.replay(d, txm.DeadLetterFilter{IDs: []string{k1.ID(), k2.ID(), async.NewID()}}); n != 1 {
			t.Fatalf("Replay = %d, want 1", n)
		}
		equalIDs(t, "DeadLetters after Replay", deadIDs(e.deadLetters(d, txm.DeadLetterFilter{})), nil)
		got := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after Replay (the key unparked, in order)", claimedIDs(got), []string{k1.ID(), k2.ID()})
		if got[0].Attempts != 0 {
			t.Errorf("Attempts after Replay = %d, want 0", got[0].Attempts)
		}
		if n := e.replay(d, txm.DeadLetterFilter{IDs: []string{k1.ID()}}); n != 0 {
			t.Errorf("Replay of a pending message = %d, want 0", n)
		}
	})

	t.Run("ReplayByTopicAndAll", func(t *testing.T) {
		e := setup(t, h)
		c, d := e.deadStore()
		a1, b1, a2, b2 := newMsg("a", ""), newMsg("b", ""), newMsg("a", ""), newMsg("b", "")
		e.save(e.ctx, a1, b1, a2, b2)
		e.claim(c, 10, longLease)
		e.kill(d, "dead", a1, b1, a2, b2)
		if n := e.replay(d, txm.DeadLetterFilter{Topic: "a"}); n != 2 {
			t.Fatalf("Replay(topic a) = %d, want 2", n)
		}
		sameIDs(t, "DeadLetters after Replay(topic a)", deadIDs(e.deadLetters(d, txm.DeadLetterFilter{})), []string{b1.ID(), b2.ID()})
		equalIDs(t, "Claim after Replay(topic a)", claimedIDs(e.claim(c, 10, longLease)), []string{a1.ID(), a2.ID()})
		if n := e.replay(d, txm.DeadLetterFilter{Limit: 1}); n != 1 {
			t.Fatalf("Replay(limit 1) = %d, want 1", n)
		}
		if n := e.replay(d, txm.DeadLetterFilter{}); n != 1 {
			t.Fatalf("Replay(all) = %d, want 1", n)
		}
		if n := e.replay(d, txm.DeadLetterFilter{}); n != 0 {
			t.Fatalf("Replay with no dead letters = %d, want 0", n)
		}
		got := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after Replay(all)", claimedIDs(got), []string{b1.ID(), b2.ID()})
		for _, cl := range got {
			if cl.Attempts != 0 {
				t.Errorf("%s: Attempts after Replay = %d, want 0", cl.Message.ID(), cl.Attempts)
			}
		}
	})
}
