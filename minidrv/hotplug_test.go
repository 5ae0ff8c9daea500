package minidrv_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// replugWithin is how soon after its device is plugged back in a driver
// that follows hotplug must be Idle again, with no call from the
// application.
const replugWithin = 2 * time.Second

// withSimHotplug makes a rig's driver follow its scanner's Unplug and
// Replug (minidrvtest.SimHotplug).
func withSimHotplug(sc *usbsim.Scanner, cfg *minidrv.Config) {
	cfg.Hotplug = minidrvtest.SimHotplug(sc)
}

// waitState waits until d is in state want, for at most within, and
// returns how long that took.
func waitState(t testing.TB, d *minidrv.Driver, want minidrv.State, within time.Duration) time.Duration {
	t.Helper()
	return waitUntil(t, d, func(s minidrv.State) bool { return s == want }, within)
}

// waitUntil waits until cond holds for d's state, for at most within, and
// returns how long that took.
func waitUntil(t testing.TB, d *minidrv.Driver, cond func(minidrv.State) bool, within time.Duration) time.Duration {
	t.Helper()
	t0 := time.Now()
	timeout := time.NewTimer(within)
	defer timeout.Stop()
	for {
		s, changed := d.Watch()
		if cond(s) {
			return time.Since(t0)
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("the driver is still %v after %v", d.State(), within)
		}
	}
}

// TestHotplugUnplugReplug: a driver that follows the simulated scanner's
// hotplug events goes to Removed when the device is unplugged, whether idle,
// locked or acquiring (the acquisition ends with ErrOffline, the USB stack's
// ErrNoDevice inside, and whole chunks in the sink), and is Idle again by
// itself within replugWithin of the replug, ready for an exact acquisition.
func TestHotplugUnplugReplug(t *testing.T) {
	// AbortTimeout bounds how long a removal waits for the transfers to
	// find the device gone by themselves: generous on a loaded machine.
	r := newSimRig(t, minidrv.Config{AbortTimeout: 5 * time.Second}, usbsim.Config{Serial: "HOT1"}, withSimHotplug)
	ctx := context.Background()
	replug := func() {
		t.Helper()
		require.NoError(t, r.sc.Replug())
		took := waitState(t, r.d, minidrv.Idle, replugWithin)
		t.Logf("Idle %v after the replug", took)
	}

	// Idle, then Locked: no transfer runs, so only the event tells the
	// driver.
	require.NoError(t, r.sc.Unplug())
	waitState(t, r.d, minidrv.Removed, replugWithin)
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
	replug()
	require.NoError(t, r.d.Lock(ctx))
	require.NoError(t, r.sc.Unplug())
	waitState(t, r.d, minidrv.Removed, replugWithin)
	require.ErrorIs(t, r.d.Unlock(), minidrv.ErrOffline, "the removal ended the lock")
	replug()

	// During an acquisition.
	require.NoError(t, r.d.Lock(ctx))
	err := r.unplugMidAcquisition(ctx, 512, 512, 8192)
	assert.NotContains(t, err.Error(), "removed during the transfer", "the transfers found the device gone before the event came")
	p := r.d.Properties()
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
	_, err = r.acquire(ctx, nil)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	replug()

	require.NoError(t, r.d.Lock(ctx))
	r.sc.SetBandwidth(0)
	for range 2 {
		s, err := r.acquire(ctx, nil)
		require.NoError(t, err)
		r.expectImage(s)
	}
	assert.Equal(t, p, r.d.Properties(), "the properties outlive the replug")
	require.NoError(t, r.d.Unlock())
}

// chanWatcher is a HotplugWatcher whose events a test hands over one at a
// time: send returns once the driver's goroutine has taken the event, and
// the next send once it has acted on the one before.
type chanWatcher struct {
	ch     chan watchResult
	closed chan struct{}
	once   sync.Once
}

type watchResult struct {
	e   usb.HotplugEvent
	err error
}

func newChanWatcher() *chanWatcher {
	return &chanWatcher{ch: make(chan watchResult), closed: make(chan struct{})}
}

func (w *chanWatcher) Next(ctx context.Context) (usb.HotplugEvent, error) {
	select {
	case r := <-w.ch:
		return r.e, r.err
	case <-w.closed:
		return usb.HotplugEvent{}, usb.ErrClosed
	case <-ctx.Done():
		return usb.HotplugEvent{}, ctx.Err()
	}
}

func (w *chanWatcher) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

func (w *chanWatcher) isClosed() bool {
	select {
	case <-w.closed:
		return true
	default:
		return false
	}
}

func (w *chanWatcher) send(t testing.TB, e usb.HotplugEvent, err error) {
	t.Helper()
	select {
	case w.ch <- watchResult{e, err}:
	case <-time.After(10 * time.Second):
		t.Fatalf("the driver did not take the event %v (%v)", e, err)
	}
}

