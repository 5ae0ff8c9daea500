package usb_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// The usb conformance suite: the same cases, run against every backend
// (every Transport), the way ioring's suite runs against its backends. The
// device is always usbsim's scanner personality: on socketpairs for
// backend=sim (everywhere), served as a FunctionFS gadget on the guest's
// real USB stack for backend=usbfs and backend=libusb (make test-usbvm;
// elsewhere those skip, as there is no such device). Each case gets a
// freshly opened device.

// confDev is a Device on the scanner through one backend, and the
// scanner's fault controls; everything closes with the test.
type confDev struct {
	r             *ioring.Ring
	s             *usbsim.Scanner
	d             *Device
	in, out, intr *Endpoint // as the host sees them
	maxTransfer   int       // the scanner's MaxTransfer
	resets        bool      // the backend can reset the device (not the simulator)
	// alts says whether the device has usbsim.AltEventsOnly (the
	// simulator; FunctionFS gadgets have one alternate setting), and
	// unconfigures whether the backend can select configuration 0 (not
	// libusb: gousb cannot).
	alts, unconfigures bool
}

// confBackend opens the scanner configured by cfg through one backend.
type confBackend struct {
	name string
	need func(tb testing.TB) // skips where the backend cannot run; may be nil
	open func(t *testing.T, cfg usbsim.Config) *confDev
}

// confBackends are the backends of the suite; the gadget backends add
// themselves where they can be built (conformance_gadget_test.go).
var confBackends = []confBackend{{name: "sim", open: openSimConf}}

func openSimConf(t *testing.T, cfg usbsim.Config) *confDev {
	sd := newSimDev(t, cfg)
	return &confDev{r: sd.r, s: sd.s, d: sd.d, in: sd.in, out: sd.out, intr: sd.intr, maxTransfer: sd.in.Desc().MaxTransfer,
		alts: true, unconfigures: true}
}

// confCases are the cases of the suite, by name.
var confCases = []struct {
	name string
	f    func(t *testing.T, cd *confDev)
}{
	{"Desc", confDesc},
	{"Echo", confEcho},
	{"Interrupt", confInterrupt},
	{"CompletionQueue", confCompletionQueue},
	{"BadInput", confBadInput},
	{"Cancel", confCancel},
	{"CanceledToken", confCanceledToken},
	{"TokenCancelsMany", confTokenCancelsMany},
	{"Deadline", confDeadline},
	{"CancelAll", confCancelAll},
	{"CancelHung", confCancelHung},
	{"Stall", confStall},
	{"ClearHaltPending", confClearHaltPending},
	{"Unplug", confUnplug},
	{"CloseDrains", confCloseDrains},
	{"Order", confOrder},
	{"Typed", confTyped},
	{"Control", confControl},
	{"ControlRequest", confControlRequest},
	{"ControlStall", confControlStall},
	{"ControlWithheld", confControlWithheld},
	{"ControlVendor", confControlVendor},
	{"ControlVendorRefused", confControlVendorRefused},
	{"Reset", confReset},
	{"Interface", confInterface},
	{"AltSetting", confAltSetting},
	{"Configuration", confConfiguration},
}

// TestConformance runs every case against every backend, as
// backend=<name>/<case>.
func TestConformance(t *testing.T) {
	for _, b := range confBackends {
		t.Run("backend="+b.name, func(t *testing.T) {
			if b.need != nil {
				b.need(t)
			}
			for _, c := range confCases {
				t.Run(c.name, func(t *testing.T) {
					c.f(t, b.open(t, usbsim.Config{MaxTransfer: 16 << 10}))
				})
			}
		})
	}
}

// echo has the device send msg back on bulk IN and checks that one IN
// transfer brings exactly msg.
func (cd *confDev) echo(t *testing.T, msg []byte) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	cmd := usbsim.EchoCommand(msg)
	n, err := cd.out.Transfer(ctx, cmd)
	require.NoError(t, err, "bulk OUT of the echo command")
	require.Equal(t, len(cmd), n, "bulk OUT bytes")
	buf := make([]byte, cd.maxTransfer)
	n, err = cd.in.Transfer(ctx, buf)
	require.NoError(t, err, "bulk IN of the echo")
	require.True(t, bytes.Equal(msg, buf[:n]), "echo of %d bytes: got %d bytes %.16q...", len(msg), n, buf[:n])
}

// inBuf is a buffer for one whole bulk IN message.
func (cd *confDev) inBuf() []byte { return make([]byte, cd.maxTransfer) }

// confDesc: the scanner's identity and three endpoints; unknown addresses
// are ErrNotFound.
func confDesc(t *testing.T, cd *confDev) {
	desc := cd.d.Desc()
	assert.Equal(t, cd.s.Info().Serial, desc.Serial)
	require.Len(t, desc.Endpoints, 3)
	assert.True(t, cd.in.Desc().IsIn())
	assert.False(t, cd.out.Desc().IsIn())
	assert.Equal(t, Bulk, cd.in.Desc().Type)
	assert.Equal(t, Bulk, cd.out.Desc().Type)
	assert.Equal(t, Interrupt, cd.intr.Desc().Type)
	assert.True(t, cd.intr.Desc().IsIn())
	_, err := cd.d.Endpoint(0x05)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, cd.d.ClearHalt(0x05), ErrNotFound)
	desc.Endpoints[0].Address = 0x7f // a copy
	assert.NotEqual(t, uint8(0x7f), cd.d.Desc().Endpoints[0].Address)
}

