package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/transmanager/transmanager/async"
)

// The tests of this file check the store benchmarks' baselines: that the
// hand-written SQL writes what the library writes, and that every path
// does the work it is measured for. They use the benchmarks' own helpers.

// storeOutboxRow is an outbox row with the columns a save sets.
type storeOutboxRow struct {
	Topic, Name  string
	Key          *string
	Metadata     string
	Payload      []byte
	SentAt       time.Time
	State        string
	Attempts     int
	Leased, Due  bool
	CreatedByNow bool
}

// storeOutboxRows reads the outbox in save order.
func (e *storePG) storeOutboxRows(t *testing.T) []storeOutboxRow {
	t.Helper()
	ctx := context.Background()
	rows, err := e.pool.Query(ctx, `SELECT topic, name, partition_key, metadata::text, payload, sent_at, state, attempts,
        claimed_until IS NOT NULL, next_attempt_at IS NULL, created_at <= now()
    FROM `+e.outbox+` ORDER BY seq`)
	storeCheck(t, "read the outbox", err)
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (storeOutboxRow, error) {
		var o storeOutboxRow
		err := r.Scan(&o.Topic, &o.Name, &o.Key, &o.Metadata, &o.Payload, &o.SentAt, &o.State, &o.Attempts,
			&o.Leased, &o.Due, &o.CreatedByNow)
		return o, err
	})
	storeCheck(t, "read the outbox", err)
	return out
}

