package sqlstore

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/transmanager/transmanager/txm/sqlstore/internal/seam"
)

func TestOpenSQLiteSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name        string
		path        string
		journalMode string
	}{
		{"file", filepath.Join(t.TempDir(), "a b.db"), "wal"},
		{"file URI", "file:" + filepath.Join(t.TempDir(), "c.db") + "?mode=rwc", "wal"},
		{"memory", ":memory:", "memory"},
	}
	for _, tt := range tests {
		s, err := openSQLite(ctx, tt.path, Config{})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		db := s.DB()
		var mode string
		var busy, fk int
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if mode != tt.journalMode || busy != seam.SQLiteBusyTimeoutMS || fk != 1 {
			t.Errorf("%s: journal_mode %s, busy_timeout %d, foreign_keys %d", tt.name, mode, busy, fk)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		m := newMsg("t", "k")
		err = s.InTx(ctx, func(ctx context.Context) error {
			if err := s.Outbox().Save(ctx, m); err != nil {
				return err
			}
			// Inside the transaction the store sees its own save.
			c, err := s.Outbox().Claim(ctx, 10, time.Minute)
			if err != nil || len(c) != 1 {
				t.Errorf("%s: claim in the transaction: %v, %v", tt.name, ids(c), err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.PingContext(ctx); err == nil {
			t.Errorf("%s: Close left the database open", tt.name)
		}
	}
}

// TestSQLiteHandleOfOwn checks that NewSQLite leaves a caller's handle
// open on Close.
func TestSQLiteHandleOfOwn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opened, err := openSQLite(ctx, filepath.Join(t.TempDir(), "x.db"), Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	if err := opened.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	s, err := newSQLite(opened.DB(), Config{OutboxTable: "other_outbox", InboxTable: "other_inbox"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	mustSave(t, s.Outbox(), newMsg("t", ""))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := opened.DB().PingContext(ctx); err != nil {
		t.Fatalf("NewSQLite's Close closed the caller's handle: %v", err)
	}
	// Both stores migrated into one file, each recorded under its tables.
	ms, err := s.migrations()
	if err != nil {
		t.Fatal(err)
	}
	if got := appliedVersions(t, opened); len(got) != 2*len(ms) {
		t.Fatalf("versions recorded: %v, want the %d versions of each store", got, len(ms))
	}
}

// The relay's writes on SQLite queue in the process, one at a time: a
// claim or a mark waits while another runs, and gives up when its context
// ends instead of waiting on.
func TestSQLiteRelayWritesQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newTestStore(t, kindSQLite, Config{})
	msgs := benchMessages(2)
	if _, err := s.Outbox().SaveMany(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	release, err := s.queueWrite(ctx) // a write in progress
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := s.Outbox().Claim(short, 10, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim behind a running write = %v, want the context's deadline", err)
	}
	if err := s.Outbox().MarkPublished(short, msgs[0].ID()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("mark behind a running write = %v, want the context's deadline", err)
	}

	claimed := make(chan int, 1)
	go func() {
		c, err := s.Outbox().Claim(ctx, 10, time.Minute)
		if err != nil {
			t.Error(err)
		}
		claimed <- len(c)
	}()
	select {
	case n := <-claimed:
		t.Fatalf("a claim of %d ran while another write held the queue", n)
	case <-time.After(30 * time.Millisecond):
	}
	release()
	if n := <-claimed; n != 2 {
		t.Fatalf("claimed %d messages after the write ended, want 2", n)
	}
}
