package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// DeadLetterReason says why a message became a dead letter.
type DeadLetterReason string

const (
	// DeadLetterMaxDeliveries: the message was delivered the consumer's
	// MaxDeliver times without being acked.
	DeadLetterMaxDeliveries DeadLetterReason = "max_deliveries"
	// DeadLetterTerminated: a handler killed the message
	// ([async.IncomingMessage.Kill], a JetStream Term).
	DeadLetterTerminated DeadLetterReason = "terminated"
)

// advisoryMaxDeliveries is the prefix of the subject on which JetStream
// publishes that a consumer gave up on a message after MaxDeliver
// deliveries; the subscriber listens on it for each of its consumers.
const advisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."

// maxErrorHeader bounds the length of [HeaderDeadLetterError].
const maxErrorHeader = 4096

// DeadLetter is a message that a subscription's consumer gave up on (see
// the package documentation). The message stays in its stream (unless the
// stream's retention removed it), so it can be inspected or republished
// from there as well.
type DeadLetter struct {
	// ID is the message's ID, "" when the message could not be read.
	ID string
	// Message is the message: the delivery itself when the subscriber
	// gave up on it in a handler, or the message read back from the stream
	// by sequence for a dead letter the server reported; nil when that
	// failed (for example when the stream's limits already removed it),
	// and then Err says why.
	Message async.Message
	// Topic and Group are the topic and the consumer group of the
	// subscription whose consumer gave up; Group is "" for a private
	// subscription.
	Topic string
	Group string
	// Stream and Sequence locate the message in JetStream.
	Stream   string
	Sequence uint64
	// Consumer is the JetStream consumer's name.
	Consumer string
	// Reason says why the consumer gave up.
	Reason DeadLetterReason
	// Deliveries is how many times the message was delivered.
	Deliveries uint64
	// At is when the subscriber recorded the dead letter.
	At time.Time
	// HandlerErr is the error of the handler that gave up on the message:
	// what a handler that killed it returned (a decode error of a typed
	// inbox, for example), or the failure of its last delivery (an
	// [*async.PanicError] for a handler that panicked). nil when the
	// handler returned nil, and for a dead letter the server reported (its
	// last delivery ran out of its ack wait or was NAcked by its handler).
	HandlerErr error
	// Err reports what failed while handling the dead letter: reading the
	// message from the stream, or republishing it to the dead-letter
	// subject. nil when everything worked.
	Err error
}

// advisory is the part of a MAX_DELIVERIES or MSG_TERMINATED advisory the
// subscriber uses.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// subscribeAdvisories listens for the MAX_DELIVERIES advisories of the
// subscription's consumer. Members of a group share one queue group, so each
// advisory is handled once per group even across processes.
func (s *subscription) subscribeAdvisories() error {
	nc := s.sub.js.Conn()
	queue := "natsjs-deadletters-" + s.consumer
	ns, err := nc.QueueSubscribe(advisoryMaxDeliveries+s.stream+"."+s.consumer, queue, func(m *nats.Msg) {
		s.onAdvisory(m.Data)
	})
	if err != nil {
		return fmt.Errorf("natsjs: subscribe to dead-letter advisories of %s/%s: %w", s.stream, s.consumer, err)
	}
	s.advisories = append(s.advisories, ns)
	// Make sure the server registered the interest before messages flow.
	if err := nc.Flush(); err != nil {
		s.stopAdvisories()
		return fmt.Errorf("natsjs: subscribe to dead-letter advisories of %s/%s: %w", s.stream, s.consumer, err)
	}
	return nil
}

// stopAdvisories ends the advisory subscriptions and waits for the
// advisories being handled.
func (s *subscription) stopAdvisories() {
	s.dlMu.Lock()
	s.dlClosed = true
	s.dlMu.Unlock()
	for _, ns := range s.advisories {
		_ = ns.Unsubscribe()
	}
	s.dlCancel()
	s.dlWG.Wait()
}

// onAdvisory records the dead letter of a MAX_DELIVERIES advisory, reading
// the message back from the stream.
func (s *subscription) onAdvisory(data []byte) {
	s.dlMu.Lock()
	if s.dlClosed {
		s.dlMu.Unlock()
		return
	}
	s.dlWG.Add(1)
	s.dlMu.Unlock()
	defer s.dlWG.Done()

	var adv advisory
	if err := json.Unmarshal(data, &adv); err != nil {
		s.sub.log.Warn("natsjs: unreadable dead-letter advisory", "stream", s.stream, "consumer", s.consumer, "error", err)
		return
	}
	dl := DeadLetter{
		Topic:      s.topic,
		Group:      s.group,
		Stream:     adv.Stream,
		Sequence:   adv.StreamSeq,
		Consumer:   adv.Consumer,
		Reason:     DeadLetterMaxDeliveries,
		Deliveries: adv.Deliveries,
		At:         time.Now(),
	}
	ctx, cancel := context.WithTimeout(s.dlCtx, s.sub.requestTimeout)
	defer cancel()
	raw, err := s.getMsg(ctx, adv.StreamSeq)
	if err != nil {
		dl.Err = fmt.Errorf("natsjs: read dead letter %s/%d: %w", adv.Stream, adv.StreamSeq, err)
	} else {
		env := fromNats(raw.Subject, raw.Header, raw.Data, adv.Stream, raw.Sequence, raw.Time)
		dl.ID = env.id
		dl.Message = &env
		if s.sub.cfg.DeadLetterPrefix != "" {
			dl.Err = s.republish(ctx, dl, raw.Subject, raw.Header, raw.Data)
		}
	}
	s.report(dl)
}

