//go:build cgo

package usb

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/usbfs"
)

// fakeCall is one transfer the fake libusb received: the test answers it
// (answer), or its context ends and it returns TransferCancelled, as
// gousb's ReadContext does after libusb_cancel_transfer.
type fakeCall struct {
	ctx    context.Context
	addr   uint8
	buf    []byte
	setup  Setup // of a control transfer (addr 0)
	answer chan fakeResult
}

type fakeResult struct {
	n   int
	err error
}

// fakeLibusb is a libusbDevice whose transfers the test drives.
type fakeLibusb struct {
	calls    chan *fakeCall
	gone     atomic.Bool
	closed   atomic.Int32
	resets   atomic.Int32
	mu       sync.Mutex
	cleared  []uint8 // guarded by mu
	clearErr error   // what clearHalt returns; guarded by mu
	canceled int     // transfers that ended by their context; guarded by mu
}

func newFakeLibusb() *fakeLibusb { return &fakeLibusb{calls: make(chan *fakeCall, 64)} }

func (f *fakeLibusb) transfer(ctx context.Context, addr uint8, buf []byte) (int, error) {
	c := &fakeCall{ctx: ctx, addr: addr, buf: buf, answer: make(chan fakeResult, 1)}
	f.calls <- c
	select {
	case r := <-c.answer:
		return r.n, r.err
	case <-ctx.Done():
		f.mu.Lock()
		f.canceled++
		f.mu.Unlock()
		return 0, gousb.TransferCancelled
	}
}

// control is answered like a transfer, on address 0, with the setup in
// the call; like gousb's, it cannot be canceled.
func (f *fakeLibusb) control(s Setup, data []byte) (int, error) {
	c := &fakeCall{ctx: context.Background(), addr: 0, buf: data, setup: s, answer: make(chan fakeResult, 1)}
	f.calls <- c
	r := <-c.answer
	return r.n, r.err
}

func (f *fakeLibusb) clearHalt(addr uint8) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleared = append(f.cleared, addr)
	return f.clearErr
}

func (f *fakeLibusb) reset() error {
	f.resets.Add(1)
	return nil
}

func (f *fakeLibusb) present() bool { return !f.gone.Load() }

func (f *fakeLibusb) close() error {
	f.closed.Add(1)
	return nil
}

// next waits for the fake's next transfer.
func (f *fakeLibusb) next(t testing.TB) *fakeCall {
	t.Helper()
	select {
	case c := <-f.calls:
		return c
	case <-time.After(Patience):
		t.Fatal("no transfer reached libusb")
		return nil
	}
}

// assertIdle checks that no transfer reaches libusb for a while.
func (f *fakeLibusb) assertIdle(t testing.TB) {
	t.Helper()
	select {
	case c := <-f.calls:
		t.Fatalf("unexpected transfer on %#02x", c.addr)
	case <-time.After(Quiet):
	}
}

// newFakeDev opens a Device on the fake with bulk OUT 0x02 and bulk IN 0x81.
func newFakeDev(t *testing.T) (*ioring.Ring, *fakeLibusb, *Device, *Endpoint, *Endpoint) {
	t.Helper()
	CheckFDs(t)
	r := NewRing(t, 32)
	f := newFakeLibusb()
	desc := DeviceDesc{Bus: 1, Address: 4, VendorID: 0x1209, ProductID: 0x0001, Endpoints: []EndpointDesc{
		{Address: 0x02, Type: Bulk, MaxPacketSize: 512},
		{Address: 0x81, Type: Bulk, MaxPacketSize: 512},
	}}
	d := newLibusbDevice(r, desc, f, false)
	t.Cleanup(func() { _ = d.Close() })
	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	return r, f, d, out, in
}

func TestLibusbTransfer(t *testing.T) {
	r, f, _, out, in := newFakeDev(t)
	buf := make([]byte, 64)
	_, err := in.Submit(buf, Xfer{User: "in"})
	require.NoError(t, err)
	c := f.next(t)
	assert.Equal(t, uint8(0x81), c.addr)
	copy(c.buf, "hello")
	c.answer <- fakeResult{n: 5}
	got := Reap(t, r, 1)[0]
	require.NoError(t, got.Err)
	assert.Equal(t, 5, got.N)
	assert.Equal(t, "in", got.User)
	assert.Equal(t, "hello", string(buf[:5]))

	done := make(chan error, 1)
	go func() {
		n, err := out.Transfer(context.Background(), []byte("cmd"))
		assert.Equal(t, 3, n)
		done <- err
	}()
	c = f.next(t)
	assert.Equal(t, uint8(0x02), c.addr)
	assert.Equal(t, "cmd", string(c.buf))
	c.answer <- fakeResult{n: 3}
	require.NoError(t, <-done)
}

