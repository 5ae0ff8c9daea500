//go:build linux

package ioring

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, whom a cancel hits: ported from liburing's
// cancel-fd-userdata (a cancel aimed at one request by its fd and its
// user_data hits that one only, not another on the same fd, nor one on
// another fd with the same user_data, nor one naming a registered file by
// an index equal to the fd's number). Here a cancel names a Request, so
// the port checks that nothing else that looks alike (same fd, same
// WithUser value, an index that equals an fd number, a slot that served an
// older request) is hit.

// port7ReapAll reaps n completions (bounded) and returns them by request.
func port7ReapAll(t *testing.T, r *Ring, n int) map[Request]Completion {
	t.Helper()
	got := map[Request]Completion{}
	for len(got) < n {
		c := reapOne(t, r)
		_, dup := got[c.Req]
		require.False(t, dup, "two completions for %v", c.Req)
		got[c.Req] = c
	}
	return got
}

// TestPort7CancelOneOfSameFd ports cancel-fd-userdata.c: four Polls on one
// pipe, by fd and by registered index, and a Poll on another pipe carrying
// the same WithUser value as one of them. Canceling one by its Request
// ends that one only, with ErrCanceled; a batch cancel naming it again and
// one still pending counts one; the others stay pending and complete with
// POLLIN when data comes.
func TestPort7CancelOneOfSameFd(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		rd2, wr2 := pipe(t)
		require.NoError(t, r.RegisterFiles([]int{rd, rd2}))
		for _, fixed := range []bool{false, true} {
			fd := rd
			if fixed {
				fd = 0 // index 0: rd's file
			}
			var qs [4]Request
			for i := range qs {
				op := Poll(fd, unix.POLLIN).WithUser(i + 1)
				if fixed {
					op = op.FixedFile()
				}
				var err error
				qs[i], err = r.Submit(op)
				require.NoError(t, err)
			}
			// Same user value, another pipe.
			other, err := r.Submit(Poll(rd2, unix.POLLIN).WithUser(2))
			require.NoError(t, err)
			assertNoMore(t, r)

			require.NoError(t, qs[1].Cancel(), "fixed=%v", fixed)
			c := reapOne(t, r)
			require.Equal(t, qs[1], c.Req, "fixed=%v: the canceled one completes, and only it", fixed)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.Equal(t, 2, c.User)
			assertNoMore(t, r)
			assert.ErrorIs(t, qs[1].Cancel(), ErrNotFound)

			n, err := r.Cancel(qs[1], qs[2])
			require.NoError(t, err)
			assert.Equal(t, 1, n, "fixed=%v: the completed one is skipped", fixed)
			c = reapOne(t, r)
			require.Equal(t, qs[2], c.Req, "fixed=%v", fixed)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assertNoMore(t, r)
			for _, q := range []Request{qs[0], qs[3], other} {
				assert.True(t, q.Pending(), "fixed=%v: %v untouched", fixed, q)
			}

			_, err = unix.Write(wr, []byte("x"))
			require.NoError(t, err)
			got := port7ReapAll(t, r, 2)
			for _, q := range []Request{qs[0], qs[3]} {
				if assert.Contains(t, got, q) {
					assert.NoError(t, got[q].Err)
					assert.NotZero(t, got[q].N&unix.POLLIN, "fixed=%v", fixed)
				}
			}
			assertNoMore(t, r)
			assert.True(t, other.Pending(), "the other pipe's poll, same user value")
			_, err = unix.Write(wr2, []byte("y"))
			require.NoError(t, err)
			c = reapOne(t, r)
			require.Equal(t, other, c.Req)
			assert.NoError(t, c.Err)
			assert.Equal(t, 2, c.User)
			// Empty the pipes for the next round.
			b := make([]byte, 4)
			_, err = unix.Read(rd, b)
			require.NoError(t, err)
			_, err = unix.Read(rd2, b)
			require.NoError(t, err)
		}
		assertNoMore(t, r)
	})
}

