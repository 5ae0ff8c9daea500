//go:build linux

package ioring

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// advSeed returns the stress test's seed: ADV_SEED when set (to replay a
// failure), else one from the clock. The test logs it.
func advSeed(t *testing.T) uint64 { return envSeed(t, "ADV_SEED") }

// envSeed returns the seed in the environment variable name when it is set
// (to replay a failure's random choices), else one from the clock.
func envSeed(t testing.TB, name string) uint64 {
	if s := os.Getenv(name); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, name)
		return v
	}
	return uint64(time.Now().UnixNano())
}

// uringMappings counts the process's io_uring mappings (its rings' SQ, CQ
// and SQE arrays, and provided-buffer rings).
func uringMappings(t *testing.T) int {
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	return strings.Count(string(maps), "anon_inode:[io_uring]")
}

// TestAdvRandomStress interleaves, from several goroutines and at random
// (seeded, reproducible with ADV_SEED=<seed>), every entry point: single
// submissions of good and bad ops, batches of every size up to twice the
// ring (some led by a bad op, refused whole), SubmitAndReap with odd dst
// lengths and timeouts, Start and Wait and Do under contexts that end at
// every moment (before, during, never), Ring.Cancel of slices mixing live,
// stale, zero and duplicate handles, Request.Cancel, Token.Cancel, Reset
// and Bind, CancelAll, Reap with odd timeouts and dst lengths, and foreign
// requests whose hooks complete them inline or later, re-enter the ring
// (Cancel, token cancel, Submit, Reap) or panic. Then it checks the
// contract: each accepted request completed exactly once, no completion
// of anything else; Stats' Submitted, Canceled and TimedOut equal what was
// accepted and delivered; nothing in flight; after Close no io_uring
// mapping and no fd is left (forEachBackend), nor a goroutine (TestMain).
func TestAdvRandomStress(t *testing.T) {
	seed := advSeed(t)
	t.Logf("seed %d (replay with ADV_SEED=%d)", seed, seed)
	maps := uringMappings(t)
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		advStress(t, r, seed)
	})
	assert.Equal(t, maps, uringMappings(t), "io_uring mappings left after Close")
}

// advTally tracks the requests of the stress test by user id.
type advTally struct {
	t        *testing.T
	accepted sync.Map // id -> *atomic.Int32, completions seen
	nAcc     atomic.Int64
	nextID   atomic.Int64
	canceled atomic.Int64 // completions with ErrCanceled, not ErrTimeout
	timedOut atomic.Int64 // completions with ErrTimeout
	recentMu sync.Mutex
	recent   [64]Request // handles for the cancelers, live or stale
	recentN  int
}

func (a *advTally) id() int64 { return a.nextID.Add(1) }

// register records id before its submission (its completion may come
// before Submit returns); settle drops it again when it was refused.
func (a *advTally) register(id int64) { a.accepted.Store(id, new(atomic.Int32)) }

func (a *advTally) settle(id int64, q Request, err error) {
	if err != nil {
		a.accepted.Delete(id)
		return
	}
	a.nAcc.Add(1)
	a.recentMu.Lock()
	a.recent[a.recentN%len(a.recent)] = q
	a.recentN++
	a.recentMu.Unlock()
}

// pick returns up to n handles from the recent ones, with repeats.
func (a *advTally) pick(rng *rand.Rand, n int) []Request {
	a.recentMu.Lock()
	defer a.recentMu.Unlock()
	out := make([]Request, n)
	for i := range out {
		out[i] = a.recent[rng.IntN(len(a.recent))]
	}
	return out
}

func (a *advTally) done(c Completion) {
	t := a.t
	v, ok := a.accepted.Load(c.User)
	if !assert.True(t, ok, "completion of a request never accepted: %+v", c) {
		return
	}
	if n := v.(*atomic.Int32).Add(1); n != 1 {
		t.Errorf("request %v (%v) completed %d times", c.User, c.Op, n)
	}
	switch {
	case errors.Is(c.Err, ErrTimeout):
		a.timedOut.Add(1)
	case errors.Is(c.Err, ErrCanceled):
		a.canceled.Add(1)
	case c.Err != nil && c.Op != OpForeign:
		t.Errorf("completion %v (%v): %v", c.User, c.Op, c.Err)
	}
}

func (a *advTally) doneAll(cs []Completion) {
	for _, c := range cs {
		a.done(c)
	}
}

