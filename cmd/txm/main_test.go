package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/mysql"
	"github.com/transmanager/transmanager/txm/sqlstore/postgres"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// cli runs the command in-process and returns its exit status and output.
func cli(ctx context.Context, args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = runMain(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestDemoOnEmbeddedDefault(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code, out, errOut := cli(ctx, "demo", "-orders", "21", "-db", filepath.Join(t.TempDir(), "demo.db"))
	if code != exitOK {
		t.Fatalf("demo: exit %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{"SQLite", "in-process", "relay with leases", "18 orders committed", "3 rolled back", "handled exactly once"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemoOnPostgresAndNATS(t *testing.T) {
	pg := testenv.URL(t, "TXM_POSTGRES_URL")
	nats := testenv.URL(t, "TXM_NATS_URL")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, errOut := cli(ctx, "demo", "-orders", "14", "-postgres", pg, "-nats", nats)
	if code != exitOK {
		t.Fatalf("demo: exit %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{"PostgreSQL", "JetStream", "relay with locked claims", "12 orders committed", "handled exactly once"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

func TestDemoOnMySQL(t *testing.T) {
	dsn := mysqlDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code, out, errOut := cli(ctx, "demo", "-orders", "14", "-mysql", dsn)
	if code != exitOK {
		t.Fatalf("demo: exit %d: %s\n%s", code, errOut, out)
	}
	for _, want := range []string{"MySQL", "in-process", "relay with leases", "12 orders committed", "handled exactly once"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
}

// TestCommandLine checks help, usage errors and exit statuses: 0 for
// success and -h, 1 for a failure, 2 for a usage error, each error printed
// once.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo.db")
	for _, tc := range []struct {
		args       []string
		code       int
		stdout     string // "" : must be empty
		stderr     string // "" : must be empty
		stderrOnce bool   // stderr's first line appears once
	}{
		{[]string{"help"}, exitOK, "usage: txm <command>", "", false},
		{[]string{"-h"}, exitOK, "usage: txm <command>", "", false},
		{[]string{"help", "replay"}, exitOK, "usage: txm replay", "", false},
		{[]string{"inspect", "-h"}, exitOK, "usage: txm inspect", "", false},
		{[]string{"replay", "-h"}, exitOK, "-json", "", false},
		{[]string{"migrate", "-help"}, exitOK, "usage: txm migrate", "", false},
		{[]string{"demo", "-h"}, exitOK, "the whole demo", "", false},
		{[]string{}, exitUsage, "", "no command", true},
		{[]string{"bogus"}, exitUsage, "", `unknown command "bogus"`, true},
		{[]string{"inspect", "-bogus"}, exitUsage, "", "flag provided but not defined: -bogus", true},
		{[]string{"demo", "-orders", "x"}, exitUsage, "", `invalid value "x"`, true},
		{[]string{"inspect", "-sqlite", missing, "extra"}, exitUsage, "", `unexpected argument "extra"`, true},
		{[]string{"inspect"}, exitUsage, "", "give -sqlite PATH, -postgres URL or -mysql DSN", true},
		{[]string{"inspect", "-sqlite", missing, "-postgres", "postgres://x"}, exitUsage, "", "give one of -sqlite, -postgres and -mysql", true},
		{[]string{"inspect", "-mysql", "root@tcp(x)/db", "-schema", "s"}, exitUsage, "", "-schema is for PostgreSQL", true},
		{[]string{"replay", "-sqlite", missing}, exitUsage, "", "say what to replay", true},
		{[]string{"replay", "-sqlite", missing, "-all", "-topic", "t"}, exitUsage, "", "cannot be combined", true},
		{[]string{"inspect", "-sqlite", missing}, exitFailure, "", "no SQLite database at " + missing, true},
		{[]string{"replay", "-sqlite", missing, "-all"}, exitFailure, "", "no SQLite database at " + missing, true},
		{[]string{"migrate", "-print"}, exitUsage, "", "-dialect", true},
		{[]string{"migrate", "-print", "-dialect", "oracle"}, exitUsage, "", "unknown -dialect", true},
		{[]string{"migrate", "-print", "-dialect", "sqlite"}, exitOK, "CREATE TABLE IF NOT EXISTS \"txm_outbox\"", "", false},
		{[]string{"migrate", "-print", "-dialect", "postgres", "-schema", "app"}, exitOK, `"app"."txm_outbox"`, "", false},
		// -print connects to nothing: an unreachable URL still prints.
		{[]string{"migrate", "-print", "-postgres", "postgres://nobody@127.0.0.1:1/none"}, exitOK, "-- transmanager sqlstore schema (postgres)", "", false},
		{[]string{"migrate", "-print", "-sqlite", missing}, exitOK, "-- transmanager sqlstore schema (sqlite)", "", false},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := cli(context.Background(), tc.args...)
			if code != tc.code {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			check := func(name, got, want string) {
				if want == "" && got != "" {
					t.Errorf("%s not empty: %s", name, got)
				}
				if !strings.Contains(got, want) {
					t.Errorf("%s lacks %q: %s", name, want, got)
				}
			}
			check("stdout", out, tc.stdout)
			check("stderr", errOut, tc.stderr)
			if tc.stderrOnce && strings.Count(errOut, tc.stderr) != 1 {
				t.Errorf("stderr has %q %d times, want once:\n%s", tc.stderr, strings.Count(errOut, tc.stderr), errOut)
			}
			if strings.Contains(out+errOut, "flag: help requested") {
				t.Errorf("the output shows flag.ErrHelp:\n%s%s", out, errOut)
			}
		})
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("a command created the missing SQLite file %s (stat: %v)", missing, err)
	}
}

// TestBinaryExitStatus builds the command and checks that the process
// exits with the statuses runMain returns.
func TestBinaryExitStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	bin := filepath.Join(t.TempDir(), "txm")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"inspect", "-h"}, exitOK},
		{[]string{"inspect", "-bogus"}, exitUsage},
		{[]string{"inspect", "-sqlite", filepath.Join(t.TempDir(), "none.db")}, exitFailure},
	} {
		cmd := exec.Command(bin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run()
		if got := cmd.ProcessState.ExitCode(); got != tc.code {
			t.Errorf("txm %s: exit status %d, want %d\n%s", strings.Join(tc.args, " "), got, tc.code, stderr.String())
		}
	}
}

func TestAdminCommandsOnSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.db")
	testAdminCommands(t, []string{"-sqlite", path}, func(ctx context.Context) (*sqlstore.Store, func()) {
		store, err := sqlite.Open(ctx, path, sqlstore.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return store, func() { _ = store.Close() }
	})
}

func TestAdminCommandsOnPostgres(t *testing.T) {
	url := testenv.URL(t, "TXM_POSTGRES_URL")
	ctx := context.Background()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	schema := fmt.Sprintf("txm_cmd_test_%d", time.Now().UnixNano())
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = db.ExecContext(context.Background(), "DROP SCHEMA "+schema+" CASCADE") }()
	testAdminCommands(t, []string{"-postgres", url, "-schema", schema}, func(ctx context.Context) (*sqlstore.Store, func()) {
		store, err := postgres.NewDB(db, sqlstore.Config{Schema: schema, PollOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return store.Store, func() { _ = store.Close() }
	})
}

// mysqlDatabase creates a MySQL database of the test's own, dropped at
// cleanup, and returns its DSN: the commands use the default table names.
func mysqlDatabase(t *testing.T) string {
	t.Helper()
	dsn := testenv.URL(t, testenv.MySQL)
	ctx := context.Background()
	admin, err := mysql.Open(ctx, dsn, sqlstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("txm_cmd_test_%d", time.Now().UnixNano())
	if _, err := admin.DB().ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		_ = admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.DB().ExecContext(context.Background(), "DROP DATABASE "+name); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		_ = admin.Close()
	})
	dc, err := gomysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	dc.DBName = name
	return dc.FormatDSN()
}

func TestAdminCommandsOnMySQL(t *testing.T) {
	dsn := mysqlDatabase(t)
	testAdminCommands(t, []string{"-mysql", dsn}, func(ctx context.Context) (*sqlstore.Store, func()) {
		store, err := mysql.Open(ctx, dsn, sqlstore.Config{})
		if err != nil {
			t.Fatal(err)
		}
		return store.Store, func() { _ = store.Close() }
	})
}

// inspectJSON is the part of inspect -json the tests read.
type inspectJSON struct {
	Total struct {
		Pending, Scheduled, Dead int64
		NextDue                  time.Time `json:"next_due"`
	}
	Retrying []struct {
		ID          string    `json:"id"`
		Key         string    `json:"partition_key"`
		Attempts    int       `json:"attempts"`
		NextAttempt time.Time `json:"next_attempt"`
		LastError   string    `json:"last_error"`
	}
	ParkedKeys []struct {
		Key     string `json:"partition_key"`
		HeldBy  string `json:"held_by"`
		State   string `json:"state"`
		Waiting int64  `json:"waiting"`
	} `json:"parked_keys"`
	DeadLetters []struct {
		ID        string `json:"id"`
		LastError string `json:"last_error"`
	} `json:"dead_letters"`
}

// testAdminCommands runs migrate, inspect and replay against the store that
// target selects and open opens.
func testAdminCommands(t *testing.T, target []string, open func(context.Context) (*sqlstore.Store, func())) {
	ctx := context.Background()
	with := func(cmd string, args ...string) []string { return append(append([]string{cmd}, target...), args...) }
	mustRun := func(args []string) string {
		t.Helper()
		code, out, errOut := cli(ctx, args...)
		if code != exitOK {
			t.Fatalf("txm %s: exit %d: %s\n%s", strings.Join(args, " "), code, errOut, out)
		}
		return out
	}
	if out := mustRun(with("migrate")); !strings.Contains(out, "applied version 1 (init)") {
		t.Errorf("first migrate says: %s", out)
	}
	if out := mustRun(with("migrate")); !strings.Contains(out, "nothing to apply") {
		t.Errorf("second migrate says: %s", out)
	}
	if out := mustRun(with("migrate", "-print")); !strings.Contains(out, "CREATE TABLE") {
		t.Fatalf("migrate -print:\n%s", out)
	}

	// The outbox: a dead letter parking key k2 with one message behind it,
	// a failed message waiting for its retry parking key k1 with two behind
	// it, and one unkeyed pending message.
	store, closeStore := open(ctx)
	keyed := func(topic, key string) async.Message {
		return async.NewMessage(topic, "Test", []byte("{}"), async.WithMetadata(async.Metadata{async.MetaPartitionKey: key}))
	}
	poison, behindPoison := keyed("payments.charge", "k2"), keyed("payments.charge", "k2")
	failed, behind1, behind2 := keyed("orders.placed", "k1"), keyed("orders.placed", "k1"), keyed("orders.placed", "k1")
	plain := async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"))
	// And a reminder scheduled in two hours, outside key k1's sequence.
	dueAt := time.Now().Add(2 * time.Hour)
	reminder := async.NewMessage("orders.reminder", "Remind", []byte("{}"), async.WithMetadata(async.Metadata{
		async.MetaPartitionKey: "k1", async.MetaDeliverAt: async.FormatTime(dueAt)}))
	out := store.Outbox()
	if err := store.InTx(ctx, func(ctx context.Context) error {
		for _, m := range []async.Message{poison, behindPoison, failed, behind1, behind2, plain, reminder} {
			if err := out.Save(ctx, m); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := out.MarkDead(ctx, poison.ID(), "broker rejected the message: too large"); err != nil {
		t.Fatal(err)
	}
	claimed, err := out.Claim(ctx, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var release []string
	for _, c := range claimed {
		if c.Message.ID() != failed.ID() {
			release = append(release, c.Message.ID())
		}
	}
	if err := out.MarkFailed(ctx, failed.ID(), time.Hour, "broker timeout"); err != nil {
		t.Fatal(err)
	}
	if err := out.ReleaseClaims(ctx, release...); err != nil {
		t.Fatal(err)
	}
	closeStore()

	text := mustRun(with("inspect"))
	for _, want := range []string{"orders.placed", "payments.charge", poison.ID(), "too large",
		"waiting for a retry", failed.ID(), "broker timeout", "in 59m", "parked partition keys", "k1", "k2", "txm replay -id " + poison.ID(),
		"SCHEDULED", "orders.reminder", "in 1h59m"} {
		if !strings.Contains(text, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, text)
		}
	}
	var rep inspectJSON
	if err := json.Unmarshal([]byte(mustRun(with("inspect", "-json"))), &rep); err != nil {
		t.Fatalf("inspect -json: %v", err)
	}
	if rep.Total.Pending != 5 || rep.Total.Dead != 1 || rep.Total.Scheduled != 1 || rep.Total.NextDue.Sub(dueAt).Abs() > time.Millisecond {
		t.Errorf("inspect -json total: %+v, want 5 pending, 1 dead, 1 scheduled due at %v", rep.Total, dueAt)
	}
	if len(rep.Retrying) != 1 || rep.Retrying[0].ID != failed.ID() || rep.Retrying[0].Attempts != 1 ||
		rep.Retrying[0].LastError != "broker timeout" || rep.Retrying[0].Key != "k1" || time.Until(rep.Retrying[0].NextAttempt) < 50*time.Minute {
		t.Errorf("inspect -json retrying: %+v", rep.Retrying)
	}
	if len(rep.ParkedKeys) != 2 {
		t.Fatalf("inspect -json parked keys: %+v, want k2 and k1", rep.ParkedKeys)
	}
	if p := rep.ParkedKeys[0]; p.Key != "k2" || p.HeldBy != poison.ID() || p.State != "dead" || p.Waiting != 1 {
		t.Errorf("parked key k2: %+v", p)
	}
	if p := rep.ParkedKeys[1]; p.Key != "k1" || p.HeldBy != failed.ID() || p.State != "retrying" || p.Waiting != 2 {
		t.Errorf("parked key k1: %+v", p)
	}
	if len(rep.DeadLetters) != 1 || rep.DeadLetters[0].ID != poison.ID() {
		t.Errorf("inspect -json dead letters: %+v", rep.DeadLetters)
	}

	// replay: an unknown ID fails and replays nothing, even beside a known one.
	code, _, errOut := cli(ctx, with("replay", "-id", poison.ID(), "-id", "no-such-id")...)
	if code != exitFailure || !strings.Contains(errOut, "no-such-id") || strings.Contains(errOut, poison.ID()) {
		t.Errorf("replay of an unknown ID: exit %d: %s", code, errOut)
	}
	if code, _, errOut := cli(ctx, with("replay")...); code != exitUsage {
		t.Errorf("replay without a selection: exit %d, want %d: %s", code, exitUsage, errOut)
	}
	if out := mustRun(with("replay", "-topic", "orders.placed")); !strings.Contains(out, "no dead letters of topic orders.placed") {
		t.Errorf("replay of a topic without dead letters: %s", out)
	}
	var replayed replayReport
	if err := json.Unmarshal([]byte(mustRun(with("replay", "-id", poison.ID(), "-json"))), &replayed); err != nil {
		t.Fatal(err)
	}
	if replayed.Replayed != 1 || len(replayed.Messages) != 1 || replayed.Messages[0].ID != poison.ID() || replayed.Messages[0].Topic != "payments.charge" {
		t.Errorf("replay -json: %+v", replayed)
	}
	if out := mustRun(with("inspect")); !strings.Contains(out, "no dead letters") {
		t.Errorf("after replay, inspect shows:\n%s", out)
	}

	// The plural: one dead letter, then two.
	store, closeStore = open(ctx)
	for _, id := range []string{poison.ID(), behindPoison.ID()} {
		if err := store.Outbox().MarkDead(ctx, id, "again"); err != nil {
			t.Fatal(err)
		}
	}
	closeStore()
	if out := mustRun(with("replay", "-id", poison.ID())); !strings.Contains(out, "1 dead letter moved back to pending") {
		t.Errorf("replay of one: %s", out)
	}
	store, closeStore = open(ctx)
	if err := store.Outbox().MarkDead(ctx, poison.ID(), "again"); err != nil {
		t.Fatal(err)
	}
	closeStore()
	if out := mustRun(with("replay", "-all")); !strings.Contains(out, "2 dead letters moved back to pending") {
		t.Errorf("replay of two: %s", out)
	}
}
