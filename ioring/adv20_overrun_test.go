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

// TestAdv20CancelThenOverrunKeepsFirstCause: the contract's first rule says
// the first cancel of a request is the one that counts, and its completion
// reports that first cause. A multishot request that its caller canceled
// (Request.Cancel returned nil) must therefore end with ErrCanceled, even
// when results that came before the cancel took effect push it past
// MaxUndelivered on their way in: the ring's overrun cancel comes second
// and finds the request canceled already. Conversely, when the overrun
// came first, Request.Cancel says ErrNotFound and the final completion
// carries ErrOverrun. On io_uring the wake-ups wait in the kernel's
// completion ring until the first reap, so the user's cancel is recorded
// before the ring counts them.
func TestAdv20CancelThenOverrunKeepsFirstCause(t *testing.T) {
	saved := maxUndelivered
	maxUndelivered = 8
	t.Cleanup(func() { maxUndelivered = saved })
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		q, err := r.Submit(PollMultishot(efd, unix.POLLIN))
		require.NoError(t, err)
		for range 24 { // fewer than the 4×16 the kernel's CQ holds
			signal(t, efd)
			time.Sleep(300 * time.Microsecond)
		}
		cerr := q.Cancel()
		shots := 0
		var final Completion
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if !c.More {
				final = c
				break
			}
			shots++
		}
		t.Logf("Cancel: %v; %d results, then %v", cerr, shots, final.Err)
		switch {
		case cerr == nil:
			assert.ErrorIs(t, final.Err, ErrCanceled,
				"Request.Cancel returned nil (the first cancel), so the final completion must report it, not the ring's later overrun (%d results were waiting)", shots)
			assert.False(t, errors.Is(final.Err, ErrOverrun),
				"the caller's cancel came first; the overrun found the request canceled already: %v", final.Err)
		case errors.Is(cerr, ErrNotFound):
			assert.ErrorIs(t, final.Err, ErrOverrun, "the overrun came first (Cancel said ErrNotFound)")
		default:
			t.Errorf("Cancel: %v", cerr)
		}
		assertNoMore(t, r)
	})
}
