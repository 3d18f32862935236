package txm_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
	"github.com/transmanager/transmanager/txm/memstore"
)

// TestInboxHandlerGroupMismatch: a handler on one group's inbox, called
// for a subscription of another group, refuses every message with
// ErrGroupMismatch, saves nothing, never calls next and logs at ERROR once.
func TestInboxHandlerGroupMismatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	var mu sync.Mutex
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(lockedBuffer{&mu, &buf}, nil))
	calls := 0
	next := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
		calls++
		return nil
	})
	wrong := txm.InboxHandlerWithConfig(store.Inbox("billing"), txm.InboxConfig{Logger: logger})(next)
	shipping := async.WithGroup(ctx, "shipping")
	msgs := []*testMessage{incoming(async.NewMessage("orders", "Test", nil)), incoming(async.NewMessage("orders", "Test", nil))}
	for _, m := range msgs {
		err := wrong.HandleMessage(shipping, m)
		if !errors.Is(err, txm.ErrGroupMismatch) {
			t.Fatalf("HandleMessage = %v, want ErrGroupMismatch", err)
		}
		for _, want := range []string{`"shipping"`, `"billing"`, m.ID()} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		}
		if m.acks != 0 || m.nacks != 0 || m.kills != 0 {
			t.Errorf("the handler settled the message (acks %d, nacks %d, kills %d); the subscriber does", m.acks, m.nacks, m.kills)
		}
	}
	if calls != 0 {
		t.Errorf("next called %d times, want never", calls)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "level=ERROR"); n != 1 {
		t.Errorf("%d ERROR records, want one per handler:\n%s", n, out)
	}
	for _, want := range []string{"subscription_group=shipping", "inbox_group=billing", "topic=orders"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	// Nothing was saved: the rightly wired handler processes the messages.
	right := txm.InboxHandler(store.Inbox("billing"))(next)
	for _, m := range msgs {
		if err := right.HandleMessage(async.WithGroup(ctx, "billing"), incoming(m.Message)); err != nil {
			t.Fatalf("HandleMessage as billing = %v", err)
		}
	}
	if calls != len(msgs) {
		t.Errorf("next called %d times as billing, want %d (the refused messages were not recorded)", calls, len(msgs))
	}
}

// TestInboxHandlerGroupUnknown: without a group on either side there is
// nothing to compare, and the handler works as before.
func TestInboxHandlerGroupUnknown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := memstore.New(memstore.Config{})
	ungrouped := inboxFunc(func(context.Context, async.IncomingMessage) error { return nil })
	for _, tt := range []struct {
		name  string
		store txm.InboxStore
		ctx   context.Context
	}{
		{"private subscription", store.Inbox("billing"), async.WithGroup(ctx, "")},
		{"no subscriber group", store.Inbox("billing"), ctx},
		{"inbox without Group", ungrouped, async.WithGroup(ctx, "shipping")},
		{"inbox of group \"\"", store.Inbox(""), async.WithGroup(ctx, "shipping")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			called := false
			h := txm.InboxHandler(tt.store)(async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
				called = true
				return nil
			}))
			if err := h.HandleMessage(tt.ctx, incoming(async.NewMessage("orders", "Test", nil))); err != nil {
				t.Fatalf("HandleMessage = %v, want nil", err)
			}
			if !called {
				t.Error("next not called")
			}
		})
	}
}

type lockedBuffer struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
