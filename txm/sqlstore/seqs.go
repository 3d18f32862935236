package sqlstore

import "sync"

// maxLeasedSeqs bounds leasedSeqs: past it the cache starts afresh. Its
// entries are only a shortcut, so losing some costs a lookup by ID.
const maxLeasedSeqs = 1 << 17

// leasedSeqs remembers the seq of each message that a lease claim of this
// store returned, until its outcome is recorded, so that MarkPublished
// finds its row by seq in pending_idx instead of by text ID in the
// primary key (PostgreSQL). A message's seq never changes; a message
// deleted and saved again under the same ID gets a new one, and a stale
// entry then matches no row, which leaves the message pending: it is
// published again, never lost.
type leasedSeqs struct {
	mu sync.Mutex
	m  map[string]int64
}

func (c *leasedSeqs) add(rows []claimedRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m)+len(rows) > maxLeasedSeqs {
		c.m = make(map[string]int64, len(rows))
	}
	for _, r := range rows {
		c.m[r.Message.ID()] = r.seq
	}
}

// take returns the seqs of ids and forgets them when it knows all of
// them; otherwise it reports false and keeps them.
func (c *leasedSeqs) take(ids []string) ([]int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return nil, false
	}
	seqs := make([]int64, len(ids))
	for i, id := range ids {
		seq, ok := c.m[id]
		if !ok {
			return nil, false
		}
		seqs[i] = seq
	}
	for _, id := range ids {
		delete(c.m, id)
	}
	return seqs, true
}

func (c *leasedSeqs) forget(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id)
	}
}

// minRun is the fewest consecutive seqs that a locked claim's lock and
// mark (MySQL) read by their range rather than in a list with the others:
// a statement is a round trip.
const minRun = 32

// seqRun is the seqs first to last, every one of them.
type seqRun struct{ first, last int64 }

func (r seqRun) len() int { return int(r.last - r.first + 1) }

// seqRuns splits seqs, sorted and without repeats, into the runs of at
// least minRun consecutive seqs and the others.
func seqRuns(seqs []int64) (runs []seqRun, rest []int64) {
	for len(seqs) > 0 {
		n := 1
		for n < len(seqs) && seqs[n] == seqs[n-1]+1 {
			n++
		}
		if n >= minRun {
			runs = append(runs, seqRun{seqs[0], seqs[n-1]})
		} else {
			rest = append(rest, seqs[:n]...)
		}
		seqs = seqs[n:]
	}
	return runs, rest
}
