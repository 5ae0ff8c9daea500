//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

// awProduceNops submits n NOPs (as single Submits, batches, SubmitAndReap
// and Start+Wait) with ids from a, retrying on ErrFull, and reports the
// completions SubmitAndReap and Wait took into a.
func awProduceNops(a *awTally, r *Ring, rng *rand.Rand, n int, who string) {
	var reqs [16]Request
	var ops [16]Op
	var dst [4]Completion
	for sent := 0; sent < n && a.bad.Load() == 0; {
		switch rng.IntN(8) {
		case 0, 1, 2: // one Submit
			id := a.id(awNop)
			if _, err := r.Submit(Nop().WithUser(id)); err != nil {
				if !errors.Is(err, ErrFull) {
					a.errorf("%s: Submit: %v", who, err)
					return
				}
				a.refused(id)
				time.Sleep(10 * time.Microsecond)
				continue
			}
			a.accept(id)
			sent++
		case 3, 4: // a batch, which may go in only in part
			k := 1 + rng.IntN(len(ops))
			ids := make([]int64, k)
			for i := range k {
				ids[i] = a.id(awNop)
				ops[i] = Nop().WithUser(ids[i])
			}
			m, err := r.SubmitBatch(ops[:k], reqs[:k])
			if err != nil && !errors.Is(err, ErrFull) {
				a.errorf("%s: SubmitBatch: %v", who, err)
				return
			}
			if m < 0 || m > k || (err == nil) != (m == k) {
				a.errorf("%s: SubmitBatch of %d: %d, %v", who, k, m, err)
				return
			}
			for i := range m {
				a.accept(ids[i])
			}
			sent += m
			if m < k {
				a.refused(ids[m:]...)
				time.Sleep(10 * time.Microsecond)
			}
		case 5: // SubmitAndReap, with a short wait at most
			id := a.id(awNop)
			tos := [...]time.Duration{0, 100 * time.Microsecond, time.Millisecond, 5 * time.Millisecond}
			s, m, err := r.SubmitAndReap([]Op{Nop().WithUser(id)}, reqs[:1], dst[:1+rng.IntN(len(dst))], tos[rng.IntN(len(tos))])
			if s == 1 {
				a.accept(id)
				sent++
			} else if errors.Is(err, ErrFull) {
				a.refused(id)
			}
			for i := range dst[:m] {
				a.got(dst[i], who+" SubmitAndReap")
			}
			if err != nil && !errors.Is(err, ErrFull) {
				a.errorf("%s: SubmitAndReap: %v", who, err)
				return
			}
		default: // Start and Wait, or Do
			id := a.id(awNop)
			if rng.IntN(2) == 0 {
				c, err := r.Do(context.Background(), Nop().WithUser(id))
				if err != nil {
					if !errors.Is(err, ErrFull) {
						a.errorf("%s: Do: %v", who, err)
						return
					}
					a.refused(id)
					continue
				}
				a.accept(id)
				sent++
				a.got(c, who+" Do")
				continue
			}
			q, err := r.Start(Nop().WithUser(id))
			if err != nil {
				if !errors.Is(err, ErrFull) {
					a.errorf("%s: Start: %v", who, err)
					return
				}
				a.refused(id)
				continue
			}
			a.accept(id)
			sent++
			c, err := q.Wait(context.Background())
			if err != nil {
				a.errorf("%s: Wait: %v", who, err)
				return
			}
			a.got(c, who+" Wait")
		}
	}
}

// TestAdvWakeBlockedReapers has consumers that block in Reap with no time
// limit while other goroutines only submit NOPs (one at a time, batches
// that overrun the free slots, SubmitAndReap with short waits, Start and
// Wait, Do), at GOMAXPROCS 1, 2 and 4, in two mixes: every consumer
// unbounded (a lost wake-up or a hand-off that never happens leaves the
// completions with nobody to reap them, and the test hangs), and
// consumers with every kind of timeout (-1, 0, tiny, short, long). Every
// accepted request must be delivered exactly once, InFlight must drop to
// 0 with Submitted == Completed, and Close must release every consumer
// still blocked, with ErrClosed.
func TestAdvWakeBlockedReapers(t *testing.T) {
	seed := awSeed(t)
	t.Logf("seed %d (replay with ADVWAKE_SEED=%d)", seed, seed)
	for _, procs := range []int{1, 2, 4} {
		for _, mix := range []string{"unbounded", "mixed"} {
			for _, b := range awBackends {
				t.Run(fmt.Sprintf("procs=%d/%s/backend=%v", procs, mix, b), func(t *testing.T) {
					leaks := goleak.IgnoreCurrent()
					awProcs(t, procs)
					perProd := 1500
					if procs == 1 {
						perProd = 500 // see TestAdvWakeHandOffChain
					}
					awBlockedReapers(t, b, mix == "mixed", seed, perProd)
					goleak.VerifyNone(t, leaks)
				})
			}
		}
	}
}

