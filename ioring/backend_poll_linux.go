//go:build linux

package ioring

import "fmt"

// newPoll is replaced by the epoll + worker pool backend.
func newPoll(r *Ring) (backend, error) {
	return nil, fmt.Errorf("%w: poll backend not built yet", ErrNotSupported)
}
