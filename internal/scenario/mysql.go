package scenario

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
)

// MySQLEnv is a MySQL or MariaDB database and a JetStream stream of a
// scenario's own, removed by Close.
type MySQLEnv struct {
	*Env // the stream; no PostgreSQL
	// DB is a handle on Database with the settings the store's Open
	// uses (parseTime, UTC, interpolateParams), open until Close.
	DB       *sql.DB
	Database string
	// DSN is the driver's DSN of Database.
	DSN   string
	admin *sql.DB // on the DSN's own database, to drop Database
}

// OpenMySQL creates a database on the server of dsn (a DSN of
// github.com/go-sql-driver/mysql) and a file-storage stream on the NATS
// server at natsURL, both named at random.
func OpenMySQL(ctx context.Context, dsn, natsURL string) (_ *MySQLEnv, err error) {
	e := &MySQLEnv{Env: &Env{}, Database: "txm_scn_" + Random()}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()
	dc, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse the MySQL DSN: %w", err)
	}
	if e.admin, err = sql.Open("mysql", dc.FormatDSN()); err != nil {
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	if _, err := e.admin.ExecContext(ctx, "CREATE DATABASE "+e.Database); err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	dc.DBName, dc.ParseTime, dc.Loc, dc.InterpolateParams = e.Database, true, time.UTC, true
	e.DSN = dc.FormatDSN()
	if e.DB, err = sql.Open("mysql", e.DSN); err != nil {
		return nil, fmt.Errorf("connect to MySQL: %w", err)
	}
	e.DB.SetMaxOpenConns(8)
	e.DB.SetMaxIdleConns(8)
	if err := e.openStream(ctx, natsURL); err != nil {
		return nil, err
	}
	return e, nil
}

// Close drops the database and the stream and closes the connections.
func (e *MySQLEnv) Close() error {
	errs := []error{e.Env.Close()}
	if e.DB != nil {
		errs = append(errs, e.DB.Close())
	}
	if e.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := e.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+e.Database)
		errs = append(errs, err, e.admin.Close())
	}
	return errors.Join(errs...)
}

// Store returns a store on the library's tables in e's database. The caller
// closes it.
func (e *MySQLEnv) Store(ctx context.Context) (*sqlstore.LockingStore, error) {
	return mysql.Open(ctx, e.DSN, sqlstore.Config{Logger: slog.New(slog.DiscardHandler)})
}

// Settle makes a filled table's starting point the same for every
// implementation: fresh statistics, and InnoDB's purge of the fill's undo
// log and its dirty pages written out before the timed part.
func (e *MySQLEnv) Settle(ctx context.Context, table string) error {
	if _, err := e.DB.ExecContext(ctx, "ANALYZE TABLE "+table); err != nil {
		return fmt.Errorf("analyze %s: %w", table, err)
	}
	// Until the purge is done and the flush has stopped making progress
	// (InnoDB keeps some dirty pages when idle), or 10s.
	last := int64(-1)
	for range 100 {
		var name string
		var dirty, history int64
		if err := e.DB.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
			return fmt.Errorf("settle: %w", err)
		}
		if err := e.DB.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'").Scan(&name, &history); err != nil {
			history = 0 // not every server reports it
		}
		if history < 1000 && (dirty < 100 || dirty == last) {
			return nil
		}
		last = dirty
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// FillOutbox empties the library's outbox in e's database and saves msgs,
// then settles the table.
func (e *MySQLEnv) FillOutbox(ctx context.Context, store *sqlstore.LockingStore, msgs []async.Message) error {
	if _, err := e.DB.ExecContext(ctx, "TRUNCATE TABLE "+sqlstore.DefaultOutboxTable); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	for chunk := range slices.Chunk(msgs, 5000) {
		if k, err := store.Outbox().SaveMany(ctx, chunk); err != nil || k != len(chunk) {
			return fmt.Errorf("SaveMany: %d of %d: %v", k, len(chunk), err)
		}
	}
	return e.Settle(ctx, sqlstore.DefaultOutboxTable)
}

