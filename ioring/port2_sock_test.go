//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Second round, sockets: ported from liburing's socket-rw, shutdown,
// send_recv, recv-msgall, connect, accept-reuse and accept-cancel tests.
// Peers that close, shut down or reset; sockets that are already
// O_NONBLOCK (io_uring waits on them all the same); cancels at random
// moments that must neither lose nor duplicate a byte or a connection.

// port2TCPPair returns a connected pair of blocking TCP sockets on
// loopback, closed with the test (a close by the test itself is fine).
func port2TCPPair(t *testing.T) (cl, srv int) {
	lfd, sa := tcpListener(t, 4, 0)
	cl = tcpSocket(t)
	require.NoError(t, unix.Connect(cl, sa))
	srv, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(srv) })
	return cl, srv
}

// TestPort2SockPeerEnds: a pending receive ends with 0 when the peer
// shuts its side down or closes, and with ECONNRESET when it resets the
// connection; a pending send to a peer that goes away fails with EPIPE
// or ECONNRESET. The same on both backends.
func TestPort2SockPeerEnds(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		// Shutdown of the peer's sending side: 0, twice.
		a, b := socketpair(t, unix.SOCK_STREAM)
		q := submitPending(t, r, Recv(a, make([]byte, 8), 0))
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.NoError(t, c.Err)
		assert.Zero(t, c.N, "end of stream")
		c = doOp(t, r, Recv(a, make([]byte, 8), 0))
		assert.NoError(t, c.Err)
		assert.Zero(t, c.N, "still the end")

		// Close of the peer, with MSG_WAITALL: what arrived, then the end.
		a, b = socketpair(t, unix.SOCK_STREAM)
		buf := make([]byte, 8)
		q = submitPending(t, r, Recv(a, buf, unix.MSG_WAITALL))
		_, err := unix.Write(b, []byte("abc"))
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
		unix.Close(b)
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.NoError(t, c.Err)
		assert.Equal(t, "abc", string(buf[:c.N]))

		// A TCP peer that resets: ECONNRESET.
		cl, srv := port2TCPPair(t)
		q = submitPending(t, r, Recv(cl, make([]byte, 8), 0))
		require.NoError(t, unix.SetsockoptLinger(srv, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
		unix.Close(srv)
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, unix.ECONNRESET, "completion %+v", c)
		assert.Zero(t, c.N)

		// A pending send whose peer closes.
		a, b = socketpair(t, unix.SOCK_STREAM)
		fillSocket(t, a)
		q = submitPending(t, r, Send(a, make([]byte, 4096), unix.MSG_NOSIGNAL))
		unix.Close(b)
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		if assert.Error(t, c.Err) {
			assert.True(t, errors.Is(c.Err, unix.EPIPE) || errors.Is(c.Err, unix.ECONNRESET), "send to a closed peer: %v", c.Err)
		}
		assertNoMore(t, r)
	})
}

// TestPort2SockShutdownOp: the ring's Shutdown: SHUT_WR ends the peer's
// pending receive with 0, SHUT_RD ends a pending receive on the socket
// itself with 0; on an unconnected socket ENOTCONN, on a pipe ENOTSOCK.
func TestPort2SockShutdownOp(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		q := submitPending(t, r, Recv(b, make([]byte, 8), 0))
		c := doOpAmong(t, r, Shutdown(a, unix.SHUT_WR), q)
		assert.NoError(t, c[0].Err, "shutdown")
		assert.NoError(t, c[1].Err, "peer's receive")
		assert.Zero(t, c[1].N, "peer's receive: end of stream")

		cl, _ := port2TCPPair(t)
		q = submitPending(t, r, Recv(cl, make([]byte, 8), 0))
		c = doOpAmong(t, r, Shutdown(cl, unix.SHUT_RD), q)
		assert.NoError(t, c[0].Err, "shutdown")
		assert.NoError(t, c[1].Err, "own receive after SHUT_RD")
		assert.Zero(t, c[1].N)

		c1 := doOp(t, r, Shutdown(tcpSocket(t), unix.SHUT_RDWR))
		assert.ErrorIs(t, c1.Err, unix.ENOTCONN)
		rd, _ := pipe(t)
		c1 = doOp(t, r, Shutdown(rd, unix.SHUT_RDWR))
		assert.ErrorIs(t, c1.Err, unix.ENOTSOCK)
		assertNoMore(t, r)
	})
}

