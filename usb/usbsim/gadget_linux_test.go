package usbsim_test

// The gadget transport's suite: it runs inside the usbvm guest (make
// test-usbvm), where the scanner is served through a configfs + FunctionFS
// gadget on dummy_hcd and the host side is usbfs on the real Linux USB
// stack. Outside the guest every test skips with usbvm's reason.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/usb/usbsim"
)

var _ usbsim.Gadget = (*usbvm.Gadget)(nil)

// gadgetSeq names each test's gadget uniquely (configfs directory, serial).
var gadgetSeq atomic.Int32

// usbHost is a blocking usbfs host on a scanner served as a gadget.
type usbHost struct {
	t             *testing.T
	g             *usbvm.Gadget
	s             *usbsim.Scanner
	dev           *usbvm.HostDevice
	fd            int
	in, out, intr uint8 // endpoint addresses the host sees
	maxTransfer   int
}

// serveGadget creates a gadget, serves a scanner through it and opens the
// device the host enumerates.
func serveGadget(t *testing.T, cfg usbsim.Config) *usbHost {
	t.Helper()
	usbvm.RequireGuest(t)
	name := fmt.Sprintf("usbsim%d", gadgetSeq.Add(1))
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{Name: name, SerialNumber: name, Product: "usbsim scanner"})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, g.Close()) })
	cfg.Serial = name
	s, err := usbsim.ServeGadget(g, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	h := &usbHost{t: t, g: g, s: s, fd: -1, maxTransfer: cmpOr(cfg.MaxTransfer, usbsim.DefaultMaxTransfer)}
	t.Cleanup(h.close)
	h.open()
	return h
}

// open waits for the host to enumerate the gadget, opens its usbfs node and
// claims its interface.
func (h *usbHost) open() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	dev, err := h.g.HostDevice(ctx)
	require.NoError(h.t, err)
	h.dev = dev
	for _, e := range []struct {
		typ  string
		in   bool
		addr *uint8
	}{{"Bulk", true, &h.in}, {"Bulk", false, &h.out}, {"Interrupt", true, &h.intr}} {
		ep, ok := dev.Endpoint(e.typ, e.in)
		require.True(h.t, ok, "%s in=%v endpoint of %s", e.typ, e.in, dev.SysfsPath)
		*e.addr = ep.Address
	}
	h.fd, err = unix.Open(dev.DevNode, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(h.t, err)
	require.NoError(h.t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClaimInterface, 0))
}

func (h *usbHost) close() {
	if h.fd >= 0 {
		_ = usbvm.USBFSUint(h.fd, usbvm.USBDevFSReleaseInterface, 0)
		_ = unix.Close(h.fd)
		h.fd = -1
	}
}

// send is one bulk OUT command, ended by a zero-length packet where USB
// needs one (a nonzero multiple of the packet size, short of MaxTransfer).
func (h *usbHost) send(payload []byte) error {
	h.t.Helper()
	n, err := usbvm.USBFSBulk(h.fd, h.out, payload, patience)
	if err != nil {
		return err
	}
	require.Equal(h.t, len(payload), n, "bulk OUT length")
	if l := len(payload); l > 0 && l < h.maxTransfer && l%usbsim.BulkMaxPacketSize == 0 {
		_, err = usbvm.USBFSBulk(h.fd, h.out, nil, patience)
	}
	return err
}

