//go:build linux

package ioring

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Edges of the socket and stream operations where the poll backend must do
// what io_uring does (liburing's own tests assert them).

// An offset on a file without a position is ignored, as io_uring ignores
// it: any offset on a pipe, offset 0 on a socket (a socket's read and
// write refuse any other with ESPIPE).
func TestConformanceStreamOffsetIgnored(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		prd, pwr := pipe(t)
		sa, sb := socketpair(t, unix.SOCK_STREAM)
		for name, fds := range map[string][2]int{"pipe": {prd, pwr}, "socket": {sb, sa}} {
			rd, wr := fds[0], fds[1]
			off := int64(7) // ignored on a pipe
			if name == "socket" {
				off = 0
				c := doOp(t, r, Write(wr, []byte("x"), 7))
				assert.ErrorIs(t, c.Err, unix.ESPIPE, name)
			}
			c := doOp(t, r, Write(wr, []byte("abcd"), 0))
			require.NoError(t, c.Err, name)
			assert.Equal(t, 4, c.N, name)
			c = doOp(t, r, Writev(wr, [][]byte{[]byte("ef"), []byte("gh")}, off))
			require.NoError(t, c.Err, name)
			buf := make([]byte, 3)
			c = doOp(t, r, Read(rd, buf, 0))
			require.NoError(t, c.Err, name)
			assert.Equal(t, "abc", string(buf[:c.N]), name)
			b1, b2 := make([]byte, 2), make([]byte, 8)
			c = doOp(t, r, Readv(rd, [][]byte{b1, b2}, off))
			require.NoError(t, c.Err, name)
			assert.Equal(t, "defgh", string(append(b1, b2...)[:c.N]), name)
		}
	})
}

// MSG_WAITALL: a receive on a stream socket waits for its whole buffer
// (or the end of the stream), a send sends all of it, across short
// transfers; a cancel or the end of the stream completes it with what
// moved.
func TestConformanceWaitAll(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		buf := make([]byte, 512)
		q, err := r.Submit(Recv(a, buf, unix.MSG_WAITALL))
		require.NoError(t, err)
		_, err = unix.Write(b, bytes.Repeat([]byte{1}, 256))
		require.NoError(t, err)
		assertNoMore(t, r) // half the buffer
		_, err = unix.Write(b, bytes.Repeat([]byte{2}, 256))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 512, c.N)

		b1, b2 := make([]byte, 100), make([]byte, 156)
		m := &Msg{Buffers: [][]byte{b1, b2}}
		_, err = r.Submit(RecvMsg(a, m, unix.MSG_WAITALL))
		require.NoError(t, err)
		first, rest := bytes.Repeat([]byte("first 128 bytes "), 8), bytes.Repeat([]byte("then the rest"), 10)
		for _, w := range [][]byte{first, rest} {
			_, err = unix.Write(b, w)
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond)
		}
		c = reapOne(t, r)
		require.NoError(t, c.Err)
		assert.Equal(t, 256, c.N)
		assert.Equal(t, append(first, rest...)[:256], append(b1, b2...))
		drain := make([]byte, 2)
		c = doOp(t, r, Recv(a, drain, 0)) // the 2 bytes past the message
		require.NoError(t, c.Err)

		// A canceled one, and one the end of the stream ends, report
		// what they received.
		q, err = r.Submit(Recv(a, buf, unix.MSG_WAITALL))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("partial"))
		require.NoError(t, err)
		assertNoMore(t, r) // 7 bytes of 512
		require.NoError(t, q.Cancel())
		c = reapOne(t, r)
		if c.Err == nil {
			assert.Equal(t, "partial", string(buf[:c.N]))
		} else {
			assert.ErrorIs(t, c.Err, ErrCanceled, "only before any byte came")
		}
		_, err = r.Submit(Recv(a, buf, unix.MSG_WAITALL))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("last"))
		require.NoError(t, err)
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		c = reapOne(t, r)
		require.NoError(t, c.Err)
		assert.Equal(t, "last", string(buf[:c.N]))

		// A send of more than the socket buffers hold sends all of it.
		big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		c2, d := socketpair(t, unix.SOCK_STREAM)
		require.NoError(t, unix.SetsockoptInt(c2, unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10))
		q, err = r.Submit(Send(c2, big, unix.MSG_WAITALL))
		require.NoError(t, err)
		got := make([]byte, 0, len(big))
		chunk := make([]byte, 64<<10)
		for len(got) < len(big) {
			n, err := unix.Read(d, chunk)
			require.NoError(t, err)
			got = append(got, chunk[:n]...)
		}
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, len(big), c.N)
		assert.True(t, bytes.Equal(big, got))

		// A datagram socket's message is whole at once.
		u1, u2 := socketpair(t, unix.SOCK_DGRAM)
		_, err = unix.Write(u2, []byte("one datagram"))
		require.NoError(t, err)
		c = doOp(t, r, Recv(u1, buf, unix.MSG_WAITALL))
		require.NoError(t, c.Err)
		assert.Equal(t, "one datagram", string(buf[:c.N]))
	})
}

