//go:build cgo && linux

package minidrv_test

// The driver on a real Linux USB host stack: usbsim's scanner served as a
// FunctionFS gadget on dummy_hcd inside the usbvm guest (go test -exec
// usbvm-exec), opened with usb.Open (libusb). Outside the guest every test
// skips with usbvm's reason.

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// gadgetSeq names each gadget uniquely (configfs directory, serial number).
var gadgetSeq atomic.Int32

// gadgetAbortTimeout bounds the abort and flush after a cancel on the
// gadget: under TCG a bulk transfer through dummy_hcd takes a millisecond
// or more, and a flush reads packet by packet.
const gadgetAbortTimeout = 2 * time.Second

// newGadgetRig is a rig whose scanner is served as a USB gadget and opened
// through usb.Open on the default backend; cfg's Ring and Open are filled
// in. It skips outside the guest.
func newGadgetRig(t *testing.T, cfg minidrv.Config, sim usbsim.Config) *rig {
	t.Helper()
	return newGadgetRigOn(t, cfg, sim, false)
}

// newGadgetRigOn is newGadgetRig with options for usb.Open (a backend);
// with hotplug, the driver follows the kernel's uevents for the gadget's
// vendor and product (minidrv.WatchUSB on the rig's ring).
func newGadgetRigOn(t *testing.T, cfg minidrv.Config, sim usbsim.Config, hotplug bool, opts ...usb.Option) *rig {
	t.Helper()
	usbvm.RequireGuest(t)
	name := fmt.Sprintf("minidrv%d", gadgetSeq.Add(1))
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{Name: name, SerialNumber: name, Product: "usbsim scanner"})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, g.Close()) }) // after the rig's
	sim.Serial = name
	sc, err := usbsim.ServeGadget(g, sim)
	require.NoError(t, err)
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		_ = sc.Close()
		require.NoError(t, err)
	}
	cfg.Ring = ring
	cfg.Open = gadgetOpener(ring, g, opts...)
	if hotplug {
		cfg.Hotplug = minidrv.WatchUSB(ring, usb.HotplugFilter{VendorID: g.Config.VendorID, ProductID: g.Config.ProductID})
	}
	if cfg.AbortTimeout == 0 {
		cfg.AbortTimeout = gadgetAbortTimeout
	}
	d, err := minidrv.New(cfg)
	require.NoError(t, err)
	r := &rig{t: t, ring: ring, sc: sc, d: d}
	t.Cleanup(r.close)
	require.NoError(t, d.Initialize(context.Background()))
	root, err := d.Items()
	require.NoError(t, err)
	r.bed = root.Find("Flatbed")
	require.NotNil(t, r.bed)
	return r
}

