package usb

import (
	"context"
	"errors"
	"iter"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/ioring"
)

// sysfsRoot is where the kernel's DEVPATHs are rooted.
var sysfsRoot = "/sys"

// Hotplug reports the arrival and removal of USB devices straight from
// the kernel: it reads the kobject uevent netlink socket
// (NETLINK_KOBJECT_UEVENT, the kernel's multicast group) through the
// ring, so no udev daemon is needed and a pending read is a ring request
// that a context, Close or Ring.CancelAll cancels like any other. It sees
// what happens after WatchHotplug returns; List gives what was there
// before. Next may be called from one goroutine at a time; Close from any.
type Hotplug struct {
	ring   *ioring.Ring
	fd     int
	filter HotplugFilter

	mu      sync.Mutex        // held by Next; Close takes it to wait for Next
	buf     []byte            // guarded by mu
	serials map[string]string // DEVPATH -> serial of the devices seen arriving; guarded by mu
	// After the kernel reported a loss: the events it had queued before
	// the report (drain), then the report. Guarded by mu.
	pending []HotplugEvent
	loss    error

	qmu    sync.Mutex     // guards q and closed
	q      ioring.Request // the read in flight, for Close to cancel
	closed bool
}

// uevent socket sizes: a uevent is at most a few KiB (UEVENT_BUFFER_SIZE
// is 2 KiB); the receive buffer holds a burst of them (a hub's worth of
// devices and interfaces) while the reader is away.
const (
	ueventMax    = 8 << 10
	ueventRcvBuf = 1 << 20
)

// WatchHotplug opens the kernel's uevent socket and returns a Hotplug
// that reports, in order, the USB devices matching f that arrive or leave
// from now on. Close it when done. It fails with an error wrapping
// ioring.ErrInvalid for a nil ring, and with the socket's errors where
// netlink is not available.
func WatchHotplug(ring *ioring.Ring, f HotplugFilter) (*Hotplug, error) {
	if ring == nil {
		return nil, errorf("usb: hotplug: %w: nil ring", ioring.ErrInvalid)
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, errorf("usb: hotplug: uevent socket: %w", err)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, ueventRcvBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, ueventRcvBuf)
	}
	// Group 1: the kernel's own uevents (udev rebroadcasts on group 2).
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, errorf("usb: hotplug: bind uevent socket: %w", err)
	}
	return &Hotplug{ring: ring, fd: fd, filter: f, buf: make([]byte, ueventMax), serials: map[string]string{}}, nil
}

// Next waits for the next matching event. ctx ending cancels the pending
// read: then the error is ErrCanceled (ErrTimeout for a deadline). After
// Close, or when Close ends the wait, it returns ErrClosed. An error
// wrapping ENOBUFS means the kernel dropped events while nobody read,
// there in the sequence: the events before it came before the loss, those
// after it after (the watch goes on; compare with List to catch up).
func (h *Hotplug) Next(ctx context.Context) (HotplugEvent, error) {
	if h == nil || h.ring == nil {
		return HotplugEvent{}, errNoWatch()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		h.qmu.Lock()
		if h.closed {
			h.qmu.Unlock()
			return HotplugEvent{}, ErrClosed
		}
		if len(h.pending) > 0 || h.loss != nil {
			h.qmu.Unlock()
			if len(h.pending) > 0 {
				e := h.pending[0]
				h.pending = h.pending[1:]
				return e, nil
			}
			err := h.loss
			h.loss = nil
			return HotplugEvent{}, err
		}
		q, err := h.ring.Start(ioring.Read(h.fd, h.buf, -1))
		if err != nil {
			h.qmu.Unlock()
			return HotplugEvent{}, errorf("usb: hotplug: %w", err)
		}
		h.q = q
		h.qmu.Unlock()
		c, err := q.Wait(ctx)
		h.qmu.Lock()
		h.q = ioring.Request{}
		closed := h.closed
		h.qmu.Unlock()
		switch {
		case err != nil:
			return HotplugEvent{}, errorf("usb: hotplug: %w", err)
		case closed && errors.Is(c.Err, ErrCanceled):
			return HotplugEvent{}, ErrClosed
		case errors.Is(c.Err, unix.ENOBUFS):
			// The kernel reports a loss before the datagrams it had
			// queued, which are older: they go out first.
			h.loss = errorf("usb: hotplug: %w", c.Err)
			h.drain()
			continue
		case c.Err != nil:
			return HotplugEvent{}, errorf("usb: hotplug: %w", c.Err)
		}
		if e, ok := h.event(h.buf[:c.N]); ok {
			return e, nil
		}
	}
}

// event parses one uevent, b, and reports whether it is a USB device's
// that the filter lets through. h.mu held.
func (h *Hotplug) event(b []byte) (HotplugEvent, bool) {
	e, ok := parseUevent(b)
	if !ok {
		return e, false
	}
	if e.Kind == Arrived {
		e.Serial = readSysfsString(sysfsRoot + e.DevPath + "/serial")
		h.serials[e.DevPath] = e.Serial
	} else {
		e.Serial = h.serials[e.DevPath]
		delete(h.serials, e.DevPath)
	}
	return e, h.filter.match(e)
}

// drain reads, without waiting, what the socket held when the kernel
// reported a loss, into h.pending: at most a receive buffer's worth (one
// more loss meanwhile is part of the same report). h.mu held, no read in
// flight.
func (h *Hotplug) drain() {
	for range ueventRcvBuf / 64 {
		n, _, err := unix.Recvfrom(h.fd, h.buf, unix.MSG_DONTWAIT)
		switch {
		case err == unix.ENOBUFS || err == unix.EINTR:
			continue
		case err != nil:
			return // EAGAIN: nothing left
		}
		if e, ok := h.event(h.buf[:n]); ok {
			h.pending = append(h.pending, e)
		}
	}
}

// Events returns the matching events as a sequence to range over, until
// ctx ends, Close, or an error: the last pair carries that error (ctx's
// end gives ErrCanceled or ErrTimeout, Close gives ErrClosed).
func (h *Hotplug) Events(ctx context.Context) iter.Seq2[HotplugEvent, error] {
	return func(yield func(HotplugEvent, error) bool) {
		for {
			e, err := h.Next(ctx)
			if !yield(e, err) || err != nil {
				return
			}
		}
	}
}

// Close cancels a pending Next (which then returns ErrClosed), waits for
// it and closes the socket. Later calls return ErrClosed.
func (h *Hotplug) Close() error {
	if h == nil || h.ring == nil {
		return errNoWatch() // its fd, 0, is not its own
	}
	h.qmu.Lock()
	if h.closed {
		h.qmu.Unlock()
		return ErrClosed
	}
	h.closed = true
	q := h.q
	h.qmu.Unlock()
	if q.Pending() {
		_ = q.Cancel()
	}
	h.mu.Lock() // Next has returned
	defer h.mu.Unlock()
	return unix.Close(h.fd)
}

// errNoWatch refuses a call on a Hotplug that WatchHotplug did not make.
func errNoWatch() error {
	return errorf("usb: hotplug: %w: Hotplug not made by WatchHotplug", ioring.ErrInvalid)
}

// readSysfsString reads a sysfs attribute, without its newline; "" where
// it is missing.
func readSysfsString(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
