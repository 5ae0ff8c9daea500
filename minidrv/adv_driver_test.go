package minidrv_test

// Adversarial use of the minidriver: cancels from everywhere at every
// moment, out-of-range properties, callbacks that re-enter the driver,
// and calls after Uninitialize. Nothing may panic, hang, leak (goleak in
// TestMain) or leave the driver busy; a normal acquisition works after.

import (
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
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

// advWithin runs f and fails the test if it does not return within d.
func advWithin(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// advExact checks that the driver, Locked, acquires an exact image.
func (r *rig) advExact() {
	r.t.Helper()
	r.sc.SetBandwidth(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.acquire(ctx, nil)
	require.NoError(r.t, err)
	r.expectImage(s)
	assert.Equal(r.t, minidrv.Locked, r.d.State())
}

// TestAdvCancelStorm: goroutines call CancelPendingIO and
// NotifyPnpEvent(EventCancelIO) without pause while one client runs
// Lock, WriteItemProperties, AcquireItemData and Unlock in a loop. Every
// call returns; an acquisition either succeeds with the exact image or
// returns ErrCanceled with whole chunks of it; the driver ends Idle, and
// an acquisition after the storm is exact.
func TestAdvCancelStorm(t *testing.T) {
	r := newRig(t, minidrv.Config{QueueDepth: 4})
	r.sc.SetBandwidth(8 << 20)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cancels atomic.Int64
	for i := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if rng.IntN(2) == 0 {
					cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err = r.d.CancelPendingIO(cctx)
					cancel()
				} else {
					err = r.d.NotifyPnpEvent(minidrv.EventCancelIO)
				}
				assert.NoError(t, err)
				cancels.Add(1)
				time.Sleep(time.Duration(rng.IntN(20000)) * time.Microsecond)
			}
		})
	}
	ok, canceled := 0, 0
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 30 {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, r.d.Lock(lctx), "Lock %d", i)
		cancel()
		p := r.small(64+rng.IntN(400), 64+rng.IntN(400), 512*(1+rng.IntN(16)))
		var s *chunkSink
		var err error
		advWithin(t, 10*time.Second, "AcquireItemData", func() { s, err = r.acquire(ctx, nil) })
		switch {
		case err == nil:
			ok++
			r.expectImage(s)
		case errors.Is(err, minidrv.ErrCanceled):
			canceled++
			r.expectPrefix(s, minidrv.ChunkSize(p))
		default:
			t.Fatalf("acquisition %d: %v", i, err)
		}
		assert.Equal(t, minidrv.Locked, r.d.State())
		require.NoError(t, r.d.Unlock())
	}
	close(stop)
	wg.Wait()
	t.Logf("%d acquisitions whole, %d canceled, %d cancels", ok, canceled, cancels.Load())
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(ctx))
	r.small(300, 200, 4096)
	r.advExact()
}

// TestAdvCancelWithEndedContext: CancelPendingIO with a context that has
// already ended still cancels (a cancel must always go through): only its
// wait is cut short. And an acquisition started with an ended context
// starts nothing and leaves the driver Locked.
func TestAdvCancelWithEndedContext(t *testing.T) {
	r, p := slowRig(t, minidrv.Config{})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	s, started, res := r.startAcquire(context.Background())
	<-started
	err := r.d.CancelPendingIO(ended)
	if err != nil {
		require.ErrorIs(t, err, minidrv.ErrBusy)
		require.ErrorIs(t, err, context.Canceled)
	}
	require.ErrorIs(t, waitErr(t, res), minidrv.ErrCanceled, "the cancel with an ended context did not cancel")
	r.expectPrefix(s, minidrv.ChunkSize(p))
	assert.Equal(t, minidrv.Locked, r.d.State())

	before := r.sc.LastScan()
	var s2 *chunkSink
	advWithin(t, 10*time.Second, "AcquireItemData(ended ctx)", func() { s2, err = r.acquire(ended, nil) })
	// Canceled, or refused because the device still recovers from the
	// cancel above and ctx has ended (ErrNotRecovered, documented).
	if !errors.Is(err, minidrv.ErrNotRecovered) {
		require.ErrorIs(t, err, minidrv.ErrCanceled)
	}
	assert.Zero(t, s2.Len())
	assert.Equal(t, minidrv.Locked, r.d.State())
	_ = before // whether the device's job started: TestAdvFoundEndedContextStartsScan
	r.advExact()
}

