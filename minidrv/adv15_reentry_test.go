package minidrv_test

// Adversarial tests, round 15: user code (the progress callback, the sink,
// Config.Open) that calls back into the driver in the phases the earlier
// rounds did not reach: after a removal it sent itself, and while the
// driver reopens the device.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv15Prompt bounds a call that the state refuses: it must not wait for
// the device or for the acquisition that runs the caller.
const adv15Prompt = time.Second

// TestAdv15InitializeInRemovedFromCallback: the progress callback (or the
// sink) sends EventDeviceDisconnected, and then a client calls Initialize,
// which Removed refuses (the table: ErrOffline, "changes nothing"). The
// refusal must come at once, from the acquisition's own callback too (a
// call there cannot wait for the acquisition that runs it), and from
// another goroutine while the sink is blocked. Afterwards the driver comes
// back and scans exactly.
func TestAdv15InitializeInRemovedFromCallback(t *testing.T) {
	for _, inSink := range []bool{false, true} {
		name := "progress"
		if inSink {
			name = "sink"
		}
		t.Run(name, func(t *testing.T) {
			r, _ := slowRig(t, minidrv.Config{AbortTimeout: answerWithin})
			ctx := context.Background()
			var once sync.Once
			var initErr error
			var took time.Duration
			hit := func() {
				once.Do(func() {
					require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
					// Bounded, so that a wait shows up as a failure,
					// not as a test that hangs.
					ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
					defer cancel()
					t0 := time.Now()
					initErr = r.d.Initialize(ictx)
					took = time.Since(t0)
				})
			}
			s := &reentrantSink{inner: &chunkSink{}, f: func() {}}
			progress := func(minidrv.Progress) bool { return true }
			if inSink {
				s.f = hit
			} else {
				progress = func(pr minidrv.Progress) bool {
					if pr.Bytes > 0 {
						hit()
					}
					return true
				}
			}
			var err error
			advWithin(t, 15*time.Second, "AcquireItemData", func() { err = r.d.AcquireItemData(ctx, r.bed, s, progress) })
			require.ErrorIs(t, err, minidrv.ErrOffline)
			assert.ErrorIs(t, initErr, minidrv.ErrOffline, "Initialize in Removed")
			assert.Less(t, took, adv15Prompt, "Initialize in Removed waited for the acquisition that called it")
			require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, r.d.Lock(lctx))
			r.advExact()
		})
	}
}

// adv15BlockingSink blocks its second write until released.
type adv15BlockingSink struct {
	inner   chunkSink
	n       atomic.Int32
	blocked chan struct{}
	release chan struct{}
}

func (s *adv15BlockingSink) Write(b []byte) (int, error) {
	if s.n.Add(1) == 2 {
		close(s.blocked)
		<-s.release
	}
	return s.inner.Write(b)
}

// TestAdv15InitializeInRemovedWhileSinkBlocked: the device is removed
// (EventDeviceDisconnected) while the acquisition's sink is blocked in a
// write. A second client's Initialize, Lock and the rig's Uninitialize
// bounded by unwindWait aside, the calls that Removed refuses must say so
// at once: Lock does (ErrOffline); Initialize must too, instead of
// waiting for the stuck sink until its context ends and then reporting
// ErrBusy.
func TestAdv15InitializeInRemovedWhileSinkBlocked(t *testing.T) {
	r, _ := slowRig(t, minidrv.Config{AbortTimeout: answerWithin})
	ctx := context.Background()
	s := &adv15BlockingSink{blocked: make(chan struct{}), release: make(chan struct{})}
	res := make(chan error, 1)
	go func() { res <- r.d.AcquireItemData(ctx, r.bed, s, nil) }()
	select {
	case <-s.blocked:
	case err := <-res:
		t.Fatalf("acquisition ended before its second chunk: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no second chunk within 10s")
	}
	released := false
	defer func() {
		if !released {
			close(s.release)
		}
	}()
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	assert.Equal(t, minidrv.Removed, r.d.State())

	lctx, lcancel := context.WithTimeout(ctx, 3*time.Second)
	t0 := time.Now()
	assert.ErrorIs(t, r.d.Lock(lctx), minidrv.ErrOffline)
	assert.Less(t, time.Since(t0), adv15Prompt, "Lock in Removed")
	lcancel()

	ictx, icancel := context.WithTimeout(ctx, 3*time.Second)
	t0 = time.Now()
	ierr := r.d.Initialize(ictx)
	took := time.Since(t0)
	icancel()
	assert.ErrorIs(t, ierr, minidrv.ErrOffline, "Initialize in Removed: got %v", ierr)
	assert.Less(t, took, adv15Prompt, "Initialize in Removed waited for the blocked sink")

	close(s.release)
	released = true
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrOffline)
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	lctx, lcancel = context.WithTimeout(ctx, 10*time.Second)
	defer lcancel()
	require.NoError(t, r.d.Lock(lctx))
	r.advExact()
}

