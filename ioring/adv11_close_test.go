//go:build linux

package ioring

import (
	"context"
	"errors"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eleventh round: hostile use of the public API. This file: Close racing
// every other method of the ring and of the values it made.

// adv11Seed returns the round's seed (ADV11_SEED to replay), logged.
func adv11Seed(t *testing.T) uint64 {
	seed := envSeed(t, "ADV11_SEED")
	t.Logf("seed %d (replay with ADV11_SEED=%d)", seed, seed)
	return seed
}

// adv11Closed waits until Close of r has drained it: Reap says ErrClosed
// only once the ring is closed and nothing is in flight or queued, which is
// the moment before Close fences the backend off and releases it.
func adv11Closed(t *testing.T, r *Ring) {
	t.Helper()
	var c [4]Completion
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := r.Reap(c[:], 0); err != nil {
			require.ErrorIs(t, err, ErrClosed)
			return
		}
	}
	t.Fatal("Reap did not say ErrClosed within 10s of Close")
}

// TestAdv11BufRingCloseDuringRingClose: BufRing.Close called while
// Ring.Close releases the ring (after the drain, while it closes the
// backend and before it closes the BufRings left) must return nil (it won)
// or ErrClosed (Ring.Close's "every other call returns ErrClosed"), never
// a system call's error from a kernel ring that is gone, and must not
// touch the io_uring fd that Close is closing (a number another ring may
// take at once: its buffer group would be unregistered).
func TestAdv11BufRingCloseDuringRingClose(t *testing.T) {
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	forEachBackend(t, 4, func(t *testing.T, _ *Ring) {
		bad := map[string]int{}
		for i := 0; i < rounds && len(bad) == 0; i++ {
			r, err := New(Config{Entries: 4, Backend: backendOf(t)})
			require.NoError(t, err)
			brs := make([]*BufRing, 64)
			for k := range brs {
				brs[k], err = r.NewBufRing(1, 8)
				require.NoError(t, err)
			}
			errs := make([]error, len(brs))
			done := make(chan struct{})
			go func() {
				defer close(done)
				adv11Closed(t, r)
				for k, b := range brs {
					errs[k] = b.Close()
				}
			}()
			require.NoError(t, r.Close())
			<-done
			for k, err := range errs {
				if err != nil && !errors.Is(err, ErrClosed) {
					if bad[err.Error()]++; bad[err.Error()] <= 3 {
						t.Logf("round %d: BufRing %d: Close: %v", i, k, err)
					}
				}
				// Closed whichever way: a second Close says so.
				assert.ErrorIs(t, brs[k].Close(), ErrClosed, "BufRing %d closed twice", k)
				assert.ErrorIs(t, brs[k].Release(0), ErrClosed, "BufRing %d", k)
			}
		}
		assert.Empty(t, bad, "BufRing.Close during Ring.Close: want nil or ErrClosed")
	})
}

// adv11Tally checks exactly-once delivery: every Request accepted gets one
// final completion, and no completion names a Request never accepted. A
// Request's ID (generation and slot) names one submission for the ring's
// life; a completion may be reaped by another goroutine before its
// submitter records it, so the two are matched at the end.
type adv11Tally struct {
	mu        sync.Mutex
	accepted  map[uint64]string // by Request.ID: what it was
	delivered map[uint64]int
	last      map[uint64]Completion
}

func newAdv11Tally() *adv11Tally {
	return &adv11Tally{accepted: map[uint64]string{}, delivered: map[uint64]int{}, last: map[uint64]Completion{}}
}

func (x *adv11Tally) accept(q Request, what string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.accepted[q.ID()]; ok {
		x.accepted[q.ID()] = old + " and again " + what
		return
	}
	x.accepted[q.ID()] = what
}

func (x *adv11Tally) deliver(c Completion) {
	if c.More {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.delivered[c.Req.ID()]++
	x.last[c.Req.ID()] = c
}

// check reports requests not delivered exactly once.
func (x *adv11Tally) check(t *testing.T) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	bad := 0
	for id, n := range x.delivered {
		what, ok := x.accepted[id]
		switch {
		case !ok:
			t.Errorf("completion of %v, never accepted: %+v", x.last[id].Req, x.last[id])
			bad++
		case n != 1:
			t.Errorf("%v (%s) delivered %d times", x.last[id].Req, what, n)
			bad++
		case strings.Contains(what, " and again "):
			t.Errorf("request %#x handed out twice: %s", id, what)
			bad++
		}
	}
	missing := 0
	for id, what := range x.accepted {
		if x.delivered[id] == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("request %#x (%s) never delivered", id, what)
			}
		}
	}
	if missing > 0 || bad > 0 {
		t.Errorf("%d of %d requests never delivered, %d wrong", missing, len(x.accepted), bad)
	}
}

