package storetest

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

func testClaimer(t *testing.T, h Harness) {
	t.Run("ClaimLeases", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		msgs := seq(3, "orders", "")
		e.save(e.ctx, msgs...)
		got := e.claim(c, 2, longLease)
		equalIDs(t, "first Claim", claimedIDs(got), msgIDs(msgs[:2]))
		for _, cl := range got {
			if cl.Attempts != 0 {
				t.Errorf("%s: Attempts = %d, want 0", cl.Message.ID(), cl.Attempts)
			}
		}
		assertMessage(t, got[0].Message, msgs[0])
		equalIDs(t, "second Claim", claimedIDs(e.claim(c, 10, longLease)), msgIDs(msgs[2:]))
		equalIDs(t, "third Claim", claimedIDs(e.claim(c, 10, longLease)), nil)
		equalIDs(t, "FindUnpublished while all are leased", msgIDs(e.find(10)), nil)
	})

	t.Run("ClaimLimitZero", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		e.save(e.ctx, newMsg("orders", ""))
		equalIDs(t, "Claim(0)", claimedIDs(e.claim(c, 0, longLease)), nil)
		if got := e.claim(c, 1, longLease); len(got) != 1 {
			t.Fatalf("Claim(1) after Claim(0) returned %d messages, want 1", len(got))
		}
	})

	t.Run("LeaseExpiryAllowsTakeover", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		msgs := seq(2, "orders", "")
		e.save(e.ctx, msgs...)
		start := time.Now()
		equalIDs(t, "first Claim", claimedIDs(e.claim(c, 10, e.lease)), msgIDs(msgs))
		again := claimedIDs(e.claim(c, 10, longLease))
		if e.before(start, e.lease) {
			equalIDs(t, "Claim within the lease", again, nil)
		}
		if len(again) > 0 {
			return // the lease ran out before the check: takeover happened
		}
		e.pass(start, e.lease+time.Millisecond)
		got := e.claimAfter(c, 10, longLease, "the lease to end")
		equalIDs(t, "Claim after the lease", claimedIDs(got), msgIDs(msgs))
		for _, cl := range got {
			if cl.Attempts != 0 {
				t.Errorf("%s: Attempts after lease expiry = %d, want 0", cl.Message.ID(), cl.Attempts)
			}
		}
	})

	t.Run("ExtendClaimsKeepsTheLease", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		msgs := seq(2, "orders", "")
		e.save(e.ctx, msgs...)
		ids := msgIDs(msgs)
		start := time.Now()
		equalIDs(t, "Claim", claimedIDs(e.claim(c, 10, e.lease)), ids)
		if e.fake() {
			e.st.Advance(e.lease / 2)
		}
		extended := time.Now()
		if err := c.ExtendClaims(e.ctx, 4*e.lease, ids...); err != nil {
			t.Fatalf("ExtendClaims: %v", err)
		}
		if !e.before(start, e.lease) {
			return // the first lease may have ended before it was extended
		}
		// Let the first lease run out, but not the extended one.
		if e.fake() {
			e.st.Advance(e.lease)
		} else {
			e.pass(start, 2*e.lease)
		}
		got := claimedIDs(e.claim(c, 10, longLease))
		if e.before(extended, 4*e.lease) {
			equalIDs(t, "Claim after the first lease, within the extended one", got, nil)
		}
		if len(got) > 0 {
			return
		}
		e.pass(extended, 4*e.lease+time.Millisecond)
		equalIDs(t, "Claim after the extended lease", claimedIDs(e.claimAfter(c, 10, longLease, "the extended lease to end")), ids)
	})

	t.Run("ReleaseClaims", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		msgs := seq(3, "orders", "")
		e.save(e.ctx, msgs...)
		ids := msgIDs(msgs)
		e.claim(c, 10, longLease)
		if err := c.ReleaseClaims(e.ctx, ids[0], ids[2], async.NewID()); err != nil {
			t.Fatalf("ReleaseClaims: %v", err)
		}
		got := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after ReleaseClaims", claimedIDs(got), []string{ids[0], ids[2]})
		for _, cl := range got {
			if cl.Attempts != 0 {
				t.Errorf("%s: Attempts after release = %d, want 0", cl.Message.ID(), cl.Attempts)
			}
		}
	})

	// A batch of more IDs than a database takes well in one list (MariaDB
	// plans an IN list of 1000 values or more as a join) is claimed,
	// extended, released and marked whole.
	t.Run("LargeBatch", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		msgs := seq(1500, "orders", "")
		e.save(e.ctx, msgs...)
		ids := msgIDs(msgs)
		equalIDs(t, "Claim(1500)", claimedIDs(e.claim(c, 1500, longLease)), ids)
		if err := c.ExtendClaims(e.ctx, longLease, ids...); err != nil {
			t.Fatalf("ExtendClaims of 1500: %v", err)
		}
		if err := c.ReleaseClaims(e.ctx, ids[:1200]...); err != nil {
			t.Fatalf("ReleaseClaims of 1200: %v", err)
		}
		equalIDs(t, "Claim after releasing 1200", claimedIDs(e.claim(c, 1500, longLease)), ids[:1200])
		e.markPublished(ids...)
		equalIDs(t, "FindUnpublished after marking 1500", msgIDs(e.find(10)), nil)
	})

	t.Run("MarkFailedDelaysAndCounts", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		failing, other := newMsg("orders", ""), newMsg("orders", "")
		e.save(e.ctx, failing, other)
		e.claim(c, 1, longLease)
		start := time.Now()
		if err := c.MarkFailed(e.ctx, failing.ID(), e.lease, "broker down"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		got := claimedIDs(e.claim(c, 10, longLease))
		if e.before(start, e.lease) {
			equalIDs(t, "Claim before the retry is due", got, []string{other.ID()})
		}
		if slices.Contains(got, failing.ID()) {
			return
		}
		e.pass(start, e.lease+time.Millisecond)
		retried := e.claimAfter(c, 10, longLease, "the retry to fall due")
		equalIDs(t, "Claim after the retry delay", claimedIDs(retried), []string{failing.ID()})
		if retried[0].Attempts != 1 {
			t.Errorf("Attempts after one MarkFailed = %d, want 1", retried[0].Attempts)
		}
		if err := c.MarkFailed(e.ctx, failing.ID(), 0, "again"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		again := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after MarkFailed with no delay", claimedIDs(again), []string{failing.ID()})
		if again[0].Attempts != 2 {
			t.Errorf("Attempts after two MarkFailed = %d, want 2", again[0].Attempts)
		}
	})

	t.Run("KeyOrder", func(t *testing.T) { testKeyOrder(t, h) })
	t.Run("RandomFailuresKeepKeyOrder", func(t *testing.T) { testRandomFailures(t, h) })
	for _, relays := range []int{2, 4} {
		t.Run(fmt.Sprintf("ConcurrentRelays/%d", relays), func(t *testing.T) { testConcurrentRelays(t, h, relays) })
	}
}

