//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A deadline that fired before anyone reaped its request is the first
// cause, even while the ring has not yet taken its completion in: a
// Request.Cancel after it finds the request canceled already (ErrNotFound)
// or, when it returns nil, is the cause the completion reports. On
// io_uring the deadline is a linked timeout whose ETIME may wait in the
// completion ring while Cancel runs.
func TestConformanceCancelAfterDeadlineFired(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		for round := range 5 {
			q, err := r.Submit(Read(rd, make([]byte, 1), -1).WithDeadline(time.Millisecond))
			require.NoError(t, err)
			// Nobody reaps meanwhile: the deadline fires (in the kernel, on
			// io_uring) and its completion waits to be taken in.
			time.Sleep(20 * time.Millisecond)
			cerr := q.Cancel()
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if cerr == nil {
				assert.ErrorIs(t, c.Err, ErrCanceled, "round %d", round)
				assert.NotErrorIs(t, c.Err, ErrTimeout, "round %d: Request.Cancel returned nil, so its cancel is the first cause", round)
			} else {
				assert.ErrorIs(t, cerr, ErrNotFound, "round %d", round)
				assert.ErrorIs(t, c.Err, ErrTimeout, "round %d", round)
			}
		}
		assertSettled(t, r)
	})
}
