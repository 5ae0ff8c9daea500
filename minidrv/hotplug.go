package minidrv

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/goid"
	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
)

// HotplugWatcher is a stream of USB device arrivals and removals that a
// Driver follows (Config.Hotplug). *usb.Hotplug, the kernel's uevents read
// through the ring (see WatchUSB), is one; the simulated scanner's
// usbsim.Hotplug (minidrvtest.SimHotplug) is another, with the same
// methods and errors.
type HotplugWatcher interface {
	// Next waits for the next event. It returns an error when ctx ends
	// (the driver ends its wait that way at its last Uninitialize), and
	// one wrapping usb.ErrClosed after Close; any other error (events
	// were lost) does not end the watch.
	Next(ctx context.Context) (usb.HotplugEvent, error)
	// Close ends the watch; a Next in progress returns.
	Close() error
}

// WatchUSB returns a Config.Hotplug that watches the kernel's uevents for
// the USB devices f selects, read through ring (usb.WatchHotplug).
func WatchUSB(ring *ioring.Ring, f usb.HotplugFilter) func() (HotplugWatcher, error) {
	return func() (HotplugWatcher, error) {
		h, err := usb.WatchHotplug(ring, f)
		if err != nil {
			return nil, err // not a nil *usb.Hotplug in a non-nil interface
		}
		return h, nil
	}
}

// Bounds of the pauses of a hotplug watch: between attempts to bring back
// a device that arrived but did not answer, and after a failed Next.
const (
	hotplugRetryMin = 50 * time.Millisecond
	hotplugRetryMax = time.Second
)

// hotplug is the watch of Config.Hotplug while the driver is initialized:
// the first Initialize starts it, the last Uninitialize stops it.
type hotplug struct {
	w      HotplugWatcher
	match  usb.HotplugFilter // Config.HotplugMatch, zero fields filled from the device opened
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
	gid    atomic.Int64  // the goroutine's id (goid.ID), once it runs
}

// startHotplug makes the watcher of Config.Hotplug, or returns nil without
// one. The first Initialize calls it before it opens the device, so that
// no event after the open is missed.
func (d *Driver) startHotplug() (*hotplug, error) {
	if d.cfg.Hotplug == nil {
		return nil, nil
	}
	w, err := d.cfg.Hotplug()
	if err != nil {
		return nil, ErrGeneral.Wrap(fmt.Errorf("watch hotplug: %w", err))
	}
	if w == nil {
		return nil, ErrGeneral.Wrap(errors.New("watch hotplug: Config.Hotplug returned no watcher"))
	}
	if v := reflect.ValueOf(w); v.Kind() == reflect.Pointer && v.IsNil() {
		// A nil *usb.Hotplug in a non-nil interface (see WatchUSB): its
		// methods would dereference it in the watch's goroutine.
		return nil, ErrGeneral.Wrap(fmt.Errorf("watch hotplug: Config.Hotplug returned a nil %T", w))
	}
	return &hotplug{w: w, done: make(chan struct{})}, nil
}

// next is h.w.Next, with a panic in it turned into an error: the watch
// takes it as a failed Next (it pauses, and goes on), where the panic
// would end the process from the watch's goroutine.
func (h *hotplug) next(ctx context.Context) (e usb.HotplugEvent, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("minidrv: hotplug watcher panicked: %v", p)
		}
	}()
	return h.w.Next(ctx)
}

// run starts the goroutine that follows the events of h for the device
// desc describes.
func (h *hotplug) run(d *Driver, desc usb.DeviceDesc) {
	h.match = d.cfg.HotplugMatch
	if h.match.VendorID == 0 {
		h.match.VendorID = desc.VendorID
	}
	if h.match.ProductID == 0 {
		h.match.ProductID = desc.ProductID
	}
	if h.match.Serial == "" {
		h.match.Serial = desc.Serial
	}
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go d.followHotplug(ctx, h)
}

// stop ends the watch: the goroutine, if it runs, has returned and the
// watcher is closed when it returns; but for a stop on that goroutine
// itself (the last Uninitialize called from the watcher's Next; one from
// Config.Open fails before it gets here, see errInOpen), which cannot
// wait for its own return: the goroutine returns as soon as that call
// does, its context ended and its watcher closed. h may be nil.
func (h *hotplug) stop() {
	if h == nil {
		return
	}
	// Closed before the wait: a Next in progress returns on Close (see
	// HotplugWatcher), also one that does not watch its ctx.
	if h.cancel != nil {
		h.cancel()
		_ = h.w.Close()
		if g := h.gid.Load(); g == 0 || g != goid.ID() {
			<-h.done
		}
		return
	}
	_ = h.w.Close()
}

