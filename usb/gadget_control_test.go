//go:build cgo && linux

package usb_test

// Control transfers against usbsim's scanner served as a FunctionFS gadget
// in the usbvm guest: its vendor requests reach FunctionFS's ep0 through
// the real host stack (usbcore, dummy_hcd, the composite layer), each
// backend in a subtest. The conformance suite runs the cases every backend
// shares; these look at what only a real stack shows.

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// vendorOut sends cmd as the scanner's VendorCommand, an OUT data stage, to
// recipient.
func (gd *gadgetDev) vendorOut(tb testing.TB, recipient uint8, cmd []byte) {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := gd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | recipient, Request: usbsim.VendorCommand}, cmd)
	require.NoError(tb, err, "VendorCommand of %d bytes (data stages the gadget failed: %v)", len(cmd), gd.s.DataStageErrors())
	require.Equal(tb, len(cmd), n, "data stages the gadget failed: %v", gd.s.DataStageErrors())
}

// TestGadgetControlOut: control OUT transfers whose data stage is one
// byte, a packet of endpoint 0 less one, exactly one, one and a bit,
// several, and the scanner's largest, reach the gadget's ep0 whole, to the
// device and to the interface: each is an echo command, and the echo comes
// back on bulk IN. A scan started on endpoint 0 is the one the device
// runs, and its image and events follow.
func TestGadgetControlOut(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		mps0 := 64 // bMaxPacketSize0 of a high-speed device
		for _, n := range []int{0, mps0 - 2, mps0 - 1, mps0, 2*mps0 + 5, usbsim.ControlMaxData - 1} {
			for _, recipient := range []uint8{RecipientDevice, RecipientInterface} {
				data := pattern(n)
				gd.vendorOut(t, recipient, usbsim.EchoCommand(data))
				require.Equal(t, data, gd.read(t, gd.maxTransfer), "echo of a %d-byte data stage to recipient %d", n+1, recipient)
			}
		}
		p := usbsim.ScanParams{DPI: 300, Width: 640, Height: 20, Format: usbsim.FormatRGB24, Seed: 99}
		gd.vendorOut(t, RecipientInterface, usbsim.StartScanCommand(p))
		// USB ends the request once the device has its data stage; the
		// device acts on it at once after, as its events say.
		e := gd.waitEvent(t, usbsim.EventJobStarted)
		assert.Equal(t, p, gd.s.LastScan(), "the scan the device runs")
		var image []byte
		for int64(len(image)) < p.ImageSize() {
			image = append(image, gd.read(t, gd.maxTransfer)...)
		}
		assert.True(t, bytes.Equal(usbsim.ExpectedImage(p), image), "image of a scan started on endpoint 0")
		assert.Equal(t, e.Job, gd.waitEvent(t, usbsim.EventJobDone).Job)
	})
}

// TestGadgetControlStall: vendor requests the gadget refuses end with
// ErrStall whichever way FunctionFS stalls them (a read of ep0 for an IN
// request, a write for an OUT one, the composite layer for an interface
// the function does not have), while a scan streams on bulk IN: a stall of
// endpoint 0 is one request's, not a halt, so the stream and the next
// requests go on.
func TestGadgetControlStall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		p := usbsim.ScanParams{DPI: 300, Width: 16 << 10, Height: 40, Format: usbsim.FormatGray8, Seed: 3}
		gd.send(t, usbsim.StartScanCommand(p))
		refused := []Setup{
			{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x77, Length: 8},
			{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: 0x77, Length: 8},
			{RequestType: RequestIn | RequestVendor | RecipientInterface, Request: usbsim.VendorCommand, Length: 8},
			{RequestType: RequestOut | RequestVendor | RecipientInterface, Request: usbsim.VendorStatus, Length: 8},
			{RequestType: RequestOut | RequestVendor | RecipientInterface, Request: usbsim.VendorCommand, Index: 4, Length: 8},
		}
		ctx, cancel := testContext()
		defer cancel()
		var image []byte
		for i, s := range refused {
			data := make([]byte, s.Length)
			_, err := gd.d.Control(ctx, s, data)
			assert.ErrorIs(t, err, ErrStall, "request %d: %+v (stalls the gadget could not make: %v)", i, s, gd.s.StallErrors())
			image = append(image, gd.read(t, gd.maxTransfer)...)
			st, err := gd.d.GetStatus(ctx, RecipientEndpoint, uint16(gd.in.Desc().Address))
			require.NoError(t, err)
			assert.Zero(t, st&1, "bulk IN is not halted")
		}
		for int64(len(image)) < p.ImageSize() {
			image = append(image, gd.read(t, gd.maxTransfer)...)
		}
		assert.True(t, bytes.Equal(usbsim.ExpectedImage(p), image), "the image streamed on through the stalls")
		assert.Empty(t, gd.s.StallErrors(), "every refusal stalled")
		var b [usbsim.EventSize]byte
		n, err := gd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus}, b[:])
		require.NoError(t, err)
		assert.Equal(t, usbsim.EventSize, n)
	})
}

