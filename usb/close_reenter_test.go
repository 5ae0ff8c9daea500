package usb

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// reenterRunner is a Runner whose Run is run. It owns a pipe, which its
// Close closes (so that CheckFDs sees whether the device was released),
// and counts its Close calls once they return.
type reenterRunner struct {
	run    func(t *Transfer) (int, error)
	r, w   *os.File
	calls  atomic.Int32
	closed atomic.Int32
}

func newReenterRunner(t *testing.T, run func(*Transfer) (int, error)) *reenterRunner {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	return &reenterRunner{run: run, r: r, w: w}
}

func (r *reenterRunner) Check(EndpointDesc, []byte) error { return nil }
func (r *reenterRunner) Run(t *Transfer) (int, error)     { return r.run(t) }
func (r *reenterRunner) ClearHalt(EndpointDesc) error     { return nil }
func (r *reenterRunner) Reset() error                     { return nil }
func (r *reenterRunner) Close() error {
	if r.calls.Add(1) == 1 {
		r.r.Close()
		r.w.Close()
	}
	r.closed.Add(1)
	return nil
}

// returnsWithin runs fn on its own goroutine and reports whether it returned
// within Patience; if not, the test fails (a deadlock: fn's goroutine is
// left behind, and goleak reports it too) instead of hanging.
func returnsWithin(t *testing.T, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(Patience):
		t.Errorf("%s did not return within %v: deadlock", what, Patience)
		return false
	}
}

// TestDeviceCloseFromCallback: user code the Device runs (a Runner's Run,
// the interruption it armed with Transfer.OnCancel) calls Device.Close on
// its own device, from inside whatever ran it: Device.CancelAll,
// Request.Cancel, a token's cancel, Ring.CancelAll, Ring.Close,
// Device.Close; or Run
// itself calls Device.Close or Device.CancelAll. The interruption calls
// Close before it lets its Run return, so a Close that waited there for
// the transfers to drain, or for the CancelAll running it, would wait for
// itself. Nothing deadlocks, every transfer completes exactly once,
// exactly one Close closes the device (the others say ErrClosed), and
// the device is released: the Runner closed once, its fds closed, every
// later call ErrClosed.
func TestDeviceCloseFromCallback(t *testing.T) {
	for _, how := range []string{"cancel-all", "request", "token", "token-both", "ring-cancel-all", "ring-close", "close", "run-close", "run-cancel-all"} {
		t.Run(how, func(t *testing.T) { testDeviceCloseFromCallback(t, how) })
	}
}

