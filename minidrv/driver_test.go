package minidrv_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// rig is a driver over a simulated scanner, initialized and ready to lock.
type rig struct {
	t    testing.TB
	ring *ioring.Ring
	sc   *usbsim.Scanner
	d    *minidrv.Driver
	bed  *minidrv.Item
	done bool // closed
}

// answerWithin is an AbortTimeout (or StallTimeout) that a healthy
// simulated scanner always meets, on a loaded 2-core machine under the race
// detector: every probe of the device (the rig's Initialize, a Lock after a
// failed recovery, a reconnect) and every recovery step is bounded by
// AbortTimeout, and the gaps in a healthy stream by StallTimeout. Tests
// that want those bounds to run out on a hung device pay it once or twice.
const answerWithin = 2 * time.Second

// newRig makes a rig; cfg's Ring and Open are filled in. Cleanup undoes it.
func newRig(t testing.TB, cfg minidrv.Config) *rig {
	t.Helper()
	return newSimRig(t, cfg, usbsim.Config{})
}

// newSimRig is newRig with a scanner configured by sim; each of with may
// change cfg, knowing the scanner, before the driver is made (withHotplug).
func newSimRig(t testing.TB, cfg minidrv.Config, sim usbsim.Config, with ...func(*usbsim.Scanner, *minidrv.Config)) *rig {
	t.Helper()
	ring, err := ioring.New(ioring.Config{Entries: 256})
	require.NoError(t, err)
	sc, err := usbsim.NewScanner(sim)
	require.NoError(t, err)
	cfg.Ring = ring
	cfg.Open = minidrvtest.SimOpener(ring, sc)
	for _, f := range with {
		f(sc, &cfg)
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

func (r *rig) close() {
	if r.done {
		return
	}
	r.done = true
	r.sc.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.d.CancelPendingIO(ctx)
	for r.d.State() != minidrv.Unloaded {
		if err := r.d.Uninitialize(); err != nil && ctx.Err() != nil {
			r.t.Errorf("Uninitialize: %v", err)
			break
		}
	}
	assert.NoError(r.t, r.sc.Close())
	assert.NoError(r.t, r.ring.Close())
}

// small sets a small gray image of w×h and a chunk size.
func (r *rig) small(w, h, buf int) minidrv.Properties {
	r.t.Helper()
	require.NoError(r.t, r.d.WriteItemProperties(r.bed,
		minidrv.PropValue{ID: minidrv.PropXExtent, Value: w},
		minidrv.PropValue{ID: minidrv.PropYExtent, Value: h},
		minidrv.PropValue{ID: minidrv.PropBufferSize, Value: buf},
	))
	return r.d.Properties()
}

// acquire runs one acquisition into a fresh buffer.
func (r *rig) acquire(ctx context.Context, progress func(minidrv.Progress) bool) (*chunkSink, error) {
	s := &chunkSink{sc: r.sc}
	err := r.d.AcquireItemData(ctx, r.bed, s, progress)
	return s, err
}

// expectImage checks that s holds the whole image of the latest scan.
func (r *rig) expectImage(s *chunkSink) {
	r.t.Helper()
	want := usbsim.ExpectedImage(r.sc.LastScan())
	require.Equal(r.t, len(want), s.buf.Len(), "image length")
	require.True(r.t, bytes.Equal(want, s.buf.Bytes()), "image bytes differ from usbsim.ExpectedImage")
}

// expectPrefix checks that s holds whole chunks of the latest scan's image,
// from its start.
func (r *rig) expectPrefix(s *chunkSink, chunk int) {
	r.t.Helper()
	want := usbsim.ExpectedImage(r.sc.LastScan())
	got := s.buf.Bytes()
	require.LessOrEqual(r.t, len(got), len(want))
	if len(got) != len(want) {
		require.Zero(r.t, len(got)%chunk, "sink holds %d bytes: not whole chunks of %d", len(got), chunk)
	}
	for _, w := range s.writes[:max(len(s.writes)-1, 0)] {
		require.Equal(r.t, chunk, w, "a write that is not a whole chunk")
	}
	require.True(r.t, bytes.Equal(want[:len(got)], got), "sink bytes differ from the image")
}

// chunkSink records what it is given and the size of each write. With sc
// set, it learns at its first write which scan the data comes from: the
// job the simulated scanner runs then.
type chunkSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []int
	sc     *usbsim.Scanner
	scan   usbsim.ScanParams // the job of the first write's data, with sc
}

func (s *chunkSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sc != nil && len(s.writes) == 0 {
		s.scan = s.sc.LastScan()
	}
	s.writes = append(s.writes, len(b))
	return s.buf.Write(b)
}

func (s *chunkSink) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

func TestAcquireWhole(t *testing.T) {
	r := newRig(t, minidrv.Config{QueueDepth: 4})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(200, 300, 4096)
	chunk := minidrv.ChunkSize(p)
	assert.Equal(t, 4096, chunk)

	var reports []minidrv.Progress
	s, err := r.acquire(ctx, func(pr minidrv.Progress) bool {
		reports = append(reports, pr)
		return true
	})
	require.NoError(t, err)
	r.expectImage(s)
	assert.Equal(t, minidrv.Locked, r.d.State())

	require.GreaterOrEqual(t, len(reports), minidrv.MinProgressReports, "progress reports")
	assert.Equal(t, int64(0), reports[0].Bytes)
	last := reports[len(reports)-1]
	assert.Equal(t, 100, last.Percent)
	assert.Equal(t, p.ImageSize(), last.Bytes)
	for i := 1; i < len(reports); i++ {
		assert.GreaterOrEqual(t, reports[i].Percent, reports[i-1].Percent, "percent must not decrease")
		assert.Less(t, reports[i-1].Percent, 100, "100%% before the end")
	}

	// Twice more: nothing stale, every image exact.
	for range 2 {
		s, err = r.acquire(ctx, nil)
		require.NoError(t, err)
		r.expectImage(s)
	}
	require.NoError(t, r.d.Unlock())
	assert.Equal(t, minidrv.Idle, r.d.State())
}

// slowRig is a rig whose scanner sends about 1 MB/s, so a transfer of a
// 256 KiB image lasts a quarter of a second and cancels land mid-stream.
func slowRig(t *testing.T, cfg minidrv.Config) (*rig, minidrv.Properties) {
	r := newRig(t, cfg)
	require.NoError(t, r.d.Lock(context.Background()))
	p := r.small(512, 512, 8192)
	r.sc.SetBandwidth(1 << 20)
	return r, p
}

// startAcquire runs an acquisition in a goroutine; the channel gets its
// error. The first progress report is signalled on started.
func (r *rig) startAcquire(ctx context.Context) (s *chunkSink, started <-chan struct{}, res <-chan error) {
	s = &chunkSink{}
	st := make(chan struct{})
	ch := make(chan error, 1)
	var once sync.Once
	go func() {
		ch <- r.d.AcquireItemData(ctx, r.bed, s, func(pr minidrv.Progress) bool {
			if pr.Bytes > 0 {
				once.Do(func() { close(st) })
			}
			return true
		})
	}()
	return s, st, ch
}

// cancelHung starts an acquisition of a small image in 8 KiB chunks from a
// scanner that hangs mid-stream (after its first chunk, at most 100,000
// bytes into the image), cancels it once the device has hung and checks
// what such a cancel must give: CancelPendingIO returns with the driver
// Locked, the acquisition fails with ErrCanceled, and the sink holds whole
// chunks. It returns how long CancelPendingIO took and the acquisition's
// error. The driver must be Locked.
func (r *rig) cancelHung(ctx context.Context) (time.Duration, error) {
	r.t.Helper()
	p := r.small(512, 512, 8192)
	r.sc.HangAfter(100000) // the image cannot end before the hang
	s, started, res := r.startAcquire(ctx)
	<-started
	// Hung now, wherever the stream is: a device that had not yet
	// reached the 100,000 bytes would take the abort and recover.
	r.sc.Hang()
	t0 := time.Now()
	require.NoError(r.t, r.d.CancelPendingIO(ctx))
	took := time.Since(t0)
	assert.Equal(r.t, minidrv.Locked, r.d.State())
	err := waitErr(r.t, res)
	require.ErrorIs(r.t, err, minidrv.ErrCanceled)
	r.expectPrefix(s, minidrv.ChunkSize(p))
	return took, err
}

// unplugMidAcquisition starts an acquisition of a w×h image in chunks of
// buf bytes from a scanner sending about 1 MB/s, unplugs the scanner once
// the first chunk is in, and checks what every unplug mid-acquisition
// must give: the acquisition fails with ErrOffline, the USB stack's
// ErrNoDevice inside, the driver is Removed, and the sink holds whole
// chunks of the image. It returns the acquisition's error. The driver
// must be Locked.
func (r *rig) unplugMidAcquisition(ctx context.Context, w, h, buf int) error {
	r.t.Helper()
	p := r.small(w, h, buf)
	r.sc.SetBandwidth(1 << 20)
	s, started, res := r.startAcquire(ctx)
	select {
	case <-started:
	case err := <-res:
		r.t.Fatalf("acquisition ended before its first chunk: %v", err)
	}
	require.NoError(r.t, r.sc.Unplug())
	err := waitErr(r.t, res)
	require.ErrorIs(r.t, err, minidrv.ErrOffline)
	require.ErrorIs(r.t, err, usb.ErrNoDevice)
	r.t.Logf("acquisition after the unplug: %v", err)
	assert.Equal(r.t, minidrv.Removed, r.d.State())
	r.expectPrefix(s, minidrv.ChunkSize(p))
	return err
}

func waitErr(t testing.TB, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("acquisition did not return within 10s")
		return nil
	}
}

