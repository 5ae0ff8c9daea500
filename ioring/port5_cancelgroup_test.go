//go:build linux

package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fifth round, cancels of a group: ported from liburing's poll-cancel-all
// (IORING_ASYNC_CANCEL_ALL with CANCEL_FD, CANCEL_FD_FIXED and
// CANCEL_ANY). liburing names the group by its fd and gets the count of
// requests canceled as the cancel's result; cancelio names it by its
// requests (Ring.Cancel, which returns the count), by a token, or takes
// everything (CancelAll). Either way: exactly the group's requests end,
// each once with ErrCanceled, the count says how many, a second cancel
// of the same group finds none, and the requests outside the group are
// untouched.

// port5ReapCanceled reaps n completions, each of a request of want and
// canceled, each request once.
func port5ReapCanceled(t *testing.T, r *Ring, want []Request) {
	t.Helper()
	in := map[Request]bool{}
	for _, q := range want {
		in[q] = true
	}
	seen := map[Request]bool{}
	for range want {
		c := reapOne(t, r)
		require.True(t, in[c.Req], "a completion of a request outside the group: %+v", c)
		require.False(t, seen[c.Req], "a second completion of %v", c.Req)
		seen[c.Req] = true
		assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.Req)
		assert.NotErrorIs(t, c.Err, ErrTimeout, "%v", c.Req)
		assert.Zero(t, c.N, "%v", c.Req)
	}
}

// port5Submit submits each op and returns the requests.
func port5Submit(t *testing.T, r *Ring, ops ...Op) []Request {
	t.Helper()
	qs := make([]Request, len(ops))
	for i, op := range ops {
		var err error
		qs[i], err = r.Submit(op)
		require.NoError(t, err, "op %d", i)
	}
	return qs
}

// TestPort5CancelAllPollsOfOneFile: eight polls on a pipe, by fd and by
// registered file, all canceled in one Ring.Cancel (poll-cancel-all's
// test1): the count is 8, each completes once with ErrCanceled, and the
// same cancel again counts 0. The pipe's data is still there to read.
func TestPort5CancelAllPollsOfOneFile(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		require.NoError(t, r.RegisterFiles([]int{rd}))
		before := r.Stats()
		for _, fixed := range []bool{false, true} {
			ops := make([]Op, 8)
			for i := range ops {
				if fixed {
					ops[i] = Poll(0, unix.POLLIN).FixedFile()
				} else {
					ops[i] = Poll(rd, unix.POLLIN)
				}
			}
			qs := port5Submit(t, r, ops...)
			port3Pending(t, r, "polls on an empty pipe")
			n, err := r.Cancel(qs...)
			require.NoError(t, err)
			assert.Equal(t, 8, n, "fixed %v: canceled", fixed)
			port5ReapCanceled(t, r, qs)
			n, err = r.Cancel(qs...)
			require.NoError(t, err)
			assert.Zero(t, n, "fixed %v: canceled again", fixed)
			for _, q := range qs {
				assert.ErrorIs(t, q.Cancel(), ErrNotFound)
			}
		}
		_, err := unix.Write(wr, []byte("x"))
		require.NoError(t, err)
		assertNoMore(t, r)
		buf := make([]byte, 4)
		c := doOp(t, r, Read(rd, buf, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, "x", string(buf[:c.N]), "a canceled poll takes no data")
		after := r.Stats()
		assert.Equal(t, uint64(16), after.Canceled-before.Canceled, "Stats.Canceled")
		assert.Equal(t, uint64(17), after.Completed-before.Completed, "Stats.Completed")
	})
}