// TestLibusbCancelToken: a token cancels the transfer in progress through
// the context given to gousb, and a queued one without reaching libusb.
func TestLibusbCancelToken(t *testing.T) {
	r, f, _, _, in := newFakeDev(t)
	tok := r.NewToken()
	_, err := in.Submit(make([]byte, 64), Xfer{Token: tok, User: 1})
	require.NoError(t, err)
	_, err = in.Submit(make([]byte, 64), Xfer{Token: tok, User: 2})
	require.NoError(t, err)
	c := f.next(t)
	require.NoError(t, tok.Cancel())
	for _, got := range Reap(t, r, 2) {
		assert.ErrorIs(t, got.Err, ErrCanceled, "transfer %v", got.User)
	}
	assert.ErrorIs(t, c.ctx.Err(), context.Canceled, "gousb's context")
	f.assertIdle(t) // the queued transfer never reached libusb
	f.mu.Lock()
	assert.Equal(t, 1, f.canceled)
	f.mu.Unlock()
}

func TestLibusbDeadline(t *testing.T) {
	// Long enough for the pump to hand the transfer to libusb first, even
	// in the emulated guest under load (10 ms was not: the transfer timed
	// out while still queued and never reached the fake).
	const deadline = 250 * time.Millisecond
	r, f, _, _, in := newFakeDev(t)
	_, err := in.Submit(make([]byte, 64), Xfer{Deadline: deadline})
	require.NoError(t, err)
	f.next(t)
	got := Reap(t, r, 1)[0]
	assert.ErrorIs(t, got.Err, ErrTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := in.Transfer(ctx, make([]byte, 64))
		done <- err
	}()
	f.next(t)
	assert.ErrorIs(t, <-done, ErrTimeout)
}

// TestLibusbCancelLosesRace: a transfer that completed before its cancel
// reached libusb keeps its result.
func TestLibusbCancelLosesRace(t *testing.T) {
	r, f, _, _, in := newFakeDev(t)
	buf := make([]byte, 8)
	q, err := in.Submit(buf, Xfer{})
	require.NoError(t, err)
	c := f.next(t)
	// libusb finished the transfer, gousb reports it even though the
	// context ends now.
	copy(c.buf, "data")
	c.answer <- fakeResult{n: 4}
	got := Reap(t, r, 1)[0]
	_ = q.Cancel()
	require.NoError(t, got.Err)
	assert.Equal(t, 4, got.N)
}

func TestLibusbErrors(t *testing.T) {
	r, f, d, out, in := newFakeDev(t)
	for _, tc := range []struct {
		res  error
		want error
	}{
		{gousb.TransferStall, ErrStall},
		{gousb.ErrorPipe, ErrStall},
		{gousb.TransferTimedOut, ErrTimeout},
		{gousb.TransferOverflow, ErrBabble},
		{gousb.TransferError, gousb.TransferError}, // device still there
	} {
		_, err := in.Submit(make([]byte, 8), Xfer{})
		require.NoError(t, err)
		f.next(t).answer <- fakeResult{err: tc.res}
		got := Reap(t, r, 1)[0]
		assert.ErrorIs(t, got.Err, tc.want, "libusb result %v", tc.res)
	}
	require.NoError(t, d.ClearHalt(0x81))
	f.mu.Lock()
	assert.Equal(t, []uint8{0x81}, f.cleared)
	f.mu.Unlock()

	// An unplug during a transfer: libusb says TRANSFER_ERROR, the device
	// node is gone.
	_, err := out.Submit([]byte("x"), Xfer{})
	require.NoError(t, err)
	c := f.next(t)
	f.gone.Store(true)
	c.answer <- fakeResult{err: gousb.TransferError}
	got := Reap(t, r, 1)[0]
	assert.ErrorIs(t, got.Err, ErrNoDevice)
	assert.ErrorIs(t, got.Err, ioring.ErrNoDevice)
	_, err = in.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ErrNoDevice)
}

func TestLibusbNoDevice(t *testing.T) {
	r, f, _, _, in := newFakeDev(t)
	for i := range 3 {
		_, err := in.Submit(make([]byte, 8), Xfer{User: i})
		require.NoError(t, err)
	}
	f.next(t).answer <- fakeResult{err: gousb.TransferNoDevice}
	for _, got := range Reap(t, r, 3) {
		assert.ErrorIs(t, got.Err, ErrNoDevice, "transfer %v", got.User)
	}
	f.assertIdle(t) // the queued ones fail without reaching libusb
}