func testKeyOrder(t *testing.T, h Harness) {
	t.Run("LeasedHeadParksItsKey", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		a1, b1, u1, a2, b2, u2 := newMsg("orders", "a"), newMsg("orders", "b"), newMsg("orders", ""),
			newMsg("orders", "a"), newMsg("orders", "b"), newMsg("orders", "")
		e.save(e.ctx, a1, b1, u1, a2, b2, u2)
		equalIDs(t, "Claim(1)", claimedIDs(e.claim(c, 1, longLease)), []string{a1.ID()})
		equalIDs(t, "Claim with a leased", claimedIDs(e.claim(c, 10, longLease)),
			[]string{b1.ID(), u1.ID(), b2.ID(), u2.ID()})
		equalIDs(t, "Claim with everything leased", claimedIDs(e.claim(c, 10, longLease)), nil)
		e.markPublished(a1.ID())
		equalIDs(t, "Claim after a1 is published", claimedIDs(e.claim(c, 10, longLease)), []string{a2.ID()})
	})

	t.Run("KeyComesOutInOneBatchInOrder", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		k := seq(3, "orders", "k")
		e.save(e.ctx, k...)
		equalIDs(t, "Claim(2)", claimedIDs(e.claim(c, 2, longLease)), msgIDs(k[:2]))
		equalIDs(t, "Claim behind leased messages", claimedIDs(e.claim(c, 10, longLease)), nil)
		e.markPublished(k[0].ID())
		equalIDs(t, "Claim with k[1] still leased", claimedIDs(e.claim(c, 10, longLease)), nil)
		e.markPublished(k[1].ID())
		equalIDs(t, "Claim after k[1] is published", claimedIDs(e.claim(c, 10, longLease)), msgIDs(k[2:]))
	})

	t.Run("WaitingHeadParksItsKey", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		k1, k2, o1, u1 := newMsg("orders", "k"), newMsg("orders", "k"), newMsg("orders", "o"), newMsg("orders", "")
		e.save(e.ctx, k1, k2, o1, u1)
		e.claim(c, 10, longLease)
		if err := c.ReleaseClaims(e.ctx, k2.ID(), o1.ID(), u1.ID()); err != nil {
			t.Fatalf("ReleaseClaims: %v", err)
		}
		if err := c.MarkFailed(e.ctx, k1.ID(), longLease, "down"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		equalIDs(t, "Claim while k1 waits", claimedIDs(e.claim(c, 10, longLease)), []string{o1.ID(), u1.ID()})
	})

	t.Run("ReleasedHeadComesFirst", func(t *testing.T) {
		e := setup(t, h)
		c := e.claimer()
		k := seq(3, "orders", "k")
		e.save(e.ctx, k...)
		e.claim(c, 10, longLease)
		if err := c.ReleaseClaims(e.ctx, k[1].ID(), k[2].ID()); err != nil {
			t.Fatalf("ReleaseClaims: %v", err)
		}
		equalIDs(t, "Claim with k[0] leased", claimedIDs(e.claim(c, 10, longLease)), nil)
		if err := c.MarkFailed(e.ctx, k[0].ID(), 0, "down"); err != nil {
			t.Fatalf("MarkFailed: %v", err)
		}
		got := e.claim(c, 10, longLease)
		equalIDs(t, "Claim after the head failed without delay", claimedIDs(got), msgIDs(k))
		if got[0].Attempts != 1 || got[1].Attempts != 0 {
			t.Errorf("Attempts = %d, %d, want 1, 0", got[0].Attempts, got[1].Attempts)
		}
	})
}