// followHotplug delivers the device's removals and arrivals that h's
// watcher reports to NotifyPnpEvent, as WIA's PnP manager calls
// drvNotifyPnpEvent: a removal is EventDeviceDisconnected, an arrival
// EventDeviceConnected (which reopens the device through Config.Open and
// probes it); a removal that names another bus address than the device
// the driver holds is of an earlier plug-in, read late, and changes
// nothing (stale); an arrival at a new bus address while the driver still
// holds the device at its old one is both (the removal was lost). An
// arrival that does not bring the driver back (the device did not open or
// answer yet) is tried again, after pauses growing from hotplugRetryMin
// to hotplugRetryMax, until it works, the device leaves again or the
// watch ends. After a failed Next (events lost, or a panic in the
// watcher) a driver still Removed looks whether its device came back the
// same way. It runs until ctx ends (the last Uninitialize) or the watcher
// is closed.
func (d *Driver) followHotplug(ctx context.Context, h *hotplug) {
	defer close(h.done)
	h.gid.Store(goid.ID())
	var retry, pause time.Duration // retry > 0: bring the device back at retryAt
	var retryAt time.Time
	for {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if retry > 0 {
			wctx, cancel = context.WithDeadline(ctx, retryAt)
		}
		e, err := h.next(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			pause = 0
			if !d.ours(h, e) {
				continue
			}
			retry = 0
			if e.Kind == usb.Left {
				if !d.stale(e) {
					d.removed(ctx)
				}
				continue
			}
			if d.replaced(h, e) {
				d.removed(ctx) // its removal was lost
			}
		case retry > 0 && wctx.Err() != nil:
			// Time to try the arrival again.
		case errors.Is(err, usb.ErrClosed):
			return
		default:
			pause = backoff(pause)
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			if d.State() != Removed {
				continue
			}
		}
		if d.NotifyPnpEvent(EventDeviceConnected) != nil && d.State() == Removed {
			retry = backoff(retry)
			retryAt = time.Now().Add(retry)
		} else {
			retry = 0
		}
	}
}

// removed delivers a removal of the device: EventDeviceDisconnected. A
// transfer still running gets up to AbortTimeout to find the device gone
// by itself first: the kernel announces a removal once it has failed the
// device's I/O, so those completions are on their way, and the
// acquisition then ends with the USB stack's own usb.ErrNoDevice rather
// than with a cancel. The event cancels whatever is left after that.
func (d *Driver) removed(ctx context.Context) {
	if d.State().Busy() {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.AbortTimeout)
		_, _ = d.m.Wait(wctx, func(s State) bool { return !s.Busy() })
		cancel()
	}
	_ = d.NotifyPnpEvent(EventDeviceDisconnected)
}

// stale reports whether the removal e, of the driver's device, is of an
// earlier plug-in than the one the driver holds: e names a bus address,
// and the driver holds its device at another one. The watcher reports
// what happened in order, but the driver may read it late: by the time a
// removal that a quick unplug and replug left behind is read, the
// arrival after it may have been taken already (a retry, or a reopen)
// and the device opened at its new address, which that removal must not
// take away.
func (d *Driver) stale(e usb.HotplugEvent) bool {
	if e.Bus == 0 && e.Address == 0 {
		return false
	}
	bus, addr, ok := d.heldAt()
	return ok && (e.Bus != bus || e.Address != addr)
}

// replaced reports whether the arrival e, of the driver's device, shows
// that the device the driver holds is gone although the driver is not
// Removed: its removal was lost (events dropped), and the device,
// identified by its serial number, arrived again at another bus address.
func (d *Driver) replaced(h *hotplug, e usb.HotplugEvent) bool {
	if h.match.Serial == "" || e.Serial == "" || d.State() == Removed {
		return false
	}
	return d.stale(e) // held at another address than e names
}

// heldAt returns the bus number and address of the device the driver
// holds; ok is false when it holds none.
func (d *Driver) heldAt() (bus, addr int, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dev == nil {
		return 0, 0, false
	}
	desc := d.dev.Desc()
	return desc.Bus, desc.Address, true
}

// backoff returns the pause after last: twice as long, within
// hotplugRetryMin..hotplugRetryMax.
func backoff(last time.Duration) time.Duration {
	return min(max(2*last, hotplugRetryMin), hotplugRetryMax)
}

// ours reports whether e is about the driver's device: its vendor and
// product, and its serial number (any device of that vendor and product
// where the device has none). A removal whose serial number the watcher
// did not learn (the device arrived before the watch began) is the
// device's when it names the bus address of the device the driver has
// open.
func (d *Driver) ours(h *hotplug, e usb.HotplugEvent) bool {
	m := h.match
	switch {
	case m.VendorID != 0 && e.VendorID != m.VendorID, m.ProductID != 0 && e.ProductID != m.ProductID:
		return false
	case m.Serial == "":
		return true
	case e.Serial != "":
		return e.Serial == m.Serial
	case e.Kind != usb.Left:
		return false
	}
	bus, addr, ok := d.heldAt()
	return ok && e.Bus == bus && e.Address == addr
}
