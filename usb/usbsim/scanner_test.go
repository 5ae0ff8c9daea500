//go:build linux

package usbsim_test

import (
	"bytes"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestScanRoundTrip(t *testing.T) {
	cases := []struct {
		maxTransfer int
		p           usbsim.ScanParams
	}{
		{0, usbsim.ScanParams{DPI: 300, Width: 257, Height: 100, Format: usbsim.FormatGray8, Seed: 1}},
		{0, usbsim.ScanParams{DPI: 600, Width: 640, Height: 480, Format: usbsim.FormatRGB24, Seed: 2, Flags: usbsim.FlagZLP}},
		{4096, usbsim.ScanParams{DPI: 75, Width: 1001, Height: 33, Format: usbsim.FormatBW1, Seed: 3}},
		{4096, usbsim.ScanParams{DPI: 150, Width: 128, Height: 64, Format: usbsim.FormatGray16, Seed: 4, Flags: usbsim.FlagZLP}},
		{512 << 10, usbsim.ScanParams{DPI: 1200, Width: 1000, Height: 700, Format: usbsim.FormatRGB48, Seed: 5}},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("max=%d/format=%v/%dx%d", c.maxTransfer, c.p.Format, c.p.Width, c.p.Height), func(t *testing.T) {
			s := newScanner(t, usbsim.Config{MaxTransfer: c.maxTransfer})
			h := openHost(t, s)
			want := cmpOr(c.maxTransfer, usbsim.DefaultMaxTransfer)
			if os.Geteuid() == 0 {
				assert.Equal(t, want, h.in.MaxTransfer, "bulk IN MaxTransfer (root may pass wmem_max)")
			} else {
				assert.LessOrEqual(t, h.in.MaxTransfer, want, "bulk IN MaxTransfer")
			}
			total := c.p.ImageSize()
			require.Equal(t, c.p.BytesPerLine()*int64(c.p.Height), total)

			require.NoError(t, h.send(usbsim.StartScanCommand(c.p)))
			e := h.event()
			assert.Equal(t, usbsim.EventJobStarted, e.Kind)
			assert.Equal(t, usbsim.StateScanning, e.State)
			assert.Equal(t, total, e.Total)

			// Every message but the last is a full MaxTransfer.
			var img []byte
			for int64(len(img)) < total {
				b, err := h.read()
				require.NoError(t, err)
				left := total - int64(len(img))
				require.Equal(t, int(min(left, int64(h.in.MaxTransfer))), len(b), "transfer length at %d", len(img))
				img = append(img, b...)
			}
			require.True(t, bytes.Equal(usbsim.ExpectedImage(c.p), img), "image differs")
			if c.p.Flags&usbsim.FlagZLP != 0 {
				b, err := h.read()
				require.NoError(t, err)
				assert.Empty(t, b, "zero-length packet after the image")
			}
			assert.False(t, readable(t, h.in.FD, 50*time.Millisecond), "nothing after the image")

			e = h.event()
			assert.Equal(t, usbsim.EventJobDone, e.Kind)
			assert.Equal(t, usbsim.StateIdle, e.State)
			assert.Equal(t, total, e.Sent)
			st := h.status()
			assert.Equal(t, usbsim.StateIdle, st.State)
			assert.Equal(t, e.Job, st.Job)
			assert.Equal(t, total, st.Sent)
		})
	}
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func TestTransferSizes(t *testing.T) {
	s := newScanner(t, usbsim.Config{MaxTransfer: 16 << 10})
	h := openHost(t, s)
	m := h.in.MaxTransfer
	for _, n := range []int{0, 1, 7, 511, 512, 513, 4096, m - 1} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*7 + n)
		}
		require.NoError(t, h.send(usbsim.EchoCommand(data)))
		b, err := h.read()
		require.NoError(t, err)
		require.Equal(t, data, b, "echo of %d bytes", n)
	}

	// A host buffer larger than the message: a short transfer, nothing lost.
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("short"))))
	big := make([]byte, m+1000)
	require.True(t, readable(t, h.in.FD, patience))
	n, err := readIn(h.in.FD, big)
	require.NoError(t, err)
	assert.Equal(t, "short", string(big[:n]))

	// Zero-length OUT packet and a full-size OUT transfer are accepted.
	require.NoError(t, h.send(nil))
	require.NoError(t, h.send(append([]byte{usbsim.CmdNop}, make([]byte, m-1)...)))

	// Several echoes queue in order; each is its own transfer.
	for i := range 5 {
		require.NoError(t, h.send(usbsim.EchoCommand(bytes.Repeat([]byte{byte(i)}, i*100))))
	}
	for i := range 5 {
		b, err := h.read()
		require.NoError(t, err)
		require.Equal(t, bytes.Repeat([]byte{byte(i)}, i*100), b)
	}

	// An OUT message past MaxTransfer is a protocol error: bulk OUT stalls.
	require.ErrorIs(t, h.send(make([]byte, m+1)), usbsim.ErrStall)
	require.ErrorIs(t, h.send(usbsim.StatusCommand()), usbsim.ErrStall)
	require.NoError(t, s.ClearHalt(usbsim.AddrBulkOut))
	assert.Equal(t, usbsim.EventStatus, h.status().Kind)

	// So are a message without the header and one with a bad header.
	for _, msg := range [][]byte{{}, {'?', usbsim.CmdGetStatus}} {
		_, err := unix.Write(h.out.FD, msg)
		require.NoError(t, err)
		h.seq++
		require.True(t, readable(t, h.out.FD, patience))
		seq, err := readReply(h.out.FD)
		require.ErrorIs(t, err, usbsim.ErrStall, "message %q", msg)
		assert.Equal(t, h.seq, seq)
		require.NoError(t, s.ClearHalt(usbsim.AddrBulkOut))
	}
	assert.Equal(t, usbsim.EventStatus, h.status().Kind)
}