// OutboxUnpublished counts the library outbox's rows not published.
func (e *MySQLEnv) OutboxUnpublished(ctx context.Context) (int, error) {
	var n int
	err := e.DB.QueryRowContext(ctx, "SELECT count(*) FROM "+sqlstore.DefaultOutboxTable+
		" WHERE state <> 'published'").Scan(&n)
	return n, err
}

// mysqlLoopTable is the table of the MySQL loop.
const mysqlLoopTable = "loop_outbox"

// MySQLLoop is the strong hand-written relay that a user would write on
// MySQL instead of the library, on a minimal table of its own:
//
//	loop_outbox(id BIGINT AUTO_INCREMENT PRIMARY KEY, subject VARCHAR(255),
//	            payload LONGBLOB, created_at DATETIME(6))
//
// through database/sql and go-sql-driver/mysql with interpolateParams (one
// round trip per statement). Each batch is one transaction: SELECT ...
// ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED on the primary key,
// PublishAsync of every row with Nats-Msg-Id = id, a wait for every
// PubAck, DELETE ... WHERE id IN (...), COMMIT. Deleting keeps the table
// to its backlog and needs no index besides the primary key. It keeps no
// partition-key order, retries nothing and has no dead letters.
type MySQLLoop struct {
	DB   *sql.DB
	JS   jetstream.JetStream // made with jetstream.WithPublishAsyncMaxPending(LoopMaxPending)
	Size int

	claim   string
	delete  string // the DELETE up to its IN list
	ids     []int64
	args    []any
	futures []jetstream.PubAckFuture
	del     strings.Builder
}

// CreateLoopTable creates the loop's table in e's database and fills it
// with n rows of payload on e's topic, then settles it.
func (e *MySQLEnv) CreateLoopTable(ctx context.Context, n int, payload []byte) error {
	if _, err := e.DB.ExecContext(ctx, `CREATE TABLE `+mysqlLoopTable+` (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    subject    VARCHAR(255) NOT NULL,
    payload    LONGBLOB     NOT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB`); err != nil {
		return fmt.Errorf("create the loop's table: %w", err)
	}
	const rows = 500
	for done := 0; done < n; done += rows {
		k := min(rows, n-done)
		stmt := "INSERT INTO " + mysqlLoopTable + " (subject, payload) VALUES " +
			strings.TrimSuffix(strings.Repeat("(?, ?), ", k), ", ")
		args := make([]any, 0, 2*k)
		for range k {
			args = append(args, e.Topic, payload)
		}
		if _, err := e.DB.ExecContext(ctx, stmt, args...); err != nil {
			return fmt.Errorf("fill the loop's table: %w", err)
		}
	}
	return e.Settle(ctx, mysqlLoopTable)
}

// NewLoop returns the loop on e's table with batches of size.
func (e *MySQLEnv) NewLoop(size int) (*MySQLLoop, error) {
	js, err := jetstream.New(e.NC, jetstream.WithPublishAsyncMaxPending(LoopMaxPending))
	if err != nil {
		return nil, err
	}
	return &MySQLLoop{DB: e.DB, JS: js, Size: size,
		claim: `SELECT id, subject, payload FROM ` + mysqlLoopTable + `
ORDER BY id LIMIT ? FOR UPDATE SKIP LOCKED`,
		delete: "DELETE FROM " + mysqlLoopTable + " WHERE id IN (",
		ids:    make([]int64, 0, size), args: make([]any, 0, size),
		futures: make([]jetstream.PubAckFuture, 0, size)}, nil
}

// NewOutboxLoop returns the loop with batches of size on the library's
// outbox in e's database (filled by FillOutbox) instead of its own table:
// the same statements on seq, topic and payload, so that the drain
// measures what the library's table costs the loop.
func (e *MySQLEnv) NewOutboxLoop(size int) (*MySQLLoop, error) {
	l, err := e.NewLoop(size)
	if err != nil {
		return nil, err
	}
	l.claim = `SELECT seq, topic, payload FROM ` + sqlstore.DefaultOutboxTable + `
ORDER BY seq LIMIT ? FOR UPDATE SKIP LOCKED`
	l.delete = "DELETE FROM " + sqlstore.DefaultOutboxTable + " WHERE seq IN ("
	return l, nil
}

