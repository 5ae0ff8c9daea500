package minidrv_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// Where TestCancelRandomPoints cancels.
const (
	cancelNone        = iota // no cancel: the image must be exact
	cancelBeforeFirst        // progress says stop at 0%: nothing reaches the sink
	cancelMidStream          // another goroutine cancels after chunk k
	cancelLastByte           // another goroutine cancels when the last chunk is in
	cancelTimer              // another goroutine cancels after a random delay
	cancelInCallback         // CancelPendingIO from inside the progress callback
	numCancelPoints
)

// TestCancelRandomPoints runs 10,000 acquisitions (500 with -short)
// canceled at random points. After each one the driver is Locked, the sink
// holds whole chunks of the right image only (so no stale byte of an
// earlier scan came through), and a complete acquisition is exact.
func TestCancelRandomPoints(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 500
	}
	fds := openFDs(t)
	r := newRig(t, minidrv.Config{QueueDepth: 4})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(64, 64, 512) // 4096 bytes in 8 chunks
	chunk := minidrv.ChunkSize(p)
	require.Equal(t, 512, chunk)
	nchunks := int(p.ImageSize()) / chunk
	rng := rand.New(rand.NewPCG(1, 2))
	var outcomes [numCancelPoints][2]int // [point][canceled?]

	for i := range n {
		point := rng.IntN(numCancelPoints)
		k := rng.IntN(nchunks)
		delay := time.Duration(rng.IntN(300)) * time.Microsecond
		var wg sync.WaitGroup
		var after atomic.Int32 // the state when CancelPendingIO returned, -1 before
		after.Store(-1)
		cancel := func() {
			wg.Go(func() {
				assert.NoError(t, r.d.CancelPendingIO(ctx))
				after.Store(int32(r.d.State()))
			})
		}
		if point == cancelTimer {
			wg.Go(func() {
				time.Sleep(delay)
				cancel()
			})
		}
		s, err := r.acquire(ctx, func(pr minidrv.Progress) bool {
			switch point {
			case cancelBeforeFirst:
				return false
			case cancelMidStream:
				if pr.Bytes == int64(k*chunk) {
					cancel()
				}
			case cancelLastByte:
				if pr.Bytes == pr.Total {
					cancel()
				}
			case cancelInCallback:
				if pr.Bytes == int64(k*chunk) {
					assert.NoError(t, r.d.CancelPendingIO(ctx))
				}
			}
			return true
		})
		wg.Wait()
		require.Equal(t, minidrv.Locked, r.d.State(), "iteration %d point %d", i, point)
		// CancelPendingIO returned once unwound: Locked again. A timer
		// cancel that found nothing (it came before the transfer began,
		// and the acquisition then completed) may have returned just as
		// the acquisition moved on to Transferring.
		if st := after.Load(); st >= 0 && !(point == cancelTimer && err == nil) {
			assert.Equal(t, minidrv.Locked, minidrv.State(st), "iteration %d point %d: state when CancelPendingIO returned", i, point)
		}
		want := usbsim.ExpectedImage(s.scan)
		got := s.buf.Bytes()
		switch {
		case err == nil:
			require.True(t, bytes.Equal(want, got), "iteration %d point %d: complete image differs", i, point)
			require.NotEqual(t, cancelBeforeFirst, point)
			require.NotEqual(t, cancelInCallback, point)
			outcomes[point][0]++
		case errors.Is(err, minidrv.ErrCanceled):
			require.NotEqual(t, cancelNone, point, "iteration %d: %v", i, err)
			require.Zero(t, len(got)%chunk, "iteration %d point %d: %d bytes", i, point, len(got))
			require.True(t, bytes.Equal(want[:len(got)], got), "iteration %d point %d: sink bytes differ from the image", i, point)
			if point == cancelBeforeFirst {
				require.Empty(t, got)
			}
			outcomes[point][1]++
		default:
			require.NoError(t, err, "iteration %d point %d", i, point)
		}
	}
	// Every cancel point was hit, and a cancel at the last byte may lose.
	for point, o := range outcomes {
		assert.NotZero(t, o[0]+o[1], "cancel point %d never drawn", point)
	}
	assert.NotZero(t, outcomes[cancelMidStream][1], "no mid-stream cancel took effect")
	t.Logf("outcomes [complete canceled] per point: %v", outcomes)
	r.close()
	assert.Equal(t, fds, openFDs(t), "open fds before and after")
}