func awBlockedReapers(t *testing.T, b Backend, mixed bool, seed uint64, perProd int) {
	const (
		entries   = 32
		consumers = 6
		producers = 3
	)
	r := awRing(t, b, entries)
	a := newAWTally(t, producers*perProd*2)
	var cons sync.WaitGroup
	lastErr := make([]error, consumers)
	for i := range consumers {
		cons.Add(1)
		rng := rand.New(rand.NewPCG(seed, uint64(100+i)))
		var mu sync.Mutex
		pick := func() time.Duration { return -1 }
		if mixed {
			tos := [...]time.Duration{-1, 0, time.Microsecond, 200 * time.Microsecond, 2 * time.Millisecond, 50 * time.Millisecond, time.Hour}
			pick = func() time.Duration {
				mu.Lock()
				defer mu.Unlock()
				return tos[rng.IntN(len(tos))]
			}
		}
		go func() {
			defer cons.Done()
			lastErr[i] = awReaper(a, r, fmt.Sprintf("consumer %d", i), 1+i%4, pick)
		}()
	}
	var prods sync.WaitGroup
	for i := range producers {
		prods.Add(1)
		go func() {
			defer prods.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(200+i)))
			awProduceNops(a, r, rng, perProd, fmt.Sprintf("producer %d", i))
		}()
	}
	awWithin(t, awHang, "the producers", prods.Wait)
	awWithin(t, awHang, "delivery of every accepted request to the blocked consumers", func() {
		for a.nSeen.Load() < a.nAccepted.Load() && a.bad.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	})
	// Quiet: nothing in flight, and the counters agree.
	assertSettled(t, r, "InFlight once every completion was delivered")
	st := r.Stats()
	assert.Equal(t, uint64(a.nAccepted.Load()), st.Submitted, "Stats.Submitted")
	assert.Equal(t, st.Submitted, st.Completed+uint64(st.InFlight), "Submitted == Completed + InFlight once quiet")
	assert.Zero(t, st.InFlight, "Stats.InFlight once quiet")
	assert.LessOrEqual(t, r.InFlight(), r.Entries())

	// Close releases every consumer that is still blocked.
	awWithin(t, awHang, "Close with consumers parked", func() { r.Close() })
	awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
	for i, err := range lastErr {
		assert.ErrorIs(t, err, ErrClosed, "consumer %d's last Reap", i)
	}
	a.check()
}

