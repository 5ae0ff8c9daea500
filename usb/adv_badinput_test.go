package usb_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdvBadXfer: tokens of another ring, negative and absurd deadlines,
// empty and nil buffers, OUT buffers past MaxTransfer, huge IN buffers:
// refused at the call with ErrInvalid (nothing left behind: Close does not
// wait for them), or run normally.
func TestAdvBadXfer(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	other := NewRing(t, 8)
	_, err := sd.in.Submit(make([]byte, 8), Xfer{Token: other.NewToken()})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "token of another ring")
	_, err = sd.d.SubmitControl(statusRequest(), Xfer{Token: other.NewToken()})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "control: token of another ring")
	_, err = sd.in.Submit(make([]byte, 8), Xfer{Deadline: -time.Second})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "negative deadline")
	_, err = sd.out.Submit([]byte{1}, Xfer{Deadline: math.MinInt64})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "most negative deadline")
	for _, buf := range [][]byte{nil, {}} {
		_, err = sd.in.Submit(buf, Xfer{})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "IN of %v", buf)
		_, err = sd.intr.Start(buf, Xfer{})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "interrupt IN of %v", buf)
		ctx, cancel := testContext()
		_, err = sd.in.Transfer(ctx, buf)
		cancel()
		assert.ErrorIs(t, err, ioring.ErrInvalid, "IN Transfer of %v", buf)
	}
	_, err = sd.out.Submit(make([]byte, 4097), Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "OUT past MaxTransfer")
	AssertSettled(t, sd.r)

	// An absurd deadline is no deadline in practice: the transfer runs,
	// and a cancel ends it.
	sd.s.Hang()
	q, err := sd.in.Start(make([]byte, 8), Xfer{Deadline: math.MaxInt64, User: "far"})
	require.NoError(t, err)
	time.Sleep(Quiet)
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "second cancel")
	ctx, cancel := testContext()
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.NotErrorIs(t, c.Err, ErrTimeout)
	sd.s.Resume()

	// A zero-length OUT packet (nil or empty) is a transfer of 0 bytes;
	// a huge IN buffer takes one message.
	for _, buf := range [][]byte{nil, {}} {
		n, err := sd.out.Transfer(ctx, buf)
		require.NoError(t, err, "zero-length OUT")
		assert.Zero(t, n)
	}
	msg := []byte("into a big buffer")
	sd.send(t, usbsim.EchoCommand(msg))
	big := make([]byte, 4<<20)
	n, err := sd.in.Transfer(ctx, big)
	require.NoError(t, err)
	assert.Equal(t, msg, big[:n])
	require.NoError(t, sd.d.Close())
}

// TestAdvTinyInBuffers: IN buffers of 1 byte read a message a byte at a
// time (the rest waits for the next transfers), also across a cancel; a
// ClearHalt discards the rest.
func TestAdvTinyInBuffers(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	msg := []byte("abcdef")
	sd.send(t, usbsim.EchoCommand(msg))
	var got []byte
	b := make([]byte, 1)
	for range 3 {
		got = append(got, sd.read(t, b)...)
	}
	// A transfer canceled while queued behind nothing: the rest stays.
	tk := sd.r.NewToken()
	require.NoError(t, tk.Cancel())
	q, err := sd.in.Start(b, Xfer{Token: tk})
	require.NoError(t, err)
	ctx, cancel := testContext()
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, c.Err, ErrCanceled)
	for range 3 {
		got = append(got, sd.read(t, b)...)
	}
	assert.Equal(t, msg, got)
	// Half a message, then ClearHalt: the rest is gone.
	sd.send(t, usbsim.EchoCommand([]byte("xyz")))
	assert.Equal(t, []byte("x"), sd.read(t, b))
	require.NoError(t, sd.d.ClearHalt(usbsim.AddrBulkIn))
	sd.send(t, usbsim.EchoCommand([]byte("next")))
	assert.Equal(t, []byte("next"), sd.read(t, make([]byte, 4096)))
}

