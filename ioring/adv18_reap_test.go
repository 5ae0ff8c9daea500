//go:build linux

package ioring

import (
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv18 reap: Reap with a one-entry dst under bursts, its timeouts at the
// edges, and Reap racing Close: every completion delivered exactly once.

// Bursts of batches from several submitters, reaped one at a time by
// several reapers: each id exactly once.
func TestAdv18ReapOneEntryBursts(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		const submitters, bursts, per = 3, 40, 6
		var accepted atomic.Int64
		var swg sync.WaitGroup
		for s := 0; s < submitters; s++ {
			swg.Add(1)
			go func(s int) {
				defer swg.Done()
				for b := 0; b < bursts; b++ {
					ops := adv18Nops((s*bursts+b)*per, per)
					reqs := make([]Request, per)
					for {
						n, err := r.SubmitBatch(ops, reqs)
						accepted.Add(int64(n))
						if err == nil {
							break
						}
						require.ErrorIs(t, err, ErrFull)
						ops, reqs = ops[n:], reqs[n:]
						time.Sleep(100 * time.Microsecond)
					}
				}
			}(s)
		}
		var mu sync.Mutex
		seen := map[int]int{}
		var delivered atomic.Int64
		stop := make(chan struct{})
		var rwg sync.WaitGroup
		for k := 0; k < 3; k++ {
			rwg.Add(1)
			go func() {
				defer rwg.Done()
				var dst [1]Completion
				for {
					n, err := r.Reap(dst[:], 5*time.Millisecond)
					if !assert.NoError(t, err) {
						return
					}
					if n == 1 {
						mu.Lock()
						seen[dst[0].User.(int)]++
						mu.Unlock()
						delivered.Add(1)
						continue
					}
					select {
					case <-stop:
						return
					default:
					}
				}
			}()
		}
		adv18Within(t, adv18Hang, "submitters", swg.Wait)
		require.Eventually(t, func() bool { return delivered.Load() == accepted.Load() }, adv18Hang, time.Millisecond,
			"delivered %d of %d", delivered.Load(), accepted.Load())
		close(stop)
		rwg.Wait()
		assert.Equal(t, int64(submitters*bursts*per), accepted.Load())
		for id, k := range seen {
			assert.Equal(t, 1, k, "id %d", id)
		}
		assert.Len(t, seen, int(accepted.Load()))
		assertNoMore(t, r)
	})
}

// Reap's timeouts at the edges: 0 polls, a negative or a huge one waits
// for a completion, and ends with ErrClosed (no hang) when the ring
// closes empty.
func TestAdv18ReapTimeouts(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		dst := make([]Completion, 1)
		start := time.Now()
		n, err := r.Reap(dst, 0)
		assert.NoError(t, err)
		assert.Zero(t, n)
		n, err = r.Reap(dst, time.Nanosecond)
		assert.NoError(t, err)
		assert.Zero(t, n)
		assert.Less(t, time.Since(start), 5*time.Second, "polls")

		for _, to := range []time.Duration{-1, math.MinInt64, math.MaxInt64, time.Duration(math.MaxInt64 - 1)} {
			go func() {
				time.Sleep(20 * time.Millisecond)
				_, err := r.Submit(Nop().WithUser(int(to % 1000)))
				assert.NoError(t, err)
			}()
			adv18Within(t, adv18Hang, "Reap with a long timeout", func() {
				n, err := r.Reap(dst, to)
				assert.NoError(t, err, "timeout %v", to)
				assert.Equal(t, 1, n, "timeout %v", to)
			})
		}
		assertNoMore(t, r)

		// Parked with no end, then Close: ErrClosed, not a hang.
		res := make(chan error, 2)
		for _, to := range []time.Duration{-1, math.MaxInt64} {
			go func() {
				_, err := r.Reap(make([]Completion, 1), to)
				res <- err
			}()
		}
		time.Sleep(30 * time.Millisecond)
		require.NoError(t, r.Close())
		for i := 0; i < 2; i++ {
			select {
			case err := <-res:
				assert.ErrorIs(t, err, ErrClosed)
			case <-time.After(adv18Hang):
				t.Fatal("Reap with no timeout did not return at Close")
			}
		}
	})
}

// Reap concurrent with Close over pending reads and queued completions:
// the reapers get every completion exactly once, then ErrClosed; Stats
// agree.
func TestAdv18ReapCloseRace(t *testing.T) {
	for round := 0; round < 3; round++ {
		forEachBackend(t, 32, func(t *testing.T, r *Ring) {
			rd, _ := pipe(t)
			const pending, done = 12, 10
			for i := 0; i < pending; i++ {
				_, err := r.Submit(Read(rd, make([]byte, 8), -1).WithUser(i))
				require.NoError(t, err)
			}
			for i := 0; i < done; i++ {
				_, err := r.Submit(Nop().WithUser(pending + i))
				require.NoError(t, err)
			}
			var mu sync.Mutex
			seen := map[int]int{}
			var canceled int
			var wg sync.WaitGroup
			for k := 0; k < 4; k++ {
				wg.Add(1)
				go func(k int) {
					defer wg.Done()
					dst := make([]Completion, 1+k)
					to := []time.Duration{-1, math.MaxInt64, time.Second, 0}[k]
					for i := 0; i < 10000; i++ {
						n, err := r.Reap(dst, to)
						mu.Lock()
						for _, c := range dst[:n] {
							seen[c.User.(int)]++
							if errors.Is(c.Err, ErrCanceled) {
								canceled++
							}
						}
						mu.Unlock()
						if err != nil {
							assert.ErrorIs(t, err, ErrClosed)
							assert.Zero(t, n)
							return
						}
						if to == 0 && n == 0 {
							time.Sleep(time.Millisecond)
						}
					}
					t.Errorf("reaper %d never saw ErrClosed", k)
				}(k)
			}
			time.Sleep(time.Duration(round*5) * time.Millisecond)
			require.NoError(t, r.Close())
			adv18Within(t, adv18Hang, "reapers after Close", wg.Wait)
			for i := 0; i < pending+done; i++ {
				assert.Equal(t, 1, seen[i], "id %d", i)
			}
			assert.Len(t, seen, pending+done)
			assert.Equal(t, pending, canceled, "the pending reads end canceled")
			st := r.Stats()
			assert.Equal(t, uint64(pending+done), st.Submitted)
			assert.Equal(t, st.Submitted, st.Completed)
			assert.Zero(t, st.InFlight)
			assert.Equal(t, uint64(pending), st.Canceled)
			n, err := r.Reap(make([]Completion, 4), 0)
			assert.ErrorIs(t, err, ErrClosed)
			assert.Zero(t, n)
		})
	}
}
