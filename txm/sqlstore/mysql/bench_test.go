package mysql_test

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/scenario"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

// The MySQL store against what a hand-written outbox does on the same
// table, in the same run:
//
//	go test -run '^$' -bench . ./txm/sqlstore/mysql/
//
// BenchmarkWrite/store is Store.InTx around Outbox.Save, one message per
// transaction; BenchmarkWrite/hand is BEGIN, the INSERT, COMMIT.
// BenchmarkClaimMark/store drains a backlog with Outbox.Claim and
// Outbox.MarkPublished, batches of 100 (the relay's leases);
// BenchmarkClaimMark/store-lock with LockingOutbox.ClaimLocked and MarkPublished
// in one Store.InTx (ProcessorConfig.LockClaims); BenchmarkClaimMark/hand with the
// loop a hand-written relay runs: BEGIN, SELECT ... FOR UPDATE SKIP LOCKED
// of the next 100 pending rows, DELETE them, COMMIT (no lease and no key
// order). ns/op is per message in both.

func benchMessage(i int) async.Message {
	return async.NewMessage("orders.placed", "OrderPlaced", []byte(`{"id":"1234","total":1250}`),
		async.WithMetadata(async.Metadata{
			async.MetaPartitionKey: fmt.Sprintf("order-%d", i%50),
			async.MetaContentType:  "application/json",
		}))
}

// handInsert is the hand-written insert into the store's outbox table.
func handInsert(s *sqlstore.LockingStore, table string) func(ctx context.Context, m async.Message) error {
	stmt := "INSERT INTO `" + table + "` (id, topic, name, partition_key, metadata, payload, sent_at, created_at) " +
		"VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))"
	return func(ctx context.Context, m async.Message) error {
		tx, err := s.DB().BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, stmt, m.ID(), m.Subject(), m.MessageName(), m.Metadata().PartitionKey(),
			`{"content-type":"application/json"}`, m.Data(), m.SentAt()); err != nil {
			return err
		}
		return tx.Commit()
	}
}