func TestCancelPendingIOMidStream(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	s, started, res := r.startAcquire(context.Background())
	<-started
	require.NoError(t, r.d.CancelPendingIO(context.Background()))
	// Returned when unwound: the driver is Locked again already.
	assert.Equal(t, minidrv.Locked, r.d.State())
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrCanceled)
	require.ErrorIs(t, err, ioring.ErrCanceled)
	assert.Equal(t, minidrv.HResultFalse, minidrv.HResult(err))
	assert.Less(t, int64(s.Len()), p.ImageSize(), "canceled mid-stream")
	r.expectPrefix(s, minidrv.ChunkSize(p))

	// The next acquisition gets no stale byte.
	r.sc.SetBandwidth(0)
	s2, err := r.acquire(context.Background(), nil)
	require.NoError(t, err)
	r.expectImage(s2)
}

func TestNotifyCancelIOReturnsAtOnce(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	s, started, res := r.startAcquire(context.Background())
	<-started
	t0 := time.Now()
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
	assert.Less(t, time.Since(t0), time.Second, "NotifyPnpEvent(EventCancelIO) must not wait")
	// Canceling while it unwinds, a second cancel is a no-op.
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.expectPrefix(s, minidrv.ChunkSize(p))
}

func TestCancelWhileIdleAndTwice(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	for _, st := range []minidrv.State{minidrv.Idle, minidrv.Locked} {
		if st == minidrv.Locked {
			require.NoError(t, r.d.Lock(ctx))
		}
		for range 2 {
			require.NoError(t, r.d.CancelPendingIO(ctx))
			require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
			assert.Equal(t, st, r.d.State(), "a cancel with nothing pending changes nothing")
		}
	}
	// The cancels left nothing behind: an acquisition runs to its end.
	r.small(100, 100, 1024)
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)

	// Twice in a row during a transfer, and from several goroutines.
	r.sc.SetBandwidth(1 << 20)
	r.small(512, 512, 8192)
	s, started, res := r.startAcquire(ctx)
	<-started
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 2 {
				assert.NoError(t, r.d.CancelPendingIO(ctx))
				assert.Equal(t, minidrv.Locked, r.d.State())
			}
		})
	}
	wg.Wait()
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
	r.expectPrefix(s, minidrv.ChunkSize(r.d.Properties()))
}

