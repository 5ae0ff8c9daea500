//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

// Tests against a real Linux USB stack: they run inside the usbvm guest
// (go test -exec usbvm-exec), where a FunctionFS gadget on dummy_hcd is the
// device and this package is the host. Outside it they skip.

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/ioring"
)

// opensDevices: usbfs opens devices on this platform.
const opensDevices = true

// startTestEnv starts the gadget I/O threads in the usbvm guest.
func startTestEnv() (stop func()) {
	if !usbvm.InGuest() {
		return func() {}
	}
	return startGadgetIO(4)
}

// backends returns the ioring backends to run a guest test on: both, or
// the one CANCELIO_BACKEND names.
func backends(tb testing.TB) []ioring.Backend {
	if s := os.Getenv("CANCELIO_BACKEND"); s != "" {
		b, err := ioring.ParseBackend(s)
		require.NoError(tb, err)
		if b != ioring.BackendAuto {
			return []ioring.Backend{b}
		}
	}
	return []ioring.Backend{ioring.BackendURing, ioring.BackendPoll}
}

// forEachBackend runs f as one subtest per backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b ioring.Backend)) {
	usbvm.RequireGuest(t)
	for _, b := range backends(t) {
		t.Run("backend="+b.String(), func(t *testing.T) { f(t, b) })
	}
}

// rig is a plugged gadget, a ring and the gadget opened on the host side
// with interface 0 claimed.
type rig struct {
	g              *usbvm.Gadget
	hd             *usbvm.HostDevice
	r              *ioring.Ring
	d              *Device
	in, out, intr  *Endpoint
	plugAndOpenDur time.Duration
}

var gadgetSerial atomic.Int32

func newRig(tb testing.TB, b ioring.Backend, cfg Config) *rig {
	tb.Helper()
	start := time.Now()
	fdcheck.Check(tb) // its cleanup runs last, once the others closed what they own
	x := &rig{}
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{SerialNumber: fmt.Sprintf("usbfs%d", gadgetSerial.Add(1))})
	require.NoError(tb, err)
	x.g = g
	tb.Cleanup(func() { assert.NoError(tb, g.Close()) })
	require.NoError(tb, g.Plug())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x.hd, err = g.HostDevice(ctx)
	require.NoError(tb, err)

	x.r, err = ioring.New(ioring.Config{Entries: 64, Backend: b})
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if err := x.r.Close(); err != nil {
			assert.ErrorIs(tb, err, ioring.ErrClosed)
		}
	})
	cfg.Ring = x.r
	x.d, err = OpenBus(x.hd.Bus, x.hd.Dev, cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if err := x.d.Close(); err != nil {
			assert.ErrorIs(tb, err, ErrClosed)
		}
	})
	require.NoError(tb, x.d.Claim(0, true))

	// The endpoints' addresses come from the descriptors the host sees
	// (the device controller assigns them). usbvm's sysfs view may still
	// miss an endpoint right after enumeration: it is not consulted here.
	info := x.d.Info()
	cfg1, ok := info.Config(1)
	require.True(tb, ok, "configuration 1")
	for _, want := range []struct {
		ep  **Endpoint
		typ TransferType
		in  bool
	}{{&x.in, Bulk, true}, {&x.out, Bulk, false}, {&x.intr, Interrupt, true}} {
		for _, e := range cfg1.Interfaces[0].AltSettings[0].Endpoints {
			if e.Type() == want.typ && e.In() == want.in {
				*want.ep, err = x.d.Endpoint(e.Address)
				require.NoError(tb, err)
				break
			}
		}
		require.NotNil(tb, *want.ep, "%v in=%v endpoint in the descriptors", want.typ, want.in)
	}
	x.plugAndOpenDur = time.Since(start)
	return x
}

type ioResult struct {
	n   int
	buf []byte
	err error
}

// gadgetJob is one read or write on a gadget endpoint file.
type gadgetJob struct {
	f     *os.File
	buf   []byte
	write bool
	done  chan ioResult
}