// doOpAmong submits op with pending already in flight and returns op's
// completion and pending's, in that order, whatever order they come in.
func doOpAmong(t *testing.T, r *Ring, op Op, pending Request) [2]Completion {
	t.Helper()
	q, err := r.Submit(op)
	require.NoError(t, err)
	var out [2]Completion
	for range 2 {
		c := reapOne(t, r)
		switch c.Req {
		case q:
			out[0] = c
		case pending:
			out[1] = c
		default:
			t.Fatalf("unexpected completion %+v", c)
		}
	}
	return out
}

// TestPort2SockConnectNonblocking: a connect on a socket that is
// O_NONBLOCK itself completes with the connection's outcome (0, or
// ECONNREFUSED), not EINPROGRESS, and leaves the flag as it was; a
// connect on a connected socket says EISCONN; a second connect while one
// is in progress says EALREADY, and the first can still be canceled.
func TestPort2SockConnectNonblocking(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		lfd, sa := tcpListener(t, 8, 0)
		cl := tcpSocket(t)
		require.NoError(t, unix.SetNonblock(cl, true))
		c := doOp(t, r, Connect(cl, sa))
		assert.NoError(t, c.Err, "connect of an O_NONBLOCK socket")
		fl, err := unix.FcntlInt(uintptr(cl), unix.F_GETFL, 0)
		require.NoError(t, err)
		assert.NotZero(t, fl&unix.O_NONBLOCK, "O_NONBLOCK kept")
		nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		require.NoError(t, err)
		unix.Close(nfd)
		c = doOp(t, r, Connect(cl, sa))
		assert.ErrorIs(t, c.Err, unix.EISCONN, "connect again")

		// Refused, on an O_NONBLOCK socket.
		_, closedSA := tcpListener(t, 1, 0)
		unix.Close(lfd)
		refused := &unix.SockaddrInet4{Addr: sa.Addr, Port: sa.Port}
		cl2 := tcpSocket(t)
		require.NoError(t, unix.SetNonblock(cl2, true))
		c = doOp(t, r, Connect(cl2, refused))
		assert.ErrorIs(t, c.Err, unix.ECONNREFUSED)

		// In progress: a listener whose accept queue is full drops SYNs.
		for i := 0; i < 2; i++ {
			s := tcpSocket(t)
			unix.SetNonblock(s, true)
			unix.Connect(s, closedSA)
		}
		time.Sleep(10 * time.Millisecond)
		cl3 := tcpSocket(t)
		q := submitPending(t, r, Connect(cl3, closedSA))
		c = doOp(t, r, Connect(cl3, closedSA))
		assert.ErrorIs(t, c.Err, unix.EALREADY, "second connect while one is in progress")
		require.NoError(t, q.Cancel())
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assertNoMore(t, r)
	})
}

// TestPort2SockRecvCancelNoLoss: a stream is received by a chain of
// receives canceled at random moments while the peer writes: the bytes
// the receives report, in order, are exactly the stream, none lost to a
// canceled receive and none twice (liburing's recv cancel races).
func TestPort2SockRecvCancelNoLoss(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, kind := range []string{"unix", "tcp"} {
			var a, b int
			if kind == "unix" {
				a, b = socketpair(t, unix.SOCK_STREAM)
			} else {
				a, b = port2TCPPair(t)
			}
			const total = 64 << 10
			want := make([]byte, total)
			for i := range want {
				want[i] = byte(i * 7 / 3)
			}
			done := make(chan error, 1)
			go func() {
				rng := rand.New(rand.NewPCG(1, 2))
				off := 0
				for off < total {
					n := min(1+rng.IntN(3000), total-off)
					m, err := unix.Write(b, want[off:off+n])
					if err != nil {
						done <- err
						return
					}
					off += m
					if rng.IntN(4) == 0 {
						time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
					}
				}
				done <- nil
			}()
			rng := rand.New(rand.NewPCG(3, 4))
			var got bytes.Buffer
			canceled := 0
			deadline := time.Now().Add(20 * time.Second)
			for got.Len() < total && time.Now().Before(deadline) {
				buf := make([]byte, 1+rng.IntN(5000))
				q, err := r.Submit(Recv(a, buf, 0))
				require.NoError(t, err)
				switch rng.IntN(3) {
				case 0:
				case 1:
					q.Cancel()
				default:
					time.Sleep(time.Duration(rng.IntN(100)) * time.Microsecond)
					q.Cancel()
				}
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "%s: completion %+v", kind, c)
					canceled++
				}
				got.Write(buf[:c.N])
			}
			require.NoError(t, <-done)
			require.Equal(t, total, got.Len(), "%s: bytes received", kind)
			assert.True(t, bytes.Equal(want, got.Bytes()), "%s: the stream, in order, once", kind)
			t.Logf("%s: %d receives canceled", kind, canceled)
			assertNoMore(t, r)
		}
	})
}

