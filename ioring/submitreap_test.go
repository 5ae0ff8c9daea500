//go:build linux

package ioring

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSubmitAndReap: SubmitAndReap is SubmitBatch then Reap in one call,
// on both backends: lone ops (the io_uring fast path) and batches, an
// empty ops (only a reap), and every refusal (nothing reaped then).
func TestSubmitAndReap(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		data := []byte("0123456789abcdef")
		fd := tempFile(t, data)
		dst := make([]Completion, 8)

		// Lone ops, again and again: each one's completion comes back in
		// the same call (a NOP and a page-cache read complete at once
		// on io_uring; the poll backend's reap waits for its worker).
		for i := range 20 {
			buf := make([]byte, 4)
			off := int64(i%4) * 4
			ops := []Op{Read(fd, buf, off).WithUser(i)}
			reqs := make([]Request, 1)
			m, n, err := r.SubmitAndReap(ops, reqs, dst, 10*time.Second)
			require.NoError(t, err)
			require.Equal(t, 1, m)
			require.Equal(t, 1, n, "the read's completion, within 10s")
			c := dst[0]
			assert.Equal(t, reqs[0], c.Req)
			assert.Equal(t, OpRead, c.Op)
			assert.Equal(t, i, c.User)
			require.NoError(t, c.Err)
			assert.Equal(t, 4, c.N)
			assert.Equal(t, data[off:off+4], buf)
		}
		require.Zero(t, r.InFlight())

		// A batch: at least one completion in the call, the rest by Reap.
		ops := []Op{Nop().WithUser(0), Nop().WithUser(1), Nop().WithUser(2)}
		reqs := make([]Request, 3)
		m, n, err := r.SubmitAndReap(ops, reqs, dst, 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, 3, m)
		require.NotZero(t, n)
		seen := map[any]bool{}
		for _, c := range dst[:n] {
			seen[c.User] = true
		}
		for got := n; got < 3; {
			k, err := r.Reap(dst, 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, k)
			for _, c := range dst[:k] {
				seen[c.User] = true
			}
			got += k
		}
		assert.Len(t, seen, 3)

		// No ops: a reap, here of nothing.
		m, n, err = r.SubmitAndReap(nil, nil, dst, 0)
		require.NoError(t, err)
		assert.Zero(t, m)
		assert.Zero(t, n)

		// A read that waits (an empty pipe): submitted, nothing to reap
		// within the timeout; the completion comes later through Reap.
		rd, wr := pipe(t)
		pbuf := make([]byte, 1)
		m, n, err = r.SubmitAndReap([]Op{Read(rd, pbuf, -1)}, make([]Request, 1), dst, 0)
		require.NoError(t, err)
		assert.Equal(t, 1, m)
		assert.Zero(t, n)
		assert.Equal(t, 1, r.InFlight())

		// Refusals reap nothing, not even the completion now due.
		_, err = unix.Write(wr, []byte{'x'})
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond)
		m, n, err = r.SubmitAndReap([]Op{Nop()}, reqs, nil, 0)
		require.ErrorIs(t, err, ErrInvalid, "an empty dst")
		assert.Zero(t, m+n)
		m, n, err = r.SubmitAndReap([]Op{Read(-7, pbuf, 0)}, reqs, dst, 0)
		require.ErrorIs(t, err, ErrInvalid, "a bad op")
		assert.Zero(t, m+n)
		m, n, err = r.SubmitAndReap([]Op{Nop()}, nil, dst, 0)
		require.ErrorIs(t, err, ErrInvalid, "no room for the Request")
		assert.Zero(t, m+n)
		n, err = r.Reap(dst, 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		assert.Equal(t, 1, dst[0].N)

		// A full ring: ErrFull, nothing counted in flight.
		for range 8 {
			_, err := r.Submit(Read(rd, make([]byte, 1), -1))
			require.NoError(t, err)
		}
		m, n, err = r.SubmitAndReap([]Op{Nop()}, reqs, dst, 0)
		require.ErrorIs(t, err, ErrFull)
		assert.Zero(t, m+n)
		assert.Equal(t, 8, r.InFlight())
		_, err = unix.Write(wr, make([]byte, 8))
		require.NoError(t, err)
		for got := 0; got < 8; {
			k, err := r.Reap(dst, 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, k)
			got += k
		}

		// A completion queued outside the kernel (a canceled token's)
		// comes out too, beside the new op's.
		tok := r.NewToken()
		require.NoError(t, tok.Cancel())
		_, err = r.Submit(Read(rd, pbuf, -1).WithToken(tok).WithUser("canceled"))
		require.NoError(t, err)
		m, n, err = r.SubmitAndReap([]Op{Nop().WithUser("nop")}, reqs, dst, 10*time.Second)
		require.NoError(t, err)
		require.Equal(t, 1, m)
		got := map[any]error{}
		for _, c := range dst[:n] {
			got[c.User] = c.Err
		}
		for len(got) < 2 {
			k, err := r.Reap(dst, 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, k)
			for _, c := range dst[:k] {
				got[c.User] = c.Err
			}
		}
		assert.NoError(t, got["nop"])
		assert.True(t, errors.Is(got["canceled"], ErrCanceled), "%v", got["canceled"])

		// A closed ring: ErrClosed, from the submission.
		require.NoError(t, r.Close())
		m, n, err = r.SubmitAndReap([]Op{Nop()}, reqs, dst, 0)
		require.ErrorIs(t, err, ErrClosed)
		assert.Zero(t, m+n)
	})
}
