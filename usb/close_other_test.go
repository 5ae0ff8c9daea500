package usb

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// TestHookClosesOtherDevice: one token covers a running transfer of each
// of two devices, D1 and D2, whose Pumps share a ring. Token.Cancel marks
// both canceled, then runs their interruptions one after another, oldest
// member first. One device's interruption calls Close (or CancelAll) on
// the other device. That is an ordinary Close from the other device's
// point of view (not its Runner's code): it waits for the other's
// transfers, one of which is the token's next member, whose interruption
// the token's cancel has not reached yet when the closer's transfer is the
// older ("closer-older"): that Close must run it (the ring runs a pending
// hook for the cancel that finds it, see ioring.Foreign), not wait for the
// token's cancel to get there, which waits for this interruption to
// return. With "closer-newer" the other's interruption ran first and the
// Close only waits for its Run to return. Each device also has a transfer
// outside the token queued behind the running one.
//
// Nothing deadlocks (every wait is bounded; a Run stuck past Patience is
// released, so that a failure is reported, not a hang), every transfer
// completes exactly once with ErrCanceled, every interruption runs at most
// once (the token's two exactly once), every Close returns and each
// Runner is closed once.
func TestHookClosesOtherDevice(t *testing.T) {
	for _, how := range []string{"close", "cancel-all"} {
		for _, closer := range []int{0, 1} {
			for _, order := range []string{"closer-older", "closer-newer"} {
				name := fmt.Sprintf("%s/D%d-hook-on-D%d/%s", how, closer+1, 2-closer, order)
				t.Run(name, func(t *testing.T) { testHookClosesOtherDevice(t, how, closer, order == "closer-older") })
			}
		}
	}
}

// otherDev is one device of testHookClosesOtherDevice.
type otherDev struct {
	d    *Device
	ep   *Endpoint
	run  *reenterRunner
	name string
}

