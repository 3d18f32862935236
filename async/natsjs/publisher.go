package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// DefaultMaxPending is the default of [PublisherConfig.MaxPending].
const DefaultMaxPending = 1024

// PublisherConfig configures a [Publisher]. The zero value is ready to use.
type PublisherConfig struct {
	// MaxPending is how many messages of one [Publisher.PublishBatch] call
	// may wait for their PubAck at once; the call sends the next message
	// only when the oldest one is confirmed or failed. 0 uses
	// DefaultMaxPending (1024: a relay batch of up to 1000 goes out in one
	// wave). Keep it below the JetStream context's own limit
	// (jetstream.WithPublishAsyncMaxPending, 4000 by default) when several
	// batches share one context.
	MaxPending int

	// AckTimeout bounds the wait for each PubAck when the call's context
	// has no deadline: for [Publisher.Publish] the whole call, for
	// [Publisher.PublishBatch] each message from the moment it was sent
	// (a late message fails with [ErrAckTimeout]; the others go on). A
	// context deadline, when there is one, bounds the call as well. 0 uses
	// the JetStream context's default timeout (5s unless
	// jetstream.WithDefaultTimeout changed it).
	AckTimeout time.Duration

	// Logger receives the warning NewPublisher logs when the server says
	// it syncs JetStream to disk lazily (see [SyncAlways]). nil uses
	// slog.Default().
	Logger *slog.Logger
}

// Publisher publishes messages to JetStream. It implements
// [async.MessagePublisher] and [async.AsyncPublisher]. The topic is used as
// the NATS subject, which a stream must capture. A Publisher is safe for
// concurrent use and holds no resources of its own: the caller owns, and
// eventually closes, the NATS connection behind js.
type Publisher struct {
	js         jetstream.JetStream
	maxPending int
	ackTimeout time.Duration
}

var (
	_ async.MessagePublisher = (*Publisher)(nil)
	_ async.AsyncPublisher   = (*Publisher)(nil)
)

// NewPublisher returns a publisher that sends through js. When the server
// says that it syncs JetStream to disk lazily, NewPublisher logs a warning
// (see [SyncAlways]; the question takes a round trip, bounded to half a
// second, and most accounts get no answer, in which case nothing is
// logged).
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) *Publisher {
	p := &Publisher{js: js, maxPending: cfg.MaxPending, ackTimeout: cfg.AckTimeout}
	if p.maxPending <= 0 {
		p.maxPending = DefaultMaxPending
	}
	if p.ackTimeout <= 0 {
		p.ackTimeout = js.Options().DefaultTimeout
	}
	if p.ackTimeout <= 0 {
		p.ackTimeout = 5 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	warnLazySync(js.Conn(), logger)
	return p
}

// Publish sends msg to the subject topicName with its ID in the
// Nats-Msg-Id header and returns once the stream confirmed it with a
// PubAck. A PubAck that reports a duplicate (the stream already stored this
// ID within its duplicate window) is a success. Errors wrap
// [ErrInvalidMessage], [ErrNotConnected] or the jetstream error, for
// example jetstream.ErrNoStreamResponse when no stream captures topicName.
//
// A message the server can never accept is a permanent failure (marked
// with backoff.Permanent, which retry.IsPermanent recognises, so the relay
// dead-letters it at once): one that cannot be carried as NATS headers
// ([ErrInvalidMessage]), and one whose payload and headers exceed the
// connection's maximum payload (the server's max_payload, 1 MiB by
// default), whose error matches nats.ErrMaxPayload and gives the size and
// the limit.
func (p *Publisher) Publish(ctx context.Context, topicName string, msg async.Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("natsjs: publish %s to %q: %w", msg.ID(), topicName, err)
	}
	m, err := p.natsMsg(topicName, msg)
	if err != nil {
		return err
	}
	if err := p.connected(); err != nil {
		return fmt.Errorf("natsjs: publish %s to %q: %w", msg.ID(), topicName, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.ackTimeout)
		defer cancel()
	}
	if _, err := p.js.PublishMsg(ctx, m); err != nil {
		if cerr := p.connected(); cerr != nil {
			err = errors.Join(cerr, err)
		}
		return publishError(msg.ID(), topicName, err)
	}
	return nil
}

// natsMsg builds the NATS message of msg, or returns the permanent error of
// a message the server can never accept.
func (p *Publisher) natsMsg(subject string, msg async.Message) (*nats.Msg, error) {
	m, err := toNatsMsg(subject, msg)
	if err != nil {
		return nil, backoff.Permanent(fmt.Errorf("natsjs: publish to %q: %w", subject, err))
	}
	if err := p.checkSize(m); err != nil {
		return nil, backoff.Permanent(fmt.Errorf("natsjs: publish %s to %q: %w", msg.ID(), subject, err))
	}
	return m, nil
}

