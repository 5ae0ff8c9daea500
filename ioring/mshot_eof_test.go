//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestRecvMultishotEOFAfterDrain: a multishot receive that empties a
// stream whose peer has shut down ends with the end of the stream (0,
// nil), also where the kernel misses it (Linux 6.17 on: a receive that
// drains the socket in several rounds before its first wait). The ring's
// own cancel that ends it there is not a cancel of the caller's: Stats
// does not count it, and a later Request.Cancel finds nothing to cancel.
func TestRecvMultishotEOFAfterDrain(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		for _, size := range []int{1, 2048, 64 * 32 * 3} {
			br, err := r.NewBufRing(64, 32)
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no provided-buffer rings: %v", err)
			}
			a, b := socketpair(t, unix.SOCK_STREAM)
			go func() {
				// More than the buffers hold: the receive waits for the
				// buffers given back, as a slow consumer makes it.
				_, _ = unix.Write(b, make([]byte, size))
				_ = unix.Shutdown(b, unix.SHUT_WR)
			}()
			before := r.Stats()
			q, err := r.Submit(RecvMultishot(a, br, 0))
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no multishot receive: %v", err)
			}
			got := 0
			var c Completion
			deadline := time.Now().Add(10 * time.Second)
			for {
				var cs [1]Completion
				n, err := r.Reap(cs[:], time.Until(deadline))
				require.NoError(t, err)
				require.Equal(t, 1, n, "size %d: %d bytes, then no completion within 10s", size, got)
				c = cs[0]
				if c.Buffer {
					got += c.N
					require.NoError(t, br.Release(c.BufID))
				}
				if !c.More {
					break
				}
			}
			if c.Err != nil {
				// Out of buffers before the end (the kernel's ENOBUFS): a
				// receive submitted again goes on from there.
				require.ErrorIs(t, c.Err, unix.ENOBUFS, "size %d", size)
				for !c.Buffer || c.More || c.Err != nil {
					q, err = r.Submit(RecvMultishot(a, br, 0))
					require.NoError(t, err)
					for {
						c = reapOne(t, r)
						if c.Buffer {
							got += c.N
							require.NoError(t, br.Release(c.BufID))
						}
						if !c.More {
							break
						}
					}
					if c.Err == nil {
						break
					}
					require.ErrorIs(t, c.Err, unix.ENOBUFS, "size %d", size)
				}
			}
			require.NoError(t, c.Err, "size %d: the final completion", size)
			assert.Zero(t, c.N, "size %d: the end of the stream", size)
			assert.False(t, c.Buffer, "size %d", size)
			assert.Equal(t, size, got, "size %d: every byte", size)
			assert.ErrorIs(t, q.Cancel(), ErrNotFound, "size %d: ended", size)
			after := r.Stats()
			assert.Equal(t, before.Canceled, after.Canceled, "size %d: no cancel of the caller's", size)
			require.NoError(t, br.Close())
			require.NoError(t, unix.Close(a))
			require.NoError(t, unix.Close(b))
		}
	})
}
