package async_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/transmanager/transmanager/async"
)

func TestHandleSafely(t *testing.T) {
	t.Parallel()
	boom := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { panic("boom") })
	err := async.HandleSafely(context.Background(), boom, nil)
	var perr *async.PanicError
	if !errors.As(err, &perr) {
		t.Fatalf("HandleSafely() = %v, want a *async.PanicError", err)
	}
	if perr.Value != "boom" || !strings.Contains(string(perr.Stack), "panic_test.go") {
		t.Errorf("PanicError{Value: %v, Stack: %s}, want the value and a stack through the panicking handler", perr.Value, perr.Stack)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "panic: boom\n") || !strings.Contains(msg, "panic_test.go") {
		t.Errorf("Error() = %q, want the value and the stack", msg)
	}

	// A panic with an error value unwraps to it.
	eof := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { panic(io.EOF) })
	if err := async.HandleSafely(context.Background(), eof, nil); !errors.Is(err, io.EOF) {
		t.Errorf("HandleSafely() = %v, want it to match the panic's error value", err)
	}
	// panic(nil) is a panic too.
	nilPanic := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { panic(nil) })
	if err := async.HandleSafely(context.Background(), nilPanic, nil); !errors.As(err, &perr) {
		t.Errorf("HandleSafely() = %v after panic(nil), want a *async.PanicError", err)
	}
	// Without a panic the handler's own result is returned.
	fails := errors.New("fails")
	plain := async.MessageHandlerFunc(func(context.Context, async.IncomingMessage) error { return fails })
	if err := async.HandleSafely(context.Background(), plain, nil); err != fails {
		t.Errorf("HandleSafely() = %v, want the handler's error", err)
	}
}
