package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// Stores is one fresh, empty store under test.
type Stores struct {
	Outbox txm.OutboxStore
	// Inbox returns the inbox of a consumer group; every group's inbox shares
	// transactions with Outbox (InTx on any of them covers saves through all).
	Inbox func(group string) txm.InboxStore
	// Advance moves the store's clock forward. Nil when the store's clock
	// cannot be moved (a database's): lease and retry tests then use short
	// real durations (Lease below) and wait for them with a bounded poll.
	Advance func(d time.Duration)
	// Now returns the store's time, against which the suite sets delivery
	// times: the movable clock's, or the database's. Nil means time.Now,
	// right for a database on the test's machine.
	Now func() time.Time
}

// Harness creates the stores the suite runs on.
type Harness struct {
	New func(t *testing.T) Stores // registers its own cleanup
	// Lease is the lease the suite uses when Advance is nil; 0 means 300ms.
	Lease time.Duration
	// DeletesPublished says that the store deletes a message when it is
	// marked published, so that Purge finds nothing to remove.
	DeletesPublished bool
}

const (
	defaultRealLease = 300 * time.Millisecond
	// fakeLease is the lease used with a movable clock.
	fakeLease = time.Minute
	// longLease is a lease that never ends during a test.
	longLease = 10 * time.Minute
	// testTimeout bounds every sub-test.
	testTimeout = 60 * time.Second
	pollEvery   = 5 * time.Millisecond
)

// Run runs the whole suite: [RunOutbox] and [RunInbox].
func Run(t *testing.T, h Harness) {
	t.Helper()
	RunOutbox(t, h)
	RunInbox(t, h)
}

// env is one sub-test's store and helpers.
type env struct {
	t     *testing.T
	ctx   context.Context
	st    Stores
	lease time.Duration // the lease under test: short and real, or on the fake clock
}

// setup creates a store for t, which it marks parallel.
func setup(t *testing.T, h Harness) *env {
	t.Helper()
	t.Parallel()
	if h.New == nil {
		t.Fatal("storetest: Harness.New is nil")
	}
	st := h.New(t)
	if st.Outbox == nil {
		t.Fatal("storetest: Stores.Outbox is nil")
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, st: st, lease: fakeLease}
	if st.Advance == nil {
		e.lease = h.Lease
		if e.lease <= 0 {
			e.lease = defaultRealLease
		}
	}
	return e
}

// fake reports whether the store's clock can be moved.
func (e *env) fake() bool { return e.st.Advance != nil }

// pass lets d go by: it moves a fake clock, or waits on a real one until d
// has passed since start.
func (e *env) pass(start time.Time, d time.Duration) {
	e.t.Helper()
	if e.fake() {
		e.st.Advance(d)
		return
	}
	wait := d - time.Since(start)
	if wait <= 0 {
		return
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-e.ctx.Done():
		e.t.Fatalf("waiting %v: %v", d, e.ctx.Err())
	}
}

// before reports whether an assertion that something has not happened yet,
// made now, is conclusive for something due d after start: always with a
// fake clock, and with a real one while d has not run out.
func (e *env) before(start time.Time, d time.Duration) bool {
	if e.fake() {
		return true
	}
	if time.Since(start) < d {
		return true
	}
	e.t.Logf("inconclusive: the machine was too slow to check within %v", d)
	return false
}

// poll calls f until it returns true, every few milliseconds, for at most
// limit.
func (e *env) poll(what string, limit time.Duration, f func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(limit)
	for !f() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		timer := time.NewTimer(pollEvery)
		select {
		case <-timer.C:
		case <-e.ctx.Done():
			timer.Stop()
			e.t.Fatalf("waiting for %s: %v", what, e.ctx.Err())
		}
	}
}

// inbox returns the inbox of group, failing when the store has none.
func (e *env) inbox(group string) txm.InboxStore {
	e.t.Helper()
	if e.st.Inbox == nil {
		e.t.Fatal("storetest: Stores.Inbox is nil")
	}
	in := e.st.Inbox(group)
	if in == nil {
		e.t.Fatalf("storetest: Stores.Inbox(%q) returned nil", group)
	}
	return in
}