func testHookClosesOtherDevice(t *testing.T, how string, closer int, closerOlder bool) {
	CheckFDs(t)
	ring, err := ioring.New(ioring.Config{Entries: 16})
	require.NoError(t, err)
	// Bounded: after a deadlock a transfer may never complete, and
	// Ring.Close would wait for it.
	t.Cleanup(func() { returnsWithin(t, "Ring.Close", func() { ring.Close() }) })

	// abort releases every Run still blocked: a failed test ends instead
	// of hanging (and leaking goroutines).
	abort := make(chan struct{})
	var abortOnce sync.Once
	release := func() { abortOnce.Do(func() { close(abort) }) }
	t.Cleanup(release)
	// within runs fn on its own goroutine and waits for it, Patience at
	// most; then it reports a deadlock, releases the Runs and waits for fn
	// once more.
	within := func(what string, fn func()) {
		t.Helper()
		done := make(chan struct{})
		go func() {
			defer close(done)
			fn()
		}()
		select {
		case <-done:
			return
		case <-time.After(Patience):
			t.Errorf("%s did not return within %v: deadlock", what, Patience)
		}
		release()
		select {
		case <-done:
		case <-time.After(Patience):
			t.Errorf("%s did not return even once the Runs were released", what)
		}
	}

	// Transfers are told apart by their buffer's first byte: names[b].
	names := []string{"T1", "T2", "Q1", "Q2"} // the token's; queued, outside it
	var stops [4]atomic.Int32                 // interruption runs, by transfer
	armed := make(chan string, 8)
	var hooks [4]func() // what a transfer's interruption does, besides ending its Run
	var devs [2]*otherDev
	closes := make(chan error, 2) // Close's or CancelAll's result in the hook
	for i := range devs {
		o := &otherDev{name: fmt.Sprintf("D%d", i+1)}
		o.run = newReenterRunner(t, func(x *Transfer) (int, error) {
			id := x.Buf()[0]
			done := make(chan struct{})
			var doneOnce sync.Once
			if !x.OnCancel(func() {
				stops[id].Add(1)
				defer doneOnce.Do(func() { close(done) })
				if h := hooks[id]; h != nil {
					h()
				}
			}) {
				return 0, ErrCanceled
			}
			armed <- names[id]
			select {
			case <-done:
			case <-abort:
			}
			return 0, ErrCanceled
		})
		o.d = NewDevice(DeviceDesc{Endpoints: []EndpointDesc{pumpIn}}, NewPump(ring, []EndpointDesc{pumpIn}, o.run))
		o.ep, err = o.d.Endpoint(pumpIn.Address)
		require.NoError(t, err)
		devs[i] = o
	}
	victim := 1 - closer
	other := devs[victim]
	hooks[closer] = func() {
		// The token's cancel is this one's first: the victim's
		// interruption ran before it (closer-newer) or not yet.
		if ran := stops[victim].Load(); closerOlder {
			assert.Zero(t, ran, "%s's interruption ran before the closer's: the test shows nothing", names[victim])
		} else {
			assert.Equal(t, int32(1), ran, "%s's interruption, the older, ran first", names[victim])
		}
		switch how {
		case "close":
			// Ordinary for the victim: it returns once its transfers
			// completed and it is released.
			err := other.d.Close()
			closes <- err
			assert.Equal(t, int32(1), other.run.closed.Load(), "%s's Runner closed when its Close returned", other.name)
		case "cancel-all":
			closes <- other.d.CancelAll()
		}
		// Either way the victim's interruption ran by now, once: the
		// cancel hooks run on the caller's goroutine, before CancelAll
		// (Close's too) returns.
		assert.Equal(t, int32(1), stops[victim].Load(), "%s's interruption after %s of %s", names[victim], how, other.name)
	}

	tok := ring.NewToken()
	submit := func(o *otherDev, id byte, x Xfer) {
		t.Helper()
		buf := make([]byte, 8)
		buf[0] = id
		x.User = names[id]
		_, err := o.ep.Submit(buf, x)
		require.NoError(t, err)
	}
	isArmed := func(want string) {
		t.Helper()
		select {
		case got := <-armed:
			require.Equal(t, want, got, "the transfer that started")
		case <-time.After(Patience):
			t.Fatalf("%s did not start", want)
		}
	}
	// The token's members, oldest first: the closer's, or the victim's.
	first, second := closer, victim
	if !closerOlder {
		first, second = victim, closer
	}
	submit(devs[first], byte(first), Xfer{Token: tok})
	isArmed(names[first])
	submit(devs[second], byte(second), Xfer{Token: tok})
	isArmed(names[second])
	submit(devs[0], 2, Xfer{}) // Q1, queued behind T1
	submit(devs[1], 3, Xfer{}) // Q2, queued behind T2

	var cerr error
	within("Token.Cancel", func() { cerr = tok.Cancel() })
	assert.NoError(t, cerr, "Token.Cancel")
	select {
	case err := <-closes:
		assert.NoError(t, err, "%s of %s from %s's interruption", how, other.name, names[closer])
	default:
		t.Errorf("%s's interruption did not call %s", names[closer], how)
	}

	// The closer's Q starts once T ends, and runs until its device
	// closes; so does the victim's after a CancelAll (unless canceled
	// while still queued). The test closes what is open.
	for _, o := range devs {
		if o == other && how == "close" {
			assert.ErrorIs(t, o.d.Close(), ErrClosed, "%s closed already", o.name)
			continue
		}
		within(o.name+".Close", func() { assert.NoError(t, o.d.Close(), "%s.Close", o.name) })
		assert.Equal(t, int32(1), o.run.closed.Load(), "%s's Runner closed when its Close returned", o.name)
	}

	seen := map[any]int{}
	deadline := time.Now().Add(Patience)
	for len(seen) < len(names) && time.Now().Before(deadline) {
		var cs [4]ioring.Completion
		n, err := ring.Reap(cs[:], time.Until(deadline))
		require.NoError(t, err)
		for _, c := range cs[:n] {
			seen[c.User]++
			assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		}
	}
	AssertNoMore(t, ring)
	assert.Equal(t, map[any]int{"T1": 1, "T2": 1, "Q1": 1, "Q2": 1}, seen, "completions")
	for id, name := range names {
		n := stops[id].Load()
		if id < 2 {
			assert.Equal(t, int32(1), n, "runs of %s's interruption", name)
		} else {
			assert.LessOrEqual(t, n, int32(1), "runs of %s's interruption", name)
		}
	}
	for _, o := range devs {
		assert.Equal(t, int32(1), o.run.closed.Load(), "%s's Runner closed once", o.name)
		assert.ErrorIs(t, o.d.CancelAll(), ErrClosed, "%s", o.name)
	}
	AssertSettled(t, ring)
}
