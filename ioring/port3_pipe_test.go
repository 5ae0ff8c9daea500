//go:build linux

package ioring

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's pipe-reuse test: a pipe read through a few
// buffers that are handed to the ring again as soon as their completions
// are delivered, while a writer fills the pipe.

// TestPort3PipeReuseBuffers checks that a stream read by a window of
// three reads at the current position, whose buffers are reused the
// moment their completions are delivered and some of which are canceled
// at random, yields exactly the bytes written, in order: every completion
// with data comes in submission order (the stream's order), a canceled
// read moves nothing, and no buffer is written after its completion (the next
// chunk of data in it would break the sequence).
func TestPort3PipeReuseBuffers(t *testing.T) {
	const total = 1 << 20
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		rng := rand.New(rand.NewPCG(3, 3))
		done := make(chan error, 1)
		go func() {
			src := make([]byte, 7919)
			sent := 0
			for sent < total {
				n := min(len(src), total-sent)
				for i := range src[:n] {
					src[i] = byte((sent + i) % 251)
				}
				k, err := unix.Write(wr, src[:n])
				if err != nil {
					done <- err
					return
				}
				sent += k
			}
			done <- nil
		}()
		const window = 3
		type read struct {
			q   Request
			buf []byte
		}
		bufs := make([][]byte, window)
		for i := range bufs {
			bufs[i] = make([]byte, 4096)
		}
		out := map[int]read{} // by submission number
		seq := 0
		submit := func(buf []byte) {
			q, err := r.Submit(Read(rd, buf, -1).WithUser(seq))
			require.NoError(t, err)
			out[seq] = read{q, buf}
			seq++
		}
		for i := range bufs {
			submit(bufs[i])
		}
		got, lastOK := 0, -1
		for got < total {
			if rng.IntN(8) == 0 {
				for _, o := range out {
					o.q.Cancel() // any one of them
					break
				}
			}
			c := reapOne(t, r)
			k := c.User.(int)
			o, ok := out[k]
			require.True(t, ok, "one completion per read: %+v", c)
			delete(out, k)
			require.Equal(t, o.q, c.Req)
			if c.Err != nil {
				require.ErrorIs(t, c.Err, ErrCanceled)
				assert.Zero(t, c.N)
			} else {
				require.Greater(t, k, lastOK, "reads with data complete in submission order")
				lastOK = k
				require.Positive(t, c.N, "the writer has not closed the pipe")
				for j, b := range o.buf[:c.N] {
					if b != byte((got+j)%251) {
						t.Fatalf("byte %d of the stream is %d, want %d", got+j, b, (got+j)%251)
					}
				}
				got += c.N
			}
			// Reuse the buffer at once, poisoned so that a late write
			// into it would show.
			for j := range o.buf {
				o.buf[j] = 0xee
			}
			if got < total {
				submit(o.buf)
			}
		}
		require.NoError(t, <-done)
		assert.Equal(t, total, got)
		// The reads still out wait for data that never comes.
		for _, o := range out {
			if err := o.q.Cancel(); err != nil {
				require.ErrorIs(t, err, ErrNotFound, "canceled already, at random")
			}
		}
		for range out {
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.Contains(t, out, c.User)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}
