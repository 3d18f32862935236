package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"sync"
)

// mysqlPrepared runs the statements that a MySQL store runs once per
// message, the outbox's and the inbox's save, as statements prepared on
// the server instead of text: a prepared statement's run sends only its
// arguments, in the binary protocol, and the server does not parse its
// text again.
//
// A statement is prepared on the store's handle in the background after
// its first run, which goes as text: a save runs in a transaction that
// holds a connection of the pool, and a prepare on the handle waits for a
// free one, which a pool whose every connection is in such a transaction
// does not have. database/sql prepares it again on each connection it then
// runs on, and runs it in a transaction of the handle through
// Tx.StmtContext. A transaction of the caller's own (WithTx) may come from
// another handle: the statements run in it as text. A prepare that fails
// (the table is missing, the server is away) is tried again at the next
// run.
type mysqlPrepared struct {
	db *sql.DB
	// ctx ends the prepares in flight when the store closes.
	ctx context.Context
	// hot maps the statements to prepare, with their numbered
	// parameters, to their text as mysqlBind writes it; it does not change
	// once made.
	hot map[string]hotStmt

	mu        sync.Mutex
	stmts     map[string]*sql.Stmt
	preparing map[string]bool
	closed    bool
	inFlight  sync.WaitGroup
}

// hotStmt is a statement that mysqlPrepared prepares: its text with ?
// placeholders, which take the n arguments of the statement in their
// order.
type hotStmt struct {
	text string
	n    int
}

// newMySQLPrepared returns the prepared statements of queries, whose
// parameters must be $1 to $n, each once and in their order, taking
// values, not lists; a query for which that does not hold runs as text.
func newMySQLPrepared(ctx context.Context, db *sql.DB, queries ...string) *mysqlPrepared {
	p := &mysqlPrepared{db: db, ctx: ctx, hot: map[string]hotStmt{},
		stmts: map[string]*sql.Stmt{}, preparing: map[string]bool{}}
	probe := make([]any, 32)
	for i := range probe {
		probe[i] = i
	}
	for _, q := range queries {
		text, args := mysqlBind(q, probe)
		inOrder := true
		for i, a := range args {
			inOrder = inOrder && a == any(i)
		}
		if inOrder {
			p.hot[q] = hotStmt{text: text, n: len(args)}
		}
	}
	return p
}

// lookup returns query's statement when p prepares it for args.
func (p *mysqlPrepared) lookup(query string, args []any) (hotStmt, bool) {
	if p == nil {
		return hotStmt{}, false
	}
	h, ok := p.hot[query]
	return h, ok && len(args) == h.n
}

// stmt returns query's prepared statement, or nil while it has none; then
// it starts preparing it, unless a prepare is in flight.
func (p *mysqlPrepared) stmt(query string) *sql.Stmt {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.stmts[query]; st != nil || p.closed || p.preparing[query] {
		return st
	}
	p.preparing[query] = true
	p.inFlight.Go(func() {
		st, err := p.db.PrepareContext(p.ctx, query)
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.preparing, query)
		switch {
		case err != nil:
		case p.closed:
			_ = st.Close()
		default:
			p.stmts[query] = st
		}
	})
	return nil
}

// exec runs query, a hot statement's text, in tx, or on the handle when
// tx is nil; as text on q while it is not prepared.
func (p *mysqlPrepared) exec(ctx context.Context, q querier, tx *sql.Tx, query string, args []any) (int64, error) {
	st := p.stmt(query)
	if st == nil {
		return q.exec(ctx, query, args...)
	}
	var res sql.Result
	var err error
	if tx != nil {
		ts := tx.StmtContext(ctx, st)
		defer ts.Close()
		res, err = ts.ExecContext(ctx, args...)
	} else {
		res, err = st.ExecContext(ctx, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// settle waits for the prepares in flight.
func (p *mysqlPrepared) settle() { p.inFlight.Wait() }

// close waits for the prepares in flight, which the store's closed
// context ends, and closes the prepared statements; the saves after it
// run as text (and the store refuses them).
func (p *mysqlPrepared) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.settle()
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for _, st := range p.stmts {
		errs = append(errs, st.Close())
	}
	clear(p.stmts)
	return errors.Join(errs...)
}
