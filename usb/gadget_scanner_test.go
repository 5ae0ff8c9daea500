//go:build cgo && linux

package usb_test

// The suite of package usb on a real Linux USB host stack: usbsim's scanner
// served as a FunctionFS gadget on dummy_hcd inside the usbvm guest (make
// test-usbvm), opened with Open through each backend of gadgetBackends.
// Outside the guest every test skips with usbvm's reason.

import (
	"bytes"
	"cmp"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// gadgetBackends are the transports the gadget suites and benchmarks run
// against, each as a subtest named backend=<name> (WithBackend).
var gadgetBackends = []string{"usbfs", "libusb"}

// forEachBackend runs f as one subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	usbvm.RequireGuest(t)
	for _, b := range gadgetBackends {
		t.Run("backend="+b, func(t *testing.T) { f(t, b) })
	}
}

// gadgetSeq names each gadget uniquely (configfs directory, serial number).
var gadgetSeq atomic.Int32

// gadgetDev is usbsim's scanner served as a gadget, and the Device the
// host side opened on it through one backend; everything closes with the
// test.
type gadgetDev struct {
	backend       string
	g             *usbvm.Gadget
	s             *usbsim.Scanner
	r             *ioring.Ring
	d             *Device
	host          *usbvm.HostDevice
	in, out, intr *Endpoint // as the host sees them (addresses the controller chose)
	maxTransfer   int       // the scanner's MaxTransfer
	opts          []Option  // Open's, besides the backend, bus and address
}

// newGadgetDev serves a scanner configured by cfg through a new gadget and
// opens it with backend (and opts; WithZeroPacket always). It skips outside
// the guest.
func newGadgetDev(tb testing.TB, backend string, cfg usbsim.Config, opts ...Option) *gadgetDev {
	tb.Helper()
	usbvm.RequireGuest(tb)
	if t, ok := tb.(*testing.T); ok {
		CheckFDs(t)
	}
	name := fmt.Sprintf("usbgs%d", gadgetSeq.Add(1))
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{Name: name, SerialNumber: name, Product: "usbsim scanner"})
	require.NoError(tb, err)
	tb.Cleanup(func() { assert.NoError(tb, g.Close()) })
	cfg.Serial = name
	s, err := usbsim.ServeGadget(g, cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = s.Close() })
	gd := &gadgetDev{backend: backend, g: g, s: s, r: NewRing(tb, 64), maxTransfer: cmp.Or(cfg.MaxTransfer, usbsim.DefaultMaxTransfer), opts: opts}
	gd.open(tb)
	return gd
}

// open waits until the host has enumerated the gadget and opens it with
// the backend; the Device closes with the test.
func (gd *gadgetDev) open(tb testing.TB) {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	host, err := gd.g.HostDevice(ctx)
	require.NoError(tb, err)
	gd.host = host
	d, err := Open(gd.r, gd.g.Config.VendorID, gd.g.Config.ProductID,
		append([]Option{WithBackend(gd.backend), WithBusAddr(host.Bus, host.Dev), WithZeroPacket()}, gd.opts...)...)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = d.Close() })
	gd.d = d
	gd.in, gd.out, gd.intr = nil, nil, nil
	for _, ed := range d.Desc().Endpoints {
		e, err := d.Endpoint(ed.Address)
		require.NoError(tb, err)
		switch {
		case ed.Type == Bulk && ed.IsIn():
			gd.in = e
		case ed.Type == Bulk:
			gd.out = e
		case ed.Type == Interrupt:
			gd.intr = e
		}
	}
	require.NotNil(tb, gd.in, "bulk IN of %v", d.Desc())
	require.NotNil(tb, gd.out, "bulk OUT of %v", d.Desc())
	require.NotNil(tb, gd.intr, "interrupt IN of %v", d.Desc())
}

// replug plugs the scanner in again after an unplug and opens the new
// device (the old Device stays for the test's cleanup).
func (gd *gadgetDev) replug(tb testing.TB) {
	tb.Helper()
	require.NoError(tb, gd.s.Replug())
	gd.open(tb)
}