func TestCancelFromProgressCallback(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(300, 300, 1024)
	chunk := minidrv.ChunkSize(p)

	t.Run("return false", func(t *testing.T) {
		var after atomic.Int32
		stop := false
		s, err := r.acquire(ctx, func(pr minidrv.Progress) bool {
			if stop {
				after.Add(1) // no report after the cancel
			}
			stop = pr.Percent >= 30
			return !stop
		})
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		assert.Zero(t, after.Load())
		assert.Equal(t, minidrv.Locked, r.d.State())
		r.expectPrefix(s, chunk)
		assert.GreaterOrEqual(t, int64(s.Len())*100/p.ImageSize(), int64(30))
	})
	t.Run("CancelPendingIO inside", func(t *testing.T) {
		var calls atomic.Int32
		s, err := r.acquire(ctx, func(pr minidrv.Progress) bool {
			calls.Add(1)
			if pr.Percent >= 50 {
				// Must not deadlock on the unwinding that waits for us.
				assert.NoError(t, r.d.CancelPendingIO(ctx))
				assert.NoError(t, r.d.CancelPendingIO(ctx))
			}
			return true
		})
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		r.expectPrefix(s, chunk)
		assert.Less(t, int64(s.Len()), p.ImageSize())
	})
	t.Run("before the first transfer", func(t *testing.T) {
		s, err := r.acquire(ctx, func(minidrv.Progress) bool { return false })
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		assert.Zero(t, s.Len())
		assert.Equal(t, minidrv.Locked, r.d.State())
	})
	t.Run("context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		s, err := r.acquire(cctx, func(pr minidrv.Progress) bool {
			if pr.Percent >= 20 {
				cancel()
			}
			return true
		})
		require.ErrorIs(t, err, minidrv.ErrCanceled)
		r.expectPrefix(s, chunk)
	})
	// After all that, a clean image.
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// A device that hangs mid-scan must not hang the caller: CancelPendingIO
// returns once the transfers have completed, without waiting for the abort
// the device does not answer; the device's recovery runs after. The next
// acquisition waits for that recovery under its own context: with a short
// one it fails with ErrNotRecovered, and once the device answers again it
// gets an exact image.
func TestCancelHungDevice(t *testing.T) {
	const abort = 3 * time.Second // the recovery of a hung device takes 2×abort
	r := newRig(t, minidrv.Config{AbortTimeout: abort})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	took, err := r.cancelHung(ctx)
	assert.Less(t, took, abort/2, "CancelPendingIO waited for the device (%v)", took)
	require.ErrorIs(t, err, ioring.ErrCanceled)

	// Still hung and recovering: an acquisition with a short context
	// fails within it, with the documented error, and changes nothing.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = r.acquire(short, nil)
	require.ErrorIs(t, err, minidrv.ErrNotRecovered)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(t0), abort/2, "the acquisition did not give up with its context")
	assert.Equal(t, minidrv.Locked, r.d.State())

	// The device wakes up with the old job and the abort in its queues:
	// the next acquisition waits for the recovery, and its image is exact.
	r.sc.Resume()
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// A device that stays hung after a cancel does not recover: the next
// acquisition waits for the recovery and fails with ErrNotRecovered (a
// kind of ErrDeviceCommunication), staying Locked; so does a Lock after
// Unlock. Both resynchronize the device first, so once it answers again
// they succeed.
func TestNotRecovered(t *testing.T) {
	r := newRig(t, minidrv.Config{AbortTimeout: answerWithin})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	r.cancelHung(ctx)

	_, err := r.acquire(ctx, nil)
	require.ErrorIs(t, err, minidrv.ErrNotRecovered)
	require.ErrorIs(t, err, minidrv.ErrDeviceCommunication)
	assert.Equal(t, minidrv.HResult(minidrv.ErrDeviceCommunication), minidrv.HResult(err))
	assert.Equal(t, minidrv.Locked, r.d.State())

	require.NoError(t, r.d.Unlock())
	err = r.d.Lock(ctx)
	require.ErrorIs(t, err, minidrv.ErrNotRecovered)
	assert.Equal(t, minidrv.Idle, r.d.State(), "a refused Lock changes nothing")

	r.sc.Resume()
	require.NoError(t, r.d.Lock(ctx))
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// Cancels while the device recovers are harmless: they find nothing to
// cancel, return at once, and the recovery goes on to its end.
func TestCancelDuringRecovery(t *testing.T) {
	r := newRig(t, minidrv.Config{AbortTimeout: time.Second})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	r.cancelHung(ctx)
	// The recovery waits for the hung device's answer to its abort.
	for range 3 {
		require.NoError(t, r.d.CancelPendingIO(ctx))
		require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
		assert.Equal(t, minidrv.Locked, r.d.State())
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := r.acquire(short, nil)
	require.ErrorIs(t, err, minidrv.ErrNotRecovered, "the recovery still runs")
	r.sc.Resume()
	require.NoError(t, r.d.CancelPendingIO(ctx))
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

func TestStallTimeout(t *testing.T) {
	r := newRig(t, minidrv.Config{StallTimeout: answerWithin, AbortTimeout: answerWithin})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	r.small(512, 512, 8192)
	r.sc.HangAfter(30000)
	_, err := r.acquire(ctx, nil)
	require.ErrorIs(t, err, minidrv.ErrDeviceCommunication)
	assert.Contains(t, err.Error(), "no data from the device")
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.sc.Resume()
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

func TestStalledEndpoint(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	s, started, res := r.startAcquire(ctx)
	<-started
	require.NoError(t, r.sc.Stall(usbsim.AddrBulkIn))
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrDeviceCommunication)
	require.ErrorIs(t, err, usb.ErrStall)
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.expectPrefix(s, minidrv.ChunkSize(p))
	r.sc.SetBandwidth(0)
	s, err = r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

func TestUnplugDuringTransfer(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	s, started, res := r.startAcquire(ctx)
	<-started
	require.NoError(t, r.sc.Unplug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	assert.Equal(t, minidrv.Removed, r.d.State())
	r.expectPrefix(s, minidrv.ChunkSize(p))

	// Removed: calls are refused and change nothing.
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
	require.ErrorIs(t, r.d.Unlock(), minidrv.ErrOffline)
	_, err = r.acquire(ctx, nil)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	require.NoError(t, r.d.CancelPendingIO(ctx))
	// Connected while still unplugged: refused, still Removed.
	require.ErrorIs(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected), minidrv.ErrOffline)
	assert.Equal(t, minidrv.Removed, r.d.State())

	require.NoError(t, r.sc.Replug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	r.sc.SetBandwidth(0)
	s, err = r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// An unplug the driver learns of from its transfers alone.
func TestUnplugWithoutEvent(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	r.small(100, 100, 1024)
	require.NoError(t, r.sc.Unplug())
	_, err := r.acquire(ctx, nil)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	require.ErrorIs(t, err, usb.ErrNoDevice)
	assert.Equal(t, minidrv.Removed, r.d.State())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected)) // late: a no-op
	require.NoError(t, r.sc.Replug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	require.NoError(t, r.d.Lock(ctx))
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

// A disconnect event for a device that stayed: the driver keeps it.
func TestDisconnectEventOnly(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	s, started, res := r.startAcquire(ctx)
	<-started
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrOffline)
	r.expectPrefix(s, minidrv.ChunkSize(p))
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	r.sc.SetBandwidth(0)
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

func TestSuspendResume(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	s, started, res := r.startAcquire(ctx)
	<-started
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
	assert.Equal(t, minidrv.Suspended, r.d.State())
	err := waitErr(t, res)
	require.ErrorIs(t, err, minidrv.ErrOffline)
	r.expectPrefix(s, minidrv.ChunkSize(p))
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrOffline)
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend)) // again: no-op
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	r.sc.SetBandwidth(0)
	s, err = r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}

func TestUnknownEvent(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	require.NoError(t, r.d.Lock(context.Background()))
	for _, ev := range []minidrv.Event{0, 99} {
		err := r.d.NotifyPnpEvent(ev)
		require.ErrorIs(t, err, minidrv.ErrInvalidEvent)
		assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(err))
		assert.Equal(t, minidrv.Locked, r.d.State())
	}
}

func TestLockExclusive(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))

	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	err := r.d.Lock(short)
	require.ErrorIs(t, err, minidrv.ErrBusy)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, minidrv.Locked, r.d.State())

	got := make(chan error, 1)
	go func() { got <- r.d.Lock(ctx) }()
	select {
	case err := <-got:
		t.Fatalf("second Lock returned %v while the first holds it", err)
	case <-time.After(20 * time.Millisecond):
	}
	require.NoError(t, r.d.Unlock())
	require.NoError(t, waitErr(t, got))
	assert.Equal(t, minidrv.Locked, r.d.State())
}

