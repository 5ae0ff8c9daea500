package minidrv_test

import (
	"context"
	"io"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// nilCtx is a nil context.Context, for the calls that must refuse one.
var nilCtx context.Context

// outcome is how a call that runs user code ended: it returned err, it
// panicked with panicked, or that code called runtime.Goexit.
type outcome struct {
	err      error
	panicked any
	goexit   bool
}

// catching runs f in a goroutine of its own, as a caller that recovers
// from a panic would, and returns how it ended.
func catching(t testing.TB, f func() error) outcome {
	t.Helper()
	var o outcome
	returned := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { o.panicked = recover() }()
		o.err = f()
		returned = true
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the call did not end within 10s")
	}
	o.goexit = !returned && o.panicked == nil
	return o
}

// panicSink is a sink whose first Write panics.
type panicSink struct{}

func (panicSink) Write([]byte) (int, error) { panic("sink boom") }

// TestAcquireUserCodePanics: a panic or runtime.Goexit in the progress
// callback or the sink goes on up to the caller of AcquireItemData, but
// the acquisition ends first as a failed one (its transfers canceled even
// when the device hangs): the driver is Locked again, the next
// acquisition gets an exact image, and Uninitialize closes the device, so
// nothing leaks (fds here, goroutines in TestMain).
func TestAcquireUserCodePanics(t *testing.T) {
	for _, c := range []struct {
		name     string
		hang     bool // transfers in flight never complete by themselves
		sink     io.Writer
		progress func(minidrv.Progress) bool
		want     any // the panic value; nil for Goexit
	}{
		{"progress panics mid-stream", true, io.Discard, func(p minidrv.Progress) bool {
			if p.Bytes > 0 {
				panic("progress boom")
			}
			return true
		}, "progress boom"},
		{"progress panics at 0%", false, io.Discard, func(minidrv.Progress) bool { panic("progress boom 0") }, "progress boom 0"},
		{"sink panics", true, panicSink{}, nil, "sink boom"},
		{"progress calls Goexit", true, io.Discard, func(p minidrv.Progress) bool {
			if p.Bytes > 0 {
				runtime.Goexit()
			}
			return true
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fds := openFDs(t)
			r := newRig(t, minidrv.Config{})
			ctx := context.Background()
			require.NoError(t, r.d.Lock(ctx))
			r.small(512, 512, 8192)
			if c.hang {
				r.sc.HangAfter(8192) // the first chunk only: the other transfers stay in flight
			}
			o := catching(t, func() error { return r.d.AcquireItemData(ctx, r.bed, c.sink, c.progress) })
			require.NoError(t, o.err)
			if c.want == nil {
				require.True(t, o.goexit, "AcquireItemData returned, or panicked with %v", o.panicked)
			} else {
				require.Equal(t, c.want, o.panicked, "the panic goes on up to the caller")
			}
			assert.Equal(t, minidrv.Locked, r.d.State(), "the acquisition ended before the panic left it")

			r.sc.Resume()
			s, err := r.acquire(ctx, nil)
			require.NoError(t, err)
			r.expectImage(s)
			require.NoError(t, r.d.Unlock())
			require.NoError(t, r.d.Uninitialize())
			assert.Equal(t, minidrv.Unloaded, r.d.State())
			r.close()
			assert.Equal(t, fds, openFDs(t), "open fds before and after")
		})
	}
}

// TestNilContext: AcquireItemData and Lock refuse a nil context with
// E_INVALIDARG and change nothing; CancelPendingIO takes it as one that
// never ends, and cancels.
func TestNilContext(t *testing.T) {
	r, _ := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	refused := func(what string, f func() error) {
		t.Helper()
		o := catching(t, f)
		require.Nil(t, o.panicked, what)
		assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(o.err), "%s: %v", what, o.err)
	}
	refused("Initialize", func() error { return r.d.Initialize(nilCtx) })
	refused("AcquireItemData", func() error { return r.d.AcquireItemData(nilCtx, r.bed, io.Discard, nil) })
	assert.Equal(t, minidrv.Locked, r.d.State())
	refused("Lock while Locked", func() error { return r.d.Lock(nilCtx) })
	require.NoError(t, r.d.Unlock())
	refused("Lock while Idle", func() error { return r.d.Lock(nilCtx) })
	assert.Equal(t, minidrv.Idle, r.d.State())

	require.NoError(t, r.d.Lock(ctx))
	_, started, res := r.startAcquire(ctx)
	<-started
	o := catching(t, func() error { return r.d.CancelPendingIO(nilCtx) })
	require.Nil(t, o.panicked)
	require.NoError(t, o.err)
	assert.Equal(t, minidrv.Locked, r.d.State())
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
}

