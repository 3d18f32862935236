package scenario

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LoopMaxPending is the JetStream context's limit of asynchronous
// publishes awaiting their PubAck in the hand-written loop.
const LoopMaxPending = 8192

// Loop is the strong hand-written relay that a user would write instead of
// the library, on a minimal table of its own:
//
//	outbox(id bigserial primary key, subject text, payload bytea,
//	       created_at timestamptz default now(), published_at timestamptz)
//
// with one partial index (id) WHERE published_at IS NULL. Each batch is one
// transaction: SELECT ... ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED,
// PublishAsync of every row with Nats-Msg-Id = id, a wait for every PubAck,
// UPDATE ... SET published_at = now() WHERE id = ANY($1), COMMIT. It keeps
// no partition-key order, retries nothing and has no dead letters.
type Loop struct {
	Pool  *pgxpool.Pool
	JS    jetstream.JetStream // made with jetstream.WithPublishAsyncMaxPending(LoopMaxPending)
	Table string              // qualified table name
	Size  int                 // the batch size

	claim, mark string
	ids         []int64
	futures     []jetstream.PubAckFuture
}

// LoopTable is the loop's table in schema.
func LoopTable(schema string) string { return schema + ".outbox" }

// CreateLoopTable creates the loop's table and index in e's schema.
func (e *Env) CreateLoopTable(ctx context.Context) error {
	t := LoopTable(e.Schema)
	_, err := e.Pool.Exec(ctx, `CREATE TABLE `+t+` (
    id           bigserial PRIMARY KEY,
    subject      text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX ON `+t+` (id) WHERE published_at IS NULL`)
	if err != nil {
		return fmt.Errorf("create the loop's table: %w", err)
	}
	return nil
}

// FillLoop loads n rows of payload on e's topic into the loop's table with
// COPY, then settles the table.
func (e *Env) FillLoop(ctx context.Context, n int, payload []byte) error {
	t := LoopTable(e.Schema)
	if _, err := e.Pool.Exec(ctx, "TRUNCATE "+t); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	rows := 0
	copied, err := e.Pool.CopyFrom(ctx, pgx.Identifier{e.Schema, "outbox"}, []string{"subject", "payload"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if rows == n {
				return nil, nil
			}
			rows++
			return []any{e.Topic, payload}, nil
		}))
	if err != nil || copied != int64(n) {
		return fmt.Errorf("copy: %d of %d rows: %v", copied, n, err)
	}
	return e.Settle(ctx, t)
}

// NewLoop returns the loop on e's table with batches of size.
func (e *Env) NewLoop(size int) (*Loop, error) {
	js, err := jetstream.New(e.NC, jetstream.WithPublishAsyncMaxPending(LoopMaxPending))
	if err != nil {
		return nil, err
	}
	return newLoop(e.Pool, js, LoopTable(e.Schema), size), nil
}

func newLoop(pool *pgxpool.Pool, js jetstream.JetStream, table string, size int) *Loop {
	return &Loop{Pool: pool, JS: js, Table: table, Size: size,
		claim: `SELECT id, subject, payload FROM ` + table + `
WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		mark:    `UPDATE ` + table + ` SET published_at = now() WHERE id = ANY($1)`,
		ids:     make([]int64, 0, size),
		futures: make([]jetstream.PubAckFuture, 0, size),
	}
}

// Drain runs batches until a claim comes back empty and returns how many
// messages it published.
func (l *Loop) Drain(ctx context.Context) (int, error) {
	return drainBatches(ctx, l.Batch)
}

// Batch publishes and marks one batch and returns its size: 0 when the
// claim found nothing.
func (l *Loop) Batch(ctx context.Context) (int, error) {
	tx, err := l.Pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("loop: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, l.claim, l.Size)
	if err != nil {
		return 0, fmt.Errorf("loop: claim: %w", err)
	}
	l.ids, l.futures = l.ids[:0], l.futures[:0]
	var (
		id      int64
		subject string
		payload []byte
	)
	for rows.Next() {
		if err := rows.Scan(&id, &subject, &payload); err != nil {
			return 0, fmt.Errorf("loop: scan: %w", err)
		}
		// The payload is copied: Scan reuses the row's buffer.
		f, err := l.JS.PublishMsgAsync(&nats.Msg{Subject: subject, Data: append([]byte(nil), payload...),
			Header: nats.Header{jetstream.MsgIDHeader: []string{strconv.FormatInt(id, 10)}}})
		if err != nil {
			rows.Close()
			return 0, fmt.Errorf("loop: publish: %w", err)
		}
		l.ids, l.futures = append(l.ids, id), append(l.futures, f)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("loop: claim: %w", err)
	}
	if len(l.ids) == 0 {
		return 0, nil
	}
	if err := awaitPubAcks(ctx, l.futures); err != nil {
		return 0, fmt.Errorf("loop: %w", err)
	}
	if _, err := tx.Exec(ctx, l.mark, l.ids); err != nil {
		return 0, fmt.Errorf("loop: mark: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("loop: commit: %w", err)
	}
	return len(l.ids), nil
}

// startLoop creates and fills the loop's table (drainDatabase).
func (e *Env) startLoop(ctx context.Context, n, size int, payload []byte) (func(context.Context) (int, error), error) {
	if err := e.CreateLoopTable(ctx); err != nil {
		return nil, err
	}
	if err := e.FillLoop(ctx, n, payload); err != nil {
		return nil, err
	}
	loop, err := e.NewLoop(size)
	if err != nil {
		return nil, err
	}
	return loop.Drain, nil
}

// LoopUnpublished counts the loop table's unpublished rows.
func (e *Env) LoopUnpublished(ctx context.Context) (int, error) {
	var n int
	err := e.Pool.QueryRow(ctx, "SELECT count(*) FROM "+LoopTable(e.Schema)+" WHERE published_at IS NULL").Scan(&n)
	return n, err
}

// awaitPubAcks waits for the PubAck of every future, in order, and returns
// the first error.
func awaitPubAcks(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("PubAck: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("PubAck: %w", ctx.Err())
		}
	}
	return nil
}

// drainBatches runs batch until it finds nothing and returns how many
// messages it published in all.
func drainBatches(ctx context.Context, batch func(context.Context) (int, error)) (int, error) {
	done := 0
	for {
		n, err := batch(ctx)
		if err != nil || n == 0 {
			return done, err
		}
		done += n
	}
}