// TestAdvBadControl: setup packets too short for themselves or for their
// wLength, data stages past the simulator's or wLength's limits; an IN
// request whose wLength is shorter than the answer gets wLength bytes; a
// string descriptor that does not exist stalls endpoint 0, which works on.
func TestAdvBadControl(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	ctx, cancel := testContext()
	defer cancel()
	long := make([]byte, SetupSize+10)
	Setup{RequestType: RequestOut | RequestVendor, Request: usbsim.VendorCommand, Length: 11}.Put(long)
	huge := make([]byte, SetupSize+usbsim.ControlMaxData+1)
	Setup{RequestType: RequestOut | RequestVendor, Request: usbsim.VendorCommand, Length: usbsim.ControlMaxData + 1}.Put(huge)
	for name, buf := range map[string][]byte{
		"nil": nil, "empty": {}, "7 bytes": make([]byte, 7), "wLength past buf": long, "past ControlMaxData": huge,
	} {
		_, err := sd.d.SubmitControl(buf, Xfer{})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "SubmitControl %s", name)
		_, err = sd.d.StartControl(buf, Xfer{})
		assert.ErrorIs(t, err, ioring.ErrInvalid, "StartControl %s", name)
	}
	_, err := sd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor, Request: usbsim.VendorCommand}, make([]byte, 0x10000))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "data past wLength's range")
	_, err = sd.d.Control(ctx, Setup{RequestType: RequestIn}, make([]byte, usbsim.ControlMaxData+1))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "IN data past ControlMaxData")
	AssertSettled(t, sd.r)

	d4 := make([]byte, 4)
	n, err := sd.d.Control(ctx, Setup{RequestType: RequestIn, Request: 0x06, Value: 0x0100}, d4)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.Equal(t, []byte{18, 1, 0, 2}, d4)

	_, err = sd.d.StringDescriptor(ctx, 0)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	_, err = sd.d.StringDescriptor(ctx, 200)
	assert.ErrorIs(t, err, ErrStall)
	for _, r := range []uint8{RecipientOther, 0x1f, 0x7f} {
		_, err = sd.d.GetStatus(ctx, r, 0)
		assert.ErrorIs(t, err, ErrStall, "GET_STATUS to recipient %#x", r)
	}
	s, err := sd.d.StringDescriptor(ctx, 3)
	require.NoError(t, err)
	assert.Equal(t, "SIM0001", s)

	// A halted endpoint says so through GET_STATUS; cleared, it does not.
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkIn))
	st, err := sd.d.GetStatus(ctx, RecipientEndpoint, uint16(usbsim.AddrBulkIn))
	require.NoError(t, err)
	assert.EqualValues(t, 1, st)
	require.NoError(t, sd.d.ClearHalt(usbsim.AddrBulkIn))
	st, err = sd.d.GetStatus(ctx, RecipientEndpoint, uint16(usbsim.AddrBulkIn))
	require.NoError(t, err)
	assert.Zero(t, st)
}

// TestAdvWrongEndpoints: typed endpoints of the wrong direction, endpoints
// of another alternate setting or of a released interface, settings out of
// range, changes while transfers are pending, Reset: clear errors, and
// the device works afterwards.
func TestAdvWrongEndpoints(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.d.InEndpoint(usbsim.AddrBulkOut)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	_, err = sd.d.OutEndpoint(usbsim.AddrBulkIn)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	_, err = sd.d.InEndpoint(0x8f)
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = sd.out.Read(ctx, make([]byte, 8))
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	_, err = sd.in.Write(ctx, make([]byte, 8))
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	for _, a := range []uint8{0, 0x80, 0x02, 0xff} {
		_, err = sd.d.Endpoint(a)
		assert.ErrorIs(t, err, ErrNotFound, "endpoint %#x", a)
		assert.ErrorIs(t, sd.d.ClearHalt(a), ErrNotFound, "clear halt %#x", a)
	}
	for _, c := range [][2]int{{-1, 0}, {0, -1}, {256, 0}, {0, 256}, {math.MaxInt32, 0}, {math.MinInt32, 0}} {
		assert.ErrorIs(t, sd.d.SetAltSetting(c[0], c[1]), ioring.ErrInvalid, "SetAltSetting%v", c)
	}
	assert.ErrorIs(t, sd.d.SetAltSetting(0, 7), ErrNotFound)
	assert.ErrorIs(t, sd.d.SetAltSetting(3, 0), ErrNotFound)
	assert.ErrorIs(t, sd.d.SetConfiguration(1), ioring.ErrInvalid, "interfaces claimed")
	assert.ErrorIs(t, sd.d.SetConfiguration(-1), ioring.ErrInvalid)
	assert.ErrorIs(t, sd.d.ClaimInterface(0, false), ioring.ErrInvalid, "claimed already")
	assert.ErrorIs(t, sd.d.ReleaseInterface(5), ErrNotFound)
	_, err = sd.d.AltSetting(5)
	assert.ErrorIs(t, err, ErrNotFound)

	// Changes refuse while a transfer is pending; it still completes.
	q, err := sd.in.Start(make([]byte, 64), Xfer{})
	require.NoError(t, err)
	settle(t, sd.r, 1)
	assert.ErrorIs(t, sd.d.SetAltSetting(0, usbsim.AltEventsOnly), ioring.ErrInvalid)
	assert.ErrorIs(t, sd.d.ReleaseInterface(0), ioring.ErrInvalid)
	assert.ErrorIs(t, sd.d.ClearHalt(usbsim.AddrBulkIn), ioring.ErrInvalid)
	err = sd.d.Reset()
	assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ioring.ErrNotSupported), "reset: %v", err)
	require.NoError(t, q.Cancel())
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.ErrorIs(t, sd.d.Reset(), ioring.ErrNotSupported)

	// Another setting: the bulk endpoints are gone, the interrupt one stays.
	require.NoError(t, sd.d.SetAltSetting(0, usbsim.AltEventsOnly))
	_, err = sd.in.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = sd.out.Transfer(ctx, []byte{1})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, sd.d.ClearHalt(usbsim.AddrBulkIn), ErrNotFound)
	intr, err := sd.d.Endpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	assert.Same(t, sd.intr, intr)
	// Released: nothing left.
	require.NoError(t, sd.d.ReleaseInterface(0))
	_, err = sd.intr.Submit(make([]byte, 24), Xfer{})
	assert.ErrorIs(t, err, ErrNotFound)
	assert.Empty(t, sd.d.Desc().Endpoints)
	assert.Equal(t, -1, sd.d.Desc().Interface)
	require.NoError(t, sd.d.SetConfiguration(0))
	assert.ErrorIs(t, sd.d.ClaimInterface(0, false), ErrNotFound, "unconfigured")
	require.NoError(t, sd.d.SetConfiguration(1))
	require.NoError(t, sd.d.ClaimInterface(0, false))
	alt, err := sd.d.AltSetting(0)
	require.NoError(t, err)
	assert.Zero(t, alt)
	in, err := sd.d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	assert.Same(t, sd.in, in)
	sd.send(t, usbsim.EchoCommand([]byte("back")))
	assert.Equal(t, []byte("back"), sd.read(t, make([]byte, 4096)))
}

