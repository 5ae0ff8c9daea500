//go:build linux

package ioring

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eighth round, a socket's error queue: ported from liburing's
// timestamp-bug.c, which builds a UDP socket with IP_RECVERR whose error
// queue holds an ICMP error (a datagram sent to a closed port on loopback)
// and reads it with recvmsg(MSG_ERRQUEUE). Here the reads go through the
// ring, on both backends, and wait for the error to come: an error-queue
// read is woken by EPOLLERR, not by EPOLLIN (io_uring clears POLLIN from
// the poll it arms for a MSG_ERRQUEUE recvmsg), so data waiting in the
// ordinary receive queue must neither complete it nor keep the ring busy.
// The TX-timestamp uring_cmd of the original has no counterpart in the API.

// port8RecvErrSocket returns an unconnected UDP socket on loopback with
// IP_RECVERR set, closed with the test, and an address on loopback where
// nothing listens (a port bound a moment ago and released).
func port8RecvErrSocket(t *testing.T) (int, *unix.SockaddrInet4) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_RECVERR, 1))

	tmp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Bind(tmp, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(tmp)
	require.NoError(t, err)
	unix.Close(tmp)
	return fd, sa.(*unix.SockaddrInet4)
}

// port8ErrQueueEntry checks that a delivered RecvMsg with MSG_ERRQUEUE
// carries one IP_RECVERR control message for an ICMP "port unreachable"
// (ECONNREFUSED), and the datagram's payload as data.
func port8ErrQueueEntry(t *testing.T, c Completion, m *Msg, payload string) {
	t.Helper()
	require.NoError(t, c.Err, "the error-queue read")
	assert.Equal(t, len(payload), c.N, "the rejected datagram's payload")
	assert.Equal(t, payload, string(m.Buffers[0][:max(c.N, 0)]))
	assert.NotZero(t, m.Flags()&unix.MSG_ERRQUEUE, "Msg.Flags says MSG_ERRQUEUE: %#x", m.Flags())
	cms, err := m.ControlMessages()
	require.NoError(t, err)
	found := false
	for _, cm := range cms {
		if cm.Header.Level != unix.SOL_IP || cm.Header.Type != unix.IP_RECVERR {
			continue
		}
		found = true
		require.GreaterOrEqual(t, len(cm.Data), 16, "a sock_extended_err")
		errno := unix.Errno(binary.NativeEndian.Uint32(cm.Data[0:4]))
		assert.Equal(t, unix.ECONNREFUSED, errno, "ee_errno")
		assert.Equal(t, uint8(unix.SO_EE_ORIGIN_ICMP), cm.Data[4], "ee_origin")
	}
	assert.True(t, found, "an IP_RECVERR control message among %d", len(cms))
}

// TestPort8ErrQueueRecvMsg: a RecvMsg with MSG_ERRQUEUE submitted on an
// empty error queue (and an empty receive queue) stays pending and
// completes when an ICMP error arrives, with the rejected payload and an
// IP_RECVERR control message. A Recv pending when the next error arrives
// ends with the socket's error, ECONNREFUSED, and the error queue still
// holds that error's entry for the next error-queue read, which takes it
// at once. The same on both backends.
func TestPort8ErrQueueRecvMsg(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, closed := port8RecvErrSocket(t)

		m := &Msg{Buffers: [][]byte{make([]byte, 64)}, Control: make([]byte, 512)}
		q, err := r.Submit(RecvMsg(fd, m, unix.MSG_ERRQUEUE).WithUser("errqueue"))
		require.NoError(t, err)
		advPending(t, r, "an empty error queue", q)

		require.NoError(t, unix.Sendto(fd, []byte("lost"), 0, closed))
		got := advReapFor(t, r, 1, 5*time.Second)
		if !assert.Len(t, got, 1, "the error-queue read completes when the ICMP error comes") {
			r.CancelAll()
			advReapFor(t, r, 1, 10*time.Second)
			return
		}
		assert.Equal(t, q, got[0].Req)
		port8ErrQueueEntry(t, got[0], m, "lost")

		// The socket's pending error (sk_err), which the error-queue read
		// left, is reported once by the next receive.
		buf := make([]byte, 16)
		c := doOp(t, r, Recv(fd, buf, unix.MSG_DONTWAIT))
		if c.Err != nil && !errors.Is(c.Err, unix.EAGAIN) {
			assert.ErrorIs(t, c.Err, unix.ECONNREFUSED, "the socket's pending error")
		}

		// A receive pending when the next error comes ends with it.
		q = submitPending(t, r, Recv(fd, buf, 0).WithUser("recv"))
		require.NoError(t, unix.Sendto(fd, []byte("again"), 0, closed))
		got = advReapFor(t, r, 1, 5*time.Second)
		if !assert.Len(t, got, 1, "the pending Recv ends with the socket's error") {
			r.CancelAll()
			advReapFor(t, r, 1, 10*time.Second)
			return
		}
		assert.Equal(t, q, got[0].Req)
		assert.ErrorIs(t, got[0].Err, unix.ECONNREFUSED)
		assert.Zero(t, got[0].N)

		// Its entry is still in the error queue: an error-queue read
		// takes it at once.
		c = doOp(t, r, RecvMsg(fd, m, unix.MSG_ERRQUEUE))
		port8ErrQueueEntry(t, c, m, "again")
		assertSettled(t, r)
	})
}

