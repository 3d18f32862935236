package txm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/transmanager/transmanager/async"
)

// ErrGroupMismatch reports a message that [InboxHandler] refused because
// the subscription that delivered it belongs to another consumer group than
// the inbox the handler was built on: a handler on store.Inbox("billing")
// subscribed with async.GroupName("shipping"). Such a handler would find
// every message billing handled already recorded and skip it as a
// duplicate, so shipping would silently never see it. The error names both
// groups and the message. Checked with errors.Is.
var ErrGroupMismatch = errors.New("txm: the subscription's consumer group is not the inbox's")

// GroupedInbox is an optional capability of an [InboxStore] that keeps the
// records of one consumer group: Group returns that group, which must not
// change. The inboxes of memstore and sqlstore implement it. [InboxHandler]
// compares it with the group of the subscription that delivered each
// message (see [async.GroupFromContext]) and refuses a mismatch with
// [ErrGroupMismatch]. An inbox without it, or whose Group is "", is not
// checked. A wrapper of an inbox store should implement GroupedInbox when
// the store it wraps does, or the check silently turns off.
type GroupedInbox interface {
	Group() string
}

// InboxHandler returns a new instance of MessageHandlerMiddleware that uses
// the provided InboxStore to save incoming messages before passing them to
// the next handler in the chain. It ensures that duplicate messages are
// handled gracefully by acknowledging them without returning an error, thus
// preventing multiple processing of the same message.
//
// The middleware wraps around the next MessageHandler to intercept the call,
// perform operations on the message, and delegate the message to the next
// handler if appropriate.
//
// When the store implements [Transactor], the save and next run in one
// transaction: the context passed to next carries it, so the handler's own
// writes through the same store commit together with the inbox record, and
// when next returns an error the inbox record rolls back with them and the
// broker's redelivery is processed again. A store without Transactor keeps
// the record even when next fails, so a failed message is not processed
// again: use a transactional store where that matters.
//
// On a duplicate (an error matching [ErrDuplicateMessage]) the middleware
// acks the message and returns nil without calling next. It does the same,
// without saving the message, for a delivery whose expiry
// ([async.MetaExpiresAt]) has passed ([InboxConfig.OnExpired]).
//
// # Consumer groups
//
// An inbox records the messages of one consumer group, and each group
// receives every message, so the inbox a handler uses must be the group's it
// is subscribed as. When the store reports its group ([GroupedInbox]) and the
// handler's context carries the subscription's ([async.GroupFromContext]; the
// memory broker and natsjs put it there), the middleware compares them for
// each message. On a mismatch it neither saves the message nor calls next:
// it returns an error matching [ErrGroupMismatch] that names both groups,
// and logs it at ERROR on the first such message of the handler (once, not
// per message; see [InboxConfig.Logger]). The subscriber treats the error as
// any failure: the message is NAcked and redelivered per the subscription's
// policy (perhaps to a rightly wired subscription of the group), and after
// its last delivery it becomes a dead letter that carries the error, to be
// replayed once the wiring is fixed. The error is not permanent, so that the
// redeliveries have that chance; it costs no store call. A mismatch is never
// a duplicate: nothing is acked.
//
// A private subscription (no group) carries no group and is not checked: it
// receives every message of the topic, and an inbox of any group absorbs its
// redeliveries. Two private subscriptions, or two handlers of different
// groups called directly, sharing one inbox are not detected: give each its
// own group and inbox.
//
// With a nil store, or wrapped around a nil next, the handler returns an
// error matching [ErrNilArgument] for every message, without saving it or
// settling it.
func InboxHandler(store InboxStore) async.MessageHandlerMiddleware {
	return InboxHandlerWithConfig(store, InboxConfig{})
}

