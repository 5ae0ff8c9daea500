//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/ioring"
)

// The ioctl numbers, as gcc computes them from <linux/usbdevice_fs.h> on
// amd64 (and every architecture with the generic encoding).
func TestIoctlNumbers(t *testing.T) {
	for name, c := range map[string]struct{ got, want uintptr }{
		"CONTROL":          {ioctlControl, 0xc0185500},
		"SETINTERFACE":     {ioctlSetInterface, 0x80085504},
		"SETCONFIGURATION": {ioctlSetConfiguration, 0x80045505},
		"GETDRIVER":        {ioctlGetDriver, 0x41045508},
		"SUBMITURB":        {ioctlSubmitURB, 0x8038550a},
		"DISCARDURB":       {ioctlDiscardURB, 0x550b},
		"REAPURBNDELAY":    {ioctlReapURBNDelay, 0x4008550d},
		"CLAIMINTERFACE":   {ioctlClaimInterface, 0x8004550f},
		"RELEASEINTERFACE": {ioctlReleaseInterface, 0x80045510},
		"IOCTL":            {ioctlIoctl, 0xc0105512},
		"RESET":            {ioctlReset, 0x5514},
		"CLEAR_HALT":       {ioctlClearHalt, 0x80045515},
		"DISCONNECT":       {ioctlDisconnect, 0x5516},
		"GET_CAPABILITIES": {ioctlGetCapabilities, 0x8004551a},
		"DISCONNECT_CLAIM": {ioctlDisconnectClaim, 0x8108551b},
	} {
		assert.Equal(t, c.want, c.got, "USBDEVFS_%s: got %#x, want %#x", name, c.got, c.want)
	}
}

// Every URB status maps to the error the package doc promises.
func TestStatusError(t *testing.T) {
	for _, c := range []struct {
		status syscall.Errno
		gone   bool
		want   error
	}{
		{0, false, nil},
		{unix.ENOENT, false, ioring.ErrCanceled},
		{unix.ECONNRESET, false, ioring.ErrCanceled},
		{unix.EPIPE, false, ErrStall},
		{unix.EOVERFLOW, false, ErrBabble},
		{unix.ENODEV, false, ioring.ErrNoDevice},
		{unix.ESHUTDOWN, false, ioring.ErrNoDevice},
		{unix.EPROTO, true, ioring.ErrNoDevice},
		{unix.EILSEQ, true, ioring.ErrNoDevice},
		{unix.EPROTO, false, unix.EPROTO},
		{unix.EILSEQ, false, unix.EILSEQ},
		{unix.ETIMEDOUT, false, unix.ETIMEDOUT},
		{unix.EREMOTEIO, false, unix.EREMOTEIO},
		{unix.EXDEV, true, unix.EXDEV},
	} {
		err := statusError(-int32(c.status), c.gone)
		if c.want == nil {
			assert.NoError(t, err, "status -%d", c.status)
			continue
		}
		assert.ErrorIs(t, err, c.want, "status -%d (%v), gone %v", c.status, c.status, c.gone)
		if c.want == ioring.ErrNoDevice {
			assert.NotErrorIs(t, err, ioring.ErrCanceled, "a gone device is not a cancel")
		}
		var se *StatusError
		if errors.As(err, &se) {
			assert.Equal(t, c.status, se.Errno)
			assert.Contains(t, err.Error(), c.status.Error())
		}
	}
}

// fakeDevice is a Device on no fd at all (-1), with the gadget's
// descriptors: good enough to show that bad input never reaches an ioctl
// (an ioctl would fail with EBADF, not ErrInvalid). It has no reaper.
func fakeDevice(t *testing.T, caps Capabilities, maxURB int) (*Device, *ioring.Ring) {
	r, err := ioring.New(ioring.Config{Entries: 8})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	dd, cs, err := ParseDescriptors(gadgetDescriptors())
	require.NoError(t, err)
	d := &Device{
		fd: -1, ring: r, caps: caps, maxURB: maxURB, budget: defaultUsbfsMemory, config: 1,
		info: DeviceInfo{Descriptor: dd, Configs: cs, ActiveConfig: 1},
		alt:  map[uint8]uint8{}, claimed: map[uint8]bool{},
		inflight: map[uintptr]partRef{}, active: map[*transfer]struct{}{},
	}
	return d, r
}

