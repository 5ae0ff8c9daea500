//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's poll-v-poll, double-poll-crash, poll-link,
// pollfree and socket-rw-eagain tests: several waiters of different kinds
// on one file, in both directions; the events a poll reports (hang-ups
// included) as poll(2) reports them; a poll of an epoll instance; and
// files already O_NONBLOCK, whose requests wait all the same.

// port3Pending reaps for a short while and fails on any completion: the
// requests given are still waiting.
func port3Pending(t *testing.T, r *Ring, what string) {
	t.Helper()
	var cs [8]Completion
	n, err := r.Reap(cs[:], 50*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n, "%s: nothing may complete yet, got %+v", what, cs[:n])
}

// TestPort3PollBothDirections checks that a socket waited on by a poll
// for input, a poll for output, a poll for both, a multishot poll and a
// receive, all at once, gives each its own result exactly once: the
// output polls complete at once with POLLOUT, a canceled input poll with
// ErrCanceled and nothing else, and when data arrives the other input
// poll, the multishot poll (More set) and the receive (the data) complete
// (poll-v-poll and double-poll-crash: two poll entries on one file's wait
// queues).
func TestPort3PollBothDirections(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
			a, b := socketpair(t, typ)
			buf := make([]byte, 16)
			pin := submitPending(t, r, Poll(a, unix.POLLIN).WithUser("in"))
			pin2 := submitPending(t, r, Poll(a, unix.POLLIN).WithUser("in2"))
			ms := submitPending(t, r, PollMultishot(a, unix.POLLIN).WithUser("multi"))
			rcv := submitPending(t, r, Recv(a, buf, 0).WithUser("recv"))
			pout, err := r.Submit(Poll(a, unix.POLLOUT).WithUser("out"))
			require.NoError(t, err)
			pboth, err := r.Submit(Poll(a, unix.POLLIN|unix.POLLOUT).WithUser("both"))
			require.NoError(t, err)
			for range 2 {
				c := reapOne(t, r)
				require.Contains(t, []Request{pout, pboth}, c.Req, "%+v", c)
				require.NoError(t, c.Err)
				assert.Equal(t, unix.POLLOUT, c.N&(unix.POLLIN|unix.POLLOUT), "%v: writable, nothing to read", c.User)
			}
			port3Pending(t, r, "input waiters")
			require.NoError(t, pin.Cancel())
			c := reapOne(t, r)
			require.Equal(t, pin, c.Req)
			require.ErrorIs(t, c.Err, ErrCanceled)
			port3Pending(t, r, "the other input waiters after one's cancel")

			_, err = unix.Write(b, []byte("payload"))
			require.NoError(t, err)
			got := map[string]Completion{}
			for len(got) < 3 {
				c := reapOne(t, r)
				name := c.User.(string)
				_, dup := got[name]
				require.False(t, dup, "second completion of %s: %+v", name, c)
				got[name] = c
			}
			assert.NoError(t, got["in2"].Err)
			assert.NotZero(t, got["in2"].N&unix.POLLIN)
			assert.Equal(t, pin2, got["in2"].Req)
			assert.True(t, got["multi"].More)
			assert.NotZero(t, got["multi"].N&unix.POLLIN)
			assert.Equal(t, rcv, got["recv"].Req)
			require.NoError(t, got["recv"].Err)
			assert.Equal(t, "payload", string(buf[:got["recv"].N]))
			require.NoError(t, ms.Cancel())
			c = reapOne(t, r)
			require.Equal(t, ms, c.Req)
			for c.More {
				c = reapOne(t, r)
				require.Equal(t, ms, c.Req)
			}
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assertNoMore(t, r)
		}
		assertSettled(t, r)
	})
}

