//go:build !linux

package ioring

import (
	"errors"
	"fmt"
	"runtime"
)

// errNoBackend is what New returns on a platform without a backend: both
// of ioring's backends (io_uring, and epoll with workers) are Linux only.
var errNoBackend = fmt.Errorf("%w: no ioring backend for %s (io_uring and epoll are Linux only)", ErrNotSupported, runtime.GOOS)

func newURing(*Ring, uint32) (backend, error) { return nil, errNoBackend }

func newPoll(*Ring) (backend, error) { return nil, errNoBackend }

// uringUnavailable reports whether err means io_uring is missing, so that
// BackendAuto falls back to the poll backend (here, to its error as well).
func uringUnavailable(err error) bool { return errors.Is(err, ErrNotSupported) }

// uringBackend is the io_uring backend, which this platform lacks: a ring's
// plainBe is always nil here.
type uringBackend struct{}

func plainBackend(backend) *uringBackend { return nil }

func (*uringBackend) submitPlain(uint32, *slot, uint64) error { return errNoBackend }

func (*uringBackend) submitPlains([]Op, []Request) (int, error) { return 0, errNoBackend }

func (*uringBackend) startOne(*Op, *Request, bool, bool) (bool, bool) { return false, false }

func (*uringBackend) exitOwed(bool) {}

func (*uringBackend) flush() error { return errNoBackend }

func (*uringBackend) enterTicket() bool { return false }

func (*uringBackend) enter() {}

func (*uringBackend) reapReady() int { return 0 }

func (*uringBackend) cancel(uint32, uint64) {}

func (*uringBackend) cancelPlains(_ uint32, reqs []Request) (int, []Request) { return 0, reqs }