// TestLibusbClearHaltUnplug: libusb's clear-halt (a synchronous control
// transfer) fails with LIBUSB_ERROR_IO when the device goes away under it;
// that is ErrNoDevice once the device node is gone, and stays an I/O error
// while the device is there.
func TestLibusbClearHaltUnplug(t *testing.T) {
	_, f, d, out, _ := newFakeDev(t)
	f.mu.Lock()
	f.clearErr = gousb.ErrorIO
	f.mu.Unlock()
	err := d.ClearHalt(out.Desc().Address)
	assert.ErrorIs(t, err, gousb.ErrorIO, "device present")
	assert.NotErrorIs(t, err, ErrNoDevice)
	f.gone.Store(true)
	assert.ErrorIs(t, d.ClearHalt(out.Desc().Address), ErrNoDevice, "device gone")
}

// TestLibusbCloseDrains: Close cancels the transfer in libusb and the
// queued ones, waits for their completions, then closes the device once.
func TestLibusbCloseDrains(t *testing.T) {
	r, f, d, out, in := newFakeDev(t)
	for i := range 4 {
		ep := in
		if i == 3 {
			ep = out
		}
		_, err := ep.Submit(make([]byte, 8), Xfer{User: i})
		require.NoError(t, err)
	}
	f.next(t)
	f.next(t)
	require.NoError(t, d.Close())
	assert.Equal(t, int32(1), f.closed.Load())
	var cs [8]ioring.Completion
	n, err := r.Reap(cs[:], 0)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	for _, c := range cs[:n] {
		assert.ErrorIs(t, c.Err, ErrCanceled)
	}
	assert.ErrorIs(t, d.Close(), ErrClosed)
	assert.Equal(t, int32(1), f.closed.Load())
}

func TestLibusbErrorMap(t *testing.T) {
	for in, want := range map[error]error{
		gousb.TransferCancelled: ErrCanceled,
		gousb.ErrorInterrupted:  ErrCanceled,
		gousb.TransferTimedOut:  ErrTimeout,
		gousb.ErrorTimeout:      ErrTimeout,
		gousb.TransferStall:     ErrStall,
		gousb.ErrorPipe:         ErrStall,
		gousb.TransferNoDevice:  ErrNoDevice,
		gousb.ErrorNoDevice:     ErrNoDevice,
		gousb.TransferOverflow:  ErrBabble,
		gousb.ErrorOverflow:     ErrBabble,
		gousb.ErrorAccess:       gousb.ErrorAccess,
	} {
		assert.Equal(t, want, libusbError(in), "%v", in)
	}
	assert.NoError(t, libusbError(nil))
	wrapped := errors.Join(errors.New("ctx"), gousb.TransferStall)
	assert.Equal(t, ErrStall, libusbError(wrapped))
}

// TestLibusbZeroPacket: WithZeroPacket ends a bulk OUT transfer of whole
// packets with a zero-length transfer, and only such a transfer.
func TestLibusbZeroPacket(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 32)
	f := newFakeLibusb()
	desc := DeviceDesc{Endpoints: []EndpointDesc{
		{Address: 0x02, Type: Bulk, MaxPacketSize: 512},
		{Address: 0x81, Type: Bulk, MaxPacketSize: 512},
	}}
	d := newLibusbDevice(r, desc, f, true)
	t.Cleanup(func() { _ = d.Close() })
	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)

	for _, tc := range []struct {
		ep   *Endpoint
		n    int
		zlps int
	}{{out, 512, 1}, {out, 1024, 1}, {out, 100, 0}, {out, 513, 0}, {out, 0, 0}, {in, 512, 0}} {
		_, err := tc.ep.Submit(make([]byte, tc.n), Xfer{})
		require.NoError(t, err)
		c := f.next(t)
		require.Len(t, c.buf, tc.n)
		c.answer <- fakeResult{n: tc.n}
		for range tc.zlps {
			z := f.next(t)
			assert.Empty(t, z.buf, "zero-length packet after %d bytes", tc.n)
			z.answer <- fakeResult{}
		}
		got := Reap(t, r, 1)[0]
		require.NoError(t, got.Err)
		assert.Equal(t, tc.n, got.N, "transfer of %d bytes on %v", tc.n, tc.ep.Desc())
	}
	f.assertIdle(t) // an extra transfer would also have shown as the next one

	// A cancel while the zero-length packet waits: the data went out.
	q, err := out.Submit(make([]byte, 512), Xfer{})
	require.NoError(t, err)
	f.next(t).answer <- fakeResult{n: 512}
	f.next(t) // the zero-length packet, never answered
	require.NoError(t, q.Cancel())
	got := Reap(t, r, 1)[0]
	assert.ErrorIs(t, got.Err, ErrCanceled)
	assert.Equal(t, 512, got.N, "bytes sent before the cancel")
}