// relayLog records what simulated relays published.
type relayLog struct {
	mu        sync.Mutex
	held      map[string]bool     // claimed and not yet marked published
	published map[string]int      // ID → times published
	byKey     map[string][]string // key → IDs in publish order
}

func newRelayLog() *relayLog {
	return &relayLog{held: map[string]bool{}, published: map[string]int{}, byKey: map[string][]string{}}
}

// take records a claim; it fails when another relay holds the ID.
func (l *relayLog) take(t *testing.T, relay int, cs []txm.Claimed) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cs {
		id := c.Message.ID()
		if l.held[id] {
			t.Errorf("relay %d claimed %s while another relay held it", relay, id)
		}
		l.held[id] = true
	}
}

func (l *relayLog) publish(m async.Message) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.published[m.ID()]++
	if k := m.Metadata().PartitionKey(); k != "" {
		l.byKey[k] = append(l.byKey[k], m.ID())
	}
}

func (l *relayLog) drop(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		delete(l.held, id)
	}
}

// check compares the log with the saved messages: each published exactly
// once, each key in save order.
func (l *relayLog) check(t *testing.T, saved []async.Message) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	wantKey := map[string][]string{}
	for _, m := range saved {
		if n := l.published[m.ID()]; n != 1 {
			t.Errorf("%s published %d times, want once", m.ID(), n)
		}
		if k := m.Metadata().PartitionKey(); k != "" {
			wantKey[k] = append(wantKey[k], m.ID())
		}
	}
	if len(l.published) != len(saved) {
		t.Errorf("published %d distinct IDs, want %d", len(l.published), len(saved))
	}
	for k, want := range wantKey {
		if !slices.Equal(l.byKey[k], want) {
			t.Errorf("key %q published in order %v, want save order %v", k, l.byKey[k], want)
		}
	}
}

