package minidrv_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv14CallbackWatcher is a HotplugWatcher whose Next runs, once poked,
// a call into the driver on the driver's hotplug goroutine (as a watcher
// that reacts to what it reads may), and reports its result.
type adv14CallbackWatcher struct {
	poke   chan func() error
	result chan error
	closed chan struct{}
	once   atomic.Bool
}

func newAdv14CallbackWatcher() *adv14CallbackWatcher {
	return &adv14CallbackWatcher{poke: make(chan func() error), result: make(chan error, 1), closed: make(chan struct{})}
}

func (w *adv14CallbackWatcher) Next(ctx context.Context) (usb.HotplugEvent, error) {
	select {
	case f := <-w.poke:
		w.result <- f()
		// An event of a device nobody follows: the driver reads on.
		return usb.HotplugEvent{Kind: usb.Arrived, VendorID: 0xfff0, ProductID: 0xfff0}, nil
	case <-w.closed:
		return usb.HotplugEvent{}, usb.ErrClosed
	case <-ctx.Done():
		return usb.HotplugEvent{}, ctx.Err()
	}
}

func (w *adv14CallbackWatcher) Close() error {
	if w.once.CompareAndSwap(false, true) {
		close(w.closed)
	}
	return nil
}

// TestAdv14WatcherCallsUninitialize: the last Uninitialize called from the
// watcher's own Next (on the driver's hotplug goroutine) must return,
// with nil or an error, rather than wait for ever for that goroutine to
// end, which waits for Next to return. Every method of the Driver is safe
// for concurrent use, and the watcher is user code the driver calls.
func TestAdv14WatcherCallsUninitialize(t *testing.T) {
	w := newAdv14CallbackWatcher()
	r := newSimRig(t, minidrv.Config{}, usbsim.Config{}, func(_ *usbsim.Scanner, cfg *minidrv.Config) {
		cfg.Hotplug = func() (minidrv.HotplugWatcher, error) { return w, nil }
	})
	select {
	case w.poke <- r.d.Uninitialize:
	case <-time.After(10 * time.Second):
		t.Fatal("the driver's hotplug goroutine does not read its watcher")
	}
	select {
	case err := <-w.result:
		require.NoError(t, err, "Uninitialize from the watcher's Next")
		assert.Equal(t, minidrv.Unloaded, r.d.State())
	case <-time.After(10 * time.Second):
		t.Fatalf("Uninitialize called from the watcher's Next did not return within 10s (state %v)", r.d.State())
	}
}

// TestAdv14WatcherCallsBack: the other calls from inside the watcher's
// Next return promptly and leave the driver usable: Lock and Unlock,
// CancelPendingIO, the PnP events (a removal, then the arrival that
// reopens the device), a second Initialize and its Uninitialize.
func TestAdv14WatcherCallsBack(t *testing.T) {
	w := newAdv14CallbackWatcher()
	r := newSimRig(t, minidrv.Config{AbortTimeout: answerWithin}, usbsim.Config{}, func(_ *usbsim.Scanner, cfg *minidrv.Config) {
		cfg.Hotplug = func() (minidrv.HotplugWatcher, error) { return w, nil }
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	run := func(what string, f func() error) error {
		t.Helper()
		select {
		case w.poke <- f:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the driver's hotplug goroutine does not read its watcher", what)
		}
		select {
		case err := <-w.result:
			return err
		case <-time.After(15 * time.Second):
			t.Fatalf("%s from the watcher's Next did not return within 15s (state %v)", what, r.d.State())
			return nil
		}
	}
	require.NoError(t, run("Lock", func() error { return r.d.Lock(ctx) }))
	assert.Equal(t, minidrv.Locked, r.d.State())
	require.NoError(t, run("CancelPendingIO", func() error { return r.d.CancelPendingIO(ctx) }))
	require.NoError(t, run("Unlock", r.d.Unlock))
	require.NoError(t, run("Initialize", func() error { return r.d.Initialize(ctx) }))
	require.NoError(t, run("Uninitialize (not the last)", r.d.Uninitialize))
	require.NoError(t, run("DeviceDisconnected", func() error { return r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected) }))
	assert.Equal(t, minidrv.Removed, r.d.State())
	require.NoError(t, run("DeviceConnected", func() error { return r.d.NotifyPnpEvent(minidrv.EventDeviceConnected) }))
	assert.Equal(t, minidrv.Idle, r.d.State())

	require.NoError(t, r.d.Lock(ctx))
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
	require.NoError(t, r.d.Unlock())
}