// TestErrorMapsAgree: the same outcome reported by either backend is the
// same error of this package (usbfs reports package base's errors, which
// are this package's, itself).
func TestErrorMapsAgree(t *testing.T) {
	for _, tc := range []struct {
		libusb, usbfs error
	}{
		{gousb.TransferCancelled, ioring.ErrCanceled},
		{gousb.TransferTimedOut, ioring.ErrTimeout},
		{gousb.TransferStall, usbfs.ErrStall},
		{gousb.TransferOverflow, usbfs.ErrBabble},
		{gousb.TransferNoDevice, usbfs.ErrNoDevice},
	} {
		assert.Equal(t, libusbError(tc.libusb), tc.usbfs, "%v / %v", tc.libusb, tc.usbfs)
	}
}

// TestLibusbControl: a control transfer reaches libusb's synchronous
// control call with its setup packet and data stage, and completes with
// the data stage's bytes; a cancel after that finds nothing to cancel; one
// before it starts wins without reaching libusb. (A cancel while libusb
// runs it: adv4_libusbctl_test.go.)
func TestLibusbControl(t *testing.T) {
	r, f, d, _, in := newFakeDev(t)
	s := Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x42, Value: 7, Index: 9, Length: 4}
	buf := make([]byte, SetupSize+4)
	s.Put(buf)
	q, err := d.SubmitControl(buf, Xfer{User: "ctl"})
	require.NoError(t, err)
	c := f.next(t)
	assert.Equal(t, uint8(0), c.addr)
	assert.Equal(t, s, c.setup)
	require.Len(t, c.buf, 4)
	copy(c.buf, "abc")
	c.answer <- fakeResult{n: 3}
	got := Reap(t, r, 1)[0]
	assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "too late: completed")
	require.NoError(t, got.Err)
	assert.Equal(t, 3, got.N)
	assert.Equal(t, "ctl", got.User)
	assert.Equal(t, "abc", string(buf[SetupSize:SetupSize+3]))

	// Queued behind a control transfer libusb holds, a second one is
	// canceled without reaching libusb.
	_, err = d.SubmitControl(buf, Xfer{User: 1})
	require.NoError(t, err)
	c = f.next(t)
	q2, err := d.SubmitControl(buf, Xfer{User: 2})
	require.NoError(t, err)
	require.NoError(t, q2.Cancel())
	got = Reap(t, r, 1)[0]
	assert.Equal(t, 2, got.User)
	assert.ErrorIs(t, got.Err, ErrCanceled)
	c.answer <- fakeResult{err: gousb.ErrorPipe}
	got = Reap(t, r, 1)[0]
	assert.Equal(t, 1, got.User)
	assert.ErrorIs(t, got.Err, ErrStall, "a refused request")
	f.assertIdle(t)

	// A failure counts no bytes, whatever count gousb hands back with it
	// (libusb's negative error code).
	_, err = d.SubmitControl(buf, Xfer{User: 3})
	require.NoError(t, err)
	f.next(t).answer <- fakeResult{n: -7, err: gousb.ErrorTimeout}
	got = Reap(t, r, 1)[0]
	assert.ErrorIs(t, got.Err, ErrTimeout)
	assert.Zero(t, got.N)

	// Bulk transfers are unaffected.
	_, err = in.Submit(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	f.next(t).answer <- fakeResult{n: 8}
	assert.NoError(t, Reap(t, r, 1)[0].Err)
}

// TestLibusbReset: Reset refuses while a transfer is pending, then resets
// through libusb once, and says ErrClosed after Close.
func TestLibusbReset(t *testing.T) {
	r, f, d, _, in := newFakeDev(t)
	q, err := in.Submit(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	f.next(t)
	assert.ErrorIs(t, d.Reset(), ioring.ErrInvalid, "a transfer is pending")
	assert.Zero(t, f.resets.Load())
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, Reap(t, r, 1)[0].Err, ErrCanceled)
	require.NoError(t, d.Reset())
	assert.Equal(t, int32(1), f.resets.Load())
	require.NoError(t, d.Close())
	assert.ErrorIs(t, d.Reset(), ErrClosed)
	assert.Equal(t, int32(1), f.resets.Load())
}
