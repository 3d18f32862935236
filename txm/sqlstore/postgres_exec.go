package sqlstore

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The pgx side of the PostgreSQL engine: querier, backend and transaction
// on a pgx pool or transaction, and the batches that send a statement after
// the one that locks or pins its plan, in one round trip.

type pgxRunner interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type pgxQuerier struct{ r pgxRunner }

func (q pgxQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.r.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q pgxQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.r.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return pgxRows{r}, nil
}

type pgxRows struct{ pgx.Rows }

func (r pgxRows) Close() error {
	r.Rows.Close()
	return r.Rows.Err()
}

type pgxBeginner interface {
	pgxRunner
	Begin(ctx context.Context) (pgx.Tx, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// after sends first, then stmt, in one implicit transaction (one round
// trip) and returns the results with first's already read: what first
// sets for its transaction (a lock, planner settings) applies to stmt.
func (b pgxBackend) after(ctx context.Context, first string, firstArgs []any, stmt string, args []any) (pgx.BatchResults, error) {
	batch := &pgx.Batch{}
	batch.Queue(first, firstArgs...)
	batch.Queue(stmt, args...)
	br := b.b.SendBatch(ctx, batch)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// pinnedExec runs pin, then stmt, so that the settings pin makes local
// apply to stmt.
func (b pgxBackend) pinnedExec(ctx context.Context, pin, stmt string, args []any) (int64, error) {
	br, err := b.after(ctx, pin, nil, stmt, args)
	if err != nil {
		return 0, err
	}
	tag, err := br.Exec()
	if err != nil {
		_ = br.Close()
		return 0, err
	}
	return tag.RowsAffected(), br.Close()
}

// lockedQuery runs lock, then query, in one round trip: a
// transaction-scoped lock that lock takes lasts until query is done, and
// query, under READ COMMITTED, sees everything committed before the lock
// was granted; settings lock makes local apply to query. scan reads the
// query's rows.
func (b pgxBackend) lockedQuery(ctx context.Context, lock string, lockArgs []any, query string, args []any, scan func(rows) error) error {
	br, err := b.after(ctx, lock, lockArgs, query, args)
	if err != nil {
		return err
	}
	r, err := br.Query()
	if err != nil {
		_ = br.Close()
		return err
	}
	if err := scan(pgxRows{r}); err != nil {
		_ = br.Close()
		return err
	}
	return br.Close()
}

type pgxBackend struct {
	pgxQuerier
	b pgxBeginner
}

func (b pgxBackend) begin(ctx context.Context) (txn, error) {
	tx, err := b.b.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgxTxn{pgxQuerier: pgxQuerier{tx}, tx: tx, h: &txHolder{pgx: tx}}, nil
}

func (pgxBackend) fromHolder(h *txHolder) (querier, error) {
	if h.pgx == nil {
		return nil, errTxKind
	}
	return pgxQuerier{h.pgx}, nil
}

type pgxTxn struct {
	pgxQuerier
	tx pgx.Tx
	h  *txHolder
}

func (t *pgxTxn) commit(ctx context.Context) error   { return t.tx.Commit(ctx) }
func (t *pgxTxn) rollback(ctx context.Context) error { return t.tx.Rollback(ctx) }
func (t *pgxTxn) holder() *txHolder                  { return t.h }