func TestCommandErrorsAndButtons(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	h := openHost(t, s)
	// Larger than the sockets hold, so the job stays active until read.
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 1000, Format: usbsim.FormatGray8}

	for _, c := range []struct {
		cmd  []byte
		code uint8
	}{
		{[]byte{0x7f}, usbsim.ErrCodeBadCommand},
		{[]byte{usbsim.CmdAbort, 0}, usbsim.ErrCodeBadCommand},
		{usbsim.StartScanCommand(p)[:10], usbsim.ErrCodeBadCommand},
		{usbsim.StartScanCommand(usbsim.ScanParams{DPI: 1, Width: 1, Height: 1, Format: usbsim.FormatGray8}), usbsim.ErrCodeBadParams},
		{usbsim.StartScanCommand(usbsim.ScanParams{DPI: 300, Width: 1, Height: 1, Format: 99}), usbsim.ErrCodeBadParams},
	} {
		require.NoError(t, h.send(c.cmd), "a refused command is still acknowledged")
		e := h.event()
		assert.Equal(t, usbsim.EventError, e.Kind, "cmd %x", c.cmd)
		assert.Equal(t, c.code, e.Code, "cmd %x", c.cmd)
	}

	// Start while a job is active: busy. The host does not read the image.
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	assert.Equal(t, usbsim.EventJobStarted, h.event().Kind)
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	e := h.event()
	assert.Equal(t, usbsim.EventError, e.Kind)
	assert.Equal(t, uint8(usbsim.ErrCodeBusy), e.Code)
	assert.Equal(t, uint32(1), e.Job)

	s.PressButton(3)
	e = h.event()
	assert.Equal(t, usbsim.EventButton, e.Kind)
	assert.Equal(t, uint8(3), e.Code)
	assert.Equal(t, usbsim.StateScanning, e.State)

	// The image is still intact when read late.
	require.Equal(t, usbsim.ExpectedImage(p), h.readImage(p.ImageSize()))
	assert.Equal(t, usbsim.EventJobDone, h.event().Kind)
}

