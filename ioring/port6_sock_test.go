//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, sockets: ported from liburing's socket-nb, connect-rep,
// shutdown, recv-msgall, recv-msgall-stream, send_recv and send_recvmsg.
// Every behaviour here is the socket's own, so both backends must agree.

// port6Reap reaps n completions and returns them by request; each
// request may complete once only.
func port6Reap(t *testing.T, r *Ring, n int) map[Request]Completion {
	t.Helper()
	got := map[Request]Completion{}
	for range n {
		c := reapOne(t, r)
		require.NotContains(t, got, c.Req, "a second completion of one request")
		got[c.Req] = c
	}
	return got
}

// port6Pattern returns n bytes of a pattern that differs with seed.
func port6Pattern(n, seed int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + seed)
	}
	return b
}

// TestPort6RecvDontwaitEmpty ports socket-nb.c: a Recv on an empty TCP
// socket given MSG_DONTWAIT completes at once with EAGAIN, whether the
// socket itself is O_NONBLOCK or not; without MSG_DONTWAIT it waits,
// on a non-blocking socket too, and completes with the bytes once the
// peer sends them.
func TestPort6RecvDontwaitEmpty(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, nonblock := range []bool{false, true} {
			for _, dontwait := range []bool{false, true} {
				cl, srv := port2TCPPair(t)
				if nonblock {
					require.NoError(t, unix.SetNonblock(srv, true))
				}
				buf := make([]byte, 128)
				if dontwait {
					start := time.Now()
					c := doOp(t, r, Recv(srv, buf, unix.MSG_DONTWAIT))
					assert.ErrorIs(t, c.Err, unix.EAGAIN, "nonblock=%v: MSG_DONTWAIT on an empty socket", nonblock)
					assert.Zero(t, c.N)
					assert.Less(t, time.Since(start), 5*time.Second, "EAGAIN comes at once")
					continue
				}
				q := submitPending(t, r, Recv(srv, buf, 0))
				msg := port6Pattern(100, 1)
				_, err := unix.Write(cl, msg)
				require.NoError(t, err)
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.NoError(t, c.Err, "nonblock=%v: a receive that waited", nonblock)
				assert.Equal(t, msg, buf[:c.N])
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort6ConnectRefusedRepeated ports connect-rep.c: a socket bound to
// a port with no listener behind it, connected again and again on one
// client socket, is refused every time: ECONNREFUSED, never the
// ECONNABORTED that a connect left half-way gives. The address is
// overwritten right after each submission (liburing checks for reuse
// of the sockaddr the same way): the Op holds its own copy.
func TestPort6ConnectRefusedRepeated(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		// A server socket that is bound but never listens.
		srv := tcpSocket(t)
		require.NoError(t, unix.Bind(srv, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		sa, err := unix.Getsockname(srv)
		require.NoError(t, err)
		want := *sa.(*unix.SockaddrInet4)
		cl := tcpSocket(t)
		require.NoError(t, unix.Bind(cl, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		for i := range 32 {
			addr := want
			q, err := r.Submit(Connect(cl, &addr))
			require.NoError(t, err)
			addr = unix.SockaddrInet4{Port: 0xffff, Addr: [4]byte{255, 255, 255, 255}}
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.ErrorIs(t, c.Err, unix.ECONNREFUSED, "attempt %d", i+1)
		}
		assertNoMore(t, r)
	})
}

// TestPort6ShutdownThenWritev ports shutdown.c: a Shutdown(SHUT_WR)
// request on a connected TCP socket completes with 0, the peer then
// reads the end of the stream, and a Writev on the shut-down socket
// fails with EPIPE (the ring's sends add MSG_NOSIGNAL; a writev goes
// through write, whose SIGPIPE Go ignores on an fd other than 1 and 2).
// Sending in the other direction still works.
func TestPort6ShutdownThenWritev(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		cl, srv := port2TCPPair(t)
		require.NoError(t, unix.SetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
		c := doOp(t, r, Shutdown(cl, unix.SHUT_WR))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N)

		buf := make([]byte, 16)
		c = doOp(t, r, Recv(srv, buf, 0))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N, "the peer sees the end of the stream")

		c = doOp(t, r, Writev(cl, [][]byte{make([]byte, 128)}, 0))
		assert.ErrorIs(t, c.Err, unix.EPIPE, "writev after SHUT_WR")
		assert.Zero(t, c.N)
		c = doOp(t, r, Send(cl, make([]byte, 128), 0))
		assert.ErrorIs(t, c.Err, unix.EPIPE, "send after SHUT_WR")

		msg := port6Pattern(64, 2)
		c = doOp(t, r, Send(srv, msg, 0))
		require.NoError(t, c.Err)
		require.Equal(t, len(msg), c.N)
		got := make([]byte, len(msg))
		c = doOp(t, r, Recv(cl, got, unix.MSG_WAITALL))
		require.NoError(t, c.Err)
		assert.Equal(t, msg, got[:c.N], "the other direction is open")
		assertNoMore(t, r)
	})
}

// TestPort6DatagramWaitAll ports recv-msgall.c: on a datagram socket
// MSG_WAITALL does not gather: a Recv (and a RecvMsg) of 512 bytes,
// pending before the sender sends two datagrams of 256, completes with
// the first datagram's 256 bytes, and the next one with the second's.
// RecvMsg also reports the sender's address.
func TestPort6DatagramWaitAll(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, useMsg := range []bool{false, true} {
			rfd, raddr := udpSocket(t)
			sfd, saddr := udpSocket(t)
			require.NoError(t, unix.Connect(sfd, raddr))
			data := port6Pattern(512, 3)
			var bufs [2][]byte
			var msgs [2]*Msg
			var qs [2]Request
			for i := range 2 {
				bufs[i] = make([]byte, 512)
				var op Op
				if useMsg {
					msgs[i] = &Msg{Buffers: [][]byte{bufs[i]}}
					op = RecvMsg(rfd, msgs[i], unix.MSG_WAITALL)
				} else {
					op = Recv(rfd, bufs[i], unix.MSG_WAITALL)
				}
				if i == 0 {
					qs[i] = submitPending(t, r, op)
					continue
				}
				var err error
				qs[i], err = r.Submit(op)
				require.NoError(t, err)
			}
			// The ring sends them, one after the other; the receives may
			// complete before the sends are reaped.
			got := map[Request]Completion{}
			for i := range 2 {
				sq, err := r.Submit(Send(sfd, data[i*256:(i+1)*256], 0))
				require.NoError(t, err)
				for {
					c := reapOne(t, r)
					got[c.Req] = c
					if c.Req == sq {
						break
					}
				}
				require.NoError(t, got[sq].Err)
				require.Equal(t, 256, got[sq].N)
			}
			for len(got) < 4 {
				c := reapOne(t, r)
				got[c.Req] = c
			}
			// The receives are not ordered among themselves (Recv is
			// unordered): each has one whole datagram, and together both.
			var halves [2]bool
			for i, q := range qs {
				c, ok := got[q]
				require.True(t, ok, "receive %d completed", i)
				require.NoError(t, c.Err, "useMsg=%v receive %d", useMsg, i)
				require.Equal(t, 256, c.N, "useMsg=%v: one datagram, not the whole buffer", useMsg)
				h := 0
				if !bytes.Equal(bufs[i][:256], data[:256]) {
					h = 1
				}
				assert.Equal(t, data[h*256:(h+1)*256], bufs[i][:256], "receive %d", i)
				assert.False(t, halves[h], "datagram %d received twice", h)
				halves[h] = true
				if useMsg {
					from, ok := msgs[i].From().(*unix.SockaddrInet4)
					if assert.True(t, ok, "From: %v", msgs[i].From()) {
						assert.Equal(t, saddr.Port, from.Port)
						assert.Equal(t, saddr.Addr, from.Addr)
					}
					assert.Zero(t, msgs[i].Flags()&unix.MSG_TRUNC)
				}
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort6StreamWaitAll ports recv-msgall-stream.c: on a TCP stream a
// Recv and a RecvMsg given MSG_WAITALL, pending before anything is sent,
// complete only once the whole buffer has arrived, although the peer
// writes it in pieces of 128 bytes (with TCP_NODELAY, so they travel
// apart); the bytes are the peer's, in order. When the peer shuts down
// half-way, the receive completes with what arrived.
func TestPort6StreamWaitAll(t *testing.T) {
	const total = 128 * 32
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, useMsg := range []bool{false, true} {
			cl, srv := port2TCPPair(t)
			require.NoError(t, unix.SetsockoptInt(cl, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
			buf := make([]byte, total)
			var op Op
			if useMsg {
				// Two buffers of uneven length: the gather spans them.
				op = RecvMsg(srv, &Msg{Buffers: [][]byte{buf[:1000], buf[1000:]}}, unix.MSG_WAITALL)
			} else {
				op = Recv(srv, buf, unix.MSG_WAITALL)
			}
			q := submitPending(t, r, op)
			data := port6Pattern(total, 4)
			done := make(chan error, 1)
			go func() {
				for off := 0; off < total; off += 128 {
					if _, err := unix.Write(cl, data[off:off+128]); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			c := reapOne(t, r)
			require.NoError(t, <-done)
			require.Equal(t, q, c.Req)
			require.NoError(t, c.Err, "useMsg=%v", useMsg)
			require.Equal(t, total, c.N, "useMsg=%v: all of the buffer", useMsg)
			require.Equal(t, data, buf)

			// The peer sends half and shuts down: what arrived, and then 0.
			clear(buf)
			q = submitPending(t, r, Recv(srv, buf, unix.MSG_WAITALL))
			_, err := unix.Write(cl, data[:total/2])
			require.NoError(t, err)
			require.NoError(t, unix.Shutdown(cl, unix.SHUT_WR))
			c = reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.NoError(t, c.Err)
			require.Equal(t, total/2, c.N, "useMsg=%v: what arrived before the end", useMsg)
			require.Equal(t, data[:total/2], buf[:total/2])
			c = doOp(t, r, Recv(srv, buf, unix.MSG_WAITALL))
			require.NoError(t, c.Err)
			require.Zero(t, c.N, "then the end of the stream")
		}
		assertNoMore(t, r)
	})
}

// TestPort6SendRecvThroughRing ports send_recv.c: a Recv submitted
// first, on a UDP socket and on a TCP stream, then a Send through the
// same ring: the receive completes with exactly the bytes sent, and the
// send with their count. On TCP the send is submitted before a goroutine
// reaps, so both wait in the ring at once.
func TestPort6SendRecvThroughRing(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rfd, raddr := udpSocket(t)
		sfd, _ := udpSocket(t)
		require.NoError(t, unix.Connect(sfd, raddr))
		cl, srv := port2TCPPair(t)
		for _, p := range []struct {
			name   string
			rd, wr int
		}{{"udp", rfd, sfd}, {"tcp", srv, cl}} {
			msg := []byte("This is a test string for send and recv")
			buf := make([]byte, 128)
			rq := submitPending(t, r, Recv(p.rd, buf, 0))
			sq, err := r.Submit(Send(p.wr, msg, 0))
			require.NoError(t, err)
			got := port6Reap(t, r, 2)
			require.Contains(t, got, rq)
			require.Contains(t, got, sq)
			require.NoError(t, got[sq].Err, p.name)
			assert.Equal(t, len(msg), got[sq].N, p.name)
			require.NoError(t, got[rq].Err, p.name)
			assert.Equal(t, msg, buf[:got[rq].N], p.name)
		}
		assertNoMore(t, r)
	})
}

// TestPort6SendMsgRecvMsgVectors ports send_recvmsg.c: a SendMsg of
// several buffers to an address (an unconnected UDP socket) and a
// RecvMsg pending before it, into buffers cut differently: the
// datagram arrives whole and in order across the receiver's buffers,
// the sender's address comes with it, and a receiver whose buffers are
// too short gets what fits with MSG_TRUNC set. On a stream socket pair
// the same holds without the address.
func TestPort6SendMsgRecvMsgVectors(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rfd, raddr := udpSocket(t)
		sfd, saddr := udpSocket(t)
		data := port6Pattern(4*128, 5)
		send := &Msg{Buffers: [][]byte{data[:128], data[128:256], data[256:384], data[384:]}, Addr: raddr}
		recvBuf := make([]byte, 600)
		recv := &Msg{Buffers: [][]byte{recvBuf[:100], recvBuf[100:333], recvBuf[333:]}}
		rq := submitPending(t, r, RecvMsg(rfd, recv, 0))
		sq, err := r.Submit(SendMsg(sfd, send, 0))
		require.NoError(t, err)
		got := port6Reap(t, r, 2)
		require.NoError(t, got[sq].Err)
		require.Equal(t, len(data), got[sq].N)
		c, ok := got[rq]
		require.True(t, ok)
		require.NoError(t, c.Err)
		require.Equal(t, len(data), c.N)
		assert.Equal(t, data, recvBuf[:len(data)])
		from, ok := recv.From().(*unix.SockaddrInet4)
		if assert.True(t, ok, "From: %v", recv.From()) {
			assert.Equal(t, saddr.Port, from.Port)
		}
		assert.Zero(t, recv.Flags()&unix.MSG_TRUNC)

		// Too short: what fits, and MSG_TRUNC.
		short := make([]byte, 200)
		recv = &Msg{Buffers: [][]byte{short[:50], short[50:]}}
		rq = submitPending(t, r, RecvMsg(rfd, recv, 0))
		send = &Msg{Buffers: [][]byte{data[:128], data[128:256], data[256:384], data[384:]}, Addr: raddr}
		sq, err = r.Submit(SendMsg(sfd, send, 0))
		require.NoError(t, err)
		got = port6Reap(t, r, 2)
		require.NoError(t, got[sq].Err)
		require.Equal(t, len(data), got[sq].N, "the whole datagram is sent")
		c, ok = got[rq]
		require.True(t, ok)
		require.NoError(t, c.Err)
		assert.Equal(t, len(short), c.N, "the part that fits")
		assert.Equal(t, data[:len(short)], short)
		assert.NotZero(t, recv.Flags()&unix.MSG_TRUNC, "MSG_TRUNC says the rest was dropped")

		// A stream.
		a, b := socketpair(t, unix.SOCK_STREAM)
		recvBuf = make([]byte, len(data))
		recv = &Msg{Buffers: [][]byte{recvBuf[:7], recvBuf[7:300], recvBuf[300:]}}
		rq = submitPending(t, r, RecvMsg(a, recv, unix.MSG_WAITALL))
		send = &Msg{Buffers: [][]byte{data[:1], data[1:256], data[256:]}}
		sq, err = r.Submit(SendMsg(b, send, 0))
		require.NoError(t, err)
		got = port6Reap(t, r, 2)
		require.NoError(t, got[sq].Err)
		require.Equal(t, len(data), got[sq].N)
		c, ok = got[rq]
		require.True(t, ok)
		require.NoError(t, c.Err)
		require.Equal(t, len(data), c.N)
		assert.Equal(t, data, recvBuf)
		assertNoMore(t, r)
	})
}

// TestPort6ConnectTimeout ports connect.c's test_connect and
// test_connect_timeout: a Connect to a listener completes with 0 (on a
// blocking socket and on an O_NONBLOCK one alike); with the listener's
// backlog of 0 filled by that connection, the next connect's handshake
// is dropped and stalls, and a Connect given a deadline (liburing links
// a timeout of 100µs) ends with ErrTimeout, which is ErrCanceled too; a
// stalled Connect canceled by Request.Cancel ends with ErrCanceled.
// Nothing else completes, and the listener still holds the first
// connection, once.
func TestPort6ConnectTimeout(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, nonblock := range []bool{false, true} {
			lfd, sa := tcpListener(t, 0, 0)
			first := tcpSocket(t)
			if nonblock {
				require.NoError(t, unix.SetNonblock(first, true))
			}
			c := doOp(t, r, Connect(first, sa))
			require.NoError(t, c.Err, "nonblock=%v: a connect to a listener", nonblock)
			assert.Zero(t, c.N)

			stalled := tcpSocket(t)
			if nonblock {
				require.NoError(t, unix.SetNonblock(stalled, true))
			}
			start := time.Now()
			q, err := r.Submit(Connect(stalled, sa).WithDeadline(100 * time.Millisecond))
			require.NoError(t, err)
			c = reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.ErrorIs(t, c.Err, ErrTimeout, "nonblock=%v: a connect the listener does not take", nonblock)
			require.ErrorIs(t, c.Err, ErrCanceled)
			assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)

			another := tcpSocket(t)
			q = submitPending(t, r, Connect(another, sa))
			require.NoError(t, q.Cancel())
			c = reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.ErrorIs(t, c.Err, ErrCanceled, "nonblock=%v: a canceled connect", nonblock)
			assert.NotErrorIs(t, c.Err, ErrTimeout)
			assertNoMore(t, r)

			// The first connection is queued on the listener, once.
			require.NoError(t, unix.SetNonblock(lfd, true))
			afd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			require.NoError(t, err)
			peer, err := unix.Getpeername(afd)
			require.NoError(t, err)
			local, err := unix.Getsockname(first)
			require.NoError(t, err)
			assert.Equal(t, local.(*unix.SockaddrInet4).Port, peer.(*unix.SockaddrInet4).Port)
			unix.Close(afd)
		}
	})
}

