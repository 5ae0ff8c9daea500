//go:build linux

package ioring

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Many requests waiting on one file: each is armed, woken and canceled
// like a lone one. Half of them are canceled, then one byte wakes the
// rest. On the poll backend each new waiter used to walk all the others
// (30,000 polls of one pipe took 7 s under the race detector); it is
// linear now, as on io_uring.
func TestConformanceManyWaitersOneFile(t *testing.T) {
	const n = 30000
	forEachBackend(t, 32768, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		reqs := make([]Request, n)
		for i := range reqs {
			q, err := r.Submit(Poll(rd, unix.POLLIN))
			require.NoError(t, err, "poll %d", i)
			reqs[i] = q
		}
		canceled, err := r.Cancel(reqs[:n/2]...)
		require.NoError(t, err)
		require.Equal(t, n/2, canceled)
		_, err = unix.Write(wr, []byte{1})
		require.NoError(t, err)
		got := make(map[Request]Completion, n)
		var cs [256]Completion
		for len(got) < n {
			k, err := r.Reap(cs[:], -1)
			require.NoError(t, err)
			for _, c := range cs[:k] {
				_, dup := got[c.Req]
				require.False(t, dup, "one completion per request")
				got[c.Req] = c
			}
		}
		for i, q := range reqs {
			c, ok := got[q]
			require.True(t, ok, "poll %d completed", i)
			if i < n/2 {
				require.ErrorIs(t, c.Err, ErrCanceled, "poll %d", i)
			} else {
				require.NoError(t, c.Err, "poll %d", i)
				require.NotZero(t, c.N&unix.POLLIN, "poll %d: events %#x", i, c.N)
			}
		}
		assertNoMore(t, r)
		assert.Equal(t, uint64(n/2), r.Stats().Canceled)
	})
}

// BenchmarkWaitersOneFile submits, cancels and reaps one poll of a pipe
// that many other requests wait on. Its cost should not depend on how
// many: the poll backend's arm used to walk every waiter of the file on
// each submission.
func BenchmarkWaitersOneFile(b *testing.B) {
	for _, depth := range []int{16, 4096} {
		b.Run("waiting="+strconv.Itoa(depth), func(b *testing.B) {
			forEachBackendB(b, 8192, func(b *testing.B, r *Ring) {
				rd, _ := pipe(b)
				tok := r.NewToken()
				for range depth {
					if _, err := r.Submit(Poll(rd, unix.POLLIN).WithToken(tok)); err != nil {
						b.Fatal(err)
					}
				}
				op := Poll(rd, unix.POLLIN)
				var cs [1]Completion
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					q, err := r.Submit(op)
					if err != nil {
						b.Fatal(err)
					}
					if err := q.Cancel(); err != nil {
						b.Fatal(err)
					}
					if n, err := r.Reap(cs[:], -1); n != 1 || err != nil || cs[0].Req != q {
						b.Fatal(n, err)
					}
				}
				b.StopTimer()
				tok.Cancel()
				for left := depth; left > 0; {
					var more [256]Completion
					n, err := r.Reap(more[:], -1)
					if err != nil {
						b.Fatal(err)
					}
					left -= n
				}
			})
		})
	}
}
