package usbsim

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
)

// maxHotplugEvents bounds the events a Hotplug holds for a reader that does
// not read; later ones are dropped, and Next reports the loss.
const maxHotplugEvents = 64

// Hotplug reports the simulated scanner's removals and arrivals as
// usb.Hotplug reports a real device's from the kernel's uevents, with the
// same methods and errors, so that a driver follows both with one code
// path: Unplug (and Close of a plugged-in scanner) is a usb.Left event,
// sent once the host's transfers have failed and the device goroutines
// have stopped; Replug is a usb.Arrived event, sent once the new plug-in
// can be opened. Events carry the scanner's vendor ID, product ID and
// serial number, and the plug-in's place on SimBus (Bus and Address, as in
// Open's DeviceDesc: a new address at each plug-in); DevPath is empty. A
// scanner served as a USB gadget leaves Bus and Address zero: the
// kernel's enumeration gives it a place on a real bus, which its uevents
// report. A Hotplug sees what happens
// after WatchHotplug returns. Next may be called from one goroutine at a
// time; Close from any.
//
// A scanner served as a USB gadget (ServeGadget) reports through a
// Hotplug too, but there the kernel's uevents (usb.WatchHotplug) are what
// a host sees.
type Hotplug struct {
	s    *Scanner
	wake chan struct{} // capacity 1: q, lost or closed changed

	mu     sync.Mutex
	q      []hotplugItem // events not read yet, and losses at their place; guarded by mu
	lost   int           // events dropped after the last of q; guarded by mu
	closed bool          // guarded by mu
}

// hotplugItem is an event a Hotplug holds, or (lost > 0) the report of
// that many events dropped there, between the events before and after.
type hotplugItem struct {
	e    usb.HotplugEvent
	lost int
}

// WatchHotplug returns a Hotplug that reports, in order, the scanner's
// removals and arrivals from now on. Close it when done. It fails with
// ErrClosed after the scanner's Close.
func (s *Scanner) WatchHotplug() (*Hotplug, error) {
	if !s.made() {
		return nil, errNotMade
	}
	h := &Hotplug{s: s, wake: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.watchers == nil {
		s.watchers = map[*Hotplug]struct{}{}
	}
	s.watchers[h] = struct{}{}
	return h, nil
}

// hotplug sends a kind event to every Hotplug. Unplug, Replug and Close
// call it with plugMu held, so that events go out in the order of the
// plug-ins.
func (s *Scanner) hotplug(kind usb.HotplugKind, addr int) {
	e := usb.HotplugEvent{Kind: kind, VendorID: s.info.VendorID, ProductID: s.info.ProductID, Serial: s.info.Serial}
	if addr != 0 {
		e.Bus, e.Address = SimBus, addr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for h := range s.watchers {
		h.send(e)
	}
}

func (h *Hotplug) send(e usb.HotplugEvent) {
	h.mu.Lock()
	if len(h.q) < maxHotplugEvents {
		// A loss goes in before the events that came after it, so that
		// Next reports it where it happened.
		if h.lost > 0 {
			h.q = append(h.q, hotplugItem{lost: h.lost})
			h.lost = 0
		}
		h.q = append(h.q, hotplugItem{e: e})
	} else {
		h.lost++
	}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// Next waits for the next event. ctx ending ends the wait: then the
// error is usb.ErrCanceled (usb.ErrTimeout for a deadline), with ctx's
// own error reachable through errors.Is. After Close, or when Close ends
// the wait, it returns usb.ErrClosed. An error wrapping ENOBUFS means
// events were dropped because nobody read, at that place in the sequence:
// the events before it fitted, those after it came after the loss (the
// watch goes on).
func (h *Hotplug) Next(ctx context.Context) (usb.HotplugEvent, error) {
	if h == nil || h.s == nil {
		return usb.HotplugEvent{}, errHotplugNotMade()
	}
	if ctx == nil {
		ctx = context.Background() // as usb.Hotplug.Next: a nil ctx never ends
	}
	for {
		h.mu.Lock()
		switch {
		case h.closed:
			h.mu.Unlock()
			return usb.HotplugEvent{}, usb.ErrClosed
		case len(h.q) > 0:
			it := h.q[0]
			h.q = h.q[1:]
			h.mu.Unlock()
			if it.lost > 0 {
				return usb.HotplugEvent{}, errLost(it.lost)
			}
			return it.e, nil
		case h.lost > 0:
			n := h.lost
			h.lost = 0
			h.mu.Unlock()
			return usb.HotplugEvent{}, errLost(n)
		}
		h.mu.Unlock()
		select {
		case <-h.wake:
		case <-ctx.Done():
			cause := usb.ErrCanceled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				cause = usb.ErrTimeout
			}
			return usb.HotplugEvent{}, fmt.Errorf("usbsim: hotplug: %w (%w)", cause, ctx.Err())
		}
	}
}

// Close ends the watch: a waiting Next returns usb.ErrClosed, and so do
// later ones. Later calls of Close return usb.ErrClosed.
func (h *Hotplug) Close() error {
	if h == nil || h.s == nil {
		return errHotplugNotMade()
	}
	h.s.mu.Lock()
	delete(h.s.watchers, h)
	h.s.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return usb.ErrClosed
	}
	h.closed = true
	h.q = nil
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return nil
}

// errHotplugNotMade refuses a nil or zero Hotplug, as usb.Hotplug does.
func errHotplugNotMade() error {
	return fmt.Errorf("usbsim: hotplug: %w: Hotplug not made by Scanner.WatchHotplug", ioring.ErrInvalid)
}

// errLost is Next's report of n events dropped.
func errLost(n int) error {
	return fmt.Errorf("usbsim: hotplug: %w: %d events dropped", syscall.ENOBUFS, n)
}