// save saves msgs through the outbox, failing the test on an error.
func (e *env) save(ctx context.Context, msgs ...async.Message) {
	e.t.Helper()
	for _, m := range msgs {
		if err := e.st.Outbox.Save(ctx, m); err != nil {
			e.t.Fatalf("Save(%s): %v", m.ID(), err)
		}
	}
}

// find calls FindUnpublished, failing the test on an error.
func (e *env) find(limit int) []async.Message {
	e.t.Helper()
	msgs, err := e.st.Outbox.FindUnpublished(e.ctx, limit)
	if err != nil {
		e.t.Fatalf("FindUnpublished(%d): %v", limit, err)
	}
	return msgs
}

// markPublished calls MarkPublished, failing the test on an error.
func (e *env) markPublished(ids ...string) {
	e.t.Helper()
	if err := e.st.Outbox.MarkPublished(e.ctx, ids...); err != nil {
		e.t.Fatalf("MarkPublished(%v): %v", ids, err)
	}
}

// visible returns the IDs of every unpublished message visible now: through
// Claim with a long lease for a Claimer (which leases them), else through
// FindUnpublished.
func (e *env) visible() []string {
	e.t.Helper()
	if c, ok := e.st.Outbox.(txm.Claimer); ok {
		got, err := c.Claim(e.ctx, 10000, longLease)
		if err != nil {
			e.t.Fatalf("Claim: %v", err)
		}
		return claimedIDs(got)
	}
	return msgIDs(e.find(10000))
}

// transactor returns the outbox's Transactor, skipping the test when there
// is none.
func (e *env) transactor() txm.Transactor {
	e.t.Helper()
	tr, ok := e.st.Outbox.(txm.Transactor)
	if !ok {
		e.t.Skip("store does not implement txm.Transactor")
	}
	return tr
}

// claimer returns the outbox's Claimer, skipping the test when there is
// none.
func (e *env) claimer() txm.Claimer {
	e.t.Helper()
	c, ok := e.st.Outbox.(txm.Claimer)
	if !ok {
		e.t.Skip("store does not implement txm.Claimer")
	}
	return c
}

// claim calls Claim, failing the test on an error.
func (e *env) claim(c txm.Claimer, limit int, lease time.Duration) []txm.Claimed {
	e.t.Helper()
	got, err := c.Claim(e.ctx, limit, lease)
	if err != nil {
		e.t.Fatalf("Claim(%d, %v): %v", limit, lease, err)
	}
	return got
}

// claimAfter claims once with a fake clock (whose time was moved already),
// or polls Claim until it returns something with a real clock.
func (e *env) claimAfter(c txm.Claimer, limit int, lease time.Duration, what string) []txm.Claimed {
	e.t.Helper()
	if e.fake() {
		return e.claim(c, limit, lease)
	}
	var got []txm.Claimed
	e.poll(what, 20*e.lease+10*time.Second, func() bool {
		got = e.claim(c, limit, lease)
		return len(got) > 0
	})
	return got
}

// seq returns n new messages of topic with partition key key ("" for
// none), in order.
func seq(n int, topic, key string) []async.Message {
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = newMsg(topic, key)
	}
	return msgs
}

// newMsg returns a message of topic with partition key key ("" for none).
func newMsg(topic, key string) async.Message {
	md := async.Metadata{async.MetaContentType: "application/json"}
	if key != "" {
		md[async.MetaPartitionKey] = key
	}
	id := async.NewID()
	return async.NewMessage(topic, "TestEvent", []byte(`{"id":"`+id+`"}`), async.WithID(id), async.WithMetadata(md))
}

func msgIDs(msgs []async.Message) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID()
	}
	return ids
}

func claimedIDs(cs []txm.Claimed) []string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.Message.ID()
	}
	return ids
}

func deadIDs(ds []txm.DeadLetter) []string {
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.Message.ID()
	}
	return ids
}

// equalIDs fails the test when got differs from want, in order.
func equalIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: got IDs %v, want %v", what, got, want)
	}
}

// sameIDs fails the test when got and want differ as sets.
func sameIDs(t *testing.T, what string, got, want []string) {
	t.Helper()
	g, w := slices.Clone(got), slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got IDs %v, want %v (in any order)", what, got, want)
	}
}

// cat concatenates ID lists.
func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
