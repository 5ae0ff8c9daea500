//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Differential tests of the poll backend: the same operations on the same
// kinds of file, run on both backends, must end the same way.

// advKind makes one kind of fd for a differential case. Each case gets fds
// of its own (an operation may consume data or change the file); they close
// with the test.
type advKind struct {
	name string
	mk   func(t *testing.T) int
}

// advCloseLater closes fds when the test ends.
func advCloseLater(t *testing.T, fds ...int) {
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
}

func advNoErr(t *testing.T, err error, what string) {
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
}

// advPipe returns a pipe made with flags whose ends close with the test.
func advPipe(t *testing.T, flags int) (rd, wr int) {
	var p [2]int
	advNoErr(t, unix.Pipe2(p[:], flags|unix.O_CLOEXEC), "pipe2")
	advCloseLater(t, p[:]...)
	return p[0], p[1]
}

// advRawPipe returns a pipe made with flags; the caller closes its ends
// (each exactly once: a second close could hit a number reused since).
func advRawPipe(t *testing.T, flags int) (rd, wr int) {
	var p [2]int
	advNoErr(t, unix.Pipe2(p[:], flags|unix.O_CLOEXEC), "pipe2")
	return p[0], p[1]
}

// advRawPair returns a socketpair of type typ; the caller closes its ends.
func advRawPair(t *testing.T, typ int) (a, b int) {
	s, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	advNoErr(t, err, "socketpair")
	return s[0], s[1]
}

// advPair returns a socketpair of type typ whose ends close with the test.
func advPair(t *testing.T, typ int) (a, b int) {
	s, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	advNoErr(t, err, "socketpair")
	advCloseLater(t, s[:]...)
	return s[0], s[1]
}

// advOpen opens path with flags; the fd closes with the test.
func advOpen(t *testing.T, path string, flags int) int {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	advNoErr(t, err, "open "+path)
	advCloseLater(t, fd)
	return fd
}

// advFileKinds lists the kinds of fd the differential matrix runs every
// operation on: pipes, sockets and other pollable files in both blocking
// modes, regular and special files that epoll refuses, O_PATH fds, and an
// fd that is not open.
func advFileKinds() []advKind {
	ip4 := func(t *testing.T, typ int) int {
		s, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		advNoErr(t, err, "socket")
		advCloseLater(t, s)
		return s
	}
	return []advKind{
		{"pipe-r-empty", func(t *testing.T) int { rd, _ := advPipe(t, 0); return rd }},
		{"pipe-r-data", func(t *testing.T) int {
			rd, wr := advPipe(t, 0)
			unix.Write(wr, []byte("abc"))
			return rd
		}},
		{"pipe-r-eof", func(t *testing.T) int {
			rd, wr := advRawPipe(t, 0)
			unix.Close(wr)
			advCloseLater(t, rd)
			return rd
		}},
		{"pipe-r-nonblock", func(t *testing.T) int { rd, _ := advPipe(t, unix.O_NONBLOCK); return rd }},
		{"pipe-w", func(t *testing.T) int { _, wr := advPipe(t, 0); return wr }},
		{"pipe-w-nonblock", func(t *testing.T) int { _, wr := advPipe(t, unix.O_NONBLOCK); return wr }},
		{"unix-stream", func(t *testing.T) int { a, _ := advPair(t, unix.SOCK_STREAM); return a }},
		{"unix-dgram", func(t *testing.T) int { a, _ := advPair(t, unix.SOCK_DGRAM); return a }},
		{"unix-seqpacket-data", func(t *testing.T) int {
			a, b := advPair(t, unix.SOCK_SEQPACKET)
			unix.Write(b, []byte("0123456789abcdef"))
			return a
		}},
		{"unix-stream-peer-gone", func(t *testing.T) int {
			a, b := advRawPair(t, unix.SOCK_STREAM)
			unix.Close(b)
			advCloseLater(t, a)
			return a
		}},
		{"tcp-unconnected", func(t *testing.T) int { return ip4(t, unix.SOCK_STREAM) }},
		{"tcp-listening", func(t *testing.T) int {
			s := ip4(t, unix.SOCK_STREAM)
			advNoErr(t, unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}), "bind")
			advNoErr(t, unix.Listen(s, 4), "listen")
			return s
		}},
		{"eventfd-0", func(t *testing.T) int {
			e, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
			advNoErr(t, err, "eventfd")
			advCloseLater(t, e)
			return e
		}},
		{"eventfd-5", func(t *testing.T) int {
			e, err := unix.Eventfd(5, unix.EFD_CLOEXEC)
			advNoErr(t, err, "eventfd")
			advCloseLater(t, e)
			return e
		}},
		{"eventfd-0-nonblock", func(t *testing.T) int {
			e, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
			advNoErr(t, err, "eventfd")
			advCloseLater(t, e)
			return e
		}},
		{"timerfd-unarmed", func(t *testing.T) int {
			e, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
			advNoErr(t, err, "timerfd")
			advCloseLater(t, e)
			return e
		}},
		{"inotify", func(t *testing.T) int {
			e, err := unix.InotifyInit1(unix.IN_CLOEXEC)
			advNoErr(t, err, "inotify")
			advCloseLater(t, e)
			return e
		}},
		{"regular", func(t *testing.T) int { return tempFile(t, []byte("hello world")) }},
		{"regular-readonly", func(t *testing.T) int {
			fd := tempFile(t, []byte("hello world"))
			return advOpen(t, fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_RDONLY)
		}},
		{"memfd", func(t *testing.T) int {
			e, err := unix.MemfdCreate("adv", unix.MFD_CLOEXEC)
			advNoErr(t, err, "memfd")
			advCloseLater(t, e)
			unix.Write(e, []byte("memory"))
			return e
		}},
		{"dev-null", func(t *testing.T) int { return advOpen(t, os.DevNull, unix.O_RDWR) }},
		{"dev-zero", func(t *testing.T) int { return advOpen(t, "/dev/zero", unix.O_RDWR) }},
		{"proc-file", func(t *testing.T) int { return advOpen(t, "/proc/self/stat", unix.O_RDONLY) }},
		{"directory", func(t *testing.T) int { return advOpen(t, t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY) }},
		{"opath-regular", func(t *testing.T) int {
			fd := tempFile(t, []byte("hello"))
			return advOpen(t, fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_PATH)
		}},
		{"opath-directory", func(t *testing.T) int { return advOpen(t, t.TempDir(), unix.O_PATH) }},
		{"opath-pipe", func(t *testing.T) int {
			rd, _ := advPipe(t, 0)
			return advOpen(t, fmt.Sprintf("/proc/self/fd/%d", rd), unix.O_PATH)
		}},
		{"not-open", func(t *testing.T) int { return 1 << 20 }}, // above any RLIMIT_NOFILE here
	}
}