// gadgetJobs feeds the gadget I/O threads (startGadgetIO).
var gadgetJobs = make(chan gadgetJob)

// startGadgetIO starts the threads that do the gadget side's endpoint I/O,
// and returns a function that stops them. It must run before any ring
// exists: FunctionFS fails a read or write interrupted by a signal with
// EINTR even when part of it was transferred, and os.File retries EINTR
// from the start (a write sends its first URBs' worth twice, a read loses
// it). io_uring's task work interrupts the thread that submitted a request
// the same way (TIF_NOTIFY_SIGNAL, without IORING_SETUP_COOP_TASKRUN), so
// the gadget's I/O runs on threads locked before any submission, with every
// signal blocked, that never run anything else.
func startGadgetIO(n int) (stop func()) {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go gadgetWorker(&wg)
	}
	return func() {
		close(gadgetJobs)
		wg.Wait()
	}
}

func gadgetWorker(wg *sync.WaitGroup) {
	defer wg.Done()
	runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	sigErr := unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
	for j := range gadgetJobs {
		if sigErr != nil {
			j.done <- ioResult{err: sigErr}
			continue
		}
		rc, err := j.f.SyscallConn()
		if err != nil {
			j.done <- ioResult{err: err}
			continue
		}
		var n int
		var ioErr error
		err = rc.Control(func(fd uintptr) {
			if j.write {
				n, ioErr = unix.Write(int(fd), j.buf)
			} else {
				n, ioErr = unix.Read(int(fd), j.buf)
			}
		})
		if err == nil {
			err = ioErr
		}
		j.done <- ioResult{n: n, buf: j.buf[:max(n, 0)], err: err}
	}
}

// gadgetIO runs one read or write on a gadget I/O thread.
func gadgetIO(f *os.File, buf []byte, write bool) (int, error) {
	done := make(chan ioResult, 1)
	gadgetJobs <- gadgetJob{f: f, buf: buf, write: write, done: done}
	r := <-done
	return r.n, r.err
}

// gadgetWrite writes b to the gadget's endpoint file f (the host reads it)
// in the background.
func gadgetWrite(f *os.File, b []byte) <-chan ioResult {
	ch := make(chan ioResult, 1)
	go func() {
		n, err := gadgetIO(f, b, true)
		ch <- ioResult{n: n, err: err}
	}()
	return ch
}

// gadgetRead reads up to n bytes from the gadget's endpoint file f (what
// the host wrote) in the background.
func gadgetRead(f *os.File, n int) <-chan ioResult {
	ch := make(chan ioResult, 1)
	go func() {
		buf := make([]byte, n)
		n, err := gadgetIO(f, buf, false)
		ch <- ioResult{n: n, buf: buf[:max(n, 0)], err: err}
	}()
	return ch
}

