package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm/sqlstore"
	"github.com/transmanager/transmanager/txm/sqlstore/sqlite"
)

// inboxMsg adapts a message to async.IncomingMessage.
type inboxMsg struct{ async.Message }

func (inboxMsg) ReceivedAt() time.Time { return time.Now() }
func (inboxMsg) Ack() error            { return nil }
func (inboxMsg) NAck() error           { return nil }
func (inboxMsg) Extend() error         { return nil }
func (inboxMsg) Kill() error           { return nil }

// TestPurgeOnSQLite runs txm purge on a SQLite file with published outbox
// rows (KeepPublished) and inbox records of two groups: a window longer
// than their age removes nothing, a shorter one removes them in batches,
// only for the group named; the exit statuses follow the other commands.
func TestPurgeOnSQLite(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "purge.db")
	with := func(args ...string) []string { return append([]string{"purge", "-sqlite", path}, args...) }
	if code, _, errOut := cli(ctx, with("-published", "1h")...); code != exitFailure || !strings.Contains(errOut, "no SQLite database") {
		t.Fatalf("purge before migrate: exit %d: %s", code, errOut)
	}
	if code, out, errOut := cli(ctx, "migrate", "-sqlite", path); code != exitOK {
		t.Fatalf("migrate: exit %d: %s%s", code, out, errOut)
	}
	store, err := sqlite.Open(ctx, path, sqlstore.Config{KeepPublished: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := store.InTx(ctx, func(ctx context.Context) error {
		for range 3 {
			m := async.NewMessage("orders.placed", "OrderPlaced", []byte("{}"))
			ids = append(ids, m.ID())
			if err := store.Outbox().Save(ctx, m); err != nil {
				return err
			}
		}
		for _, g := range []string{"billing", "billing", "shipping"} {
			if err := store.Inbox(g).Save(ctx, inboxMsg{async.NewMessage("orders.placed", "OrderPlaced", nil)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := store.Outbox().MarkPublished(ctx, ids...); err != nil {
		t.Fatal(err)
	}
	_ = store.Close()

	mustRun := func(args ...string) string {
		t.Helper()
		code, out, errOut := cli(ctx, args...)
		if code != exitOK {
			t.Fatalf("txm %s: exit %d: %s\n%s", strings.Join(args, " "), code, errOut, out)
		}
		return out
	}
	out := mustRun(with("-published", "1h", "-inbox-group", "billing", "-inbox", "1h")...)
	if !strings.Contains(out, "removed 0 outbox messages published more than 1h0m0s ago") ||
		!strings.Contains(out, "removed 0 inbox records of group billing") {
		t.Fatalf("purge of younger rows says:\n%s", out)
	}
	out = mustRun(with("-published", "1us", "-inbox-group", "billing", "-inbox", "1us", "-batch", "2")...)
	if !strings.Contains(out, "removed 3 outbox messages") || !strings.Contains(out, "removed 2 inbox records of group billing") {
		t.Fatalf("purge of older rows says:\n%s", out)
	}
	if out := mustRun(with("-inbox-group", "shipping", "-inbox", "1us")...); !strings.Contains(out, "removed 1 inbox record of group shipping") {
		t.Fatalf("purge of the other group says:\n%s", out)
	}
	if out := mustRun(with("-published", "1us")...); !strings.Contains(out, "removed 0 outbox messages") {
		t.Fatalf("purge again says:\n%s", out)
	}
	for _, args := range [][]string{
		with(),                          // nothing to purge
		with("-inbox", "1h"),            // no group
		with("-inbox-group", "billing"), // no age
		with("-published", "1h", "-batch", "0"),
		{"purge", "-published", "1h"}, // no store
	} {
		if code, _, errOut := cli(ctx, args...); code != exitUsage {
			t.Errorf("txm %s: exit %d, want %d: %s", strings.Join(args, " "), code, exitUsage, errOut)
		}
	}
	if code, out, _ := cli(ctx, "purge", "-h"); code != exitOK || !strings.Contains(out, "-inbox-group") {
		t.Errorf("purge -h: exit %d:\n%s", code, out)
	}
}
