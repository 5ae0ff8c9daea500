package minidrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv/scanproto"
	"github.com/cancelio/cancelio/usb"
)

// Device recovery and the synchronous commands it is made of.
//
// An acquisition that ends without its whole image (canceled, failed) may
// leave a job running on the device and stale data in its IN pipe. The
// transition that ends it says so (ActionRecover), and the acquisition
// hands the device (ioSem) to recoverDevice, in a goroutine of its own,
// once every I/O of the acquisition has delivered its completion: the
// caller of CancelPendingIO never waits for the device. The next Lock or
// AcquireItemData waits for the recovery under its own context
// (lockDevice) and retries a resynchronization that failed (checkDevice).

// recoverDevice brings the device back in step after an acquisition that
// ended early: it resynchronizes it (resync: the abort of the job, then an
// echoed marker read back through bulk IN, everything before it dropped as
// stale), within AbortTimeout. A device that does not answer in time is
// reset (the halts of both bulk endpoints cleared, which also discards what
// it had sent) and resynchronized again, within AbortTimeout. A device that
// still does not answer is left dirty, with the error that Lock and the
// next acquisition report (as ErrNotRecovered) until a resynchronization
// succeeds. A device found gone moves the driver to Removed.
//
// The echoed marker, not the abort's zero-length flush marker, ends the
// flush: on a real bus a zero-length packet also ends the transfer that
// reads a stale remainder of whole packets, so a flush that waited for an
// empty transfer after it would wait until its deadline, and the reset that
// follows is the step to avoid (gousb has no clear-halt of its own).
//
// It runs in its own goroutine (started through d.recoverFn, which does not
// allocate) with ioSem held: the acquisition that ended hands it over, and
// recoverDevice releases it when done.
func (d *Driver) recoverDevice() {
	defer d.unlockIO()
	d.mu.Lock()
	dev, out, in := d.dev, d.out, d.in
	d.mu.Unlock()
	err := d.resync(dev, out, in, nil, time.Now().Add(d.cfg.AbortTimeout))
	if err != nil && !errors.Is(err, usb.ErrNoDevice) {
		err = fmt.Errorf("the device did not answer the abort within %v (%w)", d.cfg.AbortTimeout, err)
		rerr := errors.Join(dev.ClearHalt(in.Desc().Address), dev.ClearHalt(out.Desc().Address))
		if rerr == nil {
			rerr = d.resync(dev, out, in, nil, time.Now().Add(d.cfg.AbortTimeout))
		}
		if rerr == nil {
			err = nil // reset and resynchronized
		} else {
			err = fmt.Errorf("%w; reset, it did not answer the resynchronization either (%w)", err, rerr)
		}
	}
	d.mu.Lock()
	d.recovering = false
	d.recoverErr = err
	d.dirty = err != nil
	d.mu.Unlock()
	if errors.Is(err, usb.ErrNoDevice) {
		_, _ = d.m.Fire(DeviceDisconnected)
	}
}

// lockDevice takes ioSem for Lock or an acquisition: it waits for an
// acquisition overtaken by a removal or a suspend to return, and for the
// device's recovery to end. When ctx ends first it fails with
// ErrNotRecovered while the device is still recovering, ErrBusy otherwise
// (both wrap ctx's error).
func (d *Driver) lockDevice(ctx context.Context) error {
	err := d.lockIO(ctx)
	if err == nil {
		return nil
	}
	d.mu.Lock()
	recovering := d.recovering
	d.mu.Unlock()
	if recovering {
		return ErrNotRecovered.Wrap(fmt.Errorf("still recovering: %w", ctx.Err()))
	}
	return err
}

// checkDevice makes sure that the device recovered from the last
// acquisition before Lock goes on: it waits for a recovery still running,
// and resynchronizes a device whose recovery failed (it may answer now).
// It fails with ErrNotRecovered (or ErrOffline for a device found gone),
// or the errors of lockDevice.
func (d *Driver) checkDevice(ctx context.Context) error {
	d.mu.Lock()
	clean := !d.recovering && d.recoverErr == nil
	d.mu.Unlock()
	if clean {
		return nil
	}
	if err := d.lockDevice(ctx); err != nil {
		return err
	}
	defer d.unlockIO()
	d.mu.Lock()
	dev, out, in, rerr := d.dev, d.out, d.in, d.recoverErr
	d.mu.Unlock()
	if rerr == nil || dev == nil {
		return nil
	}
	if err := d.probe(ctx, dev, out, in); err != nil {
		if errors.Is(err, ErrOffline) {
			return err
		}
		return ErrNotRecovered.Wrap(fmt.Errorf("%w (before: %w)", err, rerr))
	}
	d.mu.Lock()
	d.dirty, d.recoverErr = false, nil
	d.mu.Unlock()
	return nil
}

