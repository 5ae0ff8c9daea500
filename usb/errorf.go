package usb

import (
	"fmt"
	"strings"
)

// errorf is fmt.Errorf for this package's errors, whose format starts with
// "usb: ": a cause that is itself one of this package's errors (a sentinel
// such as ErrNotFound, or an error from a lower call of this package) keeps
// its identity for errors.Is, but its own "usb: " is dropped from the text,
// so that a message carries the prefix of each layer once:
// "usb: list: no USB subsystem", not "usb: list: usb: no USB subsystem".
func errorf(format string, args ...any) error {
	return &layerError{fmt.Errorf(format, args...)}
}

// layerError is an error of this layer whose text says "usb: " once.
type layerError struct{ err error }

func (e *layerError) Error() string {
	s := e.err.Error()
	const p = "usb: "
	if !strings.HasPrefix(s, p) {
		return s
	}
	return p + strings.ReplaceAll(s[len(p):], ": "+p, ": ")
}

// Unwrap returns the error with its causes.
func (e *layerError) Unwrap() error { return e.err }
