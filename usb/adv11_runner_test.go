package usb_test

// Adversarial round 11, the Pump's side of the seam: Runners whose
// methods other than Run misbehave (panic in Check, ClearHalt, Reset, a
// Configurer method or Close; a Run that ignores its cancel; a Runner
// that keeps using its Transfer after Run returned). Run's own panics
// and Goexits are TestPumpRunPanicsOrExits's; interruptions that panic or
// re-enter are TestAdvHookReenters's.

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
)

// adv11Runner is a Runner and a Configurer each of whose methods runs the
// function set for it (none: it succeeds; Run then moves the whole
// buffer).
type adv11Runner struct {
	run       func(t *Transfer) (int, error)
	check     func(ep EndpointDesc, buf []byte) error
	clearHalt func(ep EndpointDesc) error
	reset     func() error
	setting   func(what string) error
	close     func() error
	closes    atomic.Int32
}

func (r *adv11Runner) Check(ep EndpointDesc, buf []byte) error {
	if r.check != nil {
		return r.check(ep, buf)
	}
	return nil
}

func (r *adv11Runner) Run(t *Transfer) (int, error) {
	if r.run != nil {
		return r.run(t)
	}
	return len(t.Buf()), nil
}

func (r *adv11Runner) ClearHalt(ep EndpointDesc) error {
	if r.clearHalt != nil {
		return r.clearHalt(ep)
	}
	return nil
}

func (r *adv11Runner) Reset() error {
	if r.reset != nil {
		return r.reset()
	}
	return nil
}

func (r *adv11Runner) Close() error {
	r.closes.Add(1)
	if r.close != nil {
		return r.close()
	}
	return nil
}

func (r *adv11Runner) set(what string) error {
	if r.setting != nil {
		return r.setting(what)
	}
	return nil
}

func (r *adv11Runner) SetConfiguration(int) error       { return r.set("config") }
func (r *adv11Runner) ClaimInterface(int, bool) error   { return r.set("claim") }
func (r *adv11Runner) ReleaseInterface(int, bool) error { return r.set("release") }
func (r *adv11Runner) SetAltSetting(int, int) error     { return r.set("alt") }

var (
	adv11In  = EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}
	adv11Out = EndpointDesc{Address: 0x02, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}
	adv11In2 = EndpointDesc{Address: 0x83, Type: Interrupt, MaxPacketSize: 64, MaxTransfer: 64}
)

// adv11Desc describes a device with interface 0 (adv11In, adv11Out) at
// settings 0 and 1 (adv11In2 only), in configuration 1, so that the
// settings calls reach the Runner.
func adv11Desc() DeviceDesc {
	eps := []EndpointDesc{adv11In, adv11Out}
	return DeviceDesc{
		Endpoints: eps,
		Configs: []ConfigDesc{{Value: 1, Interfaces: []InterfaceDesc{
			{Number: 0, Alternate: 0, Endpoints: eps},
			{Number: 0, Alternate: 1, Endpoints: []EndpointDesc{adv11In2}},
		}}},
		Config: 1,
	}
}

// adv11PumpDev is a Device over a Pump of r on ring, for every endpoint
// of adv11Desc, closed with the test.
func adv11PumpDev(t *testing.T, ring *ioring.Ring, r Runner) *Device {
	t.Helper()
	d := NewDevice(adv11Desc(), NewPump(ring, []EndpointDesc{adv11In, adv11Out, adv11In2}, r))
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// adv11Panics calls f and returns what it panicked with (nil: it
// returned), within Patience.
func adv11Panics(t *testing.T, what string, f func()) (v any) {
	t.Helper()
	done := make(chan any, 1)
	go func() {
		panicked := true
		defer func() {
			if panicked {
				done <- recover()
			}
		}()
		f()
		panicked = false
		done <- nil
	}()
	select {
	case v = <-done:
		return v
	case <-time.After(Patience):
		t.Fatalf("%s: hangs", what)
		return nil
	}
}

// adv11Wait waits for q's completion, at most Patience.
func adv11Wait(t *testing.T, q ioring.Request, what string) ioring.Completion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err, "%s: no completion within %v", what, Patience)
	return c
}