// TestAdvCallsAroundLifetime: CancelPendingIO and every PnP event before
// Initialize, after Uninitialize, twice, and concurrently with
// Uninitialize: no panic, no wait, typed errors or nil; the driver
// initializes again and scans.
func TestAdvCallsAroundLifetime(t *testing.T) {
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
	events := []minidrv.Event{minidrv.EventCancelIO, minidrv.EventPowerResume, minidrv.EventPowerSuspend,
		minidrv.EventDeviceDisconnected, minidrv.EventDeviceConnected, minidrv.EventCancelIO}
	unloaded := func(when string) {
		t.Helper()
		advWithin(t, 5*time.Second, "calls "+when, func() {
			for range 2 {
				assert.NoError(t, d.CancelPendingIO(ctx), when)
				for _, ev := range events {
					assert.NoError(t, d.NotifyPnpEvent(ev), "%s: %v", when, ev)
				}
			}
			assert.ErrorIs(t, d.Lock(ctx), minidrv.ErrNotInitialized, when)
			assert.ErrorIs(t, d.Unlock(), minidrv.ErrNotInitialized, when)
			assert.ErrorIs(t, d.AcquireItemData(ctx, bed, io.Discard, nil), minidrv.ErrNotInitialized, when)
			assert.ErrorIs(t, d.WriteItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}), minidrv.ErrNotInitialized, when)
			assert.ErrorIs(t, d.Uninitialize(), minidrv.ErrNotInitialized, when)
		})
		assert.Equal(t, minidrv.Unloaded, d.State(), when)
	}
	unloaded("before Initialize")
	for round := range 3 {
		require.NoError(t, d.Initialize(ctx))
		require.NoError(t, d.Lock(ctx))
		// Uninitialize from Locked with cancels racing it.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					assert.NoError(t, d.CancelPendingIO(ctx))
				}
			})
		}
		advWithin(t, 5*time.Second, "Uninitialize", func() { assert.NoError(t, d.Uninitialize()) })
		wg.Wait()
		unloaded("after Uninitialize " + string(rune('0'+round)))
	}
	// And it still scans.
	require.NoError(t, d.Initialize(ctx))
	defer d.Uninitialize()
	require.NoError(t, d.Lock(ctx))
	root, err := d.Items()
	require.NoError(t, err)
	require.NoError(t, d.WriteItemProperties(root.Find("Flatbed"),
		minidrv.PropValue{ID: minidrv.PropXExtent, Value: 100}, minidrv.PropValue{ID: minidrv.PropYExtent, Value: 100}))
	var sink chunkSink
	require.NoError(t, d.AcquireItemData(ctx, root.Find("Flatbed"), &sink, nil))
	assert.Equal(t, usbsim.ExpectedImage(sc.LastScan()), sink.buf.Bytes())
	require.NoError(t, d.Unlock())
}

