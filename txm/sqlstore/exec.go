package sqlstore

import (
	"context"
	"database/sql"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// querier runs statements: a pool, a connection or a transaction of either
// driver.
type querier interface {
	exec(ctx context.Context, query string, args ...any) (int64, error)
	query(ctx context.Context, query string, args ...any) (rows, error)
}

// rows is the part of pgx.Rows and *sql.Rows the store uses.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close() error
}

// txn is a transaction begun by the store.
type txn interface {
	querier
	commit(ctx context.Context) error
	rollback(ctx context.Context) error
	// holder returns the value that carries the transaction in a context.
	holder() *txHolder
}

// backend is the driver behind a store.
type backend interface {
	querier
	begin(ctx context.Context) (txn, error)
	// fromHolder returns the querier for a transaction carried by a
	// context, or an error when it belongs to the other driver.
	fromHolder(h *txHolder) (querier, error)
}

// errTxKind is returned when a context carries a transaction of the other
// driver than the store's.
var errTxKind = errors.New("the context carries a transaction of another driver than the store's (WithTx is for database/sql stores, WithPgxTx for pgx stores)")

// --- pgx ---

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

// --- database/sql ---

type sqlRunner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type sqlQuerier struct{ r sqlRunner }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.r.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	r, err := q.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return r, nil
}

type sqlBackend struct {
	sqlQuerier
	db *sql.DB
}

func (b sqlBackend) begin(ctx context.Context) (txn, error) {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &sqlTxn{sqlQuerier: sqlQuerier{tx}, tx: tx, h: &txHolder{sql: tx}}, nil
}

func (sqlBackend) fromHolder(h *txHolder) (querier, error) {
	if h.sql == nil {
		return nil, errTxKind
	}
	return sqlQuerier{h.sql}, nil
}

type sqlTxn struct {
	sqlQuerier
	tx *sql.Tx
	h  *txHolder
}

func (t *sqlTxn) commit(context.Context) error   { return t.tx.Commit() }
func (t *sqlTxn) rollback(context.Context) error { return t.tx.Rollback() }
func (t *sqlTxn) holder() *txHolder              { return t.h }
