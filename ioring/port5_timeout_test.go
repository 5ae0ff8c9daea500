//go:build linux

package ioring

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Fifth round, Timeout operations: ported from liburing's timeout test
// (test_single_timeout, _nr, _many, test_multi_timeout, the remove
// cases and the link cases). A Timeout is a pure timer: it completes
// with 0 when its duration has passed, never sooner, whatever else
// completes meanwhile (io_uring's timeout takes a completion count, and
// one left at 1 would end it at the next completion of any request);
// several complete in the order of their durations; a cancel, a token or
// a deadline ends one early. Only lower bounds on time are asserted: a
// loaded machine may be late, never early.

// port5ReapUntil reaps one completion and returns it with the time it
// arrived.
func port5ReapUntil(t *testing.T, r *Ring) (Completion, time.Time) {
	t.Helper()
	c := reapOne(t, r)
	return c, time.Now()
}

// TestPort5TimeoutNotEndedByOthers: a Timeout of 600ms is still pending
// after a burst of nops, reads and another, short, Timeout have
// completed (test_single_timeout_nr's count: none is given), and then
// completes with 0, no error, not before its 600ms.
func TestPort5TimeoutNotEndedByOthers(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		const d = 600 * time.Millisecond
		start := time.Now()
		q, err := r.Submit(Timeout(d).WithUser("long"))
		require.NoError(t, err)
		data := tempFile(t, []byte("some data"))
		var ops []Op
		for i := range 32 {
			if i%2 == 0 {
				ops = append(ops, Nop())
			} else {
				ops = append(ops, Read(data, make([]byte, 4), 0))
			}
		}
		ops = append(ops, Timeout(time.Millisecond))
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, len(ops), n)
		for range ops {
			c := reapOne(t, r)
			require.NotEqual(t, q, c.Req, "the long timeout ended by others' completions after %v", time.Since(start))
			require.NoError(t, c.Err)
		}
		require.True(t, q.Pending())
		c, at := port5ReapUntil(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err, "a timeout that ran its course")
		assert.Zero(t, c.N)
		assert.GreaterOrEqual(t, at.Sub(start), d, "completed early")
		assertNoMore(t, r)
	})
}

// TestPort5TimeoutOrder: a long Timeout submitted before a short one
// (test_multi_timeout): the short one completes first, and neither
// before its duration. Then 48 Timeouts of random durations up to
// 300ms, in one batch (test_single_timeout_many): each completes once,
// with 0, no sooner than its duration after the batch was submitted.
func TestPort5TimeoutOrder(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		const short, long = 100 * time.Millisecond, 1500 * time.Millisecond
		start := time.Now()
		ql, err := r.Submit(Timeout(long).WithUser("long"))
		require.NoError(t, err)
		qs, err := r.Submit(Timeout(short).WithUser("short"))
		require.NoError(t, err)
		c, at := port5ReapUntil(t, r)
		require.Equal(t, qs, c.Req, "the short timeout first, got %v", c.User)
		require.NoError(t, c.Err)
		assert.GreaterOrEqual(t, at.Sub(start), short)
		c, at = port5ReapUntil(t, r)
		require.Equal(t, ql, c.Req)
		require.NoError(t, c.Err)
		assert.GreaterOrEqual(t, at.Sub(start), long)

		rng := rand.New(rand.NewPCG(7, 7))
		const n = 48
		ops := make([]Op, n)
		ds := make([]time.Duration, n)
		for i := range ops {
			ds[i] = time.Duration(rng.IntN(300)) * time.Millisecond
			ops[i] = Timeout(ds[i]).WithUser(i)
		}
		reqs := make([]Request, n)
		start = time.Now()
		k, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, n, k)
		seen := map[int]bool{}
		for range n {
			c, at := port5ReapUntil(t, r)
			i := c.User.(int)
			require.False(t, seen[i], "timeout %d twice", i)
			seen[i] = true
			require.NoError(t, c.Err, "timeout %d", i)
			assert.GreaterOrEqual(t, at.Sub(start), ds[i], "timeout %d (%v) early", i, ds[i])
		}
		assertNoMore(t, r)
	})
}

// TestPort5TimeoutEndedEarly: Timeouts ended before their time
// (test_single_timeout_remove, _remove_notfound and the link cases): by
// Request.Cancel (ErrCanceled; a second cancel, and a cancel of one that
// completed, ErrNotFound), by a token, by a shorter deadline
// (ErrTimeout), and by CancelAll; a Timeout whose deadline is longer
// runs its course and completes with 0, not ErrTimeout, and its deadline
// does not fire afterwards.
func TestPort5TimeoutEndedEarly(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		const long = time.Hour
		q := submitPending(t, r, Timeout(long))
		require.NoError(t, q.Cancel())
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout)
		assert.ErrorIs(t, q.Cancel(), ErrNotFound, "removed already")

		c = doOp(t, r, Timeout(time.Millisecond))
		require.NoError(t, c.Err)
		assert.ErrorIs(t, c.Req.Cancel(), ErrNotFound, "remove of one that fired")

		tok := r.NewToken()
		var group []Request
		for range 4 {
			group = append(group, submitPending(t, r, Timeout(long).WithToken(tok)))
		}
		require.NoError(t, tok.Cancel())
		port5ReapCanceled(t, r, group)

		start := time.Now()
		q = submitPending(t, r, Timeout(long).WithDeadline(50*time.Millisecond))
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrTimeout, "the deadline first")
		assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)

		start = time.Now()
		q, err := r.Submit(Timeout(50 * time.Millisecond).WithDeadline(300 * time.Millisecond))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.NoError(t, c.Err, "the timeout first: its own result, 0")
		assert.Zero(t, c.N)
		assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
		time.Sleep(400 * time.Millisecond)
		assertNoMore(t, r) // the deadline left nothing behind

		group = group[:0]
		for range 6 {
			group = append(group, submitPending(t, r, Timeout(long)))
		}
		require.NoError(t, r.CancelAll())
		port5ReapCanceled(t, r, group)
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}