// confEcho: data of several sizes goes out and comes back intact,
// zero-length and whole-packet transfers included.
func confEcho(t *testing.T, cd *confDev) {
	for _, size := range []int{0, 1, 511, 512, 4095, cd.maxTransfer - 1} {
		msg := bytes.Repeat([]byte{byte(size), 0xa5, 0x3c}, size/3+1)[:size]
		cd.echo(t, msg)
	}
}

// confInterrupt: an event arrives on interrupt IN.
func confInterrupt(t *testing.T, cd *confDev) {
	cd.s.PressButton(3)
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, usbsim.InterruptMaxPacketSize)
	n, err := cd.intr.Transfer(ctx, buf)
	require.NoError(t, err)
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, usbsim.EventButton, e.Kind)
	assert.Equal(t, uint8(3), e.Code)
}

// confCompletionQueue: submitted transfers complete through the ring's
// queue, each once, with its User value and its bytes.
func confCompletionQueue(t *testing.T, cd *confDev) {
	buf := cd.inBuf()
	_, err := cd.in.Submit(buf, Xfer{User: "in"})
	require.NoError(t, err)
	cmd := usbsim.EchoCommand([]byte("queued"))
	_, err = cd.out.Submit(cmd, Xfer{User: "out"})
	require.NoError(t, err)
	got := map[any]ioring.Completion{}
	for _, c := range Reap(t, cd.r, 2) {
		got[c.User] = c
	}
	AssertNoMore(t, cd.r)
	require.Contains(t, got, "in")
	require.Contains(t, got, "out")
	assert.NoError(t, got["out"].Err)
	assert.Equal(t, len(cmd), got["out"].N)
	assert.NoError(t, got["in"].Err)
	assert.Equal(t, "queued", string(buf[:got["in"].N]))
}

// confBadInput: bad input is refused at Submit, and nothing reaches the
// device.
func confBadInput(t *testing.T, cd *confDev) {
	_, err := cd.in.Submit(nil, Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "empty IN buffer")
	other := NewRing(t, 8)
	_, err = cd.out.Submit(usbsim.EchoCommand([]byte("other ring")), Xfer{Token: other.NewToken()})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "token of another ring")
	_, err = cd.out.Submit(usbsim.EchoCommand([]byte("negative")), Xfer{Deadline: -time.Second})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "negative deadline")
	AssertNoMore(t, cd.r)
	cd.echo(t, []byte("clean"))
}

// confCancel: a pending IN transfer canceled by its request completes
// once with ErrCanceled and no bytes; a second cancel finds nothing; the
// endpoint carries on.
func confCancel(t *testing.T, cd *confDev) {
	q, err := cd.in.Submit(cd.inBuf(), Xfer{User: 1})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	require.NoError(t, q.Cancel())
	c := Reap(t, cd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Equal(t, 1, c.User)
	assert.Zero(t, c.N)
	AssertNoMore(t, cd.r)
	assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "cancel after completion")
	cd.echo(t, []byte("after cancel"))
}

// confCanceledToken: a transfer submitted with a canceled token completes
// with ErrCanceled without reaching the device.
func confCanceledToken(t *testing.T, cd *confDev) {
	tok := cd.r.NewToken()
	tok.Cancel()
	_, err := cd.out.Submit(usbsim.EchoCommand([]byte("ghost")), Xfer{Token: tok})
	require.NoError(t, err)
	_, err = cd.in.Submit(cd.inBuf(), Xfer{Token: tok})
	require.NoError(t, err)
	for _, c := range Reap(t, cd.r, 2) {
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Zero(t, c.N)
	}
	AssertNoMore(t, cd.r)
	cd.echo(t, []byte("real")) // not "ghost": that one never went out
}

// confTokenCancelsMany: one token cancels transfers pending on several
// endpoints, queued ones included, each once.
func confTokenCancelsMany(t *testing.T, cd *confDev) {
	tok := cd.r.NewToken()
	const k = 3
	for i := range k {
		_, err := cd.in.Submit(cd.inBuf(), Xfer{Token: tok, User: i})
		require.NoError(t, err)
	}
	_, err := cd.intr.Submit(make([]byte, usbsim.InterruptMaxPacketSize), Xfer{Token: tok, User: k})
	require.NoError(t, err)
	settle(t, cd.r, k+1)
	tok.Cancel()
	seen := map[any]int{}
	for _, c := range Reap(t, cd.r, k+1) {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		seen[c.User]++
	}
	AssertNoMore(t, cd.r)
	for i := range k + 1 {
		assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
	}
	cd.echo(t, []byte("after the token"))
}

// confDeadline: a transfer's deadline ends it with ErrTimeout, a cancel.
func confDeadline(t *testing.T, cd *confDev) {
	_, err := cd.in.Submit(cd.inBuf(), Xfer{Deadline: 50 * time.Millisecond})
	require.NoError(t, err)
	c := Reap(t, cd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrTimeout)
	assert.ErrorIs(t, c.Err, ErrCanceled, "a timeout is a cancel")
	cd.echo(t, []byte("after the deadline"))
}