// TestZeroDriver: a Driver that New did not make, nil or zero, is refused
// by every method with E_INVALIDARG wrapping ioring.ErrInvalid, at once:
// never a panic, and never a wait (a zero Driver's Initialize used to wait
// for ever on its nil semaphore). The accessors return zero values.
func TestZeroDriver(t *testing.T) {
	ctx := context.Background()
	bed := minidrv.NewItemTree().Find("Flatbed")
	for name, d := range map[string]*minidrv.Driver{"nil": nil, "zero": new(minidrv.Driver)} {
		t.Run(name, func(t *testing.T) {
			for _, c := range []struct {
				what string
				f    func() error
			}{
				{"Initialize", func() error { return d.Initialize(ctx) }},
				{"Lock", func() error { return d.Lock(ctx) }},
				{"Items", func() error { _, err := d.Items(); return err }},
				{"ReadItemProperties", func() error { _, err := d.ReadItemProperties(bed, minidrv.PropXResolution); return err }},
				{"ValidateItemProperties", func() error { return d.ValidateItemProperties(bed) }},
				{"WriteItemProperties", func() error { return d.WriteItemProperties(bed) }},
				{"AcquireItemData", func() error { return d.AcquireItemData(ctx, bed, io.Discard, nil) }},
				{"CancelPendingIO", func() error { return d.CancelPendingIO(ctx) }},
				{"NotifyPnpEvent", func() error { return d.NotifyPnpEvent(minidrv.EventCancelIO) }},
				{"NotifyPnpEvent connected", func() error { return d.NotifyPnpEvent(minidrv.EventDeviceConnected) }},
				{"Unlock", d.Unlock},
				{"Uninitialize", d.Uninitialize},
			} {
				o := catching(t, c.f)
				require.Nil(t, o.panicked, c.what)
				require.False(t, o.goexit, c.what)
				require.ErrorIs(t, o.err, ioring.ErrInvalid, c.what)
				assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(o.err), "%s: %v", c.what, o.err)
				assert.Contains(t, o.err.Error(), "make drivers with New", c.what)
			}
			assert.Equal(t, minidrv.Unloaded, d.State())
			s, _ := d.Watch()
			assert.Equal(t, minidrv.Unloaded, s)
			assert.Zero(t, d.QueueDepth())
			assert.Zero(t, d.Properties())
		})
	}
}

// TestMachineWaitRefusesNil: Wait refuses a nil context or condition with
// E_INVALIDARG, and returns the current state.
func TestMachineWaitRefusesNil(t *testing.T) {
	var m minidrv.Machine
	s, err := m.Wait(nilCtx, func(minidrv.State) bool { return true })
	assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(err), "nil context: %v", err)
	assert.Equal(t, minidrv.Unloaded, s)
	o := catching(t, func() error {
		s, err = m.Wait(context.Background(), nil)
		return err
	})
	require.Nil(t, o.panicked)
	assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(o.err), "nil condition: %v", o.err)
	assert.Equal(t, minidrv.Unloaded, s)
}

// TestInitializeBadOpen: a Config.Open that returns neither a device nor
// an error fails Initialize with ErrOffline; one that panics panics
// Initialize. Either way the hotplug watch made before the open is
// closed, the driver is Unloaded, and the next Initialize works.
func TestInitializeBadOpen(t *testing.T) {
	ring, sc := newRingScanner(t)
	var mode atomic.Int32 // 0: opens the scanner; 1: (nil, nil); 2: panics
	var w *chanWatcher
	d, err := minidrv.New(minidrv.Config{
		Ring: ring,
		Open: func(context.Context) (*usb.Device, error) {
			switch mode.Load() {
			case 1:
				return nil, nil
			case 2:
				panic("open boom")
			}
			return usbsim.Open(ring, sc)
		},
		Hotplug: func() (minidrv.HotplugWatcher, error) {
			w = newChanWatcher()
			return w, nil
		},
	})
	require.NoError(t, err)
	ctx := context.Background()

	mode.Store(1)
	o := catching(t, func() error { return d.Initialize(ctx) })
	require.Nil(t, o.panicked)
	require.ErrorIs(t, o.err, minidrv.ErrOffline)
	assert.True(t, w.isClosed(), "the watch of a failed Initialize")
	assert.Equal(t, minidrv.Unloaded, d.State())

	mode.Store(2)
	o = catching(t, func() error { return d.Initialize(ctx) })
	require.Equal(t, "open boom", o.panicked)
	assert.True(t, w.isClosed(), "the watch of a panicking Initialize")
	assert.Equal(t, minidrv.Unloaded, d.State())
	assert.Zero(t, followers())

	mode.Store(0)
	require.NoError(t, d.Initialize(ctx))
	assert.Equal(t, minidrv.Idle, d.State())
	require.NoError(t, d.Uninitialize())
	assert.True(t, w.isClosed())
}