func BenchmarkWrite(b *testing.B) {
	ctx := context.Background()
	for _, impl := range []string{"store", "hand"} {
		b.Run(impl, func(b *testing.B) {
			cfg := tablesConfig(b, sqlstore.Config{})
			s := newStoreOn(b, cfg)
			save := func(ctx context.Context, m async.Message) error {
				return s.InTx(ctx, func(ctx context.Context) error { return s.Outbox().Save(ctx, m) })
			}
			if impl == "hand" {
				save = handInsert(s, cfg.OutboxTable)
			}
			i := 0
			for b.Loop() {
				if err := save(ctx, benchMessage(i)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkClaimMark(b *testing.B) {
	ctx := context.Background()
	const batch = 100
	for _, impl := range []string{"store", "store-lock", "hand"} {
		b.Run(impl, func(b *testing.B) {
			cfg := tablesConfig(b, sqlstore.Config{})
			s := newStoreOn(b, cfg)
			saveBacklog(b, s, b.N)
			drain := storeDrain(s, batch)
			switch impl {
			case "store-lock":
				drain = lockedDrain(s, batch)
			case "hand":
				drain = handDrain(s, cfg.OutboxTable, batch)
			}
			b.ResetTimer()
			done := 0
			for done < b.N {
				n, err := drain(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					b.Fatalf("drained %d of %d messages, then nothing", done, b.N)
				}
				done += n
			}
		})
	}
}

func storeDrain(s *sqlstore.LockingStore, batch int) func(ctx context.Context) (int, error) {
	o := s.Outbox()
	return func(ctx context.Context) (int, error) {
		claimed, err := o.Claim(ctx, batch, time.Minute)
		if err != nil {
			return 0, err
		}
		ids := make([]string, len(claimed))
		for i, c := range claimed {
			ids[i] = c.Message.ID()
		}
		return len(ids), o.MarkPublished(ctx, ids...)
	}
}

func lockedDrain(s *sqlstore.LockingStore, batch int) func(ctx context.Context) (int, error) {
	o := s.Outbox()
	return func(ctx context.Context) (n int, err error) {
		err = s.InTx(ctx, func(ctx context.Context) error {
			claimed, err := o.ClaimLocked(ctx, batch, time.Minute)
			if err != nil {
				return err
			}
			ids := make([]string, len(claimed))
			for i, c := range claimed {
				ids[i] = c.Message.ID()
			}
			n = len(ids)
			return o.MarkPublished(ctx, ids...)
		})
		return n, err
	}
}

func handDrain(s *sqlstore.LockingStore, table string, batch int) func(ctx context.Context) (int, error) {
	sel := fmt.Sprintf("SELECT seq, id, topic, name, metadata, payload, sent_at FROM `%s` WHERE state = 'pending' ORDER BY seq LIMIT %d FOR UPDATE SKIP LOCKED", table, batch)
	return func(ctx context.Context) (int, error) {
		tx, err := s.DB().BeginTx(ctx, nil)
		if err != nil {
			return 0, err
		}
		defer tx.Rollback()
		rows, err := tx.QueryContext(ctx, sel)
		if err != nil {
			return 0, err
		}
		var seqs []any
		for rows.Next() {
			var seq int64
			var id, topic, name, metadata string
			var payload []byte
			var sent time.Time
			if err := rows.Scan(&seq, &id, &topic, &name, &metadata, &payload, &sent); err != nil {
				_ = rows.Close()
				return 0, err
			}
			seqs = append(seqs, seq)
		}
		if err := rows.Close(); err != nil {
			return 0, err
		}
		if len(seqs) == 0 {
			return 0, tx.Commit()
		}
		del := "DELETE FROM `" + table + "` WHERE seq IN (?" + strings.Repeat(", ?", len(seqs)-1) + ")"
		if _, err := tx.ExecContext(ctx, del, seqs...); err != nil {
			return 0, err
		}
		return len(seqs), tx.Commit()
	}
}

// BenchmarkDeleteIndexes is what each secondary index of the outbox costs
// the server when the relay deletes published messages: the store's table
// as migrated (drop=none), and the same table with its unique ID, its
// claim_idx or both dropped. Each run saves b.N messages, waits for
// InnoDB's purge, then deletes them in order by ranges of 1,000 seqs, one
// transaction each, as the mark of a locked claim does, and waits for the
// purge of the deletes. mysqld-us/msg is the CPU of mysqld (or mariadbd)
// on this machine over the deletes and their purge, per message.
func BenchmarkDeleteIndexes(b *testing.B) {
	ctx := context.Background()
	for _, drop := range []string{"none", "id_key", "claim_idx", "both"} {
		b.Run("drop="+drop, func(b *testing.B) {
			cfg := tablesConfig(b, sqlstore.Config{})
			s := newStoreOn(b, cfg)
			db := s.DB()
			for _, index := range map[string][]string{"id_key": {"id_key"}, "claim_idx": {"claim_idx"}, "both": {"id_key", "claim_idx"}}[drop] {
				if _, err := db.ExecContext(ctx, "ALTER TABLE `"+cfg.OutboxTable+"` DROP INDEX `"+cfg.OutboxTable+"_"+index+"`"); err != nil {
					b.Fatal(err)
				}
			}
			saveBacklog(b, s, b.N)
			var first, last int64
			if err := db.QueryRowContext(ctx, "SELECT min(seq), max(seq) FROM `"+cfg.OutboxTable+"`").Scan(&first, &last); err != nil {
				b.Fatal(err)
			}
			waitForPurge(b, db)
			before, err := scenario.ReadCPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			del := "DELETE FROM `" + cfg.OutboxTable + "` WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT 1000"
			for lo := first; lo <= last; lo += 1000 {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tx.ExecContext(ctx, del, lo, lo+999); err != nil {
					_ = tx.Rollback()
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			waitForPurge(b, db)
			b.StopTimer()
			reportMySQLCPU(b, before)
		})
	}
}

// reportMySQLCPU reports the CPU that mysqld or mariadbd spent since before,
// per operation, as mysqld-us/msg.
func reportMySQLCPU(b *testing.B, before scenario.CPU) {
	b.Helper()
	after, err := scenario.ReadCPU()
	if err != nil {
		b.Fatal(err)
	}
	if after.MySQL == 0 {
		b.Skip("no mysqld or mariadbd on this machine: its CPU cannot be read")
	}
	b.ReportMetric(float64(after.Sub(before).MySQL.Microseconds())/float64(b.N), "mysqld-us/msg")
}

// waitForPurge waits until InnoDB's purge has caught up (a history list of
// fewer than 50 undo logs), for at most a minute.
func waitForPurge(b *testing.B, db *sql.DB) {
	b.Helper()
	for range 1200 {
		var name string
		var history int64
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'").Scan(&name, &history); err != nil {
			b.Fatal(err)
		}
		if history < 50 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatal("InnoDB's purge did not catch up within a minute")
}

// saveBacklog saves n messages (benchMessage) in batches of 1,000.
func saveBacklog(b *testing.B, s *sqlstore.LockingStore, n int) {
	b.Helper()
	msgs := make([]async.Message, n)
	for i := range msgs {
		msgs[i] = benchMessage(i)
	}
	for chunk := range slices.Chunk(msgs, 1000) {
		if _, err := s.Outbox().SaveMany(context.Background(), chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInsertRow is what the server spends (mysqld-us/msg, from /proc)
// on the outbox's INSERT of a message, 50 to a transaction on one
// connection so that the commits weigh little: Outbox.Save on the table
// as migrated; on it without its two secondary indexes; without those, its
// CHECK and its generated column (held_key), the bare columns; and a hand-written
// INSERT into a minimal table of the write path's baseline (a serial key,
// the topic and the payload; scenario.Path), with the same payload.
func BenchmarkInsertRow(b *testing.B) {
	ctx := context.Background()
	for _, table := range []string{"as-migrated", "no-indexes", "bare-columns", "minimal"} {
		b.Run("table="+table, func(b *testing.B) {
			cfg := tablesConfig(b, sqlstore.Config{})
			s := newStoreOn(b, cfg)
			db := s.DB()
			alter := map[string][]string{
				"no-indexes":   {"DROP INDEX `{t}_id_key`", "DROP INDEX `{t}_claim_idx`"},
				"bare-columns": {"DROP INDEX `{t}_id_key`", "DROP INDEX `{t}_claim_idx`", "DROP CONSTRAINT `{t}_state_check`", "DROP COLUMN held_key"},
			}[table]
			for _, a := range alter {
				if _, err := db.ExecContext(ctx, "ALTER TABLE `"+cfg.OutboxTable+"` "+strings.ReplaceAll(a, "{t}", cfg.OutboxTable)); err != nil {
					b.Fatal(err)
				}
			}
			minimal := cfg.OutboxTable + "_minimal"
			if table == "minimal" {
				if _, err := db.ExecContext(ctx, "CREATE TABLE `"+minimal+"` (id BIGINT AUTO_INCREMENT PRIMARY KEY, topic VARCHAR(255) NOT NULL, payload LONGBLOB NOT NULL)"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE `"+minimal+"`") })
			}
			msgs := make([]async.Message, b.N)
			for i := range msgs {
				msgs[i] = benchMessage(i)
			}
			insert := "INSERT INTO `" + minimal + "` (topic, payload) VALUES (?, ?)"
			waitForPurge(b, db)
			before, err := scenario.ReadCPU()
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for chunk := range slices.Chunk(msgs, 50) {
				err := s.InTx(ctx, func(ctx context.Context) error {
					tx, _ := sqlstore.TxFromContext(ctx)
					for _, m := range chunk {
						var err error
						if table == "minimal" {
							_, err = tx.ExecContext(ctx, insert, m.Subject(), m.Data())
						} else {
							err = s.Outbox().Save(ctx, m)
						}
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportMySQLCPU(b, before)
		})
	}
}
