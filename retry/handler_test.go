package retry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/transmanager/transmanager/async"
	"github.com/transmanager/transmanager/retry"
)

// testMessage is an IncomingMessage that counts the delivery controls used.
type testMessage struct {
	async.Message
	acks, nacks, extends, kills int
	extendErr                   error
}

func newTestMessage() *testMessage {
	return &testMessage{Message: async.NewMessage("orders", "OrderPlaced", []byte("{}"))}
}

func (m *testMessage) ReceivedAt() time.Time { return time.Time{} }
func (m *testMessage) Ack() error            { m.acks++; return nil }
func (m *testMessage) NAck() error           { m.nacks++; return nil }
func (m *testMessage) Extend() error         { m.extends++; return m.extendErr }
func (m *testMessage) Kill() error           { m.kills++; return nil }

func TestHandler(t *testing.T) {
	t.Parallel()
	handlerErr := errors.New("database busy")
	tests := []struct {
		name        string
		failures    int
		err         error
		extendErr   error
		wantCalls   int
		wantExtends int
		check       func(error) bool
	}{
		{"success", 0, handlerErr, nil, 1, 0, func(err error) bool { return err == nil }},
		{"fails twice then succeeds", 2, handlerErr, nil, 3, 2, func(err error) bool { return err == nil }},
		{"extend failures do not stop retries", 2, handlerErr, errors.New("extend failed"), 3, 2, func(err error) bool { return err == nil }},
		{"exhausted", 10, handlerErr, nil, 4, 3, func(err error) bool {
			return errors.Is(err, retry.ErrExhausted) && errors.Is(err, handlerErr)
		}},
		{"permanent is returned, not retried", 10, retry.Permanent(handlerErr), nil, 1, 0, func(err error) bool {
			return retry.IsPermanent(err) && errors.Is(err, handlerErr)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			calls := 0
			msg := newTestMessage()
			msg.extendErr = tt.extendErr
			next := async.MessageHandlerFunc(func(_ context.Context, got async.IncomingMessage) error {
				calls++
				if got != msg {
					return retry.Permanent(errors.New("handler got another message"))
				}
				if calls <= tt.failures {
					return fmt.Errorf("call %d: %w", calls, tt.err)
				}
				return nil
			})
			p := fast
			p.MaxAttempts = 4
			h := async.ChainHandler(next, retry.Handler(p))
			err := h.HandleMessage(context.Background(), msg)
			if !tt.check(err) {
				t.Errorf("HandleMessage() = %v", err)
			}
			if calls != tt.wantCalls {
				t.Errorf("next called %d times, want %d", calls, tt.wantCalls)
			}
			if msg.extends != tt.wantExtends {
				t.Errorf("Extend called %d times, want %d (once per retry)", msg.extends, tt.wantExtends)
			}
			// The middleware never settles the message itself.
			if msg.acks+msg.nacks+msg.kills != 0 {
				t.Errorf("middleware settled the message: %d acks, %d nacks, %d kills", msg.acks, msg.nacks, msg.kills)
			}
		})
	}
}

func TestHandlerContextCancelDuringWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	handlerErr := errors.New("downstream unavailable")
	msg := newTestMessage()
	entered := make(chan struct{})
	next := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error {
		close(entered)
		return handlerErr
	})
	done := make(chan error, 1)
	go func() {
		done <- retry.Handler(retry.Policy{InitialInterval: time.Hour})(next).HandleMessage(ctx, msg)
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler was not called")
	}
	cancel()
	err := waitErr(t, done)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, handlerErr) {
		t.Fatalf("HandleMessage() = %v, want Canceled and the handler's error", err)
	}
}
