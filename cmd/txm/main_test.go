package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/internal/testenv"
	"github.com/transmanager/transmanager/txm/sqlstore"
)

func TestDemoOnEmbeddedDefault(t *testing.T) {
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, []string{"demo", "-orders", "21", "-db", filepath.Join(t.TempDir(), "demo.db")}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"SQLite", "in-process", "relay with leases", "18 orders committed", "3 rolled back", "handled exactly once"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDemoOnPostgresAndNATS(t *testing.T) {
	pg := testenv.URL(t, "TXM_POSTGRES_URL")
	nats := testenv.URL(t, "TXM_NATS_URL")
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, []string{"demo", "-orders", "14", "-postgres", pg, "-nats", nats}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"PostgreSQL", "JetStream", "relay with locked claims", "12 orders committed", "handled exactly once"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestAdminCommandsOnSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.db")
	testAdminCommands(t, []string{"-sqlite", path}, func(ctx context.Context) (*sqlstore.Store, func()) {
		store, err := sqlstore.OpenSQLite(ctx, path, sqlstore.Config{})
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
		store, err := sqlstore.NewPostgresDB(db, sqlstore.Config{Schema: schema, PollOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return store, func() { _ = store.Close() }
	})
}

// testAdminCommands runs migrate, inspect and replay against the store that
// target selects and open opens.
func testAdminCommands(t *testing.T, target []string, open func(context.Context) (*sqlstore.Store, func())) {
	ctx := context.Background()
	with := func(cmd string, args ...string) []string { return append(append([]string{cmd}, target...), args...) }
	var out bytes.Buffer
	if err := run(ctx, with("migrate"), &out); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	out.Reset()
	if err := run(ctx, with("migrate", "-print"), &out); err != nil || !strings.Contains(out.String(), "CREATE TABLE") {
		t.Fatalf("migrate -print = %v:\n%s", err, out.String())
	}

	store, closeStore := open(ctx)
	poison := async.NewMessage("payments.charge", "Charge", []byte("{}"))
	ok := async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"))
	for _, m := range []async.Message{poison, ok} {
		if err := store.Outbox().Save(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := store.Outbox().MarkDead(ctx, poison.ID(), "broker rejected the message: too large"); err != nil {
		t.Fatal(err)
	}
	closeStore()

	out.Reset()
	if err := run(ctx, with("inspect"), &out); err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, want := range []string{"orders.placed", "payments.charge", poison.ID(), "too large"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if err := run(ctx, with("replay"), &out); err == nil {
		t.Error("replay without a selection succeeded; it must ask for -id, -topic or -all")
	}
	if err := run(ctx, with("replay", "-id", poison.ID()), &out); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if !strings.Contains(out.String(), "1 dead letters moved") {
		t.Errorf("replay output: %s", out.String())
	}
	out.Reset()
	if err := run(ctx, with("inspect"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "no dead letters") {
		t.Errorf("after replay, inspect shows:\n%s", out.String())
	}
	if err := run(ctx, []string{"bogus"}, &out); err == nil {
		t.Error("an unknown command succeeded")
	}
}
