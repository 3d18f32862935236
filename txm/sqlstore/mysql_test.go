package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"golang.org/x/sync/errgroup"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

// mysqlDB opens a handle on TXM_MYSQL_URL's database with the settings of
// mysql.Open, closed at cleanup.
func mysqlDB(t testing.TB) *sql.DB {
	t.Helper()
	dc, err := gomysql.ParseDSN(testenv.URL(t, testenv.MySQL))
	if err != nil {
		t.Fatal(err)
	}
	dc.ParseTime, dc.Loc, dc.InterpolateParams = true, time.UTC, true
	conn, err := gomysql.NewConnector(dc)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// unmigratedMySQL returns n stores on one set of tables of the test's own,
// not migrated, dropped at cleanup.
func unmigratedMySQL(t *testing.T, n int) []*Store {
	t.Helper()
	db := mysqlDB(t)
	prefix := randomName("txm_t")
	cfg := Config{OutboxTable: prefix + "_outbox", InboxTable: prefix + "_inbox", MigrationsTable: prefix + "_migrations", Logger: discardLogger()}
	t.Cleanup(func() {
		for _, table := range []string{cfg.OutboxTable, cfg.InboxTable, cfg.MigrationsTable} {
			if _, err := db.ExecContext(context.Background(), "DROP TABLE IF EXISTS `"+table+"`"); err != nil {
				t.Errorf("drop %s: %v", table, err)
			}
		}
	})
	var stores []*Store
	for range n {
		s, err := Build(seam.Handle{Database: seam.MySQL, DB: db}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores = append(stores, s)
	}
	return stores
}

// TestMySQLMigrateConcurrently starts four processes' Migrate at once on
// new tables: all succeed, each version is recorded once, and the tables
// work.
func TestMySQLMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	stores := unmigratedMySQL(t, 4)
	var g errgroup.Group
	for _, s := range stores {
		g.Go(func() error { return s.Migrate(ctx) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	s := stores[0]
	got := queryStrings(t, s.DB(), "SELECT CONCAT(tables, ' ', version, ' ', name) FROM "+s.cfg.qualified(s.cfg.MigrationsTable)+" ORDER BY version")
	ms, err := s.migrations()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range ms {
		want = append(want, s.tables+" "+strconv.Itoa(m.version)+" "+m.name)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("versions recorded: %q, want %q", got, want)
	}
	mustSave(t, stores[3].Outbox(), newMsg("t", "k"))
}

// TestMySQLMigrateWaitsForTheLock: while another session holds the
// migration lock, Migrate waits and creates nothing; it applies the
// versions once the lock is released, and gives up when its context ends.
func TestMySQLMigrateWaitsForTheLock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := unmigratedMySQL(t, 1)[0]
	holder, err := s.DB().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	var got int
	if err := holder.QueryRowContext(ctx, "SELECT GET_LOCK(?, 5)", mysqlLockName(s.cfg)).Scan(&got); err != nil || got != 1 {
		t.Fatalf("GET_LOCK = %d, %v", got, err)
	}

	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if err := s.Migrate(short); err == nil || short.Err() == nil {
		t.Fatalf("Migrate while the lock is held = %v, want the context's error", err)
	}
	tables := func() []string {
		return queryStrings(t, s.DB(), "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE '"+
			strings.TrimSuffix(s.cfg.OutboxTable, "_outbox")+"%' ORDER BY table_name")
	}
	if got := tables(); len(got) != 0 {
		t.Fatalf("Migrate created %v while another session held the lock", got)
	}

	done := make(chan error, 1)
	go func() { done <- s.Migrate(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Migrate returned %v while the lock was held", err)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := holder.ExecContext(ctx, "SELECT RELEASE_LOCK(?)", mysqlLockName(s.cfg)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Migrate did not finish after the lock was released")
	}
	if got := tables(); len(got) != 3 {
		t.Fatalf("tables after Migrate: %v", got)
	}
}

// TestMySQLNotMigrated: a statement on missing tables matches
// ErrNotMigrated.
func TestMySQLNotMigrated(t *testing.T) {
	t.Parallel()
	s := unmigratedMySQL(t, 1)[0]
	if err := s.Outbox().Save(context.Background(), newMsg("t", "")); !errors.Is(err, ErrNotMigrated) {
		t.Fatalf("Save before Migrate = %v, want ErrNotMigrated", err)
	}
}

func TestMySQLBind(t *testing.T) {
	tests := []struct {
		query    string
		args     []any
		want     string
		wantArgs []any
	}{
		{"SELECT 1", []any{1}, "SELECT 1", []any{1}},
		{"UPDATE t SET a = $2 WHERE id IN ($1) AND b = $2", []any{[]string{"x", "y"}, 7},
			"UPDATE t SET a = ? WHERE id IN (?, ?) AND b = ?", []any{7, "x", "y", 7}},
		{"WHERE seq IN ($1)", []any{[]int64{}}, "WHERE seq IN (NULL)", []any{}},
		{"LIMIT $10", []any{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "LIMIT ?", []any{10}},
		{"a $3 b", []any{1}, "a $3 b", []any{}},
	}
	for _, tt := range tests {
		got, args := mysqlBind(tt.query, tt.args)
		if got != tt.want || !slices.Equal(args, tt.wantArgs) {
			t.Errorf("mysqlBind(%q, %v) = %q, %v; want %q, %v", tt.query, tt.args, got, args, tt.want, tt.wantArgs)
		}
	}
}

func TestMySQLSkip(t *testing.T) {
	set := func(seqs ...int64) map[int64]bool {
		m := map[int64]bool{}
		for _, s := range seqs {
			m[s] = true
		}
		return m
	}
	tests := []struct {
		own      map[int64]bool
		blocked  map[string]bool
		want     string
		wantArgs []any
		covered  int
	}{
		{nil, nil, "x > $2 y", []any{}, 0},
		{set(5, 6, 7), nil, "x > $2 AND o.seq NOT BETWEEN $3 AND $4 y", []any{int64(5), int64(7)}, 3},
		// The blocked keys come after the runs, as one list, sorted.
		{set(5, 6, 7), map[string]bool{"b": true, "a": true},
			"x > $2 AND o.seq NOT BETWEEN $3 AND $4 AND (o.partition_key IS NULL OR o.partition_key NOT IN ($5)) y",
			[]any{int64(5), int64(7), []string{"a", "b"}}, 3},
		{nil, map[string]bool{"a": true}, "x > $2 AND (o.partition_key IS NULL OR o.partition_key NOT IN ($3)) y", []any{[]string{"a"}}, 0},
		// The longest runs first, at most mysqlSkipRuns of them: 30 is
		// left for the caller to drop.
		{set(1, 3, 4, 10, 11, 12, 20, 21, 30), nil, "x > $2 AND o.seq NOT BETWEEN $3 AND $4 AND o.seq NOT BETWEEN $5 AND $6" +
			" AND o.seq NOT BETWEEN $7 AND $8 AND o.seq NOT BETWEEN $9 AND $10 y",
			[]any{int64(10), int64(12), int64(3), int64(4), int64(20), int64(21), int64(1), int64(1)}, 8},
	}
	for _, tt := range tests {
		got, args, covered := mysqlSkip("x > $2{skip} y", tt.own, tt.blocked)
		if got != tt.want || !reflect.DeepEqual(args, tt.wantArgs) || covered != tt.covered {
			t.Errorf("mysqlSkip(%v) = %q, %v, %d; want %q, %v, %d", tt.own, got, args, covered, tt.want, tt.wantArgs, tt.covered)
		}
	}
}

func TestMySQLUnheld(t *testing.T) {
	stmt, args := mysqlUnheld("x > $2{skip}{unheld} y", []any{int64(5), int64(7)}, nil)
	if want := "x > $2{skip} y"; stmt != want || !reflect.DeepEqual(args, []any{int64(5), int64(7)}) {
		t.Errorf("mysqlUnheld, no keys held = %q, %v; want %q and the arguments as they were", stmt, args, want)
	}
	stmt, args = mysqlUnheld("x > $2{unheld} y", []any{int64(5), int64(7)},
		[]mysqlHeldGroup{{keys: []string{"a", "b"}, last: 9}, {keys: []string{"c"}, last: 90}})
	want := "x > $2 AND (o.partition_key IS NULL OR o.seq <= $5 OR o.partition_key NOT IN ($6))" +
		" AND (o.partition_key IS NULL OR o.seq <= $7 OR o.partition_key NOT IN ($8)) y"
	if wantArgs := []any{int64(5), int64(7), int64(9), []string{"a", "b"}, int64(90), []string{"c"}}; stmt != want || !reflect.DeepEqual(args, wantArgs) {
		t.Errorf("mysqlUnheld = %q, %v; want %q, %v", stmt, args, want, wantArgs)
	}
}

func TestMySQLGroupHeld(t *testing.T) {
	tests := []struct {
		first map[string]int64
		want  []mysqlHeldGroup
	}{
		{nil, nil},
		{map[string]int64{"b": 2, "a": 1}, []mysqlHeldGroup{{[]string{"a"}, 1}, {[]string{"b"}, 2}}},
		// A key first held late is a group of its own; the others keep
		// a bound near the head. Equal gaps split from the head.
		{map[string]int64{"k1": 1, "k2": 2, "k3": 3, "k4": 4, "k5": 5, "k6": 6, "late": 1000},
			[]mysqlHeldGroup{{[]string{"k1"}, 1}, {[]string{"k2"}, 2}, {[]string{"k3", "k4", "k5", "k6"}, 6}, {[]string{"late"}, 1000}}},
		// The widest gaps: a to d, x to b, then c to a.
		{map[string]int64{"x": 10, "c": 100, "b": 100, "a": 101, "d": 5000, "e": 5001},
			[]mysqlHeldGroup{{[]string{"x"}, 10}, {[]string{"b", "c"}, 100}, {[]string{"a"}, 101}, {[]string{"d", "e"}, 5001}}},
	}
	for _, tt := range tests {
		if got := mysqlGroupHeld(tt.first); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("mysqlGroupHeld(%v) = %v, want %v", tt.first, got, tt.want)
		}
	}
}

func TestMySQLStatements(t *testing.T) {
	got := mysqlStatements("-- a comment;\nCREATE TABLE a (\n    -- not the end;\n    x INT\n);\n\nCREATE TABLE b (y INT);\n")
	want := []string{"CREATE TABLE a (\n    -- not the end;\n    x INT\n);\n", "CREATE TABLE b (y INT);\n"}
	if !slices.Equal(got, want) {
		t.Fatalf("mysqlStatements = %q, want %q", got, want)
	}
}

// TestMySQLClaimPlan pins the plan of the claim's read of candidates: both
// parts read claim_idx, the first (messages ready to publish) from the
// index alone and in save order, with nothing to sort, and the union is not
// written to a temporary table, which the store's merge of the parts
// (Store.mysqlCandidates) is there to avoid. The second part, the messages
// that may hold their keys, spans several keys and is sorted: there are
// few of them.
func TestMySQLClaimPlan(t *testing.T) {
	s := plannedMySQL(t, func(i int) string {
		if i%3 == 0 {
			return "k" + strconv.Itoa(i%7)
		}
		return ""
	})
	stmt, skip, _ := mysqlSkip(s.stmts.claim, map[int64]bool{5: true, 6: true}, map[string]bool{"k1": true})
	stmt, skip = mysqlUnheld(stmt, skip, []mysqlHeldGroup{{keys: []string{"k2", "k3"}, last: 40}, {keys: []string{"k4"}, last: 200}})
	query, args := mysqlBind("EXPLAIN "+stmt, append([]any{100, 0}, skip...))
	idx := s.cfg.OutboxTable + "_claim_idx"
	var outer int
	for _, row := range explainRows(t, s.db, query, args...) {
		t.Logf("%v", row)
		if strings.Contains(row["Extra"], "temporary") || row["table"] == "<union1,3>" {
			t.Errorf("the plan writes a temporary table: %v", row)
		}
		if row["table"] == "h" && !strings.Contains(row["ref"], "partition_key") {
			t.Errorf("the lookup of a key's holders does not look up the key in %s: %v", idx, row)
		}
		if row["table"] != "o" {
			continue
		}
		outer++
		if row["key"] != idx {
			t.Errorf("part %s reads %q, want %s: %v", row["id"], row["key"], idx, row)
		}
		if outer == 1 && (!strings.Contains(row["Extra"], "Using index") || strings.Contains(row["Extra"], "filesort")) {
			t.Errorf("the first part reads the table, not only %s, or sorts: %v", idx, row)
		}
	}
	if outer != 2 {
		t.Errorf("the plan has %d reads of the outbox, want the two parts", outer)
	}
}

// TestMySQLMarkRunPlan: the mark of a run of seqs (publishedRun), as a
// DELETE and with KeepPublished as an UPDATE, reads a range of the primary
// key, in its order, with nothing to sort, on a table whose statistics
// are stale (those of the empty table) and fresh: a scan of any other
// index would not stop at the run's end.
func TestMySQLMarkRunPlan(t *testing.T) {
	s := unmigratedMySQL(t, 1)[0]
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "ANALYZE TABLE "+s.cfg.qualified(s.cfg.OutboxTable)); err != nil {
		t.Fatal(err)
	}
	msgs := make([]async.Message, 300)
	for i := range msgs {
		msgs[i] = async.NewMessage("plan", "Planned", []byte("{}"))
	}
	if _, err := s.Outbox().SaveMany(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	for _, stats := range []string{"stale", "fresh"} {
		if stats == "fresh" {
			if _, err := s.db.ExecContext(ctx, "ANALYZE TABLE "+s.cfg.qualified(s.cfg.OutboxTable)); err != nil {
				t.Fatal(err)
			}
		}
		for _, keep := range []bool{false, true} {
			cfg := s.cfg
			cfg.KeepPublished = keep
			query, args := mysqlBind("EXPLAIN "+mysqlEngine{}.statements(cfg).publishedRun, []any{int64(101), int64(200), 100})
			plan := explainRows(t, s.db, query, args...)
			if len(plan) != 1 {
				t.Fatalf("%s statistics, keep=%v: plan %v, want one row", stats, keep, plan)
			}
			row := plan[0]
			t.Logf("%s statistics, keep=%v: %v", stats, keep, row)
			if row["key"] != "PRIMARY" || row["type"] != "range" || strings.Contains(row["Extra"], "filesort") {
				t.Errorf("%s statistics, keep=%v: the run is read with %v, want a range of PRIMARY without a sort", stats, keep, row)
			}
		}
	}
}

// TestMySQLNextDuePlan: the relay's question of when the next retry or
// scheduled message is due reads the messages that hold their keys in
// claim_idx, not every pending message: with 300 pending and none waiting,
// the plan reads a few rows of the index.
func TestMySQLNextDuePlan(t *testing.T) {
	s := plannedMySQL(t, func(int) string { return "" })
	plan := explainRows(t, s.db, "EXPLAIN "+s.stmts.nextDue)
	if len(plan) != 1 {
		t.Fatalf("plan %v, want one row", plan)
	}
	row := plan[0]
	t.Logf("%v", row)
	rows, _ := strconv.Atoi(row["rows"])
	if row["key"] != s.cfg.OutboxTable+"_claim_idx" || row["type"] != "range" || rows >= 100 {
		t.Errorf("the next due time is read with %v, want a range of a few rows of claim_idx", row)
	}
}

// TestMySQLHeldKeysPlan: the claim's read of the keys held reads the
// messages that may hold a key in claim_idx, pending and dead, not every
// pending message: with 300 pending and none holding a key, each part
// reads a range of a few rows of the index.
func TestMySQLHeldKeysPlan(t *testing.T) {
	s := plannedMySQL(t, func(i int) string { return "k" + strconv.Itoa(i%7) })
	query, args := mysqlBind("EXPLAIN "+s.stmts.heldKeys, []any{mysqlMaxList})
	parts := 0
	for _, row := range explainRows(t, s.db, query, args...) {
		t.Logf("%v", row)
		if row["table"] != "h" {
			continue
		}
		parts++
		rows, _ := strconv.Atoi(row["rows"])
		if row["key"] != s.cfg.OutboxTable+"_claim_idx" || row["type"] != "range" || rows >= 100 {
			t.Errorf("the keys held are read with %v, want a range of a few rows of claim_idx", row)
		}
	}
	if parts != 2 {
		t.Errorf("the plan reads the outbox %d times, want 2 (pending, dead)", parts)
	}
}

// TestMySQLLockReadyPlan: the locked claim of a backlog without keys
// (lockReady) reads a range of the primary key in its order, with nothing
// to sort, from the first message ready to publish, which it finds in
// claim_idx alone: a locking read of claim_idx would lock each message's
// entry there as well as its row, and costs the server more.
func TestMySQLLockReadyPlan(t *testing.T) {
	s := plannedMySQL(t, func(int) string { return "" })
	stmt, skip, _ := mysqlSkip(s.stmts.lockReady, map[int64]bool{5: true, 6: true}, nil)
	query, args := mysqlBind("EXPLAIN "+stmt, append([]any{100, 0}, skip...))
	var outer, first int
	for _, row := range explainRows(t, s.db, query, args...) {
		t.Logf("%v", row)
		switch {
		case row["table"] == "o":
			outer++
			if row["key"] != "PRIMARY" || row["type"] != "range" || strings.Contains(row["Extra"], "filesort") {
				t.Errorf("the claim reads %v, want a range of the primary key in its order", row)
			}
		case row["select_type"] == "SUBQUERY":
			// MariaDB reads the least seq from the end of the index's
			// range as it plans the statement.
			first++
			optimized := strings.Contains(row["Extra"], "Select tables optimized away")
			if !optimized && (row["key"] != s.cfg.OutboxTable+"_claim_idx" || !strings.Contains(row["Extra"], "Using index")) {
				t.Errorf("the first message ready is read with %v, want claim_idx alone", row)
			}
		}
	}
	if outer != 1 || first != 1 {
		t.Errorf("the plan reads the outbox %d and %d times, want once each", outer, first)
	}
}

// plannedMySQL returns a migrated store whose outbox holds 300 pending
// messages, the partition key of message i key(i) (none for ""), with
// fresh statistics, for the plan tests.
func plannedMySQL(t *testing.T, key func(i int) string) *Store {
	t.Helper()
	s := unmigratedMySQL(t, 1)[0]
	ctx := context.Background()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := make([]async.Message, 300)
	for i := range msgs {
		var opts []async.MessageOption
		if k := key(i); k != "" {
			opts = append(opts, async.WithMetadata(async.Metadata{async.MetaPartitionKey: k}))
		}
		msgs[i] = async.NewMessage("plan", "Planned", []byte("{}"), opts...)
	}
	if _, err := s.Outbox().SaveMany(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "ANALYZE TABLE "+s.cfg.qualified(s.cfg.OutboxTable)); err != nil {
		t.Fatal(err)
	}
	return s
}

// explainRows runs an EXPLAIN and returns its rows by column.
func explainRows(t *testing.T, db *sql.DB, query string, args ...any) []map[string]string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		row := map[string]string{}
		for i, c := range cols {
			row[c] = vals[i].String
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMySQLPreparedSaves checks on a handle of one connection, whose
// session counters the test reads, that the saves of the store's own
// transactions and of none run as statements prepared once and executed
// each time, that a save in the caller's transaction (WithTx) or in
// another handle's runs as text and still works, that a duplicate is
// still found, and that Close closes the prepared statements.
func TestMySQLPreparedSaves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := mysqlDB(t)
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	prefix := randomName("txm_p")
	cfg := Config{OutboxTable: prefix + "_outbox", InboxTable: prefix + "_inbox", MigrationsTable: prefix + "_migrations", Logger: discardLogger()}
	t.Cleanup(func() {
		for _, table := range []string{cfg.OutboxTable, cfg.InboxTable, cfg.MigrationsTable} {
			_, _ = mysqlDB(t).ExecContext(context.Background(), "DROP TABLE IF EXISTS `"+table+"`")
		}
	})
	s, err := Build(seam.Handle{Database: seam.MySQL, DB: db}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	counters := func() (prepare, execute, closed int) {
		t.Helper()
		rows, err := db.QueryContext(ctx, `SHOW SESSION STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_execute', 'Com_stmt_close')`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var n int
			if err := rows.Scan(&name, &n); err != nil {
				t.Fatal(err)
			}
			switch name {
			case "Com_stmt_prepare":
				prepare = n
			case "Com_stmt_execute":
				execute = n
			case "Com_stmt_close":
				closed = n
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return prepare, execute, closed
	}
	want := func(step string, p0, e0, c0, dp, de, dc int) {
		t.Helper()
		p, e, c := counters()
		if p-p0 != dp || e-e0 != de || c-c0 != dc {
			t.Errorf("%s: %d prepared, %d executed, %d closed; want %d, %d, %d", step, p-p0, e-e0, c-c0, dp, de, dc)
		}
	}

	// The first save runs as text and starts the prepare, which waits for
	// the connection that the save's transaction holds.
	prep := s.be.(mysqlBackend).prep
	first := async.NewMessage("prepared", "Prepared", []byte("{}"))
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.Outbox().Save(ctx, first) }); err != nil {
		t.Fatal(err)
	}
	prep.settle()
	in := incoming{async.NewMessage("prepared", "Prepared", []byte("{}"))}
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.Inbox("g").Save(ctx, in) }); err != nil {
		t.Fatal(err)
	}
	prep.settle()

	p0, e0, c0 := counters()
	msgs := make([]async.Message, 3)
	for i := range msgs {
		msgs[i] = async.NewMessage("prepared", "Prepared", []byte("{}"))
		if err := s.InTx(ctx, func(ctx context.Context) error { return s.Outbox().Save(ctx, msgs[i]) }); err != nil {
			t.Fatal(err)
		}
	}
	want("three saves in InTx", p0, e0, c0, 0, 3, 0)

	p0, e0, c0 = counters()
	if err := s.Outbox().Save(ctx, async.NewMessage("prepared", "Prepared", nil)); err != nil {
		t.Fatal(err)
	}
	err = s.InTx(ctx, func(ctx context.Context) error { return s.Outbox().Save(ctx, msgs[0]) })
	if _, ok := asDup(err); !ok {
		t.Errorf("second save of %s = %v, want ErrDuplicateMessage", msgs[0].ID(), err)
	}
	want("a save without a transaction, a duplicate in InTx", p0, e0, c0, 0, 2, 0)

	p0, e0, c0 = counters()
	in2 := incoming{async.NewMessage("prepared", "Prepared", []byte("{}"))}
	if err := s.InTx(ctx, func(ctx context.Context) error { return s.Inbox("g").Save(ctx, in2) }); err != nil {
		t.Fatal(err)
	}
	err = s.InTx(ctx, func(ctx context.Context) error { return s.Inbox("g").Save(ctx, in) })
	if _, ok := asDup(err); !ok {
		t.Errorf("second inbox save = %v, want ErrDuplicateMessage", err)
	}
	want("two inbox saves", p0, e0, c0, 0, 2, 0)

	// The caller's own transaction, on this handle and on another one.
	p0, e0, c0 = counters()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Outbox().Save(WithTx(ctx, tx), async.NewMessage("prepared", "Prepared", nil)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	want("a save in WithTx", p0, e0, c0, 0, 0, 0)
	other := mysqlDB(t)
	otx, err := other.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Outbox().Save(WithTx(ctx, otx), async.NewMessage("prepared", "Prepared", nil)); err != nil {
		t.Fatalf("save in a transaction of another handle: %v", err)
	}
	if err := otx.Commit(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM `"+cfg.OutboxTable+"`").Scan(&n); err != nil || n != 7 {
		t.Errorf("%d messages in the outbox (%v), want 7", n, err)
	}

	p0, e0, c0 = counters()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	want("Close", p0, e0, c0, 0, 0, 2)
	if err := s.Outbox().Save(ctx, async.NewMessage("prepared", "Prepared", nil)); !errors.Is(err, async.ErrClosed) {
		t.Errorf("save after Close = %v, want async.ErrClosed", err)
	}
}

// TestMySQLPreparedHot checks which statements mysqlPrepared takes: those
// whose parameters are $1 to $n in their order, each once, and for n
// arguments only.
func TestMySQLPreparedHot(t *testing.T) {
	cfg, err := Config{}.withDefaults(mysqlEngine{})
	if err != nil {
		t.Fatal(err)
	}
	stmts := mysqlEngine{}.statements(cfg)
	p := newMySQLPrepared(context.Background(), nil, stmts.save, stmts.inboxSave, `SELECT $2, $1`, `SELECT $1, $1`)
	for _, c := range []struct {
		query string
		args  int
		want  bool
	}{
		{stmts.save, 7, true},
		{stmts.inboxSave, 8, true},
		{stmts.save, 8, false},
		{`SELECT $2, $1`, 2, false},
		{`SELECT $1, $1`, 1, false},
		{stmts.published, 1, false},
	} {
		h, ok := p.lookup(c.query, make([]any, c.args))
		if ok != c.want {
			t.Errorf("lookup(%.40q, %d args) = %v, want %v", c.query, c.args, ok, c.want)
		}
		if ok && strings.Contains(h.text, "$") {
			t.Errorf("the text of %.40q keeps a $ parameter: %s", c.query, h.text)
		}
	}
}