// TestAdvWakeHandOffChain checks the reaper role's hand-off when the
// reaper leaves with others parked: rounds in which N goroutines block in
// Reap (no limit) while the kernel has nothing for them, then a burst of
// single NOPs is submitted by a goroutine that never reaps. The goroutine
// holding the role as each request goes in, and each that leaves after
// its batch, must pass it on (handOff, unlockReap), or the completions sit
// in the kernel's ring with every consumer parked: a hang.
func TestAdvWakeHandOffChain(t *testing.T) {
	for _, procs := range []int{1, 2, 4} {
		for _, b := range awBackends {
			t.Run(fmt.Sprintf("procs=%d/backend=%v", procs, b), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				awProcs(t, procs)
				r := awRing(t, b, 16)
				a := newAWTally(t, 1<<16)
				const consumers = 5
				var cons sync.WaitGroup
				for i := range consumers {
					cons.Add(1)
					go func() {
						defer cons.Done()
						awReaper(a, r, fmt.Sprintf("consumer %d", i), 1, func() time.Duration { return -1 })
					}()
				}
				// Fewer rounds at GOMAXPROCS 1, where idle consumers that
				// pass the role around (TestAdvWakeIdleConsumersPark) take
				// the only P for whole time slices.
				rounds := 200
				if procs == 1 {
					rounds = 30
				}
				for round := 0; round < rounds && a.bad.Load() == 0; round++ {
					// Let the consumers park: nothing is in flight.
					if round%10 == 0 {
						time.Sleep(time.Millisecond)
					} else {
						runtime.Gosched()
					}
					burst := 1 + round%8
					for range burst {
						id := a.id(awNop)
						if _, err := r.Submit(Nop().WithUser(id)); err != nil {
							t.Fatalf("round %d: Submit: %v", round, err)
						}
						a.accept(id)
					}
					want := a.nAccepted.Load()
					awWithin(t, awHang, fmt.Sprintf("round %d: %d NOPs reaped by parked consumers", round, burst), func() {
						for a.nSeen.Load() < want {
							time.Sleep(50 * time.Microsecond)
						}
					})
				}
				assertSettled(t, r)
				awWithin(t, awHang, "Close with consumers parked", func() { r.Close() })
				awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
				a.check()
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

// TestAdvWakeCountersConcurrent reads InFlight and Stats continuously from
// several goroutines while others submit NOPs one by one and in batches
// larger than the free slots (which count themselves in flight and back
// out: the in-flight count's corrections) and consumers reap them with
// every kind of timeout: InFlight must stay within 0 and Entries, Stats'
// InFlight too, Completed must never decrease nor exceed the requests ever submitted; once
// quiet, InFlight is 0 and Submitted == Completed == the requests accepted.
func TestAdvWakeCountersConcurrent(t *testing.T) {
	seed := awSeed(t)
	t.Logf("seed %d (replay with ADVWAKE_SEED=%d)", seed, seed)
	for _, procs := range []int{1, 2, 4} {
		for _, b := range awBackends {
			t.Run(fmt.Sprintf("procs=%d/backend=%v", procs, b), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				awProcs(t, procs)
				batches := 200
				if procs == 1 {
					batches = 60 // see TestAdvWakeHandOffChain
				}
				awCounters(t, b, seed, batches)
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

func awCounters(t *testing.T, b Backend, seed uint64, batches int) {
	const entries = 16
	r := awRing(t, b, entries)
	a := newAWTally(t, 1<<16)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var reads, outOfBounds, firstOut atomic.Int64
	for i := range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			var last uint64
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Out of bounds is recorded and reported at the end, so
				// that the other checks still run (a.errorf stops the
				// producers).
				if n := r.InFlight(); n < 0 || n > entries {
					if outOfBounds.Add(1) == 1 {
						firstOut.Store(int64(n))
					}
				}
				st := r.Stats()
				if st.InFlight < 0 || st.InFlight > entries {
					if outOfBounds.Add(1) == 1 {
						firstOut.Store(int64(st.InFlight))
					}
				}
				if st.Completed < last {
					a.errorf("reader %d: Stats.Completed went from %d down to %d", i, last, st.Completed)
					return
				}
				// Each field is exact for its moment, not the snapshot as a
				// whole: Completed never counts more than was ever accepted
				// (every id handed out so far is an upper bound).
				if ids := a.nextID.Load(); st.Completed > uint64(ids) {
					a.errorf("reader %d: Stats.Completed %d > the %d requests ever submitted", i, st.Completed, ids)
					return
				}
				last = st.Completed
				reads.Add(1)
				if i == 1 {
					time.Sleep(0)
				}
			}
		}()
	}
	var cons sync.WaitGroup
	for i := range 3 {
		cons.Add(1)
		rng := rand.New(rand.NewPCG(seed, uint64(300+i)))
		tos := [...]time.Duration{-1, 0, 100 * time.Microsecond, 5 * time.Millisecond}
		go func() {
			defer cons.Done()
			awReaper(a, r, fmt.Sprintf("consumer %d", i), 1+i*3, func() time.Duration { return tos[rng.IntN(len(tos))] })
		}()
	}
	var prods sync.WaitGroup
	for i := range 2 {
		prods.Add(1)
		go func() {
			defer prods.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(400+i)))
			ops := make([]Op, 2*entries)
			reqs := make([]Request, 2*entries)
			for k := 0; k < batches && a.bad.Load() == 0; k++ {
				n := 1 + rng.IntN(len(ops))
				ids := make([]int64, n)
				for j := range n {
					ids[j] = a.id(awNop)
					ops[j] = Nop().WithUser(ids[j])
				}
				m, err := r.SubmitBatch(ops[:n], reqs[:n])
				if err != nil && !errors.Is(err, ErrFull) {
					a.errorf("producer %d: SubmitBatch: %v", i, err)
					return
				}
				for j := range m {
					a.accept(ids[j])
				}
				if m < n {
					time.Sleep(20 * time.Microsecond)
				}
			}
		}()
	}
	awWithin(t, awHang, "the producers", prods.Wait)
	awWithin(t, awHang, "delivery of every accepted request", func() {
		for a.nSeen.Load() < a.nAccepted.Load() && a.bad.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	})
	assertSettled(t, r)
	close(stop)
	awWithin(t, awHang, "the counter readers", readers.Wait)
	assert.Positive(t, reads.Load(), "the readers read the counters")
	assert.Zero(t, outOfBounds.Load(), "InFlight or Stats.InFlight reads outside [0, Entries=%d] (the first: %d)", entries, firstOut.Load())
	st := r.Stats()
	assert.Equal(t, uint64(a.nAccepted.Load()), st.Submitted, "Stats.Submitted")
	assert.Equal(t, st.Submitted, st.Completed, "Stats.Completed once quiet")
	assert.Zero(t, st.InFlight, "Stats.InFlight once quiet")
	awWithin(t, awHang, "Close with consumers parked", func() { r.Close() })
	awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
	assert.Zero(t, r.InFlight(), "InFlight after Close")
	a.check()
}
