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

// Ported from liburing's buf-ring, buf-ring-nommap, recv-multishot,
// recvsend_bundle (the parts without bundles) and accept-multishot tests:
// provided buffers run out (ENOBUFS, once, final), a stream ends (0,
// final), nothing is lost across a resubmission, and buffer bookkeeping
// refuses misuse.

// portRecvAll reaps q's completions until its final one, releasing each
// buffer after copying its bytes, and returns the bytes and the final
// completion.
func portRecvAll(t *testing.T, r *Ring, br *BufRing, q Request, release bool) ([]byte, Completion, []uint16) {
	t.Helper()
	var data []byte
	var held []uint16
	for {
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		if c.Buffer {
			data = append(data, br.Bytes(c)...)
			if release {
				require.NoError(t, br.Release(c.BufID))
			} else {
				held = append(held, c.BufID)
			}
		}
		if !c.More {
			return data, c, held
		}
		assert.NoError(t, c.Err, "a completion with More carries no error")
	}
}

// TestPortBufRingRunsOut: a stream receive with two buffers that nobody
// gives back ends with ENOBUFS once both are out; the data that did not
// fit stays in the socket and a new receive, after the buffers are
// released, gets it: nothing lost, nothing twice (buf-ring ENOBUFS).
func TestPortBufRingRunsOut(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		br, err := r.NewBufRing(2, 4)
		require.NoError(t, err)
		defer br.Close()
		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		var want []byte
		for i := range 4 {
			msg := []byte{byte('a' + i), byte('a' + i), byte('a' + i), byte('a' + i)}
			want = append(want, msg...)
			_, err := unix.Write(b, msg)
			require.NoError(t, err)
			time.Sleep(2 * time.Millisecond)
		}
		got, final, held := portRecvAll(t, r, br, q, false)
		assert.ErrorIs(t, final.Err, unix.ENOBUFS, "final %+v", final)
		assert.False(t, final.More)
		assert.LessOrEqual(t, len(held), 2)
		assert.False(t, q.Pending())
		assert.ErrorIs(t, q.Cancel(), ErrNotFound)
		for _, id := range held {
			require.NoError(t, br.Release(id))
			assert.ErrorIs(t, br.Release(id), ErrInvalid, "released twice")
		}
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		// Receive again until the end of the stream; a receive may run
		// out again before a release reaches the ring, and then ends with
		// ENOBUFS, which another one resumes.
		for i := 0; ; i++ {
			require.Less(t, i, 20, "the end of the stream after 20 receives")
			q, err = r.Submit(RecvMultishot(a, br, 0))
			require.NoError(t, err)
			rest, final, _ := portRecvAll(t, r, br, q, true)
			got = append(got, rest...)
			if final.Err == nil {
				assert.Zero(t, final.N, "the end of the stream")
				break
			}
			require.ErrorIs(t, final.Err, unix.ENOBUFS)
		}
		assert.Equal(t, want, got, "every byte once, in order")
		assertNoMore(t, r)
	})
}

// TestPortBufRingSmallBuffers: a stream message larger than a buffer is
// spread over buffers in order (recv-multishot with small buffers); a
// datagram larger than a buffer is truncated to it.
func TestPortBufRingSmallBuffers(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		br, err := r.NewBufRing(8, 3)
		require.NoError(t, err)
		defer br.Close()
		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		msg := []byte("0123456789")
		_, err = unix.Write(b, msg)
		require.NoError(t, err)
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		got, final, _ := portRecvAll(t, r, br, q, true)
		assert.NoError(t, final.Err)
		assert.Equal(t, msg, got)

		da, db := socketpair(t, unix.SOCK_DGRAM)
		q, err = r.Submit(RecvMultishot(da, br, 0))
		require.NoError(t, err)
		_, err = unix.Write(db, []byte("abcdefgh"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.True(t, c.Buffer, "%+v", c)
		assert.Equal(t, 3, c.N, "a datagram truncated to its buffer")
		assert.Equal(t, "abc", string(br.Bytes(c)))
		require.NoError(t, br.Release(c.BufID))
		require.NoError(t, q.Cancel())
		for {
			c := reapOne(t, r)
			if c.Buffer {
				require.NoError(t, br.Release(c.BufID))
			}
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrCanceled)
				break
			}
		}
		assertNoMore(t, r)
	})
}

