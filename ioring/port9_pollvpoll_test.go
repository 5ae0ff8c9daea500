//go:build linux

package ioring

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A port of liburing's poll-v-poll.c: a ring's poll and poll(2) on the
// same fd, waiting at the same time, report the same events (liburing
// compares cqe->res & 0x3f with revents). Its cases: a pipe's read end
// for POLLIN, written to after both wait; a pipe's write end for POLLOUT;
// an epoll fd (with a pipe in its interest list) for POLLIN, while
// another thread waits in epoll_wait on it too; and a regular file (the
// test's own binary, opened read-only) for POLLIN, POLLOUT and both.
//
// Through cancelio: Poll completes "with the events that are ready: among
// events, plus POLLERR and POLLHUP" — what poll(2) says — on both
// backends. The poll backend puts the epoll fd into an epoll of its own
// (nested epoll), and refuses nothing.

// port9PollNow runs poll(2) on fd for events, waiting up to 5s.
func port9PollNow(t *testing.T, fd int, events int16) int16 {
	fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
	for {
		_, err := unix.Poll(fds, 5000)
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		return fds[0].Revents
	}
}

func TestPort9PollVersusPoll(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		// both waits at once, then trigger, then compare
		both := func(name string, fd int, events int16, trigger func()) {
			q, err := r.Start(Poll(fd, uint32(uint16(events))))
			require.NoError(t, err)
			pc := make(chan int16, 1)
			go func() { pc <- port9PollNow(t, fd, events) }()
			time.Sleep(20 * time.Millisecond)
			if trigger != nil {
				trigger()
			}
			c := adv13Wait(t, r, name, q)[0]
			rev := <-pc
			require.Equal(t, int(rev&0x3f), c.N&0x3f, "%s: the ring's poll (%s) and poll(2) disagree", name, adv13Out(c))
			require.NotZero(t, rev&0x3f, "%s: poll(2) saw nothing", name)
			out = append(out, fmt.Sprintf("%s: ring %s=%#x poll(2) %#x", name, adv13Out(c), c.N&0x3f, rev&0x3f))
		}

		// do_pipe_pollin_test
		rd, wr := pipe(t)
		both("pipe POLLIN", rd, unix.POLLIN, func() {
			_, err := unix.Write(wr, []byte{0x89})
			require.NoError(t, err)
		})
		// do_pipe_pollout_test
		rd2, wr2 := pipe(t)
		both("pipe POLLOUT", wr2, unix.POLLOUT, func() {
			_, err := unix.Write(wr2, []byte{0x89})
			require.NoError(t, err)
		})
		_ = rd2

		// do_test_epoll: an epoll fd with a pipe in it; one thread in
		// epoll_wait on it, the ring's poll on it too.
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(ep)
		rd3, wr3 := pipe(t)
		require.NoError(t, unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, rd3, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(rd3)}))
		ewait := make(chan int, 1)
		go func() {
			var evs [1]unix.EpollEvent
			for {
				n, err := unix.EpollWait(ep, evs[:], 5000)
				if err == unix.EINTR {
					continue
				}
				ewait <- n
				return
			}
		}()
		both("epoll fd POLLIN", ep, unix.POLLIN, func() {
			_, err := unix.Write(wr3, []byte{0x89})
			require.NoError(t, err)
		})
		out = append(out, fmt.Sprintf("epoll_wait beside it: %d", <-ewait))

		// the epoll fd once more, with the pipe drained: the ring's poll
		// waits until the pipe is written again, and a cancel ends it.
		adv13Drain(t, rd3)
		q, err := r.Start(Poll(ep, unix.POLLIN))
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond)
		out = append(out, fmt.Sprintf("epoll fd, empty: pending %v", q.Pending()))
		_, err = unix.Write(wr3, []byte{1})
		require.NoError(t, err)
		c := adv13Wait(t, r, "epoll fd, written again", q)[0]
		out = append(out, fmt.Sprintf("epoll fd, written again: %s=%#x", adv13Out(c), c.N&0x3f))

		// do_fd_test: a regular file opened read-only.
		exe, err := os.Executable()
		require.NoError(t, err)
		fd, err := unix.Open(exe, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		for _, ev := range []int16{unix.POLLIN, unix.POLLOUT, unix.POLLIN | unix.POLLOUT} {
			both(fmt.Sprintf("regular file %#x", ev), fd, ev, nil)
		}
		return out
	})
	for b, g := range got {
		require.Contains(t, g, "epoll_wait beside it: 1", "backend %v", b)
		require.Contains(t, g, "epoll fd, empty: pending true", "backend %v", b)
		require.Contains(t, g, "epoll fd, written again: n=1=0x1", "backend %v", b)
	}
	adv13Agree(t, got)
}
