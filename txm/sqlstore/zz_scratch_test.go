package sqlstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
)

func TestZZScratchKeyed(t *testing.T) {
	ts := newTestStore(t, kindPgx, Config{PollOnly: true})
	ctx := context.Background()
	ob := ts.Outbox()
	payload := []byte(strings.Repeat("x", 256))
	msgs := make([]async.Message, 10000)
	for i := range msgs {
		msgs[i] = async.NewMessage("t", "T", payload, async.WithMetadata(async.Metadata{async.MetaContentType: "application/json", async.MetaPartitionKey: fmt.Sprintf("k%d", i%1000)}))
	}
	if _, err := ob.SaveMany(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	_, _ = ts.pg.pool.Exec(ctx, "VACUUM ANALYZE txm_outbox")
	for _, lim := range []int{500, 500} {
		tx, _ := ts.pg.pool.Begin(ctx)
		_, _ = tx.Exec(ctx, ts.stmts.claimLockOwn, ts.claimKey)
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+ts.stmts.claim, lim, time.Minute.Microseconds())
		if err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for rows.Next() {
			var l string
			_ = rows.Scan(&l)
			sb.WriteString(l + "\n")
		}
		rows.Close()
		_ = tx.Rollback(ctx)
		t.Log(sb.String())
	}
}
