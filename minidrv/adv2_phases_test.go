package minidrv_test

// Adversarial tests at the seam between the minidriver and the USB layer:
// a cancel in each phase of an acquisition (the pre-scan
// resynchronization, the start command, the stream), cancels racing an
// unplug and each other, a ring shared with another device, and the
// errors an acquisition ended by its context carries.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv2Settled waits until the driver's ring has no request in flight: every
// transfer of the acquisition and of the recovery after it completed.
func (r *rig) adv2Settled() {
	r.t.Helper()
	assert.Eventually(r.t, func() bool { return r.ring.InFlight() == 0 }, 10*time.Second, time.Millisecond,
		"requests still in flight on the driver's ring: %d", r.ring.InFlight())
}

// adv2StartAtZero starts an acquisition in a goroutine; zero is closed at
// its first progress report (0%, before anything reaches the device).
func (r *rig) adv2StartAtZero(ctx context.Context) (s *chunkSink, zero <-chan struct{}, res <-chan error) {
	s = &chunkSink{}
	z := make(chan struct{})
	ch := make(chan error, 1)
	var once sync.Once
	go func() {
		ch <- r.d.AcquireItemData(ctx, r.bed, s, func(minidrv.Progress) bool {
			once.Do(func() { close(z) })
			return true
		})
	}()
	return s, z, ch
}

// adv2CancelPending waits until the acquisition has I/O pending on the
// hung device, outside its stream, then calls CancelPendingIO and checks
// what it promises: it returns nil, well before the device's recovery
// could (abort is the recovery's per-step bound), with the driver Locked;
// the acquisition returns ErrCanceled with nothing in the sink.
func (r *rig) adv2CancelPending(zero <-chan struct{}, res <-chan error, s *chunkSink, abort time.Duration) {
	r.t.Helper()
	select {
	case <-zero:
	case err := <-res:
		r.t.Fatalf("acquisition returned before its first report: %v", err)
	}
	require.Eventually(r.t, func() bool { return r.ring.InFlight() > 0 }, 10*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the device withholds its answer
	require.False(r.t, minidrv.Streaming(r.d), "the acquisition reached its stream on a hung device")
	assert.Equal(r.t, minidrv.Transferring, r.d.State())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	require.NoError(r.t, r.d.CancelPendingIO(ctx))
	took := time.Since(t0)
	assert.Equal(r.t, minidrv.Locked, r.d.State(), "state when CancelPendingIO returned")
	assert.Less(r.t, took, abort/2, "CancelPendingIO waited for the device")
	err := waitErr(r.t, res)
	require.ErrorIs(r.t, err, minidrv.ErrCanceled)
	require.ErrorIs(r.t, err, ioring.ErrCanceled)
	assert.Zero(r.t, s.Len(), "image bytes from a scan canceled before its stream")
}

// TestAdv2CancelDuringStartCommand: CancelPendingIO while the start
// command waits for the hung device's acceptance (the acquisition is past
// its 0% report, not yet streaming). It returns at once with the driver
// Locked and the acquisition canceled; the start command the device may
// still run is the recovery's to undo, and once the device answers again
// the next acquisition is exact. Nothing stays in flight on the ring.
func TestAdv2CancelDuringStartCommand(t *testing.T) {
	const abort = 4 * time.Second
	r := newRig(t, minidrv.Config{AbortTimeout: abort})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	r.small(256, 256, 4096)
	r.sc.Hang()
	s, zero, res := r.adv2StartAtZero(ctx)
	r.adv2CancelPending(zero, res, s, abort)
	r.sc.Resume() // the device takes the start command now, and the abort after it
	s2, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s2)
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.adv2Settled()
}

// TestAdv2CancelDuringPreScanResync: after a suspend and resume the
// driver resynchronizes the device before the next scan, under the
// acquisition's token. A CancelPendingIO while that resynchronization
// waits for the hung device returns at once (not after AbortTimeout),
// Locked, the acquisition canceled with nothing in the sink; the device,
// still unsynchronized, is resynchronized before the next scan, which is
// exact.
func TestAdv2CancelDuringPreScanResync(t *testing.T) {
	const abort = 6 * time.Second
	r := newRig(t, minidrv.Config{AbortTimeout: abort})
	ctx := context.Background()
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
	require.NoError(t, r.d.Lock(ctx))
	r.small(256, 256, 4096)
	before := r.sc.LastScan()
	r.sc.Hang()
	s, zero, res := r.adv2StartAtZero(ctx)
	r.adv2CancelPending(zero, res, s, abort)
	assert.Equal(t, before, r.sc.LastScan(), "a scan started on the device after a cancel in the resynchronization")
	r.sc.Resume()
	s2, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s2)
	r.adv2Settled()
}

