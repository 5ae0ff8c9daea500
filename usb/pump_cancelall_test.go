package usb

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// A transfer the ring accepted before a CancelAll (or Close's cancel)
// looked at its endpoint, and that Submit had not queued yet, is canceled
// all the same: through the ring, so that it completes once with
// ErrCanceled, its cancel hook ran and a later cancel finds nothing left;
// the Runner never sees it. Transfers submitted after the CancelAll run.
func TestPumpCancelAllBeforeQueued(t *testing.T) {
	for _, tc := range []struct {
		name  string
		wait  bool // Start, not Submit
		close bool // Close, not CancelAll
	}{
		{"Submit", false, false},
		{"Start", true, false},
		{"Close", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ring := newPumpRing(t)
			var runs atomic.Int32 // Runs on pumpIn
			running, blocked := make(chan struct{}), make(chan struct{})
			r := &funcRunner{run: func(t *Transfer) (int, error) {
				if t.Endpoint().Address == pumpIn.Address {
					runs.Add(1)
					return len(t.Buf()), nil
				}
				// pumpIn2's transfer runs until canceled: its cancel says
				// Close's cancel pass has looked at every endpoint.
				defer close(blocked)
				stopped := make(chan struct{})
				if !t.OnCancel(func() { close(stopped) }) {
					return 0, ErrCanceled
				}
				close(running)
				<-stopped
				return 0, ErrCanceled
			}}
			p := NewPump(ring, []EndpointDesc{pumpIn, pumpIn2}, r)
			if !tc.close {
				defer p.Close()
			}
			accepted := make(chan *Transfer, 1)
			release := make(chan struct{})
			p.accepted = func(t *Transfer) {
				if t.Endpoint().Address == pumpIn.Address {
					accepted <- t
					<-release
				}
			}
			blocker, err := p.Submit(pumpIn2, make([]byte, 8), Xfer{User: "blocker"}, false)
			require.NoError(t, err)
			within(t, running, "the blocker runs")
			type result struct {
				q   ioring.Request
				err error
			}
			submitted := make(chan result, 1)
			go func() {
				q, err := p.Submit(pumpIn, make([]byte, 8), Xfer{User: "late"}, tc.wait)
				submitted <- result{q, err}
			}()
			late := within(t, accepted, "the ring accepts the transfer")
			closed := make(chan error, 1)
			if tc.close {
				go func() { closed <- p.Close() }()
			} else {
				require.NoError(t, p.CancelAll())
			}
			within(t, blocked, "the cancel reaches the blocker")
			close(release)
			res := within(t, submitted, "Submit returns")
			require.NoError(t, res.err)
			q := res.q

			var c ioring.Completion
			if tc.wait {
				ctx, cancel := context.WithTimeout(context.Background(), Patience)
				defer cancel()
				c, err = q.Wait(ctx)
				require.NoError(t, err)
				cs := Reap(t, ring, 1)
				assert.Equal(t, "blocker", cs[0].User)
			} else {
				cs := Reap(t, ring, 2)
				if cs[0].User == "blocker" {
					cs[0], cs[1] = cs[1], cs[0]
				}
				c = cs[0]
				assert.Equal(t, "blocker", cs[1].User)
			}
			assert.Equal(t, "late", c.User)
			assert.ErrorIs(t, c.Err, ErrCanceled, "the transfer accepted before the cancel looked")
			assert.Zero(t, c.N)
			assert.Zero(t, runs.Load(), "the Runner ran the transfer canceled before it was queued")
			assert.True(t, late.isCanceled(), "the ring ran the transfer's cancel hook")
			assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound)
			n, err := ring.Cancel(q, blocker)
			require.NoError(t, err)
			assert.Zero(t, n, "requests left to cancel")
			AssertNoMore(t, ring)

			if tc.close {
				require.NoError(t, within(t, closed, "Close returns"))
				assert.EqualValues(t, 1, r.closed.Load())
				return
			}
			p.accepted = nil
			c = pumpWait(t, p, pumpIn, make([]byte, 8))
			assert.NoError(t, c.Err, "a transfer submitted after CancelAll")
			assert.Equal(t, 8, c.N)
			assert.EqualValues(t, 1, runs.Load())
		})
	}
}