// adv11Allowed reports whether err is one a call racing Close may return:
// nothing, the ring closed, a full ring, a request not found, a register
// that finds one already (EBUSY) or none (ENXIO), a token still pending.
func adv11Allowed(err error) bool {
	return err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrFull) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENXIO)
}

// TestAdv11CloseRacesEveryMethod: goroutines call every method of a ring
// and of its tokens and BufRings, at random, while Close comes at a random
// moment. Every call returns nil or an error it is documented to return
// (nothing else, no panic, no hang), every accepted request is delivered
// exactly once (Reap, Wait, Do, what is left after Close), and nothing
// leaks (the fd check of forEachBackend, goroutines by goleak in
// TestMain).
func TestAdv11CloseRacesEveryMethod(t *testing.T) {
	seed := adv11Seed(t)
	rounds := 25
	if testing.Short() {
		rounds = 6
	}
	forEachBackend(t, 4, func(t *testing.T, _ *Ring) {
		for round := 0; round < rounds && !t.Failed(); round++ {
			adv11CloseRound(t, backendOf(t), seed+uint64(round))
		}
	})
}

func adv11CloseRound(t *testing.T, be Backend, seed uint64) {
	before, err := fdcheck.Take()
	require.NoError(t, err)
	r, err := New(Config{Entries: 16, Backend: be})
	require.NoError(t, err)
	rd, wr := pipe(t)
	sa, sb := socketpair(t, unix.SOCK_STREAM)
	rng := rand.New(rand.NewPCG(seed, 11))
	x := newAdv11Tally()
	var unexpected sync.Map // error text -> method
	note := func(method string, err error) {
		if !adv11Allowed(err) {
			unexpected.LoadOrStore(method+": "+err.Error(), true)
		}
	}
	tok := r.NewToken()
	var fq sync.Map // foreign requests to complete: ID -> Request
	var stop atomic.Bool
	var wg sync.WaitGroup
	const workers = 7
	for g := 0; g < workers; g++ {
		wg.Add(1)
		seedG := rng.Uint64()
		go func(g int) {
			defer wg.Done()
			rg := rand.New(rand.NewPCG(seedG, uint64(g)))
			var cs [4]Completion
			reqs := make([]Request, 3)
			for !stop.Load() {
				switch rg.IntN(14) {
				case 0:
					q, err := r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok))
					note("Submit read", err)
					if err == nil {
						x.accept(q, "read")
					}
				case 1:
					ops := []Op{Nop(), Timeout(time.Duration(rg.IntN(200)) * time.Microsecond), Poll(sa, unix.POLLIN).WithDeadline(time.Millisecond)}
					n, err := r.SubmitBatch(ops, reqs)
					note("SubmitBatch", err)
					for _, q := range reqs[:n] {
						x.accept(q, "batch")
					}
				case 2:
					n, m, err := r.SubmitAndReap([]Op{Nop()}, reqs[:1], cs[:], time.Duration(rg.IntN(2))*time.Millisecond)
					note("SubmitAndReap", err)
					if n == 1 {
						x.accept(reqs[0], "submit-and-reap")
					}
					for _, c := range cs[:m] {
						x.deliver(c)
					}
				case 3:
					n, err := r.Reap(cs[:], time.Duration(rg.IntN(3)-1)*time.Millisecond)
					if err != nil && !errors.Is(err, ErrClosed) {
						note("Reap", err)
					}
					for _, c := range cs[:n] {
						x.deliver(c)
					}
					if n == 0 && errors.Is(err, ErrClosed) {
						return
					}
				case 4:
					// Start+Wait under a short context: Wait always returns
					// the completion (accepted once, delivered once).
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rg.IntN(500))*time.Microsecond)
					q, err := r.Start(Recv(sa, make([]byte, 1), 0))
					note("Start", err)
					if err == nil {
						x.accept(q, "started recv")
						c, err := q.Wait(ctx)
						note("Wait", err)
						if err == nil {
							x.deliver(c)
						}
					}
					cancel()
				case 5:
					ctx, cancel := context.WithCancel(context.Background())
					if rg.IntN(2) == 0 {
						cancel()
					}
					c, err := r.Do(ctx, Timeout(50*time.Microsecond))
					note("Do", err)
					if err == nil && c.Req != (Request{}) {
						x.accept(c.Req, "do")
						x.deliver(c)
					}
					cancel()
				case 6:
					q, err := r.Submit(Foreign(func() {}).WithToken(tok))
					note("Submit foreign", err)
					if err == nil {
						x.accept(q, "foreign")
						fq.Store(q.ID(), q)
					}
					fq.Range(func(k, v any) bool {
						if rg.IntN(2) == 0 {
							fq.Delete(k)
							err := r.Complete(v.(Request), 0, nil)
							note("Complete", err)
						}
						return true
					})
				case 7:
					note("CancelAll", r.CancelAll())
				case 8:
					note("Token.Cancel", tok.Cancel())
					err := tok.Reset()
					if err != nil && !errors.Is(err, ErrInvalid) { // pending members
						note("Token.Reset", err)
					}
				case 9:
					_, err := r.Cancel(reqs...)
					note("Cancel", err)
				case 10:
					note("RegisterFiles", r.RegisterFiles([]int{rd, wr, -1}))
					note("UnregisterFiles", r.UnregisterFiles())
				case 11:
					note("RegisterBuffers", r.RegisterBuffers([][]byte{make([]byte, 16)}))
					note("UnregisterBuffers", r.UnregisterBuffers())
				case 12:
					b, err := r.NewBufRing(2, 8)
					note("NewBufRing", err)
					if err == nil {
						if q, err := r.Submit(RecvMultishot(sa, b, 0)); err == nil {
							x.accept(q, "recv-multishot")
							note("Request.Cancel", ignoreNotFound(q.Cancel()))
						} else {
							// Good input: never said bad as Close takes the
							// BufRing down (TestAdv11SubmitRacingCloseSaysClosed).
							note("Submit recv-multishot", err)
						}
						err := b.Release(1) // never handed out: refused
						if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrClosed) {
							note("BufRing.Release", err)
						}
						// b stays open: Ring.Close closes it. (BufRing.Close
						// racing Ring.Close is TestAdv11BufRingCloseDuringRingClose.)
					}
				case 13:
					_ = r.Stats()
					_ = r.InFlight()
					if n, err := unix.Write(sb, []byte{1}); n != 1 {
						note("write", err)
					}
					unix.Write(wr, []byte{1})
				}
			}
		}(g)
	}
	time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	// Close from a goroutine of its own: the foreign requests still in
	// flight are completed by their owner (this one) meanwhile.
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	deadline := time.After(10 * time.Second)
	for waiting := true; waiting; {
		select {
		case err := <-closed:
			note("Close", err)
			waiting = false
		case <-deadline:
			t.Fatal("Close did not return within 10s")
		default:
			fq.Range(func(k, v any) bool {
				fq.Delete(k)
				r.Complete(v.(Request), 0, ErrCanceled)
				return true
			})
			time.Sleep(100 * time.Microsecond)
		}
	}
	stop.Store(true)
	wg.Wait()
	var cs [16]Completion
	for {
		n, err := r.Reap(cs[:], 0)
		for _, c := range cs[:n] {
			x.deliver(c)
		}
		if err != nil {
			require.ErrorIs(t, err, ErrClosed)
			break
		}
	}
	x.check(t)
	unexpected.Range(func(k, _ any) bool {
		t.Errorf("seed %d: unexpected error from %v", seed, k)
		return true
	})
	assert.Zero(t, r.InFlight())
	// The ring's own fds are gone: only the test's pipe and socketpair
	// (4 fds) are left of what this round opened.
	left, err := fdcheck.Opened(before)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(left), 4, "seed %d: fds left: %q", seed, left)
}

