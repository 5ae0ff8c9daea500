//go:build linux

package ioring

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fourth round, sockets: ported from liburing's accept-test, accept-link,
// accept (its shutdown and "accept then connect in one ring" cases),
// send_recv and fd-pass (SCM_RIGHTS rather than direct descriptors,
// which cancelio does not expose). A connection made entirely through the
// ring, a listener shut down under pending accepts, and descriptors
// passed over unix sockets to receives that are canceled at random
// moments: none may be lost, duplicated or leaked.

// TestPort4AcceptThenConnect checks a connection made with both ends in
// the ring (accept-link and accept-test): an Accept submitted first, then
// a Connect to the same listener; both complete, the accepted fd's peer is
// the connecting socket, SOCK_NONBLOCK given to Accept makes the new fd
// non-blocking (and its absence leaves it blocking, close-on-exec either
// way), and data sent through the ring one way arrives the other way.
func TestPort4AcceptThenConnect(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, lflags := range []int{0, unix.SOCK_NONBLOCK} {
			lfd, sa := tcpListener(t, 8, lflags)
			for i, aflags := range []int{0, unix.SOCK_NONBLOCK, 0, unix.SOCK_NONBLOCK} {
				what := fmt.Sprintf("listener flags %#x, accept %d flags %#x", lflags, i, aflags)
				qa, err := r.Submit(Accept(lfd, aflags).WithUser("accept"))
				require.NoError(t, err)
				cl := tcpSocket(t)
				qc, err := r.Submit(Connect(cl, sa).WithUser("connect"))
				require.NoError(t, err)
				var acc, con Completion
				for range 2 {
					c := reapOne(t, r)
					switch c.Req {
					case qa:
						acc = c
					case qc:
						con = c
					default:
						t.Fatalf("%s: a completion of nobody's: %+v", what, c)
					}
				}
				require.NoError(t, con.Err, what)
				require.NoError(t, acc.Err, what)
				require.Positive(t, acc.N, what)
				afd := acc.N
				t.Cleanup(func() { unix.Close(afd) })
				peer, err := unix.Getpeername(afd)
				require.NoError(t, err)
				local, err := unix.Getsockname(cl)
				require.NoError(t, err)
				assert.Equal(t, local, peer, "%s: the accepted fd's peer is the socket that connected", what)
				fl, err := unix.FcntlInt(uintptr(afd), unix.F_GETFL, 0)
				require.NoError(t, err)
				assert.Equal(t, aflags != 0, fl&unix.O_NONBLOCK != 0, "%s: O_NONBLOCK of the accepted fd", what)
				fd, err := unix.FcntlInt(uintptr(afd), unix.F_GETFD, 0)
				require.NoError(t, err)
				assert.NotZero(t, fd&unix.FD_CLOEXEC, "%s: close-on-exec", what)
				fl, err = unix.FcntlInt(uintptr(lfd), unix.F_GETFL, 0)
				require.NoError(t, err)
				assert.Equal(t, lflags != 0, fl&unix.O_NONBLOCK != 0, "%s: the listener's O_NONBLOCK left as it was", what)

				buf := make([]byte, 16)
				qr, err := r.Submit(Recv(afd, buf, 0))
				require.NoError(t, err)
				c := doOpAmong(t, r, Send(cl, []byte(what[:8]), 0), qr)
				require.NoError(t, c[0].Err, what)
				require.Equal(t, 8, c[0].N, what)
				require.NoError(t, c[1].Err, what)
				assert.Equal(t, what[:8], string(buf[:c[1].N]), what)
			}
		}
	})
}

// TestPort4AcceptListenerShutdown checks pending accepts on a listener
// that is shut down (accept.c's shutdown case): a one-shot accept, one
// with SOCK_NONBLOCK and a multishot accept, all waiting, end once the
// listener is shut down, with EINVAL as accept(2) says, and the multishot
// one with a final completion carrying it; on both backends alike. An
// accept submitted afterwards fails the same way at once.
func TestPort4AcceptListenerShutdown(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, lflags := range []int{0, unix.SOCK_NONBLOCK} {
			what := fmt.Sprintf("listener flags %#x", lflags)
			lfd, _ := tcpListener(t, 8, lflags)
			q1 := submitPending(t, r, Accept(lfd, 0))
			q2 := submitPending(t, r, Accept(lfd, unix.SOCK_NONBLOCK))
			qm := submitPending(t, r, AcceptMultishot(lfd, 0))
			require.NoError(t, unix.Shutdown(lfd, unix.SHUT_RDWR))
			got := map[Request]Completion{}
			for len(got) < 3 {
				var cs [4]Completion
				n, err := r.Reap(cs[:], 10*time.Second)
				require.NoError(t, err)
				require.NotZero(t, n, "%s: accepts still pending 10s after the listener's shutdown: %v", what, got)
				for _, c := range cs[:n] {
					_, dup := got[c.Req]
					require.False(t, dup, "%s: a second completion %+v", what, c)
					got[c.Req] = c
				}
			}
			for _, q := range []Request{q1, q2, qm} {
				c, ok := got[q]
				require.True(t, ok, "%s: %v completed", what, q)
				assert.False(t, c.More, "%s: %+v is final", what, c)
				assert.ErrorIs(t, c.Err, unix.EINVAL, "%s: %v", what, c)
				assert.Zero(t, c.N, what)
			}
			c := doOp(t, r, Accept(lfd, 0))
			assert.ErrorIs(t, c.Err, unix.EINVAL, "%s: an accept after the shutdown", what)
			assertNoMore(t, r)
		}
	})
}

