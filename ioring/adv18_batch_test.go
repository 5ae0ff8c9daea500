//go:build linux

package ioring

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv18 batch: SubmitBatch and SubmitAndReap misuse. Every request they
// report submitted completes exactly once (counted by WithUser ids), and
// nothing they refused ever completes.

// adv18Drain reaps until want completions came (or adv18Hang passed) and
// returns the user ids seen, failing on a duplicate or a foreign id.
func adv18Drain(t *testing.T, r *Ring, want int, dstLen int) map[int]int {
	t.Helper()
	seen := map[int]int{}
	dst := make([]Completion, dstLen)
	deadline := time.Now().Add(adv18Hang)
	got := 0
	for got < want && time.Now().Before(deadline) {
		n, err := r.Reap(dst, 100*time.Millisecond)
		require.NoError(t, err)
		for _, c := range dst[:n] {
			id, ok := c.User.(int)
			if !assert.True(t, ok, "completion without an int user: %+v", c) {
				continue
			}
			seen[id]++
			if seen[id] > 1 {
				t.Errorf("id %d delivered %d times", id, seen[id])
			}
		}
		got += n
	}
	assert.Equal(t, want, got, "completions")
	return seen
}

// adv18Nops returns n Nops with user ids base..base+n-1.
func adv18Nops(base, n int) []Op {
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = Nop().WithUser(base + i)
	}
	return ops
}

// Refused batches submit nothing and complete nothing, on both backends
// alike.
func TestAdv18BatchRefusedSubmitsNothing(t *testing.T) {
	tok := func(r *Ring) Op { return Nop().WithToken(&Token{}) }
	cases := []struct {
		name string
		ops  func(r *Ring) []Op
		reqs int
	}{
		{"shortReqs", func(*Ring) []Op { return adv18Nops(0, 4) }, 3},
		{"nilReqs", func(*Ring) []Op { return adv18Nops(0, 2) }, 0},
		{"zeroOpMid", func(*Ring) []Op {
			return append(append(adv18Nops(0, 2), Op{}), adv18Nops(3, 2)...)
		}, 5},
		{"zeroOpLast", func(*Ring) []Op { return append(adv18Nops(0, 3), Op{}) }, 4},
		{"zeroOpFirst", func(*Ring) []Op { return append([]Op{{}}, adv18Nops(1, 3)...) }, 4},
		{"negFdMid", func(*Ring) []Op {
			return append(append(adv18Nops(0, 2), Read(-1, make([]byte, 4), 0).WithUser(2)), adv18Nops(3, 1)...)
		}, 4},
		{"zeroTokenMid", func(r *Ring) []Op {
			return append(append(adv18Nops(0, 2), tok(r).WithUser(2)), adv18Nops(3, 1)...)
		}, 4},
		{"deadlineFirstZeroOpMid", func(*Ring) []Op {
			return []Op{Nop().WithDeadline(time.Hour).WithUser(0), Nop().WithUser(1), {}, Nop().WithUser(3)}
		}, 4},
		{"largerThanRingZeroOpLast", func(*Ring) []Op { return append(adv18Nops(0, 40), Op{}) }, 41},
		{"largerThanRingZeroOpMid", func(*Ring) []Op {
			return append(append(adv18Nops(0, 20), Op{}), adv18Nops(21, 20)...)
		}, 41},
	}
	got := adv13Both(t, 8, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, c := range cases {
			ops := c.ops(r)
			reqs := make([]Request, c.reqs)
			var n int
			var err error
			require.NotPanics(t, func() { n, err = r.SubmitBatch(ops, reqs) }, c.name)
			assert.ErrorIs(t, err, ErrInvalid, c.name)
			assert.Zero(t, n, c.name)
			for i, q := range reqs {
				assert.Equal(t, Request{}, q, "%s: reqs[%d] set by a refused batch", c.name, i)
			}
			var dst [4]Completion
			m, rerr := r.Reap(dst[:], 30*time.Millisecond)
			require.NoError(t, rerr)
			assert.Zero(t, m, "%s: a refused batch completed %v", c.name, dst[:m])
			out = append(out, fmt.Sprintf("%s: n=%d invalid=%v", c.name, n, err != nil))

			// the same through SubmitAndReap
			reqs = make([]Request, c.reqs)
			var dst1 [2]Completion
			require.NotPanics(t, func() { n, m, err = r.SubmitAndReap(ops, reqs, dst1[:], 20*time.Millisecond) }, c.name)
			assert.ErrorIs(t, err, ErrInvalid, "SubmitAndReap "+c.name)
			assert.Zero(t, n, c.name)
			assert.Zero(t, m, c.name)
			assertNoMore(t, r)
		}
		st := r.Stats()
		assert.Zero(t, st.Submitted, "refused batches counted as submitted")
		assert.Zero(t, st.InFlight)
		return out
	})
	adv13Agree(t, got)
}