// deadLetter records the dead letter of a delivery the subscriber gave up
// on (a Kill, or a failure of the last delivery), with the handler's error
// herr.
func (s *subscription) deadLetter(in *incoming, reason DeadLetterReason, herr error) {
	env := in.envelope
	env.metadata = maps.Clone(env.metadata)
	dl := DeadLetter{
		ID:         in.id,
		Message:    &env,
		Topic:      s.topic,
		Group:      s.group,
		Stream:     in.stream,
		Sequence:   in.seq,
		Consumer:   s.consumer,
		Reason:     reason,
		Deliveries: in.delivered,
		At:         time.Now(),
		HandlerErr: herr,
	}
	if s.sub.cfg.DeadLetterPrefix != "" {
		ctx, cancel := context.WithTimeout(s.dlCtx, s.sub.requestTimeout)
		dl.Err = s.republish(ctx, dl, in.jm.Subject(), in.jm.Headers(), in.jm.Data())
		cancel()
	}
	s.report(dl)
}

// report logs dl at WARN, keeps it in the history and calls OnDeadLetter.
func (s *subscription) report(dl DeadLetter) {
	attrs := []any{"id", dl.ID, "topic", dl.Topic, "group", dl.Group, "stream", dl.Stream, "sequence", dl.Sequence,
		"reason", string(dl.Reason), "deliveries", dl.Deliveries, "error", dl.HandlerErr}
	if dl.Err != nil {
		attrs = append(attrs, "dead_letter_error", dl.Err)
	}
	s.sub.log.Warn("natsjs: message went to dead letters", attrs...)
	s.reportMu.Lock()
	defer s.reportMu.Unlock()
	s.sub.recordDeadLetter(dl)
}

func (s *subscription) getMsg(ctx context.Context, seq uint64) (*jetstream.RawStreamMsg, error) {
	s.dlMu.Lock()
	st := s.streamHandle
	s.dlMu.Unlock()
	if st == nil {
		var err error
		st, err = s.sub.js.Stream(ctx, s.stream)
		if err != nil {
			return nil, err
		}
		s.dlMu.Lock()
		s.streamHandle = st
		s.dlMu.Unlock()
	}
	return st.GetMsg(ctx, seq)
}

// republish sends a dead letter to DeadLetterPrefix + "." + its subject,
// with its headers (its ID included) and the dead-letter headers.
func (s *subscription) republish(ctx context.Context, dl DeadLetter, subject string, header nats.Header, data []byte) error {
	h := make(nats.Header, len(header)+8)
	for k, vs := range header {
		if k == HeaderMsgID || !reservedHeader(k) {
			h[k] = vs
		}
	}
	h[HeaderMsgID] = []string{dl.ID}
	h[HeaderDeadLetterReason] = []string{string(dl.Reason)}
	h[HeaderDeadLetterTopic] = []string{dl.Topic}
	h[HeaderDeadLetterStream] = []string{dl.Stream}
	h[HeaderDeadLetterSequence] = []string{strconv.FormatUint(dl.Sequence, 10)}
	h[HeaderDeadLetterConsumer] = []string{dl.Consumer}
	h[HeaderDeadLetterDeliveries] = []string{strconv.FormatUint(dl.Deliveries, 10)}
	if dl.HandlerErr != nil {
		h[HeaderDeadLetterError] = []string{errorHeader(dl.HandlerErr)}
	} else {
		delete(h, HeaderDeadLetterError)
	}
	dlSubject := s.sub.cfg.DeadLetterPrefix + "." + subject
	if _, err := s.sub.js.PublishMsg(ctx, &nats.Msg{Subject: dlSubject, Header: h, Data: data}); err != nil {
		return fmt.Errorf("natsjs: republish dead letter %s to %q: %w", dl.ID, dlSubject, err)
	}
	return nil
}

// errorHeader returns err's text as one header line: its lines trimmed and
// joined with " | ", cut to maxErrorHeader bytes.
func errorHeader(err error) string {
	var b strings.Builder
	for line := range strings.Lines(err.Error()) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(" | ")
		}
		b.WriteString(line)
	}
	v := b.String()
	if len(v) > maxErrorHeader {
		cut := maxErrorHeader
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = strings.TrimSpace(v[:cut])
	}
	return v
}

// recordDeadLetter keeps dl in the bounded history and calls OnDeadLetter.
func (sub *Subscriber) recordDeadLetter(dl DeadLetter) {
	if sub.history > 0 {
		sub.dlMu.Lock()
		if len(sub.deadLetters) >= sub.history {
			n := copy(sub.deadLetters, sub.deadLetters[1:])
			sub.deadLetters = sub.deadLetters[:n]
		}
		sub.deadLetters = append(sub.deadLetters, dl)
		sub.dlMu.Unlock()
	}
	if sub.cfg.OnDeadLetter != nil {
		sub.cfg.OnDeadLetter(dl)
	}
}

// DeadLetters returns the dead letters observed by this subscriber's
// subscriptions, oldest first, at most [SubscriberConfig.DeadLetterHistory]
// of them. The slice is a copy.
func (sub *Subscriber) DeadLetters() []DeadLetter {
	sub.dlMu.Lock()
	defer sub.dlMu.Unlock()
	return append([]DeadLetter(nil), sub.deadLetters...)
}