// refused checks a refusal that is no bad input: the ring's slots ran out.
func advRefused(t *testing.T, err error, what string) {
	if err != nil && !errors.Is(err, ErrFull) {
		t.Errorf("%s refused: %v", what, err)
	}
}

func advStress(t *testing.T, r *Ring, seed uint64) {
	rd, wr := pipe(t)   // read by requests, written by the pump
	rd2, wr2 := pipe(t) // written by requests, drained by the pump
	a := &advTally{t: t}
	toks := []*Token{r.NewToken(), r.NewToken(), r.NewToken()}
	var (
		wg        sync.WaitGroup // workers
		pump      sync.WaitGroup
		transport sync.WaitGroup // foreign completions posted later
		stop      = make(chan struct{})
	)
	// The pump never blocks: once the workers stop, nothing reads rd, and
	// a blocking write into a full pipe would keep the pump from ever
	// seeing stop. A full pipe only skips a round of writing.
	require.NoError(t, unix.SetNonblock(wr, true))
	pump.Add(1)
	go func() { // the pump: data for the reads, room for the writes
		defer pump.Done()
		var buf [512]byte
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Write(wr, buf[:16]) // EAGAIN when full: the reads lag
			for {
				if n, _ := unix.Read(rd2, buf[:]); n <= 0 {
					break
				}
			}
			time.Sleep(300 * time.Microsecond)
		}
	}()
	require.NoError(t, unix.SetNonblock(rd2, true))

	// foreign returns a foreign op for id whose hook does one of several
	// things, and arranges for its transport to complete it later.
	foreign := func(rng *rand.Rand, id int64) (Op, func(q Request)) {
		var mu sync.Mutex
		var self Request
		var posted atomic.Bool
		post := func(n int, err error) {
			mu.Lock()
			q := self
			mu.Unlock()
			if posted.CompareAndSwap(false, true) {
				assert.NoError(t, r.Complete(q, n, err), "first Complete of %v", id)
			}
		}
		kind := rng.IntN(6)
		tok := toks[rng.IntN(len(toks))]
		hook := func() {
			switch kind {
			case 0: // completes inline
				post(0, ErrCanceled)
			case 1: // re-enters: cancels itself and its token, submits, reaps
				mu.Lock()
				q := self
				mu.Unlock()
				_ = q.Cancel()
				_ = tok.Cancel()
				nid := a.id()
				a.register(nid)
				nq, err := r.Submit(Nop().WithUser(nid))
				a.settle(nid, nq, err)
				var cs [2]Completion
				n, _ := r.Reap(cs[:], 0)
				a.doneAll(cs[:n])
				post(0, ErrCanceled)
			case 2: // panics, after posting
				post(0, ErrCanceled)
				panic("adv hook")
			default: // the transport ends it later
			}
		}
		op := Foreign(hook)
		if rng.IntN(2) == 0 {
			op = op.WithToken(tok)
		}
		if rng.IntN(3) == 0 {
			op = op.WithDeadline(time.Duration(1+rng.IntN(2000)) * time.Microsecond)
		}
		d := time.Duration(rng.IntN(3000)) * time.Microsecond
		after := func(q Request) { // self is set
			if !q.Pending() {
				posted.Store(true) // its token was canceled: completed already
				return
			}
			transport.Add(1)
			time.AfterFunc(d, func() { defer transport.Done(); post(5, nil) })
		}
		// Locked until self is set: the hook may run before Submit
		// returns. Set before the unlock, not after it: a hook waiting on
		// mu may take it the moment it is released (sync.Mutex hands it
		// over to a waiter that waited over 1ms), and would post to a
		// zero Request, leaving the real one uncompleted.
		mu.Lock()
		return op, func(q Request) {
			self = q
			mu.Unlock()
			after(q)
		}
	}

	randOp := func(rng *rand.Rand) Op {
		var op Op
		switch rng.IntN(6) {
		case 0:
			op = Nop()
		case 1:
			op = Timeout(time.Duration(rng.IntN(2000)) * time.Microsecond)
		case 2:
			op = Read(rd, make([]byte, 1+rng.IntN(32)), -1)
			if rng.IntN(2) == 0 {
				op = op.Unordered()
			}
		case 3:
			op = Write(wr2, make([]byte, 1+rng.IntN(32)), -1)
		case 4:
			op = Poll(rd, unix.POLLIN)
		default:
			op = Timeout(time.Hour) // only a cancel ends it
		}
		if rng.IntN(3) == 0 {
			op = op.WithToken(toks[rng.IntN(len(toks))])
		}
		if rng.IntN(4) == 0 {
			op = op.WithDeadline(time.Duration(1+rng.IntN(3000)) * time.Microsecond)
		}
		return op
	}
	badOps := []Op{{}, Read(rd, nil, 0), Read(-1, make([]byte, 1), 0), Timeout(-1), Nop().WithToken(&Token{}), Poll(rd, 0)}
	timeouts := []time.Duration{0, 1, time.Microsecond, time.Millisecond}

	worker := func(g int) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, uint64(g)))
		for range 2000 {
			switch k := rng.IntN(20); {
			case k < 4: // one submission
				id := a.id()
				if rng.IntN(4) == 0 {
					op, after := foreign(rng, id)
					a.register(id)
					q, err := r.Submit(op.WithUser(id))
					a.settle(id, q, err)
					advRefused(t, err, "foreign")
					after(q) // for a refused one, nothing
					continue
				}
				if rng.IntN(10) == 0 {
					_, err := r.Submit(badOps[rng.IntN(len(badOps))])
					assert.ErrorIs(t, err, ErrInvalid, "a bad op")
					continue
				}
				a.register(id)
				q, err := r.Submit(randOp(rng).WithUser(id))
				a.settle(id, q, err)
				advRefused(t, err, "Submit")
			case k < 6: // a batch, maybe led by a bad op
				n := rng.IntN(2*r.Entries() + 1)
				ops := make([]Op, n)
				ids := make([]int64, n)
				for i := range ops {
					ids[i] = a.id()
					ops[i] = randOp(rng).WithUser(ids[i])
					a.register(ids[i])
				}
				bad := n > 0 && rng.IntN(5) == 0
				if bad {
					ops[0] = badOps[rng.IntN(len(badOps))]
				}
				reqs := make([]Request, n+rng.IntN(3))
				got, err := r.SubmitBatch(ops, reqs)
				if bad {
					assert.ErrorIs(t, err, ErrInvalid, "a batch led by a bad op")
					assert.Zero(t, got)
				} else {
					advRefused(t, err, "SubmitBatch")
				}
				for i := range ops {
					if i < got {
						a.settle(ids[i], reqs[i], nil)
					} else {
						a.settle(ids[i], Request{}, ErrFull)
					}
				}
			case k < 7: // SubmitAndReap
				n := rng.IntN(3)
				ops := make([]Op, n)
				ids := make([]int64, n)
				for i := range ops {
					ids[i] = a.id()
					ops[i] = randOp(rng).WithUser(ids[i])
					a.register(ids[i])
				}
				reqs := make([]Request, n)
				dst := make([]Completion, 1+rng.IntN(8))
				got, reaped, err := r.SubmitAndReap(ops, reqs, dst, timeouts[rng.IntN(len(timeouts))])
				advRefused(t, err, "SubmitAndReap")
				for i := range ops {
					if i < got {
						a.settle(ids[i], reqs[i], nil)
					} else {
						a.settle(ids[i], Request{}, ErrFull)
					}
				}
				a.doneAll(dst[:reaped])
			case k < 9: // Start and Wait, or Do, under a context
				id := a.id()
				var ctx context.Context
				var cancel context.CancelFunc
				switch rng.IntN(3) {
				case 0:
					ctx, cancel = context.WithCancel(context.Background())
					cancel()
				case 1:
					ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.IntN(2000))*time.Microsecond)
				default:
					ctx, cancel = context.WithCancel(context.Background())
					time.AfterFunc(time.Duration(rng.IntN(2000))*time.Microsecond, cancel)
				}
				op := randOp(rng).WithUser(id)
				if rng.IntN(2) == 0 {
					a.register(id)
					q, err := r.Start(op)
					a.settle(id, q, err)
					advRefused(t, err, "Start")
					if err == nil {
						c, err := q.Wait(ctx)
						if assert.NoError(t, err, "Wait") {
							a.done(c)
						}
						_, err = q.Wait(ctx)
						assert.ErrorIs(t, err, ErrNotFound, "a second Wait")
					}
				} else {
					a.register(id)
					c, err := r.Do(ctx, op)
					switch {
					case err != nil:
						a.settle(id, Request{}, err)
						advRefused(t, err, "Do")
					case c.Req == (Request{}): // the context had ended: nothing started
						a.settle(id, Request{}, context.Canceled)
						assert.Error(t, c.Err)
					default:
						a.settle(id, c.Req, nil)
						a.done(c)
					}
				}
				cancel()
			case k < 11: // Ring.Cancel of a mixed slice
				reqs := append(a.pick(rng, rng.IntN(40)), Request{})
				n, err := r.Cancel(reqs...)
				if err != nil {
					var pe *HookPanicError
					assert.ErrorAs(t, err, &pe, "Ring.Cancel")
				}
				assert.LessOrEqual(t, n, len(reqs))
			case k < 12: // Request.Cancel
				q := a.pick(rng, 1)[0]
				if err := q.Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
					var pe *HookPanicError
					assert.ErrorAs(t, err, &pe, "Request.Cancel")
				}
			case k < 14: // tokens
				tok := toks[rng.IntN(len(toks))]
				switch rng.IntN(3) {
				case 0:
					if err := tok.Cancel(); err != nil {
						var pe *HookPanicError
						assert.ErrorAs(t, err, &pe, "Token.Cancel")
					}
				case 1:
					if err := tok.Reset(); err != nil {
						assert.ErrorIs(t, err, ErrInvalid)
					}
				default:
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(1000))*time.Microsecond)
					stop := tok.Bind(ctx)
					if rng.IntN(2) == 0 {
						stop()
					}
					defer cancel()
				}
			case k < 15: // CancelAll
				if rng.IntN(4) == 0 {
					if err := r.CancelAll(); err != nil {
						var pe *HookPanicError
						assert.ErrorAs(t, err, &pe, "CancelAll")
					}
				}
			case k < 19: // Reap
				dst := make([]Completion, 1+rng.IntN(2*r.Entries()))
				n, err := r.Reap(dst, timeouts[rng.IntN(len(timeouts))])
				assert.NoError(t, err)
				a.doneAll(dst[:n])
			default: // Stats at any moment (InFlight's bound: TestAdvInFlightWithinEntries)
				st := r.Stats()
				assert.LessOrEqual(t, st.Canceled+st.TimedOut, st.Submitted, "cancels counted once")
			}
		}
	}
	const workers = 4
	for g := range workers {
		wg.Add(1)
		go worker(g)
	}
	// A reaper alongside, so that slots come free.
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		var cs [16]Completion
		for {
			n, err := r.Reap(cs[:], 5*time.Millisecond)
			a.doneAll(cs[:n])
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed)
				return
			}
		}
	}()
	waitWorkers := make(chan struct{})
	go func() { wg.Wait(); close(waitWorkers) }()
	select {
	case <-waitWorkers:
	case <-time.After(2 * time.Minute):
		t.Fatal("workers stuck")
	}
	close(stop)
	pump.Wait()

	// End everything: cancel what is left, let the transports post the
	// foreign ones, and wait until every accepted request completed.
	for _, tok := range toks {
		_ = tok.Cancel()
	}
	_ = r.CancelAll()
	transport.Wait()
	require.Eventually(t, func() bool {
		n := 0
		a.accepted.Range(func(_, v any) bool {
			if v.(*atomic.Int32).Load() > 0 {
				n++
			}
			return true
		})
		return int64(n) == a.nAcc.Load()
	}, 20*time.Second, time.Millisecond, "every accepted request completes")
	assertSettled(t, r)
	st := r.Stats()
	assert.Equal(t, uint64(a.nAcc.Load()), st.Submitted, "Stats.Submitted")
	assert.Equal(t, st.Submitted, st.Completed)
	assert.Zero(t, st.InFlight)
	assert.Equal(t, uint64(a.canceled.Load()), st.Canceled, "Stats.Canceled")
	assert.Equal(t, uint64(a.timedOut.Load()), st.TimedOut, "Stats.TimedOut")
	for _, tok := range toks {
		assert.Zero(t, tok.Pending())
		assert.NoError(t, tok.Reset())
	}
	require.NoError(t, r.Close())
	select {
	case <-reaped:
	case <-time.After(10 * time.Second):
		t.Fatal("the reaper did not end at Close")
	}
	t.Logf("%d requests accepted, %d canceled, %d timed out", a.nAcc.Load(), a.canceled.Load(), a.timedOut.Load())
}