// TestAdvHostileProperties writes every writable property with extreme
// values, alone and with a resolution change: each write is accepted
// (and then valid, and ScanParams takes it) or refused with a
// *PropertyError, changing nothing. Unknown and read-only IDs are refused.
// The derived values and ScanParams never panic on made-up Properties.
func TestAdvHostileProperties(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	require.NoError(t, r.d.Lock(context.Background()))
	extremes := []int{math.MinInt, math.MinInt32, -1, 0, 1, 2, 7, 75, 511, 512, 513, 600, 601, 1 << 20, 1<<20 + 512,
		math.MaxInt32, math.MaxInt - 1, math.MaxInt}
	if v := int64(math.MaxInt32) + 1; int64(int(v)) == v { // beyond 32 bits, where int has 64
		extremes = append(extremes, int(v))
	}
	ids := []minidrv.PropID{minidrv.PropXResolution, minidrv.PropYResolution, minidrv.PropXPosition, minidrv.PropYPosition,
		minidrv.PropXExtent, minidrv.PropYExtent, minidrv.PropDataType, minidrv.PropBitDepth, minidrv.PropFormat, minidrv.PropBufferSize}
	check := func(changes ...minidrv.PropValue) {
		t.Helper()
		before := r.d.Properties()
		verr := r.d.ValidateItemProperties(r.bed, changes...)
		err := r.d.WriteItemProperties(r.bed, changes...)
		assert.Equal(t, verr == nil, err == nil, "Validate and Write disagree on %v: %v vs %v", changes, verr, err)
		if err != nil {
			var pe *minidrv.PropertyError
			assert.ErrorAs(t, err, &pe, "%v", changes)
			assert.ErrorIs(t, err, minidrv.ErrInvalidProperty)
			assert.Equal(t, before, r.d.Properties(), "a refused write changed the properties: %v", changes)
			return
		}
		p := r.d.Properties()
		require.NoError(t, p.Validate(), "accepted %v", changes)
		_, serr := minidrv.ScanParams(p, 0)
		require.NoError(t, serr, "accepted %v", changes)
		assert.Positive(t, minidrv.ChunkSize(p))
		assert.LessOrEqual(t, minidrv.ChunkSize(p), p.BufferSize)
	}
	for _, id := range ids {
		for _, v := range extremes {
			check(minidrv.PropValue{ID: id, Value: v})
			check(minidrv.PropValue{ID: minidrv.PropXResolution, Value: 600}, minidrv.PropValue{ID: id, Value: v})
			check(minidrv.PropValue{ID: id, Value: v}, minidrv.PropValue{ID: minidrv.PropYResolution, Value: 75})
		}
	}
	for _, id := range []minidrv.PropID{0, -1, math.MinInt, 15, 31, 32, 64, math.MaxInt,
		minidrv.PropBedWidth, minidrv.PropBedHeight, minidrv.PropBytesPerLine, minidrv.PropItemSize} {
		before := r.d.Properties()
		err := r.d.WriteItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropXExtent, Value: 10}, minidrv.PropValue{ID: id, Value: 1})
		assert.ErrorIs(t, err, minidrv.ErrInvalidProperty, "id %d", id)
		assert.Equal(t, before, r.d.Properties())
		if !id.Valid() {
			_, err = r.d.ReadItemProperties(r.bed, id)
			assert.ErrorIs(t, err, minidrv.ErrInvalidProperty, "read id %d", id)
		}
	}
	// Made-up Properties: nothing panics, ScanParams refuses what is off.
	rng := rand.New(rand.NewPCG(7, 8))
	pick := func() int { return extremes[rng.IntN(len(extremes))] }
	for range 20000 {
		p := minidrv.Properties{
			XResolution: pick(), YResolution: pick(), XPosition: pick(), YPosition: pick(),
			XExtent: pick(), YExtent: pick(), DataType: minidrv.DataType(pick()), BitDepth: pick(),
			Format: minidrv.Format(pick()), BufferSize: pick(),
		}
		if rng.IntN(2) == 0 {
			p = minidrv.DefaultProperties()
			switch rng.IntN(4) {
			case 0:
				p.XExtent = pick()
			case 1:
				p.YPosition = pick()
			case 2:
				p.XResolution = pick()
			case 3:
				p.BufferSize = pick()
			}
		}
		_ = p.BytesPerLine()
		_ = p.ImageSize()
		_ = p.Header()
		_ = minidrv.ChunkSize(p)
		_, _ = p.Read(minidrv.PropBytesPerLine, minidrv.PropItemSize)
		sp, err := minidrv.ScanParams(p, rng.Uint64())
		if err != nil {
			assert.ErrorIs(t, err, ioring.ErrInvalid)
			assert.ErrorIs(t, err, minidrv.ErrInvalidProperty)
			continue
		}
		require.NoError(t, p.Validate())
		assert.Equal(t, uint32(p.XExtent), sp.Width)
		assert.Equal(t, uint32(p.YExtent), sp.Height)
	}
	// The driver scans with what is left (raw: expectImage has no header).
	require.NoError(t, r.d.WriteItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropFormat, Value: int(minidrv.FormatRaw)}))
	r.small(128, 96, 1024)
	r.advExact()
}

