//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A multishot request whose consumer does not reap ends with ErrOverrun on
// every backend, whichever bound it reaches first: on io_uring with 4
// entries the kernel's completion ring (16 results) fills long before
// maxUndelivered, and the kernel ends the request on the result it could not
// post; the poll backend reaches maxUndelivered. Nothing is lost either way:
// that last result is delivered, with More set, before the final
// completion.
func TestConformanceMultishotCQFull(t *testing.T) {
	saved := maxUndelivered
	maxUndelivered = 24
	t.Cleanup(func() { maxUndelivered = saved })

	// reapAll reaps q's completions until its final one, which it returns
	// with the others.
	reapAll := func(t *testing.T, r *Ring, q Request) (shots []Completion, final Completion) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var cs [8]Completion
			n, err := r.Reap(cs[:], 20*time.Millisecond)
			require.NoError(t, err)
			for _, c := range cs[:n] {
				require.Equal(t, q, c.Req)
				if !c.More {
					return shots, c
				}
				shots = append(shots, c)
			}
		}
		require.FailNow(t, "no final completion", "after %d results", len(shots))
		return
	}

	t.Run("poll", func(t *testing.T) {
		forEachBackend(t, 4, func(t *testing.T, r *Ring) {
			efd := eventFD(t)
			q, err := r.Submit(PollMultishot(efd, unix.POLLIN))
			require.NoError(t, err)
			// Each signal wakes the poll; the ones that come before the
			// last is taken in (a loaded machine) make one result, so
			// there are more than enough.
			for range 400 {
				signal(t, efd)
				time.Sleep(200 * time.Microsecond)
			}
			shots, final := reapAll(t, r, q)
			assert.ErrorIs(t, final.Err, ErrOverrun)
			assert.NotErrorIs(t, final.Err, ErrCanceled)
			assert.Zero(t, final.N)
			assert.GreaterOrEqual(t, len(shots), 2)
			for _, c := range shots {
				assert.NoError(t, c.Err)
				assert.NotZero(t, c.N&unix.POLLIN, "events %#x", c.N)
			}
			st := r.Stats()
			assert.Zero(t, st.Canceled, "an overrun is not a cancel")
			assertNoMore(t, r)
		})
	})

	t.Run("accept", func(t *testing.T) {
		forEachBackend(t, 4, func(t *testing.T, r *Ring) {
			const conns = 60
			l, sa := tcpListener(t, conns+4, 0)
			q, err := r.Submit(AcceptMultishot(l, unix.SOCK_NONBLOCK))
			require.NoError(t, err)
			var clients []int
			t.Cleanup(func() {
				for _, fd := range clients {
					unix.Close(fd)
				}
			})
			for range conns {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				clients = append(clients, fd)
				require.NoError(t, unix.Connect(fd, sa))
				time.Sleep(200 * time.Microsecond)
			}
			shots, final := reapAll(t, r, q)
			assert.ErrorIs(t, final.Err, ErrOverrun)
			assert.Zero(t, final.N)
			accepted := 0
			for _, c := range shots {
				if assert.NoError(t, c.Err) && assert.Greater(t, c.N, 0) {
					accepted++
					unix.Close(c.N)
				}
			}
			// The connections the request did not take wait on the
			// listener: none was taken and dropped.
			require.NoError(t, unix.SetNonblock(l, true))
			for {
				fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
				if err != nil {
					assert.ErrorIs(t, err, unix.EAGAIN)
					break
				}
				accepted++
				unix.Close(fd)
			}
			assert.Equal(t, conns, accepted, "every connection accepted once")
			assertNoMore(t, r)
		})
	})

	t.Run("recv", func(t *testing.T) {
		forEachBackend(t, 4, func(t *testing.T, r *Ring) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
			br, err := r.NewBufRing(128, 64)
			require.NoError(t, err)
			q, err := r.Submit(RecvMultishot(fds[0], br, 0))
			require.NoError(t, err)
			var sent []byte
			for i := range 100 {
				msg := []byte{byte(i), byte(i), byte(i)}
				_, err := unix.Write(fds[1], msg)
				require.NoError(t, err)
				sent = append(sent, msg...)
				time.Sleep(300 * time.Microsecond)
			}
			shots, final := reapAll(t, r, q)
			assert.ErrorIs(t, final.Err, ErrOverrun)
			assert.False(t, final.Buffer, "the last data came with More set")
			var got []byte
			for _, c := range shots {
				require.NoError(t, c.Err)
				require.True(t, c.Buffer)
				got = append(got, br.Bytes(c)...)
				require.NoError(t, br.Release(c.BufID))
			}
			// What the request did not take waits on the socket.
			var rest [4096]byte
			for {
				n, _, err := unix.Recvfrom(fds[0], rest[:], unix.MSG_DONTWAIT)
				if err != nil || n == 0 {
					break
				}
				got = append(got, rest[:n]...)
			}
			assert.Equal(t, sent, got, "every byte received once, in order")
			assertNoMore(t, r)
			assert.NoError(t, br.Close())
		})
	})
}