// ignoreNotFound maps ErrNotFound to nil.
func ignoreNotFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// TestAdv11SubmitRacingCloseSaysClosed: a Submit whose input is good (a
// BufRing of the ring, open; a registered file in range) that races Close
// is refused with ErrClosed (or ErrFull, or accepted), never with
// ErrInvalid: the input was not bad, only the ring went away. Op.check says
// so ("after Close the answer is ErrClosed ... not a complaint about an
// input that was good until then") but looks at the ring's closed state
// before it looks at its BufRings and registered files, which Close takes
// down afterwards: a Close that runs in between makes the input look bad.
func TestAdv11SubmitRacingCloseSaysClosed(t *testing.T) {
	rounds := 500
	if testing.Short() {
		rounds = 100
	}
	forEachBackend(t, 4, func(t *testing.T, _ *Ring) {
		sa, _ := socketpair(t, unix.SOCK_STREAM)
		rd, _ := pipe(t)
		bad := map[string]int{}
		for i := 0; i < rounds; i++ {
			r, err := New(Config{Entries: 2, Backend: backendOf(t)})
			require.NoError(t, err)
			br, err := r.NewBufRing(1, 8)
			require.NoError(t, err)
			require.NoError(t, r.RegisterFiles([]int{rd}))
			var mu sync.Mutex
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					<-start
					for {
						op := RecvMultishot(sa, br, 0)
						if g%2 == 1 {
							op = Read(0, make([]byte, 1), 0).FixedFile()
						}
						_, err := r.Submit(op)
						if errors.Is(err, ErrClosed) {
							return
						}
						if err != nil && !errors.Is(err, ErrFull) {
							mu.Lock()
							bad[err.Error()]++
							mu.Unlock()
							return
						}
					}
				}(g)
			}
			close(start)
			runtime.Gosched()
			require.NoError(t, r.Close())
			wg.Wait()
		}
		assert.Empty(t, bad, "good input refused as bad while the ring closed")
	})
}