// Submits on two endpoints race with CancelAlls made at random moments:
// a transfer the ring accepted before a CancelAll started is canceled by
// it (once both have returned, a cancel of the transfer finds nothing
// left), and every transfer completes exactly once. Half the transfers
// run until canceled, the others complete at once if they get to run.
func TestPumpCancelAllStress(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		t.Skipf("no ring on this system: %v", err)
	}
	t.Cleanup(func() { ring.Close() })
	const submitters, each = 4, 250
	const n = submitters * each
	var clock atomic.Int64
	var ranAt [n]atomic.Int64 // by quick transfer: when its Run returned its own result
	r := &funcRunner{run: func(t *Transfer) (int, error) {
		if id := binary.LittleEndian.Uint32(t.Buf()); id%4 >= 2 { // quick
			if t.isCanceled() {
				return 0, ErrCanceled
			}
			ranAt[id].Store(clock.Add(1))
			return len(t.Buf()), nil
		}
		stopped := make(chan struct{})
		var once sync.Once
		if !t.OnCancel(func() { once.Do(func() { close(stopped) }) }) {
			return 0, ErrCanceled
		}
		<-stopped
		return 0, ErrCanceled
	}}
	p := NewPump(ring, []EndpointDesc{pumpIn, pumpIn2}, r)
	closed := false
	defer func() {
		if !closed {
			p.Close()
		}
	}()

	var acceptedAt [n]atomic.Int64             // by transfer: when the ring accepted it
	var reqs [n]atomic.Pointer[ioring.Request] // by transfer: its request, once Submit returned
	p.accepted = func(t *Transfer) {
		acceptedAt[binary.LittleEndian.Uint32(t.Buf())].Store(clock.Add(1))
		switch rand.IntN(8) { // widen the window now and then
		case 0:
			runtime.Gosched()
		case 1:
			time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
		}
	}

	// The reaper.
	var seen [n]int
	var errs [n]error
	reaped, quit := make(chan struct{}), make(chan struct{})
	defer close(quit) // a test that failed early leaves no reaper behind
	go func() {
		defer close(reaped)
		buf := make([]ioring.Completion, 64)
		deadline := time.Now().Add(3 * Patience)
		for got := 0; got < n && time.Now().Before(deadline); {
			select {
			case <-quit:
				return
			default:
			}
			k, err := ring.Reap(buf, 10*time.Millisecond)
			if !assert.NoError(t, err) {
				return
			}
			for _, c := range buf[:k] {
				id := c.User.(int)
				seen[id]++
				errs[id] = c.Err
				got++
			}
		}
	}()

	var submitting sync.WaitGroup
	for s := range submitters {
		submitting.Go(func() {
			for j := range each {
				id := s*each + j
				buf := make([]byte, 8)
				binary.LittleEndian.PutUint32(buf, uint32(id))
				ep := pumpIn
				if id%2 == 1 {
					ep = pumpIn2
				}
				for {
					q, err := p.Submit(ep, buf, Xfer{User: id}, false)
					if errors.Is(err, ioring.ErrFull) {
						runtime.Gosched()
						continue
					}
					if !assert.NoError(t, err, "submit %d", id) {
						return
					}
					reqs[id].Store(&q)
					break
				}
				if rand.IntN(4) == 0 {
					runtime.Gosched()
				}
			}
		})
	}
	done := make(chan struct{})
	go func() {
		submitting.Wait()
		close(done)
	}()

	var verified [n]bool
	cancels, missed := 0, 0
	for last := false; !last; {
		select {
		case <-done:
			last = true // one more CancelAll, after the last Submit
		default:
			if rand.IntN(2) == 0 {
				time.Sleep(time.Duration(rand.IntN(100)) * time.Microsecond)
			} else {
				runtime.Gosched()
			}
		}
		start := clock.Add(1)
		require.NoError(t, p.CancelAll())
		end := clock.Add(1)
		cancels++
		for id := range n {
			at := acceptedAt[id].Load()
			if verified[id] || at == 0 || at > start {
				continue
			}
			// Accepted before this CancelAll started: once its Submit
			// returned, it is canceled (or had completed).
			var q *ioring.Request
			for q = reqs[id].Load(); q == nil; q = reqs[id].Load() {
				runtime.Gosched()
			}
			k, err := ring.Cancel(*q)
			require.NoError(t, err)
			if ran := ranAt[id].Load(); k != 0 && ran != 0 && ran < end {
				// A quick transfer whose Run returned its own result
				// before the CancelAll did: no longer the CancelAll's to
				// cancel. The pump posts its completion a moment after it
				// stopped counting it as running (so that a ClearHalt
				// after the completion finds the endpoint idle), and a
				// CancelAll in between finds it neither queued nor
				// running, while the ring still has it in flight. The
				// slow transfers, which end only by a cancel, keep the
				// check whole.
				k = 0
			}
			if k != 0 {
				missed++
				t.Errorf("transfer %d, accepted at %d before the CancelAll of %d, was not canceled by it", id, at, start)
			}
			verified[id] = true
		}
	}
	within(t, reaped, "the reaper is done")
	t.Logf("%d CancelAlls, %d transfers", cancels, n)
	assert.Zero(t, missed, "transfers CancelAll missed")
	for id := range n {
		if !assert.Equal(t, 1, seen[id], "completions of transfer %d", id) {
			continue
		}
		assert.True(t, verified[id], "transfer %d was accepted before the last CancelAll", id)
		if id%4 >= 2 {
			assert.True(t, errs[id] == nil || errors.Is(errs[id], ErrCanceled), "transfer %d: %v", id, errs[id])
		} else {
			assert.ErrorIs(t, errs[id], ErrCanceled, "transfer %d", id)
		}
	}
	AssertNoMore(t, ring)
	p.accepted = nil
	closed = true
	require.NoError(t, p.Close())
	assert.EqualValues(t, 1, r.closed.Load())
	AssertSettled(t, ring)
}

// within returns what ch gives, failing the test if nothing comes within
// Patience.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Patience):
		t.Fatalf("%s: nothing within %v", what, Patience)
		panic("unreachable")
	}
}