// TestPort8ErrQueueBesideData: an error-queue read (RecvMsg with
// MSG_ERRQUEUE, error queue empty) submitted while an ordinary datagram
// sits unread in the receive queue. On io_uring (Linux 6.18) the kernel
// ends such a read with EAGAIN at once (the poll it arms still matches
// EPOLLRDNORM, and the retry finds the error queue empty); RecvMsg's doc
// makes that the rule on both backends. The poll backend used to wait for
// EPOLLIN, level-triggered, again after each EAGAIN: it burned a CPU for
// as long as the datagram stayed unread. The test takes either outcome,
// waiting quietly or EAGAIN, and asserts the backends give the same one.
func TestPort8ErrQueueBesideData(t *testing.T) {
	outcome := map[Backend]string{}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, closed := port8RecvErrSocket(t)
		self, err := unix.Getsockname(fd)
		require.NoError(t, err)
		require.NoError(t, unix.Sendto(fd, []byte("unread"), 0, self))

		m := &Msg{Buffers: [][]byte{make([]byte, 64)}, Control: make([]byte, 512)}
		q, err := r.Submit(RecvMsg(fd, m, unix.MSG_ERRQUEUE))
		require.NoError(t, err)

		const wait = 500 * time.Millisecond
		before := cpuTime(t)
		start := time.Now()
		var cs [1]Completion
		n, err := r.Reap(cs[:], wait)
		require.NoError(t, err)
		if n == 1 {
			outcome[r.Backend().Backend] = port7ErrString(errors.Unwrap(cs[0].Err)) // the errno, not the fd
			assert.ErrorIs(t, cs[0].Err, unix.EAGAIN, "an error-queue read that does not wait")
			assert.Zero(t, cs[0].N)
		} else {
			used, took := cpuTime(t)-before, time.Since(start)
			outcome[r.Backend().Backend] = "pending"
			assert.Less(t, used, took/2,
				"%v of CPU in %v while one error-queue read waited beside an unread datagram: the ring spins", used, took)

			// It still completes when an error comes.
			require.NoError(t, unix.Sendto(fd, []byte("x"), 0, closed))
			got := advReapFor(t, r, 1, 5*time.Second)
			if assert.Len(t, got, 1) {
				assert.Equal(t, q, got[0].Req)
				port8ErrQueueEntry(t, got[0], m, "x")
			} else {
				r.CancelAll()
				advReapFor(t, r, 1, 10*time.Second)
			}
		}

		// The datagram is intact.
		buf := make([]byte, 16)
		for i := 0; i < 2; i++ {
			c := doOp(t, r, Recv(fd, buf, unix.MSG_DONTWAIT))
			if errors.Is(c.Err, unix.ECONNREFUSED) {
				continue // the socket's error, reported once
			}
			require.NoError(t, c.Err)
			assert.Equal(t, "unread", string(buf[:c.N]))
			break
		}
		assertSettled(t, r)
	})
	if len(outcome) == 2 {
		assert.Equal(t, outcome[BackendURing], outcome[BackendPoll],
			"an error-queue read beside an unread datagram: the backends differ")
	}
}