// readSize is one bulk IN transfer into a buffer of size bytes.
func (h *usbHost) readSize(size int, timeout time.Duration) ([]byte, error) {
	buf := make([]byte, size)
	n, err := usbvm.USBFSBulk(h.fd, h.in, buf, timeout)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// read is one bulk IN transfer of up to MaxTransfer bytes.
func (h *usbHost) read() ([]byte, error) { return h.readSize(h.maxTransfer, patience) }

// event reads one interrupt IN event.
func (h *usbHost) event() usbsim.Event {
	h.t.Helper()
	buf := make([]byte, usbsim.InterruptMaxPacketSize)
	n, err := usbvm.USBFSBulk(h.fd, h.intr, buf, patience)
	require.NoError(h.t, err, "interrupt IN")
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(h.t, err)
	return e
}

// status asks for an EventStatus and returns it, skipping other events.
// Since the device takes OUT transfers in order, its answer also shows that
// every command sent before has been acted on.
func (h *usbHost) status() usbsim.Event {
	h.t.Helper()
	require.NoError(h.t, h.send(usbsim.StatusCommand()))
	for {
		if e := h.event(); e.Kind == usbsim.EventStatus {
			return e
		}
	}
}

// readImage reads total bytes of image data in transfers of MaxTransfer
// bytes, each as long as the device's message (USB ends a short one).
func (h *usbHost) readImage(total int64) []byte {
	h.t.Helper()
	img := make([]byte, 0, total)
	for int64(len(img)) < total {
		b, err := h.read()
		require.NoError(h.t, err, "bulk IN at %d", len(img))
		left := total - int64(len(img))
		require.Equal(h.t, int(min(left, int64(h.maxTransfer))), len(b), "transfer length at %d", len(img))
		img = append(img, b...)
	}
	return img
}

func TestGadgetScan(t *testing.T) {
	h := serveGadget(t, usbsim.Config{})
	for _, p := range []usbsim.ScanParams{
		// 192000 bytes: two full transfers and 119 packets of 512, which
		// the device ends with a zero-length packet, then FlagZLP's.
		{DPI: 300, Width: 640, Height: 100, Format: usbsim.FormatRGB24, Seed: 42, Flags: usbsim.FlagZLP},
		// 33033 bytes: one short transfer.
		{DPI: 75, Width: 1001, Height: 33, Format: usbsim.FormatGray8, Seed: 7},
	} {
		total := p.ImageSize()
		require.NoError(t, h.send(usbsim.StartScanCommand(p)))
		e := h.event()
		assert.Equal(t, usbsim.EventJobStarted, e.Kind)
		assert.Equal(t, usbsim.StateScanning, e.State)
		assert.Equal(t, total, e.Total)

		img := h.readImage(total)
		require.True(t, bytes.Equal(usbsim.ExpectedImage(p), img), "image of %v %dx%d differs", p.Format, p.Width, p.Height)
		if p.Flags&usbsim.FlagZLP != 0 {
			b, err := h.read()
			require.NoError(t, err)
			assert.Empty(t, b, "zero-length packet after the image")
		}
		_, err := h.readSize(h.maxTransfer, quiet)
		assert.ErrorIs(t, err, unix.ETIMEDOUT, "nothing after the image")

		e = h.event()
		assert.Equal(t, usbsim.EventJobDone, e.Kind)
		assert.Equal(t, usbsim.StateIdle, e.State)
		assert.Equal(t, total, e.Sent)
		st := h.status()
		assert.Equal(t, e.Job, st.Job)
		assert.Equal(t, total, st.Sent)
	}

	h.s.PressButton(3)
	e := h.event()
	assert.Equal(t, usbsim.EventButton, e.Kind)
	assert.Equal(t, uint8(3), e.Code)

	// A refused command is acknowledged by USB and reported as an event.
	require.NoError(t, h.send([]byte{0x7f}))
	e = h.event()
	assert.Equal(t, usbsim.EventError, e.Kind)
	assert.Equal(t, uint8(usbsim.ErrCodeBadCommand), e.Code)
}

func TestGadgetTransferSizes(t *testing.T) {
	h := serveGadget(t, usbsim.Config{MaxTransfer: 16 << 10})
	m := h.maxTransfer
	for _, n := range []int{0, 1, 7, 63, 64, 511, 512, 513, 1024, 4096, m - 1} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		require.NoError(t, h.send(usbsim.EchoCommand(data)), "echo of %d bytes", n)
		b, err := h.read()
		require.NoError(t, err)
		require.Equal(t, data, b, "echo of %d bytes", n)
	}

	// A host buffer larger than MaxTransfer: a short transfer, nothing lost.
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("short"))))
	b, err := h.readSize(m+1000, patience)
	require.NoError(t, err)
	assert.Equal(t, "short", string(b))

	// A zero-length OUT packet and a full MaxTransfer OUT are accepted.
	require.NoError(t, h.send(nil))
	require.NoError(t, h.send(append([]byte{usbsim.CmdNop}, make([]byte, m-1)...)))

	// Several echoes queue in order; each is its own transfer.
	for i := range 5 {
		require.NoError(t, h.send(usbsim.EchoCommand(bytes.Repeat([]byte{byte(i)}, i*256))))
	}
	for i := range 5 {
		b, err := h.read()
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, i*256), b, "echo %d", i)
	}
	st := h.status()
	assert.Equal(t, usbsim.StateIdle, st.State)
}