func TestAbortFlushes(t *testing.T) {
	s := newScanner(t, usbsim.Config{MaxTransfer: 8 << 10})
	h := openHost(t, s)
	p := usbsim.ScanParams{DPI: 300, Width: 2000, Height: 2000, Format: usbsim.FormatRGB24, Seed: 9}
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	require.Equal(t, usbsim.ExpectedImage(p)[:3*h.in.MaxTransfer], h.readImage(int64(3*h.in.MaxTransfer)))

	require.NoError(t, h.send(usbsim.AbortCommand()))
	st := h.status() // skips JobStarted and JobAborted
	assert.Equal(t, usbsim.StateIdle, st.State)
	stale := h.flush()
	assert.Less(t, int64(stale), p.ImageSize()/2, "abort discards the unsent image")
	assert.False(t, readable(t, h.in.FD, 50*time.Millisecond), "nothing after the flush marker")

	// The next scan starts clean.
	p2 := usbsim.ScanParams{DPI: 300, Width: 300, Height: 200, Format: usbsim.FormatGray8, Seed: 10}
	require.NoError(t, h.send(usbsim.StartScanCommand(p2)))
	require.Equal(t, usbsim.ExpectedImage(p2), h.readImage(p2.ImageSize()))

	// Abort when idle still sends the marker.
	require.NoError(t, h.send(usbsim.AbortCommand()))
	assert.Equal(t, 0, h.flush())
}

func TestLatency(t *testing.T) {
	const lat = 50 * time.Millisecond
	s := newScanner(t, usbsim.Config{Latency: lat})
	h := openHost(t, s)
	start := time.Now()
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("x"))))
	_, err := h.read()
	require.NoError(t, err)
	// The OUT reply and the IN message each wait the latency.
	assert.GreaterOrEqual(t, time.Since(start), 2*lat)

	// A change applies to a wait in progress.
	s.SetLatency(time.Hour)
	start = time.Now()
	require.NoError(t, writeOut(h.out.FD, usbsim.StatusCommand()))
	h.seq++
	assert.False(t, readable(t, h.out.FD, quiet), "reply before the latency")
	s.SetLatency(0)
	assert.True(t, readable(t, h.out.FD, patience), "reply after the latency was lifted")
	seq, err := readReply(h.out.FD)
	require.NoError(t, err)
	assert.Equal(t, h.seq, seq)
	assert.Less(t, time.Since(start), patience)
}

func TestBandwidth(t *testing.T) {
	const bw = 1 << 20 // 1 MiB/s
	s := newScanner(t, usbsim.Config{MaxTransfer: 16 << 10})
	h := openHost(t, s)
	s.SetBandwidth(bw)
	p := usbsim.ScanParams{DPI: 300, Width: 512, Height: 512, Format: usbsim.FormatGray8, Seed: 11} // 256 KiB
	start := time.Now()
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	img := h.readImage(p.ImageSize())
	elapsed := time.Since(start)
	require.Equal(t, usbsim.ExpectedImage(p), img)
	assert.GreaterOrEqual(t, elapsed, time.Duration(p.ImageSize())*time.Second/bw)

	// A slow cap applies to waits in progress and lifting it resumes.
	s.SetBandwidth(1)
	require.NoError(t, writeOut(h.out.FD, usbsim.EchoCommand([]byte("slow"))))
	h.seq++
	assert.False(t, readable(t, h.out.FD, quiet), "a 6-byte message at 1 B/s was answered early")
	s.SetBandwidth(0)
	require.True(t, readable(t, h.out.FD, patience))
	seq, err := readReply(h.out.FD)
	require.NoError(t, err)
	assert.Equal(t, h.seq, seq)
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "slow", string(b))
}

func TestStallIn(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	h := openHost(t, s)
	// Pending readers each get a stall.
	const readers = 8
	errs := pendingReads(t, h.in.FD, h.in.MaxTransfer, readers, func() {
		require.NoError(t, s.Stall(usbsim.AddrBulkIn))
	})
	for i := range readers {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, usbsim.ErrStall)
		case <-time.After(patience):
			t.Fatalf("only %d of %d pending reads completed", i, readers)
		}
	}
	// And so does every later read.
	for i := range 20 {
		_, err := h.read()
		require.ErrorIs(t, err, usbsim.ErrStall, "read %d", i)
	}

	// Data queued while halted waits for ClearHalt, which also discards the
	// stall messages not read yet.
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("after"))))
	require.NoError(t, s.ClearHalt(usbsim.AddrBulkIn))
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "after", string(b))
	assert.False(t, readable(t, h.in.FD, 50*time.Millisecond))

	// Interrupt IN stalls the same way.
	require.NoError(t, s.Stall(usbsim.AddrInterruptIn))
	s.PressButton(1)
	buf := make([]byte, h.intr.MaxTransfer)
	require.True(t, readable(t, h.intr.FD, patience))
	_, err = readIn(h.intr.FD, buf)
	require.ErrorIs(t, err, usbsim.ErrStall)
	require.NoError(t, s.ClearHalt(usbsim.AddrInterruptIn))
	assert.Equal(t, usbsim.EventButton, h.event().Kind)

	require.Error(t, s.Stall(0x05), "unknown endpoint")
}

