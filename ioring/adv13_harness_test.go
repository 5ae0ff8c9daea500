//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The adv13 harness: the poll backend's own machinery (shared epoll
// registrations, wake-ups, the worker pool), compared with io_uring where
// the contract says they agree. It reuses the adv12 exactly-once ledger.

// adv13Hang bounds every wait of an adv13 test.
const adv13Hang = 20 * time.Second

// adv13Rand returns a seeded source, the seed logged for replay
// (CANCELIO_SEED).
func adv13Rand(t *testing.T) *rand.Rand {
	s := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d (CANCELIO_SEED=%d replays the choices)", s, s)
	return rand.New(rand.NewPCG(s, s^0x13))
}

// adv13RandFrom is a source from a seed drawn by adv13Rand.
func adv13RandFrom(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x13)) }

// adv13Both runs fn on a fresh ring of each backend (fds checked around
// it), and returns what each run recorded, for a comparison.
func adv13Both(t *testing.T, entries int, fn func(t *testing.T, r *Ring) []string) map[Backend][]string {
	got := map[Backend][]string{}
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			fdcheck.Check(t)
			r, err := New(Config{Entries: entries, Backend: b})
			require.NoError(t, err, "New(%v)", b)
			t.Cleanup(func() { r.Close() })
			require.Equal(t, b, r.Backend().Backend)
			got[b] = fn(t, r)
			if err := r.Close(); err != nil {
				require.ErrorIs(t, err, ErrClosed, "Close")
			}
		})
	}
	return got
}

// adv13Agree fails t when both backends ran and recorded different
// outcomes.
func adv13Agree(t *testing.T, got map[Backend][]string) {
	t.Helper()
	u, okU := got[BackendURing]
	p, okP := got[BackendPoll]
	if !okU || !okP {
		return
	}
	if strings.Join(u, "\n") != strings.Join(p, "\n") {
		t.Errorf("backends disagree:\nuring:\n\t%s\npoll:\n\t%s", strings.Join(u, "\n\t"), strings.Join(p, "\n\t"))
	} else {
		t.Logf("both:\n\t%s", strings.Join(u, "\n\t"))
	}
}

// adv13Out names an outcome: n=N, or the error.
func adv13Out(c Completion) string {
	switch {
	case c.Err == nil:
		return fmt.Sprintf("n=%d", c.N)
	case errors.Is(c.Err, ErrTimeout):
		return "timeout"
	case errors.Is(c.Err, ErrCanceled):
		return "canceled"
	}
	var e syscall.Errno
	if errors.As(c.Err, &e) {
		return unix.ErrnoName(e)
	}
	return c.Err.Error()
}

// adv13Wait waits for each request with a bound, and returns their
// completions in the same order.
func adv13Wait(t *testing.T, r *Ring, what string, qs ...Request) []Completion {
	t.Helper()
	out := make([]Completion, len(qs))
	for i, q := range qs {
		done := make(chan struct{})
		go func() {
			defer close(done)
			out[i], _ = q.Wait(context.Background())
		}()
		select {
		case <-done:
		case <-time.After(adv13Hang):
			t.Fatalf("%s: request %d of %d not completed within %v; InFlight %d", what, i, len(qs), adv13Hang, r.InFlight())
		}
	}
	return out
}

// adv13Sorted returns a sorted copy of ss.
func adv13Sorted(ss []string) []string {
	c := append([]string(nil), ss...)
	sort.Strings(c)
	return c
}

// adv13SockPair returns a connected AF_UNIX stream pair, blocking, closed
// with the test unless the test closes them (the returned closers are
// idempotent).
func adv13SockPair(t *testing.T, typ int) (a, b int) {
	p, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	return p[0], p[1]
}

// adv13TCPPair returns a connected loopback TCP pair (blocking) with small
// buffers.
func adv13TCPPair(t *testing.T) (a, b int) {
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(l)
	require.NoError(t, unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(l, 1))
	sa, err := unix.Getsockname(l)
	require.NoError(t, err)
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Connect(c, sa))
	s, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	return c, s
}

// adv13Fill writes to the non-blocking-for-the-moment fd until its buffer
// is full, and returns how many bytes went in.
func adv13Fill(t *testing.T, fd int) int {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK)
	require.NoError(t, err)
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := unix.Write(fd, buf)
		if n > 0 {
			total += n
		}
		if err == unix.EAGAIN {
			return total
		}
		require.NoError(t, err)
	}
}

// adv13Drain reads fd (made non-blocking for the moment) until EAGAIN or
// EOF and returns what it read.
func adv13Drain(t *testing.T, fd int) []byte {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK)
	require.NoError(t, err)
	defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	var out []byte
	buf := make([]byte, 65536)
	for {
		n, err := unix.Read(fd, buf)
		if n > 0 {
			out = append(out, buf[:n]...)
			continue
		}
		if n == 0 && err == nil || err == unix.EAGAIN {
			return out
		}
		require.NoError(t, err)
	}
}