func TestGadgetStall(t *testing.T) {
	h := serveGadget(t, usbsim.Config{})

	// Bulk IN: a transfer fails with EPIPE until the host clears the halt.
	require.NoError(t, h.s.Stall(usbsim.AddrBulkIn))
	_, err := h.readSize(h.maxTransfer, patience)
	require.ErrorIs(t, err, unix.EPIPE, "bulk IN of a stalled endpoint")
	_, err = h.readSize(h.maxTransfer, patience)
	require.ErrorIs(t, err, unix.EPIPE, "the halt stays until cleared")
	require.NoError(t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClearHalt, uint32(h.in)))
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("after clear"))))
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "after clear", string(b))

	// Data queued while halted waits for the host to clear the halt.
	require.NoError(t, h.s.Stall(usbsim.AddrBulkIn))
	_, err = h.read()
	require.ErrorIs(t, err, unix.EPIPE)
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("queued while halted"))))
	h.status() // the echo is queued
	_, err = h.read()
	require.ErrorIs(t, err, unix.EPIPE, "still halted with data queued")
	require.NoError(t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClearHalt, uint32(h.in)))
	b, err = h.read()
	require.NoError(t, err)
	assert.Equal(t, "queued while halted", string(b))
	// A long message (a pending request, not the controller's FIFO) too.
	long := bytes.Repeat([]byte("long "), 3000)
	require.NoError(t, h.s.Stall(usbsim.AddrBulkIn))
	_, err = h.read()
	require.ErrorIs(t, err, unix.EPIPE)
	require.NoError(t, h.send(usbsim.EchoCommand(long)))
	h.status()
	require.NoError(t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClearHalt, uint32(h.in)))
	b, err = h.read()
	require.NoError(t, err)
	assert.Equal(t, long, b)

	// Bulk OUT likewise; the commands after the clear run.
	require.NoError(t, h.s.Stall(usbsim.AddrBulkOut))
	err = h.send(usbsim.StatusCommand())
	require.ErrorIs(t, err, unix.EPIPE, "bulk OUT of a stalled endpoint")
	require.NoError(t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClearHalt, uint32(h.out)))
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("out cleared"))))
	b, err = h.read()
	require.NoError(t, err)
	assert.Equal(t, "out cleared", string(b))

	// Interrupt IN too.
	require.NoError(t, h.s.Stall(usbsim.AddrInterruptIn))
	_, err = usbvm.USBFSBulk(h.fd, h.intr, make([]byte, 64), patience)
	require.ErrorIs(t, err, unix.EPIPE, "interrupt IN of a stalled endpoint")
	require.NoError(t, usbvm.USBFSUint(h.fd, usbvm.USBDevFSClearHalt, uint32(h.intr)))
	assert.Equal(t, usbsim.StateIdle, h.status().State)

	// The host clears halts through USB; the socketpair-only calls say so.
	assert.ErrorIs(t, h.s.ClearHalt(usbsim.AddrBulkIn), usbsim.ErrNotSupported)
	_, err = h.s.Endpoints()
	assert.ErrorIs(t, err, usbsim.ErrNotSupported)
}

func TestGadgetHang(t *testing.T) {
	h := serveGadget(t, usbsim.Config{})
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 300, Format: usbsim.FormatGray8, Seed: 9}
	total := p.ImageSize()
	const cut = 100000
	h.s.HangAfter(cut)
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	img := h.readImage(cut) // 65536, then 34464: cut exactly

	// Hung mid-image: a bulk IN with a timeout times out, and so does a
	// bulk OUT (the device takes no transfer).
	_, err := h.readSize(h.maxTransfer, quiet)
	require.ErrorIs(t, err, unix.ETIMEDOUT, "bulk IN of a hung device")
	_, err = usbvm.USBFSBulk(h.fd, h.out, usbsim.StatusCommand(), quiet)
	require.ErrorIs(t, err, unix.ETIMEDOUT, "bulk OUT of a hung device")

	h.s.Resume()
	img = append(img, h.readImage(total-cut)...)
	require.True(t, bytes.Equal(usbsim.ExpectedImage(p), img), "image differs after the hang")
	for {
		if e := h.event(); e.Kind == usbsim.EventJobDone {
			assert.Equal(t, total, e.Sent)
			break
		}
	}

	// Hang with nothing to send, then Resume: commands sent meanwhile wait.
	h.s.Hang()
	_, err = usbvm.USBFSBulk(h.fd, h.out, usbsim.EchoCommand([]byte("late")), quiet)
	require.ErrorIs(t, err, unix.ETIMEDOUT)
	h.s.Resume()
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("resumed"))))
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "resumed", string(b))
}