// port3CheckPoll reaps q's completion and checks its events: they hold
// must, they are among those poll(2) reports on fd for events afterwards
// (a hang-up does not go away), and they are nothing beyond what was asked
// for plus the ones always reported (POLLHUP, POLLERR, POLLNVAL).
func port3CheckPoll(t *testing.T, r *Ring, what string, fd int, events, must uint32, q Request) {
	t.Helper()
	always := uint32(unix.POLLHUP | unix.POLLERR | unix.POLLNVAL)
	c := reapOne(t, r)
	require.Equal(t, q, c.Req, what)
	require.NoError(t, c.Err, what)
	pfd := []unix.PollFd{{Fd: int32(fd), Events: int16(events)}}
	for {
		_, err := unix.Poll(pfd, 0)
		if err != unix.EINTR {
			require.NoError(t, err)
			break
		}
	}
	got, later := uint32(c.N), uint32(uint16(pfd[0].Revents))
	assert.Equal(t, must, got&must, "%s: events %#x", what, got)
	assert.Zero(t, got&^later, "%s: events %#x, poll(2) reports %#x", what, got, later)
	assert.Zero(t, got&^(events|always), "%s: events %#x: only what was asked for and the hang-ups", what, got)
}

// TestPort3PollHangups checks that the events a poll completes with on a
// hang-up include the hang-up, are among those poll(2) reports on the
// file, and are restricted to what was asked for plus the ones always
// reported (POLLHUP, POLLERR), on both backends: a pipe whose writer closed (POLLHUP), a pipe whose reader
// closed, polled for output (POLLERR), a socket whose peer shut down its
// side (POLLRDHUP asked for), and a socket whose peer closed, polled for
// input.
func TestPort3PollHangups(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		q := submitPending(t, r, Poll(p[0], unix.POLLIN))
		require.NoError(t, unix.Close(p[1]))
		port3CheckPoll(t, r, "pipe, writer closed", p[0], unix.POLLIN, unix.POLLHUP, q)
		unix.Close(p[0])

		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		fillPipe(t, p[1])
		q = submitPending(t, r, Poll(p[1], unix.POLLOUT))
		require.NoError(t, unix.Close(p[0]))
		port3CheckPoll(t, r, "pipe, reader closed", p[1], unix.POLLOUT, unix.POLLERR, q)
		unix.Close(p[1])

		a, b := socketpair(t, unix.SOCK_STREAM)
		q = submitPending(t, r, Poll(a, unix.POLLRDHUP))
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		port3CheckPoll(t, r, "socket, peer shut down", a, unix.POLLRDHUP, unix.POLLRDHUP, q)

		a, b = socketpair(t, unix.SOCK_STREAM)
		q = submitPending(t, r, Poll(a, unix.POLLIN|unix.POLLRDHUP))
		require.NoError(t, unix.Close(b))
		port3CheckPoll(t, r, "socket, peer closed, POLLIN|POLLRDHUP asked", a, unix.POLLIN|unix.POLLRDHUP, unix.POLLRDHUP, q)
		assertNoMore(t, r)
	})
}

// TestPort3PollUnaskedRdhup checks that a poll that did not ask for
// POLLRDHUP does not report it: a socket whose peer closed, polled for
// POLLPRI (or POLLOUT on a socket whose send buffer is full), completes
// with POLLHUP, as poll(2) and the other backend report it, and without
// POLLRDHUP, which it did not ask for (io_uring's poll adds POLLRDHUP to
// every poll it arms, so the ring has to take it off again).
func TestPort3PollUnaskedRdhup(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		q := submitPending(t, r, Poll(a, unix.POLLPRI))
		require.NoError(t, unix.Close(b))
		port3CheckPoll(t, r, "socket, peer closed, POLLPRI asked", a, unix.POLLPRI, unix.POLLHUP, q)

		a, b = socketpair(t, unix.SOCK_STREAM)
		fillSocket(t, a)
		q = submitPending(t, r, Poll(a, unix.POLLOUT))
		require.NoError(t, unix.Close(b))
		port3CheckPoll(t, r, "socket, full, peer closed, POLLOUT asked", a, unix.POLLOUT, unix.POLLHUP, q)
		assertNoMore(t, r)
	})
}