// confCancelAll: Device.CancelAll cancels everything pending on every
// endpoint; later transfers run normally.
func confCancelAll(t *testing.T, cd *confDev) {
	for i := range 2 {
		_, err := cd.in.Submit(cd.inBuf(), Xfer{User: i})
		require.NoError(t, err)
	}
	_, err := cd.intr.Submit(make([]byte, usbsim.InterruptMaxPacketSize), Xfer{User: 2})
	require.NoError(t, err)
	settle(t, cd.r, 3)
	require.NoError(t, cd.d.CancelAll())
	for _, c := range Reap(t, cd.r, 3) {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	AssertNoMore(t, cd.r)
	cd.echo(t, []byte("after CancelAll"))
}

// confCancelHung: transfers on a hung device, IN and OUT, are canceled at
// once; after the device resumes, the endpoints carry on.
func confCancelHung(t *testing.T, cd *confDev) {
	cd.s.Hang()
	tok := cd.r.NewToken()
	_, err := cd.out.Submit([]byte{usbsim.CmdNop}, Xfer{Token: tok, User: "out"})
	require.NoError(t, err)
	_, err = cd.in.Submit(cd.inBuf(), Xfer{Token: tok, User: "in"})
	require.NoError(t, err)
	settle(t, cd.r, 2)
	tok.Cancel()
	for _, c := range Reap(t, cd.r, 2) {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	AssertNoMore(t, cd.r)
	cd.s.Resume()
	cd.echo(t, []byte("resumed"))
}

// confStall: a halted endpoint fails every transfer with ErrStall until
// Device.ClearHalt; clearing an endpoint that is not halted does no harm.
func confStall(t *testing.T, cd *confDev) {
	ctx, cancel := testContext()
	defer cancel()
	require.NoError(t, cd.s.Stall(usbsim.AddrBulkIn))
	for range 2 {
		_, err := cd.in.Transfer(ctx, cd.inBuf())
		require.ErrorIs(t, err, ErrStall, "bulk IN of a halted endpoint")
	}
	require.NoError(t, cd.d.ClearHalt(cd.in.Desc().Address))
	cd.echo(t, []byte("after clearing bulk IN"))

	require.NoError(t, cd.s.Stall(usbsim.AddrBulkOut))
	_, err := cd.out.Transfer(ctx, usbsim.EchoCommand([]byte("refused")))
	require.ErrorIs(t, err, ErrStall, "bulk OUT of a halted endpoint")
	require.NoError(t, cd.d.ClearHalt(cd.out.Desc().Address))
	cd.echo(t, []byte("after clearing bulk OUT"))

	require.NoError(t, cd.d.ClearHalt(cd.in.Desc().Address))
	cd.echo(t, []byte("after a needless clear"))
}

// confClearHaltPending: ClearHalt refuses while a transfer is pending on
// the endpoint.
func confClearHaltPending(t *testing.T, cd *confDev) {
	q, err := cd.in.Submit(cd.inBuf(), Xfer{})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	assert.ErrorIs(t, cd.d.ClearHalt(cd.in.Desc().Address), ioring.ErrInvalid)
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, Reap(t, cd.r, 1)[0].Err, ErrCanceled)
	require.NoError(t, cd.d.ClearHalt(cd.in.Desc().Address), "nothing pending now")
	cd.echo(t, []byte("after ClearHalt"))
}

// confUnplug: transfers pending when the device goes away complete once
// with ErrNoDevice (not a cancel), and so do later ones, whether refused
// at Submit or, on a real stack that has not noticed yet, at completion.
func confUnplug(t *testing.T, cd *confDev) {
	const k = 3
	for i := range k {
		ep, buf := cd.in, cd.inBuf()
		if i == k-1 {
			ep, buf = cd.intr, make([]byte, usbsim.InterruptMaxPacketSize)
		}
		_, err := ep.Submit(buf, Xfer{User: i})
		require.NoError(t, err)
	}
	settle(t, cd.r, k)
	require.NoError(t, cd.s.Unplug())
	seen := map[any]int{}
	for _, c := range Reap(t, cd.r, k) {
		assert.ErrorIs(t, c.Err, ErrNoDevice, "transfer %v", c.User)
		assert.ErrorIs(t, c.Err, ioring.ErrNoDevice, "transfer %v", c.User)
		assert.NotErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		seen[c.User]++
	}
	AssertNoMore(t, cd.r)
	for i := range k {
		assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
	}
	ctx, cancel := testContext()
	defer cancel()
	refused := false
	for try := 0; try < 100 && !refused; try++ {
		q, err := cd.out.Start([]byte{usbsim.CmdNop}, Xfer{})
		if err != nil {
			require.ErrorIs(t, err, ErrNoDevice, "submit %d after the unplug", try)
			refused = true
			break
		}
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		require.ErrorIs(t, c.Err, ErrNoDevice, "transfer %d after the unplug", try)
	}
	assert.True(t, refused, "submits still accepted after 100 tries")
	assert.ErrorIs(t, cd.d.ClearHalt(cd.in.Desc().Address), ErrNoDevice)
}

// confCloseDrains: Close cancels every pending transfer, waits for each
// completion, and every later call says ErrClosed.
func confCloseDrains(t *testing.T, cd *confDev) {
	cd.s.Hang()
	const k = 3
	for i := range k {
		ep, buf := cd.in, cd.inBuf()
		if i == k-1 {
			ep, buf = cd.out, []byte{usbsim.CmdNop}
		}
		_, err := ep.Submit(buf, Xfer{User: i})
		require.NoError(t, err)
	}
	settle(t, cd.r, k)
	require.NoError(t, cd.d.Close())
	// Drained: every completion is in the ring already.
	var cs [k + 1]ioring.Completion
	n, err := cd.r.Reap(cs[:], 0)
	require.NoError(t, err)
	require.Equal(t, k, n, "completions in the ring when Close returned")
	for _, c := range cs[:n] {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	_, err = cd.in.Submit(cd.inBuf(), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, cd.d.CancelAll(), ErrClosed)
	assert.ErrorIs(t, cd.d.ClearHalt(cd.in.Desc().Address), ErrClosed)
	assert.ErrorIs(t, cd.d.Close(), ErrClosed)
	cd.s.Resume()
}

// confTyped: typed endpoints read or write only; the wrong direction is
// refused before any I/O, on the typed and on the generic path.
func confTyped(t *testing.T, cd *confDev) {
	in, err := cd.d.InEndpoint(cd.in.Desc().Address)
	require.NoError(t, err)
	out, err := cd.d.OutEndpoint(cd.out.Desc().Address)
	require.NoError(t, err)
	assert.Equal(t, cd.in.Desc(), in.Desc())
	assert.Equal(t, cd.out.Desc(), out.Desc())
	_, err = cd.d.InEndpoint(cd.out.Desc().Address)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "InEndpoint of an OUT endpoint")
	_, err = cd.d.OutEndpoint(cd.in.Desc().Address)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "OutEndpoint of an IN endpoint")
	_, err = cd.d.InEndpoint(0x05)
	assert.ErrorIs(t, err, ErrNotFound)

	ctx, cancel := testContext()
	defer cancel()
	_, err = cd.out.Read(ctx, cd.inBuf())
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Read of an OUT endpoint")
	_, err = cd.in.Write(ctx, usbsim.EchoCommand([]byte("wrong way")))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Write of an IN endpoint")
	AssertNoMore(t, cd.r)

	cmd := usbsim.EchoCommand([]byte("typed"))
	n, err := out.Write(ctx, cmd)
	require.NoError(t, err)
	assert.Equal(t, len(cmd), n)
	buf := cd.inBuf()
	n, err = in.Read(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "typed", string(buf[:n]), "nothing of the refused transfers reached the device")
	_, err = cd.out.Write(ctx, usbsim.EchoCommand([]byte("generic")))
	require.NoError(t, err)
	n, err = cd.in.Read(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "generic", string(buf[:n]))
}