// probe resynchronizes the device within AbortTimeout (or until ctx
// ends) and maps failures to typed errors.
func (d *Driver) probe(ctx context.Context, dev *usb.Device, out, in *usb.Endpoint) error {
	tok := d.cfg.Ring.NewToken()
	stop := tok.Bind(ctx)
	defer stop()
	err := d.resync(dev, out, in, tok, time.Now().Add(d.cfg.AbortTimeout))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, usb.ErrNoDevice):
		return ErrOffline.Wrap(err)
	}
	return ErrDeviceCommunication.Wrap(fmt.Errorf("device did not answer within %v: %w", d.cfg.AbortTimeout, err))
}

// syncSeq numbers the markers of resync.
var syncSeq atomic.Uint64

// resync brings the device to a known state whatever it holds: it aborts
// any job, then asks the device to echo a unique marker, and reads bulk IN
// until the marker comes back. The device runs commands in order, so
// everything before the marker is stale (image data, flush markers of
// earlier aborts that were never read), and nothing follows it. A halted
// endpoint is cleared and the sequence started again. tok, if not nil,
// covers every transfer; deadline bounds them all. ioSem held, nothing
// pending on the endpoints.
func (d *Driver) resync(dev *usb.Device, out, in *usb.Endpoint, tok *ioring.Token, deadline time.Time) error {
	buf := d.flushBuffer(in)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		d.marker = strconv.AppendUint(append(d.marker[:0], "cancelio sync "...), syncSeq.Add(1), 16)
		if err = d.command(dev, out, scanproto.AbortCommand(), tok, deadline); err != nil {
			if errors.Is(err, usb.ErrStall) {
				continue
			}
			return err
		}
		d.cmd = scanproto.AppendEcho(d.cmd[:0], d.marker)
		if err = d.command(dev, out, d.cmd, tok, deadline); err != nil {
			if errors.Is(err, usb.ErrStall) {
				continue
			}
			return err
		}
		for {
			var n int
			n, err = d.transfer(in, buf, tok, deadline)
			if errors.Is(err, usb.ErrStall) {
				// Clearing the halt discards what the device had sent,
				// perhaps the marker: start again.
				if err = dev.ClearHalt(in.Desc().Address); err != nil {
					return err
				}
				err = usb.ErrStall
				break
			}
			if err != nil {
				return err
			}
			if bytes.Equal(buf[:n], d.marker) {
				return nil
			}
		}
	}
	return err
}

// transfer runs one transfer on ep covered by tok (if not nil) and waits
// for its completion. A non-zero deadline bounds it (usb.Xfer.Deadline):
// the result is then usb.ErrTimeout. Cancels go through tokens only, never
// through a context given to Request.Wait. It does not allocate.
func (d *Driver) transfer(ep *usb.Endpoint, buf []byte, tok *ioring.Token, deadline time.Time) (int, error) {
	var dl time.Duration
	if !deadline.IsZero() {
		if dl = time.Until(deadline); dl <= 0 {
			return 0, usb.ErrTimeout
		}
	}
	q, err := ep.Start(buf, usb.Xfer{Token: tok, Deadline: dl})
	if err != nil {
		return 0, err
	}
	c, err := q.Wait(context.Background())
	if err != nil {
		return 0, err
	}
	return c.N, c.Err
}

// command sends one command on bulk OUT and waits for the device to accept
// it; a stall is cleared before ErrStall is returned.
func (d *Driver) command(dev *usb.Device, out *usb.Endpoint, cmd []byte, tok *ioring.Token, deadline time.Time) error {
	_, err := d.transfer(out, cmd, tok, deadline)
	if errors.Is(err, usb.ErrStall) {
		if cerr := dev.ClearHalt(out.Desc().Address); cerr != nil {
			return cerr
		}
	}
	return err
}

// flushBufferSize is the size of flushBuffer on an endpoint whose
// transport sets no limit (libusb): 64 KiB, not one packet per read.
const flushBufferSize = 64 << 10

// flushBuffer returns a buffer for reads that drop their data: one
// endpoint transfer (flushBufferSize where the transport sets no limit),
// so that no read needs a bounce copy. ioSem held.
func (d *Driver) flushBuffer(in *usb.Endpoint) []byte {
	n := in.Desc().MaxTransfer
	if n <= 0 {
		n = flushBufferSize
	}
	n = max(n, BufferAlign)
	if len(d.flushBuf) < n {
		d.flushBuf = make([]byte, n)
	}
	return d.flushBuf[:n]
}