func wait[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		tb.Fatalf("%s: nothing after 20 s", what)
		panic("unreachable")
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// reapAll takes n completions from r, failing after 20 s, then checks that
// no other arrives.
func reapAll(tb testing.TB, r *ioring.Ring, n int) []ioring.Completion {
	tb.Helper()
	var got []ioring.Completion
	deadline := time.Now().Add(20 * time.Second)
	buf := make([]ioring.Completion, n)
	for len(got) < n && time.Now().Before(deadline) {
		k, _ := r.Reap(buf[:n-len(got)], 100*time.Millisecond)
		got = append(got, buf[:k]...)
	}
	require.Len(tb, got, n, "completions")
	k, _ := r.Reap(buf[:1], 50*time.Millisecond)
	require.Zero(tb, k, "a completion beyond the %d expected", n)
	return got
}

func TestGuestList(t *testing.T) {
	usbvm.RequireGuest(t)
	x := newRig(t, ioring.BackendAuto, Config{})
	devs, err := List()
	require.NoError(t, err)
	var found *DeviceInfo
	for i := range devs {
		t.Logf("%v: configs %d", devs[i].String(), len(devs[i].Configs))
		if devs[i].Bus == x.hd.Bus && devs[i].Address == x.hd.Dev {
			found = &devs[i]
		}
	}
	require.NotNil(t, found, "the gadget among %d devices", len(devs))
	cfg := x.g.Config
	assert.Equal(t, cfg.VendorID, found.VendorID)
	assert.Equal(t, cfg.ProductID, found.ProductID)
	assert.Equal(t, cfg.VendorID, found.Descriptor.VendorID)
	assert.Equal(t, cfg.Manufacturer, found.Manufacturer)
	assert.Equal(t, cfg.Product, found.Product)
	assert.Equal(t, cfg.SerialNumber, found.SerialNumber)
	assert.Equal(t, x.hd.DevNode, found.DevNode)
	assert.Equal(t, 1, found.ActiveConfig)
	c, ok := found.Config(1)
	require.True(t, ok)
	require.Len(t, c.Interfaces, 1)
	eps := c.Interfaces[0].AltSettings[0].Endpoints
	require.Len(t, eps, len(x.hd.Endpoints))
	for _, he := range x.hd.Endpoints {
		var e EndpointDescriptor
		for _, e = range eps {
			if e.Address == he.Address {
				break
			}
		}
		assert.Equal(t, he.Address, e.Address, "endpoint %#02x in the descriptors", he.Address)
		assert.Equal(t, he.Type, sysfsType(e.Type()), "sysfs spells the type")
		assert.Equal(t, he.MaxPacket, e.PacketSize())
	}
	caps := x.d.Capabilities()
	t.Logf("capabilities %v, largest URB %d bytes; plug+enumerate+open %v", caps, x.d.MaxURBSize(), x.plugAndOpenDur)
	assert.True(t, caps.Has(CapNoPacketSizeLimit|CapBulkContinuation|CapReapAfterDisconnect|CapZeroPacket), "%v", caps)

	d2, err := OpenVIDPID(cfg.VendorID, cfg.ProductID, Config{Ring: x.r})
	require.NoError(t, err)
	assert.Equal(t, x.hd.DevNode, d2.Info().DevNode)
	require.NoError(t, d2.Close())
	assert.ErrorIs(t, d2.Close(), ErrClosed, "second Close")
}

// Transfers of many sizes, both directions, short and zero-length packets,
// completing through Reap (Submit) and Wait (Transfer).
func TestGuestTransfers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		ctx := context.Background()

		// Host to device. A transfer that is a multiple of the packet size
		// ends with a zero-length packet, or the gadget's read would wait
		// for more.
		for _, n := range []int{0, 1, 100, 511, 512, 513, 4096, 5000, 65536, 200000} {
			msg := random(n)
			got := gadgetRead(x.g.BulkOut, 256<<10)
			req, err := x.out.Submit(msg, TransferOptions{User: n, ZeroPacket: n%512 == 0 && n > 0})
			require.NoError(t, err, "OUT %d", n)
			c := reapAll(t, x.r, 1)[0]
			assert.Equal(t, req, c.Req)
			assert.Equal(t, n, c.User)
			require.NoError(t, c.Err, "OUT %d", n)
			assert.Equal(t, n, c.N, "OUT %d: bytes sent", n)
			r := wait(t, got, "gadget read")
			require.NoError(t, r.err)
			assert.True(t, bytes.Equal(msg, r.buf), "OUT %d: gadget got %d bytes", n, r.n)
		}

		// Device to host: sent bytes into a buffer of size buf. A short
		// packet, a zero-length packet or a full buffer ends the transfer.
		for _, c := range []struct{ sent, buf int }{
			{1, 512}, {100, 4096}, {512, 512}, {0, 512}, {511, 65536}, {5000, 16384}, {65536, 65536}, {100000, 262144},
		} {
			msg := random(c.sent)
			sent := gadgetWrite(x.g.BulkIn, msg)
			buf := make([]byte, c.buf)
			n, err := x.in.Read(ctx, buf)
			require.NoError(t, err, "IN %d into %d", c.sent, c.buf)
			assert.Equal(t, c.sent, n, "IN %d into %d", c.sent, c.buf)
			assert.True(t, bytes.Equal(msg, buf[:n]), "IN %d into %d: data", c.sent, c.buf)
			require.NoError(t, wait(t, sent, "gadget write").err)
		}

		// Interrupt IN.
		msg := random(10)
		sent := gadgetWrite(x.g.IntrIn, msg)
		buf := make([]byte, 64)
		n, err := x.intr.Read(ctx, buf)
		require.NoError(t, err)
		assert.Equal(t, msg, buf[:n])
		require.NoError(t, wait(t, sent, "gadget interrupt write").err)
	})
}