// send is one bulk OUT command that must succeed.
func (gd *gadgetDev) send(tb testing.TB, payload []byte) {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := gd.out.Transfer(ctx, payload)
	require.NoError(tb, err, "bulk OUT of %d bytes", len(payload))
	require.Equal(tb, len(payload), n, "bulk OUT bytes")
}

// read is one bulk IN transfer into a buffer of size bytes that must
// succeed.
func (gd *gadgetDev) read(tb testing.TB, size int) []byte {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, size)
	n, err := gd.in.Transfer(ctx, buf)
	require.NoError(tb, err, "bulk IN of up to %d bytes", size)
	return buf[:n]
}

// echo checks that the device answers: an echo command comes back whole.
func (gd *gadgetDev) echo(tb testing.TB, msg string) {
	tb.Helper()
	gd.send(tb, usbsim.EchoCommand([]byte(msg)))
	assert.Equal(tb, msg, string(gd.read(tb, gd.maxTransfer)), "echo")
}

// waitEvent reads interrupt IN until an event of kind k and returns it.
func (gd *gadgetDev) waitEvent(tb testing.TB, k usbsim.EventKind) usbsim.Event {
	tb.Helper()
	return readEvent(tb, gd.intr, k)
}

// nextEvent reads the next event from interrupt IN, whatever its kind.
func (gd *gadgetDev) nextEvent(tb testing.TB) usbsim.Event {
	tb.Helper()
	ctx, cancel := testContext()
	defer cancel()
	return readEventIn(tb, ctx, gd.intr, make([]byte, gd.intr.Desc().MaxPacketSize), usbsim.EventStatus)
}

// pattern returns n bytes that differ with n.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + n)
	}
	return b
}

func TestGadgetScannerTransfers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		m := gd.maxTransfer
		assert.Equal(t, 512, gd.in.Desc().MaxPacketSize, "high-speed bulk IN")

		// Echo commands of 1+n bytes; the answers are IN transfers of n
		// bytes: short, full packets ended by a zero-length packet, a
		// zero-length packet alone. Commands of 512, 1024 and m bytes are
		// whole packets: WithZeroPacket ends them.
		for _, n := range []int{0, 1, 63, 64, 511, 512, 513, 1023, 1024, 4096, m - 1} {
			data := pattern(n)
			gd.send(t, usbsim.EchoCommand(data))
			require.Equal(t, data, gd.read(t, m), "echo of %d bytes", n)
		}

		// A buffer larger than the message: a short transfer.
		gd.send(t, usbsim.EchoCommand([]byte("short")))
		assert.Equal(t, "short", string(gd.read(t, 3*m)))
		// A buffer smaller than the message: the rest comes with the next
		// transfer, nothing is lost.
		data := pattern(1000)
		gd.send(t, usbsim.EchoCommand(data))
		first := gd.read(t, 512)
		assert.Len(t, first, 512)
		assert.Equal(t, data, append(first, gd.read(t, m)...), "echo read in two transfers")
		// A zero-length OUT transfer is a zero-length packet; the device
		// ignores it.
		gd.send(t, nil)
		gd.echo(t, "after a zero-length packet")

		// Several transfers in flight on the completion queue complete in
		// order, each with its own message.
		const k = 5
		bufs := make([][]byte, k)
		for i := range k {
			bufs[i] = make([]byte, m)
			_, err := gd.in.Submit(bufs[i], Xfer{User: i})
			require.NoError(t, err)
		}
		for i := range k {
			gd.send(t, usbsim.EchoCommand(bytes.Repeat([]byte{byte(i)}, i*300)))
		}
		for i, c := range Reap(t, gd.r, k) {
			require.NoError(t, c.Err, "transfer %v", c.User)
			assert.Equal(t, i, c.User, "completion order")
			assert.Equal(t, bytes.Repeat([]byte{byte(i)}, i*300), bufs[i][:c.N], "echo %d", i)
		}

		// An image, byte for byte: in transfers of MaxTransfer, then in one
		// buffer that gathers all its messages (full ones do not end a
		// transfer; the last, short one does).
		p := usbsim.ScanParams{DPI: 150, Width: 1000, Height: 50, Format: usbsim.FormatGray8, Seed: 5} // 3 x 16 KiB + 800
		for _, size := range []int{m, 4 * m} {
			gd.send(t, usbsim.StartScanCommand(p))
			var img []byte
			for int64(len(img)) < p.ImageSize() {
				b := gd.read(t, size)
				require.NotEmpty(t, b, "image data at %d", len(img))
				img = append(img, b...)
			}
			require.True(t, bytes.Equal(usbsim.ExpectedImage(p), img), "image read with %d-byte buffers differs", size)
		}

		// Interrupt IN: a status event.
		gd.send(t, usbsim.StatusCommand())
		assert.Equal(t, usbsim.StateIdle, gd.waitEvent(t, usbsim.EventStatus).State)
	})
}

