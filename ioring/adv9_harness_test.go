//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ninth round, differential: each scenario runs on both backends, records
// what it saw (results, errnos, bytes, order) as lines of text, and the two
// records must be the same. What io_uring's kernel version decides is
// logged (adv9Obs.log) rather than recorded; where the backends are
// documented to differ, the scenario asserts each one's documented
// behaviour instead.

// adv9Obs is one backend's record of a scenario.
type adv9Obs struct {
	t     *testing.T
	lines []string
}

// add records one observation, compared across backends.
func (o *adv9Obs) add(format string, args ...any) {
	o.lines = append(o.lines, fmt.Sprintf(format, args...))
}

// log notes what may differ with the kernel, not compared.
func (o *adv9Obs) log(format string, args ...any) {
	o.t.Logf("%s (not compared)", fmt.Sprintf(format, args...))
}

// adv9Diff runs fn on both backends and compares their records.
func adv9Diff(t *testing.T, fn func(t *testing.T, r *Ring, o *adv9Obs)) {
	got := map[Backend][]string{}
	for _, b := range backends {
		ran := false
		forEachBackendOnly(t, b, func(t *testing.T, r *Ring) {
			o := &adv9Obs{t: t}
			fn(t, r, o)
			got[b] = o.lines
			ran = !t.Failed()
		})
		if !ran {
			return
		}
	}
	u, p := got[BackendURing], got[BackendPoll]
	if !assert.Equal(t, u, p, "uring vs poll") {
		t.Logf("uring:\n\t%s\npoll:\n\t%s", strings.Join(u, "\n\t"), strings.Join(p, "\n\t"))
		return
	}
	t.Logf("both:\n\t%s", strings.Join(u, "\n\t"))
}

// forEachBackendOnly is forEachBackend for the one backend b.
func forEachBackendOnly(t *testing.T, b Backend, fn func(t *testing.T, r *Ring)) {
	t.Run("backend="+b.String(), func(t *testing.T) {
		fdcheck.Check(t)
		r, err := New(Config{Entries: 16, Backend: b})
		require.NoError(t, err, "New(%v)", b)
		t.Cleanup(func() { r.Close() })
		require.Equal(t, b, r.Backend().Backend)
		fn(t, r)
		if err := r.Close(); err != nil {
			require.ErrorIs(t, err, ErrClosed, "Close")
		}
	})
}

// adv9Res names a completion's outcome: "n=N" or the error, and whether
// more is to come.
func adv9Res(c Completion) string {
	s := fmt.Sprintf("n=%d", c.N)
	if c.Err != nil {
		var en unix.Errno
		switch {
		case errors.Is(c.Err, ErrTimeout):
			s = "timeout"
		case errors.Is(c.Err, ErrCanceled):
			s = "canceled"
		case errors.As(c.Err, &en):
			s = unix.ErrnoName(en)
			if c.N != 0 {
				s += fmt.Sprintf(" n=%d", c.N)
			}
		default:
			s = c.Err.Error()
		}
	}
	if c.More {
		s += " more"
	}
	return s
}

// adv9Do submits op and waits (generously) for its one completion, then
// checks that no second one comes.
func adv9Do(t *testing.T, r *Ring, op Op) Completion {
	t.Helper()
	c := doOp(t, r, op)
	return c
}

// adv9Wait reaps until every request of qs has its final completion (10s
// at most), checking that none completes twice, and returns them in the
// order they came.
func adv9Wait(t *testing.T, r *Ring, qs ...Request) []Completion {
	t.Helper()
	want := map[Request]bool{}
	for _, q := range qs {
		want[q] = true
	}
	final := map[Request]bool{}
	var out []Completion
	deadline := time.Now().Add(10 * time.Second)
	for len(final) < len(qs) {
		var cs [8]Completion
		n, err := r.Reap(cs[:], time.Until(deadline))
		require.NoError(t, err)
		require.NotZero(t, n, "no final completion within 10s; got %v", out)
		for _, c := range cs[:n] {
			require.True(t, want[c.Req], "a completion of an unknown request: %+v", c)
			require.False(t, final[c.Req], "a completion after the final one: %+v", c)
			if !c.More {
				final[c.Req] = true
			}
			out = append(out, c)
		}
	}
	return out
}

// adv9WaitBy is adv9Wait for one-shot requests, by request: which of
// several completes first is not compared (a shutdown and the receive it
// ends complete in either order).
func adv9WaitBy(t *testing.T, r *Ring, qs ...Request) map[Request]Completion {
	t.Helper()
	got := map[Request]Completion{}
	for _, c := range adv9Wait(t, r, qs...) {
		got[c.Req] = c
	}
	return got
}

// adv9Rand returns a seeded source, logging the seed.
func adv9Rand(t *testing.T) *rand.Rand {
	seed := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d (CANCELIO_SEED)", seed)
	return rand.New(rand.NewPCG(seed, 9))
}

// adv9Reset makes fd's close reset its connection (SO_LINGER 0) and
// closes it (adv9Close).
func adv9Reset(t *testing.T, fd int) {
	require.NoError(t, unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
	require.NoError(t, adv9Close(fd))
}

// adv9Close closes the file fd names, as close(2) does, but keeps the
// number taken (by /dev/null) until the test's cleanup closes it: the
// helpers that made fd close it with the test, and a number reused in
// between would be closed under its new owner.
func adv9Close(fd int) error {
	nul, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(nul)
	return unix.Dup3(nul, fd, unix.O_CLOEXEC)
}

// adv9AwaitErr waits (5s at most) until fd's socket has an error pending
// or is hung up: the peer's reset has arrived, even where the network's
// soft interrupts run late.
func adv9AwaitErr(t *testing.T, fd int) {
	t.Helper()
	require.Eventually(t, func() bool {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) != 0
	}, 5*time.Second, time.Millisecond, "the reset arrives")
}

// adv9FullListener returns a TCP listener whose accept queue is full
// (backlog 0, one connection queued: SYNs to it are dropped until it is
// accepted), its address, and the queued client.
func adv9FullListener(t *testing.T) (lfd int, sa *unix.SockaddrInet4, queued int) {
	lfd, sa = tcpListener(t, 0, 0)
	queued = tcpSocket(t)
	require.NoError(t, unix.Connect(queued, sa))
	return lfd, sa, queued
}
