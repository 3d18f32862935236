package scenario

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/async/memory"
	"github.com/transmanager/transmanager/async/natsjs"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// The paths a [Path] run measures, and its two implementations.
const (
	// PathWrite is the producer's business transaction: insert an order
	// and save its event.
	PathWrite = "write"
	// PathConsume is the consumer's: receive the event, check it was not
	// handled before, insert the invoice, in one transaction.
	PathConsume = "consume"

	// ImplLibrary runs a path through the library: a typed [txm.Outbox]
	// in [sqlstore.Store.InTx] for the write path; a typed [txm.Inbox]
	// behind [txm.InboxHandler] for the consume path.
	ImplLibrary = "library"
	// ImplBaseline runs it as a user would by hand on tables of their own,
	// minimal: for the write path, an INSERT of the order and one of the
	// event encoded by the codec's own library (topic, payload) into an
	// outbox table with a serial key, in one database/sql transaction; for
	// the consume path, the codec's library to decode, then in one
	// transaction an INSERT … ON CONFLICT DO NOTHING (INSERT IGNORE on
	// MySQL) of the message ID into a table of seen IDs and, when it was
	// new, the invoice's INSERT. Both receive through the same
	// subscriber, so the consume path's difference is the inbox and the
	// codec.
	ImplBaseline = "baseline"
	// ImplBaselineOutbox is, for the write path on MySQL only, the
	// baseline writing the library's outbox row by hand instead of its
	// own: the store's INSERT (ID, topic, name, metadata, payload, times,
	// ON DUPLICATE KEY UPDATE) into the store's table, with the event
	// encoded by encoding/json. What the row and its table cost.
	ImplBaselineOutbox = "baseline-outbox"
	// ImplBaselineMessage is, for the write path on MySQL only, the
	// baseline writing the message's own columns of the library's row (ID,
	// topic, name, partition key, metadata, payload, times), by
	// ImplBaselineOutbox's INSERT, into a table of its own that has them
	// and the unique ID only: none of the relay's state (state, attempts,
	// lease, retry, error and publish times, held_key, its CHECK) and no
	// claim_idx. What keeping the relay's state off the saved row could
	// gain.
	ImplBaselineMessage = "baseline-message"
	// ImplBaselineNarrow is, for the write path on MySQL only, the
	// baseline writing the same message into a narrower table of its own,
	// as a user might who packs what the relay only passes on into one
	// column: a serial key, the unique ID, the topic (VARCHAR), the
	// partition key, one header column (name, metadata and send time as
	// JSON, by encoding/json) and the payload.
	ImplBaselineNarrow = "baseline-narrow"
	// ImplBaselinePrepared is, for the write path on MySQL only, the
	// baseline with its event's INSERT prepared once on the server
	// (database/sql prepares it again on each connection it runs on) and
	// run through the transaction (Tx.StmtContext) instead of sent as
	// text: the hand-written insert on the best terms go-sql-driver/mysql
	// offers it.
	ImplBaselinePrepared = "baseline-prepared"
)

// mysqlWriteOnly reports whether impl runs the write path on MySQL only.
func mysqlWriteOnly(impl string) bool {
	return impl == ImplBaselineOutbox || impl == ImplBaselineMessage || impl == ImplBaselineNarrow ||
		impl == ImplBaselinePrepared
}

// PathSpec is one measured run of a path: Messages messages of about
// PayloadSize bytes, written (or handled) by Workers goroutines at once.
// With NATSURL and one database, it runs in a stream of its own and, with
// PostgresURL, a schema of its own through database/sql and pgx's driver,
// or, with MySQLURL, a database of its own (see [OpenMySQL]) through
// go-sql-driver/mysql; with all three empty, on the embedded default (a
// SQLite file and the in-process broker).
type PathSpec struct {
	PostgresURL, NATSURL string
	// MySQLURL is a DSN of github.com/go-sql-driver/mysql on a MySQL or
	// MariaDB server.
	MySQLURL string
	// Dir holds the embedded default's SQLite file, removed afterwards.
	// "" means a new temporary directory.
	Dir         string
	Messages    int
	Workers     int // 0: 4
	PayloadSize int
	// Codec encodes the messages: CodecJSON ("" too) or CodecMsgpack; the
	// baseline calls the same codec's library directly.
	Codec string
}