// TestAdv11RunnerClearHaltPanics: a Runner whose ClearHalt panics. The
// panic reaches Device.ClearHalt's caller (nothing documents or recovers
// it: see the report); recovered there, the Device must still be usable:
// the endpoint's transfers run, ClearHalt can be tried again, Close
// drains. Pump.ClearHalt pauses the endpoint's pump before it calls the
// Runner and unpauses it only when the call returns, so a panic leaves
// the pump paused for good: every later transfer on the endpoint waits
// for ever (until canceled), and every later ClearHalt says transfers are
// pending.
func TestAdv11RunnerClearHaltPanics(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	var panicNext atomic.Bool
	panicNext.Store(true)
	r := &adv11Runner{clearHalt: func(EndpointDesc) error {
		if panicNext.CompareAndSwap(true, false) {
			panic("clear halt panics")
		}
		return nil
	}}
	d := adv11PumpDev(t, ring, r)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	v := adv11Panics(t, "ClearHalt", func() { _ = d.ClearHalt(adv11In.Address) })
	t.Logf("Device.ClearHalt with a Runner whose ClearHalt panics: panic %v reaches the caller", v)

	// The Device is not wedged: its lock was let go.
	q, err := in.Start(make([]byte, 8), Xfer{User: "after"})
	require.NoError(t, err)
	// Request.Wait's context deadline cancels the transfer (ErrTimeout)
	// if it has not completed by then.
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	c, err := q.Wait(ctx)
	cancel()
	require.NoError(t, err)
	assert.NoError(t, c.Err, "a transfer on the endpoint after a ClearHalt that panicked never runs (its pump stays paused)")
	if c.Err == nil {
		assert.Equal(t, 8, c.N)
	}
	assert.NoError(t, d.ClearHalt(adv11In.Address), "ClearHalt again, with the endpoint idle")
	require.NoError(t, d.Close())
	assert.EqualValues(t, 1, r.closes.Load())
	AssertSettled(t, ring)
}

// TestAdv11RunnerPanicsLeaveDeviceUsable: a Runner whose Check, Reset or
// Configurer methods panic. The panic reaches the caller of Submit,
// Reset or the settings call (undocumented; see the report); recovered
// there, the Device is intact: its lock is free, the call can be made
// again, the settings record is unchanged (a panicked SetAltSetting did
// not switch the endpoints), transfers run, Close drains.
func TestAdv11RunnerPanicsLeaveDeviceUsable(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	var boom atomic.Bool
	maybe := func(what string) {
		if boom.Load() {
			panic(what + " panics")
		}
	}
	r := &adv11Runner{
		check:   func(EndpointDesc, []byte) error { maybe("check"); return nil },
		reset:   func() error { maybe("reset"); return nil },
		setting: func(what string) error { maybe(what); return nil },
	}
	d := adv11PumpDev(t, ring, r)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	calls := map[string]func(){
		"Submit":           func() { _, _ = in.Submit(make([]byte, 4), Xfer{}) },
		"Read":             func() { _, _ = in.Read(context.Background(), make([]byte, 4)) },
		"Reset":            func() { _ = d.Reset() },
		"SetAltSetting":    func() { _ = d.SetAltSetting(0, 1) },
		"ReleaseInterface": func() { _ = d.ReleaseInterface(0) },
	}
	for name, call := range calls {
		boom.Store(true)
		v := adv11Panics(t, name, call)
		boom.Store(false)
		assert.NotNil(t, v, "%s: the Runner's panic", name)
		// Nothing was accepted, nothing changed. (The read of the
		// round before returned once its completion was published; the
		// ring counts it out just after: eventually.)
		AssertSettled(t, ring, "%s: nothing in flight", name)
		alt, err := d.AltSetting(0)
		assert.NoError(t, err, "%s: interface 0 still claimed", name)
		assert.Zero(t, alt, "%s: alternate setting unchanged", name)
		_, err = d.Endpoint(adv11In.Address)
		assert.NoError(t, err, "%s: endpoints unchanged", name)
		// The Device goes on.
		ctx, cancel := context.WithTimeout(context.Background(), Patience)
		n, err := in.Read(ctx, make([]byte, 4))
		cancel()
		assert.NoError(t, err, "%s: a read after", name)
		assert.Equal(t, 4, n)
		assert.NoError(t, d.Reset(), "%s: Reset after", name)
	}
	require.NoError(t, d.SetAltSetting(0, 1))
	require.NoError(t, d.SetAltSetting(0, 0))
	done := make(chan error, 1)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("Close hangs")
	}
	AssertSettled(t, ring)
}