// TestPort3PollEpollInstance checks that a poll of an epoll instance
// completes when a file in it becomes ready (and not before), and that a
// read of that file then gets the data, on both backends (pollfree and
// poll-ring: a poll on a file that is itself a poller).
func TestPort3PollEpollInstance(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(ep)
		rd, wr := pipe(t)
		require.NoError(t, unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, rd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(rd)}))
		q := submitPending(t, r, Poll(ep, unix.POLLIN))
		ms := submitPending(t, r, PollMultishot(ep, unix.POLLIN))
		port3Pending(t, r, "nothing ready in the epoll set")
		_, err = unix.Write(wr, []byte("e"))
		require.NoError(t, err)
		seen := map[Request]Completion{}
		for len(seen) < 2 {
			c := reapOne(t, r)
			_, dup := seen[c.Req]
			require.False(t, dup, "%+v", c)
			seen[c.Req] = c
		}
		require.NoError(t, seen[q].Err)
		assert.NotZero(t, seen[q].N&unix.POLLIN)
		require.NoError(t, seen[ms].Err)
		assert.True(t, seen[ms].More)
		var evs [1]unix.EpollEvent
		n, err := unix.EpollWait(ep, evs[:], 0)
		require.NoError(t, err)
		assert.Equal(t, 1, n)
		b := make([]byte, 1)
		c := doOp(t, r, Read(rd, b, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, "e", string(b[:c.N]))
		require.NoError(t, ms.Cancel())
		for {
			c := reapOne(t, r)
			require.Equal(t, ms, c.Req)
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrCanceled)
				break
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort3NonblockingFilesWait checks that reads and writes on files that
// are O_NONBLOCK themselves (a pipe, an eventfd, a timerfd, both ends of a
// pty, a socket) wait for their file, as on blocking ones, rather than end
// with EAGAIN; that a waiting one canceled ends with ErrCanceled and moves
// nothing; and that the next one gets the data (socket-rw-eagain, and
// tty-write-dpoll for the pty: its file has no non-blocking read of its
// own, so the ring must wait on it).
func TestPort3NonblockingFilesWait(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC))
		t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		efd := eventFD(t)
		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(tfd)
		master, slave := openPTY(t)
		require.NoError(t, unix.SetNonblock(master, true))
		require.NoError(t, unix.SetNonblock(slave, true))
		sa, sb := socketpair(t, unix.SOCK_STREAM)
		require.NoError(t, unix.SetNonblock(sa, true))

		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		cases := []struct {
			name  string
			fd    int
			size  int
			feed  func()
			check func(b []byte)
		}{
			{"pipe", p[0], 8, func() { unix.Write(p[1], []byte("pipe")) }, func(b []byte) { assert.Equal(t, "pipe", string(b)) }},
			{"eventfd", efd, 8, func() { unix.Write(efd, one) }, func(b []byte) { assert.Equal(t, one, b) }},
			{"timerfd", tfd, 8, func() {
				require.NoError(t, unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(int64(time.Millisecond))}, nil))
			}, func(b []byte) { assert.Equal(t, one, b, "one expiry") }},
			{"pty master", master, 64, func() { unix.Write(slave, []byte("to master")) }, func(b []byte) { assert.Equal(t, "to master", string(b)) }},
			{"pty slave", slave, 64, func() { unix.Write(master, []byte("to slave")) }, func(b []byte) { assert.Equal(t, "to slave", string(b)) }},
			{"socket", sa, 8, func() { unix.Write(sb, []byte("sock")) }, func(b []byte) { assert.Equal(t, "sock", string(b)) }},
		}
		for _, tc := range cases {
			canceled := make([]byte, tc.size)
			q := submitPending(t, r, Read(tc.fd, canceled, -1).WithUser("canceled"))
			port3Pending(t, r, tc.name+": nothing to read")
			require.NoError(t, q.Cancel())
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.ErrorIs(t, c.Err, ErrCanceled, tc.name)
			assert.Zero(t, c.N)

			buf := make([]byte, tc.size)
			q = submitPending(t, r, Read(tc.fd, buf, -1))
			port3Pending(t, r, tc.name+": still nothing to read")
			tc.feed()
			c = reapOne(t, r)
			require.Equal(t, q, c.Req, tc.name)
			require.NoError(t, c.Err, tc.name)
			tc.check(buf[:c.N])
			assert.Equal(t, make([]byte, tc.size), canceled, "%s: the canceled read got nothing", tc.name)
		}

		// A write into a full non-blocking pipe waits for room.
		fillPipe(t, p[1])
		q := submitPending(t, r, Write(p[1], []byte("late"), -1))
		port3Pending(t, r, "pipe full")
		drain := make([]byte, 1<<16)
		for !pipeEmpty(t, p[0]) {
			_, err := unix.Read(p[0], drain)
			require.NoError(t, err)
		}
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 4, c.N)
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}
