package natsjs

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/transmanager/transmanager/async"
)

// DeadLetterReason says why JetStream gave up on a message.
type DeadLetterReason string

const (
	// DeadLetterMaxDeliveries: the message was delivered the consumer's
	// MaxDeliver times without being acked.
	DeadLetterMaxDeliveries DeadLetterReason = "max_deliveries"
	// DeadLetterTerminated: a handler killed the message
	// ([async.IncomingMessage.Kill], a JetStream Term).
	DeadLetterTerminated DeadLetterReason = "terminated"
)

// Advisory subjects JetStream publishes when a consumer gives up on a
// message; the subscriber listens on them for each of its consumers.
const (
	advisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
	advisoryTerminated    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."
)

// DeadLetter is a message that a subscription's consumer gave up on, as
// observed through the JetStream advisories (see the package documentation).
// The message stays in its stream (unless the stream's retention removed it),
// so it can be inspected or republished from there as well.
type DeadLetter struct {
	// ID is the message's ID, "" when the message could not be read.
	ID string
	// Message is the message read back from the stream by sequence; nil
	// when that failed (for example when the stream's limits already
	// removed it), and then Err says why.
	Message async.Message
	// Topic is the topic of the subscription whose consumer gave up.
	Topic string
	// Stream and Sequence locate the message in JetStream.
	Stream   string
	Sequence uint64
	// Consumer is the JetStream consumer's name.
	Consumer string
	// Reason says why the consumer gave up.
	Reason DeadLetterReason
	// Deliveries is how many times the message was delivered.
	Deliveries uint64
	// At is when the subscriber observed the advisory.
	At time.Time
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

// subscribeAdvisories listens for the dead-letter advisories of the
// subscription's consumer. Members of a group share one queue group, so each
// advisory is handled once per group even across processes.
func (s *subscription) subscribeAdvisories() error {
	nc := s.sub.js.Conn()
	queue := "natsjs-deadletters-" + s.consumer
	for _, a := range []struct {
		prefix string
		reason DeadLetterReason
	}{
		{advisoryMaxDeliveries, DeadLetterMaxDeliveries},
		{advisoryTerminated, DeadLetterTerminated},
	} {
		reason := a.reason
		ns, err := nc.QueueSubscribe(a.prefix+s.stream+"."+s.consumer, queue, func(m *nats.Msg) {
			s.onAdvisory(reason, m.Data)
		})
		if err != nil {
			s.stopAdvisories()
			return fmt.Errorf("natsjs: subscribe to dead-letter advisories of %s/%s: %w", s.stream, s.consumer, err)
		}
		s.advisories = append(s.advisories, ns)
	}
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

func (s *subscription) onAdvisory(reason DeadLetterReason, data []byte) {
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
		Stream:     adv.Stream,
		Sequence:   adv.StreamSeq,
		Consumer:   adv.Consumer,
		Reason:     reason,
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
			if err := s.republish(ctx, dl, raw); err != nil {
				dl.Err = err
			}
		}
	}
	if dl.Err != nil {
		s.sub.log.Warn("natsjs: dead letter", "topic", s.topic, "stream", dl.Stream, "sequence", dl.Sequence, "reason", string(reason), "error", dl.Err)
	}
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
func (s *subscription) republish(ctx context.Context, dl DeadLetter, raw *jetstream.RawStreamMsg) error {
	h := make(nats.Header, len(raw.Header)+6)
	for k, vs := range raw.Header {
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
	subject := s.sub.cfg.DeadLetterPrefix + "." + raw.Subject
	if _, err := s.sub.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: raw.Data}); err != nil {
		return fmt.Errorf("natsjs: republish dead letter %s to %q: %w", dl.ID, subject, err)
	}
	return nil
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
