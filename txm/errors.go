package txm

import (
	"errors"
	"fmt"
	"reflect"
)

// ErrDuplicateMessage defines a custom error type that is used to represent
// a duplicate message scenario within the message processing. Its value is
// the duplicate message's ID.
//
// Any ErrDuplicateMessage matches any other with errors.Is, whatever the ID:
//
//	if errors.Is(err, txm.ErrDuplicateMessage("")) { ... }
//
// and errors.As recovers the ID.
type ErrDuplicateMessage string

// Error implements the error interface for ErrDuplicateMessage. It formats
// the error message to indicate a duplicate message has been encountered.
func (e ErrDuplicateMessage) Error() string {
	return fmt.Sprintf("duplicate message id encountered: %s", string(e))
}

// Is reports whether target is an ErrDuplicateMessage, so errors.Is matches
// duplicates of every ID.
func (e ErrDuplicateMessage) Is(target error) bool {
	_, ok := target.(ErrDuplicateMessage)
	return ok
}

// ErrNilArgument reports a nil argument given to a constructor of this
// package: a nil publisher, store or handler, or a nil pointer of such a
// type. Constructors that return an error return one that matches it; the
// others ([NewOutbox], [NewInbox], [OutboxPublisher], [InboxHandler]) keep
// their signatures and build a value whose every call returns such an error
// instead of panicking. The error names the constructor and the argument.
// Checked with errors.Is.
var ErrNilArgument = errors.New("txm: nil argument")

// nilArgument returns the error of a nil argument arg given to fn.
func nilArgument(fn, arg string) error {
	return fmt.Errorf("txm: %s was given a nil %s: %w", fn, arg, ErrNilArgument)
}

// isNil reports whether v is nil or holds a nil pointer or function, which
// would panic at first use.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Chan, reflect.Map, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// errNilMessage is returned by handlers given a nil message.
var errNilMessage = errors.New("txm: nil message")