// TestGadgetControlWithheld: a VendorCommand whose data stage the hung
// gadget does not take is canceled by its token, at once, with
// ErrCanceled (usbfs discards the URB; libusb's synchronous call, which
// nothing interrupts, is left to run on a copy of the data stage). On
// usbfs it never runs: FunctionFS gives the device no data of a request
// the host abandoned. On libusb the host's request is still pending when
// the device resumes (libusb's call ends when the device answers or its
// 5-second control timeout passes), so the device may take its data stage
// and run it: what a canceled OUT request may do (Device.SubmitControl).
// After the device resumes, the next command runs (on libusb, once the
// call left behind has ended), and nothing after it.
func TestGadgetControlWithheld(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		gd.s.Hang()
		cmd := usbsim.EchoCommand([]byte("abandoned"))
		buf := make([]byte, SetupSize+len(cmd))
		Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand, Length: uint16(len(cmd))}.Put(buf)
		copy(buf[SetupSize:], cmd)
		tok := gd.r.NewToken()
		_, err := gd.d.SubmitControl(buf, Xfer{Token: tok})
		require.NoError(t, err)
		time.Sleep(Quiet)
		t0 := time.Now()
		require.NoError(t, tok.Cancel())
		c := Reap(t, gd.r, 1)[0]
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout)
		t.Logf("%s: control OUT withheld, canceled in %v", backend, time.Since(t0))
		gd.s.Resume()
		gd.vendorOut(t, RecipientDevice, usbsim.EchoCommand([]byte("kept")))
		echo := string(gd.read(t, gd.maxTransfer))
		if backend == "libusb" && echo == "abandoned" {
			t.Logf("libusb: the canceled request's call outlived the cancel, and the resumed device ran it")
			echo = string(gd.read(t, gd.maxTransfer))
		}
		assert.Equal(t, "kept", echo, "only the command after the resume ran (and, on libusb, the canceled one)")
		ctx, cancel := testContext()
		defer cancel()
		q, err := gd.in.Start(make([]byte, gd.maxTransfer), Xfer{Deadline: Quiet})
		require.NoError(t, err)
		c, err = q.Wait(ctx)
		require.NoError(t, err)
		assert.True(t, errors.Is(c.Err, ErrTimeout), "no more echoes: %d bytes, %v", c.N, c.Err)
	})
}

// TestGadgetControlSignals: the device side's calls on ep0 may be
// interrupted by a signal (Go's runtime sends SIGURG to its threads to
// preempt goroutines; FunctionFS then dequeues the request and the call
// fails with EINTR). The scanner must make the call again: a data stage it
// gave up on stays pending in FunctionFS, and its next read of ep0 for
// events would take the host's data instead (the host then saw a data
// stage of 48 bytes, the event buffer's size). Stray SIGURGs go to every
// thread of the process while each control OUT transfer runs; each data
// stage must arrive whole, and its echo come back. (The bulk endpoints'
// threads block SIGURG too: TestGadgetScannerSignals.)
func TestGadgetControlSignals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		for i := range 100 {
			data := pattern(usbsim.ControlMaxData - 1 - i%7)
			func() {
				defer signalThreadsUntil(t)()
				gd.vendorOut(t, RecipientDevice, usbsim.EchoCommand(data))
			}()
			require.Equal(t, data, gd.read(t, gd.maxTransfer), "echo %d", i)
		}
	})
}

// signalThreadsUntil sends SIGURG to every thread of the process every
// 50µs until the function it returns is called, which waits until the
// sending has stopped. Defer it: called on a failure too (FailNow ends
// the test's goroutine), it keeps the signals from going on through the
// tests after this one.
func signalThreadsUntil(tb testing.TB) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			signalThreads(tb)
			select {
			case <-quit:
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// signalThreads sends SIGURG, which Go's runtime takes in its stride, to
// every thread of the process.
func signalThreads(tb testing.TB) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		tb.Errorf("threads: %v", err)
		return
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		}
	}
}