// TestPort6ConnectThenShutdown ports conn-unreach.c: a Connect that
// stalls in its handshake (liburing's goes to an unreachable address;
// here the listener's backlog of 0 is full, so its SYNs are dropped),
// and then a Shutdown(SHUT_RDWR) of the same socket through the ring:
// the shutdown aborts the handshake, and the connect completes with
// that error, ECONNRESET (liburing also takes ENETUNREACH), promptly,
// rather than starting over and waiting on; the shutdown completes
// with 0 or ENOTCONN.
func TestPort6ConnectThenShutdown(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		_, sa := tcpListener(t, 0, 0)
		first := tcpSocket(t)
		require.NoError(t, unix.Connect(first, sa)) // fills the backlog
		fd := tcpSocket(t)
		require.NoError(t, unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
		cq := submitPending(t, r, Connect(fd, sa))
		sq, err := r.Submit(Shutdown(fd, unix.SHUT_RDWR))
		require.NoError(t, err)
		got := map[Request]Completion{}
		for len(got) < 2 {
			var cs [2]Completion
			n, err := r.Reap(cs[:], 10*time.Second)
			require.NoError(t, err)
			if n == 0 {
				st, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
				t.Fatalf("no completion within 10s: got %v; the socket's SO_ERROR now %v, connect pending %v",
					got, unix.Errno(st), cq.Pending())
			}
			for _, c := range cs[:n] {
				got[c.Req] = c
			}
		}
		if err := got[sq].Err; err != nil {
			assert.ErrorIs(t, err, unix.ENOTCONN, "shutdown")
		}
		cerr := got[cq].Err
		if !errors.Is(cerr, unix.ENETUNREACH) {
			assert.ErrorIs(t, cerr, unix.ECONNRESET, "the connect the shutdown aborted")
		}
		assertNoMore(t, r)
	})
}