func TestStateRefusals(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 64})
	require.NoError(t, err)
	defer ring.Close()
	sc, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer sc.Close()
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc)})
	require.NoError(t, err)
	ctx := context.Background()
	bed := minidrv.NewItemTree().Find("Flatbed")

	// Unloaded: everything but Initialize is refused.
	require.ErrorIs(t, d.Lock(ctx), minidrv.ErrNotInitialized)
	require.ErrorIs(t, d.Unlock(), minidrv.ErrNotInitialized)
	require.ErrorIs(t, d.Uninitialize(), minidrv.ErrNotInitialized)
	require.ErrorIs(t, d.AcquireItemData(ctx, bed, io.Discard, nil), minidrv.ErrNotInitialized)
	_, err = d.ReadItemProperties(bed, minidrv.PropXResolution)
	require.ErrorIs(t, err, minidrv.ErrNotInitialized)
	_, err = d.Items()
	require.ErrorIs(t, err, minidrv.ErrNotInitialized)
	require.NoError(t, d.CancelPendingIO(ctx))
	assert.Equal(t, minidrv.Unloaded, d.State())

	// Two clients.
	require.NoError(t, d.Initialize(ctx))
	require.NoError(t, d.Initialize(ctx))
	assert.Equal(t, minidrv.Idle, d.State())

	// Idle: no Unlock, no acquisition, no property write.
	require.ErrorIs(t, d.Unlock(), minidrv.ErrNotLocked)
	require.ErrorIs(t, d.AcquireItemData(ctx, bed, io.Discard, nil), minidrv.ErrNotLocked)
	require.ErrorIs(t, d.WriteItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}), minidrv.ErrNotLocked)
	assert.Equal(t, minidrv.Idle, d.State())

	// Bad arguments.
	require.NoError(t, d.Lock(ctx))
	root, err := d.Items()
	require.NoError(t, err)
	err = d.AcquireItemData(ctx, root, io.Discard, nil)
	require.Error(t, err)
	assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(err))
	err = d.AcquireItemData(ctx, bed, nil, nil)
	assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(err))

	// Invalid property: refused with its name and allowed range.
	before := d.Properties()
	err = d.WriteItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 301})
	var pe *minidrv.PropertyError
	require.ErrorAs(t, err, &pe)
	require.ErrorIs(t, err, minidrv.ErrInvalidProperty)
	assert.Equal(t, "WIA_IPS_XRES", pe.Name)
	assert.Contains(t, err.Error(), "75, 100, 150, 200, 300, 600")
	require.ErrorIs(t, d.ValidateItemProperties(bed, minidrv.PropValue{ID: minidrv.PropBufferSize, Value: 100}), minidrv.ErrInvalidProperty)
	require.NoError(t, d.ValidateItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}))
	assert.Equal(t, before, d.Properties(), "refused and validated writes change nothing")
	require.NoError(t, d.WriteItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}))
	vals, err := d.ReadItemProperties(bed, minidrv.PropXResolution, minidrv.PropBedWidth)
	require.NoError(t, err)
	assert.Equal(t, []minidrv.PropValue{{ID: minidrv.PropXResolution, Value: 300}, {ID: minidrv.PropBedWidth, Value: minidrv.BedWidth}}, vals)

	// Locked: no second Lock (it waits), no Initialize of the hardware.
	require.NoError(t, d.Unlock())

	// Uninitialize: the first only drops a client.
	require.NoError(t, d.Uninitialize())
	assert.Equal(t, minidrv.Idle, d.State())
	require.NoError(t, d.Uninitialize())
	assert.Equal(t, minidrv.Unloaded, d.State())
	require.ErrorIs(t, d.Uninitialize(), minidrv.ErrNotInitialized)
}