// TestAdv11RunnerIgnoresCancel: a Run that ignores its cancel (it returns
// only when the test lets it) on one endpoint. Every kind of cancel
// (Request.Cancel, a token, Device.CancelAll, Ring.CancelAll) requests
// and returns at once; the other endpoints' transfers, queued or
// running, complete with ErrCanceled; transfers queued behind the stuck
// one complete at once when canceled; the stuck one completes exactly
// once, with the real result, when Run returns; Close then drains.
func TestAdv11RunnerIgnoresCancel(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 32)
	release := make(chan struct{})
	started := make(chan struct{}, 16)
	r := &adv11Runner{run: func(tr *Transfer) (int, error) {
		started <- struct{}{}
		if tr.Endpoint().Address == adv11In.Address {
			<-release // deaf to its cancel
			return 3, nil
		}
		stopped := make(chan struct{})
		var once sync.Once
		if !tr.OnCancel(func() { once.Do(func() { close(stopped) }) }) {
			return 0, ErrCanceled
		}
		<-stopped
		return 0, ErrCanceled
	}}
	d := adv11PumpDev(t, ring, r)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	out, err := d.Endpoint(adv11Out.Address)
	require.NoError(t, err)
	tok := ring.NewToken()
	stuck, err := in.Submit(make([]byte, 8), Xfer{User: "stuck"})
	require.NoError(t, err)
	<-started
	var queued []ioring.Request
	for i := range 3 {
		q, err := in.Submit(make([]byte, 8), Xfer{User: i, Token: tok})
		require.NoError(t, err)
		queued = append(queued, q)
	}
	o, err := out.Submit([]byte{1}, Xfer{User: "out"})
	require.NoError(t, err)
	<-started
	prompt := func(what string, f func() error) {
		t.Helper()
		start := time.Now()
		err := f()
		assert.Less(t, time.Since(start), Patience/2, "%s blocks", what)
		if err != nil {
			assert.ErrorIs(t, err, ioring.ErrNotFound, what)
		}
	}
	prompt("Request.Cancel of the stuck transfer", stuck.Cancel)
	prompt("Token.Cancel", tok.Cancel)
	prompt("Device.CancelAll", d.CancelAll)
	prompt("Ring.CancelAll", ring.CancelAll)
	prompt("Request.Cancel again", stuck.Cancel)
	seen := map[any]int{}
	for _, c := range Reap(t, ring, 4) {
		seen[c.User]++
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	assert.Equal(t, map[any]int{0: 1, 1: 1, 2: 1, "out": 1}, seen)
	assert.True(t, stuck.Pending(), "the stuck transfer waits for its Run")
	for _, q := range append(queued, o) {
		assert.False(t, q.Pending())
	}
	close(release)
	c := Reap(t, ring, 1)[0]
	assert.Equal(t, "stuck", c.User)
	// The cancel lost to nothing: Run ignored it and returned its real
	// result, which the completion carries (rule 2: the loser does not
	// erase the winner).
	assert.NoError(t, c.Err)
	assert.Equal(t, 3, c.N)
	AssertNoMore(t, ring)
	require.NoError(t, d.Close())
	AssertSettled(t, ring)
}