// advMatrixOps returns the operations of the matrix on fd, each a fresh Op
// with buffers of its own.
func advMatrixOps(fd int) []Op {
	return []Op{
		Read(fd, make([]byte, 8), -1),
		Read(fd, make([]byte, 8), 0),
		Read(fd, make([]byte, 8), 3),
		Readv(fd, [][]byte{make([]byte, 2), make([]byte, 6)}, -1),
		Write(fd, make([]byte, 8), -1),
		Write(fd, make([]byte, 8), 0),
		Write(fd, make([]byte, 8), 5),
		Writev(fd, [][]byte{make([]byte, 2), make([]byte, 6)}, -1),
		Poll(fd, unix.POLLIN),
		Poll(fd, unix.POLLOUT),
		Poll(fd, unix.POLLPRI),
		Poll(fd, unix.POLLRDHUP),
		Fsync(fd),
		Send(fd, make([]byte, 8), 0),
		Recv(fd, make([]byte, 8), 0),
		Recv(fd, make([]byte, 8), unix.MSG_DONTWAIT),
		Recv(fd, make([]byte, 8), unix.MSG_PEEK),
		Accept(fd, unix.SOCK_CLOEXEC),
		Connect(fd, &unix.SockaddrInet4{Port: 1, Addr: [4]byte{127, 0, 0, 1}}),
		Shutdown(fd, unix.SHUT_RD),
		Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, new(unix.Statx_t)),
		OpenAt(fd, "absent", unix.O_RDONLY|unix.O_CLOEXEC, 0),
		PollMultishot(fd, unix.POLLIN),
		PollMultishot(fd, unix.POLLOUT),
		PollMultishot(fd, unix.POLLPRI),
		AcceptMultishot(fd, unix.SOCK_CLOEXEC),
	}
}