// Standard requests the control cases send (USB 2.0 §9.4).
const (
	reqGetDescriptor = 0x06
	descDevice       = 0x01
	devDescLen       = 18
)

// confControl: standard control requests on endpoint 0, answered by the
// device's USB stack: the device descriptor (its IDs as enumerated), the
// manufacturer's, product's and serial number's string descriptors (those
// of Desc), GET_STATUS of the device and of an endpoint (the simulator
// answers them as a device's USB stack does).
func confControl(t *testing.T, cd *confDev) {
	ctx, cancel := testContext()
	defer cancel()
	var dd [devDescLen]byte
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, dd[:])
	require.NoError(t, err)
	require.Equal(t, devDescLen, n)
	assert.Equal(t, []byte{devDescLen, descDevice}, dd[:2])
	desc := cd.d.Desc()
	assert.Equal(t, desc.VendorID, binary.LittleEndian.Uint16(dd[8:]), "idVendor")
	assert.Equal(t, desc.ProductID, binary.LittleEndian.Uint16(dd[10:]), "idProduct")
	// The strings the Device describes itself with are the device's own.
	for i, want := range map[int]string{14: desc.Manufacturer, 15: desc.Product, 16: desc.Serial} {
		require.NotZero(t, dd[i], "string index at byte %d", i)
		s, err := cd.d.StringDescriptor(ctx, dd[i])
		require.NoError(t, err)
		assert.Equal(t, want, s, "string descriptor %d", dd[i])
		assert.NotEmpty(t, s)
	}
	_, err = cd.d.StringDescriptor(ctx, 0)
	assert.ErrorIs(t, err, ioring.ErrInvalid)

	_, err = cd.d.GetStatus(ctx, RecipientDevice, 0)
	require.NoError(t, err)
	st, err := cd.d.GetStatus(ctx, RecipientEndpoint, uint16(cd.in.Desc().Address))
	require.NoError(t, err)
	assert.Zero(t, st&1, "bulk IN is not halted")

	// A short read: the device sends what it has, up to wLength.
	var head [8]byte
	n, err = cd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, head[:])
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	assert.Equal(t, dd[:8], head[:])
}