// InboxConfig configures [InboxHandlerWithConfig]. The zero value behaves
// as [InboxHandler].
type InboxConfig struct {
	// OnDuplicate, when set, is called for every duplicate the inbox
	// absorbs, for metrics or logs. It must be quick and safe for concurrent
	// use.
	OnDuplicate func(ctx context.Context, msg async.IncomingMessage)

	// OnExpired, when set, is called for every delivery the handler skips
	// because the message's expiry ([async.MetaExpiresAt], see
	// [WithExpiresAt]) has passed: such a message is acked, logged at
	// DEBUG, and neither recorded nor handled. It must be quick and safe
	// for concurrent use.
	OnExpired func(ctx context.Context, msg async.IncomingMessage)

	// Now is the handler's clock, against which expiries are checked.
	// Default: time.Now.
	Now func() time.Time

	// Logger receives the ERROR record of a consumer group mismatch
	// ([ErrGroupMismatch]), logged once per handler, and the DEBUG record
	// of each expired message skipped, with the context of the message.
	// Default: slog.Default().
	Logger *slog.Logger
}

// InboxHandlerWithConfig is [InboxHandler] with hooks.
func InboxHandlerWithConfig(store InboxStore, cfg InboxConfig) async.MessageHandlerMiddleware {
	var nilStore error
	if isNil(store) {
		nilStore = nilArgument("InboxHandler", "store")
	}
	var inboxGroup string
	if g, ok := store.(GroupedInbox); ok && nilStore == nil {
		inboxGroup = g.Group()
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return func(next async.MessageHandler) async.MessageHandler {
		err := nilStore
		if err == nil && isNil(next) {
			err = nilArgument("InboxHandler middleware", "next handler")
		}
		if err != nil {
			return async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return err })
		}
		var logged atomic.Bool
		return async.MessageHandlerFunc(func(ctx context.Context, msg async.IncomingMessage) error {
			if isNil(msg) {
				return errNilMessage
			}
			if inboxGroup != "" {
				if sub, ok := async.GroupFromContext(ctx); ok && sub != inboxGroup {
					err := fmt.Errorf("txm: InboxHandler: message %s of %q was delivered to a subscription of group %q, but the handler's inbox is group %q's (subscribe with async.GroupName(%q) or use the store's Inbox(%q)): %w",
						msg.ID(), msg.Subject(), sub, inboxGroup, inboxGroup, sub, ErrGroupMismatch)
					if logged.CompareAndSwap(false, true) {
						logger.LogAttrs(ctx, slog.LevelError, "txm: inbox handler subscribed as another consumer group; its messages are refused (logged once)",
							slog.String("subscription_group", sub), slog.String("inbox_group", inboxGroup),
							slog.String("topic", msg.Subject()), slog.String("id", msg.ID()), slog.Any("error", err))
					}
					return err
				}
			}
			if expired(msg, now()) {
				// Not worth handling any more: settle it, so the broker
				// does not redeliver it, and record nothing.
				if logger.Enabled(ctx, slog.LevelDebug) {
					exp, _ := expiresAt(msg)
					logger.LogAttrs(ctx, slog.LevelDebug, "txm: inbox: message expired; skipped",
						slog.String("topic", msg.Subject()), slog.String("id", msg.ID()), slog.Time("expires_at", exp))
				}
				if err := msg.Ack(); err != nil {
					return fmt.Errorf("txm: InboxHandler: ack expired message %s: %w", msg.ID(), err)
				}
				if cfg.OnExpired != nil {
					cfg.OnExpired(ctx, msg)
				}
				return nil
			}
			duplicate := false
			handle := func(ctx context.Context) error {
				if err := store.Save(ctx, msg); err != nil {
					if errors.Is(err, ErrDuplicateMessage("")) {
						duplicate = true
						return nil
					}
					return err
				}
				return next.HandleMessage(ctx, msg)
			}
			var err error
			if tx, ok := store.(Transactor); ok {
				err = tx.InTx(ctx, handle)
			} else {
				err = handle(ctx)
			}
			if err != nil {
				return err
			}
			if duplicate {
				// The broker acks a handler's nil result as well; acking
				// here settles the delivery even for subscribers that do
				// not, and acks are idempotent.
				_ = msg.Ack()
				if cfg.OnDuplicate != nil {
					cfg.OnDuplicate(ctx, msg)
				}
			}
			return nil
		})
	}
}