// advOutcome describes a completion for comparison: the count and errno,
// or the cancel that ended it.
func advOutcome(c Completion) string {
	var en syscall.Errno
	switch {
	case c.Err == nil:
		return fmt.Sprintf("n=%d", c.N)
	case errors.Is(c.Err, ErrTimeout):
		return "timeout"
	case errors.Is(c.Err, ErrCanceled):
		return "canceled"
	case errors.As(c.Err, &en):
		return fmt.Sprintf("n=%d %s", c.N, unix.ErrnoName(en))
	}
	return "error " + c.Err.Error()
}

// advRunMatrix runs every operation of advMatrixOps on every kind of fd on
// a ring of backend be, each with a deadline, and returns each case's
// outcome (multishot requests: their completions in order, repeats of one
// outcome with more to come counted once).
func advRunMatrix(t *testing.T, be Backend, kinds []advKind) map[string]string {
	out := map[string]string{}
	r, err := New(Config{Entries: 256, Backend: be})
	if err != nil {
		t.Errorf("New(%v): %v", be, err)
		return out
	}
	defer r.Close()
	n := 0
	for _, k := range kinds {
		for i := range advMatrixOps(0) {
			fd := k.mk(t)
			op := advMatrixOps(fd)[i]
			key := fmt.Sprintf("%s/%d:%v", k.name, i, op.Code())
			if _, err := r.Submit(op.WithDeadline(time.Second).WithUser(key)); err != nil {
				out[key] = "submit: " + err.Error()
				continue
			}
			n++
		}
	}
	var cs [64]Completion
	end := time.Now().Add(20 * time.Second)
	for n > 0 && time.Now().Before(end) {
		k, err := r.Reap(cs[:], time.Second)
		if err != nil {
			t.Errorf("%v: Reap: %v", be, err)
			return out
		}
		for _, c := range cs[:k] {
			key := c.User.(string)
			if c.Op == OpAccept && c.Err == nil || c.Op == OpOpenAt && c.Err == nil {
				unix.Close(c.N)
			}
			o := advOutcome(c)
			if c.More {
				o += "+more;"
				if strings.HasSuffix(out[key], o) {
					continue
				}
			} else {
				n--
			}
			out[key] += o
		}
	}
	if n > 0 {
		t.Errorf("%v: %d requests did not complete within 20s of 1s deadlines", be, n)
	}
	return out
}

// TestAdvPollMatrixAgrees runs each operation on each kind of fd (pipes
// and sockets blocking and not, eventfds, timerfd, inotify, regular and
// special files, directories, O_PATH fds, an fd that is not open) on both
// backends, with a deadline, and checks that every case ends the same way:
// same count, same errno, or both still waiting when the deadline came.
func TestAdvPollMatrixAgrees(t *testing.T) {
	fdcheck.Check(t)
	kinds := advFileKinds()
	const chunk = 7 // kinds per round: a few hundred fds at a time
	for start := 0; start < len(kinds); start += chunk {
		part := kinds[start:min(start+chunk, len(kinds))]
		var res [2]map[string]string
		var wg sync.WaitGroup
		for i, be := range backends {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = advRunMatrix(t, be, part)
			}()
		}
		wg.Wait()
		for _, k := range part {
			for i, op := range advMatrixOps(0) {
				key := fmt.Sprintf("%s/%d:%v", k.name, i, op.Code())
				assert.Equal(t, res[0][key], res[1][key], "%s: uring (expected) vs poll (actual)", key)
			}
		}
	}
}

// TestAdvPollUnpollableFileOddEvents polls files that have no poll support
// (a regular file, /dev/null, a directory) for events other than POLLIN and
// POLLOUT. Such a file reports only its fixed readiness and has no wait
// queue, so io_uring refuses the poll at once with EINVAL, single-shot or
// multishot; the poll backend must end it the same way, not leave it
// waiting for ever (or end the multishot one with epoll's EPERM).
func TestAdvPollUnpollableFileOddEvents(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		files := map[string]int{
			"regular":   tempFile(t, []byte("data")),
			"/dev/null": advOpen(t, os.DevNull, unix.O_RDWR),
			"directory": advOpen(t, t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY),
		}
		what := map[Request]string{}
		for name, fd := range files {
			for _, op := range []Op{Poll(fd, unix.POLLPRI), Poll(fd, unix.POLLRDHUP), PollMultishot(fd, unix.POLLPRI)} {
				q, err := r.Submit(op)
				require.NoError(t, err)
				what[q] = fmt.Sprintf("%v(%s, %#x)", op.Code(), name, op.events)
			}
		}
		got := advReapFor(t, r, len(what), 5*time.Second)
		for _, c := range got {
			w := what[c.Req]
			delete(what, c.Req)
			assert.False(t, c.More, w)
			assert.ErrorIs(t, c.Err, unix.EINVAL, w)
			assert.Zero(t, c.N, w)
		}
		for q, w := range what {
			t.Errorf("%s: still waiting after 5s; io_uring says EINVAL at once", w)
			q.Cancel()
		}
		advReapFor(t, r, len(what), 10*time.Second)
		assertSettled(t, r)
	})
}

