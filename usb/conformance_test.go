package usb_test

import (
	"bytes"
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
	control       bool      // the backend has endpoint 0 (not the simulator)
	// controlCancels says whether a control transfer in progress can be
	// canceled (usbfs: an asynchronous URB), or runs until the device
	// answers or the control timeout passes (libusb's synchronous call).
	controlCancels bool
	resets         bool // the backend can reset the device (not the simulator)
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
	return &confDev{r: sd.r, s: sd.s, d: sd.d, in: sd.in, out: sd.out, intr: sd.intr, maxTransfer: sd.in.Desc().MaxTransfer}
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
	{"Reset", confReset},
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
// serial number's string descriptor, GET_STATUS of the device and of an
// endpoint. The simulator has no control endpoint: it says so.
func confControl(t *testing.T, cd *confDev) {
	ctx, cancel := testContext()
	defer cancel()
	var dd [devDescLen]byte
	n, err := cd.d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descDevice << 8}, dd[:])
	if !cd.control {
		require.ErrorIs(t, err, ioring.ErrNotSupported, "a backend without endpoint 0")
		_, err = cd.d.GetStatus(ctx, RecipientDevice, 0)
		require.ErrorIs(t, err, ioring.ErrNotSupported)
		AssertNoMore(t, cd.r)
		return
	}
	require.NoError(t, err)
	require.Equal(t, devDescLen, n)
	assert.Equal(t, []byte{devDescLen, descDevice}, dd[:2])
	desc := cd.d.Desc()
	assert.Equal(t, desc.VendorID, binary.LittleEndian.Uint16(dd[8:]), "idVendor")
	assert.Equal(t, desc.ProductID, binary.LittleEndian.Uint16(dd[10:]), "idProduct")
	require.NotZero(t, dd[16], "iSerialNumber")
	serial, err := cd.d.StringDescriptor(ctx, dd[16])
	require.NoError(t, err)
	assert.Equal(t, desc.Serial, serial)
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
	if !cd.control {
		require.ErrorIs(t, err, ioring.ErrNotSupported)
		AssertNoMore(t, cd.r)
		return
	}
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

// confControlStall: a request the device refuses (the scanner's gadget
// serves no vendor requests of the device) ends with ErrStall, and
// endpoint 0 recovers by itself at the next setup packet.
func confControlStall(t *testing.T, cd *confDev) {
	_, err := cd.d.StartControl(vendorRequest(RecipientDevice), Xfer{})
	if !cd.control {
		require.ErrorIs(t, err, ioring.ErrNotSupported)
		return
	}
	require.NoError(t, err)
	before := cd.deviceDescriptor(t)
	ctx, cancel := testContext()
	defer cancel()
	var b [4]byte
	_, err = cd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x5a}, b[:])
	assert.ErrorIs(t, err, ErrStall, "a refused vendor request")
	assert.Equal(t, before, cd.deviceDescriptor(t), "endpoint 0 after the stall")
}

// confControlWithheld: a control transfer the device does not answer (a
// vendor request to the scanner's interface: FunctionFS holds it for a
// program that does not read ep0 here) is canceled by Request.Cancel and
// completes exactly once: at once with ErrCanceled on usbfs; on libusb,
// whose control call cannot be interrupted, when its control timeout
// passes, with ErrTimeout. Endpoint 0 works on afterwards.
func confControlWithheld(t *testing.T, cd *confDev) {
	buf := vendorRequest(RecipientInterface)
	q, err := cd.d.SubmitControl(buf, Xfer{User: "withheld"})
	if !cd.control {
		require.ErrorIs(t, err, ioring.ErrNotSupported)
		return
	}
	require.NoError(t, err)
	settle(t, cd.r, 1)
	require.NoError(t, q.Cancel())
	c := Reap(t, cd.r, 1)[0]
	assert.Equal(t, "withheld", c.User)
	if cd.controlCancels {
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout, "canceled, not timed out")
	} else {
		assert.ErrorIs(t, c.Err, ErrTimeout, "libusb's control timeout ended it")
	}
	assert.Zero(t, c.N)
	AssertNoMore(t, cd.r)
	dd := cd.deviceDescriptor(t)
	assert.Equal(t, byte(devDescLen), dd[0])
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