// Transfers larger than a URB are split, chained by BULK_CONTINUATION: a
// short packet in the middle ends the whole transfer.
func TestGuestSplitTransfers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{MaxURBSize: legacyURBSize})
		require.Equal(t, legacyURBSize, x.d.MaxURBSize())
		ctx := context.Background()
		for _, c := range []struct{ sent, buf int }{{40000, 65536}, {65536, 65536}, {16384, 65536}, {100, 65536}} {
			msg := random(c.sent)
			sent := gadgetWrite(x.g.BulkIn, msg)
			if c.sent%512 == 0 && c.sent < c.buf {
				// A full packet does not end a transfer: send a zero-length one.
				sent = func(first <-chan ioResult) <-chan ioResult {
					ch := make(chan ioResult, 1)
					go func() {
						r := <-first
						if r.err == nil {
							_, r.err = gadgetIO(x.g.BulkIn, nil, true)
						}
						ch <- r
					}()
					return ch
				}(sent)
			}
			buf := make([]byte, c.buf)
			n, err := x.in.Read(ctx, buf)
			require.NoError(t, err, "IN %d into %d", c.sent, c.buf)
			assert.Equal(t, c.sent, n, "IN %d into %d", c.sent, c.buf)
			assert.True(t, bytes.Equal(msg, buf[:n]), "IN %d into %d: data", c.sent, c.buf)
			require.NoError(t, wait(t, sent, "gadget write").err)

			// The endpoint is whole again: the next transfer is not
			// swallowed by the continuation's cancel.
			msg = random(33)
			sent = gadgetWrite(x.g.BulkIn, msg)
			n, err = x.in.Read(ctx, buf)
			require.NoError(t, err)
			assert.Equal(t, msg, buf[:n])
			require.NoError(t, wait(t, sent, "gadget write").err)
		}
		msg := random(50000)
		got := gadgetRead(x.g.BulkOut, 65536)
		n, err := x.out.Write(ctx, msg)
		require.NoError(t, err)
		assert.Equal(t, len(msg), n)
		r := wait(t, got, "gadget read")
		require.NoError(t, r.err)
		assert.True(t, bytes.Equal(msg, r.buf), "OUT 50000 split: gadget got %d bytes", r.n)
	})
}