// confControlRequest: a control transfer as a ring request: through the
// completion queue with its User value, refused up front when its buffer
// cannot hold its setup packet and data stage, and, with a canceled token,
// completed with ErrCanceled without reaching the device.
func confControlRequest(t *testing.T, cd *confDev) {
	buf := make([]byte, SetupSize+devDescLen)
	Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8, Length: devDescLen}.Put(buf)
	s, ok := ParseSetup(buf)
	require.True(t, ok)
	assert.Equal(t, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8, Length: devDescLen}, s)
	assert.True(t, s.IsIn())

	_, err := cd.d.SubmitControl(buf[:SetupSize+devDescLen-1], Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "buffer shorter than wLength")
	_, err = cd.d.SubmitControl(buf[:SetupSize-1], Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "buffer shorter than the setup packet")

	_, err = cd.d.SubmitControl(buf, Xfer{User: "ctl"})
	require.NoError(t, err)
	c := Reap(t, cd.r, 1)[0]
	require.NoError(t, c.Err)
	assert.Equal(t, "ctl", c.User)
	assert.Equal(t, devDescLen, c.N)
	assert.Equal(t, byte(devDescLen), buf[SetupSize], "bLength in the data stage")

	tok := cd.r.NewToken()
	tok.Cancel()
	clear(buf[SetupSize:])
	_, err = cd.d.SubmitControl(buf, Xfer{Token: tok})
	require.NoError(t, err)
	c = Reap(t, cd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Zero(t, c.N)
	assert.Zero(t, buf[SetupSize], "nothing arrived")
	AssertNoMore(t, cd.r)
}

// deviceDescriptor reads the device descriptor with a control transfer
// that must succeed.
func (cd *confDev) deviceDescriptor(t *testing.T) []byte {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	var dd [devDescLen]byte
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, dd[:])
	require.NoError(t, err, "GET_DESCRIPTOR(DEVICE)")
	require.Equal(t, devDescLen, n)
	return dd[:]
}

// vendorRequest is a vendor request with a 4-byte IN data stage, to the
// device or to interface 0 (the scanner's).
func vendorRequest(recipient uint8) []byte {
	buf := make([]byte, SetupSize+4)
	Setup{RequestType: RequestIn | RequestVendor | recipient, Request: 0x5a, Length: 4}.Put(buf)
	return buf
}

// confControlStall: a request the device refuses (0x5a is none of the
// scanner's vendor requests) ends with ErrStall, and endpoint 0 recovers
// by itself at the next setup packet.
func confControlStall(t *testing.T, cd *confDev) {
	before := cd.deviceDescriptor(t)
	ctx, cancel := testContext()
	defer cancel()
	for _, recipient := range []uint8{RecipientDevice, RecipientInterface} {
		q, err := cd.d.StartControl(vendorRequest(recipient), Xfer{})
		require.NoError(t, err)
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrStall, "an unknown vendor request to recipient %d", recipient)
		assert.Equal(t, before, cd.deviceDescriptor(t), "endpoint 0 after the stall")
	}
}

// statusRequest is the scanner's VendorStatus request, its data stage
// room for the status event.
func statusRequest() []byte {
	buf := make([]byte, SetupSize+usbsim.EventSize)
	Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus, Length: usbsim.EventSize}.Put(buf)
	return buf
}

// confControlWithheld: a control transfer the device does not answer (a
// vendor request to a hung scanner) is canceled by Request.Cancel and
// completes exactly once, at once, with ErrCanceled and no data, on every
// backend (on libusb, whose control call cannot be interrupted, the call
// is left to end by itself, on a copy of the data stage). Once the device
// resumes, endpoint 0 and its vendor requests work on (on libusb, after
// the call left behind has ended).
func confControlWithheld(t *testing.T, cd *confDev) {
	cd.s.Hang()
	q, err := cd.d.SubmitControl(statusRequest(), Xfer{User: "withheld"})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	require.NoError(t, q.Cancel())
	c := Reap(t, cd.r, 1)[0]
	assert.Equal(t, "withheld", c.User)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.NotErrorIs(t, c.Err, ErrTimeout, "canceled, not timed out")
	assert.Zero(t, c.N)
	AssertNoMore(t, cd.r)
	cd.s.Resume()
	dd := cd.deviceDescriptor(t)
	assert.Equal(t, byte(devDescLen), dd[0])
	st := cd.status(t)
	assert.Equal(t, usbsim.EventStatus, st.Kind, "VendorStatus after the resume")
}

// status reads the scanner's status with VendorStatus.
func (cd *confDev) status(t *testing.T) usbsim.Event {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	var b [usbsim.EventSize]byte
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus}, b[:])
	require.NoError(t, err, "VendorStatus")
	e, err := usbsim.ParseEvent(b[:n])
	require.NoError(t, err)
	return e
}

// command sends one scanner command as a VendorCommand control request
// with an OUT data stage, to recipient.
func (cd *confDev) command(t *testing.T, recipient uint8, cmd []byte) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | recipient, Request: usbsim.VendorCommand}, cmd)
	require.NoError(t, err, "VendorCommand of %d bytes", len(cmd))
	require.Equal(t, len(cmd), n, "data stage bytes")
}