func TestBadInput(t *testing.T) {
	d, r := fakeDevice(t, CapZeroPacket|CapNoPacketSizeLimit|CapBulkContinuation|CapReapAfterDisconnect, 8<<20)
	ctx := context.Background()

	_, err := d.Endpoint(0x84)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "no endpoint 0x84")
	_, err = d.Endpoint(0x01)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "0x01: OUT endpoint 1 does not exist, IN 0x81 does")

	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	intr, err := d.Endpoint(0x83)
	require.NoError(t, err)
	assert.Equal(t, 16<<20, in.MaxTransfer(), "bulk: split up to the usbfs budget")
	assert.Equal(t, 8<<20, intr.MaxTransfer(), "interrupt: one URB")

	for name, c := range map[string]struct {
		ep   *Endpoint
		buf  []byte
		opts TransferOptions
	}{
		"nil IN buffer":          {in, nil, TransferOptions{}},
		"empty interrupt IN":     {intr, []byte{}, TransferOptions{}},
		"bulk beyond the budget": {out, make([]byte, 16<<20+1), TransferOptions{}},
		"interrupt beyond a URB": {intr, make([]byte, 8<<20+1), TransferOptions{}},
		"zero packet on IN":      {in, make([]byte, 512), TransferOptions{ZeroPacket: true}},
		"negative deadline":      {in, make([]byte, 512), TransferOptions{Deadline: -1}},
		"token of another ring": {in, make([]byte, 512), TransferOptions{Token: func() *ioring.Token {
			r2, err := ioring.New(ioring.Config{Entries: 2})
			require.NoError(t, err)
			t.Cleanup(func() { r2.Close() })
			return r2.NewToken()
		}()}},
	} {
		_, err := c.ep.Submit(c.buf, c.opts)
		assert.ErrorIs(t, err, ioring.ErrInvalid, name)
	}
	_, err = in.Write(ctx, []byte("x"))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Write on an IN endpoint")
	_, err = out.Read(ctx, make([]byte, 512))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Read on an OUT endpoint")
	_, err = d.Control(0x80, 6, 0x100, 0, make([]byte, unix.Getpagesize()+1), 0)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "control data beyond a page")
	_, err = d.Control(0x80, 6, 0x100, 0, nil, -1)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "negative control timeout")
	assert.ErrorIs(t, d.SetConfiguration(7), ioring.ErrInvalid, "no configuration 7")
	assert.ErrorIs(t, d.SetAltSetting(0, 2), ioring.ErrInvalid, "no alternate setting 2")
	assert.ErrorIs(t, d.SetAltSetting(1, 0), ioring.ErrInvalid, "no interface 1")
	assert.ErrorIs(t, d.Claim(-1, false), ioring.ErrInvalid)
	assert.ErrorIs(t, d.Release(256), ioring.ErrInvalid)
	assert.Zero(t, r.InFlight(), "nothing reached the ring")

	// Alternate setting 1 of interface 0 has an isochronous endpoint.
	d.alt[0] = 1
	_, err = d.Endpoint(0x81)
	assert.ErrorIs(t, err, ioring.ErrNotSupported, "isochronous endpoint")
	delete(d.alt, 0)

	// A device seen disconnected refuses transfers up front.
	d.gone.Store(true)
	_, err = in.Submit(make([]byte, 512), TransferOptions{})
	assert.ErrorIs(t, err, ioring.ErrNoDevice)
	d.gone.Store(false)

	// A closed device refuses everything.
	d.closing = true
	_, err = in.Submit(make([]byte, 512), TransferOptions{})
	assert.ErrorIs(t, err, ErrClosed, "Submit")
	_, err = d.Control(0x80, 0, 0, 0, make([]byte, 2), 0)
	assert.ErrorIs(t, err, ErrClosed, "Control")
	assert.ErrorIs(t, d.Claim(0, true), ErrClosed, "Claim")
	assert.ErrorIs(t, in.ClearHalt(), ErrClosed, "ClearHalt")
	assert.ErrorIs(t, d.Reset(), ErrClosed, "Reset")
	_, err = d.Endpoint(0x81)
	assert.ErrorIs(t, err, ErrClosed, "Endpoint")
	assert.Zero(t, r.InFlight(), "nothing reached the ring")
}

