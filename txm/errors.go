package txm

import "fmt"

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
