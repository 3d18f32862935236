package sqlstore

import (
	"context"
	"database/sql"
	"errors"
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

func (b sqlBackend) begin(ctx context.Context) (txn, error) { return b.beginWith(ctx, nil) }

func (b sqlBackend) beginWith(ctx context.Context, opts *sql.TxOptions) (txn, error) {
	tx, err := b.db.BeginTx(ctx, opts)
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
