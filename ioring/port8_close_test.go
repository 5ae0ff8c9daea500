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

// Eighth round, the final close of a file: ported from liburing's
// linked-defer-close.c (liburing issue 1235): a connection accepted by a
// multishot accept gets sends and then a close, all through the ring, while
// the ring's consumer waits for completions; the close must be the final
// one, so that the peer, reading until the end of the stream, sees it.

// TestPort8CloseOpIsFinal: a connection taken from an AcceptMultishot
// gets a Recv that is canceled, three Sends of 128 KiB each (MSG_WAITALL:
// a send on a stream may be short otherwise; large enough
// to wait for room in the socket, which on the poll backend means a
// duplicate of the fd held while they wait) and then a Close op. liburing
// linked them (IOSQE_IO_LINK) and skipped their completions; the ring has
// no links, so each is submitted once the one before has completed. The
// peer, a plain blocking reader, gets every byte in order and then the end
// of the stream within seconds, while the consumer sits in Reap: nothing the
// ring holds (a duplicate of the fd, an epoll registration, a reference
// the kernel took for a request) keeps the connection open after the
// Close op's completion. Both backends.
func TestPort8CloseOpIsFinal(t *testing.T) {
	const part = 128 << 10
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		lfd, sa := tcpListener(t, 4, 0)
		acc, err := r.Submit(AcceptMultishot(lfd, 0).WithUser("accept"))
		require.NoError(t, err)

		type peerResult struct {
			data []byte
			err  error
		}
		peer := make(chan peerResult, 1)
		go func() {
			var res peerResult
			defer func() { peer <- res }()
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				res.err = err
				return
			}
			defer unix.Close(fd)
			// Ends the read below if the stream never ends.
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 15})
			if res.err = unix.Connect(fd, sa); res.err != nil {
				return
			}
			buf := make([]byte, 64<<10)
			for {
				n, err := unix.Read(fd, buf)
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					res.err = err
					return
				}
				if n == 0 {
					return // the end of the stream
				}
				res.data = append(res.data, buf[:n]...)
				if len(res.data) < 64<<10 {
					time.Sleep(time.Millisecond) // let the sender wait for room
				}
			}
		}()

		c := reapOne(t, r)
		require.Equal(t, acc, c.Req)
		require.True(t, c.More, "a connection: %+v", c)
		require.NoError(t, c.Err)
		conn := c.N
		closed := false
		defer func() {
			if !closed {
				unix.Close(conn)
			}
		}()
		require.NoError(t, unix.SetsockoptInt(conn, unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10))

		// A receive that waits (the peer sends nothing), canceled.
		rq := submitPending(t, r, Recv(conn, make([]byte, 64), 0))
		require.NoError(t, rq.Cancel())
		c = reapOne(t, r)
		require.Equal(t, rq, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)

		var want []byte
		for i := 0; i < 3; i++ {
			msg := bytes.Repeat([]byte{byte('1' + i)}, part)
			want = append(want, msg...)
			c = doOp(t, r, Send(conn, msg, unix.MSG_WAITALL))
			require.NoError(t, c.Err, "send %d", i)
			require.Equal(t, part, c.N, "send %d whole", i)
		}
		c = doOp(t, r, Close(conn))
		require.NoError(t, c.Err, "the Close op")
		closed = true
		_, err = unix.FcntlInt(uintptr(conn), unix.F_GETFD, 0)
		assert.ErrorIs(t, err, unix.EBADF, "the Close op closed the caller's fd")

		// The consumer waits for completions meanwhile, as liburing's
		// did in cqring_wait: only the accept is pending, and it has
		// nothing to say.
		var cs [2]Completion
		n, err := r.Reap(cs[:], 200*time.Millisecond)
		require.NoError(t, err)
		assert.Zero(t, n, "no completion: %+v", cs[:n])

		select {
		case res := <-peer:
			assert.NoError(t, res.err, "the peer's read ends with the end of the stream, not an error (a timeout: the close was not final)")
			assert.Equal(t, len(want), len(res.data), "every byte sent")
			assert.True(t, bytes.Equal(want, res.data), "in order")
		case <-time.After(20 * time.Second):
			t.Fatal("the peer never saw the end of the stream")
		}

		require.NoError(t, acc.Cancel())
		c = reapOne(t, r)
		assert.Equal(t, acc, c.Req)
		assert.False(t, c.More)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assertSettled(t, r)
	})
}