// gadgetOpener returns a Config.Open that waits until the host side has
// enumerated g (a replug takes a moment) and opens it with usb.Open.
func gadgetOpener(ring *ioring.Ring, g *usbvm.Gadget, opts ...usb.Option) func(context.Context) (*usb.Device, error) {
	return func(ctx context.Context) (*usb.Device, error) {
		for {
			host, err := g.HostDevice(ctx)
			if err != nil {
				return nil, err
			}
			dev, err := usb.Open(ring, g.Config.VendorID, g.Config.ProductID,
				append([]usb.Option{usb.WithBusAddr(host.Bus, host.Dev), usb.WithZeroPacket()}, opts...)...)
			if !errors.Is(err, usb.ErrNotFound) {
				return dev, err
			}
			// Gone again between the enumeration and the open: look again.
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// TestGadgetAcquire: whole images byte for byte, a CancelPendingIO in the
// middle of a stream, and whole images again.
func TestGadgetAcquire(t *testing.T) {
	r := newGadgetRig(t, minidrv.Config{}, usbsim.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))

	// 153600 bytes: two full 64 KiB messages and one of 44 packets, which
	// the device ends with a zero-length packet that the driver, asking
	// for exactly the image, does not read. The next acquisition skips it.
	r.small(512, 300, 16384)
	for range 2 {
		s, err := r.acquire(ctx, nil)
		require.NoError(t, err)
		r.expectImage(s)
	}

	// About a second of data at 1 MB/s: canceled mid-stream.
	p := r.small(1000, 1000, 16384)
	r.sc.SetBandwidth(1 << 20)
	s, started, res := r.startAcquire(ctx)
	select {
	case <-started:
	case err := <-res:
		t.Fatalf("acquisition ended before its first chunk: %v", err)
	}
	t0 := time.Now()
	require.NoError(t, r.d.CancelPendingIO(ctx))
	t.Logf("CancelPendingIO mid-stream returned after %v (every transfer completed; the abort and flush follow)", time.Since(t0))
	assert.Equal(t, minidrv.Locked, r.d.State(), "unwound when CancelPendingIO returned")
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrCanceled)
	assert.NotErrorIs(t, err, minidrv.ErrDeviceCommunication, "the device answered the abort in time")
	assert.Less(t, int64(s.Len()), p.ImageSize(), "canceled mid-stream")
	r.expectPrefix(s, minidrv.ChunkSize(p))

	// The next acquisitions get no stale byte.
	r.sc.SetBandwidth(0)
	for _, wh := range [][2]int{{1000, 1000}, {640, 480}} {
		r.small(wh[0], wh[1], 65536)
		s, err = r.acquire(ctx, nil)
		require.NoError(t, err)
		r.expectImage(s)
	}
	require.NoError(t, r.d.Unlock())
}

// TestGadgetHungDevice: a device that stops answering mid-image does not
// hang the caller: CancelPendingIO returns once the transfers have
// completed, without waiting for the abort the device does not answer (the
// recovery runs after), and the next acquisition, after the device wakes
// up, waits for that recovery and is exact.
func TestGadgetHungDevice(t *testing.T) {
	r := newGadgetRig(t, minidrv.Config{}, usbsim.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(512, 512, 8192)
	const cut = 100000 // 12 chunks of 8 KiB and 1696 bytes
	r.sc.HangAfter(cut)
	s, _, res := r.startAcquire(ctx)
	require.Eventually(t, func() bool { return s.Len() >= cut/8192*8192 }, 10*time.Second, time.Millisecond,
		"the first %d bytes of the image", cut)
	time.Sleep(50 * time.Millisecond) // the last 1696 bytes, then the device hangs
	t0 := time.Now()
	require.NoError(t, r.d.CancelPendingIO(ctx))
	took := time.Since(t0)
	t.Logf("CancelPendingIO on a hung device returned after %v", took)
	assert.Less(t, took, gadgetAbortTimeout/2, "cancel of a hung device waited for the device")
	assert.Equal(t, minidrv.Locked, r.d.State())
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrCanceled)
	r.expectPrefix(s, minidrv.ChunkSize(p))

	r.sc.Resume()
	s, err = r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// TestGadgetUnplugReplug: the device unplugged mid-acquisition ends it
// with ErrOffline (the USB stack's ErrNoDevice inside) and the driver
// Removed; replugged, EventDeviceConnected reopens it and the next
// acquisition is exact.
func TestGadgetUnplugReplug(t *testing.T) {
	r := newGadgetRig(t, minidrv.Config{}, usbsim.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	err := r.unplugMidAcquisition(ctx, 1000, 1000, 16384)
	assert.Contains(t, err.Error(), "no device")
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline, "Lock while Removed")

	require.NoError(t, r.sc.Replug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	r.sc.SetBandwidth(0)
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// TestGadgetCancelPendingIO measures CancelPendingIO on the real USB stack,
// on each backend: from the call until it returns (every transfer of the
// acquisition completed, the driver Locked again), mid-stream and on a
// device that stopped answering (HangAfter: the gadget NAKs once it has
// sent part of the image). It logs the figures; timing targets live in
// BenchmarkCancelPendingIO, on the simulator.
func TestGadgetCancelPendingIO(t *testing.T) {
	for _, backend := range []string{"usbfs", "libusb"} {
		t.Run("backend="+backend, func(t *testing.T) {
			r := newGadgetRigOn(t, minidrv.Config{QueueDepth: 8}, usbsim.Config{}, false, usb.WithBackend(backend))
			ctx := context.Background()
			require.NoError(t, r.d.Lock(ctx))
			p := r.small(1000, 1000, 16384)
			n := 20
			if testing.Short() {
				n = 5
			}
			chunk := minidrv.ChunkSize(p)
			const cut = 3*16384 + 1000 // the device hangs after 3 chunks and a bit of the 4th
			for _, hung := range []bool{false, true} {
				h := latstat.New()
				for range n {
					r.sc.SetBandwidth(1 << 20)
					if hung {
						// The previous cancel's recovery reads what the device
						// had queued: armed before it ends, the cut would count
						// those bytes and hang the device mid-recovery. Lock
						// waits for the recovery.
						require.NoError(t, r.d.Unlock())
						require.NoError(t, r.d.Lock(ctx))
						r.sc.HangAfter(cut)
					}
					s, started, res := r.startAcquire(ctx)
					select {
					case <-started:
					case err := <-res:
						t.Fatalf("acquisition ended before its first chunk: %v", err)
					}
					if hung {
						require.Eventually(t, func() bool { return s.Len() >= cut/chunk*chunk }, 10*time.Second, time.Millisecond,
							"the first %d bytes of the image", cut)
						time.Sleep(20 * time.Millisecond) // the rest of the cut, then the device hangs
					}
					t0 := time.Now()
					require.NoError(t, r.d.CancelPendingIO(ctx))
					took := time.Since(t0)
					h.Record(took)
					assert.Less(t, took, gadgetAbortTimeout/2, "CancelPendingIO waited for the device")
					assert.Equal(t, minidrv.Locked, r.d.State())
					if hung {
						r.sc.Resume()
					}
					require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
					r.expectPrefix(s, chunk)
				}
				what := "mid-stream"
				if hung {
					what = "hung device"
				}
				t.Logf("backend=%s CancelPendingIO %s, %d pending, %d runs: p50 %v, p99 %v, max %v",
					backend, what, r.d.QueueDepth(), n, h.Quantile(0.50), h.Quantile(0.99), h.Max())
			}
			// The recoveries left the device clean.
			r.sc.SetBandwidth(0)
			s, err := r.acquire(ctx, nil)
			require.NoError(t, err)
			r.expectImage(s)
		})
	}
}