// TestPort7StreamIndexEqualsFd: a registered index that equals the number
// of an open fd of another pipe names a stream of its own (Op.FixedFile).
// Two reads at the current position on each (the second of each held
// behind the first): canceling the head of the index's stream ends that
// one only; its follower takes its place and gets the index's pipe's
// data, and the fd's reads get the fd's pipe's data, in order.
func TestPort7StreamIndexEqualsFd(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rdA, wrA := pipe(t)
		rdB, wrB := pipe(t)
		k := rdB
		require.Less(t, k, 1000)
		table := make([]int, k+1)
		for i := range table {
			table[i] = -1
		}
		table[k] = rdA // index k is pipe A; fd k is pipe B
		require.NoError(t, r.RegisterFiles(table))

		bufs := make([][]byte, 4)
		for i := range bufs {
			bufs[i] = make([]byte, 1)
		}
		fa1, err := r.Submit(Read(k, bufs[0], -1).FixedFile().WithUser("fa1"))
		require.NoError(t, err)
		fb1, err := r.Submit(Read(k, bufs[1], -1).WithUser("fb1"))
		require.NoError(t, err)
		fa2, err := r.Submit(Read(k, bufs[2], -1).FixedFile().WithUser("fa2"))
		require.NoError(t, err)
		fb2, err := r.Submit(Read(k, bufs[3], -1).WithUser("fb2"))
		require.NoError(t, err)
		assertNoMore(t, r)

		require.NoError(t, fa1.Cancel())
		c := reapOne(t, r)
		require.Equal(t, fa1, c.Req, "only the canceled head completes: %v", c.User)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assertNoMore(t, r)

		_, err = unix.Write(wrB, []byte("bc"))
		require.NoError(t, err)
		got := port7ReapAll(t, r, 2)
		require.Contains(t, got, fb1)
		require.Contains(t, got, fb2)
		assert.NoError(t, got[fb1].Err)
		assert.NoError(t, got[fb2].Err)
		assert.Equal(t, "b", string(bufs[1][:got[fb1].N]), "fd k's first read: pipe B's first byte")
		assert.Equal(t, "c", string(bufs[3][:got[fb2].N]), "fd k's second read: pipe B's second byte")
		assert.True(t, fa2.Pending(), "index k's read waits for pipe A")

		_, err = unix.Write(wrA, []byte("a"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, fa2, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, "a", string(bufs[2][:c.N]))
		assert.True(t, pipeEmpty(t, rdA))
		assertNoMore(t, r)
	})
}

// TestPort7StaleHandlesStorm: on a ring of four slots, each reused
// hundreds of times, other goroutines aim every kind of call at handles
// of requests already delivered (Request.Cancel, Ring.Cancel in batches,
// Wait, Ring.Complete, Pending) while the slots serve new requests: a
// read that waits for its byte, a Timeout, a Start'ed Nop and a foreign
// request. No stale call may hit the new occupant: each returns
// ErrNotFound (0 for Ring.Cancel), and every new request completes with
// its own real result, exactly once.
func TestPort7StaleHandlesStorm(t *testing.T) {
	const rounds = 300
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		var mu sync.Mutex
		var stale []Request
		addStale := func(q Request) {
			mu.Lock()
			stale = append(stale, q)
			mu.Unlock()
		}
		pick := func(i int) Request {
			mu.Lock()
			defer mu.Unlock()
			if len(stale) == 0 {
				return Request{}
			}
			return stale[uint(i)*7919%uint(len(stale))]
		}
		stop := make(chan struct{})
		var hits atomic.Int64
		var wg sync.WaitGroup
		var mismatch sync.Map
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					q := pick(i)
					if q == (Request{}) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err := q.Cancel(); !errors.Is(err, ErrNotFound) {
						hits.Add(1)
						mismatch.Store("Cancel: "+port7ErrString(err), q)
					}
					if n, err := r.Cancel(q, pick(i+1), pick(i+2)); n != 0 || err != nil {
						hits.Add(1)
						mismatch.Store("Ring.Cancel", q)
					}
					if q.Pending() {
						hits.Add(1)
						mismatch.Store("Pending", q)
					}
					if err := r.Complete(q, 7, nil); !errors.Is(err, ErrNotFound) {
						hits.Add(1)
						mismatch.Store("Complete: "+port7ErrString(err), q)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					if _, err := q.Wait(ctx); !errors.Is(err, ErrNotFound) {
						hits.Add(1)
						mismatch.Store("Wait: "+port7ErrString(err), q)
					}
					cancel()
				}
			}()
		}
		defer func() {
			close(stop)
			wg.Wait()
		}()

		buf := make([]byte, 1)
		for i := range rounds {
			rq, err := r.Submit(Read(rd, buf, -1).WithUser("read"))
			require.NoError(t, err)
			tq, err := r.Submit(Timeout(100 * time.Microsecond).WithUser("timeout"))
			require.NoError(t, err)
			sq, err := r.Start(Nop())
			require.NoError(t, err)
			fq, err := r.Submit(Foreign(nil).WithUser("foreign"))
			require.NoError(t, err)
			require.NoError(t, r.Complete(fq, i, nil))
			sc, err := sq.Wait(context.Background())
			require.NoError(t, err)
			assert.NoError(t, sc.Err, "round %d: the started Nop", i)
			_, err = unix.Write(wr, []byte{byte(i)})
			require.NoError(t, err)
			got := port7ReapAll(t, r, 3)
			for _, q := range []Request{rq, tq, fq} {
				c, ok := got[q]
				require.True(t, ok, "round %d: %v completed", i, q)
				require.NoError(t, c.Err, "round %d: %v hit by a stale call", i, c.User)
			}
			assert.Equal(t, 1, got[rq].N)
			assert.Equal(t, byte(i), buf[0])
			assert.Equal(t, i, got[fq].N, "round %d: the foreign result is its owner's", i)
			for _, q := range []Request{rq, tq, sq, fq} {
				addStale(q)
			}
		}
		close(stop)
		wg.Wait()
		stop = make(chan struct{}) // the deferred close
		mismatch.Range(func(k, v any) bool {
			t.Errorf("stale %v: %v", v, k)
			return true
		})
		assert.Zero(t, hits.Load(), "stale calls that hit something")
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

func port7ErrString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