// A pending bulk IN (the gadget sends nothing) is canceled at once.
func TestGuestCancelPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		for i := 0; i < 5; i++ {
			req, err := x.in.Submit(make([]byte, 4096), TransferOptions{Await: true})
			require.NoError(t, err)
			time.Sleep(5 * time.Millisecond) // in the host controller's queue
			start := time.Now()
			require.NoError(t, req.Cancel())
			c, err := req.Wait(context.Background())
			took := time.Since(start)
			require.NoError(t, err)
			require.ErrorIs(t, c.Err, ioring.ErrCanceled)
			assert.Zero(t, c.N)
			assert.Less(t, took, 5*time.Second)
			t.Logf("cancel to completion: %v", took)
			assert.ErrorIs(t, req.Cancel(), ioring.ErrNotFound, "cancel after completion")
		}

		// A context ending cancels a Read; a deadline gives ErrTimeout.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		n, err := x.in.Read(ctx, make([]byte, 512))
		assert.ErrorIs(t, err, ioring.ErrCanceled)
		assert.Zero(t, n)
		req, err := x.in.Submit(make([]byte, 512), TransferOptions{Deadline: 20 * time.Millisecond})
		require.NoError(t, err)
		c := reapAll(t, x.r, 1)[0]
		assert.Equal(t, req, c.Req)
		assert.ErrorIs(t, c.Err, ioring.ErrTimeout)

		// The endpoint still works.
		msg := random(77)
		sent := gadgetWrite(x.g.BulkIn, msg)
		buf := make([]byte, 512)
		n, err = x.in.Read(context.Background(), buf)
		require.NoError(t, err)
		assert.Equal(t, msg, buf[:n])
		require.NoError(t, wait(t, sent, "gadget write").err)
	})
}

// A transfer canceled after one packet of 4096 bytes reports that packet.
func TestGuestCancelMidTransfer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		buf := make([]byte, 4096)
		req, err := x.in.Submit(buf, TransferOptions{Await: true})
		require.NoError(t, err)
		msg := random(512)
		// The gadget's write returns once the host took the packet.
		require.NoError(t, wait(t, gadgetWrite(x.g.BulkIn, msg), "gadget write").err)
		require.NoError(t, req.Cancel())
		c, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ioring.ErrCanceled)
		require.Equal(t, 512, c.N, "bytes received before the cancel")
		assert.Equal(t, msg, buf[:512])
	})
}

// Eight transfers pending on a silent device, canceled by one token: each
// completes exactly once, with ErrCanceled.
func TestGuestCancelToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		tok := x.r.NewToken()
		eps := []*Endpoint{x.in, x.in, x.in, x.in, x.out, x.out, x.intr, x.intr}
		for i, e := range eps {
			buf := make([]byte, 1024)
			_, err := e.Submit(buf, TransferOptions{Token: tok, User: i})
			require.NoError(t, err)
		}
		assert.Equal(t, len(eps), tok.Pending())
		time.Sleep(10 * time.Millisecond)
		start := time.Now()
		require.NoError(t, tok.Cancel())
		seen := make([]int, len(eps))
		for _, c := range reapAll(t, x.r, len(eps)) {
			seen[c.User.(int)]++
			assert.ErrorIs(t, c.Err, ioring.ErrCanceled, "transfer %d", c.User)
			assert.Zero(t, c.N, "transfer %d", c.User)
		}
		t.Logf("token cancel of %d pending transfers: %v", len(eps), time.Since(start))
		for i, k := range seen {
			assert.Equal(t, 1, k, "completions of transfer %d", i)
		}
		// The token covers the future: nothing reaches the kernel.
		req, err := x.in.Submit(make([]byte, 512), TransferOptions{Token: tok, Await: true})
		require.NoError(t, err)
		c, err := req.Wait(context.Background())
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ioring.ErrCanceled)
	})
}

