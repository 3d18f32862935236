package txm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/transmanager/transmanager/async"
)

// ExpiredCause is the cause ([DeadLetter.LastError]) of a message that the
// relay moved to dead letters because its expiry passed before it was
// published. Like every dead letter of a key, it parks the key's later
// messages until it is replayed; a replayed expired message expires again.
// Set [ProcessorConfig.DropExpired] to drop expired messages instead.
const ExpiredCause = "expired"

// ErrNotScheduled is matched by the error of [Scheduler.Cancel] and
// [Scheduler.Reschedule] when the ID names no scheduled message that waits
// to go out: it was never saved with a delivery time (or its save has not
// committed), a relay claimed or attempted it (it is published, being
// published or waiting for a retry), it was cancelled, or it is dead (or
// was replayed from the dead letters, which makes it an ordinary pending
// message). Checked with errors.Is.
var ErrNotScheduled = errors.New("txm: no scheduled message waits with this ID")

// Scheduler is the capability of a store that can cancel and move
// scheduled messages (those saved with a delivery time) that have not gone
// out (no relay has claimed or attempted them). Both work in the
// transaction ctx carries, as Save does, so they
// commit or roll back with the caller's business change; without one they
// commit on their own. A message claimed by a relay is going out and can
// no longer be changed: both return an error matching [ErrNotScheduled].
type Scheduler interface {
	// Cancel deletes the scheduled message with the given ID: it is never
	// published, and its ID can be saved again.
	Cancel(ctx context.Context, id string) error
	// Reschedule moves the scheduled message with the given ID to at
	// (which may be in the past: due at once), and sets its
	// [async.MetaDeliverAt] to at. A time that is not before the message's
	// expiry returns an error matching [ErrInvalidMetadata] and changes
	// nothing.
	Reschedule(ctx context.Context, id string, at time.Time) error
}

// DueReporter is the capability of a store that can tell an idle relay
// when its next message falls due. NextDue returns how long, by the
// store's clock, until the earliest pending message that is not due yet (a
// scheduled message, or one waiting for a retry) becomes due; ok is false
// when there is none. It returns a duration rather than a time so that a
// relay whose clock differs from the database's still wakes on time. The
// relay asks before each idle wait and wakes then instead of after
// [ProcessorConfig.PollInterval]; a store without it is polled.
type DueReporter interface {
	NextDue(ctx context.Context) (in time.Duration, ok bool, err error)
}

// ExpiredObserver is an optional extension of [Observer]: the relay calls
// Expired for each message it did not publish because its expiry passed,
// with dropped true when the message was dropped ([ProcessorConfig.DropExpired],
// or a store without dead letters) and false when it went to dead letters
// (for which Dead is called as well).
type ExpiredObserver interface {
	Expired(msg async.Message, dropped bool)
}

// SequenceKey returns the key by which a store orders a message with the
// given metadata: its partition key, or "" (no order) for a message with a
// delivery time, which is outside its key's sequence.
func SequenceKey(md async.Metadata) string {
	if md == nil {
		return ""
	}
	if _, ok := md[async.MetaDeliverAt]; ok {
		return ""
	}
	return md.PartitionKey()
}

// ScheduleOf returns the delivery time and expiry in a message's metadata:
// zero for a key that is absent. A value that is not an RFC 3339 string,
// or an expiry that is not after the delivery time, returns an error
// matching [ErrInvalidMetadata]. Stores call it on save.
func ScheduleOf(md async.Metadata) (deliverAt, expiresAt time.Time, err error) {
	if deliverAt, err = metaTime(md, async.MetaDeliverAt); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if expiresAt, err = metaTime(md, async.MetaExpiresAt); err != nil {
		return time.Time{}, time.Time{}, err
	}
	if !deliverAt.IsZero() && !expiresAt.IsZero() && !expiresAt.After(deliverAt) {
		return time.Time{}, time.Time{}, fmt.Errorf("txm: metadata %q (%s) is not after %q (%s): the message would expire before it is delivered: %w",
			async.MetaExpiresAt, async.FormatTime(expiresAt), async.MetaDeliverAt, async.FormatTime(deliverAt), ErrInvalidMetadata)
	}
	return deliverAt, expiresAt, nil
}

// metaTime parses the time under key: zero when absent.
func metaTime(md async.Metadata, key string) (time.Time, error) {
	v, ok := md[key]
	if !ok {
		return time.Time{}, nil
	}
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return time.Time{}, fmt.Errorf("txm: metadata %q is a %T, not an RFC 3339 string (use async.FormatTime): %w", key, v, ErrInvalidMetadata)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("txm: metadata %q: %q is not an RFC 3339 time: %w", key, s, ErrInvalidMetadata)
	}
	return t, nil
}

// expiresAt returns a message's expiry; ok is false when it has none or it
// cannot be read (the publisher refuses such a message).
func expiresAt(msg async.Message) (time.Time, bool) {
	md := msg.Metadata()
	if md == nil {
		return time.Time{}, false
	}
	if _, ok := md[async.MetaExpiresAt]; !ok {
		return time.Time{}, false
	}
	t, err := metaTime(md, async.MetaExpiresAt)
	return t, err == nil && !t.IsZero()
}

// expired reports whether msg's expiry has passed at now.
func expired(msg async.Message, now time.Time) bool {
	t, ok := expiresAt(msg)
	return ok && !now.Before(t)
}

// schedule is the delivery time and expiry set by a message's options.
type schedule struct {
	deliverAt time.Time
	delay     time.Duration
	expiresAt time.Time
	ttl       time.Duration
	set       scheduleSet
}