// sync returns once the driver has acted on every event sent: it takes
// the next one (of a device nobody follows) only then.
func (w *chanWatcher) sync(t testing.TB) {
	t.Helper()
	w.send(t, usb.HotplugEvent{Kind: usb.Arrived, VendorID: 0xfff0, ProductID: 0xfff0}, nil)
}

// followers counts the goroutines that follow hotplug for a driver.
func followers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "minidrv.(*Driver).followHotplug")
}

// waitFollowers waits until n goroutines follow hotplug (a goroutine just
// started may not show in a stack dump yet).
func waitFollowers(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return followers() == n }, 10*time.Second, time.Millisecond,
		"%d goroutines follow hotplug, not %d", followers(), n)
}

// TestHotplugMatch: the driver takes the events of its own device only
// (its vendor, product and serial number, learned from the device it
// opened; a removal without a serial number by the device's bus address),
// tries an arrival again until the device answers, looks for its device
// after events were lost, and stops following at the last Uninitialize.
func TestHotplugMatch(t *testing.T) {
	w := newChanWatcher()
	var opens atomic.Int32
	r := newSimRig(t, minidrv.Config{}, usbsim.Config{Serial: "MINE"}, func(_ *usbsim.Scanner, cfg *minidrv.Config) {
		cfg.Hotplug = func() (minidrv.HotplugWatcher, error) { return w, nil }
		open := cfg.Open
		cfg.Open = func(ctx context.Context) (*usb.Device, error) {
			opens.Add(1)
			return open(ctx)
		}
	})
	info := r.sc.Info()
	ev := func(kind usb.HotplugKind, vid uint16, serial string, bus, addr int) usb.HotplugEvent {
		return usb.HotplugEvent{Kind: kind, VendorID: vid, ProductID: info.ProductID, Serial: serial, Bus: bus, Address: addr}
	}
	vid := info.VendorID
	waitFollowers(t, 1)

	// Other devices' removals.
	for _, e := range []usb.HotplugEvent{
		ev(usb.Left, vid+1, "MINE", 0, 0),
		ev(usb.Left, vid, "OTHER", 0, 0),
		ev(usb.Left, vid, "", 1, 7), // another bus address
	} {
		w.send(t, e, nil)
		w.sync(t)
		require.Equal(t, minidrv.Idle, r.d.State(), "after %v %q", e, e.Serial)
	}
	// Its own: by serial number, or at its bus address without one.
	bus, addr := r.sc.BusAddr()
	for _, serial := range []string{"MINE", ""} {
		w.send(t, ev(usb.Left, vid, serial, bus, addr), nil)
		w.sync(t)
		require.Equal(t, minidrv.Removed, r.d.State(), "after a removal with serial %q", serial)
		// Arrivals of other devices, and one without a serial number.
		for _, e := range []usb.HotplugEvent{
			ev(usb.Arrived, vid+1, "MINE", 0, 0),
			ev(usb.Arrived, vid, "OTHER", 0, 0),
			ev(usb.Arrived, vid, "", 0, 0),
		} {
			w.send(t, e, nil)
			w.sync(t)
			require.Equal(t, minidrv.Removed, r.d.State(), "after %v %q", e, e.Serial)
		}
		// The device stayed plugged in: its arrival brings it back.
		w.send(t, ev(usb.Arrived, vid, "MINE", 0, 0), nil)
		w.sync(t)
		require.Equal(t, minidrv.Idle, r.d.State())
	}

	// An arrival of the device where the driver holds it changes nothing.
	// One at another bus address while the driver holds the device: its
	// removal was lost (here: never sent), the device held is gone. The
	// driver lets it go and opens the device again.
	require.Equal(t, int32(1), opens.Load())
	w.send(t, ev(usb.Arrived, vid, "MINE", bus, addr), nil)
	w.sync(t)
	require.Equal(t, int32(1), opens.Load())
	require.NoError(t, r.sc.Unplug())
	require.NoError(t, r.sc.Replug())
	bus2, addr2 := r.sc.BusAddr()
	require.NotEqual(t, addr, addr2, "a plug-in has an address of its own")
	w.send(t, ev(usb.Arrived, vid, "MINE", bus2, addr2), nil)
	w.sync(t)
	require.Equal(t, minidrv.Idle, r.d.State())
	require.Equal(t, int32(2), opens.Load(), "the device was opened again")
	// The removal of the earlier plug-in, read late (after the arrival
	// that reopened the device), is not the device the driver holds.
	w.send(t, ev(usb.Left, vid, "MINE", bus, addr), nil)
	w.sync(t)
	require.Equal(t, minidrv.Idle, r.d.State(), "after a late removal of the earlier plug-in")
	require.Equal(t, int32(2), opens.Load())
	require.NoError(t, r.d.Lock(context.Background()))
	s, err := r.acquire(context.Background(), nil)
	require.NoError(t, err)
	r.expectImage(s)
	require.NoError(t, r.d.Unlock())

	// An arrival before the device answers: tried again until it does.
	require.NoError(t, r.sc.Unplug())
	w.send(t, ev(usb.Left, vid, "MINE", 0, 0), nil)
	w.send(t, ev(usb.Arrived, vid, "MINE", 0, 0), nil)
	time.Sleep(300 * time.Millisecond) // a few attempts fail
	require.Equal(t, minidrv.Removed, r.d.State())
	// Other devices' events meanwhile do not put the next attempt off.
	noise, quiet := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(quiet)
		for {
			select {
			case w.ch <- watchResult{e: ev(usb.Arrived, vid, "OTHER", 0, 0)}:
			case <-noise:
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	require.NoError(t, r.sc.Replug())
	took := waitState(t, r.d, minidrv.Idle, replugWithin)
	close(noise)
	<-quiet
	t.Logf("Idle %v after the replug, by a retry", took)

	// A removal again ends the retries.
	require.NoError(t, r.sc.Unplug())
	w.send(t, ev(usb.Left, vid, "MINE", 0, 0), nil)
	w.send(t, ev(usb.Arrived, vid, "MINE", 0, 0), nil)
	w.send(t, ev(usb.Left, vid, "MINE", 0, 0), nil)
	require.NoError(t, r.sc.Replug()) // no event: the driver does not know
	time.Sleep(1500 * time.Millisecond)
	require.Equal(t, minidrv.Removed, r.d.State(), "retried after the device left again")

	// Events lost while Removed: the driver looks whether its device is
	// back.
	w.send(t, usb.HotplugEvent{}, fmt.Errorf("recv: %w", syscall.ENOBUFS))
	t.Logf("Idle %v after events were lost", waitState(t, r.d, minidrv.Idle, replugWithin))
	require.NoError(t, r.d.Lock(context.Background()))
	s, err = r.acquire(context.Background(), nil)
	require.NoError(t, err)
	r.expectImage(s)
	require.NoError(t, r.d.Unlock())

	// A second client's Uninitialize leaves the watch; the last ends it.
	require.NoError(t, r.d.Initialize(context.Background()))
	require.NoError(t, r.d.Uninitialize())
	assert.Equal(t, 1, followers())
	assert.False(t, w.isClosed())
	require.NoError(t, r.d.Uninitialize())
	assert.True(t, w.isClosed(), "the watcher is closed")
	waitFollowers(t, 0) // it closed its done channel on its way out
}

// TestHotplugInitialize: a watch that cannot start fails Initialize before
// the device is opened; a device that cannot be opened closes the watch
// again; a watcher closed from outside ends the goroutine, and the driver
// then stays in the state it was in.
func TestHotplugInitialize(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 64})
	require.NoError(t, err)
	defer ring.Close()
	sc, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer sc.Close()
	var opens atomic.Int32
	open := func(ctx context.Context) (*usb.Device, error) {
		opens.Add(1)
		return usbsim.Open(ring, sc)
	}
	ctx := context.Background()
	errWatch := errors.New("no uevents here")
	for _, c := range []struct {
		watch func() (minidrv.HotplugWatcher, error)
		want  error
	}{
		{func() (minidrv.HotplugWatcher, error) { return nil, errWatch }, errWatch},
		{func() (minidrv.HotplugWatcher, error) { return nil, nil }, minidrv.ErrGeneral},
	} {
		d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open, Hotplug: c.watch})
		require.NoError(t, err)
		err = d.Initialize(ctx)
		require.ErrorIs(t, err, minidrv.ErrGeneral)
		require.ErrorIs(t, err, c.want)
		assert.Equal(t, minidrv.Unloaded, d.State())
		assert.Zero(t, opens.Load(), "the device was opened")
	}

	w := newChanWatcher()
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open, Hotplug: func() (minidrv.HotplugWatcher, error) { return w, nil }})
	require.NoError(t, err)
	require.NoError(t, sc.Unplug())
	require.ErrorIs(t, d.Initialize(ctx), minidrv.ErrOffline)
	assert.True(t, w.isClosed(), "the watch of a failed Initialize")
	assert.Zero(t, followers())

	require.NoError(t, sc.Replug())
	w = newChanWatcher()
	require.NoError(t, d.Initialize(ctx))
	waitFollowers(t, 1)
	require.NoError(t, w.Close())
	waitFollowers(t, 0) // the goroutine ends when its watcher is closed
	assert.Equal(t, minidrv.Idle, d.State())
	require.NoError(t, d.Uninitialize())
	assert.Equal(t, minidrv.Unloaded, d.State())
}