// With Config.Depth 1, one transfer of an endpoint is in the kernel and
// the others wait in order: canceling a waiting one completes it at once,
// ClearHalt refuses while any is pending, and the waiting ones reach the
// kernel, in order, as earlier ones complete.
func TestGuestDepth(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{Depth: 1})
		bufs := make([][]byte, 3)
		reqs := make([]ioring.Request, 3)
		for i := range reqs {
			bufs[i] = make([]byte, 512)
			var err error
			reqs[i], err = x.in.Submit(bufs[i], TransferOptions{Await: true})
			require.NoError(t, err)
		}
		assert.Equal(t, 3, x.in.Pending())
		x.d.mu.Lock()
		inKernel := len(x.d.inflight)
		x.d.mu.Unlock()
		assert.Equal(t, 1, inKernel, "URBs in the kernel at depth 1")
		assert.ErrorIs(t, x.in.ClearHalt(), ioring.ErrInvalid, "ClearHalt with transfers pending")

		// The second, waiting, is canceled without an ioctl.
		require.NoError(t, reqs[1].Cancel())
		c, err := reqs[1].Wait(context.Background())
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ioring.ErrCanceled)
		assert.Equal(t, 2, x.in.Pending())

		// Two messages: the first and the third transfer get one each, in
		// submission order.
		msgs := [][]byte{random(100), random(200)}
		for k, i := range []int{0, 2} {
			sent := gadgetWrite(x.g.BulkIn, msgs[k])
			c, err := reqs[i].Wait(context.Background())
			require.NoError(t, err)
			require.NoError(t, c.Err, "transfer %d", i)
			assert.Equal(t, msgs[k], bufs[i][:c.N], "transfer %d", i)
			require.NoError(t, wait(t, sent, "gadget write").err)
		}
		assert.Zero(t, x.in.Pending())
		assert.NoError(t, x.in.ClearHalt(), "nothing pending")
	})
}

// A halted IN endpoint fails with ErrStall; ClearHalt recovers it.
func TestGuestStall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		req, err := x.in.Submit(make([]byte, 512), TransferOptions{Await: true})
		require.NoError(t, err)
		// A read on an IN endpoint file makes FunctionFS halt it.
		r := wait(t, gadgetRead(x.g.BulkIn, 512), "gadget read on its IN endpoint")
		assert.Error(t, r.err, "FunctionFS halts the endpoint and fails the read (EBADMSG)")
		c, err := req.Wait(context.Background())
		require.NoError(t, err)
		require.ErrorIs(t, c.Err, ErrStall)
		_, err = x.in.Read(context.Background(), make([]byte, 512))
		require.ErrorIs(t, err, ErrStall, "still halted")

		require.NoError(t, x.in.ClearHalt())
		msg := random(300)
		sent := gadgetWrite(x.g.BulkIn, msg)
		buf := make([]byte, 512)
		n, err := x.in.Read(context.Background(), buf)
		require.NoError(t, err, "after ClearHalt")
		assert.Equal(t, msg, buf[:n])
		require.NoError(t, wait(t, sent, "gadget write").err)
	})
}

// Unplugged with eight transfers pending, each completes exactly once with
// ErrNoDevice, and later transfers fail the same way.
func TestGuestUnplug(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		eps := []*Endpoint{x.in, x.in, x.in, x.out, x.out, x.out, x.intr, x.intr}
		for i, e := range eps {
			_, err := e.Submit(make([]byte, 1024), TransferOptions{User: i})
			require.NoError(t, err)
		}
		time.Sleep(10 * time.Millisecond)
		start := time.Now()
		require.NoError(t, x.g.Unplug())
		seen := make([]int, len(eps))
		for _, c := range reapAll(t, x.r, len(eps)) {
			seen[c.User.(int)]++
			assert.ErrorIs(t, c.Err, ioring.ErrNoDevice, "transfer %d", c.User)
			assert.NotErrorIs(t, c.Err, ioring.ErrCanceled, "transfer %d", c.User)
		}
		t.Logf("unplug to the last of %d completions: %v", len(eps), time.Since(start))
		for i, k := range seen {
			assert.Equal(t, 1, k, "completions of transfer %d", i)
		}
		// Later transfers: refused up front, or (while usbcore catches up)
		// completed with ErrNoDevice.
		for i := 0; i < 3; i++ {
			n, err := x.in.Read(context.Background(), make([]byte, 512))
			assert.ErrorIs(t, err, ioring.ErrNoDevice, "transfer after the unplug")
			assert.Zero(t, n)
		}
		_, err := x.in.Submit(make([]byte, 512), TransferOptions{})
		assert.ErrorIs(t, err, ioring.ErrNoDevice, "refused once the device is known gone")
		assert.ErrorIs(t, x.in.ClearHalt(), ioring.ErrNoDevice)
		require.NoError(t, x.d.Close())
	})
}