// modelHotplugWithin bounds, in TestModel's hotplug runs, how soon the
// driver follows an unplug or a replug while other goroutines load it with
// calls and faults: generous, on a loaded machine.
const modelHotplugWithin = 10 * time.Second

// model is what TestModel expects of the driver, updated by the goroutine
// that holds pnpMu.
type model struct {
	pnpMu     sync.Mutex // serializes plug and power changes, and the checks after them
	removed   bool       // guarded by pnpMu
	suspended bool       // guarded by pnpMu
	faults    atomic.Int64
}

// TestModel drives the driver from several goroutines with random calls,
// events and device faults, and checks outcomes and states against a
// simple model: every error is one a caller is promised, every image
// delivered is exact, every canceled one holds whole chunks of the right
// image, and the driver ends usable. The device's unplug and replug reach
// the driver as the application's PnP events (pnp=events), or through the
// driver's own hotplug watch of the simulator (pnp=hotplug), concurrently
// with everything else.
func TestModel(t *testing.T) {
	for _, hotplug := range []bool{false, true} {
		name := "pnp=events"
		if hotplug {
			name = "pnp=hotplug"
		}
		t.Run(name, func(t *testing.T) { testModel(t, hotplug) })
	}
}

func testModel(t *testing.T, hotplug bool) {
	ops := 300
	if testing.Short() {
		ops = 60
	}
	const workers = 4
	fds := openFDs(t)
	cfg := minidrv.Config{QueueDepth: 4, AbortTimeout: answerWithin, StallTimeout: answerWithin}
	var with []func(*usbsim.Scanner, *minidrv.Config)
	if hotplug {
		with = append(with, withSimHotplug)
	}
	r := newSimRig(t, cfg, usbsim.Config{}, with...)
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(128, 64, 1024)
	chunk := minidrv.ChunkSize(p)
	require.NoError(t, r.d.Unlock())
	var m model
	var acquired, canceled, failed atomic.Int64

	// allowed reports whether err is a promised outcome of a call.
	allowed := func(err error, also ...error) bool {
		if err == nil {
			return true
		}
		// ErrNotRecovered: the device's recovery after an acquisition that
		// ended early outlasted the call's context, or failed (a fault).
		for _, e := range append(also, minidrv.ErrOffline, minidrv.ErrNotLocked, minidrv.ErrBusy, minidrv.ErrNotRecovered) {
			if errors.Is(err, e) {
				return true
			}
		}
		return false
	}

	acquire := func(rng *rand.Rand) {
		stopAt := -1
		if rng.IntN(3) == 0 {
			stopAt = rng.IntN(101)
		}
		s := &chunkSink{sc: r.sc}
		err := r.d.AcquireItemData(ctx, r.bed, s, func(pr minidrv.Progress) bool {
			return pr.Percent < stopAt || stopAt < 0
		})
		got, scan := s.buf.Bytes(), s.scan
		switch {
		case err == nil:
			assert.True(t, bytes.Equal(usbsim.ExpectedImage(scan), got), "a complete image must be exact")
			acquired.Add(1)
		case errors.Is(err, minidrv.ErrCanceled):
			canceled.Add(1)
		default:
			assert.True(t, allowed(err, minidrv.ErrDeviceCommunication), "acquisition: %v", err)
			failed.Add(1)
		}
		if err != nil && scan.Width != 0 {
			assert.Zero(t, len(got)%chunk, "whole chunks only, got %d bytes", len(got))
			assert.True(t, bytes.Equal(usbsim.ExpectedImage(scan)[:len(got)], got), "the right image's bytes")
		}
		if errors.Is(err, minidrv.ErrDeviceCommunication) {
			assert.NotZero(t, m.faults.Load(), "a device error without a fault: %v", err)
		}
	}

	worker := func(seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 7))
		for range ops {
			switch op := rng.IntN(100); {
			case op < 35: // a WIA session
				lctx, cancel := context.WithTimeout(ctx, time.Duration(rng.IntN(50))*time.Millisecond)
				err := r.d.Lock(lctx)
				cancel()
				assert.True(t, allowed(err), "Lock: %v", err)
				if err != nil {
					continue
				}
				for range rng.IntN(3) + 1 {
					acquire(rng)
				}
				assert.True(t, allowed(r.d.Unlock()), "Unlock")
			case op < 55:
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				assert.NoError(t, r.d.CancelPendingIO(cctx))
				cancel()
			case op < 62:
				assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
			case op < 64:
				assert.ErrorIs(t, r.d.NotifyPnpEvent(minidrv.Event(100+rng.IntN(50))), minidrv.ErrInvalidEvent)
			case op < 72: // unplug and tell the driver (or let hotplug tell it)
				m.pnpMu.Lock()
				require.NoError(t, r.sc.Unplug())
				if hotplug {
					// A removal waits up to AbortTimeout for a transfer
					// to find the device gone.
					waitState(t, r.d, minidrv.Removed, modelHotplugWithin)
				} else {
					assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
				}
				assert.Equal(t, minidrv.Removed, r.d.State())
				m.removed = true
				m.pnpMu.Unlock()
			case op < 80 && hotplug: // plug in again: the driver comes back by itself
				m.pnpMu.Lock()
				require.NoError(t, r.sc.Replug())
				// Another worker may hang the device through the probe:
				// the arrival is tried again until it answers.
				waitUntil(t, r.d, func(s minidrv.State) bool { return s != minidrv.Removed }, modelHotplugWithin)
				m.removed = false
				m.pnpMu.Unlock()
			case op < 80: // plug in again
				m.pnpMu.Lock()
				require.NoError(t, r.sc.Replug())
				err := r.d.NotifyPnpEvent(minidrv.EventDeviceConnected)
				if err != nil {
					// Another worker may hang the device through the probe.
					assert.ErrorIs(t, err, minidrv.ErrOffline)
					assert.NotZero(t, m.faults.Load(), "reconnect failed without a fault: %v", err)
					if m.removed {
						assert.Equal(t, minidrv.Removed, r.d.State(), "a failed reconnect changes nothing")
					}
				} else {
					m.removed = false
					if !m.suspended {
						assert.NotEqual(t, minidrv.Removed, r.d.State())
					}
				}
				m.pnpMu.Unlock()
			case op < 85: // suspend or resume
				m.pnpMu.Lock()
				if m.suspended {
					assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
					m.suspended = false
					assert.NotEqual(t, minidrv.Suspended, r.d.State())
				} else {
					assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
					want := minidrv.Suspended
					if m.removed {
						want = minidrv.Removed
					}
					assert.Equal(t, want, r.d.State())
					m.suspended = !m.removed
				}
				m.pnpMu.Unlock()
			case op < 90: // a device that hangs for a while
				m.faults.Add(1)
				r.sc.Hang()
				time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
				r.sc.Resume()
			case op < 94:
				m.faults.Add(1)
				_ = r.sc.Stall(usbsim.AddrBulkIn)
			default:
				r.sc.SetLatency(time.Duration(rng.IntN(200)) * time.Microsecond)
			}
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { worker(uint64(w) + 1) })
	}
	wg.Wait()

	// Quiesce: the device back, the driver idle, and a clean image.
	r.sc.Resume()
	r.sc.SetLatency(0)
	require.NoError(t, r.sc.Replug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	require.NotEqual(t, minidrv.Removed, r.d.State())
	if r.d.State() == minidrv.Locked {
		require.NoError(t, r.d.Unlock())
	}
	require.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	for range 3 { // a stall left behind costs at most one acquisition
		s := &chunkSink{sc: r.sc}
		err := r.d.AcquireItemData(ctx, r.bed, s, func(pr minidrv.Progress) bool {
			return true
		})
		if err == nil {
			require.Equal(t, usbsim.ExpectedImage(s.scan), s.buf.Bytes())
			break
		}
		require.ErrorIs(t, err, minidrv.ErrDeviceCommunication)
	}
	require.NoError(t, r.d.Unlock())
	t.Logf("acquisitions: %d complete, %d canceled, %d failed; faults %d",
		acquired.Load(), canceled.Load(), failed.Load(), m.faults.Load())
	assert.NotZero(t, acquired.Load())
	r.close()
	assert.Equal(t, fds, openFDs(t), "open fds before and after")
}