// Without USBDEVFS_CAP_BULK_CONTINUATION a bulk transfer cannot be split:
// one larger than a URB is refused.
func TestNoSplitWithoutContinuation(t *testing.T) {
	d, _ := fakeDevice(t, 0, legacyURBSize)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	assert.Equal(t, legacyURBSize, in.MaxTransfer())
	_, err = in.Submit(make([]byte, legacyURBSize+1), TransferOptions{})
	require.ErrorIs(t, err, ioring.ErrInvalid)
	assert.Contains(t, err.Error(), "BULK_CONTINUATION")
	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	_, err = out.Submit(make([]byte, 512), TransferOptions{ZeroPacket: true})
	assert.ErrorIs(t, err, ioring.ErrNotSupported, "ZeroPacket without USBDEVFS_CAP_ZERO_PACKET")
}

// A split transfer's URBs: packet-aligned parts, SHORT_NOT_OK on every IN
// part but the last, BULK_CONTINUATION on every part but the first,
// ZERO_PACKET on the last OUT part only.
func TestSplitLayout(t *testing.T) {
	d, _ := fakeDevice(t, CapZeroPacket|CapNoPacketSizeLimit|CapBulkContinuation, 1000)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	buf := make([]byte, 1300)
	tr, err := in.newTransfer(buf, false)
	require.NoError(t, err)
	require.Len(t, tr.urbs, 3, "1000-byte URBs round down to 512 for a 512-byte endpoint")
	for i, want := range []struct {
		n     int32
		flags uint32
	}{{512, urbShortNotOK}, {512, urbShortNotOK | urbBulkContinuation}, {276, urbBulkContinuation}} {
		u := tr.urbs[i]
		assert.Equal(t, want.n, u.bufferLength, "URB %d length", i)
		assert.Equal(t, want.flags, u.flags, "URB %d flags", i)
		assert.Equal(t, uint8(0x81), u.endpoint)
		assert.Equal(t, urbTypeBulk, u.typ)
	}
	assert.Equal(t, urbAddr(&tr.urbs[0])+56, urbAddr(&tr.urbs[1]), "URBs are contiguous, 56 bytes each")

	out, err := d.Endpoint(0x02)
	require.NoError(t, err)
	tr, err = out.newTransfer(make([]byte, 1024), true)
	require.NoError(t, err)
	require.Len(t, tr.urbs, 2)
	assert.Equal(t, uint32(0), tr.urbs[0].flags)
	assert.Equal(t, uint32(urbBulkContinuation|urbZeroPacket), tr.urbs[1].flags)
	tr, err = out.newTransfer(nil, false)
	require.NoError(t, err, "a zero-length OUT transfer is a zero-length packet")
	require.Len(t, tr.urbs, 1)
	assert.Zero(t, tr.urbs[0].bufferLength)

	intr, err := d.Endpoint(0x83)
	require.NoError(t, err)
	assert.Equal(t, 1000, intr.MaxTransfer(), "interrupt transfers are not split")
	tr, err = intr.newTransfer(make([]byte, 64), false)
	require.NoError(t, err)
	assert.Equal(t, urbTypeInterrupt, tr.urbs[0].typ)
}