// confControlVendor: the scanner's vendor requests on endpoint 0, the
// same on every transport: commands in an OUT data stage (an echo of
// several packets, to the device and to the interface, answered on bulk
// IN; a scan whose image streams on bulk IN and whose events come on
// interrupt IN) and the status in an IN data stage, read whole or short.
func confControlVendor(t *testing.T, cd *confDev) {
	ctx, cancel := testContext()
	defer cancel()
	for _, recipient := range []uint8{RecipientDevice, RecipientInterface} {
		msg := bytes.Repeat([]byte{0x5a, recipient, 0xc3}, 700)[:2000]
		cd.command(t, recipient, usbsim.EchoCommand(msg))
		buf := cd.inBuf()
		n, err := cd.in.Transfer(ctx, buf)
		require.NoError(t, err)
		assert.Equal(t, msg, buf[:n], "echo of a command sent on endpoint 0 to recipient %d", recipient)
	}

	st := cd.status(t)
	assert.Equal(t, usbsim.EventStatus, st.Kind)
	assert.Equal(t, usbsim.StateIdle, st.State)
	p := usbsim.ScanParams{DPI: 150, Width: 1000, Height: 100, Format: usbsim.FormatGray8, Seed: 7}
	cd.command(t, RecipientDevice, usbsim.StartScanCommand(p))
	st = cd.status(t)
	assert.Equal(t, usbsim.StateScanning, st.State, "status during the scan")
	assert.Equal(t, p.ImageSize(), st.Total)
	var image []byte
	for int64(len(image)) < p.ImageSize() {
		buf := cd.inBuf()
		n, err := cd.in.Transfer(ctx, buf)
		require.NoError(t, err)
		image = append(image, buf[:n]...)
	}
	assert.True(t, bytes.Equal(usbsim.ExpectedImage(p), image), "the image of a scan started on endpoint 0")
	e := cd.event(t, usbsim.EventJobDone)
	assert.Equal(t, st.Job, e.Job)
	st = cd.status(t)
	assert.Equal(t, usbsim.StateIdle, st.State, "status after the scan")
	assert.Equal(t, p.ImageSize(), st.Sent)

	// A short IN data stage: the device sends what wLength asks for.
	var head [4]byte
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientInterface, Request: usbsim.VendorStatus}, head[:])
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.Equal(t, byte(usbsim.EventStatus), head[0])
}

// event reads interrupt IN until an event of kind k.
func (cd *confDev) event(t *testing.T, k usbsim.EventKind) usbsim.Event {
	t.Helper()
	return readEvent(t, cd.intr, k)
}

// readEvent reads the scanner's interrupt IN endpoint intr until an event
// of kind k, and returns it.
func readEvent(tb testing.TB, intr *Endpoint, k usbsim.EventKind) usbsim.Event {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, intr.Desc().MaxPacketSize)
	for {
		if e := readEventIn(tb, ctx, intr, buf, k); e.Kind == k {
			return e
		}
	}
}

// readEventIn reads one event from intr into buf within ctx, on the way to
// one of kind want (for the failure message).
func readEventIn(tb testing.TB, ctx context.Context, intr *Endpoint, buf []byte, want usbsim.EventKind) usbsim.Event {
	tb.Helper()
	n, err := intr.Transfer(ctx, buf)
	require.NoError(tb, err, "interrupt IN, waiting for %v", want)
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(tb, err)
	return e
}

// confControlVendorRefused: the scanner's vendor requests in the wrong
// direction, or a command without a data stage, end with ErrStall and
// reach nothing: no command runs.
func confControlVendorRefused(t *testing.T, cd *confDev) {
	ctx, cancel := testContext()
	defer cancel()
	var b [usbsim.EventSize]byte
	_, err := cd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand}, b[:])
	assert.ErrorIs(t, err, ErrStall, "VendorCommand as an IN request")
	_, err = cd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus}, usbsim.EchoCommand([]byte("no")))
	assert.ErrorIs(t, err, ErrStall, "VendorStatus as an OUT request")
	_, err = cd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand}, nil)
	assert.ErrorIs(t, err, ErrStall, "VendorCommand without a data stage")
	_, err = cd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | RecipientInterface, Request: usbsim.VendorCommand, Index: 1}, usbsim.EchoCommand([]byte("no")))
	assert.ErrorIs(t, err, ErrStall, "VendorCommand to interface 1, which the device has not")
	cd.echo(t, []byte("only this")) // none of the refused echoes ran
}

// confOrder: transfers queued on one endpoint run and complete in
// submission order, as on the bus: four echoes requested in order come
// back, in order, into four IN transfers queued before any data arrived.
func confOrder(t *testing.T, cd *confDev) {
	const k = 4
	bufs := make([][]byte, k)
	for i := range k {
		bufs[i] = cd.inBuf()
		_, err := cd.in.Submit(bufs[i], Xfer{User: i})
		require.NoError(t, err)
	}
	ctx, cancel := testContext()
	defer cancel()
	for i := range k {
		_, err := cd.out.Write(ctx, usbsim.EchoCommand([]byte{'#', byte('0' + i)}))
		require.NoError(t, err)
	}
	var order []any
	for len(order) < k {
		for _, c := range Reap(t, cd.r, 1) {
			require.NoError(t, c.Err, "transfer %v", c.User)
			i := c.User.(int)
			assert.Equal(t, string([]byte{'#', byte('0' + i)}), string(bufs[i][:c.N]), "data of transfer %d", i)
			order = append(order, c.User)
		}
	}
	assert.Equal(t, []any{0, 1, 2, 3}, order, "completion order")
	AssertNoMore(t, cd.r)
}

