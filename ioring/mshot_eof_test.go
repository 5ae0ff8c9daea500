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
// The same on a registered file, whose fd the caller closed once it was
// registered.
func TestRecvMultishotEOFAfterDrain(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		for _, tc := range []struct {
			size  int
			fixed bool
		}{{1, false}, {2048, false}, {64 * 32 * 3, false}, {1, true}, {2048, true}, {64 * 32 * 3, true}} {
			size := tc.size
			br, err := r.NewBufRing(64, 32)
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no provided-buffer rings: %v", err)
			}
			a, b := socketpair(t, unix.SOCK_STREAM)
			recv := RecvMultishot(a, br, 0)
			if tc.fixed {
				require.NoError(t, r.RegisterFiles([]int{-1, a}))
				require.NoError(t, unix.Close(a)) // the ring's entry holds the socket
				recv = RecvMultishot(1, br, 0).FixedFile()
			}
			go func() {
				// More than the buffers hold: the receive waits for the
				// buffers given back, as a slow consumer makes it.
				_, _ = unix.Write(b, make([]byte, size))
				_ = unix.Shutdown(b, unix.SHUT_WR)
			}()
			before := r.Stats()
			q, err := r.Submit(recv)
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
				require.Equal(t, 1, n, "fixed %v size %d: %d bytes, then no completion within 10s", tc.fixed, size, got)
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
				require.ErrorIs(t, c.Err, unix.ENOBUFS, "fixed %v size %d", tc.fixed, size)
				for !c.Buffer || c.More || c.Err != nil {
					q, err = r.Submit(recv)
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
					require.ErrorIs(t, c.Err, unix.ENOBUFS, "fixed %v size %d", tc.fixed, size)
				}
			}
			require.NoError(t, c.Err, "fixed %v size %d: the final completion", tc.fixed, size)
			assert.Zero(t, c.N, "fixed %v size %d: the end of the stream", tc.fixed, size)
			assert.False(t, c.Buffer, "fixed %v size %d", tc.fixed, size)
			assert.Equal(t, size, got, "fixed %v size %d: every byte", tc.fixed, size)
			assert.ErrorIs(t, q.Cancel(), ErrNotFound, "fixed %v size %d: ended", tc.fixed, size)
			after := r.Stats()
			assert.Equal(t, before.Canceled, after.Canceled, "fixed %v size %d: no cancel of the caller's", tc.fixed, size)
			require.NoError(t, br.Close())
			if tc.fixed {
				require.NoError(t, r.UnregisterFiles())
			} else {
				require.NoError(t, unix.Close(a))
			}
			require.NoError(t, unix.Close(b))
		}
	})
}