func TestStallOut(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	h := openHost(t, s)
	require.NoError(t, s.Stall(usbsim.AddrBulkOut))
	for range 3 {
		require.ErrorIs(t, h.send(usbsim.EchoCommand([]byte("lost"))), usbsim.ErrStall)
	}
	require.NoError(t, s.ClearHalt(usbsim.AddrBulkOut))
	require.NoError(t, h.send(usbsim.EchoCommand([]byte("kept"))))
	b, err := h.read()
	require.NoError(t, err)
	assert.Equal(t, "kept", string(b), "stalled OUT messages were not acted on")
}

// pendingReads starts n blocked readers on fd, runs trigger once they are
// (most likely) blocked, and returns their errors.
func pendingReads(t *testing.T, fd, size, n int, trigger func()) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	var started sync.WaitGroup
	for range n {
		started.Add(1)
		go func() {
			buf := make([]byte, size)
			started.Done()
			_, err := readIn(fd, buf)
			errs <- err
		}()
	}
	started.Wait()
	time.Sleep(20 * time.Millisecond) // let them block; correctness does not depend on it
	trigger()
	return errs
}

func TestHangAfter(t *testing.T) {
	s := newScanner(t, usbsim.Config{MaxTransfer: 4096})
	h := openHost(t, s)
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 100, Format: usbsim.FormatGray8, Seed: 12}
	const at = 10000 // not a multiple of MaxTransfer: the message is cut
	s.HangAfter(at)
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	first := h.readImage(at)
	assert.False(t, readable(t, h.in.FD, quiet), "data after the hang point")

	// A pending read stays pending until Resume, then completes.
	done := make(chan []byte, 1)
	go func() {
		buf := make([]byte, h.in.MaxTransfer)
		n, err := readIn(h.in.FD, buf)
		if err != nil {
			n = 0
		}
		done <- buf[:n]
	}()
	select {
	case <-done:
		t.Fatal("a read completed while the device hangs")
	case <-time.After(quiet):
	}
	s.Resume()
	var next []byte
	select {
	case next = <-done:
	case <-time.After(patience):
		t.Fatal("the read did not complete after Resume")
	}
	require.NotEmpty(t, next)
	rest := h.readImage(p.ImageSize() - at - int64(len(next)))
	img := append(append(first, next...), rest...)
	require.Equal(t, usbsim.ExpectedImage(p), img)
}

func TestHangThenAbort(t *testing.T) {
	s := newScanner(t, usbsim.Config{MaxTransfer: 4096})
	h := openHost(t, s)
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 1000, Format: usbsim.FormatGray8, Seed: 13}
	s.HangAfter(5000)
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	h.readImage(5000)

	// A hung device answers no OUT message either.
	require.NoError(t, writeOut(h.out.FD, usbsim.AbortCommand()))
	h.seq++
	assert.False(t, readable(t, h.out.FD, quiet), "reply from a hung device")
	s.Resume()
	require.True(t, readable(t, h.out.FD, patience))
	seq, err := readReply(h.out.FD)
	require.NoError(t, err)
	assert.Equal(t, h.seq, seq)
	h.flush()

	p2 := usbsim.ScanParams{DPI: 300, Width: 100, Height: 10, Format: usbsim.FormatGray8, Seed: 14}
	require.NoError(t, h.send(usbsim.StartScanCommand(p2)))
	require.Equal(t, usbsim.ExpectedImage(p2), h.readImage(p2.ImageSize()))

	// Hang with nothing in flight: events stop too.
	s.Hang()
	s.PressButton(2)
	for readable(t, h.intr.FD, 0) {
		h.event() // events queued before the hang
	}
	assert.False(t, readable(t, h.intr.FD, quiet), "event from a hung device")
	s.Resume()
	e := h.event()
	for e.Kind != usbsim.EventButton {
		e = h.event()
	}
	assert.Equal(t, uint8(2), e.Code)
}