// TestPort4FDPassCancelNoLoss checks descriptors passed over a unix
// socket to a chain of RecvMsg requests canceled at random moments
// (fd-pass, with cancels): each message carries its number and a pipe
// holding the same number; every message is received exactly once,
// either by a receive that completed or, at the end, by a plain
// recvmsg, with its descriptor, which reads that number back. A canceled
// receive takes nothing (its descriptor stays queued, not lost or leaked:
// the fd check of forEachBackend counts them).
func TestPort4FDPassCancelNoLoss(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
			rng := rand.New(rand.NewPCG(uint64(typ), 4))
			a, b := socketpair(t, typ)
			const total = 200
			received := map[uint32]int{}
			check := func(data []byte, oob []byte, how string) {
				require.Len(t, data, 4, how)
				num := binary.LittleEndian.Uint32(data)
				scms, err := unix.ParseSocketControlMessage(oob)
				require.NoError(t, err, how)
				require.Len(t, scms, 1, "%s: message %d's control messages", how, num)
				fds, err := unix.ParseUnixRights(&scms[0])
				require.NoError(t, err, how)
				require.Len(t, fds, 1, how)
				var back [4]byte
				n, err := unix.Read(fds[0], back[:])
				unix.Close(fds[0])
				require.NoError(t, err, how)
				require.Equal(t, 4, n, how)
				assert.Equal(t, num, binary.LittleEndian.Uint32(back[:]), "%s: message %d's descriptor", how, num)
				received[num]++
			}
			sent := 0
			// send sends message sent (on any goroutine: no require).
			send := func(k int) {
				var p [2]int
				if !assert.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC)) {
					return
				}
				defer unix.Close(p[0])
				defer unix.Close(p[1])
				var num [4]byte
				binary.LittleEndian.PutUint32(num[:], uint32(k))
				_, err := unix.Write(p[1], num[:])
				assert.NoError(t, err)
				assert.NoError(t, unix.Sendmsg(b, num[:], unix.UnixRights(p[0]), nil, 0))
			}
			for sent < total {
				m := &Msg{Buffers: [][]byte{make([]byte, 8)}, Control: make([]byte, unix.CmsgSpace(4))}
				q, err := r.Submit(RecvMsg(a, m, 0))
				require.NoError(t, err)
				// Send before, around or after the cancel.
				switch rng.IntN(4) {
				case 0:
					send(sent)
					q.Cancel()
				case 1:
					q.Cancel()
					send(sent)
				case 2:
					done := make(chan struct{})
					go func(k int) { defer close(done); send(k) }(sent)
					time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
					q.Cancel()
					<-done
				case 3:
					send(sent)
				}
				sent++
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "%+v", c)
					require.Zero(t, c.N)
					continue
				}
				require.Zero(t, m.Flags()&(unix.MSG_CTRUNC|unix.MSG_TRUNC), "flags %#x", m.Flags())
				check(m.Buffers[0][:c.N], m.Control[:m.ControlLen()], "through the ring")
			}
			// What the canceled receives left is still queued.
			for {
				buf, oob := make([]byte, 8), make([]byte, unix.CmsgSpace(4))
				n, oobn, _, _, err := unix.Recvmsg(a, buf, oob, unix.MSG_DONTWAIT)
				if err == unix.EAGAIN {
					break
				}
				require.NoError(t, err)
				check(buf[:n], oob[:oobn], "left queued")
			}
			require.Len(t, received, total, "every message received (type %d)", typ)
			for num, k := range received {
				require.Equal(t, 1, k, "message %d received once", num)
			}
		}
	})
}

// TestPort4FDPassTruncated checks a passed descriptor that does not fit
// the receive's control buffer (fd-pass's failure side): the receive
// completes with the data and MSG_CTRUNC, the kernel closes the
// descriptor it could not deliver (no fd appears in the process), and
// both backends report the same.
func TestPort4FDPassTruncated(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_DGRAM)
		rd, _ := pipe(t)
		// Room for (CmsgSpace(4)-CmsgLen(0))/4 descriptors (2 on 64-bit
		// platforms, 1 on 32-bit ones), fewer than are sent.
		fit := (unix.CmsgSpace(4) - unix.CmsgLen(0)) / 4
		require.NoError(t, unix.Sendmsg(b, []byte("fd"), unix.UnixRights(rd, rd, rd, rd), nil, 0))
		m := &Msg{Buffers: [][]byte{make([]byte, 4)}, Control: make([]byte, unix.CmsgSpace(4))}
		c := doOp(t, r, RecvMsg(a, m, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "fd", string(m.Buffers[0][:c.N]))
		assert.NotZero(t, m.Flags()&unix.MSG_CTRUNC, "flags %#x", m.Flags())
		scms, err := m.ControlMessages()
		require.NoError(t, err)
		require.Len(t, scms, 1)
		fds, err := unix.ParseUnixRights(&scms[0])
		require.NoError(t, err)
		require.Len(t, fds, fit, "those that fit")
		for _, fd := range fds {
			unix.Close(fd)
		}
		// No control room at all: the data, and both descriptors closed.
		require.NoError(t, unix.Sendmsg(b, []byte("no"), unix.UnixRights(rd), nil, 0))
		m = &Msg{Buffers: [][]byte{make([]byte, 4)}}
		c = doOp(t, r, RecvMsg(a, m, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "no", string(m.Buffers[0][:c.N]))
		assert.NotZero(t, m.Flags()&unix.MSG_CTRUNC, "flags %#x", m.Flags())
		assert.Zero(t, m.ControlLen())
	})
}