// TestPort2SockAcceptCancelNoLoss: accepts canceled at random moments
// while clients connect: every connection is either accepted by a ring
// request that reports it or still in the listener's queue afterwards;
// none is lost to a canceled accept (liburing's accept-cancel and
// accept-reuse).
func TestPort2SockAcceptCancelNoLoss(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, nonblock := range []bool{false, true} {
			flags := 0
			if nonblock {
				flags = unix.SOCK_NONBLOCK
			}
			lfd, sa := tcpListener(t, 128, flags)
			const clients = 40
			rng := rand.New(rand.NewPCG(5, 6))
			accepted := 0
			connected := 0
			for connected < clients {
				q, err := r.Submit(Accept(lfd, 0))
				require.NoError(t, err)
				connect := rng.IntN(2) == 0
				if connect {
					cl := tcpSocket(t)
					require.NoError(t, unix.Connect(cl, sa))
					connected++
				}
				var c Completion
				if !connect || rng.IntN(3) > 0 {
					if rng.IntN(2) == 0 {
						time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
					}
					q.Cancel()
				}
				c = reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err == nil {
					require.Greater(t, c.N, 2, "an accepted fd")
					unix.Close(c.N)
					accepted++
				} else {
					require.ErrorIs(t, c.Err, ErrCanceled, "completion %+v", c)
				}
			}
			// What is left is in the queue.
			require.NoError(t, unix.SetNonblock(lfd, true))
			left := 0
			for {
				nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
				if err == unix.EAGAIN {
					break
				}
				require.NoError(t, err)
				unix.Close(nfd)
				left++
			}
			assert.Equal(t, clients, accepted+left, "nonblock=%v: accepted %d, left in the queue %d", nonblock, accepted, left)
			assertNoMore(t, r)
		}
	})
}

// TestPort2SockPeekThenRecv: MSG_PEEK leaves the data for the next
// receive; an empty buffer is a receive of nothing (or refused), never a
// wait; a datagram too big for the buffer is truncated and consumed.
func TestPort2SockPeekThenRecv(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		_, err := unix.Write(b, []byte("peekaboo"))
		require.NoError(t, err)
		buf := make([]byte, 4)
		c := doOp(t, r, Recv(a, buf, unix.MSG_PEEK))
		require.NoError(t, c.Err)
		assert.Equal(t, "peek", string(buf[:c.N]))
		buf = make([]byte, 16)
		c = doOp(t, r, Recv(a, buf, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "peekaboo", string(buf[:c.N]))

		q, err := r.Submit(Recv(a, []byte{}, 0))
		if err != nil {
			assert.ErrorIs(t, err, ErrInvalid)
		} else {
			var cs [1]Completion
			n, err := r.Reap(cs[:], 5*time.Second)
			require.NoError(t, err)
			if assert.Equal(t, 1, n, "a receive of nothing completes") {
				assert.Equal(t, q, cs[0].Req)
				assert.Zero(t, cs[0].N)
			} else {
				q.Cancel()
				reapOne(t, r)
			}
		}

		d1, d2 := socketpair(t, unix.SOCK_DGRAM)
		_, err = unix.Write(d2, []byte("0123456789"))
		require.NoError(t, err)
		_, err = unix.Write(d2, []byte("xy"))
		require.NoError(t, err)
		buf = make([]byte, 4)
		c = doOp(t, r, Recv(d1, buf, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "0123", string(buf[:c.N]))
		c = doOp(t, r, Recv(d1, buf, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "xy", string(buf[:c.N]), "the rest of the first datagram is gone")
		assertNoMore(t, r)
	})
}