func TestNewRefusesBadConfig(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 16})
	require.NoError(t, err)
	defer ring.Close()
	open := func(context.Context) (*usb.Device, error) { return nil, errors.New("none") }
	for _, cfg := range []minidrv.Config{
		{},
		{Ring: ring},
		{Ring: ring, Open: open, QueueDepth: 9}, // > Entries/2
		{Ring: ring, Open: open, QueueDepth: -1},
		{Ring: ring, Open: open, AbortTimeout: -time.Second},
	} {
		_, err := minidrv.New(cfg)
		require.Error(t, err)
		assert.Equal(t, minidrv.HResultInvalidArg, minidrv.HResult(err))
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open})
	require.NoError(t, err)
	err = d.Initialize(context.Background())
	require.ErrorIs(t, err, minidrv.ErrOffline)
	assert.Equal(t, minidrv.Unloaded, d.State())
}

// A busy transfer refuses the calls that would disturb it.
func TestBusyRefusals(t *testing.T) {
	r, _ := slowRig(t, minidrv.Config{})
	ctx := context.Background()
	_, started, res := r.startAcquire(ctx)
	<-started
	assert.Equal(t, minidrv.Transferring, r.d.State())
	require.ErrorIs(t, r.d.Unlock(), minidrv.ErrBusy)
	require.ErrorIs(t, r.d.AcquireItemData(ctx, r.bed, io.Discard, nil), minidrv.ErrBusy)
	require.ErrorIs(t, r.d.WriteItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}), minidrv.ErrBusy)
	require.ErrorIs(t, r.d.Uninitialize(), minidrv.ErrBusy)
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, r.d.Lock(short), minidrv.ErrBusy)
	assert.Equal(t, minidrv.Transferring, r.d.State())
	require.NoError(t, r.d.CancelPendingIO(ctx))
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled)
}

// Initialize after Uninitialize (the device replugged in between), and
// nothing leaks: fds and goroutines (goleak in TestMain).
func TestReinitializeNoLeak(t *testing.T) {
	fds := openFDs(t)
	func() {
		r := newRig(t, minidrv.Config{})
		ctx := context.Background()
		for range 3 {
			require.NoError(t, r.d.Lock(ctx))
			r.small(64, 64, 512)
			s, err := r.acquire(ctx, nil)
			require.NoError(t, err)
			r.expectImage(s)
			require.NoError(t, r.d.Unlock())
			require.NoError(t, r.d.Uninitialize())
			require.NoError(t, r.sc.Unplug())
			require.NoError(t, r.sc.Replug())
			require.NoError(t, r.d.Initialize(ctx))
		}
		r.close()
	}()
	assert.Equal(t, fds, openFDs(t), "open fds before and after")
}

// Initialize after Uninitialize on the same plug-in of the scanner.
func TestReinitializeSamePlug(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Uninitialize())
	// The second Device goes on counting the OUT messages of the plug-in
	// where the first one stopped (usb.OpenSim).
	require.NoError(t, r.d.Initialize(ctx))
	require.NoError(t, r.d.Lock(ctx))
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
}