// checkSize refuses a message whose payload and headers exceed the
// connection's maximum payload, as nats.go would (with a bare
// nats.ErrMaxPayload), but saying by how much. A connection that has not
// yet learnt the limit (0) checks nothing.
func (p *Publisher) checkSize(m *nats.Msg) error {
	nc := p.js.Conn()
	if nc == nil {
		return nil
	}
	limit := nc.MaxPayload()
	if limit <= 0 {
		return nil
	}
	// Size is subject + reply + encoded headers + data; the server's limit
	// counts headers and data.
	size := m.Size() - len(m.Subject) - len(m.Reply)
	if int64(size) <= limit {
		return nil
	}
	return fmt.Errorf("%w: message is %d bytes (payload %d, headers %d), the server's max_payload is %d",
		nats.ErrMaxPayload, size, len(m.Data), size-len(m.Data), limit)
}

// publishError wraps the error of a failed publish, marking permanent the
// errors of a message the server can never accept.
func publishError(id, subject string, err error) error {
	err = fmt.Errorf("natsjs: publish %s to %q: %w", id, subject, err)
	if errors.Is(err, nats.ErrMaxPayload) {
		return backoff.Permanent(err)
	}
	return err
}

func (p *Publisher) connected() error {
	nc := p.js.Conn()
	if nc == nil || nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w (connection status %v)", ErrNotConnected, nc.Status())
}

// inflight is a message of a batch sent and waiting for its PubAck.
type inflight struct {
	idx  int
	paf  jetstream.PubAckFuture
	sent time.Time
}

// PublishBatch sends every message to its Subject with PublishAsync, at most
// [PublisherConfig.MaxPending] unconfirmed at a time, then waits for all
// PubAcks. The result has one entry per message: nil where the stream
// confirmed it (a duplicate counts as confirmed), otherwise the error, which
// wraps [ErrInvalidMessage], [ErrNotConnected], [ErrAckTimeout] or the
// jetstream error. As for [Publisher.Publish], the error of a message the
// server can never accept ([ErrInvalidMessage], or larger than the
// connection's maximum payload: nats.ErrMaxPayload with the size and the
// limit) is permanent, and that message is not sent. When ctx ends first, PublishBatch returns a nil slice and
// an error wrapping ctx.Err(): no message counts as confirmed, although the
// server may have stored some (their retries are dropped as duplicates
// within the stream's duplicate window).
func (p *Publisher) PublishBatch(ctx context.Context, msgs []async.Message) ([]error, error) {
	errs := make([]error, len(msgs))
	queue := make([]inflight, 0, min(len(msgs), p.maxPending))
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()

	// wait settles the oldest message in flight.
	wait := func() error {
		f := queue[0]
		queue = queue[1:]
		left := time.Until(f.sent.Add(p.ackTimeout))
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		defer timer.Stop()
		msg := msgs[f.idx]
		select {
		case <-f.paf.Ok():
		case err := <-f.paf.Err():
			errs[f.idx] = publishError(msg.ID(), msg.Subject(), err)
		case <-timer.C:
			errs[f.idx] = fmt.Errorf("natsjs: publish %s to %q: %w after %v", msg.ID(), msg.Subject(), ErrAckTimeout, p.ackTimeout)
		case <-ctx.Done():
			return fmt.Errorf("natsjs: publish batch: %w", ctx.Err())
		}
		return nil
	}

	for i, msg := range msgs {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("natsjs: publish batch: %w", err)
		}
		m, err := p.natsMsg(msg.Subject(), msg)
		if err != nil {
			errs[i] = err
			continue
		}
		for len(queue) >= p.maxPending {
			if err := wait(); err != nil {
				return nil, err
			}
		}
		if err := p.connected(); err != nil {
			errs[i] = fmt.Errorf("natsjs: publish %s to %q: %w", msg.ID(), msg.Subject(), err)
			continue
		}
		paf, err := p.js.PublishMsgAsync(m)
		if err != nil {
			errs[i] = publishError(msg.ID(), msg.Subject(), err)
			continue
		}
		queue = append(queue, inflight{idx: i, paf: paf, sent: time.Now()})
	}
	for len(queue) > 0 {
		if err := wait(); err != nil {
			return nil, err
		}
	}
	return errs, nil
}