// MSG_DONTWAIT given by the caller: a receive with nothing to receive
// completes with EAGAIN at once rather than wait.
func TestConformanceDontWait(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, _ := socketpair(t, unix.SOCK_STREAM)
		c := doOp(t, r, Recv(a, make([]byte, 8), unix.MSG_DONTWAIT))
		assert.ErrorIs(t, c.Err, unix.EAGAIN)
		c = doOp(t, r, RecvMsg(a, &Msg{Buffers: [][]byte{make([]byte, 8)}}, unix.MSG_DONTWAIT))
		assert.ErrorIs(t, c.Err, unix.EAGAIN)
	})
}

// A socket whose connect was refused can connect again, and is refused
// again each time (not ECONNABORTED: the failed connect leaves it
// unconnected).
func TestConformanceConnectAgain(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		lfd, sa := tcpListener(t, 1, 0)
		require.NoError(t, unix.Close(lfd)) // nobody listens there now
		fd := tcpSocket(t)
		for i := range 5 {
			c := doOp(t, r, Connect(fd, sa))
			assert.ErrorIs(t, c.Err, unix.ECONNREFUSED, "attempt %d", i+1)
		}
	})
}

// RegisterFiles refuses a table with a closed fd (EBADF), however the
// entries before it are held.
func TestConformanceRegisterFilesClosedFD(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		prd, pwr, err := osPipe()
		require.NoError(t, err)
		closed := prd
		require.NoError(t, unix.Close(prd))
		defer unix.Close(pwr)
		err = r.RegisterFiles([]int{rd, wr, -1, closed, -1})
		assert.ErrorIs(t, err, unix.EBADF)
		require.NoError(t, r.RegisterFiles([]int{rd, wr}), "nothing of the refused table was kept")
		require.NoError(t, r.UnregisterFiles())
	})
}

// osPipe returns a pipe whose ends the caller closes.
func osPipe() (rd, wr int, err error) {
	var p [2]int
	err = unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}

// An accept on a socket that does not listen fails at once with EINVAL,
// as accept4 says, whether the socket blocks or not and for a multishot
// accept too; on a file that is no socket, with ENOTSOCK. (The poll
// backend accepted on readiness, which such a socket may never report: it
// waited for ever.)
func TestConformanceAcceptNotListening(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, _ := socketpair(t, unix.SOCK_STREAM)
		bound := tcpSocket(t)
		require.NoError(t, unix.Bind(bound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		nb := tcpSocket(t)
		require.NoError(t, unix.SetNonblock(nb, true))
		rd, _ := pipe(t)
		for _, tc := range []struct {
			name string
			fd   int
			want unix.Errno
		}{
			{"connected", a, unix.EINVAL},
			{"bound", bound, unix.EINVAL},
			{"non-blocking", nb, unix.EINVAL},
			{"pipe", rd, unix.ENOTSOCK},
		} {
			c := doOp(t, r, Accept(tc.fd, 0))
			assert.ErrorIs(t, c.Err, tc.want, "accept, %s", tc.name)
			q, err := r.Submit(AcceptMultishot(tc.fd, 0))
			require.NoError(t, err)
			c = reapFinal(t, r, q)
			assert.ErrorIs(t, c.Err, tc.want, "accept-multishot, %s", tc.name)
		}
		assertNoMore(t, r)
	})
}
