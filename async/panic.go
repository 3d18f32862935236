package async

import (
	"context"
	"fmt"
	"runtime/debug"
)

// PanicError is the error that stands for a panic of user code called by
// this module: a handler called by a subscriber, a publisher called by the
// relay. The call counts as a failure of its message (a handler's message
// is NAcked and redelivered, a publish counts as a failed attempt) and
// nothing else stops. Check for it with errors.As.
type PanicError struct {
	// Value is the value the code panicked with.
	Value any
	// Stack is the panicking goroutine's stack (runtime/debug.Stack).
	Stack []byte
}

// Error returns the panic value followed by the stack, so that the logs and
// stores that keep the error keep where it came from.
func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %v\n\n%s", e.Value, e.Stack)
}

// Unwrap returns the panic value when it is an error, so errors.Is and
// errors.As see through the panic to it; nil otherwise.
func (e *PanicError) Unwrap() error {
	if err, ok := e.Value.(error); ok {
		return err
	}
	return nil
}

// RecoverPanic turns a panic of the function that defers it into a
// [*PanicError] stored in *err. It must be deferred directly, so that its
// own call of recover sees the panic:
//
//	func call(ctx context.Context, h async.MessageHandler, msg async.IncomingMessage) (err error) {
//		defer async.RecoverPanic(&err)
//		return h.HandleMessage(ctx, msg)
//	}
//
// Without a panic it leaves *err as the function returned it.
func RecoverPanic(err *error) {
	if v := recover(); v != nil {
		*err = &PanicError{Value: v, Stack: debug.Stack()}
	}
}

// HandleSafely calls h.HandleMessage and returns its error, or a
// [*PanicError] when it panics. Subscribers call handlers through it.
func HandleSafely(ctx context.Context, h MessageHandler, msg IncomingMessage) (err error) {
	defer RecoverPanic(&err)
	return h.HandleMessage(ctx, msg)
}