// TestAdvClosedDevice: every method of a closed Device (and of its
// endpoints) refuses with ErrClosed; Desc still answers.
func TestAdvClosedDevice(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	require.NoError(t, sd.d.Close())
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.in.Submit(make([]byte, 8), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	_, err = sd.out.Start(nil, Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	_, err = sd.in.Read(ctx, make([]byte, 8))
	assert.ErrorIs(t, err, ErrClosed)
	_, err = sd.d.SubmitControl(statusRequest(), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	_, err = sd.d.GetStatus(ctx, RecipientDevice, 0)
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, sd.d.CancelAll(), ErrClosed)
	assert.ErrorIs(t, sd.d.ClearHalt(usbsim.AddrBulkIn), ErrClosed)
	assert.ErrorIs(t, sd.d.Reset(), ErrClosed)
	assert.ErrorIs(t, sd.d.SetAltSetting(0, 0), ErrClosed)
	assert.ErrorIs(t, sd.d.ReleaseInterface(0), ErrClosed)
	assert.ErrorIs(t, sd.d.SetConfiguration(1), ErrClosed)
	assert.ErrorIs(t, sd.d.ClaimInterface(0, false), ErrClosed)
	assert.ErrorIs(t, sd.d.Close(), ErrClosed)
	assert.Len(t, sd.d.Desc().Endpoints, 3)
	assert.Equal(t, 1, sd.d.Configuration())
}

// TestAdvRingFull: a ring too small for the transfers in flight refuses
// the extra ones with ErrFull at Submit (or fails their I/O with it), and
// everything accepted still completes once.
func TestAdvRingFull(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 4)
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	defer d.Close()
	in, err := d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	intr, err := d.Endpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	s.Hang()
	accepted := 0
	full := false
	for i := range 16 {
		ep := in
		if i%2 == 1 {
			ep = intr
		}
		_, err := ep.Submit(make([]byte, 64), Xfer{User: i})
		if err != nil {
			require.ErrorIs(t, err, ioring.ErrFull)
			full = true
			continue
		}
		accepted++
	}
	assert.True(t, full, "a ring of 4 took 16 transfers")
	time.Sleep(Quiet)
	require.NoError(t, d.CancelAll())
	for _, c := range Reap(t, r, accepted) {
		assert.True(t, errors.Is(c.Err, ErrCanceled) || errors.Is(c.Err, ioring.ErrFull), "transfer %v: %v", c.User, c.Err)
	}
	AssertNoMore(t, r)
	s.Resume()
	require.NoError(t, d.Close())
	AssertSettled(t, r)
}

// TestAdvBadScannerConfig: absurd simulator settings are refused.
func TestAdvBadScannerConfig(t *testing.T) {
	for _, cfg := range []usbsim.Config{
		{MaxTransfer: -1}, {MaxTransfer: 1}, {MaxTransfer: math.MaxInt32}, {Latency: -1}, {Bandwidth: -5},
	} {
		s, err := usbsim.NewScanner(cfg)
		if !assert.ErrorIs(t, err, ioring.ErrInvalid, "%+v", cfg) && s != nil {
			_ = s.Close()
		}
	}
	_, err := usbsim.Open(nil, nil)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
}