// A transfer's result adds its URBs up in order.
func TestTransferResult(t *testing.T) {
	submitErr := &OpError{Op: "submit URB", Err: unix.ENOMEM}
	for name, c := range map[string]struct {
		lens, actual, status []int32
		submitted            int
		submitErr            error
		n                    int
		want                 error
	}{
		"one, full":                     {[]int32{512}, []int32{512}, []int32{0}, 1, nil, 512, nil},
		"one, short":                    {[]int32{512}, []int32{100}, []int32{0}, 1, nil, 100, nil},
		"split, all full":               {[]int32{512, 512}, []int32{512, 512}, []int32{0, 0}, 2, nil, 1024, nil},
		"split, short in the first":     {[]int32{512, 512}, []int32{10, 0}, []int32{-int32(unix.EREMOTEIO), -int32(unix.ECONNRESET)}, 2, nil, 10, nil},
		"split, canceled in the second": {[]int32{512, 512}, []int32{512, 7}, []int32{0, -int32(unix.ENOENT)}, 2, nil, 519, ioring.ErrCanceled},
		"canceled before submission":    {[]int32{512, 512}, []int32{0, 0}, []int32{0, 0}, 0, nil, 0, ioring.ErrCanceled},
		"canceled between parts":        {[]int32{512, 512}, []int32{512, 0}, []int32{0, 0}, 1, nil, 512, ioring.ErrCanceled},
		"second refused":                {[]int32{512, 512}, []int32{3, 0}, []int32{-int32(unix.ENOENT), 0}, 1, submitErr, 3, unix.ENOMEM},
		"stall":                         {[]int32{512}, []int32{0}, []int32{-int32(unix.EPIPE)}, 1, nil, 0, ErrStall},
		"babble keeps the bytes":        {[]int32{512}, []int32{512}, []int32{-int32(unix.EOVERFLOW)}, 1, nil, 512, ErrBabble},
	} {
		tr := &transfer{d: &Device{}, urbs: make([]urb, len(c.lens)), submitted: c.submitted, submitErr: c.submitErr}
		for i := range c.lens {
			tr.urbs[i].bufferLength, tr.urbs[i].actualLength, tr.urbs[i].status = c.lens[i], c.actual[i], c.status[i]
		}
		n, err := tr.result()
		assert.Equal(t, c.n, n, name)
		if c.want == nil {
			assert.NoError(t, err, name)
		} else {
			assert.ErrorIs(t, err, c.want, name)
		}
	}
}

// A transfer that would take the accepted transfers past the usbfs memory
// budget is refused before any ioctl with an error wrapping ErrFull, and
// the refusal takes nothing from the budget.
func TestBudget(t *testing.T) {
	d, _ := fakeDevice(t, CapZeroPacket|CapNoPacketSizeLimit|CapBulkContinuation, 8<<20)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	d.charged = d.budget - 4096 // as if transfers were in flight
	_, err = in.Submit(make([]byte, 8192), TransferOptions{})
	require.ErrorIs(t, err, ioring.ErrFull)
	assert.Contains(t, err.Error(), "usbfs_memory_mb")
	assert.Equal(t, d.budget-4096, d.charged, "a refused transfer is not charged")
	assert.Empty(t, d.active)

	_, err = open(DeviceInfo{DevNode: "/dev/null"}, Config{Ring: d.ring, Depth: -1})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "negative Depth")
}

// TestControlErrDisconnect: a protocol error of a control ioctl
// (clear-halt during an unplug) is ErrNoDevice when the device is gone, and
// stays the protocol error, after the grace period, when it is not (this
// fake's fd is not a usbfs node: the probe never says ENODEV). Other
// errors pass as ioctlErr gives them.
func TestControlErrDisconnect(t *testing.T) {
	d, _ := fakeDevice(t, 0, 8<<20)
	err := d.controlErr("clear halt 0x02", unix.EPROTO)
	assert.ErrorIs(t, err, unix.EPROTO, "device present")
	assert.NotErrorIs(t, err, ErrNoDevice)
	assert.ErrorIs(t, d.controlErr("clear halt 0x02", unix.EBUSY), unix.EBUSY)
	assert.NoError(t, d.controlErr("clear halt 0x02", nil))

	d.gone.Store(true)
	for _, errno := range []unix.Errno{unix.EPROTO, unix.EILSEQ, unix.ETIME, unix.ESHUTDOWN} {
		err := d.controlErr("clear halt 0x02", errno)
		assert.ErrorIs(t, err, ErrNoDevice, "%v", errno)
		assert.ErrorIs(t, err, ioring.ErrNoDevice, "%v", errno)
	}
}
