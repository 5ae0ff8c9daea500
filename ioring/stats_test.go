//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestConformanceStats(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		st0 := r.Stats()
		assert.Zero(t, st0.Submitted)
		for i := 0; i < 10; i++ {
			doOp(t, r, Nop())
		}
		rd, _ := pipe(t)
		q, err := r.Submit(Read(rd, make([]byte, 4), -1))
		require.NoError(t, err)
		st := r.Stats()
		assert.Equal(t, uint64(11), st.Submitted)
		assert.Equal(t, uint64(10), st.Completed)
		assert.Equal(t, 1, st.InFlight)
		require.NoError(t, q.Cancel())
		assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
		c := doOp(t, r, Read(rd, make([]byte, 4), -1).WithDeadline(time.Millisecond))
		assert.ErrorIs(t, c.Err, ErrTimeout)
		tok := r.NewToken()
		tok.Cancel()
		doOp(t, r, Nop().WithToken(tok))
		var stx unix.Statx_t
		doOp(t, r, Statx(unix.AT_FDCWD, "/", 0, unix.STATX_TYPE, &stx))

		st = r.Stats()
		assert.Equal(t, uint64(14), st.Submitted)
		assert.Equal(t, uint64(14), st.Completed)
		assert.Zero(t, st.InFlight)
		assert.Equal(t, uint64(2), st.Canceled, "cancel and token")
		assert.Equal(t, uint64(1), st.TimedOut)
		assert.Zero(t, st.CQOverflows)
		if r.Backend().Backend == BackendURing {
			assert.Positive(t, st.KernelEnters)
			assert.Nil(t, st.Fallbacks)
		} else {
			assert.Zero(t, st.KernelEnters)
			assert.Equal(t, uint64(1), st.Fallbacks[OpStatx], "statx ran on a worker: %v", st.Fallbacks)
		}
		require.NoError(t, r.Close())
		after := r.Stats()
		assert.Equal(t, st.Submitted, after.Submitted, "readable after Close")
	})
}

// TestStatsKernelEnters counts the system calls of submissions: each
// SubmitBatch hands its batch over in one io_uring_enter, made after the
// submit lock is released, and reaping without waiting makes none.
func TestStatsKernelEnters(t *testing.T) {
	r, err := New(Config{Entries: 16, Backend: BackendURing})
	require.NoError(t, err)
	defer r.Close()
	ops := []Op{Nop(), Nop(), Nop()}
	reqs := make([]Request, len(ops))
	dst := make([]Completion, len(ops))
	before := r.Stats().KernelEnters
	const batches = 20
	for i := 0; i < batches; i++ {
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		for got := 0; got < n; {
			k, err := r.Reap(dst, 0)
			require.NoError(t, err)
			got += k
		}
	}
	assert.Equal(t, uint64(batches), r.Stats().KernelEnters-before)
}