// TestAdvReentrantCallbacks: the progress callback and the sink call every
// method of the driver while the transfer runs. Those the state does not
// allow are refused with ErrBusy at once (none waits for the transfer
// that runs them), the others work, and the acquisition completes with
// the exact image.
func TestAdvReentrantCallbacks(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(256, 128, 4096)
	var calls atomic.Int32
	reenter := func(where string) {
		calls.Add(1)
		assert.ErrorIs(t, r.d.AcquireItemData(ctx, r.bed, io.Discard, nil), minidrv.ErrBusy, where)
		assert.ErrorIs(t, r.d.Unlock(), minidrv.ErrBusy, where)
		assert.ErrorIs(t, r.d.Uninitialize(), minidrv.ErrBusy, where)
		assert.ErrorIs(t, r.d.WriteItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}), minidrv.ErrBusy, where)
		short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
		assert.ErrorIs(t, r.d.Lock(short), minidrv.ErrBusy, where)
		cancel()
		assert.NoError(t, r.d.ValidateItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300}), where)
		_, err := r.d.ReadItemProperties(r.bed, minidrv.PropItemSize)
		assert.NoError(t, err, where)
		_, err = r.d.Items()
		assert.NoError(t, err, where)
		assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected), where) // connected: a no-op
		assert.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume), where)     // awake: a no-op
		// Initialize adds a client, Uninitialize drops it again.
		assert.NoError(t, r.d.Initialize(ctx), where)
		assert.NoError(t, r.d.Uninitialize(), where)
		assert.Equal(t, minidrv.Transferring, r.d.State(), where)
	}
	s := &reentrantSink{inner: &chunkSink{}, f: func() { reenter("sink") }}
	var err error
	advWithin(t, 20*time.Second, "AcquireItemData with re-entrant callbacks", func() {
		err = r.d.AcquireItemData(ctx, r.bed, s, func(minidrv.Progress) bool { reenter("progress"); return true })
	})
	require.NoError(t, err)
	r.expectImage(s.inner)
	assert.Positive(t, calls.Load())
	assert.Equal(t, p, r.d.Properties(), "the re-entrant calls changed the properties")
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.advExact()
	require.NoError(t, r.d.Unlock())
	require.NoError(t, r.d.Uninitialize()) // the rig's one client is still there
	assert.Equal(t, minidrv.Unloaded, r.d.State())
}

type reentrantSink struct {
	inner *chunkSink
	f     func()
}

func (s *reentrantSink) Write(b []byte) (int, error) {
	s.f()
	return s.inner.Write(b)
}

// TestAdvPnpFromCallbacks: a suspend, or an unplug and a replug, sent from
// the acquisition's own progress callback or sink: the calls return
// (those that wait for the acquiring goroutine give up after their
// bound), the acquisition returns ErrOffline, and the driver comes back
// and scans.
func TestAdvPnpFromCallbacks(t *testing.T) {
	for _, c := range []struct {
		name   string
		first  minidrv.Event
		second minidrv.Event
		inSink bool
	}{
		{"suspend in progress", minidrv.EventPowerSuspend, minidrv.EventPowerResume, false},
		{"suspend in sink", minidrv.EventPowerSuspend, minidrv.EventPowerResume, true},
		{"unplug in progress", minidrv.EventDeviceDisconnected, minidrv.EventDeviceConnected, false},
		{"unplug in sink", minidrv.EventDeviceDisconnected, minidrv.EventDeviceConnected, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, _ := slowRig(t, minidrv.Config{AbortTimeout: answerWithin})
			ctx := context.Background()
			var once sync.Once
			var firstErr, secondErr error
			hit := func() {
				once.Do(func() {
					firstErr = r.d.NotifyPnpEvent(c.first)
					secondErr = r.d.NotifyPnpEvent(c.second) // may need the device the acquisition holds
				})
			}
			s := &reentrantSink{inner: &chunkSink{}, f: func() {}}
			progress := func(pr minidrv.Progress) bool { return true }
			if c.inSink {
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
			assert.NoError(t, firstErr)
			t.Logf("%v from inside: %v; state %v", c.second, secondErr, r.d.State())
			// From outside now, the device comes back.
			if r.d.State() != minidrv.Idle {
				require.NoError(t, r.d.NotifyPnpEvent(c.second))
			}
			assert.Equal(t, minidrv.Idle, r.d.State())
			lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, r.d.Lock(lctx))
			r.advExact()
		})
	}
}