// TestPort5CancelOneFileOfTwo: polls on two pipes, interleaved
// (poll-cancel-all's test2): canceling the first pipe's group, by
// Ring.Cancel and by its token, ends its four and nothing else; the
// other pipe's polls wait on and fire when it is written, then the
// first group's cancel again finds none.
func TestPort5CancelOneFileOfTwo(t *testing.T) {
	for _, how := range []string{"requests", "token"} {
		t.Run(how, func(t *testing.T) {
			forEachBackend(t, 16, func(t *testing.T, r *Ring) {
				rdA, _ := pipe(t)
				rdB, wrB := pipe(t)
				tokA, tokB := r.NewToken(), r.NewToken()
				var groupA, groupB []Request
				for i := range 8 {
					if i%2 == 0 {
						groupA = append(groupA, port5Submit(t, r, Poll(rdA, unix.POLLIN).WithToken(tokA))...)
					} else {
						groupB = append(groupB, port5Submit(t, r, Poll(rdB, unix.POLLIN).WithToken(tokB))...)
					}
				}
				port3Pending(t, r, "polls on empty pipes")
				assert.Equal(t, 4, tokA.Pending())
				if how == "requests" {
					n, err := r.Cancel(groupA...)
					require.NoError(t, err)
					assert.Equal(t, 4, n)
				} else {
					require.NoError(t, tokA.Cancel())
				}
				port5ReapCanceled(t, r, groupA)
				assertNoMore(t, r)
				assert.Zero(t, tokA.Pending())
				assert.Equal(t, 4, tokB.Pending(), "the other pipe's polls wait on")
				for _, q := range groupB {
					assert.True(t, q.Pending())
				}

				// The other group fires.
				_, err := unix.Write(wrB, []byte("b"))
				require.NoError(t, err)
				fired := map[Request]bool{}
				for range groupB {
					c := reapOne(t, r)
					require.NoError(t, c.Err)
					assert.NotZero(t, c.N&unix.POLLIN)
					fired[c.Req] = true
				}
				for _, q := range groupB {
					assert.True(t, fired[q], "poll %v fired", q)
				}
				n, err := r.Cancel(append(groupA, groupB...)...)
				require.NoError(t, err)
				assert.Zero(t, n, "nothing left to cancel")
				require.NoError(t, tokB.Cancel())
				assertNoMore(t, r)
			})
		})
	}
}

// TestPort5CancelAllAny: CancelAll ends every request of the ring, polls
// on two pipes (poll-cancel-all's test3) and reads that wait on a pipe,
// at offset 0 (test4, whose reads liburing forces to io-wq with
// IOSQE_ASYNC) and at the position (the stream's head and the reads held
// behind it): each completes once with ErrCanceled, and a write
// afterwards stays in the pipe for the next read.
func TestPort5CancelAllAny(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rdA, wrA := pipe(t)
		rdB, _ := pipe(t)
		var ops []Op
		for i := range 8 {
			fd := rdA
			if i%2 == 1 {
				fd = rdB
			}
			ops = append(ops, Poll(fd, unix.POLLIN))
		}
		qs := port5Submit(t, r, ops...)
		port3Pending(t, r, "polls")
		require.NoError(t, r.CancelAll())
		port5ReapCanceled(t, r, qs)
		assertNoMore(t, r)

		for _, off := range []int64{0, -1} {
			bufs := make([][]byte, 8)
			ops = ops[:0]
			for i := range bufs {
				bufs[i] = make([]byte, 32)
				ops = append(ops, Read(rdA, bufs[i], off))
			}
			qs = port5Submit(t, r, ops...)
			port3Pending(t, r, "reads of an empty pipe")
			assert.Equal(t, 8, r.InFlight())
			require.NoError(t, r.CancelAll())
			port5ReapCanceled(t, r, qs)
			for i, b := range bufs {
				assert.Equal(t, make([]byte, 32), b, "off %d: canceled read %d wrote its buffer", off, i)
			}
			assertSettled(t, r)
		}
		_, err := unix.Write(wrA, []byte("after"))
		require.NoError(t, err)
		assertNoMore(t, r)
		buf := make([]byte, 32)
		c := doOp(t, r, Read(rdA, buf, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, "after", string(buf[:c.N]))
	})
}