// confReset: Device.Reset refuses while a transfer is pending; then the
// device is reset and set up again as Open left it, and transfers work on.
// The simulator has no port to reset: ErrNotSupported.
func confReset(t *testing.T, cd *confDev) {
	q, err := cd.in.Submit(cd.inBuf(), Xfer{})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	assert.ErrorIs(t, cd.d.Reset(), ioring.ErrInvalid, "a transfer is pending")
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, Reap(t, cd.r, 1)[0].Err, ErrCanceled)

	err = cd.d.Reset()
	if !cd.resets {
		require.ErrorIs(t, err, ioring.ErrNotSupported)
	} else {
		require.NoError(t, err)
	}
	cd.echo(t, []byte("after the reset"))
	cd.s.PressButton(1)
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, usbsim.InterruptMaxPacketSize)
	n, err := cd.intr.Transfer(ctx, buf)
	require.NoError(t, err, "interrupt IN after the reset")
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, usbsim.EventButton, e.Kind)
}

// confInterface: the interface Open claimed can be released (its
// endpoints leave the Device: refused before any I/O) and claimed again
// (they work on); claims are checked against the descriptors and the
// Device's record, bad numbers are refused up front, and nothing changes
// while a transfer is pending.
func confInterface(t *testing.T, cd *confDev) {
	desc := cd.d.Desc()
	require.NotEmpty(t, desc.Configs, "the device's configurations")
	assert.Equal(t, 1, desc.Config)
	assert.Equal(t, 0, desc.Interface)
	assert.Equal(t, 1, cd.d.Configuration())
	alt, err := cd.d.AltSetting(0)
	require.NoError(t, err)
	assert.Zero(t, alt)

	assert.ErrorIs(t, cd.d.ClaimInterface(0, true), ioring.ErrInvalid, "claimed already")
	assert.ErrorIs(t, cd.d.ClaimInterface(256, true), ioring.ErrInvalid, "out of range")
	assert.ErrorIs(t, cd.d.ClaimInterface(-1, true), ioring.ErrInvalid, "out of range")
	assert.ErrorIs(t, cd.d.ClaimInterface(3, true), ErrNotFound, "no interface 3")
	assert.ErrorIs(t, cd.d.ReleaseInterface(3), ErrNotFound, "interface 3 is not claimed")

	q, err := cd.in.Submit(cd.inBuf(), Xfer{})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	assert.ErrorIs(t, cd.d.ReleaseInterface(0), ioring.ErrInvalid, "a transfer is pending")
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, Reap(t, cd.r, 1)[0].Err, ErrCanceled)

	require.NoError(t, cd.d.ReleaseInterface(0))
	assert.Empty(t, cd.d.Desc().Endpoints, "no endpoints with no interface claimed")
	assert.Equal(t, -1, cd.d.Desc().Interface)
	_, err = cd.d.AltSetting(0)
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = cd.d.Endpoint(cd.in.Desc().Address)
	assert.ErrorIs(t, err, ErrNotFound)
	_, err = cd.in.Submit(cd.inBuf(), Xfer{})
	assert.ErrorIs(t, err, ErrNotFound, "an endpoint of a released interface")
	_, err = cd.out.Submit(usbsim.EchoCommand([]byte("released")), Xfer{})
	assert.ErrorIs(t, err, ErrNotFound, "an endpoint of a released interface")
	assert.ErrorIs(t, cd.d.ClearHalt(cd.in.Desc().Address), ErrNotFound)
	assert.ErrorIs(t, cd.d.ReleaseInterface(0), ErrNotFound, "released already")
	AssertNoMore(t, cd.r)

	require.NoError(t, cd.d.ClaimInterface(0, false))
	e, err := cd.d.Endpoint(cd.in.Desc().Address)
	require.NoError(t, err)
	assert.Same(t, cd.in, e, "the same endpoint again")
	cd.echo(t, []byte("claimed again")) // "released" never went out
	assert.Len(t, cd.d.Desc().Endpoints, 3)

	require.NoError(t, cd.d.Close())
	assert.ErrorIs(t, cd.d.ReleaseInterface(0), ErrClosed)
	assert.ErrorIs(t, cd.d.ClaimInterface(0, false), ErrClosed)
	assert.ErrorIs(t, cd.d.SetAltSetting(0, 0), ErrClosed)
	assert.ErrorIs(t, cd.d.SetConfiguration(1), ErrClosed)
}