// TestAdvPollAcceptNotStreamErrno accepts on blocking sockets that cannot
// accept at all (datagram sockets, AF_UNIX and UDP): accept4(2) says
// EOPNOTSUPP at once, and so must Accept and AcceptMultishot on both
// backends (EINVAL is for a stream socket that does not listen).
func TestAdvPollAcceptNotStreamErrno(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		advCloseLater(t, udp)
		ud, _ := advPair(t, unix.SOCK_DGRAM)
		tcp, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		advCloseLater(t, tcp)
		for name, fd := range map[string]int{"udp": udp, "unix-dgram": ud, "tcp-not-listening": tcp} {
			_, _, kerr := unix.Accept4(fd, unix.SOCK_CLOEXEC) // never blocks on these
			require.Error(t, kerr, name)
			for _, op := range []Op{Accept(fd, unix.SOCK_CLOEXEC), AcceptMultishot(fd, unix.SOCK_CLOEXEC)} {
				c := reapSubmitted(t, r, op)
				assert.ErrorIs(t, c.Err, kerr, "%v on %s: as accept4(2) says", op.Code(), name)
			}
		}
		assertSettled(t, r)
	})
}

// reapSubmitted submits op and returns its completion (the final one of a
// multishot request), waiting up to 10s.
func reapSubmitted(t *testing.T, r *Ring, op Op) Completion {
	t.Helper()
	q, err := r.Submit(op)
	require.NoError(t, err)
	for {
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		if !c.More {
			return c
		}
	}
}

// advReapFor reaps up to n final completions within d (completions with
// more to come are skipped) and returns them.
func advReapFor(t *testing.T, r *Ring, n int, d time.Duration) []Completion {
	t.Helper()
	var got []Completion
	end := time.Now().Add(d)
	var cs [16]Completion
	for len(got) < n {
		left := time.Until(end)
		if left <= 0 {
			break
		}
		k, err := r.Reap(cs[:min(n-len(got), len(cs))], left)
		require.NoError(t, err)
		for _, c := range cs[:k] {
			if !c.More {
				got = append(got, c)
			}
		}
	}
	return got
}

// TestAdvPollOnlyUnknownEvents polls pipes for an event bit that no file
// reports (outside poll(2)'s 16 bits). The Ring accepts it (the events are
// not zero), and POLLHUP and POLLERR are reported whether asked for or not:
// when the other end closes, io_uring completes the poll with them, and so
// must the poll backend, rather than never arming epoll for the request.
func TestAdvPollOnlyUnknownEvents(t *testing.T) {
	const odd = 1 << 20
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := advRawPipe(t, 0)
		rd2, wr2 := advRawPipe(t, unix.O_NONBLOCK)
		advCloseLater(t, rd, wr2) // wr and rd2 are closed below
		for {                     // fill the second pipe: its write end is not writable
			if _, err := unix.Write(wr2, make([]byte, 4096)); err != nil {
				require.ErrorIs(t, err, unix.EAGAIN)
				break
			}
		}
		hup, err := r.Submit(Poll(rd, odd).WithUser("read end"))
		require.NoError(t, err)
		perr, err := r.Submit(Poll(wr2, odd).WithUser("write end"))
		require.NoError(t, err)
		advPending(t, r, "both pipes open", hup, perr)
		unix.Close(wr)
		unix.Close(rd2)
		got := advReapFor(t, r, 2, 5*time.Second)
		for _, c := range got {
			require.NoError(t, c.Err, "%v", c.User)
			if c.Req == hup {
				assert.Equal(t, unix.POLLHUP, c.N, "the read end's writer is gone")
			} else {
				assert.NotZero(t, c.N&unix.POLLERR, "the write end's reader is gone: %#x", c.N)
			}
		}
		if len(got) < 2 {
			t.Errorf("%d of 2 polls completed within 5s of the hang-up", len(got))
			r.CancelAll()
			advReapFor(t, r, 2-len(got), 10*time.Second)
		}
		assertSettled(t, r)
	})
}
