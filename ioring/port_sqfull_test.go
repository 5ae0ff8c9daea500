//go:build linux

package ioring

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's sq-full, sq-full-cpp, sq-space_left, cq-full,
// cq-size and submit-reuse tests: a full ring refuses with ErrFull and
// loses nothing, requests that take two submission entries (a deadline's
// linked timeout) fit a small ring, and a burst of completions larger
// than the kernel's completion ring is delivered whole.

// TestPortSQFullBatch: a batch larger than the ring goes in as far as
// there are slots, says ErrFull for the rest, and every accepted request
// completes; a full ring refuses Submit, Start and Do alike.
func TestPortSQFullBatch(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		ops := make([]Op, 7)
		for i := range ops {
			ops[i] = Nop().WithUser(i)
		}
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		assert.ErrorIs(t, err, ErrFull)
		require.Equal(t, 4, n)
		for _, q := range reqs[n:] {
			assert.Equal(t, Request{}, q, "no request beyond the ones accepted")
		}
		_, err = r.Submit(Nop())
		assert.ErrorIs(t, err, ErrFull)
		_, err = r.Start(Nop())
		assert.ErrorIs(t, err, ErrFull)
		seen := map[any]int{}
		for range n {
			c := reapOne(t, r)
			assert.NoError(t, c.Err)
			seen[c.User]++
		}
		assert.Equal(t, map[any]int{0: 1, 1: 1, 2: 1, 3: 1}, seen)
		assertNoMore(t, r)
		// Room again: the rest goes in.
		n, err = r.SubmitBatch(ops[4:], reqs[4:])
		require.NoError(t, err)
		require.Equal(t, 3, n)
		for range n {
			c := reapOne(t, r)
			assert.NoError(t, c.Err)
		}
		assertNoMore(t, r)
	})
}

// TestPortDeadlinesFillSmallSQ: on a ring of 2 entries, requests with
// deadlines take two submission entries each (the request and its linked
// timeout); a batch of them, and cancels of them, still go in whole.
func TestPortDeadlinesFillSmallSQ(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		prd, pwr := pipe(t)
		for round := range 20 {
			ops := []Op{
				Read(rd, make([]byte, 8), 0).WithDeadline(time.Hour).WithUser("a"),
				Poll(prd, unix.POLLIN).WithDeadline(time.Hour).WithUser("b"),
			}
			reqs := make([]Request, 2)
			n, err := r.SubmitBatch(ops, reqs)
			require.NoError(t, err, "round %d", round)
			require.Equal(t, 2, n)
			if round%2 == 0 {
				m, err := r.Cancel(reqs...)
				require.NoError(t, err)
				require.Equal(t, 2, m)
				seen := portReapCanceled(t, r, 2)
				require.Equal(t, map[any]int{"a": 1, "b": 1}, seen, "round %d", round)
				continue
			}
			_, err = unix.Write(wr, []byte("x"))
			require.NoError(t, err)
			_, err = unix.Write(pwr, []byte("x"))
			require.NoError(t, err)
			seen := map[any]int{}
			for range 2 {
				c := reapOne(t, r)
				require.NoError(t, c.Err, "round %d %v", round, c.User)
				seen[c.User]++
			}
			require.Equal(t, map[any]int{"a": 1, "b": 1}, seen)
			var b [8]byte
			_, err = unix.Read(prd, b[:])
			require.NoError(t, err)
		}
		assertNoMore(t, r)
	})
}

// TestPortSmallRingChurn: on a ring of 2 entries, goroutines submit
// requests with deadlines, cancel them and reap, in a loop: every
// accepted request completes exactly once, and ErrFull is the only
// refusal.
func TestPortSmallRingChurn(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		var mu sync.Mutex
		accepted := map[Request]bool{}
		delivered := map[Request]int{}
		const perG = 300
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < perG; {
					var op Op
					switch (g + i) % 4 {
					case 0:
						op = Read(rd, make([]byte, 1), 0).WithDeadline(50 * time.Microsecond)
					case 1:
						op = Nop().WithDeadline(time.Hour)
					case 2:
						op = Poll(rd, unix.POLLIN).WithDeadline(time.Duration(1+i%100) * time.Microsecond)
					default:
						op = Read(rd, make([]byte, 1), -1).WithDeadline(time.Millisecond)
					}
					q, err := r.Submit(op)
					if err != nil {
						require.True(t, errors.Is(err, ErrFull), "%v", err)
						var cs [2]Completion
						n, err := r.Reap(cs[:], time.Millisecond)
						require.NoError(t, err)
						mu.Lock()
						for _, c := range cs[:n] {
							delivered[c.Req]++
						}
						mu.Unlock()
						continue
					}
					mu.Lock()
					accepted[q] = true
					mu.Unlock()
					if i%2 == 0 {
						q.Cancel()
					}
					if i%50 == 0 {
						unix.Write(wr, []byte("z"))
					}
					i++
				}
			}()
		}
		wg.Wait()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			missing := len(accepted) - len(delivered)
			mu.Unlock()
			if missing == 0 || time.Now().After(deadline) {
				break
			}
			var cs [2]Completion
			n, err := r.Reap(cs[:], 10*time.Millisecond)
			require.NoError(t, err)
			mu.Lock()
			for _, c := range cs[:n] {
				delivered[c.Req]++
			}
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, accepted, 3*perG)
		for q, n := range delivered {
			assert.True(t, accepted[q], "a completion of %v, never accepted", q)
			assert.Equal(t, 1, n, "completions of %v", q)
		}
		assert.Len(t, delivered, len(accepted))
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPortCQBurstLargerThanCQ: a ring of 8 slots whose completion ring
// holds 32: Start'ed requests completed and waited for in reverse order,
// while a flood of timeouts and nops keeps completing, lose nothing.
func TestPortCQBurstLargerThanCQ(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		total := 0
		for round := range 200 {
			ops := make([]Op, 8)
			for i := range ops {
				switch i % 3 {
				case 0:
					ops[i] = Nop().WithUser(i)
				case 1:
					ops[i] = Timeout(time.Microsecond).WithUser(i)
				default:
					ops[i] = Nop().WithDeadline(time.Microsecond).WithUser(i)
				}
			}
			reqs := make([]Request, len(ops))
			n, err := r.SubmitBatch(ops, reqs)
			require.NoError(t, err)
			require.Equal(t, 8, n)
			r.CancelAll() // cancel CQEs on top, some finding nothing
			seen := map[any]int{}
			for range 8 {
				c := reapOne(t, r)
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "round %d %v", round, c.User)
				}
				seen[c.User]++
			}
			require.Len(t, seen, 8, "round %d", round)
			total += 8
		}
		assertNoMore(t, r)
		st := r.Stats()
		assert.GreaterOrEqual(t, st.Completed, uint64(total))
		assert.EqualValues(t, st.Submitted, st.Completed)
		assert.Zero(t, st.InFlight)
	})
}
