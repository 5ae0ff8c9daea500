//go:build linux

package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPortStatsCounts: after a known mix (cancels by request, token and
// CancelAll, deadlines, a token canceled before submission, a Do whose
// context had ended, which starts nothing), the counters say exactly
// that (cq-overflow's and fdinfo's counters, as a driver exports them).
func TestPortStatsCounts(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		tok := r.NewToken()
		q1 := submitPending(t, r, Read(rd, make([]byte, 8), 0))
		submitPending(t, r, Poll(rd, unix.POLLIN).WithToken(tok))
		submitPending(t, r, Read(rd, make([]byte, 8), -1))
		require.NoError(t, q1.Cancel())
		require.NoError(t, tok.Cancel())
		require.NoError(t, r.CancelAll())
		_, err := r.Submit(Nop().WithToken(tok)) // canceled at once
		require.NoError(t, err)
		_, err = r.Submit(Read(rd, make([]byte, 8), 0).WithDeadline(time.Millisecond))
		require.NoError(t, err)
		_, err = r.Submit(Poll(rd, unix.POLLIN).WithDeadline(time.Millisecond))
		require.NoError(t, err)
		_, err = r.Submit(Nop())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		c, err := r.Do(ctx, Nop())
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, context.Canceled)
		canceled, timedOut := 0, 0
		for range 7 {
			c := reapOne(t, r)
			switch {
			case c.Err == nil:
			case assert.ErrorIs(t, c.Err, ErrCanceled) && errIsTimeout(c.Err):
				timedOut++
			default:
				canceled++
			}
		}
		assert.Equal(t, 4, canceled)
		assert.Equal(t, 2, timedOut)
		assertNoMore(t, r)
		assertSettled(t, r)
		st := r.Stats()
		assert.EqualValues(t, 7, st.Submitted, "accepted (the Do with an ended context started nothing)")
		assert.EqualValues(t, 7, st.Completed)
		assert.EqualValues(t, 4, st.Canceled)
		assert.EqualValues(t, 2, st.TimedOut)
		assert.Zero(t, st.InFlight)
	})
}

func errIsTimeout(err error) bool {
	e, ok := err.(interface{ Timeout() bool })
	return ok && e.Timeout()
}

// TestPortStatsSubmittedTakenBackBatch: Stats.Submitted counts "the
// requests accepted". A SubmitBatch whose first op is on the io_uring fast
// path and whose second is not (a Timeout) is taken back and goes the
// general way; the slot the fast loop took for it before it stopped must
// not count as an accepted request (it did, with the generation it used
// up: Submitted and Completed grew by 3 for a batch of 2), nor must a
// batch refused for bad input.
func TestPortStatsSubmittedTakenBackBatch(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		ops := []Op{Nop(), Timeout(time.Microsecond)}
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		for range n {
			c := reapOne(t, r)
			assert.NoError(t, c.Err)
		}
		st := r.Stats()
		assert.EqualValues(t, 2, st.Submitted, "requests accepted")
		assert.EqualValues(t, 2, st.Completed, "requests completed")

		// A batch refused for bad input accepts nothing, yet counts the
		// fast loop's slot.
		_, err = r.SubmitBatch([]Op{Nop(), Read(-1, make([]byte, 8), 0)}, reqs)
		require.ErrorIs(t, err, ErrInvalid)
		st = r.Stats()
		assert.EqualValues(t, 2, st.Submitted, "a refused batch accepted nothing")
	})
}