// Close with transfers pending discards them, waits for their completions
// and stops the reaper; later calls fail with ErrClosed.
func TestGuestClose(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		for i := 0; i < 4; i++ {
			_, err := x.in.Submit(make([]byte, 512), TransferOptions{User: i})
			require.NoError(t, err)
		}
		_, err := x.out.Submit(random(100), TransferOptions{User: 4})
		require.NoError(t, err)
		require.NoError(t, x.d.Close())
		// Every completion was posted before Close returned.
		buf := make([]ioring.Completion, 8)
		n, err := x.r.Reap(buf, 0)
		require.NoError(t, err)
		require.Equal(t, 5, n, "completions queued when Close returned")
		for _, c := range buf[:n] {
			assert.ErrorIs(t, c.Err, ioring.ErrCanceled, "transfer %d", c.User)
		}
		// The reaper's poll request is gone too. The goroutine that took
		// its completion in (the fallback backend's worker) counts it out
		// a moment after the reaper's Wait may have returned it.
		assert.Eventually(t, func() bool { return x.r.InFlight() == 0 }, 10*time.Second, time.Millisecond,
			"the reaper's poll request is gone too")
		_, err = x.in.Submit(make([]byte, 512), TransferOptions{})
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, x.d.Close(), ErrClosed)
	})
}

// Closing the ring first: its Close cancels the transfers through their
// hooks, and the reaper, refused by the closed ring, polls the fd itself.
func TestGuestRingClosedFirst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b ioring.Backend) {
		x := newRig(t, b, Config{})
		for i := 0; i < 3; i++ {
			_, err := x.in.Submit(make([]byte, 512), TransferOptions{User: i})
			require.NoError(t, err)
		}
		require.NoError(t, x.r.Close())
		buf := make([]ioring.Completion, 4)
		n, _ := x.r.Reap(buf, 0)
		require.Equal(t, 3, n)
		for _, c := range buf[:n] {
			assert.ErrorIs(t, c.Err, ioring.ErrCanceled)
		}
		require.NoError(t, x.d.Close())
	})
}

// Control transfers on endpoint 0, alternate settings and a reset.
func TestGuestControl(t *testing.T) {
	usbvm.RequireGuest(t)
	x := newRig(t, ioring.BackendAuto, Config{})
	info := x.d.Info()
	// GET_DESCRIPTOR(STRING, iManufacturer, US English).
	buf := make([]byte, 255)
	n, err := x.d.Control(0x80, 6, 0x0300|uint16(info.Descriptor.Manufacturer), 0x0409, buf, time.Second)
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 2)
	var s []rune
	for i := 2; i+1 < n; i += 2 {
		s = append(s, rune(buf[i])|rune(buf[i+1])<<8)
	}
	assert.Equal(t, x.g.Config.Manufacturer, string(s))
	// GET_STATUS of the device: two bytes.
	n, err = x.d.Control(0x80, 0, 0, 0, buf[:2], 0)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	// An unknown descriptor type: the device stalls the request.
	_, err = x.d.Control(0x80, 6, 0x4200, 0, buf, time.Second)
	assert.ErrorIs(t, err, ErrStall)

	require.NoError(t, x.d.SetAltSetting(0, 0))
	require.NoError(t, x.d.Release(0))
	require.NoError(t, x.d.Claim(0, false))

	require.NoError(t, x.d.Reset())
	require.NoError(t, x.d.Claim(0, true), "claim after reset")
	// The device works after the reset; the gadget's first write may fail
	// while FunctionFS re-enables its endpoints.
	msg := random(64)
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent := gadgetWrite(x.g.BulkIn, msg)
		rb := make([]byte, 512)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		n, err = x.in.Read(ctx, rb)
		cancel()
		r := wait(t, sent, "gadget write")
		if err == nil && r.err == nil {
			assert.Equal(t, msg, rb[:n])
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reset: host %v, gadget %v", err, r.err)
		}
	}
}