func TestUnplug(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	h := openHost(t, s)
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 1000, Format: usbsim.FormatGray8, Seed: 15}

	// Pending: 4 reads on bulk IN, 3 on interrupt IN, 1 OUT reply.
	const readers = 8
	errs := make(chan error, readers)
	var started sync.WaitGroup
	read := func(f func() error) {
		started.Add(1)
		go func() { started.Done(); errs <- f() }()
	}
	for range 4 {
		read(func() error { _, err := readIn(h.in.FD, make([]byte, h.in.MaxTransfer)); return err })
	}
	for range 3 {
		read(func() error { _, err := readIn(h.intr.FD, make([]byte, h.intr.MaxTransfer)); return err })
	}
	s.Hang() // so the OUT message below gets no reply
	require.NoError(t, writeOut(h.out.FD, usbsim.StartScanCommand(p)))
	read(func() error { _, err := readReply(h.out.FD); return err })
	started.Wait()
	time.Sleep(20 * time.Millisecond)

	require.NoError(t, s.Unplug())
	for i := range readers {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, usbsim.ErrNoDevice, "pending reader %d", i)
		case <-time.After(patience):
			t.Fatalf("only %d of %d pending reads completed", i, readers)
		}
	}
	select {
	case err := <-errs:
		t.Fatalf("an extra completion: %v", err)
	default:
	}

	// Later transfers fail at once.
	_, err := readIn(h.in.FD, h.buf)
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
	_, err = readReply(h.out.FD)
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
	for range 2 {
		assert.ErrorIs(t, writeOut(h.out.FD, usbsim.StatusCommand()), usbsim.ErrNoDevice)
	}
	_, err = s.Endpoints()
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
	assert.ErrorIs(t, s.Stall(usbsim.AddrBulkIn), usbsim.ErrNoDevice)
	assert.ErrorIs(t, s.ClearHalt(usbsim.AddrBulkIn), usbsim.ErrNoDevice)
	require.NoError(t, s.Unplug(), "unplugging twice")

	// Replug: new fds, a fresh idle device (no hang), a working scan.
	require.NoError(t, s.Replug())
	h2 := openHost(t, s)
	assert.NotEqual(t, h.in.FD, h2.in.FD)
	st := h2.status()
	assert.Equal(t, usbsim.StateIdle, st.State)
	require.NoError(t, h2.send(usbsim.StartScanCommand(p)))
	require.Equal(t, usbsim.ExpectedImage(p), h2.readImage(p.ImageSize()))

	// Unplug with unread data: the host reads no stale data, only the end.
	require.NoError(t, h2.send(usbsim.EchoCommand([]byte("stale"))))
	require.True(t, readable(t, h2.in.FD, patience))
	require.NoError(t, s.Unplug())
	_, err = readIn(h2.in.FD, h2.buf)
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
}

func TestCloseLeaksNothing(t *testing.T) {
	// Warm up what the runtime opens once (the netpoller's epoll fd).
	warm, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	require.NoError(t, warm.Close())
	before, err := fdcheck.Take()
	require.NoError(t, err)

	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 256 << 10})
	require.NoError(t, err)
	h := openHost(t, s)
	p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 1000, Format: usbsim.FormatRGB24, Seed: 16}
	require.NoError(t, h.send(usbsim.StartScanCommand(p)))
	_, err = h.read()
	require.NoError(t, err)
	require.NoError(t, s.Unplug())
	require.NoError(t, s.Replug())
	h = openHost(t, s)
	require.NoError(t, h.send(usbsim.StartScanCommand(p))) // the device blocks on a full socket
	require.NoError(t, s.Stall(usbsim.AddrInterruptIn))    // stall messages queued
	s.SetLatency(time.Hour)
	require.NoError(t, writeOut(h.out.FD, usbsim.StatusCommand()))
	pending := make(chan error, 1) // a host waiting for the reply
	go func() { _, err := readReply(h.out.FD); pending <- err }()
	open, err := fdcheck.Opened(before)
	require.NoError(t, err)
	assert.NotEmpty(t, open, "the scanner's and the host's fds")
	time.Sleep(50 * time.Millisecond) // let the read block

	require.NoError(t, s.Close())
	select {
	case err := <-pending:
		// ErrNoDevice when the read was pending; EBADF if the goroutine
		// had not reached it before Close on a loaded machine.
		assert.Error(t, err)
	case <-time.After(patience):
		t.Fatal("Close left a host read pending")
	}
	fdcheck.Verify(t, before, "the scanner opened, after Close,")
	goleak.VerifyNone(t)

	assert.ErrorIs(t, s.Close(), usbsim.ErrClosed)
	assert.ErrorIs(t, s.Replug(), usbsim.ErrClosed)
	assert.ErrorIs(t, s.Unplug(), usbsim.ErrClosed)
	_, err = s.Endpoints()
	assert.ErrorIs(t, err, usbsim.ErrClosed)
	assert.ErrorIs(t, s.Stall(usbsim.AddrBulkIn), usbsim.ErrClosed)
	s.Hang() // setters are harmless after Close
	s.Resume()
	s.PressButton(1)
}