func TestGadgetLatencyBandwidth(t *testing.T) {
	h := serveGadget(t, usbsim.Config{})
	const latency = 150 * time.Millisecond
	h.s.SetLatency(latency)
	start := time.Now()
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("slow"))))
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "slow", string(b))
	// The device acts on the command after the latency, then answers the
	// IN transfer after the latency again.
	assert.GreaterOrEqual(t, time.Since(start), 2*latency, "echo round trip with latency %v", latency)
	h.s.SetLatency(0)

	const bw = 512 << 10 // bytes/s
	h.s.SetBandwidth(bw)
	p := usbsim.ScanParams{DPI: 300, Width: 512, Height: 256, Format: usbsim.FormatGray8, Seed: 3}
	start = time.Now()
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	img := h.readImage(p.ImageSize())
	elapsed := time.Since(start)
	require.True(t, bytes.Equal(usbsim.ExpectedImage(p), img), "image differs")
	want := time.Duration(p.ImageSize() * int64(time.Second) / bw)
	assert.GreaterOrEqual(t, elapsed, want, "%d bytes at %d B/s", p.ImageSize(), bw)
}

// usbGone reports whether err is how usbfs reports a vanished device.
func usbGone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EPROTO) || errors.Is(err, unix.ESHUTDOWN)
}

func TestGadgetUnplug(t *testing.T) {
	h := serveGadget(t, usbsim.Config{})
	old := h.dev

	// A pending bulk IN ends when the device goes away.
	pending := make(chan error, 1)
	go func() {
		_, err := h.readSize(h.maxTransfer, patience)
		pending <- err
	}()
	time.Sleep(quiet) // let the transfer reach the controller
	require.NoError(t, h.s.Unplug())
	select {
	case err := <-pending:
		assert.True(t, usbGone(err), "pending bulk IN after unplug: %v", err)
	case <-time.After(patience):
		t.Fatal("pending bulk IN still pending after unplug")
	}
	// Later transfers fail too: at once, or after a moment in which usbfs
	// may still accept a submission that then fails.
	assert.Eventually(t, func() bool {
		_, err := usbvm.USBFSBulk(h.fd, h.out, usbsim.StatusCommand(), quiet)
		return errors.Is(err, unix.ENODEV)
	}, patience, 10*time.Millisecond, "bulk OUT on the old device")
	assert.Eventually(t, func() bool {
		_, err := os.Stat(old.DevNode)
		return errors.Is(err, os.ErrNotExist)
	}, patience, 10*time.Millisecond, "%s after unplug", old.DevNode)
	assert.ErrorIs(t, h.s.Stall(usbsim.AddrBulkIn), usbsim.ErrNoDevice)
	require.NoError(t, h.s.Unplug(), "unplugging an unplugged device")

	// Replug: the host enumerates a new device and the scanner works.
	h.close()
	require.NoError(t, h.s.Replug())
	h.open()
	assert.NotEqual(t, old.Dev, h.dev.Dev, "a replugged device gets a new address")
	st := h.status()
	assert.Equal(t, usbsim.StateIdle, st.State)
	p := usbsim.ScanParams{DPI: 150, Width: 300, Height: 40, Format: usbsim.FormatRGB24, Seed: 11}
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	require.True(t, bytes.Equal(usbsim.ExpectedImage(p), h.readImage(p.ImageSize())), "image after replug")

	// Close unplugs for good; the gadget stays for its owner to close.
	h.close()
	require.NoError(t, h.s.Close())
	assert.ErrorIs(t, h.s.Close(), usbsim.ErrClosed)
	assert.ErrorIs(t, h.s.Replug(), usbsim.ErrClosed)
	assert.Eventually(t, func() bool {
		_, err := os.Stat(h.dev.SysfsPath)
		return errors.Is(err, os.ErrNotExist)
	}, patience, 10*time.Millisecond, "%s after Close", h.dev.SysfsPath)
}

func TestServeGadgetRefusesBadInput(t *testing.T) {
	_, err := usbsim.ServeGadget(nil, usbsim.Config{})
	assert.Error(t, err)
	_, err = usbsim.ServeGadget(&usbvm.Gadget{}, usbsim.Config{})
	assert.Error(t, err, "a gadget without endpoint files")
}