// PathResult is what a path run measured. The CPU figures are per message,
// in microseconds, over the timed part only; Allocs counts this process's
// heap objects per message.
type PathResult struct {
	Path       string  `json:"path"`
	Impl       string  `json:"impl"`
	Messages   int     `json:"messages"`
	Seconds    float64 `json:"seconds"`
	MsgsPerSec float64 `json:"msgs_per_s"`
	SelfUS     float64 `json:"self_cpu_us"`
	PostgresUS float64 `json:"postgres_cpu_us"`
	MySQLUS    float64 `json:"mysql_cpu_us,omitempty"`
	NATSUS     float64 `json:"nats_cpu_us"`
	TotalUS    float64 `json:"total_cpu_us"`
	Allocs     float64 `json:"allocs_per_msg"`
}

// pathGroup is the consume path's group (its inbox and subscription).
const pathGroup = "txm-bench-consume"

// pathDialect is what the business and baseline tables and statements of
// a rig's database differ in.
type pathDialect struct {
	// orders, rawOutbox and rawSeen are the column definitions of the
	// CREATE TABLE of the orders (the business table), of the baseline's
	// outbox with a serial key and of its seen IDs.
	orders, rawOutbox, rawSeen string
	// messages and narrow are the column definitions of the tables of
	// ImplBaselineMessage and ImplBaselineNarrow ("": the database has
	// none).
	messages, narrow string
	// insertSeen inserts a message ID (?) into the table of seen IDs
	// (%s), and affects no row when the ID is there already.
	insertSeen string
	// rebind turns the ? placeholders into the database's.
	rebind func(string) string
}

var (
	sqlitePath = pathDialect{
		orders:     `(id text PRIMARY KEY, cents bigint NOT NULL, note text NOT NULL)`,
		rawOutbox:  `(id integer PRIMARY KEY, topic text NOT NULL, payload blob NOT NULL)`,
		rawSeen:    `(id text PRIMARY KEY)`,
		insertSeen: `INSERT INTO %s (id) VALUES (?) ON CONFLICT DO NOTHING`,
		rebind:     func(q string) string { return q },
	}
	postgresPath = pathDialect{
		orders:     `(id text PRIMARY KEY, cents bigint NOT NULL, note text NOT NULL)`,
		rawOutbox:  `(id bigserial PRIMARY KEY, topic text NOT NULL, payload bytea NOT NULL)`,
		rawSeen:    `(id text PRIMARY KEY)`,
		insertSeen: `INSERT INTO %s (id) VALUES (?) ON CONFLICT DO NOTHING`,
		rebind:     rebindDollar,
	}
	mysqlPath = pathDialect{
		orders:    `(id VARCHAR(255) PRIMARY KEY, cents BIGINT NOT NULL, note TEXT NOT NULL)`,
		rawOutbox: `(id BIGINT AUTO_INCREMENT PRIMARY KEY, topic VARCHAR(255) NOT NULL, payload LONGBLOB NOT NULL)`,
		rawSeen:   `(id VARCHAR(255) PRIMARY KEY)`,
		messages: `(seq BIGINT NOT NULL AUTO_INCREMENT, id VARCHAR(255) NOT NULL, topic TEXT NOT NULL,
    name TEXT NOT NULL, partition_key VARCHAR(255) NULL, metadata LONGTEXT NOT NULL, payload LONGBLOB NOT NULL,
    sent_at DATETIME(6) NOT NULL, created_at DATETIME(6) NOT NULL, PRIMARY KEY (seq), UNIQUE KEY (id))
    ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin`,
		narrow: `(seq BIGINT NOT NULL AUTO_INCREMENT, id VARCHAR(255) NOT NULL, topic VARCHAR(255) NOT NULL,
    partition_key VARCHAR(255) NULL, header BLOB NOT NULL, payload LONGBLOB NOT NULL, PRIMARY KEY (seq), UNIQUE KEY (id))
    ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin`,
		insertSeen: `INSERT IGNORE INTO %s (id) VALUES (?)`,
		rebind:     func(q string) string { return q },
	}
)