// TestAdv11RunnerLateTransferUse: a Runner that keeps its Transfer after
// Run returned and, from another goroutine, arms OnCancel, runs Do and
// reads Buf and Endpoint (misuse: the methods are for Run's goroutine
// during Run). The transfer has completed once and stays completed: a
// later cancel finds nothing (ErrNotFound) and calls no stop; OnCancel
// reports it canceled or arms a stop nobody calls; nothing panics, and
// Close drains.
func TestAdv11RunnerLateTransferUse(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	kept := make(chan *Transfer, 1)
	r := &adv11Runner{run: func(tr *Transfer) (int, error) {
		kept <- tr
		return 2, nil
	}}
	d := adv11PumpDev(t, ring, r)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	q, err := in.Start(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	c := adv11Wait(t, q, "transfer")
	require.NoError(t, c.Err)
	require.Equal(t, 2, c.N)
	tr := <-kept
	var stops atomic.Int32
	v := adv11Panics(t, "late use", func() {
		tr.OnCancel(func() { stops.Add(1) })
		_ = tr.Buf()
		_ = tr.Endpoint()
		lc, err := tr.Do(ioring.Nop())
		if err == nil {
			assert.True(t, lc.Err == nil || errors.Is(lc.Err, ErrCanceled), "late Do: %v", lc.Err)
		}
	})
	assert.Nil(t, v)
	assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "the transfer completed")
	require.NoError(t, d.CancelAll())
	require.NoError(t, ring.CancelAll())
	assert.Zero(t, stops.Load(), "a stop armed after the completion is never called")
	require.NoError(t, d.Close())
	AssertSettled(t, ring)
}

// adv11ChildEnv marks the child process of TestAdv11RunnerClosePanics.
const adv11ChildEnv = "CANCELIO_ADV11_CHILD"

// TestAdv11RunnerClosePanics: a Runner whose Close panics.
//
// On a Close from another goroutine the panic reaches Device.Close's
// caller (undocumented: see the report), after the drain, and a second
// Close says ErrClosed: the Device is closed.
//
// On a Close from inside the Runner's own Run (documented: "Run ... may
// call back into their Device, Close included"), the Pump closes the
// Runner on a goroutine of its own (Pump.Close's go p.stop()), where
// nothing recovers a panic: the process dies. The child process this
// test starts does that; the test fails if it dies.
func TestAdv11RunnerClosePanics(t *testing.T) {
	if os.Getenv(adv11ChildEnv) != "" {
		adv11ClosePanicsChild(t)
		return
	}
	t.Run("close from another goroutine", func(t *testing.T) {
		CheckFDs(t)
		ring := NewRing(t, 16)
		r := &adv11Runner{close: func() error { panic("runner close panics") }}
		d := NewDevice(adv11Desc(), NewPump(ring, []EndpointDesc{adv11In, adv11Out}, r))
		in, err := d.Endpoint(adv11In.Address)
		require.NoError(t, err)
		_, err = in.Submit(make([]byte, 8), Xfer{})
		require.NoError(t, err)
		v := adv11Panics(t, "Device.Close", func() { _ = d.Close() })
		t.Logf("Device.Close with a Runner whose Close panics: panic %v reaches the caller", v)
		assert.ErrorIs(t, d.Close(), ErrClosed)
		_, err = in.Submit(make([]byte, 8), Xfer{})
		assert.ErrorIs(t, err, ErrClosed)
		Reap(t, ring, 1)
		AssertSettled(t, ring)
	})
	t.Run("close from Run", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*Patience)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAdv11RunnerClosePanics$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), adv11ChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			i := bytes.Index(out, []byte("panic: "))
			if i < 0 {
				i = 0
			}
			t.Errorf("the child process died (%v): a Runner's Close that panics, run by the Pump on its own goroutine after a Close from Run, kills the process:\n%s",
				err, adv11Clip(out[i:], 1500))
		}
	})
}

// adv11ClosePanicsChild is the child of TestAdv11RunnerClosePanics: a Run
// closes its own Device, and the Runner's Close, which the Pump then
// calls on a goroutine of its own, panics. A library that recovers it
// lets this return; one that does not kills the process.
func adv11ClosePanicsChild(t *testing.T) {
	ring := NewRing(t, 16)
	closing := make(chan struct{})
	var d *Device
	r := &adv11Runner{
		run: func(tr *Transfer) (int, error) {
			assert.NoError(t, d.Close(), "Close from Run")
			return 0, nil
		},
		close: func() error {
			close(closing)
			panic("runner close panics")
		},
	}
	d = NewDevice(adv11Desc(), NewPump(ring, []EndpointDesc{adv11In}, r))
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	_, err = in.Submit(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	Reap(t, ring, 1)
	select {
	case <-closing:
	case <-time.After(Patience):
		t.Fatal("the Runner is never closed")
	}
	time.Sleep(Quiet) // a panic on the Pump's goroutine ends the process meanwhile
}

// adv11Clip cuts b to at most n bytes, for a log.
func adv11Clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