// TestGadgetScannerBackToBack: the host acts on an image as soon as it has
// read the last of it. The device must too, although FunctionFS returns
// its write of those bytes only after the host took them: a status asked
// for then says idle with the whole image sent, and the next scan starts
// (no ErrCodeBusy), every time.
func TestGadgetScannerBackToBack(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		p := usbsim.ScanParams{DPI: 150, Width: 1000, Height: 20, Format: usbsim.FormatGray8, Seed: 9} // 16 KiB + 3616
		for i := range 40 {
			gd.send(t, usbsim.StartScanCommand(p))
			var n int64
			for n < p.ImageSize() {
				b := gd.read(t, 4*gd.maxTransfer)
				require.NotEmpty(t, b, "scan %d: image data at %d", i, n)
				n += int64(len(b))
			}
			require.Equal(t, p.ImageSize(), n, "scan %d", i)
			gd.send(t, usbsim.StatusCommand())
			for {
				e := gd.nextEvent(t)
				require.NotEqual(t, usbsim.EventError, e.Kind, "scan %d: error event %+v", i, e)
				if e.Kind == usbsim.EventStatus {
					require.Equal(t, usbsim.StateIdle, e.State, "scan %d: status %+v", i, e)
					require.Equal(t, e.Total, e.Sent, "scan %d: status %+v", i, e)
					break
				}
			}
		}
	})
}

// TestGadgetScannerSignals: Go's runtime preempts goroutines with SIGURG,
// sent to their threads at any moment, and FunctionFS fails a transfer
// that a signal interrupts with EINTR, without saying how much of it had
// moved. The scanner's endpoint threads must not take the runtime's
// signals: with SIGURG sent to every thread of the process all along,
// echoes of many packets each way and images of many messages arrive
// whole and in step, each transfer ending where the device's message
// ends. (When they took it, an IN write the host had partly read was
// sent again whole, and the host read its first part twice: a driver
// reading an image in step then failed with ErrBabble at its last,
// short transfer.)
func TestGadgetScannerSignals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{})
		m := gd.maxTransfer
		defer signalThreadsUntil(t)()
		for i := range 4 {
			data := pattern(m - 1 - i)
			gd.send(t, usbsim.EchoCommand(data))
			require.Equal(t, data, gd.read(t, m), "echo %d", i)

			// 15 messages of MaxTransfer bytes, and one of 16960.
			p := usbsim.ScanParams{DPI: 150, Width: 1000, Height: 1000, Format: usbsim.FormatGray8, Seed: uint64(i)}
			want := usbsim.ExpectedImage(p)
			gd.send(t, usbsim.StartScanCommand(p))
			for off := 0; off < len(want); {
				b := gd.read(t, m)
				n := min(m, len(want)-off)
				require.Len(t, b, n, "image %d: transfer at %d", i, off)
				require.True(t, bytes.Equal(want[off:off+n], b), "image %d: bytes %d to %d differ", i, off, off+n)
				off += n
			}
		}
	})
}

