//go:build !linux

package ioring

import (
	"errors"
	"testing"
)

// Where ioring has no backend, New says so with ErrNotSupported, whichever
// backend is asked for; it never panics or returns a half-made Ring.
func TestNewNotSupported(t *testing.T) {
	for _, b := range []Backend{BackendAuto, BackendURing, BackendPoll} {
		r, err := New(Config{Backend: b})
		if r != nil || !errors.Is(err, ErrNotSupported) {
			t.Errorf("New(backend=%v) = %v, %v; want nil and an error wrapping ErrNotSupported", b, r, err)
		}
	}
}