// LoopUnpublished counts the loop table's rows.
func (e *MySQLEnv) LoopUnpublished(ctx context.Context) (int, error) {
	var n int
	err := e.DB.QueryRowContext(ctx, "SELECT count(*) FROM "+mysqlLoopTable).Scan(&n)
	return n, err
}

// Drain runs batches until a claim comes back empty and returns how many
// messages it published.
func (l *MySQLLoop) Drain(ctx context.Context) (int, error) {
	return drainBatches(ctx, l.Batch)
}

// Batch publishes and deletes one batch and returns its size: 0 when the
// claim found nothing.
func (l *MySQLLoop) Batch(ctx context.Context) (int, error) {
	tx, err := l.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("loop: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, l.claim, l.Size)
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
			_ = rows.Close()
			return 0, fmt.Errorf("loop: scan: %w", err)
		}
		// Scan into []byte copies the driver's buffer.
		f, err := l.JS.PublishMsgAsync(&nats.Msg{Subject: subject, Data: payload,
			Header: nats.Header{jetstream.MsgIDHeader: []string{strconv.FormatInt(id, 10)}}})
		if err != nil {
			_ = rows.Close()
			return 0, fmt.Errorf("loop: publish: %w", err)
		}
		l.ids, l.futures = append(l.ids, id), append(l.futures, f)
	}
	if err := rows.Close(); err != nil {
		return 0, fmt.Errorf("loop: claim: %w", err)
	}
	if len(l.ids) == 0 {
		return 0, nil
	}
	if err := awaitPubAcks(ctx, l.futures); err != nil {
		return 0, fmt.Errorf("loop: %w", err)
	}
	l.del.Reset()
	l.del.WriteString(l.delete)
	l.args = l.args[:0]
	for i, id := range l.ids {
		if i > 0 {
			l.del.WriteString(", ")
		}
		l.del.WriteByte('?')
		l.args = append(l.args, id)
	}
	l.del.WriteByte(')')
	if _, err := tx.ExecContext(ctx, l.del.String(), l.args...); err != nil {
		return 0, fmt.Errorf("loop: delete: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("loop: commit: %w", err)
	}
	return len(l.ids), nil
}

// drainMySQL is Drain on MySQL.
func drainMySQL(ctx context.Context, s DrainSpec) (DrainResult, error) {
	e, err := OpenMySQL(ctx, s.MySQLURL, s.NATSURL)
	if err != nil {
		return DrainResult{}, err
	}
	defer e.Close()
	if s.Impl == ImplLoopOutbox {
		return e.drainOutboxLoop(ctx, s)
	}
	return drainOn(ctx, s, e)
}

// drainOutboxLoop is Drain of ImplLoopOutbox: the library's outbox filled
// as for the relay, drained by the loop.
func (e *MySQLEnv) drainOutboxLoop(ctx context.Context, s DrainSpec) (DrainResult, error) {
	store, err := filledOutbox(ctx, e, s.Messages, 0, Payload(s.PayloadSize))
	if err != nil {
		return DrainResult{}, err
	}
	defer store.Close()
	loop, err := e.NewOutboxLoop(s.Batch)
	if err != nil {
		return DrainResult{}, err
	}
	return measureDrain(ctx, s, timedLoop(loop.Drain, s.Messages), e.OutboxUnpublished, e.StreamMessages)
}

// startLoop creates and fills the loop's table (drainDatabase).
func (e *MySQLEnv) startLoop(ctx context.Context, n, size int, payload []byte) (func(context.Context) (int, error), error) {
	if err := e.CreateLoopTable(ctx, n, payload); err != nil {
		return nil, err
	}
	loop, err := e.NewLoop(size)
	if err != nil {
		return nil, err
	}
	return loop.Drain, nil
}

// outboxStore is Store (drainDatabase).
func (e *MySQLEnv) outboxStore(ctx context.Context) (*sqlstore.LockingStore, error) {
	return e.Store(ctx)
}