// confAltSetting: selecting an alternate setting changes the Device's
// endpoints to that setting's: on the simulator, AltEventsOnly keeps
// interrupt IN only (bulk is refused before any I/O, events flow) and
// setting 0 brings bulk back; where the interface has one setting, a
// second is ErrNotFound. Selecting the current setting again resets the
// endpoints and transfers carry on; typed endpoints still refuse the wrong
// direction.
func confAltSetting(t *testing.T, cd *confDev) {
	assert.ErrorIs(t, cd.d.SetAltSetting(0, 256), ioring.ErrInvalid)
	assert.ErrorIs(t, cd.d.SetAltSetting(-1, 0), ioring.ErrInvalid)
	assert.ErrorIs(t, cd.d.SetAltSetting(0, 9), ErrNotFound)
	assert.ErrorIs(t, cd.d.SetAltSetting(2, 0), ErrNotFound)

	require.NoError(t, cd.d.SetAltSetting(0, 0), "the current setting again")
	cd.echo(t, []byte("after SET_INTERFACE 0"))

	ctx, cancel := testContext()
	defer cancel()
	if !cd.alts {
		assert.ErrorIs(t, cd.d.SetAltSetting(0, usbsim.AltEventsOnly), ErrNotFound, "a FunctionFS interface has one setting")
	} else {
		require.NoError(t, cd.d.SetAltSetting(0, usbsim.AltEventsOnly))
		alt, err := cd.d.AltSetting(0)
		require.NoError(t, err)
		assert.Equal(t, usbsim.AltEventsOnly, alt)
		desc := cd.d.Desc()
		assert.Equal(t, usbsim.AltEventsOnly, desc.AltSetting)
		require.Len(t, desc.Endpoints, 1)
		assert.Equal(t, cd.intr.Desc(), desc.Endpoints[0])
		_, err = cd.in.Transfer(ctx, cd.inBuf())
		assert.ErrorIs(t, err, ErrNotFound, "bulk IN is not in the setting")
		_, err = cd.d.OutEndpoint(cd.out.Desc().Address)
		assert.ErrorIs(t, err, ErrNotFound, "bulk OUT is not in the setting")
		_, err = cd.d.OutEndpoint(cd.intr.Desc().Address)
		assert.ErrorIs(t, err, ioring.ErrInvalid, "the interrupt endpoint is IN")
		intr, err := cd.d.InEndpoint(cd.intr.Desc().Address)
		require.NoError(t, err)
		cd.s.PressButton(5)
		buf := make([]byte, usbsim.InterruptMaxPacketSize)
		n, err := intr.Read(ctx, buf)
		require.NoError(t, err)
		e, err := usbsim.ParseEvent(buf[:n])
		require.NoError(t, err)
		assert.Equal(t, uint8(5), e.Code, "an event in the events-only setting")
		require.NoError(t, cd.d.SetAltSetting(0, 0))
	}
	in, err := cd.d.InEndpoint(cd.in.Desc().Address)
	require.NoError(t, err)
	_, err = cd.d.InEndpoint(cd.out.Desc().Address)
	assert.ErrorIs(t, err, ioring.ErrInvalid, "InEndpoint of bulk OUT")
	_, err = cd.in.Write(ctx, []byte("wrong way"))
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Write of bulk IN")
	cd.echo(t, []byte("back at setting 0"))
	cd.s.PressButton(6)
	buf := make([]byte, usbsim.InterruptMaxPacketSize)
	n, err := cd.intr.Transfer(ctx, buf)
	require.NoError(t, err)
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, uint8(6), e.Code, "interrupt IN back at setting 0")
	_, err = cd.out.Write(ctx, usbsim.EchoCommand([]byte("typed")))
	require.NoError(t, err)
	data := cd.inBuf()
	n, err = in.Read(ctx, data)
	require.NoError(t, err, "bulk IN through its typed endpoint")
	assert.Equal(t, "typed", string(data[:n]))
}

// confConfiguration: the configuration changes only with every interface
// released; selecting it again (a cheap reset of the device's
// configuration state) leaves the interface to claim again, and an
// unconfigured device has no interface to claim.
func confConfiguration(t *testing.T, cd *confDev) {
	assert.ErrorIs(t, cd.d.SetConfiguration(1), ioring.ErrInvalid, "interface 0 is claimed")
	assert.ErrorIs(t, cd.d.SetConfiguration(256), ioring.ErrInvalid)
	require.NoError(t, cd.d.ReleaseInterface(0))
	assert.ErrorIs(t, cd.d.SetConfiguration(2), ErrNotFound, "the scanner has one configuration")
	if err := cd.d.SetConfiguration(0); !cd.unconfigures {
		assert.ErrorIs(t, err, ioring.ErrNotSupported, "unconfigure")
	} else {
		require.NoError(t, err, "unconfigure")
		assert.Zero(t, cd.d.Configuration())
		assert.ErrorIs(t, cd.d.ClaimInterface(0, false), ErrNotFound, "unconfigured")
	}
	require.NoError(t, cd.d.SetConfiguration(1))
	assert.Equal(t, 1, cd.d.Configuration())
	_, err := cd.in.Submit(cd.inBuf(), Xfer{})
	assert.ErrorIs(t, err, ErrNotFound, "nothing claimed after SET_CONFIGURATION")
	require.NoError(t, cd.d.ClaimInterface(0, true))
	cd.echo(t, []byte("configured again"))
}