func TestGadgetScannerCancel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		m := gd.maxTransfer

		t.Run("pending", func(t *testing.T) {
			// A bulk IN the device has nothing for: canceled by its token.
			tok := gd.r.NewToken()
			_, err := gd.in.Submit(make([]byte, m), Xfer{Token: tok, User: "pending"})
			require.NoError(t, err)
			settle(t, gd.r, 1)
			require.NoError(t, tok.Cancel())
			c := Reap(t, gd.r, 1)[0]
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.Zero(t, c.N, "bytes of a canceled transfer that got none")
			AssertNoMore(t, gd.r)
			gd.echo(t, "after a cancel") // nothing lost, nothing stale
		})

		t.Run("mid-transfer", func(t *testing.T) {
			// The device sends one message of MaxTransfer bytes, which does
			// not end a transfer of twice that, and has nothing more: the
			// transfer got the message and waits. Canceled, it reports the
			// bytes it received. The job's end event on interrupt IN says
			// when the message has gone.
			p := usbsim.ScanParams{DPI: 150, Width: uint32(m), Height: 1, Format: usbsim.FormatGray8, Seed: 8}
			require.EqualValues(t, m, p.ImageSize())
			gd.send(t, usbsim.StartScanCommand(p))
			buf := make([]byte, 2*m)
			q, err := gd.in.Start(buf, Xfer{})
			require.NoError(t, err)
			gd.waitEvent(t, usbsim.EventJobDone)
			time.Sleep(Quiet) // nothing more comes
			require.True(t, q.Pending(), "a transfer of %d bytes ended by a message of %d", 2*m, m)
			require.NoError(t, q.Cancel())
			ctx, cancel := testContext()
			defer cancel()
			c, err := q.Wait(ctx)
			require.NoError(t, err)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			require.Equal(t, m, c.N, "bytes received before the cancel")
			assert.True(t, bytes.Equal(usbsim.ExpectedImage(p), buf[:m]), "the bytes received are the image")
			gd.echo(t, "after a cancel mid-transfer") // nothing stale
		})

		t.Run("hung-8", func(t *testing.T) {
			// Eight transfers pending on a hung device, one token: each
			// completes exactly once, with ErrCanceled.
			gd.s.Hang()
			defer gd.s.Resume()
			const k = 8
			tok := gd.r.NewToken()
			for i := range k {
				_, err := gd.in.Submit(make([]byte, m), Xfer{Token: tok, User: i})
				require.NoError(t, err)
			}
			settle(t, gd.r, k)
			t0 := time.Now()
			require.NoError(t, tok.Cancel())
			seen := map[int]int{}
			for _, c := range Reap(t, gd.r, k) {
				assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
				assert.Zero(t, c.N, "transfer %v", c.User)
				seen[c.User.(int)]++
			}
			t.Logf("cancel of %d pending bulk IN transfers: %v", k, time.Since(t0))
			AssertNoMore(t, gd.r)
			for i := range k {
				assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
			}
			gd.s.Resume()
			gd.echo(t, "after the hang")
		})
	})
}

func TestGadgetScannerStall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		ctx, cancel := testContext()
		defer cancel()
		buf := make([]byte, gd.maxTransfer)

		// Bulk IN: every transfer fails with ErrStall until ClearHalt.
		require.NoError(t, gd.s.Stall(usbsim.AddrBulkIn))
		for range 2 {
			_, err := gd.in.Transfer(ctx, buf)
			require.ErrorIs(t, err, ErrStall, "bulk IN of a halted endpoint")
		}
		require.NoError(t, gd.d.ClearHalt(gd.in.Desc().Address))
		gd.echo(t, "after clearing bulk IN")

		// Bulk OUT likewise: the command is refused, the next one runs.
		require.NoError(t, gd.s.Stall(usbsim.AddrBulkOut))
		_, err := gd.out.Transfer(ctx, usbsim.EchoCommand([]byte("refused")))
		require.ErrorIs(t, err, ErrStall, "bulk OUT of a halted endpoint")
		require.NoError(t, gd.d.ClearHalt(gd.out.Desc().Address))
		gd.echo(t, "after clearing bulk OUT")

		// Clearing an endpoint that is not halted does no harm.
		require.NoError(t, gd.d.ClearHalt(gd.in.Desc().Address))
		gd.echo(t, "after a needless clear")
	})
}