// Empty and nil batches: nothing submitted, no error; SubmitAndReap with
// no ops only reaps; with an empty dst it refuses before submitting.
func TestAdv18BatchEmpty(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, ops := range [][]Op{nil, {}} {
			n, err := r.SubmitBatch(ops, nil)
			assert.NoError(t, err)
			assert.Zero(t, n)
			s, m, err := r.SubmitAndReap(ops, nil, make([]Completion, 1), 0)
			assert.NoError(t, err)
			assert.Zero(t, s)
			assert.Zero(t, m)
		}
		for _, dst := range [][]Completion{nil, {}} {
			reqs := make([]Request, 2)
			s, m, err := r.SubmitAndReap(adv18Nops(0, 2), reqs, dst, time.Second)
			assert.ErrorIs(t, err, ErrInvalid)
			assert.Zero(t, s)
			assert.Zero(t, m)
			assertNoMore(t, r)
		}
		// one op on the fast path, empty dst
		s, m, err := r.SubmitAndReap(adv18Nops(0, 1), make([]Request, 1), nil, time.Second)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, s+m)
		assertNoMore(t, r)
		// one op with no room for its Request
		s, m, err = r.SubmitAndReap(adv18Nops(0, 1), nil, make([]Completion, 1), time.Second)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, s+m)
		assertNoMore(t, r)
		assert.Zero(t, r.Stats().Submitted)
	})
}

// Batches larger than the ring: what SubmitBatch reports submitted
// completes exactly once; the rest never does.
func TestAdv18BatchLargerThanRing(t *testing.T) {
	for _, kind := range []string{"plain", "deadline", "mixed"} {
		t.Run(kind, func(t *testing.T) {
			forEachBackend(t, 4, func(t *testing.T, r *Ring) {
				const total = 300
				ops := make([]Op, total)
				for i := range ops {
					op := Nop()
					if kind == "deadline" || (kind == "mixed" && i%3 == 1) {
						op = op.WithDeadline(time.Hour)
					}
					ops[i] = op.WithUser(i)
				}
				reqs := make([]Request, total)
				n, err := r.SubmitBatch(ops, reqs)
				t.Logf("submitted %d of %d: %v", n, total, err)
				if n < total {
					assert.ErrorIs(t, err, ErrFull)
				} else {
					assert.NoError(t, err)
				}
				require.Positive(t, n)
				for i := n; i < total; i++ {
					assert.Equal(t, Request{}, reqs[i], "reqs[%d] past the submitted", i)
				}
				seen := adv18Drain(t, r, n, 3)
				for i := 0; i < n; i++ {
					assert.Equal(t, 1, seen[i], "id %d", i)
				}
				assertNoMore(t, r)
				assertSettled(t, r)
				st := r.Stats()
				assert.Equal(t, uint64(n), st.Submitted, "Stats.Submitted")
				assert.Equal(t, uint64(n), st.Completed, "Stats.Completed")
			})
		})
	}
}

// SubmitAndReap with a dst shorter than what completes: the rest stays
// queued for Reap, each once.
func TestAdv18SubmitAndReapShortDst(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		const rounds, per = 6, 8 // 42 held undelivered: within the slots
		seen := map[int]int{}
		total := 0
		for k := 0; k < rounds; k++ {
			ops := adv18Nops(k*per, per)
			reqs := make([]Request, per)
			dst := make([]Completion, 1)
			s, m, err := r.SubmitAndReap(ops, reqs, dst, time.Second)
			require.NoError(t, err)
			require.Equal(t, per, s)
			require.LessOrEqual(t, m, 1)
			for _, c := range dst[:m] {
				seen[c.User.(int)]++
			}
			total += m
		}
		rest := adv18Drain(t, r, rounds*per-total, 1)
		for id, k := range rest {
			seen[id] += k
		}
		for i := 0; i < rounds*per; i++ {
			assert.Equal(t, 1, seen[i], "id %d", i)
		}
		assertNoMore(t, r)
	})
}

// Several goroutines SubmitAndReap, each with its own slices, on a ring
// smaller than their total: every accepted request is delivered once
// across all of them (and a final drain).
func TestAdv18SubmitAndReapConcurrent(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		const workers, iters = 4, 150
		var mu sync.Mutex
		seen := map[int]int{}
		accepted := 0
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				dst := make([]Completion, 1+w%3)
				for i := 0; i < iters; i++ {
					n := 1 + (i+w)%5
					base := (w*iters + i) * 8
					ops := adv18Nops(base, n)
					if i%4 == 0 {
						ops[0] = ops[0].WithDeadline(time.Hour)
					}
					reqs := make([]Request, n)
					s, m, err := r.SubmitAndReap(ops, reqs, dst, time.Duration(i%3)*time.Millisecond)
					if err != nil {
						assert.ErrorIs(t, err, ErrFull)
					}
					mu.Lock()
					accepted += s
					for k := 0; k < s; k++ {
						seen[base+k] += 0 // accepted, not yet seen
					}
					for _, c := range dst[:m] {
						seen[c.User.(int)]++
					}
					mu.Unlock()
				}
			}(w)
		}
		adv18Within(t, 2*adv18Hang, "SubmitAndReap workers", wg.Wait)
		mu.Lock()
		delivered := 0
		for _, k := range seen {
			delivered += k
		}
		mu.Unlock()
		rest := adv18Drain(t, r, accepted-delivered, 4)
		for id, k := range rest {
			seen[id] += k
		}
		for id, k := range seen {
			if k != 1 {
				t.Errorf("id %d delivered %d times", id, k)
			}
		}
		assert.Len(t, seen, accepted)
		assertNoMore(t, r)
	})
}
