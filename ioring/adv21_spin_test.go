//go:build linux

package ioring

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Round 21, the cases TestAdv21SockDiffRandom found or leaves out, each
// pinned alone. Most are one class: the socket reports readiness
// (EPOLLIN, EPOLLOUT) that stays, while the non-blocking call the poll
// backend makes on it keeps saying EAGAIN. The poll backend then tries
// again on every wake-up of its one-shot epoll, burning a CPU for as long
// as the state lasts (MSG_ERRQUEUE was the first such case; RecvMsg has
// a special case for it in trySock, backend_poll_ops_linux.go:193). The
// blocking system call waits quietly there (or returns), and so does
// io_uring: after a bounded number of retries (APOLL_MAX_RETRY) it hands
// the request to a kernel worker that blocks.

// adv21Quiet submits op, checks that it waits without burning CPU for
// 150ms, then runs then (which should end the wait) and returns the
// completion (the request canceled when then did not end it).
func adv21Quiet(t *testing.T, r *Ring, op Op, then func()) Completion {
	t.Helper()
	q, err := r.Submit(op)
	require.NoError(t, err)
	var cs [1]Completion
	c0, w0 := cpuTime(t), time.Now()
	n, err := r.Reap(cs[:], 150*time.Millisecond)
	require.NoError(t, err)
	used, took := cpuTime(t)-c0, time.Since(w0)
	if n == 1 {
		return cs[0]
	}
	assert.Less(t, used, took/2, "%v of CPU in %v while one %v waited: the ring spins", used, took, op.Code())
	n = 0
	if then != nil {
		then()
		n, err = r.Reap(cs[:], 3*time.Second)
		require.NoError(t, err)
	}
	if n == 0 {
		q.Cancel()
		n, err = r.Reap(cs[:], adv13Hang)
		require.NoError(t, err)
		require.Equal(t, 1, n)
	}
	return cs[0]
}

// adv21Agree compares what each backend recorded.
func adv21Agree(t *testing.T, got map[Backend]string, what string) {
	t.Helper()
	if len(got) == 2 {
		assert.Equal(t, got[BackendURing], got[BackendPoll], "%s: the backends differ", what)
	}
}

// TestAdv21RecvErrQueueBesideData: the MSG_ERRQUEUE fix covers RecvMsg
// only. A Recv (recvfrom) with MSG_ERRQUEUE on a UDP socket whose error
// queue is empty and whose receive queue holds a datagram: io_uring
// completes it at once with EAGAIN (its internal poll, with POLLIN
// cleared for MSG_ERRQUEUE as for RecvMsg, sees the socket ready); the
// poll backend waits for EPOLLIN, which the unread datagram keeps
// reporting, and spins until the datagram is read or the request
// canceled.
func TestAdv21RecvErrQueueBesideData(t *testing.T) {
	got := map[Backend]string{}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, _ := port8RecvErrSocket(t)
		self, err := unix.Getsockname(fd)
		require.NoError(t, err)
		require.NoError(t, unix.Sendto(fd, []byte("unread"), 0, self))
		c := adv21Quiet(t, r, Recv(fd, make([]byte, 64), unix.MSG_ERRQUEUE), nil)
		got[r.Backend().Backend] = adv13Out(c)
		assertSettled(t, r)
	})
	adv21Agree(t, got, "Recv(MSG_ERRQUEUE) beside an unread datagram")
}

// TestAdv21DontWaitWaitAll: Recv with MSG_DONTWAIT|MSG_WAITALL where the
// kernel's receive stops short with more queued (a seqpacket socket: one
// message per call). recv(2) returns the first message; so does io_uring
// (its retry of the short transfer meets MSG_DONTWAIT and ends); the poll
// backend's tryAll goes on calling while data comes, and takes several
// messages into one completion (backend_poll_ops_linux.go, tryAll: the
// loop only ends on EAGAIN). The same happens on an AF_UNIX stream at an
// urgent byte or a part that carries descriptors.
func TestAdv21DontWaitWaitAll(t *testing.T) {
	got := map[Backend]string{}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_SEQPACKET)
		for _, p := range []string{"abc", "def", "ghi"} {
			_, err := unix.Write(b, []byte(p))
			require.NoError(t, err)
		}
		buf := make([]byte, 8)
		c := doOp(t, r, Recv(a, buf, unix.MSG_DONTWAIT|unix.MSG_WAITALL))
		left := adv13Drain(t, a)
		got[r.Backend().Backend] = fmt.Sprintf("%s %q, left %q", adv13Out(c), buf[:max(c.N, 0)], left)
		assertSettled(t, r)
	})
	adv21Agree(t, got, "Recv(MSG_DONTWAIT|MSG_WAITALL) on a seqpacket socket with three messages")
}

// TestAdv21WaitAllMsgFlags: RecvMsg with MSG_WAITALL and no control room
// on a seqpacket socket, where the short transfers go on across messages
// (on both backends, as io_uring's retries do): the first message
// carries a descriptor (dropped: MSG_CTRUNC), the second does not.
// io_uring reports the flags of the last part only; the poll backend the
// union of all parts (sockCallFrom ORs them, although its comment says it
// keeps the first call's). Msg.Flags differs.
func TestAdv21WaitAllMsgFlags(t *testing.T) {
	got := map[Backend]string{}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_SEQPACKET)
		p, _ := pipe(t)
		require.NoError(t, unix.Sendmsg(b, []byte("abcd"), unix.UnixRights(p), nil, 0))
		require.NoError(t, unix.Sendmsg(b, []byte("efgh"), nil, nil, 0))
		m := &Msg{Buffers: [][]byte{make([]byte, 8)}}
		c := doOp(t, r, RecvMsg(a, m, unix.MSG_WAITALL))
		got[r.Backend().Backend] = fmt.Sprintf("%s %q flags %s", adv13Out(c), m.Buffers[0][:max(c.N, 0)], adv21Flags(m.Flags()))
		assertSettled(t, r)
	})
	adv21Agree(t, got, "RecvMsg(MSG_WAITALL) across a message with a descriptor")
}

// TestAdv21PeekWaitAll: Recv or RecvMsg with MSG_PEEK|MSG_WAITALL is
// refused up front (ErrInvalid) on both backends: after a short peek
// io_uring's retry peeks again from the start of the queue into the rest
// of the buffer, so "abc" then "def" on a stream came back as "abcabc"
// (recv(2) waits and gives "abcdef"), and the poll backend copied it.
func TestAdv21PeekWaitAll(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, _ := socketpair(t, unix.SOCK_STREAM)
		buf := make([]byte, 6)
		_, err := r.Submit(Recv(a, buf, unix.MSG_PEEK|unix.MSG_WAITALL))
		assert.ErrorIs(t, err, ErrInvalid, "Recv")
		_, err = r.Submit(RecvMsg(a, &Msg{Buffers: [][]byte{buf}}, unix.MSG_PEEK|unix.MSG_WAITALL))
		assert.ErrorIs(t, err, ErrInvalid, "RecvMsg")
		q, err := r.Submit(Recv(a, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT))
		require.NoError(t, err, "MSG_PEEK alone")
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, unix.EAGAIN)
		assertSettled(t, r)
	})
}
