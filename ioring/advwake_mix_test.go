//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestAdvWakeCloseWhileParked closes a ring while consumers of every kind
// are blocked on it: Reap with no limit and with a long one,
// SubmitAndReap with no limit, two Request.Wait on each of some pending
// pipe reads, a Do on a pipe read, while more reads are queued for Reap,
// foreign requests wait for their transport (whose hook completes them
// at Close) and a timer runs. Every goroutine must return: the waiters
// with their read's completion (canceled), Do with ErrCanceled, the Reap
// consumers with every queued completion between them and then
// ErrClosed; each accepted request delivered exactly once.
func TestAdvWakeCloseWhileParked(t *testing.T) {
	seed := awSeed(t)
	t.Logf("seed %d (replay with ADVWAKE_SEED=%d)", seed, seed)
	for _, procs := range []int{1, 2, 4} {
		for _, b := range awBackends {
			t.Run(fmt.Sprintf("procs=%d/backend=%v", procs, b), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				awProcs(t, procs)
				rng := rand.New(rand.NewPCG(seed, uint64(procs)))
				for round := range 8 {
					awCloseParked(t, b, rng, round)
					if t.Failed() {
						break
					}
				}
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

func awCloseParked(t *testing.T, b Backend, rng *rand.Rand, round int) {
	r := awRing(t, b, 64)
	a := newAWTally(t, 256)
	p := newAWPipes(t, 8, rng.Uint64())
	defer p.stop() // nothing is written: every read ends by Close's cancel
	var all sync.WaitGroup
	reapErrs := make(chan error, 16)
	for i := range 4 {
		all.Add(1)
		to := time.Duration(-1)
		if i%2 == 1 {
			to = time.Hour
		}
		go func() {
			defer all.Done()
			reapErrs <- awReaper(a, r, fmt.Sprintf("round %d consumer %d", round, i), 1+i, func() time.Duration { return to })
		}()
	}
	// Reads queued for Reap, on pipes 0-3.
	for i := range 6 {
		id := a.id(awRead)
		_, err := r.Submit(Read(p.rd[i%4], make([]byte, 1), -1).WithUser(id))
		require.NoError(t, err)
		a.accept(id)
	}
	// Foreign requests: their hook completes them (Close calls it).
	for range 3 {
		id := a.id(awForeign)
		var qp atomic.Pointer[Request]
		q, err := r.Submit(Foreign(func() {
			if q := qp.Load(); q != nil {
				r.Complete(*q, 0, ErrCanceled)
			}
		}).WithUser(id))
		require.NoError(t, err)
		qp.Store(&q)
		a.accept(id)
	}
	// A timer that may or may not run out before Close.
	{
		id := a.id(awTimer)
		_, err := r.Submit(Timeout(time.Duration(rng.IntN(3000)) * time.Microsecond).WithUser(id))
		require.NoError(t, err)
		a.accept(id)
	}
	// Two waiters on each of two started reads, on pipes 4 and 5.
	var waitWins atomic.Int32
	for i := range 2 {
		id := a.id(awRead)
		q, err := r.Start(Read(p.rd[4+i], make([]byte, 1), -1).WithUser(id))
		require.NoError(t, err)
		a.accept(id)
		for w := range 2 {
			all.Add(1)
			go func() {
				defer all.Done()
				c, err := q.Wait(context.Background())
				if err != nil {
					if !errors.Is(err, ErrNotFound) {
						a.errorf("round %d waiter %d/%d: Wait: %v", round, i, w, err)
					}
					return
				}
				waitWins.Add(1)
				a.got(c, "Wait")
			}()
		}
	}
	// A Do on pipe 6, and a SubmitAndReap with no limit (a read on pipe 7).
	all.Add(2)
	go func() {
		defer all.Done()
		id := a.id(awRead)
		c, err := r.Do(context.Background(), Read(p.rd[6], make([]byte, 1), -1).WithUser(id))
		if err != nil {
			if !errors.Is(err, ErrClosed) { // Close may come before Do's Start
				a.errorf("round %d: Do: %v", round, err)
			}
			return
		}
		a.accept(id)
		a.got(c, "Do")
	}()
	go func() {
		defer all.Done()
		id := a.id(awRead)
		var reqs [1]Request
		dst := make([]Completion, 2)
		s, n, err := r.SubmitAndReap([]Op{Read(p.rd[7], make([]byte, 1), -1).WithUser(id)}, reqs[:], dst, -1)
		if s == 1 {
			a.accept(id)
		}
		for i := range dst[:n] {
			a.got(dst[i], "SubmitAndReap")
		}
		if err != nil && !errors.Is(err, ErrClosed) {
			a.errorf("round %d: SubmitAndReap: %v", round, err)
		}
		if s != 1 && !errors.Is(err, ErrClosed) {
			a.errorf("round %d: SubmitAndReap submitted %d: %v", round, s, err)
		}
		// Its own completion may have gone to another consumer; if it
		// returned early with another's, keep reaping like them.
		if err == nil {
			reapErrs <- awReaper(a, r, "SubmitAndReap after", 2, func() time.Duration { return -1 })
		}
	}()
	// Let them park, for a random moment.
	time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
	awWithin(t, awHang, fmt.Sprintf("round %d: Close with consumers parked", round), func() {
		if err := r.Close(); err != nil {
			t.Errorf("round %d: Close: %v", round, err)
		}
	})
	awWithin(t, awHang, fmt.Sprintf("round %d: every consumer's return after Close", round), all.Wait)
	assert.EqualValues(t, 2, waitWins.Load(), "round %d: one Wait per started read got it", round)
	close(reapErrs)
	for err := range reapErrs {
		assert.ErrorIs(t, err, ErrClosed, "round %d: a Reap consumer's last error", round)
	}
	var dst [1]Completion
	n, err := r.Reap(dst[:], 0)
	assert.Zero(t, n, "round %d: completions left after every consumer saw ErrClosed", round)
	assert.ErrorIs(t, err, ErrClosed)
	a.check()
}

// TestAdvWakeRandomMix is a long seeded mix (ADVWAKE_SEED=<seed> replays
// it) of everything that makes or takes completions from several
// goroutines at once: NOPs one by one, in batches and with SubmitAndReap;
// pipe reads whose data a writer sends at random moments; Start with one
// or two waiters; Do under contexts that end at random; timers; foreign
// requests completed by a transport goroutine at random moments; cancels
// of random recent requests and the odd CancelAll; consumers in Reap with
// every kind of timeout. It ends with Close while consumers are still
// blocked and checks that each accepted request was delivered exactly
// once, that every goroutine returned (Reap ones with ErrClosed), that
// InFlight stayed within Entries and Stats.Completed never went down, and
// that no goroutine or fd is left.
func TestAdvWakeRandomMix(t *testing.T) {
	seed := awSeed(t)
	t.Logf("seed %d (replay with ADVWAKE_SEED=%d)", seed, seed)
	for _, procs := range []int{1, 2, 4} {
		for _, b := range awBackends {
			t.Run(fmt.Sprintf("procs=%d/backend=%v", procs, b), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				awProcs(t, procs)
				awRandomMix(t, b, seed^uint64(procs)<<32^uint64(b))
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

func awRandomMix(t *testing.T, b Backend, seed uint64) {
	const (
		entries = 32
		actors  = 4
		perActs = 1200
	)
	r := awRing(t, b, entries)
	a := newAWTally(t, actors*perActs*20)
	p := newAWPipes(t, 8, seed)
	f := newAWForeigns(t, a, r, seed)

	var recentMu sync.Mutex
	var recent [32]Request
	var recentN int
	remember := func(q Request) {
		recentMu.Lock()
		recent[recentN%len(recent)] = q
		recentN++
		recentMu.Unlock()
	}

	// Counter watcher.
	var outOfBounds, firstOut atomic.Int64
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		var last uint64
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			// Out of bounds is recorded, not reported at once: the rest
			// of the mix runs to its end (a.errorf would stop the actors).
			if n := r.InFlight(); n < 0 || n > entries {
				if outOfBounds.Add(1) == 1 {
					firstOut.Store(int64(n))
				}
			}
			st := r.Stats()
			if st.Completed < last {
				a.errorf("Stats.Completed went from %d down to %d", last, st.Completed)
				return
			}
			last = st.Completed
			time.Sleep(50 * time.Microsecond)
		}
	}()

	var cons sync.WaitGroup
	reapErrs := make([]error, 4)
	for i := range reapErrs {
		cons.Add(1)
		rng := rand.New(rand.NewPCG(seed, uint64(500+i)))
		tos := [...]time.Duration{-1, -1, 0, 50 * time.Microsecond, time.Millisecond, 20 * time.Millisecond, time.Hour}
		go func() {
			defer cons.Done()
			reapErrs[i] = awReaper(a, r, fmt.Sprintf("consumer %d", i), 1+i, func() time.Duration { return tos[rng.IntN(len(tos))] })
		}()
	}

	// Waiters started by the actors; they may still be blocked at Close.
	var waiters sync.WaitGroup
	var acts sync.WaitGroup
	for i := range actors {
		acts.Add(1)
		go func() {
			defer acts.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(600+i)))
			who := fmt.Sprintf("actor %d", i)
			submit := func(op Op, id int64) (Request, bool) {
				q, err := r.Submit(op.WithUser(id))
				if err != nil {
					if !errors.Is(err, ErrFull) {
						a.errorf("%s: Submit %v: %v", who, op.Code(), err)
					}
					return Request{}, false
				}
				a.accept(id)
				remember(q)
				return q, true
			}
			for k := 0; k < perActs && a.bad.Load() == 0; k++ {
				switch op := rng.IntN(20); {
				case op < 4:
					awProduceNops(a, r, rng, 1+rng.IntN(4), who)
				case op < 8: // a pipe read; its byte follows at a random moment
					pi := rng.IntN(len(p.rd))
					id := a.id(awRead)
					if _, ok := submit(Read(p.rd[pi], make([]byte, 1), -1), id); ok {
						p.bytes <- pi
					}
				case op < 10: // a started read with one or two waiters
					pi := rng.IntN(len(p.rd))
					id := a.id(awRead)
					q, err := r.Start(Read(p.rd[pi], make([]byte, 1), -1).WithUser(id))
					if err != nil {
						if !errors.Is(err, ErrFull) {
							a.errorf("%s: Start: %v", who, err)
						}
						continue
					}
					a.accept(id)
					remember(q)
					p.bytes <- pi
					nw := 1 + rng.IntN(2)
					var wins atomic.Int32
					var left atomic.Int32
					left.Store(int32(nw))
					for range nw {
						waiters.Add(1)
						go func() {
							defer waiters.Done()
							c, err := q.Wait(context.Background())
							switch {
							case err == nil:
								wins.Add(1)
								a.got(c, "Wait")
							case !errors.Is(err, ErrNotFound):
								a.errorf("Wait: %v", err)
							}
							if left.Add(-1) == 0 && wins.Load() != 1 {
								a.errorf("%d of %d waiters of one request got its completion", wins.Load(), nw)
							}
						}()
					}
				case op < 12: // Do on a pipe read, under a context that may end
					pi := rng.IntN(len(p.rd))
					id := a.id(awRead)
					ctx, cancel := awCtx([]time.Duration{-1, 0, 100 * time.Microsecond, 2 * time.Millisecond}[rng.IntN(4)])
					p.bytes <- pi // its byte, which stays for the next read if Do ends without it
					c, err := r.Do(ctx, Read(p.rd[pi], make([]byte, 1), -1).WithUser(id))
					cancel()
					switch {
					case err != nil:
						if !errors.Is(err, ErrFull) {
							a.errorf("%s: Do: %v", who, err)
						}
					case c.Req == (Request{}):
						// The context had ended: nothing was submitted.
						if !errors.Is(c.Err, ErrCanceled) {
							a.errorf("%s: Do with an ended context: %+v", who, c)
						}
					default:
						a.accept(id)
						a.got(c, "Do")
					}
				case op < 14: // a timer
					id := a.id(awTimer)
					submit(Timeout(time.Duration(rng.IntN(2000))*time.Microsecond), id)
				case op < 16: // a foreign request, completed by the transport later
					id := a.id(awForeign)
					if q, ok := submit(Foreign(func() {}), id); ok {
						f.reqs <- q
					}
				case op < 19: // cancel some recent requests, live or stale
					recentMu.Lock()
					var qs [3]Request
					for j := range qs {
						qs[j] = recent[rng.IntN(len(recent))]
					}
					recentMu.Unlock()
					if rng.IntN(2) == 0 {
						if _, err := r.Cancel(qs[:]...); err != nil {
							a.errorf("%s: Cancel: %v", who, err)
						}
					} else if err := qs[0].Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
						a.errorf("%s: Request.Cancel: %v", who, err)
					}
				default:
					if rng.IntN(10) == 0 {
						if err := r.CancelAll(); err != nil {
							a.errorf("%s: CancelAll: %v", who, err)
						}
					}
				}
			}
		}()
	}
	awWithin(t, 2*awHang, "the actors", acts.Wait)
	// The transport completes what it holds; the writer writes every byte
	// asked for: every request accepted so far can complete.
	awWithin(t, awHang, "the foreign transport", f.stop)
	awWithin(t, awHang, "the pipe writer", p.stop)
	awWithin(t, awHang, "the waiters of started requests", waiters.Wait)
	awWithin(t, awHang, "delivery of every accepted request", func() {
		for a.nSeen.Load() < a.nAccepted.Load() && a.bad.Load() == 0 {
			time.Sleep(100 * time.Microsecond)
		}
	})
	assertSettled(t, r)
	close(stopWatch)
	awWithin(t, awHang, "the counter watcher", watch.Wait)
	assert.Zero(t, outOfBounds.Load(), "InFlight reads outside [0, Entries=%d] (the first: %d)", entries, firstOut.Load())
	st := r.Stats()
	assert.Equal(t, uint64(a.nAccepted.Load()), st.Submitted, "Stats.Submitted")
	assert.Equal(t, st.Submitted, st.Completed+uint64(st.InFlight), "Submitted == Completed + InFlight once quiet")
	awWithin(t, awHang, "Close with consumers parked", func() { r.Close() })
	awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
	for i, err := range reapErrs {
		assert.ErrorIs(t, err, ErrClosed, "consumer %d's last Reap", i)
	}
	a.check()
}