// sameRow compares rows without their send times, which differ between
// two transactions.
func sameRow(a, b storeOutboxRow) bool {
	if storeDeref(a.Key) != storeDeref(b.Key) {
		return false
	}
	a.SentAt, b.SentAt = time.Time{}, time.Time{}
	a.Key, b.Key = nil, nil
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// TestStoreWritePaths runs every path of BenchmarkStoreWrite and checks
// that each transaction wrote its order and, except for "none", one
// pending outbox row equal to the library's.
func TestStoreWritePaths(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last: after the stores close
	var libRow *storeOutboxRow
	for _, p := range storeWritePaths {
		t.Run(p.driver+"/"+p.path, func(t *testing.T) {
			e := newStorePG(t, 2)
			var db *sql.DB
			if p.driver == "sql" {
				db = e.sqlDB(t, 2)
			}
			op := storeWriteOp(t, e, db, p)
			if p.kind == storeWriteRawNotify || (p.kind == storeWriteLib && !p.cfg.PollOnly) {
				e.listen(t, op) // checks that the transaction notifies
			}
			ctx := context.Background()
			e.exec(t, "TRUNCATE "+e.outbox+", "+e.orders) // the wait for the listener wrote some
			const n = 5
			for i := range n {
				storeCheck(t, "transaction", op(ctx, i))
			}
			var orders int
			storeCheck(t, "count orders", e.pool.QueryRow(ctx, "SELECT count(*) FROM "+e.orders).Scan(&orders))
			if orders != n {
				t.Fatalf("%d orders, want %d", orders, n)
			}
			rows := e.storeOutboxRows(t)
			if p.kind == storeWriteNone {
				if len(rows) != 0 {
					t.Fatalf("%d outbox rows without an outbox write", len(rows))
				}
				return
			}
			if len(rows) != n {
				t.Fatalf("%d outbox rows, want %d", len(rows), n)
			}
			for i, r := range rows {
				if r.State != "pending" || r.Attempts != 0 || r.Leased || !r.Due || !r.CreatedByNow ||
					r.Key == nil || *r.Key != storeKey(i, storeCustomers) || len(r.Payload) != storePayloadSize {
					t.Errorf("row %d: %+v", i, r)
				}
			}
			if libRow == nil && p.kind == storeWriteLib {
				libRow = &rows[0]
			}
			if libRow != nil && !sameRow(*libRow, rows[0]) {
				t.Errorf("row %+v differs from the library's %+v", rows[0], *libRow)
			}
		})
	}
	if libRow == nil {
		t.Skip("no library path ran")
	}
}

// TestStoreSaveManyPaths saves the same messages with every path of
// BenchmarkStoreSaveMany and checks that the rows are identical.
func TestStoreSaveManyPaths(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	msgs := make([]async.Message, 250)
	for i := range msgs {
		msgs[i] = storeMessage(storeKey(i, 7))
	}
	msgs[3] = storeMessage("") // a message without a key
	ctx := context.Background()
	read := map[string]string{}
	for _, p := range storeSaveManyPaths {
		t.Run(p.db+"/"+p.path, func(t *testing.T) {
			var dump func() string
			var save func(ctx context.Context, msgs []async.Message) (int, error)
			if p.db == "postgres" {
				e := newStorePG(t, 2)
				save = storePGSaveMany(t, e, p.path)
				dump = func() string {
					rows, err := e.pool.Query(ctx, `SELECT id, topic, name, partition_key, metadata::text, payload, sent_at, state
                        FROM `+e.outbox+` ORDER BY seq`)
					storeCheck(t, "read the outbox", err)
					return storeDump(t, rows)
				}
			} else {
				e := newStoreSQLite(t)
				save = storeSQLiteSaveMany(e, p.path)
				dump = func() string {
					rows, err := e.db.QueryContext(ctx, `SELECT id, topic, name, partition_key, metadata, payload, sent_at, state
                        FROM `+e.outbox+` ORDER BY seq`)
					storeCheck(t, "read the outbox", err)
					defer rows.Close()
					var out string
					for rows.Next() {
						var id, topic, name, md, state string
						var key *string
						var payload []byte
						var sent int64
						storeCheck(t, "scan", rows.Scan(&id, &topic, &name, &key, &md, &payload, &sent, &state))
						out += fmt.Sprintf("%s %s %s %v %s %x %d %s\n", id, topic, name, storeDeref(key), md, payload, sent, state)
					}
					storeCheck(t, "read the outbox", rows.Err())
					return out
				}
			}
			n, err := save(ctx, msgs)
			if err != nil || n != len(msgs) {
				t.Fatalf("saved %d of %d: %v", n, len(msgs), err)
			}
			got := dump()
			if want, ok := read[p.db]; ok && got != want {
				t.Errorf("rows differ from the first path's:\n%s\nwant\n%s", got, want)
			}
			read[p.db] = got
		})
	}
}

func storeDeref(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// storeDump renders PostgreSQL outbox rows, with the times in Unix
// microseconds as SQLite keeps them.
func storeDump(t *testing.T, rows pgx.Rows) string {
	t.Helper()
	defer rows.Close()
	var out string
	for rows.Next() {
		var id, topic, name, md, state string
		var key *string
		var payload []byte
		var sent time.Time
		storeCheck(t, "scan", rows.Scan(&id, &topic, &name, &key, &md, &payload, &sent, &state))
		out += fmt.Sprintf("%s %s %s %v %s %x %d %s\n", id, topic, name, storeDeref(key), md, payload, sent.UnixMicro(), state)
	}
	storeCheck(t, "read the outbox", rows.Err())
	return out
}

// TestStoreClaimPaths drains with every path of BenchmarkStoreClaim and
// checks that each message is claimed once, leased for storeLease and then
// published, and that the claims stop when nothing is left.
func TestStoreClaimPaths(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	const n, limit = 1250, 100
	ctx := context.Background()
	for _, keys := range []int{0, 7} {
		for _, path := range []string{"raw-tx", "raw-1stmt", "store", "store-generic"} {
			t.Run(fmt.Sprintf("keys=%d/%s", keys, path), func(t *testing.T) {
				e := newStorePG(t, 2)
				drain := storeDrain(e, path, limit)
				if path == "store-generic" {
					e.filler = e.genericStore(t) // claims and drains through it
					drain = storeDrainStore(e.filler.Store, limit)
				}
				e.fill(t, n, keys)
				// One claim, not marked: limit rows leased for about the lease.
				one := storeClaimOnce(t, e, path, limit)
				var leased int
				var secs float64
				storeCheck(t, "count leases", e.pool.QueryRow(ctx, `SELECT count(*),
                        coalesce(extract(epoch FROM max(claimed_until) - now()), 0)::float8
                    FROM `+e.outbox+` WHERE claimed_until IS NOT NULL`).Scan(&leased, &secs))
				until := time.Duration(secs * float64(time.Second))
				if one != limit || leased != limit || until < storeLease-10*time.Second || until > storeLease+time.Second {
					t.Fatalf("one claim: %d returned, %d leased until now+%v; want %d for %v", one, leased, until, limit, storeLease)
				}
				// The leased rows stay with their claim: the drain takes the
				// rest, except that the store parks the keys of leased
				// messages (with 7 keys, all of them).
				want := n - limit
				if (path == "store" || path == "store-generic") && keys > 0 {
					want = 0
				}
				got, err := drain(ctx)
				storeCheck(t, "drain", err)
				if got != want {
					t.Fatalf("drained %d, want %d", got, want)
				}
				published, other := e.counts(t)
				if published != want || other != n-want {
					t.Fatalf("%d published and %d other rows, want %d and %d", published, other, want, n-want)
				}
			})
		}
	}
}

// storeClaimOnce claims once with the path's claim, without marking the
// messages published, and returns how many it claimed.
func storeClaimOnce(t *testing.T, e *storePG, path string, limit int) int {
	t.Helper()
	ctx := context.Background()
	if path == "store" || path == "store-generic" {
		c, err := e.filler.Outbox().Claim(ctx, limit, storeLease)
		storeCheck(t, "claim", err)
		return len(c)
	}
	// The hand-written drain marks its claims published; take a claim of
	// its own SQL instead.
	var ids []string
	var err error
	if path == "raw-1stmt" {
		var rows pgx.Rows
		rows, err = e.pool.Query(ctx, e.sql.claimOne, limit, storeLease.Microseconds())
		if err == nil {
			ids, err = storeScanClaimed(rows)
		}
	} else {
		err = pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, e.sql.claimSelect, limit)
			if err != nil {
				return err
			}
			locked, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			rows, err = tx.Query(ctx, e.sql.claimLease, locked, storeLease.Microseconds())
			if err != nil {
				return err
			}
			ids, err = storeScanClaimed(rows)
			return err
		})
	}
	storeCheck(t, "claim", err)
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != len(ids) {
		t.Fatalf("claim returned duplicate IDs: %v", ids)
	}
	return len(ids)
}

