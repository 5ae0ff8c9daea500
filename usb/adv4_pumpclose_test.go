package usb

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
)

// adv4CloseRunner is the Runner of TestAdv4PumpSubmitClose: every other
// transfer of an endpoint returns at once, the rest wait for their cancel
// (so that Close has transfers to cancel and wait for). It records every
// Run that comes after its Close, and every transfer run twice.
type adv4CloseRunner struct {
	closes   atomic.Int32
	closed   atomic.Bool
	lateRuns atomic.Int32 // Runs that began after Close
	twice    atomic.Int32 // transfers Run twice
	runs     sync.Map     // *Transfer: struct{}
	n        atomic.Uint32
}

func (r *adv4CloseRunner) Check(EndpointDesc, []byte) error { return nil }
func (r *adv4CloseRunner) ClearHalt(EndpointDesc) error     { return nil }
func (r *adv4CloseRunner) Reset() error                     { return nil }

func (r *adv4CloseRunner) Close() error {
	r.closed.Store(true)
	r.closes.Add(1)
	return nil
}

func (r *adv4CloseRunner) Run(t *Transfer) (int, error) {
	if r.closed.Load() {
		r.lateRuns.Add(1)
	}
	if _, loaded := r.runs.LoadOrStore(t, struct{}{}); loaded {
		r.twice.Add(1)
	}
	if r.n.Add(1)%2 == 0 {
		return len(t.Buf()), nil
	}
	stop := make(chan struct{})
	if !t.OnCancel(func() { close(stop) }) {
		return 0, ErrCanceled
	}
	<-stop
	return 0, ErrCanceled
}

// TestAdv4PumpSubmitClose races Pump.Submit against Pump.Close, many
// times. Every Submit either fails with ErrClosed or returns a request
// that completes exactly once (with its real result, or ErrCanceled); the
// ring accepts no transfer once Close has returned, Close returns only
// after every accepted transfer completed, the Runner is closed once and
// runs nothing after its Close, and no goroutine is left.
//
// Before the fix, Submit looked at Pump.closing and then counted the
// transfer in a sync.WaitGroup: a Submit between the two let Close's Wait
// return (or run at zero, the WaitGroup misuse its documentation forbids:
// the race detector reports it, and Wait may panic "WaitGroup is reused
// before previous Wait has returned"), and the transfer was accepted by
// the ring after Close had returned. A goroutine that yields between the
// two (Pump.beforeCount, a test hook) makes the window wide.
func TestAdv4PumpSubmitClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		t.Skipf("no ring on this system: %v", err)
	}
	defer ring.Close()
	eps := []EndpointDesc{pumpIn, pumpIn2}
	const submitters = 4
	iters := 400
	if testing.Short() {
		iters = 100
	}
	var lateAccepts, pendingAfterClose, badErrs, badResults, accepted atomic.Int32
	for i := range iters {
		run := &adv4CloseRunner{}
		p := NewPump(ring, eps, run)
		var closeReturned atomic.Bool
		p.accepted = func(*Transfer) {
			if closeReturned.Load() {
				lateAccepts.Add(1)
			}
		}
		if i%2 == 0 {
			// Half the rounds yield in Submit between its look at the
			// Pump's state and its count of the transfer, where the race
			// was.
			p.beforeCount = runtime.Gosched
		}
		before := accepted.Load()
		var mu sync.Mutex
		var reqs []ioring.Request // accepted, their Submit returned
		start := make(chan struct{})
		var wg sync.WaitGroup
		for s := range submitters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				buf := make([]byte, 8)
				var mine []ioring.Request // accepted, not waited for yet
				for k := 0; ; k++ {
					q, err := p.Submit(eps[(s+k)%2], buf, Xfer{User: s}, true)
					if err != nil {
						if !errors.Is(err, ErrClosed) {
							badErrs.Add(1)
							t.Errorf("Submit: %v", err)
						}
						break
					}
					accepted.Add(1)
					mu.Lock()
					reqs = append(reqs, q)
					mu.Unlock()
					mine = append(mine, q)
					// Every other one is waited for at once (a transfer
					// the Runner holds until Close makes it wait), the
					// others after Close.
					if k%2 == 0 {
						adv4WaitOnce(t, q, len(buf), &badResults)
						mine = mine[:len(mine)-1]
					}
				}
				for _, q := range mine {
					adv4WaitOnce(t, q, len(buf), &badResults)
				}
			}()
		}
		close(start)
		// Close while the submitters are at work: once they have had a
		// few transfers accepted, and a varying moment after.
		for accepted.Load() < before+submitters {
			runtime.Gosched()
		}
		for range i % 7 * 10 {
			runtime.Gosched()
		}
		require.NoError(t, p.Close())
		closeReturned.Store(true)
		mu.Lock()
		for _, q := range reqs {
			if q.Pending() {
				pendingAfterClose.Add(1)
			}
		}
		mu.Unlock()
		wg.Wait()
		assert.Equal(t, int32(1), run.closes.Load(), "round %d: Runner closes", i)
		if run.lateRuns.Load() != 0 || run.twice.Load() != 0 {
			t.Errorf("round %d: %d Runs after the Runner's Close, %d transfers run twice", i, run.lateRuns.Load(), run.twice.Load())
		}
		if t.Failed() {
			break
		}
	}
	assert.Zero(t, lateAccepts.Load(), "transfers the ring accepted after Close returned")
	assert.Zero(t, pendingAfterClose.Load(), "transfers pending after Close returned")
	assert.Zero(t, badErrs.Load()+badResults.Load(), "unexpected errors or results")
	AssertSettled(t, ring)
	t.Logf("%d rounds, %d transfers accepted", iters, accepted.Load())
}

// adv4WaitOnce waits for q's completion, which must come within Patience
// and be its real result (n bytes) or ErrCanceled, and be the only one:
// a second Wait finds nothing.
func adv4WaitOnce(t *testing.T, q ioring.Request, n int, bad *atomic.Int32) {
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	c, err := q.Wait(ctx)
	switch {
	case err != nil:
		t.Errorf("Wait: %v", err)
	case c.Err != nil && !errors.Is(c.Err, ErrCanceled):
		t.Errorf("completion: N=%d err=%v", c.N, c.Err)
	case c.Err == nil && c.N != n:
		t.Errorf("completion: N=%d, want %d", c.N, n)
	default:
		if _, err := q.Wait(ctx); !errors.Is(err, ioring.ErrNotFound) {
			t.Errorf("a second Wait: %v, want ErrNotFound", err)
		} else {
			return
		}
	}
	bad.Add(1)
}