type scheduleSet uint8

const (
	setDeliverAt scheduleSet = 1 << iota
	setDelay
	setExpiresAt
	setTTL
)

// WithDeliverAt makes the relay publish the message at t, not before: the
// message is saved at once, in the caller's transaction, and no relay
// claims it until t by the store's clock (the database's for SQL stores). A
// store that implements [Scheduler] can cancel or move it until a relay
// claims it. A zero t is an error matching [ErrInvalidMetadata]. It
// replaces an earlier [WithDelay]. It sets [async.MetaDeliverAt], which
// the untyped path ([OutboxPublisher]) sets directly.
//
// A message with a delivery time is outside its partition key's sequence:
// it does not wait for the key's earlier messages, and the key's later
// messages do not wait for it, neither while it is scheduled nor when its
// publish fails or it is dead. It keeps its [async.MetaPartitionKey], so a
// broker that routes by key still sees it. This is the rule of the
// schedulers this outbox's users know (River, MassTransit and Wolverine
// keep scheduled messages apart from the ordered stream): a reminder due in
// a day must not hold back the rest of its key's events for that day, and
// the place of a scheduled message in a sequence is its time, not the
// moment it was saved. A producer that needs a key's later messages to
// follow a scheduled one schedules them too. A message whose delivery time
// has passed when it is saved is outside its key's sequence as well: it
// goes out at once, unordered with the key's other messages.
func WithDeliverAt(t time.Time) PublishOption {
	return PublishOption{sched: schedule{deliverAt: t, set: setDeliverAt}}
}

// WithDelay is [WithDeliverAt] d from now. A zero d sets no delivery time:
// the message goes out at once and keeps its place in its key's sequence.
// A negative d is an error matching [ErrInvalidMetadata].
func WithDelay(d time.Duration) PublishOption {
	return PublishOption{sched: schedule{delay: d, set: setDelay}}
}

// WithExpiresAt sets the time after which the message is not worth
// delivering: the relay does not publish it from t on, by its clock
// ([ProcessorConfig.Clock]), but moves it to dead letters with the cause
// [ExpiredCause] or drops it ([ProcessorConfig.DropExpired]); it never
// schedules a retry of it past t; and [InboxHandler] skips (and acks) a
// delivery of it that arrives from t on. It sets [async.MetaExpiresAt]. A zero t,
// or a t that is not after the message's delivery time, is an error
// matching [ErrInvalidMetadata]. It replaces an earlier [WithTTL].
func WithExpiresAt(t time.Time) PublishOption {
	return PublishOption{sched: schedule{expiresAt: t, set: setExpiresAt}}
}

// WithTTL is [WithExpiresAt] d after the message's delivery time (its
// [WithDeliverAt] or [WithDelay] time, or now for a message without one).
// A d that is not positive is an error matching [ErrInvalidMetadata].
func WithTTL(d time.Duration) PublishOption {
	return PublishOption{sched: schedule{ttl: d, set: setTTL}}
}

// merge applies a later option's schedule over s.
func (s *schedule) merge(o schedule) {
	switch {
	case o.set&setDeliverAt != 0:
		s.deliverAt, s.delay = o.deliverAt, 0
		s.set = s.set&^setDelay | setDeliverAt
	case o.set&setDelay != 0:
		s.deliverAt, s.delay = time.Time{}, o.delay
		s.set = s.set&^setDeliverAt | setDelay
	case o.set&setExpiresAt != 0:
		s.expiresAt, s.ttl = o.expiresAt, 0
		s.set = s.set&^setTTL | setExpiresAt
	case o.set&setTTL != 0:
		s.expiresAt, s.ttl = time.Time{}, o.ttl
		s.set = s.set&^setExpiresAt | setTTL
	}
}

// apply resolves the schedule at now and writes it into md.
func (s schedule) apply(md async.Metadata, now time.Time) error {
	if s.set == 0 {
		return nil
	}
	var deliverAt time.Time
	switch {
	case s.set&setDeliverAt != 0:
		if s.deliverAt.IsZero() {
			return fmt.Errorf("txm: WithDeliverAt: zero time: %w", ErrInvalidMetadata)
		}
		deliverAt = s.deliverAt
	case s.set&setDelay != 0:
		if s.delay < 0 {
			return fmt.Errorf("txm: WithDelay: negative delay %v: %w", s.delay, ErrInvalidMetadata)
		}
		if s.delay > 0 {
			deliverAt = now.Add(s.delay)
		}
	}
	var expiry time.Time
	switch {
	case s.set&setExpiresAt != 0:
		if s.expiresAt.IsZero() {
			return fmt.Errorf("txm: WithExpiresAt: zero time: %w", ErrInvalidMetadata)
		}
		expiry = s.expiresAt
	case s.set&setTTL != 0:
		if s.ttl <= 0 {
			return fmt.Errorf("txm: WithTTL: %v is not positive: %w", s.ttl, ErrInvalidMetadata)
		}
		from := now
		if !deliverAt.IsZero() {
			from = deliverAt
		}
		expiry = from.Add(s.ttl)
	}
	if !deliverAt.IsZero() && !expiry.IsZero() && !expiry.After(deliverAt) {
		return fmt.Errorf("txm: the expiry %s is not after the delivery time %s: %w",
			async.FormatTime(expiry), async.FormatTime(deliverAt), ErrInvalidMetadata)
	}
	if !deliverAt.IsZero() {
		md[async.MetaDeliverAt] = async.FormatTime(deliverAt)
	}
	if !expiry.IsZero() {
		md[async.MetaExpiresAt] = async.FormatTime(expiry)
	}
	return nil
}