// TestAdv15OpenCallsUninitializeOnArrival: Config.Open calls the last
// Uninitialize when the device that was unplugged arrives again. The
// reopen holds the device, so the call cannot do its work: Uninitialize's
// documentation says it fails with ErrBusy at once (it first waited for
// the device the reopen holds, then failed). The driver comes back by
// itself, still initialized, and a later Uninitialize unloads it.
func TestAdv15OpenCallsUninitializeOnArrival(t *testing.T) {
	var dp atomic.Pointer[minidrv.Driver]
	var armed atomic.Bool
	type call struct {
		err  error
		took time.Duration
	}
	calls := make(chan call, 4)
	r := newSimRig(t, minidrv.Config{AbortTimeout: answerWithin}, usbsim.Config{}, withSimHotplug,
		func(_ *usbsim.Scanner, cfg *minidrv.Config) {
			open := cfg.Open
			cfg.Open = func(ctx context.Context) (*usb.Device, error) {
				if d := dp.Load(); d != nil && armed.CompareAndSwap(true, false) {
					t0 := time.Now()
					err := d.Uninitialize()
					calls <- call{err, time.Since(t0)}
				}
				return open(ctx)
			}
		})
	dp.Store(r.d)
	armed.Store(true)
	require.NoError(t, r.sc.Unplug())
	waitState(t, r.d, minidrv.Removed, replugWithin)
	require.NoError(t, r.sc.Replug())
	var c call
	select {
	case c = <-calls:
	case <-time.After(20 * time.Second):
		t.Fatal("the driver did not reopen the device within 20s")
	}
	assert.Less(t, c.took, adv15Prompt, "the last Uninitialize from Config.Open waited")
	assert.ErrorIs(t, c.err, minidrv.ErrBusy, "the last Uninitialize from Config.Open")
	waitState(t, r.d, minidrv.Idle, replugWithin)
	require.NoError(t, r.d.Uninitialize())
	assert.Equal(t, minidrv.Unloaded, r.d.State(), "driver state after the last Uninitialize")
}

// TestAdv15OpenCallsInitializeOnArrival: Config.Open, run as the driver
// reopens its device after an unplug (the hotplug watch's arrival), asks
// for one more client (Initialize). The driver is Removed, which refuses
// Initialize (ErrOffline): the call must say so at once, not wait for the
// device that its own caller holds until its context ends. The driver then
// comes back by itself and scans.
func TestAdv15OpenCallsInitializeOnArrival(t *testing.T) {
	var dp atomic.Pointer[minidrv.Driver]
	var armed atomic.Bool
	type call struct {
		err   error
		took  time.Duration
		state minidrv.State
	}
	calls := make(chan call, 4)
	r := newSimRig(t, minidrv.Config{AbortTimeout: answerWithin}, usbsim.Config{}, withSimHotplug,
		func(_ *usbsim.Scanner, cfg *minidrv.Config) {
			open := cfg.Open
			cfg.Open = func(ctx context.Context) (*usb.Device, error) {
				if d := dp.Load(); d != nil && armed.CompareAndSwap(true, false) {
					st := d.State()
					ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
					t0 := time.Now()
					err := d.Initialize(ictx)
					took := time.Since(t0)
					cancel()
					if err == nil {
						_ = d.Uninitialize() // not the last: the rig's client remains
					}
					calls <- call{err, took, st}
				}
				return open(ctx)
			}
		})
	dp.Store(r.d)
	armed.Store(true)
	require.NoError(t, r.sc.Unplug())
	waitState(t, r.d, minidrv.Removed, replugWithin)
	require.NoError(t, r.sc.Replug())
	var c call
	select {
	case c = <-calls:
	case <-time.After(20 * time.Second):
		t.Fatal("the driver did not reopen the device within 20s")
	}
	t.Logf("Initialize from Config.Open on the arrival (state %v): %v after %v", c.state, c.err, c.took)
	assert.Less(t, c.took, adv15Prompt, "Initialize from Config.Open waited for the reopening that called it")
	assert.ErrorIs(t, c.err, minidrv.ErrOffline, "Initialize in Removed")
	waitState(t, r.d, minidrv.Idle, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.d.Lock(ctx))
	r.advExact()
	require.NoError(t, r.d.Unlock())
}

// TestAdv15OpenCallsInitializeOnFirstOpen: Config.Open, run by the first
// Initialize (which holds the device), asks for one more client. The
// driver is not initialized yet, so that call would be a first Initialize
// of its own and wait for the device its caller holds: for ever with a
// context that does not end. It fails with ErrBusy at once instead, and
// the outer Initialize completes.
func TestAdv15OpenCallsInitializeOnFirstOpen(t *testing.T) {
	var dp atomic.Pointer[minidrv.Driver]
	var armed atomic.Bool
	inner := make(chan error, 1)
	r := newSimRig(t, minidrv.Config{AbortTimeout: answerWithin}, usbsim.Config{},
		func(_ *usbsim.Scanner, cfg *minidrv.Config) {
			open := cfg.Open
			cfg.Open = func(ctx context.Context) (*usb.Device, error) {
				if d := dp.Load(); d != nil && armed.CompareAndSwap(true, false) {
					inner <- d.Initialize(context.Background())
				}
				return open(ctx)
			}
		})
	dp.Store(r.d)
	require.NoError(t, r.d.Uninitialize())
	armed.Store(true)
	advWithin(t, 10*time.Second, "an Initialize whose Config.Open calls Initialize", func() {
		assert.NoError(t, r.d.Initialize(context.Background()))
	})
	assert.ErrorIs(t, <-inner, minidrv.ErrBusy, "the Initialize from Config.Open")
	assert.Equal(t, minidrv.Idle, r.d.State())
}