// TestAdv2AcquireContextErrors: docs/contract.md ("Contexts follow one
// rule", which the contract says every layer keeps, a minidrv acquisition
// included): wherever a context is accepted, its deadline ends the request
// with ErrTimeout and its cancel with ErrCanceled, the context's own error
// reachable with errors.Is in both cases, and a context that has already
// ended starts nothing. AcquireItemData keeps minidrv.ErrCanceled (S_FALSE)
// for both, which is right, but must let the caller tell a deadline from
// a cancel: ioring.ErrTimeout and context.DeadlineExceeded for the
// deadline, context.Canceled for the cancel.
func TestAdv2AcquireContextErrors(t *testing.T) {
	r, _ := slowRig(t, minidrv.Config{})
	r.sc.SetBandwidth(256 << 10) // 256 KiB: about a second
	bg := context.Background()

	t.Run("deadline mid-stream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(bg, 150*time.Millisecond)
		defer cancel()
		_, err := r.acquire(ctx, nil)
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		assert.ErrorIs(t, err, ioring.ErrTimeout, "a deadline is a timeout: %v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the context's error: %v", err)
		assert.Equal(t, minidrv.Locked, r.d.State())
	})
	t.Run("cancel mid-stream", func(t *testing.T) {
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		_, err := r.acquire(ctx, func(p minidrv.Progress) bool {
			if p.Bytes > 0 {
				cancel()
			}
			return true
		})
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		assert.NotErrorIs(t, err, ioring.ErrTimeout)
		assert.ErrorIs(t, err, context.Canceled, "the context's error: %v", err)
		assert.Equal(t, minidrv.Locked, r.d.State())
	})
	t.Run("deadline passed", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(bg, time.Now().Add(-time.Second))
		defer cancel()
		// Wait for the recovery of the cancels above, so that the error is
		// the ended context's and not ErrNotRecovered.
		require.NoError(t, r.d.Unlock())
		lctx, lcancel := context.WithTimeout(bg, 10*time.Second)
		require.NoError(t, r.d.Lock(lctx))
		lcancel()
		_, err := r.acquire(ctx, nil)
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		assert.ErrorIs(t, err, ioring.ErrTimeout, "a deadline is a timeout: %v", err)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the context's error: %v", err)
	})
}

// TestAdv2UnplugRacesCancelPendingIO: mid-stream, the scanner is unplugged
// while two goroutines call CancelPendingIO and a third sends
// EventCancelIO. Every call returns nil; the acquisition ends canceled or
// offline (the USB stack's ErrNoDevice inside), never as a communication
// failure; the driver settles in Removed (its transfers, or its recovery,
// find the device gone); and once the scanner is back and the arrival
// told, it scans exactly. Nothing stays in flight.
func TestAdv2UnplugRacesCancelPendingIO(t *testing.T) {
	for round := range 6 {
		r, p := slowRig(t, minidrv.Config{AbortTimeout: answerWithin})
		ctx := context.Background()
		s, started, res := r.startAcquire(ctx)
		select {
		case <-started:
		case err := <-res:
			t.Fatalf("round %d: acquisition ended before its first chunk: %v", round, err)
		}
		var wg sync.WaitGroup
		ops := []func(){
			func() { assert.NoError(t, r.sc.Unplug()) },
			func() { assert.NoError(t, r.d.CancelPendingIO(ctx)) },
			func() { assert.NoError(t, r.d.CancelPendingIO(ctx)) },
			func() { assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO)) },
		}
		for i := range ops {
			wg.Go(ops[(i+round)%len(ops)])
		}
		advWithin(t, 10*time.Second, "the racing calls", wg.Wait)
		err := waitErr(t, res)
		switch {
		case errors.Is(err, minidrv.ErrCanceled):
		case errors.Is(err, minidrv.ErrOffline):
			assert.ErrorIs(t, err, usb.ErrNoDevice)
		default:
			t.Fatalf("round %d: acquisition: %v", round, err)
		}
		r.expectPrefix(s, minidrv.ChunkSize(p))
		if r.d.State() == minidrv.Locked {
			require.NoError(t, r.d.Unlock())
		}
		require.Eventually(t, func() bool { return r.d.State() == minidrv.Removed }, 10*time.Second, time.Millisecond,
			"round %d: state %v after the unplug", round, r.d.State())
		require.NoError(t, r.sc.Replug())
		require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
		require.Equal(t, minidrv.Idle, r.d.State())
		require.NoError(t, r.d.Lock(ctx))
		r.advExact()
		r.adv2Settled()
		r.close()
	}
}

// TestAdv2SharedRingCancelIsolated: the driver shares its ring with
// another Device (Config.Ring: "other users may share the ring"). The
// driver's CancelPendingIO mid-stream cancels its own transfers only: the
// other device's pending transfer stays pending, and completes with its
// data afterwards; the driver's next acquisition is exact.
func TestAdv2SharedRingCancelIsolated(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	other, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
	require.NoError(t, err)
	defer other.Close()
	od, err := usbsim.Open(r.ring, other)
	require.NoError(t, err)
	defer func() { assert.NoError(t, od.Close()) }()
	oin, err := od.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	oout, err := od.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	obuf := make([]byte, 4096)
	oq, err := oin.Start(obuf, usb.Xfer{})
	require.NoError(t, err)

	ctx := context.Background()
	s, started, res := r.startAcquire(ctx)
	<-started
	require.NoError(t, r.d.CancelPendingIO(ctx))
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
	r.expectPrefix(s, minidrv.ChunkSize(p))
	select {
	case <-time.After(200 * time.Millisecond):
	case <-done(oq):
		t.Fatal("the driver's cancel completed another device's transfer")
	}
	n, err := oout.Transfer(ctx, usbsim.EchoCommand([]byte("other")))
	require.NoError(t, err)
	require.Equal(t, 6, n)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := oq.Wait(wctx)
	require.NoError(t, err)
	require.NoError(t, c.Err)
	assert.Equal(t, "other", string(obuf[:c.N]))
	r.advExact()
	r.adv2Settled()
}

// done returns a channel closed once q has completed (its Wait returned).
// The waiting goroutine is the only waiter of q.
func done(q ioring.Request) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for q.Pending() {
			time.Sleep(time.Millisecond)
		}
	}()
	return ch
}
