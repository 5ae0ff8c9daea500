//go:build linux

package ioring

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv20DrainedBy waits (up to 10 s) until stream socket fd has nothing to
// read: a multishot receive on it took what was written.
func adv20DrainedBy(t *testing.T, fd int) {
	t.Helper()
	var one [1]byte
	end := time.Now().Add(10 * time.Second)
	for {
		_, _, err := unix.Recvfrom(fd, one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return
		}
		require.True(t, time.Now().Before(end), "the receive did not take the data")
		time.Sleep(time.Millisecond)
	}
}

// adv20Settle lets the ring take in what the kernel has posted: a
// single-shot nop waited for with Start/Wait runs the io_uring reaper over
// the completion ring (results of other requests are queued for Reap, not
// delivered), and is harmless on the poll backend, whose poller records
// results as they happen.
func adv20Settle(t *testing.T, r *Ring) {
	t.Helper()
	q, err := r.Start(Nop())
	require.NoError(t, err)
	c, err := q.Wait(context.Background())
	require.NoError(t, err)
	require.NoError(t, c.Err)
}

// TestAdv20BufRingDoubleReleaseRefused: BufRing.Release documents that
// "releasing a buffer that is not the caller's (never handed over, or
// released already) is refused with ErrInvalid". A caller that releases
// buffer 0 twice by mistake, after the ring put it back to work and took
// new data into it but before the completion that hands it over again has
// been reaped, must get ErrInvalid: the buffer is not the caller's at that
// moment. Accepting the second Release gives the buffer back to the
// kernel while a completion that has not been delivered yet still names
// it, so the next message overwrites data nobody read yet (observed: the
// completion for "b" reads "c") and the same buffer is handed out twice.
func TestAdv20BufRingDoubleReleaseRefused(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(1, 16)
		require.NoError(t, err)
		a, b := socketpair(t, unix.SOCK_STREAM)
		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)

		_, err = unix.Write(b, []byte("a"))
		require.NoError(t, err)
		c := reapMore(t, r, q)
		require.True(t, c.Buffer)
		require.Equal(t, "a", string(br.Bytes(c)))
		id := c.BufID
		require.NoError(t, br.Release(id), "first release")

		// The ring fills buffer id again; its completion is not reaped.
		_, err = unix.Write(b, []byte("b"))
		require.NoError(t, err)
		adv20DrainedBy(t, a)
		adv20Settle(t, r)
		second := br.Release(id)
		// Retry for a moment: the poll backend's poller records the
		// result a moment after it drained the socket.
		for end := time.Now().Add(200 * time.Millisecond); second != nil && time.Now().Before(end); {
			time.Sleep(2 * time.Millisecond)
			second = br.Release(id)
		}
		assert.ErrorIs(t, second, ErrInvalid,
			"buffer %d released twice: the second Release came before the completion that hands it over again was reaped", id)

		if second == nil {
			// What the second Release did: the next message lands in
			// the buffer the undelivered "b" completion names. (Refused,
			// the one buffer stays with "b" and "c" cannot be taken.)
			_, err = unix.Write(b, []byte("c"))
			require.NoError(t, err)
			adv20DrainedBy(t, a)
			adv20Settle(t, r)
		}
		require.NoError(t, q.Cancel())
		var got []string
		var ids []uint16
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if c.Buffer {
				got = append(got, string(br.Bytes(c)))
				ids = append(ids, c.BufID)
			}
			if !c.More {
				break
			}
		}
		if second == nil {
			t.Errorf("after the accepted second Release the undelivered completions read %q (buffers %v), want \"b\" first", got, ids)
		} else if assert.NotEmpty(t, got) {
			assert.Equal(t, "b", got[0], "the completion that took \"b\"")
			assert.NoError(t, br.Release(ids[0]), "delivered, the buffer is the caller's")
		}
		assertSettled(t, r)
	})
}

// TestAdv20BufRingCloseBeforeFinalDelivered: the contract says a
// multishot request's "slot, its buffers and its BufRing stay the ring's
// until the final completion is delivered", and BufRing.Close "fails with
// an error wrapping EBUSY while a RecvMultishot on it is in flight (cancel
// it, and take its final completion first)". A Close after the cancel but
// before the final completion (and a result with a buffer before it) has
// been reaped must therefore fail with EBUSY; once the final completion is
// taken it must succeed, and the buffer the undelivered result carried
// stays readable.
func TestAdv20BufRingCloseBeforeFinalDelivered(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(2, 16)
		require.NoError(t, err)
		a, b := socketpair(t, unix.SOCK_STREAM)
		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("data"))
		require.NoError(t, err)
		adv20DrainedBy(t, a)
		require.NoError(t, q.Cancel())
		adv20Settle(t, r) // the ring has taken in the result and the final completion

		early := br.Close()
		assert.ErrorIs(t, early, unix.EBUSY,
			"BufRing.Close while the receive's results (and its final completion) wait for Reap")

		var got []byte
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			got = append(got, br.Bytes(c)...)
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrCanceled)
				break
			}
		}
		assert.Equal(t, "data", string(got))
		if early != nil {
			assert.NoError(t, br.Close(), "Close after the final completion was taken")
		} else {
			assert.True(t, errors.Is(br.Close(), ErrClosed))
		}
	})
}