// TestAdvOpenPanicsOnReconnect: Config.Open panics when the driver opens
// the device again after an unplug. The panic goes up to the caller of
// NotifyPnpEvent, and leaves nothing held: a later reconnection works and
// the driver scans.
func TestAdvOpenPanicsOnReconnect(t *testing.T) {
	var boom atomic.Bool
	r := newSimRig(t, minidrv.Config{}, usbsim.Config{}, func(sc *usbsim.Scanner, cfg *minidrv.Config) {
		open := cfg.Open
		cfg.Open = func(ctx context.Context) (*usb.Device, error) {
			if boom.Load() {
				panic("open boom")
			}
			return open(ctx)
		}
	})
	require.NoError(t, r.sc.Unplug())
	require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	require.NoError(t, r.sc.Replug())
	boom.Store(true)
	o := catching(t, func() error { return r.d.NotifyPnpEvent(minidrv.EventDeviceConnected) })
	assert.NotNil(t, o.panicked, "the panic of Open")
	assert.Equal(t, minidrv.Removed, r.d.State())
	boom.Store(false)
	advWithin(t, 10*time.Second, "reconnect after a panic", func() {
		require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	})
	assert.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(context.Background()))
	r.small(100, 100, 1024)
	r.advExact()
}

// TestAdvConcurrentLifecycle: Initialize, Uninitialize, Lock, Unlock,
// CancelPendingIO and the PnP events from many goroutines at once. Every
// call returns; afterwards the driver can be brought to a clean state and
// scans.
func TestAdvConcurrentLifecycle(t *testing.T) {
	r := newRig(t, minidrv.Config{AbortTimeout: answerWithin})
	ctx := context.Background()
	var wg sync.WaitGroup
	var inits atomic.Int64 // Initialize successes minus Uninitialize successes, by these goroutines
	for i := range 6 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			for range 60 {
				cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				switch rng.IntN(8) {
				case 0:
					if r.d.Initialize(cctx) == nil {
						inits.Add(1)
					}
				case 1:
					if inits.Add(-1) >= 0 {
						if r.d.Uninitialize() != nil {
							inits.Add(1)
						}
					} else {
						inits.Add(1)
					}
				case 2:
					if r.d.Lock(cctx) == nil {
						_ = r.d.Unlock()
					}
				case 3:
					_ = r.d.CancelPendingIO(cctx)
				case 4:
					_ = r.d.NotifyPnpEvent(minidrv.EventPowerSuspend)
				case 5:
					_ = r.d.NotifyPnpEvent(minidrv.EventPowerResume)
					time.Sleep(time.Millisecond)
				case 6:
					_ = r.d.NotifyPnpEvent(minidrv.EventCancelIO)
				case 7:
					if r.d.Lock(cctx) == nil {
						r.d.WriteItemProperties(r.bed, minidrv.PropValue{ID: minidrv.PropXExtent, Value: 32}, minidrv.PropValue{ID: minidrv.PropYExtent, Value: 32})
						_, _ = r.acquire(cctx, nil)
						_ = r.d.Unlock()
					}
				}
				cancel()
			}
		})
	}
	advWithin(t, 30*time.Second, "the concurrent calls", wg.Wait)
	t.Logf("state %v, %d extra clients", r.d.State(), inits.Load())
	for range inits.Load() {
		require.NoError(t, r.d.Uninitialize())
	}
	if r.d.State() == minidrv.Suspended {
		require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
	}
	if r.d.State() == minidrv.Locked {
		require.NoError(t, r.d.Unlock())
	}
	require.Equal(t, minidrv.Idle, r.d.State())
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, r.d.Lock(lctx))
	r.small(120, 80, 1024)
	r.advExact()
}