// TestFaultsConcurrently drives faults from several goroutines during scans
// (under -race): the device must neither deadlock nor corrupt data.
func TestFaultsConcurrently(t *testing.T) {
	s := newScanner(t, usbsim.Config{MaxTransfer: 8 << 10})
	h := openHost(t, s)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				s.SetLatency(0)
				return
			default:
			}
			s.SetLatency(time.Duration(i%3) * 100 * time.Microsecond)
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				s.SetBandwidth(0)
				return
			default:
			}
			s.SetBandwidth(64 << 20)
			time.Sleep(time.Millisecond)
			s.SetBandwidth(0)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s.PressButton(uint8(i))
			time.Sleep(500 * time.Microsecond)
		}
	}()
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	for i := range rounds {
		p := usbsim.ScanParams{DPI: 300, Width: 300 + uint32(i), Height: 100, Format: usbsim.FormatRGB24, Seed: uint64(i)}
		require.NoError(t, h.send(usbsim.StartScanCommand(p)))
		require.Equal(t, usbsim.ExpectedImage(p), h.readImage(p.ImageSize()), "round %d", i)
		for readable(t, h.intr.FD, 0) {
			h.event()
		}
	}
	close(stop)
	wg.Wait()
}

func TestHostFDIsBlockingSeqpacket(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	h := openHost(t, s)
	for _, ep := range []usbsim.Endpoint{h.out, h.in, h.intr} {
		typ, err := unix.GetsockoptInt(ep.FD, unix.SOL_SOCKET, unix.SO_TYPE)
		require.NoError(t, err)
		assert.Equal(t, unix.SOCK_SEQPACKET, typ)
		fl, err := unix.FcntlInt(uintptr(ep.FD), unix.F_GETFL, 0)
		require.NoError(t, err)
		assert.Zero(t, fl&unix.O_NONBLOCK, "endpoint %#x is blocking", ep.Address)
	}
	assert.True(t, h.in.IsIn())
	assert.False(t, h.out.IsIn())
	assert.Equal(t, usbsim.EndpointInterrupt, h.intr.Type)
	info := s.Info()
	assert.Equal(t, uint16(usbsim.DefaultVendorID), info.VendorID)
	assert.Equal(t, uint16(usbsim.DefaultProductID), info.ProductID)
	assert.NotEmpty(t, info.Serial)
}

// A Config out of range is refused with an error wrapping ioring.ErrInvalid
// that names the field, before anything is made.
func TestConfigRefused(t *testing.T) {
	for _, cfg := range []usbsim.Config{
		{MaxTransfer: 1},
		{MaxTransfer: usbsim.EventSize - 1},
		{MaxTransfer: -1},
		{MaxTransfer: usbsim.MaxMaxTransfer + 1},
		{Latency: -time.Millisecond},
		{Bandwidth: -1},
	} {
		_, err := usbsim.NewScanner(cfg)
		require.ErrorIs(t, err, ioring.ErrInvalid, "%+v", cfg)
		if cfg.MaxTransfer != 0 {
			assert.ErrorContains(t, err, "MaxTransfer", "%+v", cfg)
		}
	}
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: usbsim.EventSize})
	require.NoError(t, err)
	require.NoError(t, s.Close())
}