// TestStoreInboxPaths runs every path of BenchmarkStoreInbox and checks
// that the hand-written inserts write the columns the library writes.
func TestStoreInboxPaths(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ctx := context.Background()
	const cols = `consumer_group, topic, name, metadata, length(payload), sent_at <= received_at, received_at <= created_at`
	first := map[string]string{}
	for _, c := range []struct {
		db    string
		batch int
	}{{"sqlite", 1}, {"postgres", 1}, {"postgres", 100}} {
		for _, path := range []string{"lib", "raw"} {
			t.Run(fmt.Sprintf("%s/batch=%d/%s", c.db, c.batch, path), func(t *testing.T) {
				var rows func() ([]string, error)
				var op func(ctx context.Context) error
				if c.db == "postgres" {
					e := newStorePG(t, 2)
					op = storePGInboxOp(t, e, path, c.batch)
					rows = func() ([]string, error) {
						r, err := e.pool.Query(ctx, `SELECT concat_ws(' ', `+cols+`) FROM `+e.inbox)
						if err != nil {
							return nil, err
						}
						return pgx.CollectRows(r, pgx.RowTo[string])
					}
				} else {
					e := newStoreSQLite(t)
					op = storeSQLiteInboxOp(e, path)
					rows = func() ([]string, error) {
						r, err := e.db.QueryContext(ctx, `SELECT concat_ws(' ', `+cols+`) FROM `+e.inbox)
						if err != nil {
							return nil, err
						}
						defer r.Close()
						var out []string
						for r.Next() {
							var s string
							if err := r.Scan(&s); err != nil {
								return nil, err
							}
							out = append(out, s)
						}
						return out, r.Err()
					}
				}
				const ops = 3
				for range ops {
					storeCheck(t, "save", op(ctx))
				}
				got, err := rows()
				storeCheck(t, "read the inbox", err)
				if len(got) != ops*c.batch {
					t.Fatalf("%d inbox rows, want %d", len(got), ops*c.batch)
				}
				for _, r := range got {
					if r != got[0] {
						t.Fatalf("rows differ: %q and %q", r, got[0])
					}
				}
				if want, ok := first[c.db]; ok && got[0] != want {
					t.Errorf("row %q differs from the library's %q", got[0], want)
				}
				first[c.db] = got[0]
			})
		}
	}
}