// panicWatcher is a chanWatcher whose first panics calls of Next panic.
type panicWatcher struct {
	*chanWatcher
	panics atomic.Int32
}

func (w *panicWatcher) Next(ctx context.Context) (usb.HotplugEvent, error) {
	if w.panics.Add(-1) >= 0 {
		panic("watcher boom")
	}
	return w.chanWatcher.Next(ctx)
}

// TestHotplugWatcherPanics: a Config.Hotplug that returns a nil
// *usb.Hotplug without an error fails Initialize as one that returns no
// watcher (ErrGeneral), before the device is opened; a watcher whose Next
// panics is taken as one whose Next failed: the watch goes on (the
// process does not crash) and follows the device's events after it.
func TestHotplugWatcherPanics(t *testing.T) {
	ring, sc := newRingScanner(t)
	var opens atomic.Int32
	open := func(context.Context) (*usb.Device, error) {
		opens.Add(1)
		return usbsim.Open(ring, sc)
	}
	ctx := context.Background()

	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open, Hotplug: func() (minidrv.HotplugWatcher, error) {
		return (*usb.Hotplug)(nil), nil
	}})
	require.NoError(t, err)
	err = d.Initialize(ctx)
	require.ErrorIs(t, err, minidrv.ErrGeneral)
	assert.Equal(t, minidrv.Unloaded, d.State())
	assert.Zero(t, opens.Load(), "the device was opened")
	assert.Zero(t, followers())

	w := &panicWatcher{chanWatcher: newChanWatcher()}
	w.panics.Store(3)
	d, err = minidrv.New(minidrv.Config{Ring: ring, Open: open, Hotplug: func() (minidrv.HotplugWatcher, error) {
		return w, nil
	}})
	require.NoError(t, err)
	require.NoError(t, d.Initialize(ctx))
	// The events after the panics are followed: the device's removal.
	info := sc.Info()
	bus, addr := sc.BusAddr()
	w.send(t, usb.HotplugEvent{Kind: usb.Left, VendorID: info.VendorID, ProductID: info.ProductID, Bus: bus, Address: addr}, nil)
	w.sync(t)
	assert.Less(t, w.panics.Load(), int32(0), "Next did not panic every time it was meant to")
	assert.Equal(t, minidrv.Removed, d.State())
	require.NoError(t, d.Uninitialize())
	assert.True(t, w.isClosed())
	waitFollowers(t, 0)
}

// TestReconnectOfflineOnce: an arrival event while the device is still
// unplugged fails with ErrOffline, whose message says so once.
func TestReconnectOfflineOnce(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	require.NoError(t, r.sc.Unplug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	err := r.d.NotifyPnpEvent(minidrv.EventDeviceConnected)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	require.ErrorIs(t, err, usb.ErrNoDevice)
	assert.Equal(t, 1, strings.Count(err.Error(), "device offline"), "%v", err)
	assert.Equal(t, minidrv.Removed, r.d.State())

	require.NoError(t, r.sc.Replug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	assert.Equal(t, minidrv.Idle, r.d.State())
}

// deafWatcher is a chanWatcher whose Next does not watch its ctx: only
// Close ends it.
type deafWatcher struct{ *chanWatcher }

func (w deafWatcher) Next(context.Context) (usb.HotplugEvent, error) {
	return w.chanWatcher.Next(context.Background())
}

// TestHotplugWatcherIgnoresContext: the last Uninitialize closes the
// watcher before it waits for the watch to end, so a watcher whose Next
// returns only on Close does not hang it.
func TestHotplugWatcherIgnoresContext(t *testing.T) {
	w := deafWatcher{newChanWatcher()}
	r := newRig(t, minidrv.Config{Hotplug: func() (minidrv.HotplugWatcher, error) { return w, nil }})
	done := make(chan error, 1)
	go func() { done <- r.d.Uninitialize() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Uninitialize hung on a watcher that ignores its ctx")
	}
	assert.True(t, w.isClosed())
	waitFollowers(t, 0)
}

// newRingScanner returns a ring and a simulated scanner, closed when the
// test ends, for a Driver a test configures itself.
func newRingScanner(t *testing.T) (*ioring.Ring, *usbsim.Scanner) {
	t.Helper()
	ring, err := ioring.New(ioring.Config{Entries: 64})
	require.NoError(t, err)
	t.Cleanup(func() { ring.Close() })
	sc, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { sc.Close() })
	return ring, sc
}