// TestPortBufRingMisuse: bad sizes, releases of buffers that are not the
// caller's, a BufRing of another ring, a closed one, and Close while a
// receive uses it.
func TestPortBufRingMisuse(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, cs := range [][2]int{{0, 8}, {3, 8}, {65536, 8}, {-2, 8}, {2, 0}, {2, -1}, {4, 1 << 29}} {
			_, err := r.NewBufRing(cs[0], cs[1])
			assert.ErrorIs(t, err, ErrInvalid, "NewBufRing(%d, %d)", cs[0], cs[1])
		}
		br, err := r.NewBufRing(4, 16)
		require.NoError(t, err)
		assert.ErrorIs(t, br.Release(0), ErrInvalid, "never handed out")
		assert.ErrorIs(t, br.Release(4), ErrInvalid, "out of range")
		assert.ErrorIs(t, br.Release(65535), ErrInvalid, "out of range")
		assert.Nil(t, br.Buf(4))
		assert.Nil(t, br.Bytes(Completion{N: 5}), "no buffer")
		assert.Nil(t, br.Bytes(Completion{Buffer: true, BufID: 9, N: 5}), "out of range")

		other, err := New(Config{Entries: 4, Backend: r.Backend().Backend})
		require.NoError(t, err)
		obr, err := other.NewBufRing(2, 8)
		require.NoError(t, err)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		_, err = r.Submit(RecvMultishot(a, obr, 0))
		assert.ErrorIs(t, err, ErrInvalid, "a BufRing of another ring")
		_, err = r.Submit(RecvMultishot(a, nil, 0))
		assert.ErrorIs(t, err, ErrInvalid, "no BufRing")
		_, err = r.Submit(RecvMultishot(a, &BufRing{}, 0))
		assert.ErrorIs(t, err, ErrInvalid, "a zero BufRing")
		require.NoError(t, other.Close())
		assert.ErrorIs(t, obr.Close(), ErrClosed)

		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		assert.ErrorIs(t, br.Close(), unix.EBUSY, "in use")
		require.NoError(t, q.Cancel())
		_, final, _ := portRecvAll(t, r, br, q, true)
		assert.ErrorIs(t, final.Err, ErrCanceled)
		require.NoError(t, br.Close())
		assert.ErrorIs(t, br.Close(), ErrClosed)
		_, err = r.Submit(RecvMultishot(a, br, 0))
		assert.ErrorIs(t, err, ErrInvalid, "a closed BufRing")
		assert.ErrorIs(t, (*BufRing)(nil).Close(), ErrInvalid)
		assert.ErrorIs(t, (&BufRing{}).Release(0), ErrInvalid)

		// Its group is free again: a new BufRing works.
		br2, err := r.NewBufRing(2, 8)
		require.NoError(t, err)
		q, err = r.Submit(RecvMultishot(a, br2, 0))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		_, final, _ = portRecvAll(t, r, br2, q, true)
		assert.ErrorIs(t, final.Err, ErrCanceled)
		require.NoError(t, br2.Close())
		assertNoMore(t, r)
	})
}

// TestPortBufRingTwoReceivers: two receives share one BufRing; each
// buffer is handed to one completion at a time, and the data of both
// streams arrives whole.
func TestPortBufRingTwoReceivers(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		a1, b1 := socketpair(t, unix.SOCK_STREAM)
		a2, b2 := socketpair(t, unix.SOCK_STREAM)
		br, err := r.NewBufRing(8, 8)
		require.NoError(t, err)
		defer br.Close()
		q1, err := r.Submit(RecvMultishot(a1, br, 0).WithUser(1))
		require.NoError(t, err)
		q2, err := r.Submit(RecvMultishot(a2, br, 0).WithUser(2))
		require.NoError(t, err)
		var w1, w2 []byte
		for i := range 20 {
			m1 := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i%5)
			m2 := bytes.Repeat([]byte{byte('A' + i%26)}, 1+i%7)
			w1, w2 = append(w1, m1...), append(w2, m2...)
			_, err := unix.Write(b1, m1)
			require.NoError(t, err)
			_, err = unix.Write(b2, m2)
			require.NoError(t, err)
		}
		require.NoError(t, unix.Shutdown(b1, unix.SHUT_WR))
		require.NoError(t, unix.Shutdown(b2, unix.SHUT_WR))
		got := map[int][]byte{}
		out := map[uint16]bool{}
		finals := map[int]Completion{}
		for len(finals) < 2 {
			c := reapOne(t, r)
			u := c.User.(int)
			if c.Buffer {
				require.False(t, out[c.BufID], "buffer %d handed out twice", c.BufID)
				got[u] = append(got[u], br.Bytes(c)...)
				require.NoError(t, br.Release(c.BufID))
			}
			if !c.More {
				_, dup := finals[u]
				require.False(t, dup, "two final completions for %d", u)
				finals[u] = c
			}
		}
		for u, c := range finals {
			if c.Err != nil {
				// ENOBUFS when the buffers ran out under the other
				// receive: then the rest is still in the socket.
				assert.ErrorIs(t, c.Err, unix.ENOBUFS, "receive %d", u)
			}
		}
		if finals[1].Err == nil {
			assert.Equal(t, w1, got[1])
		}
		if finals[2].Err == nil {
			assert.Equal(t, w2, got[2])
		}
		assert.False(t, q1.Pending())
		assert.False(t, q2.Pending())
		assertNoMore(t, r)
	})
}