// randomMessages saves n messages with random keys (some without one).
func randomMessages(e *env, rng *rand.Rand, n int) []async.Message {
	keys := []string{"", "k0", "k1", "k2", "k3", "k4", "k5"}
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = newMsg("orders", keys[rng.IntN(len(keys))])
	}
	e.save(e.ctx, msgs...)
	return msgs
}

func testRandomFailures(t *testing.T, h Harness) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("Seed%d", seed), func(t *testing.T) {
			e := setup(t, h)
			c := e.claimer()
			rng := rand.New(rand.NewPCG(seed, 42))
			msgs := randomMessages(e, rng, 150)
			log := newRelayLog()
			published := 0
			for round := 0; published < len(msgs); round++ {
				if round > 20*len(msgs) {
					t.Fatalf("gave up after %d rounds with %d of %d published", round, published, len(msgs))
				}
				batch := e.claim(c, 1+rng.IntN(10), longLease)
				if len(batch) == 0 {
					t.Fatalf("Claim returned nothing with %d of %d published", published, len(msgs))
				}
				failedKeys := map[string]bool{}
				var done, released []string
				for _, cl := range batch {
					key := cl.Message.Metadata().PartitionKey()
					switch {
					case key != "" && failedKeys[key]:
						released = append(released, cl.Message.ID()) // keep the key's order
					case rng.IntN(10) < 3:
						if err := c.MarkFailed(e.ctx, cl.Message.ID(), 0, "random failure"); err != nil {
							t.Fatalf("MarkFailed: %v", err)
						}
						if key != "" {
							failedKeys[key] = true
						}
					default:
						log.publish(cl.Message)
						done = append(done, cl.Message.ID())
					}
				}
				if len(done) > 0 {
					e.markPublished(done...)
					published += len(done)
				}
				if len(released) > 0 {
					if err := c.ReleaseClaims(e.ctx, released...); err != nil {
						t.Fatalf("ReleaseClaims: %v", err)
					}
				}
			}
			log.check(t, msgs)
			equalIDs(t, "Claim after everything is published", claimedIDs(e.claim(c, 10, longLease)), nil)
		})
	}
}

func testConcurrentRelays(t *testing.T, h Harness, relays int) {
	e := setup(t, h)
	c := e.claimer()
	rng := rand.New(rand.NewPCG(uint64(relays), 7))
	msgs := randomMessages(e, rng, 200)
	log := newRelayLog()
	var (
		published atomic.Int64
		wg        sync.WaitGroup
	)
	total := int64(len(msgs))
	for r := range relays {
		wg.Go(func() {
			for published.Load() < total && e.ctx.Err() == nil && !t.Failed() {
				batch, err := c.Claim(e.ctx, 1+r*3, longLease)
				if err != nil {
					t.Errorf("relay %d: Claim: %v", r, err)
					return
				}
				if len(batch) == 0 {
					// The rest is held by other relays: let them run.
					timer := time.NewTimer(time.Millisecond)
					select {
					case <-timer.C:
					case <-e.ctx.Done():
						timer.Stop()
					}
					continue
				}
				log.take(t, r, batch)
				ids := claimedIDs(batch)
				for _, cl := range batch {
					log.publish(cl.Message)
				}
				if err := e.st.Outbox.MarkPublished(e.ctx, ids...); err != nil {
					t.Errorf("relay %d: MarkPublished: %v", r, err)
					return
				}
				log.drop(ids...)
				published.Add(int64(len(ids)))
			}
		})
	}
	wg.Wait()
	if err := e.ctx.Err(); err != nil {
		t.Fatalf("relays did not finish: %v (%d of %d published)", err, published.Load(), total)
	}
	log.check(t, msgs)
}