// pathRig is where a path run happens: a store on db, business and
// baseline tables beside it, and a broker.
type pathRig struct {
	pathDialect
	db      *sql.DB
	store   *sqlstore.Store
	topic   string
	pub     async.MessagePublisher
	sub     async.MessageSubscriber
	memory  bool   // the broker is in process: publish after subscribing
	outbox  string // the library's outbox table
	tables  string // prefix of the business and baseline tables
	closers []func()
}

func (r *pathRig) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *pathRig) exec(ctx context.Context, q string) error {
	_, err := r.db.ExecContext(ctx, r.rebind(q))
	return err
}

// count returns the rows of table.
func (r *pathRig) count(ctx context.Context, table string) (int, error) {
	var n int
	err := r.db.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	return n, err
}

func openPathRig(ctx context.Context, s PathSpec) (_ *pathRig, err error) {
	r := &pathRig{}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	logger := slog.New(slog.DiscardHandler)
	switch {
	case s.PostgresURL == "" && s.MySQLURL == "":
		dir := s.Dir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "txm-bench-"); err != nil {
				return nil, err
			}
			r.closers = append(r.closers, func() { _ = os.RemoveAll(dir) })
		}
		path := filepath.Join(dir, "path-"+Random()+".db")
		r.closers = append(r.closers, func() {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				_ = os.Remove(path + suffix)
			}
		})
		if r.store, err = sqlite.Open(ctx, path, sqlstore.Config{Logger: logger}); err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { _ = r.store.Close() })
		broker := memory.New(memory.Config{})
		r.closers = append(r.closers, func() { _ = broker.Close() })
		r.db, r.topic, r.pub, r.sub, r.memory = r.store.DB(), EmbeddedTopic, broker, broker, true
		r.pathDialect, r.outbox, r.tables = sqlitePath, sqlstore.DefaultOutboxTable, "bench_"
	case s.MySQLURL != "":
		e, err := OpenMySQL(ctx, s.MySQLURL, s.NATSURL)
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { _ = e.Close() })
		ls, err := e.Store(ctx)
		if err != nil {
			return nil, err
		}
		r.store = ls.Store // the paths do not claim by locking
		r.closers = append(r.closers, func() { _ = r.store.Close() })
		// The baseline shares the store's pool, as on PostgreSQL.
		r.db = r.store.DB()
		r.db.SetMaxOpenConns(s.Workers + 4)
		r.db.SetMaxIdleConns(s.Workers + 4)
		r.natsBroker(e.Env)
		r.pathDialect, r.outbox, r.tables = mysqlPath, sqlstore.DefaultOutboxTable, "bench_"
	default:
		e, err := Open(ctx, s.PostgresURL, s.NATSURL)
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { _ = e.Close() })
		if r.db, err = sql.Open("pgx", s.PostgresURL); err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { _ = r.db.Close() })
		r.db.SetMaxOpenConns(s.Workers + 4)
		r.db.SetMaxIdleConns(s.Workers + 4)
		pg, err := postgres.NewDB(r.db, sqlstore.Config{Schema: e.Schema, NotifyChannel: e.Schema, Logger: logger})
		if err != nil {
			return nil, err
		}
		r.store = pg.Store // the paths do not claim by locking
		r.closers = append(r.closers, func() { _ = r.store.Close() })
		r.natsBroker(e)
		r.pathDialect, r.outbox, r.tables = postgresPath, e.Schema+"."+sqlstore.DefaultOutboxTable, e.Schema+".bench_"
	}
	if err := r.store.Migrate(ctx); err != nil {
		return nil, err
	}
	for _, t := range []struct{ name, columns string }{
		{"orders", r.orders}, {"raw_outbox", r.rawOutbox}, {"raw_seen", r.rawSeen}, {"messages", r.messages}, {"narrow", r.narrow},
	} {
		if t.columns == "" {
			continue
		}
		if err := r.exec(ctx, `CREATE TABLE `+r.tables+t.name+` `+t.columns); err != nil {
			return nil, fmt.Errorf("path: create tables: %w", err)
		}
	}
	return r, nil
}