// TestGadgetScannerUnplug: transfers pending when the device goes away
// complete exactly once with ErrNoDevice, however the real stack reports
// it (ENODEV, EPROTO, ESHUTDOWN; a submission accepted in the moment
// before usbcore notices), and so do later ones.
func TestGadgetScannerUnplug(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		m := gd.maxTransfer

		// checkGone reaps k transfers, each of which must end with
		// ErrNoDevice exactly once, then checks that later ones fail too.
		checkGone := func(t *testing.T, k int, t0 time.Time) {
			t.Helper()
			seen := map[int]int{}
			for _, c := range Reap(t, gd.r, k) {
				assert.ErrorIs(t, c.Err, ErrNoDevice, "transfer %v", c.User)
				assert.ErrorIs(t, c.Err, ioring.ErrNoDevice, "transfer %v", c.User)
				assert.NotErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
				seen[c.User.(int)]++
			}
			t.Logf("%d transfers ended %v after the unplug began", k, time.Since(t0))
			AssertNoMore(t, gd.r)
			for i := range k {
				assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
			}
			_, err := gd.in.Submit(make([]byte, m), Xfer{})
			assert.ErrorIs(t, err, ErrNoDevice, "bulk IN submitted after the unplug")
			_, err = gd.out.Submit(usbsim.StatusCommand(), Xfer{})
			assert.ErrorIs(t, err, ErrNoDevice, "bulk OUT submitted after the unplug")
			assert.ErrorIs(t, gd.d.ClearHalt(gd.in.Desc().Address), ErrNoDevice)
			assert.Eventually(t, func() bool {
				_, err := os.Stat(gd.host.DevNode)
				return err != nil
			}, Patience, 10*time.Millisecond, "%s after the unplug", gd.host.DevNode)
		}

		t.Run("idle-8", func(t *testing.T) {
			// Eight bulk IN transfers waiting for data.
			const k = 8
			for i := range k {
				_, err := gd.in.Submit(make([]byte, m), Xfer{User: i})
				require.NoError(t, err)
			}
			settle(t, gd.r, k)
			t0 := time.Now()
			require.NoError(t, gd.s.Unplug())
			checkGone(t, k, t0)
		})

		t.Run("hung-8+2", func(t *testing.T) {
			// A hung device: eight bulk IN and two bulk OUT transfers
			// pending (the device takes no OUT transfer).
			gd.replug(t)
			gd.echo(t, "replugged")
			gd.s.Hang()
			const k = 10
			for i := range k {
				ep, buf := gd.in, make([]byte, m)
				if i >= 8 {
					ep, buf = gd.out, usbsim.StatusCommand()
				}
				_, err := ep.Submit(buf, Xfer{User: i})
				require.NoError(t, err)
			}
			settle(t, gd.r, k)
			t0 := time.Now()
			require.NoError(t, gd.s.Unplug())
			checkGone(t, k, t0)
		})

		t.Run("submit-after", func(t *testing.T) {
			// Nothing pending: transfers submitted right after the unplug,
			// while usbfs may still accept them, fail the same way.
			gd.replug(t)
			gd.echo(t, "replugged")
			require.NoError(t, gd.s.Unplug())
			t0 := time.Now()
			ctx, cancel := testContext()
			defer cancel()
			tries := 0
			for ; tries < 100; tries++ {
				q, err := gd.out.Start(usbsim.StatusCommand(), Xfer{})
				if err != nil {
					require.ErrorIs(t, err, ErrNoDevice, "submit %d after the unplug", tries)
					break
				}
				c, err := q.Wait(ctx)
				require.NoError(t, err)
				require.ErrorIs(t, c.Err, ErrNoDevice, "transfer %d after the unplug", tries)
			}
			t.Logf("%d transfers reached the stack after the unplug, %v", tries, time.Since(t0))
			assert.Less(t, tries, 100, "submits still accepted")
			checkGone(t, 0, t0)
		})
	})
}
