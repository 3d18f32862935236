package txm_test

import (
	"context"
	"errors"
	"testing"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/txm"
)

// The seed's names, with the seed's exact signatures. This file fails to
// compile when one of them changes.
var (
	_ func(txm.InboxStore) async.MessageHandlerMiddleware                  = txm.InboxHandler
	_ func(txm.OutboxStore) async.MessagePublisherMiddleware               = txm.OutboxPublisher
	_ func(async.MessagePublisher, txm.OutboxStore) txm.OutboxProcessor    = txm.NewOutboxProcessor
	_ func(txm.OutboxProcessor, context.Context) error                     = txm.OutboxProcessor.Start
	_ func(txm.InboxStore, context.Context, async.IncomingMessage) error   = txm.InboxStore.Save
	_ func(txm.OutboxStore, context.Context, async.Message) error          = txm.OutboxStore.Save
	_ func(txm.OutboxStore, context.Context, int) ([]async.Message, error) = txm.OutboxStore.FindUnpublished
	_ func(txm.OutboxStore, context.Context, ...string) error              = txm.OutboxStore.MarkPublished
	_ func(txm.ErrDuplicateMessage) string                                 = txm.ErrDuplicateMessage.Error
	_ error                                                                = txm.ErrDuplicateMessage("")
)

// seedOutbox implements exactly the seed's OutboxStore and nothing more: if
// the interface grew a method, this would stop compiling.
type seedOutbox struct{}

func (seedOutbox) Save(context.Context, async.Message) error                     { return nil }
func (seedOutbox) FindUnpublished(context.Context, int) ([]async.Message, error) { return nil, nil }
func (seedOutbox) MarkPublished(context.Context, ...string) error                { return nil }

type seedInbox struct{}

func (seedInbox) Save(context.Context, async.IncomingMessage) error { return nil }

var (
	_ txm.OutboxStore = seedOutbox{}
	_ txm.InboxStore  = seedInbox{}
)

func TestErrDuplicateMessage(t *testing.T) {
	t.Parallel()
	err := txm.ErrDuplicateMessage("abc")
	if got, want := err.Error(), "duplicate message id encountered: abc"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	wrapped := errors.Join(errors.New("save"), err)
	if !errors.Is(wrapped, txm.ErrDuplicateMessage("")) {
		t.Error("errors.Is does not match a wrapped duplicate of another ID")
	}
	var dup txm.ErrDuplicateMessage
	if !errors.As(wrapped, &dup) || string(dup) != "abc" {
		t.Errorf("errors.As = %q, want abc", dup)
	}
	if errors.Is(errors.New("duplicate message id encountered: abc"), txm.ErrDuplicateMessage("")) {
		t.Error("a plain error with the same text matches ErrDuplicateMessage")
	}
}