func testDeviceCloseFromCallback(t *testing.T, how string) {
	CheckFDs(t)
	ring, err := ioring.New(ioring.Config{Entries: 16})
	require.NoError(t, err)
	// Bounded: after a deadlock a transfer never completes, and Ring.Close
	// would wait for it.
	t.Cleanup(func() { returnsWithin(t, "Ring.Close", func() { ring.Close() }) })
	fromRun := how == "run-close" || how == "run-cancel-all"
	var d *Device
	var ep1 *Endpoint
	closes := make(chan error, 4) // Device.Close's results in the callbacks
	closeHere := func() {
		err := d.Close()
		closes <- err
		// Closed as soon as Close returns, even before the release.
		_, serr := ep1.Submit(make([]byte, 8), Xfer{User: "after Close"})
		assert.ErrorIs(t, serr, ErrClosed, "Submit after a Close from a callback")
		assert.ErrorIs(t, d.CancelAll(), ErrClosed, "CancelAll after a Close from a callback")
	}
	armed := make(chan struct{}, 3)
	run := newReenterRunner(t, func(x *Transfer) (int, error) {
		if fromRun && x.Endpoint().Address == pumpIn2.Address {
			if how == "run-close" {
				closeHere()
			} else if err := d.CancelAll(); err != nil && !errors.Is(err, ErrClosed) {
				t.Errorf("CancelAll from Run: %v", err)
			}
			return 0, ErrCanceled
		}
		done := make(chan struct{})
		if !x.OnCancel(func() {
			defer close(done)
			closeHere() // before its Run returns
		}) {
			return 0, ErrCanceled
		}
		armed <- struct{}{}
		<-done
		return 0, ErrCanceled
	})
	eps := []EndpointDesc{pumpIn, pumpIn2}
	d = NewDevice(DeviceDesc{Endpoints: eps}, NewPump(ring, eps, run))
	ep1, err = d.Endpoint(pumpIn.Address)
	require.NoError(t, err)
	ep2, err := d.Endpoint(pumpIn2.Address)
	require.NoError(t, err)
	isArmed := func(what string) {
		select {
		case <-armed:
		case <-time.After(Patience):
			t.Fatalf("%s did not start", what)
		}
	}

	tok := ring.NewToken()
	qa, err := ep1.Submit(make([]byte, 8), Xfer{Token: tok, User: "A"})
	require.NoError(t, err)
	isArmed("A")
	_, err = ep1.Submit(make([]byte, 8), Xfer{User: "C"}) // queued behind A
	require.NoError(t, err)
	// The Close calls from callbacks, at least: A's and B's interruptions
	// each call Close; with Run calling into the device, A's and, in
	// run-close, B's Run. C's interruption calls Close too if C started
	// before the cancel reached it (A's Run ends inside the cancel pass
	// that runs its interruption, and C may start before the pass gets
	// to it).
	minCloses := 2
	if how == "run-cancel-all" {
		minCloses = 1
	}
	if !fromRun {
		x := Xfer{User: "B"}
		if how == "token-both" {
			x.Token = tok // the token's cancel reaches B after A's interruption returned
		}
		_, err = ep2.Submit(make([]byte, 8), x)
		require.NoError(t, err)
		isArmed("B")
	}

	var trigger error
	if !returnsWithin(t, how, func() {
		switch how {
		case "cancel-all":
			trigger = d.CancelAll()
		case "request":
			trigger = qa.Cancel()
		case "token", "token-both":
			trigger = tok.Cancel()
		case "ring-cancel-all":
			trigger = ring.CancelAll()
		case "ring-close": // the ring before the Device: it cancels the transfers
			trigger = ring.Close()
		case "close":
			trigger = d.Close()
			// An ordinary Close returns once the device is released.
			assert.Equal(t, int32(1), run.closed.Load(), "the Runner closed when Close returned")
		default: // Run calls into its device
			_, trigger = ep2.Submit(make([]byte, 8), Xfer{User: "B"})
		}
	}) {
		return
	}
	if trigger != nil {
		var pe *ioring.HookPanicError
		if !errors.Is(trigger, ErrClosed) && !errors.As(trigger, &pe) {
			t.Errorf("%s: %v", how, trigger)
		}
	}

	// The transfers complete once their callbacks, and the Close calls in
	// them, returned: a Close that waited for them hangs here.
	seen := map[any]int{}
	if how == "ring-close" {
		// A closed ring hands out what it holds, then ErrClosed.
		for {
			var cs [4]ioring.Completion
			n, err := ring.Reap(cs[:], 0)
			for _, c := range cs[:n] {
				seen[c.User]++
				assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
			}
			if err != nil {
				assert.ErrorIs(t, err, ioring.ErrClosed)
				break
			}
			require.NotZero(t, n, "Reap of a closed ring returns what it holds, then ErrClosed")
		}
	} else {
		for _, c := range Reap(t, ring, 3) {
			seen[c.User]++
			assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		}
		AssertNoMore(t, ring)
	}
	assert.Equal(t, map[any]int{"A": 1, "B": 1, "C": 1}, seen, "completions")
	closers, calls := 0, 0 // the Close calls that closed the device; those from callbacks
	if how == "close" && trigger == nil {
		closers++
	}
	for more := true; more; {
		select {
		case err := <-closes:
			calls++
			if err == nil {
				closers++
			} else {
				assert.ErrorIs(t, err, ErrClosed, "Close %d from a callback", calls)
			}
		default:
			more = false
		}
	}
	assert.GreaterOrEqual(t, calls, minCloses, "the Close calls from callbacks")
	assert.Equal(t, 1, closers, "the Close calls that closed the device")

	// The release follows the callbacks' return.
	assert.Eventually(t, func() bool { return run.closed.Load() == 1 }, Patience, time.Millisecond, "the Runner is closed")
	assert.ErrorIs(t, d.Close(), ErrClosed)
	assert.ErrorIs(t, d.CancelAll(), ErrClosed)
	_, err = ep1.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	AssertSettled(t, ring)
	assert.Equal(t, int32(1), run.closed.Load(), "the Runner closed once")
}

// TestDeviceCloseBesideCallback: a Close from a goroutine of its own,
// while a transfer's interruption runs on another one (that of a
// Request.Cancel), is no Close from a callback: it waits until the
// interruption and the Run returned and the transfer completed, and
// returns once the Runner is closed.
func TestDeviceCloseBesideCallback(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 8)
	inStop, release := make(chan struct{}), make(chan struct{})
	armed := make(chan struct{}, 1)
	run := newReenterRunner(t, func(x *Transfer) (int, error) {
		done := make(chan struct{})
		if !x.OnCancel(func() {
			close(inStop)
			<-release
			close(done)
		}) {
			return 0, ErrCanceled
		}
		armed <- struct{}{}
		<-done
		return 0, ErrCanceled
	})
	d := NewDevice(DeviceDesc{Endpoints: []EndpointDesc{pumpIn}}, NewPump(ring, []EndpointDesc{pumpIn}, run))
	ep, err := d.Endpoint(pumpIn.Address)
	require.NoError(t, err)
	q, err := ep.Submit(make([]byte, 8), Xfer{User: "A"})
	require.NoError(t, err)
	select {
	case <-armed:
	case <-time.After(Patience):
		t.Fatal("the transfer did not start")
	}
	canceled := make(chan error, 1)
	go func() { canceled <- q.Cancel() }()
	select {
	case <-inStop:
	case <-time.After(Patience):
		t.Fatal("the interruption did not run")
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while the transfer's interruption still ran", err)
	case <-time.After(Quiet):
	}
	close(release)
	select {
	case err := <-closed:
		assert.NoError(t, err)
		assert.Equal(t, int32(1), run.closed.Load(), "the Runner closed when Close returned")
	case <-time.After(Patience):
		t.Fatal("Close did not return")
	}
	select {
	case err := <-canceled:
		assert.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("Request.Cancel did not return")
	}
	c := Reap(t, ring, 1)[0]
	assert.Equal(t, "A", c.User)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	AssertNoMore(t, ring)
	AssertSettled(t, ring)
}