// natsBroker sets r's broker to e's stream.
func (r *pathRig) natsBroker(e *Env) {
	sub := natsjs.NewSubscriber(e.JS, natsjs.SubscriberConfig{})
	r.closers = append(r.closers, func() { _ = sub.Close() })
	r.topic, r.pub, r.sub = e.Topic, natsjs.NewPublisher(e.JS, natsjs.PublisherConfig{}), sub
}

// rebindDollar turns ? placeholders into PostgreSQL's $1, $2, ….
func rebindDollar(q string) string {
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Path runs one measured run of path (PathWrite or PathConsume) by impl
// (ImplLibrary or ImplBaseline), checks that every message was written or
// handled once, and removes what it set up.
func Path(ctx context.Context, path, impl string, s PathSpec) (PathResult, error) {
	switch {
	case path != PathWrite && path != PathConsume:
		return PathResult{}, fmt.Errorf("path: unknown path %q (want %s or %s)", path, PathWrite, PathConsume)
	case mysqlWriteOnly(impl) && (path != PathWrite || s.MySQLURL == ""):
		return PathResult{}, fmt.Errorf("path: %s runs the write path on MySQL only", impl)
	case impl != ImplLibrary && impl != ImplBaseline && !mysqlWriteOnly(impl):
		return PathResult{}, fmt.Errorf("path: unknown implementation %q (want %s, %s, %s, %s, %s or %s)", impl,
			ImplLibrary, ImplBaseline, ImplBaselineOutbox, ImplBaselineMessage, ImplBaselineNarrow, ImplBaselinePrepared)
	case s.Messages <= 0:
		return PathResult{}, errors.New("path: Messages must be positive")
	case s.PostgresURL != "" && s.MySQLURL != "":
		return PathResult{}, errors.New("path: give one database, PostgresURL or MySQLURL, not both")
	case s.NATSURL == "" && (s.PostgresURL != "" || s.MySQLURL != ""):
		return PathResult{}, errors.New("path: a database (PostgresURL or MySQLURL) needs NATSURL")
	case s.NATSURL != "" && s.PostgresURL == "" && s.MySQLURL == "":
		return PathResult{}, errors.New("path: NATSURL needs a database, PostgresURL or MySQLURL")
	}
	if _, _, _, err := scenarioCodec(s.Codec); err != nil {
		return PathResult{}, fmt.Errorf("path: %w", err)
	}
	if s.Workers <= 0 {
		s.Workers = 4
	}
	r, err := openPathRig(ctx, s)
	if err != nil {
		return PathResult{}, err
	}
	defer r.close()
	var took time.Duration
	var cpu CPU
	if path == PathWrite {
		took, cpu, err = r.write(ctx, impl, s)
	} else {
		took, cpu, err = r.consume(ctx, impl, s)
	}
	if err != nil {
		return PathResult{}, fmt.Errorf("path %s, %s: %w", path, impl, err)
	}
	// Only the servers the run used count: those elsewhere on the machine
	// are not its own.
	switch {
	case s.PostgresURL != "":
		cpu.MySQL = 0
	case s.MySQLURL != "":
		cpu.Postgres = 0
	default:
		cpu.Postgres, cpu.MySQL, cpu.NATS = 0, 0, 0
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(s.Messages) }
	return PathResult{
		Path: path, Impl: impl, Messages: s.Messages,
		Seconds:    took.Seconds(),
		MsgsPerSec: float64(s.Messages) / took.Seconds(),
		SelfUS:     per(cpu.Self), PostgresUS: per(cpu.Postgres), MySQLUS: per(cpu.MySQL), NATSUS: per(cpu.NATS),
		TotalUS: per(cpu.Total()),
		Allocs:  float64(cpu.Allocs) / float64(s.Messages),
	}, nil
}

// timed runs fn between two CPU readings.
func timed(fn func() error) (time.Duration, CPU, error) {
	runtime.GC()
	before, err := ReadCPU()
	if err != nil {
		return 0, CPU{}, err
	}
	start := time.Now()
	if err := fn(); err != nil {
		return 0, CPU{}, err
	}
	took := time.Since(start)
	after, err := ReadCPU()
	if err != nil {
		return 0, CPU{}, err
	}
	return took, after.Sub(before), nil
}

// inParallel runs work(i) for i in [0, n) on workers goroutines.
func inParallel(ctx context.Context, n, workers int, work func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := work(ctx, i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

// narrowHeader is ImplBaselineNarrow's header column.
type narrowHeader struct {
	Name     string            `json:"name"`
	Metadata map[string]string `json:"metadata"`
	SentAt   time.Time         `json:"sent_at"`
}

func (r *pathRig) write(ctx context.Context, impl string, s PathSpec) (time.Duration, CPU, error) {
	note := strings.Repeat("x", max(s.PayloadSize-40, 0))
	insertOrder := r.rebind(`INSERT INTO ` + r.tables + `orders (id, cents, note) VALUES (?, ?, ?)`)
	run := Random()
	codecs, marshal, _, _ := scenarioCodec(s.Codec)
	var work func(ctx context.Context, i int) error
	table := r.outbox
	if impl == ImplLibrary {
		out := txm.NewOutbox[e2eOrder](txm.OutboxPublisher(r.store.Outbox())(nil), txm.WithCodecs(codecs))
		work = func(ctx context.Context, i int) error {
			id := run + "-" + strconv.Itoa(i)
			return r.store.InTx(ctx, func(ctx context.Context) error {
				tx, _ := sqlstore.TxFromContext(ctx)
				if _, err := tx.ExecContext(ctx, insertOrder, id, 1250, note); err != nil {
					return err
				}
				return out.Publish(ctx, r.topic, e2eOrder{ID: id, Note: note})
			})
		}
	} else {
		table = r.tables + "raw_outbox"
		insertEvent := r.rebind(`INSERT INTO ` + table + ` (topic, payload) VALUES (?, ?)`)
		event := func(payload []byte) ([]any, error) { return []any{r.topic, payload}, nil }
		switch impl {
		case ImplBaselineOutbox, ImplBaselineMessage:
			table = r.outbox
			if impl == ImplBaselineMessage {
				table = r.tables + "messages"
			}
			insertEvent = `INSERT INTO ` + table + ` (id, topic, name, metadata, payload, sent_at, created_at)
    VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE id = id`
			event = func(payload []byte) ([]any, error) {
				return []any{uuid.Must(uuid.NewV7()).String(), r.topic, "e2eOrder", `{"content-type":"application/json"}`, payload, time.Now().UTC()}, nil
			}
		case ImplBaselineNarrow:
			table = r.tables + "narrow"
			insertEvent = `INSERT INTO ` + table + ` (id, topic, header, payload) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id`
			event = func(payload []byte) ([]any, error) {
				header, err := json.Marshal(narrowHeader{Name: "e2eOrder",
					Metadata: map[string]string{"content-type": "application/json"}, SentAt: time.Now().UTC()})
				return []any{uuid.Must(uuid.NewV7()).String(), r.topic, header, payload}, err
			}
		}
		exec := func(ctx context.Context, tx *sql.Tx, args []any) error {
			_, err := tx.ExecContext(ctx, insertEvent, args...)
			return err
		}
		if impl == ImplBaselinePrepared {
			stmt, err := r.db.PrepareContext(ctx, insertEvent)
			if err != nil {
				return 0, CPU{}, err
			}
			defer func() { _ = stmt.Close() }()
			exec = func(ctx context.Context, tx *sql.Tx, args []any) error {
				_, err := tx.StmtContext(ctx, stmt).ExecContext(ctx, args...)
				return err
			}
		}
		work = func(ctx context.Context, i int) error {
			id := run + "-" + strconv.Itoa(i)
			payload, err := marshal(e2eOrder{ID: id, Note: note})
			if err != nil {
				return err
			}
			tx, err := r.db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			if _, err := tx.ExecContext(ctx, insertOrder, id, 1250, note); err != nil {
				return err
			}
			args, err := event(payload)
			if err != nil {
				return err
			}
			if err := exec(ctx, tx, args); err != nil {
				return err
			}
			return tx.Commit()
		}
	}
	took, cpu, err := timed(func() error { return inParallel(ctx, s.Messages, s.Workers, work) })
	if err != nil {
		return 0, CPU{}, err
	}
	for _, t := range []string{table, r.tables + "orders"} {
		if n, err := r.count(ctx, t); err != nil || n != s.Messages {
			return 0, CPU{}, fmt.Errorf("after the run: %d rows in %s, want %d (%v)", n, t, s.Messages, err)
		}
	}
	return took, cpu, nil
}

func (r *pathRig) consume(ctx context.Context, impl string, s PathSpec) (time.Duration, CPU, error) {
	note := strings.Repeat("x", max(s.PayloadSize-40, 0))
	codecs, _, unmarshal, _ := scenarioCodec(s.Codec)
	// The messages as the relay publishes them: typed, with their content
	// type.
	out := txm.NewOutbox[e2eOrder](r.pub, txm.WithCodecs(codecs))
	msgs := make([]async.Message, s.Messages)
	run := Random()
	for i := range msgs {
		m, err := out.Message(r.topic, e2eOrder{ID: run + "-" + strconv.Itoa(i), Note: note})
		if err != nil {
			return 0, CPU{}, err
		}
		msgs[i] = m
	}
	publish := func(ctx context.Context) error {
		if b, ok := r.pub.(async.AsyncPublisher); ok {
			for chunk := range slices.Chunk(msgs, 1000) {
				errs, err := b.PublishBatch(ctx, chunk)
				if err = errors.Join(append(errs, err)...); err != nil {
					return fmt.Errorf("publish: %w", err)
				}
			}
			return nil
		}
		for _, m := range msgs {
			if err := r.pub.Publish(ctx, r.topic, m); err != nil {
				return fmt.Errorf("publish: %w", err)
			}
		}
		return nil
	}
	if !r.memory { // the stream keeps them: publish before the timed part
		if err := publish(ctx); err != nil {
			return 0, CPU{}, err
		}
	}

	insertOrder := r.rebind(`INSERT INTO ` + r.tables + `orders (id, cents, note) VALUES (?, ?, ?)`)
	var handler async.MessageHandler
	if impl == ImplLibrary {
		handle := func(ctx context.Context, o e2eOrder, _ async.IncomingMessage) error {
			tx, _ := sqlstore.TxFromContext(ctx)
			_, err := tx.ExecContext(ctx, insertOrder, o.ID, 1250, o.Note)
			return err
		}
		handler = async.ChainHandler(txm.NewInbox(handle, txm.WithCodecs(codecs)), txm.InboxHandler(r.store.Inbox(pathGroup)))
	} else {
		insertSeen := r.rebind(fmt.Sprintf(r.insertSeen, r.tables+"raw_seen"))
		handler = async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			var o e2eOrder
			if err := unmarshal(msg.Data(), &o); err != nil {
				return err
			}
			tx, err := r.db.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback() }()
			res, err := tx.ExecContext(ctx, insertSeen, msg.ID())
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n == 0 {
				return err // seen before: nothing to do
			}
			if _, err := tx.ExecContext(ctx, insertOrder, o.ID, 1250, o.Note); err != nil {
				return err
			}
			return tx.Commit()
		})
	}
	var handled atomic.Int64
	done := make(chan struct{})
	counting := async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
		if err := handler.HandleMessage(ctx, msg); err != nil {
			return err
		}
		if handled.Add(1) == int64(s.Messages) {
			close(done)
		}
		return nil
	})
	took, cpu, err := timed(func() error {
		sub, err := r.sub.Subscribe(ctx, r.topic, counting, async.GroupName(pathGroup), async.Concurrency(s.Workers))
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		defer func() { _ = sub.Unsubscribe() }()
		if r.memory {
			if err := publish(ctx); err != nil {
				return err
			}
		}
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages handled: %w", handled.Load(), s.Messages, ctx.Err())
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("%d of %d messages handled after 5 minutes", handled.Load(), s.Messages)
		}
	})
	if err != nil {
		return 0, CPU{}, err
	}
	if n, err := r.count(ctx, r.tables+"orders"); err != nil || n != s.Messages {
		return 0, CPU{}, fmt.Errorf("after the run: %d orders, want %d (%v)", n, s.Messages, err)
	}
	return took, cpu, nil
}
