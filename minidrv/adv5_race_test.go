package minidrv_test

// Adversarial round 5: CancelPendingIO, Uninitialize, Unlock and the PnP
// events racing each other and every phase of an acquisition at seeded
// random moments; a device that hangs, stalls, slows down or is unplugged
// at random points, with CancelPendingIO timed; progress callbacks and
// sinks that block, fail, lie about what they wrote or re-enter the
// driver. After each round the driver's state must be the one the state
// table leads to, the acquisition's result exact or a clear error, and
// the next acquisition exact.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
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

// adv5Slack is what a bound on a loaded 2-core machine under the race
// detector gets on top of the time the contract allows.
const adv5Slack = 3 * time.Second

// adv5Seed returns the test's seed, logged so that a failure can be
// replayed.
func adv5Seed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ADV5_SEED"); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "ADV5_SEED")
	}
	t.Logf("seed %d (replay: ADV5_SEED=%d)", seed, seed)
	return seed
}

// adv5Back brings the driver back to Locked from wherever a round left
// it: Unloaded (Initialize), Removed (replug and DeviceConnected),
// Suspended (PowerResume), Idle (Lock). The device's faults are undone.
func (r *rig) adv5Back() {
	r.t.Helper()
	r.sc.Resume()
	r.sc.SetLatency(0)
	r.sc.SetBandwidth(0)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := r.sc.Endpoints(); errors.Is(err, usbsim.ErrNoDevice) {
		// Unplugged while no transfer ran: nothing told the driver.
		if s := r.d.State(); s != minidrv.Unloaded {
			require.NoError(r.t, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
		}
		require.NoError(r.t, r.sc.Replug())
	}
	for i := 0; ; i++ {
		require.Less(r.t, i, 20, "driver stuck in %v", r.d.State())
		s := r.d.State()
		switch s {
		case minidrv.Locked:
			return
		case minidrv.Unloaded:
			require.NoError(r.t, r.sc.Replug())
			require.NoError(r.t, r.d.Initialize(ctx))
		case minidrv.Removed:
			require.NoError(r.t, r.sc.Replug())
			require.NoError(r.t, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
		case minidrv.Suspended:
			require.NoError(r.t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
		case minidrv.Idle:
			require.NoError(r.t, r.d.Lock(ctx))
		default:
			r.t.Fatalf("driver still %v after the round", s)
		}
	}
}

// adv5Exact is advExact, saying where the image differs and in which
// round.
func (r *rig) adv5Exact(desc string) {
	r.t.Helper()
	r.sc.SetBandwidth(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var reports []minidrv.Progress
	s, err := r.acquire(ctx, func(p minidrv.Progress) bool { reports = append(reports, p); return true })
	require.NoError(r.t, err, "%s: the next acquisition", desc)
	last := r.sc.LastScan()
	want := usbsim.ExpectedImage(last)
	got := s.buf.Bytes()
	if !bytes.Equal(want, got) {
		off := 0
		for off < min(len(want), len(got)) && want[off] == got[off] {
			off++
		}
		r.t.Fatalf("%s: the next acquisition's image differs: %d bytes, want %d; first difference at %d; "+
			"chunk %d, writes %v; scan of the first write %+v, last scan %+v; properties %+v",
			desc, len(got), len(want), off, minidrv.ChunkSize(r.d.Properties()), s.writes, s.scan, last, r.d.Properties())
	}
	assert.Equal(r.t, minidrv.Locked, r.d.State(), desc)
}

// adv5Action is one thing that races an acquisition.
type adv5Action int

const (
	adv5CancelPending adv5Action = iota
	adv5NotifyCancel
	adv5Disconnect        // EventDeviceDisconnected
	adv5DisconnectConnect // EventDeviceDisconnected, then EventDeviceConnected
	adv5Suspend           // EventPowerSuspend
	adv5SuspendResume     // EventPowerSuspend, then EventPowerResume
	adv5Uninitialize      // Uninitialize (ErrBusy while the transfer runs)
	adv5Unlock            // Unlock (ErrBusy while the transfer runs)
	adv5UnplugDevice      // the device goes away, no event
	adv5InitializeUninit  // a second client comes and goes
	adv5NumActions
)

var adv5ActionNames = [...]string{"CancelPendingIO", "EventCancelIO", "Disconnect", "Disconnect+Connect",
	"Suspend", "Suspend+Resume", "Uninitialize", "Unlock", "Unplug", "Initialize+Uninitialize"}

func (a adv5Action) String() string { return adv5ActionNames[a] }

// adv5Outcome is what one action did.
type adv5Outcome struct {
	act  adv5Action
	errs []error
	took time.Duration // CancelPendingIO's
	at   minidrv.State // the state just before the action
}

// adv5Run performs the action and records what it returned.
func (r *rig) adv5Run(act adv5Action) adv5Outcome {
	o := adv5Outcome{act: act, at: r.d.State()}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	switch act {
	case adv5CancelPending:
		t0 := time.Now()
		o.errs = append(o.errs, r.d.CancelPendingIO(ctx))
		o.took = time.Since(t0)
	case adv5NotifyCancel:
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventCancelIO))
	case adv5Disconnect:
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
	case adv5DisconnectConnect:
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected))
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventDeviceConnected))
	case adv5Suspend:
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
	case adv5SuspendResume:
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
		o.errs = append(o.errs, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
	case adv5Uninitialize:
		o.errs = append(o.errs, r.d.Uninitialize())
	case adv5Unlock:
		o.errs = append(o.errs, r.d.Unlock())
	case adv5UnplugDevice:
		o.errs = append(o.errs, r.sc.Unplug())
	case adv5InitializeUninit:
		err := r.d.Initialize(ctx)
		o.errs = append(o.errs, err)
		if err == nil {
			o.errs = append(o.errs, r.d.Uninitialize())
		}
	}
	return o
}

// TestAdv5EventsRaceEveryPhase: at a seeded random moment of an
// acquisition (its 0% report, a later report, a sink write, or a random
// delay after its start: before the resynchronization, during the start
// command, mid-stream or after the end), one or two of CancelPendingIO,
// EventCancelIO, a removal (with or without the arrival after it), a
// suspend (with or without the resume), Uninitialize, Unlock, the device
// unplugged, and a second client's Initialize and Uninitialize run
// concurrently. Every call returns within its bound (CancelPendingIO
// within AbortTimeout + slack: it never waits for the device); the
// acquisition returns the exact image, or ErrCanceled / ErrOffline with
// whole chunks of it; the driver is never left busy, and its state is the
// one the table gives for the events that ran; the ring has no request
// left; and the next acquisition is exact.
func TestAdv5EventsRaceEveryPhase(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 5))
	const abort = 500 * time.Millisecond
	r := newRig(t, minidrv.Config{AbortTimeout: abort, QueueDepth: 4})
	ctx := context.Background()
	counts := map[string]int{}
	rounds := 60
	if testing.Short() {
		rounds = 15
	}
	for round := range rounds {
		r.adv5Back()
		// A dirty device (after a suspend or a removal) makes the
		// acquisition resynchronize it first: one more phase to hit.
		if rng.IntN(3) == 0 {
			require.NoError(t, r.d.Unlock())
			require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerSuspend))
			require.NoError(t, r.d.NotifyPnpEvent(minidrv.EventPowerResume))
			r.adv5Back()
		}
		w, h, buf := 64+rng.IntN(512), 16+rng.IntN(256), 512*(1+rng.IntN(8))
		p := r.small(w, h, buf)
		switch rng.IntN(3) {
		case 0:
			r.sc.SetBandwidth(int64(256<<10 + rng.IntN(2<<20)))
		case 1:
			r.sc.SetLatency(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
		acts := []adv5Action{adv5Action(rng.IntN(int(adv5NumActions)))}
		if rng.IntN(2) == 0 {
			acts = append(acts, adv5Action(rng.IntN(int(adv5NumActions))))
		}
		// Where the actions start: 0 at the 0% report, 1 at the k-th
		// report with data, 2 in the k-th sink write, 3 after a delay.
		where, k := rng.IntN(4), 1+rng.IntN(12)
		delay := time.Duration(rng.IntN(40000)) * time.Microsecond
		desc := fmt.Sprintf("round %d: %dx%d/%d, %v at %d/%d/%v", round, w, h, buf, acts, where, k, delay)

		fire := make(chan struct{})
		var fireOnce sync.Once
		trigger := func() { fireOnce.Do(func() { close(fire) }) }
		var outs []adv5Outcome
		var outMu sync.Mutex
		var wg sync.WaitGroup
		for _, a := range acts {
			wg.Go(func() {
				<-fire
				o := r.adv5Run(a)
				outMu.Lock()
				outs = append(outs, o)
				outMu.Unlock()
			})
		}
		var reports atomic.Int32
		progress := func(pr minidrv.Progress) bool {
			n := reports.Add(1)
			if (where == 0 && n == 1) || (where == 1 && pr.Bytes > 0 && int(n) >= k) {
				trigger()
			}
			return true
		}
		var writes atomic.Int32
		sink := &reentrantSink{inner: &chunkSink{sc: r.sc}, f: func() {
			if where == 2 && int(writes.Add(1)) >= k {
				trigger()
			}
		}}
		res := make(chan error, 1)
		go func() { res <- r.d.AcquireItemData(ctx, r.bed, sink, progress) }()
		if where == 3 {
			go func() { time.Sleep(delay); trigger() }()
		}
		var err error
		select {
		case err = <-res:
		case <-time.After(20 * time.Second):
			trigger()
			t.Fatalf("%s: the acquisition did not return within 20 s (state %v)", desc, r.d.State())
		}
		trigger() // an acquisition that ended before its trigger: the actions still run
		advWithin(t, 20*time.Second, desc+": the actions", wg.Wait)

		// What the acquisition returned.
		switch {
		case err == nil:
			counts["whole"]++
			require.Equal(t, sink.inner.scan, r.sc.LastScan(), desc)
			r.expectImage(sink.inner)
		case errors.Is(err, minidrv.ErrCanceled):
			counts["canceled"]++
			r.expectPrefix(sink.inner, minidrv.ChunkSize(p))
		case errors.Is(err, minidrv.ErrOffline):
			counts["offline"]++
			r.expectPrefix(sink.inner, minidrv.ChunkSize(p))
		default:
			t.Fatalf("%s: acquisition: %v", desc, err)
		}
		// What each action returned, and what the state must be.
		// Clients: the test's, and the second client's while it is in.
		// Uninitialize only counts one out unless it is the last
		// (only the last is refused while the transfer runs).
		removed, suspended, clients := false, false, 1
		for _, o := range outs {
			switch o.act {
			case adv5Uninitialize:
				if o.errs[0] == nil {
					clients--
				}
			case adv5InitializeUninit:
				if o.errs[0] == nil {
					clients++
					if o.errs[1] == nil {
						clients--
					}
				}
			}
		}
		unloaded := clients == 0
		for _, o := range outs {
			for i, e := range o.errs {
				switch o.act {
				case adv5CancelPending:
					require.NoError(t, e, desc)
					assert.Less(t, o.took, abort+adv5Slack, "%s: CancelPendingIO took %v", desc, o.took)
				case adv5NotifyCancel, adv5Suspend, adv5SuspendResume, adv5UnplugDevice:
					require.NoError(t, e, "%s: %v", desc, o.act)
				case adv5Disconnect:
					require.NoError(t, e, "%s: %v", desc, o.act)
				case adv5DisconnectConnect:
					if i == 1 && e != nil { // the device may be unplugged by the other action
						require.ErrorIs(t, e, minidrv.ErrOffline, desc)
					} else {
						require.NoError(t, e, "%s: %v", desc, o.act)
					}
				case adv5Uninitialize:
					switch {
					case e == nil:
					case errors.Is(e, minidrv.ErrNotInitialized): // the other action's Uninitialize won
					default:
						require.ErrorIs(t, e, minidrv.ErrBusy, "%s: Uninitialize", desc)
					}
				case adv5Unlock:
					if e != nil && !errors.Is(e, minidrv.ErrBusy) && !errors.Is(e, minidrv.ErrOffline) &&
						!errors.Is(e, minidrv.ErrNotLocked) && !errors.Is(e, minidrv.ErrNotInitialized) {
						t.Fatalf("%s: Unlock: %v", desc, e)
					}
				case adv5InitializeUninit:
					if e != nil && !errors.Is(e, minidrv.ErrOffline) && !errors.Is(e, minidrv.ErrBusy) &&
						!errors.Is(e, minidrv.ErrNotInitialized) && !errors.Is(e, minidrv.ErrDeviceCommunication) {
						t.Fatalf("%s: Initialize/Uninitialize: %v", desc, e)
					}
				}
			}
			switch o.act {
			case adv5Disconnect:
				removed = true
			case adv5Suspend:
				suspended = true
			}
		}
		r.adv2Settled()
		st, _ := r.d.Watch()
		require.False(t, st.Busy(), "%s: driver left %v", desc, st)
		require.True(t, st.Valid(), desc)
		switch {
		case unloaded:
			// The last client left: only Unloaded, or a reconnection
			// that lost the race to it (no: Unloaded refuses nothing
			// but Initialize, and DeviceConnected is a no-op there).
			require.Equal(t, minidrv.Unloaded, st, desc)
		case removed:
			// Nothing brings a removed device back but DeviceConnected,
			// which only the other action may send, before ours.
			if st != minidrv.Removed {
				other := outs[0].act
				if outs[0].act == adv5Disconnect && len(outs) > 1 {
					other = outs[1].act
				}
				require.Contains(t, []adv5Action{adv5DisconnectConnect, adv5SuspendResume}, other,
					"%s: state %v after a removal", desc, st)
			}
		case suspended:
			if st != minidrv.Suspended {
				require.Contains(t, []minidrv.State{minidrv.Removed, minidrv.Idle}, st, "%s: state %v after a suspend", desc, st)
			}
		}
		counts["state "+st.String()]++
		// A second client whose Uninitialize was refused (it was the
		// last while the transfer ran) leaves now: the next round starts
		// with the test's client alone.
		for ; clients > 1; clients-- {
			require.NoError(t, r.d.Uninitialize(), "%s: the second client leaves", desc)
		}
		r.adv5Back()
		r.adv5Exact(desc + fmt.Sprintf(" (acquisition: %v; actions: %+v)", err, outs))
	}
	t.Logf("%v", counts)
}

// TestAdv5FaultThenCancel: the device hangs (at once, or after a random
// number of bytes), stalls its bulk-IN endpoint, slows to a crawl or is
// unplugged at a random moment of an acquisition; CancelPendingIO, called
// then, returns within AbortTimeout + slack with the driver Locked (or
// Removed for a device found gone), the acquisition returns ErrCanceled
// (or ErrOffline, or ErrDeviceCommunication for the stall it saw first)
// with whole chunks, and once the device is healthy again the next
// acquisition is exact.
func TestAdv5FaultThenCancel(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 55))
	const abort = 400 * time.Millisecond
	r := newRig(t, minidrv.Config{AbortTimeout: abort, QueueDepth: 4, StallTimeout: -1})
	faults := []string{"hang", "hangAfter", "stall", "crawl", "unplug"}
	counts := map[string]int{}
	rounds := 30
	if testing.Short() {
		rounds = 10
	}
	for round := range rounds {
		r.adv5Back()
		p := r.small(256+rng.IntN(256), 64+rng.IntN(256), 512*(1+rng.IntN(16)))
		r.sc.SetBandwidth(int64(512<<10 + rng.IntN(2<<20)))
		fault := faults[rng.IntN(len(faults))]
		n := int64(rng.IntN(int(p.ImageSize())))
		delay := time.Duration(rng.IntN(30000)) * time.Microsecond
		desc := fmt.Sprintf("round %d: %s (n %d, delay %v)", round, fault, n, delay)
		if fault == "hangAfter" {
			r.sc.HangAfter(n)
		}
		sink := &chunkSink{sc: r.sc}
		res := make(chan error, 1)
		zero := make(chan struct{})
		var once sync.Once
		go func() {
			res <- r.d.AcquireItemData(context.Background(), r.bed, sink, func(minidrv.Progress) bool {
				once.Do(func() { close(zero) })
				return true
			})
		}()
		select {
		case <-zero:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no 0%% report", desc)
		}
		time.Sleep(delay) // a random moment, not a synchronization
		switch fault {
		case "hang":
			r.sc.Hang()
		case "stall":
			_ = r.sc.Stall(0x82)
		case "crawl":
			r.sc.SetBandwidth(1)
		case "unplug":
			require.NoError(t, r.sc.Unplug())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		t0 := time.Now()
		cerr := r.d.CancelPendingIO(ctx)
		took := time.Since(t0)
		cancel()
		require.NoError(t, cerr, desc)
		assert.Less(t, took, abort+adv5Slack, "%s: CancelPendingIO took %v", desc, took)
		st := r.d.State()
		require.Contains(t, []minidrv.State{minidrv.Locked, minidrv.Removed}, st, "%s: state when CancelPendingIO returned", desc)
		err := waitErr(t, res)
		switch {
		case err == nil:
			counts["whole"]++
			r.expectImage(sink)
		case errors.Is(err, minidrv.ErrCanceled):
			counts["canceled"]++
			r.expectPrefix(sink, minidrv.ChunkSize(p))
		case errors.Is(err, minidrv.ErrOffline):
			require.Equal(t, "unplug", fault, "%s: %v", desc, err)
			counts["offline"]++
			r.expectPrefix(sink, minidrv.ChunkSize(p))
		case errors.Is(err, minidrv.ErrDeviceCommunication):
			require.Equal(t, "stall", fault, "%s: %v", desc, err)
			counts["failed"]++
			r.expectPrefix(sink, minidrv.ChunkSize(p))
		default:
			t.Fatalf("%s: acquisition: %v", desc, err)
		}
		if st == minidrv.Removed {
			require.Equal(t, "unplug", fault, desc)
		}
		// Healthy again: the recovery (which may have given up on the
		// hung device) and the next Lock bring it back.
		r.sc.Resume()
		r.sc.SetBandwidth(0)
		r.adv2Settled()
		if r.d.State() == minidrv.Locked {
			require.NoError(t, r.d.Unlock())
		}
		r.adv5Back()
		if fault == "stall" && err == nil {
			// The stall came after the image: nothing told the driver,
			// and the endpoint is still halted. The next acquisition
			// fails with that (a clear error) and its recovery clears
			// the halt; a driver does not clear halts before every scan.
			actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, aerr := r.acquire(actx, nil)
			acancel()
			if aerr != nil {
				require.ErrorIs(t, aerr, minidrv.ErrDeviceCommunication, desc)
				require.ErrorIs(t, aerr, usb.ErrStall, desc)
				counts["stall seen by the next scan"]++
			}
		}
		r.adv5Exact(fmt.Sprintf("%s (acquisition: %v, CancelPendingIO in %v, state %v)", desc, err, took, st))
	}
	t.Logf("%v", counts)
}

// adv5Gate blocks the caller of wait until open is called.
type adv5Gate struct {
	entered chan struct{} // closed when the first caller arrives
	release chan struct{}
	once    sync.Once
	rel     sync.Once
}

func newAdv5Gate() *adv5Gate {
	return &adv5Gate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *adv5Gate) wait() {
	g.once.Do(func() { close(g.entered) })
	<-g.release
}

func (g *adv5Gate) open() { g.rel.Do(func() { close(g.release) }) }

// TestAdv5BlockedUserCode: the progress callback, or the sink, blocks
// mid-stream; CancelPendingIO from another goroutine returns while it is
// still blocked, with the driver Locked ("at once, or when its progress
// callback or sink write in progress returns" is the acquisition's
// return, not the cancel's). While the acquiring goroutine is still stuck,
// other calls do not hang: an acquisition and a Lock bounded by their
// contexts fail with ErrBusy or ErrNotRecovered. Released, the stuck
// acquisition returns ErrCanceled and the sink gets no chunk after the
// cancel (beyond the write in progress); the next acquisition is exact.
func TestAdv5BlockedUserCode(t *testing.T) {
	for _, inSink := range []bool{false, true} {
		t.Run(fmt.Sprintf("inSink=%v", inSink), func(t *testing.T) {
			r, p := slowRig(t, minidrv.Config{AbortTimeout: answerWithin})
			g := newAdv5Gate()
			defer g.open()
			var afterCancel atomic.Bool
			var lateWrites atomic.Int32
			inner := &chunkSink{}
			sink := &reentrantSink{inner: inner, f: func() {
				if afterCancel.Load() {
					lateWrites.Add(1)
				}
				if inSink && inner.Len() >= minidrv.ChunkSize(p) {
					g.wait()
				}
			}}
			progress := func(pr minidrv.Progress) bool {
				if !inSink && pr.Bytes > 0 {
					g.wait()
				}
				return true
			}
			res := make(chan error, 1)
			go func() { res <- r.d.AcquireItemData(context.Background(), r.bed, sink, progress) }()
			select {
			case <-g.entered:
			case err := <-res:
				t.Fatalf("acquisition returned before blocking: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the user code was never called")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			t0 := time.Now()
			require.NoError(t, r.d.CancelPendingIO(ctx))
			took := time.Since(t0)
			afterCancel.Store(true)
			t.Logf("CancelPendingIO with the user code blocked: %v", took)
			assert.Less(t, took, adv5Slack, "CancelPendingIO waited for the blocked user code")
			assert.Equal(t, minidrv.Locked, r.d.State())
			// The acquiring goroutine still holds the device.
			short, scancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := r.d.AcquireItemData(short, r.bed, io.Discard, nil)
			scancel()
			if !errors.Is(err, minidrv.ErrBusy) && !errors.Is(err, minidrv.ErrNotRecovered) && !errors.Is(err, minidrv.ErrCanceled) {
				t.Fatalf("a second acquisition while the first is stuck: %v", err)
			}
			t.Logf("second acquisition while the first is stuck: %v", err)
			select {
			case err := <-res:
				t.Fatalf("the stuck acquisition returned before its user code: %v", err)
			default:
			}
			g.open()
			err = waitErr(t, res)
			require.ErrorIs(t, err, minidrv.ErrCanceled)
			assert.Zero(t, lateWrites.Load(), "sink writes after CancelPendingIO returned")
			r.expectPrefix(inner, minidrv.ChunkSize(p))
			assert.Equal(t, minidrv.Locked, r.d.State())
			r.advExact()
		})
	}
}

// TestAdv5ReentrantAfterCancel: from inside the progress callback, the
// acquisition cancels itself (CancelPendingIO, which must not wait for the
// goroutine it runs on), then Unlocks, then Locks again, then tries to
// Uninitialize (which would close the device under the acquisition that
// is still running: it must be refused, within its bound, and not wait for
// ever for the goroutine it is called from). The acquisition returns
// ErrCanceled, the driver is Locked and the next acquisition exact.
func TestAdv5ReentrantAfterCancel(t *testing.T) {
	const abort = 300 * time.Millisecond
	r, p := slowRig(t, minidrv.Config{AbortTimeout: abort})
	ctx := context.Background()
	var once sync.Once
	var cerr, uerr, lerr, ierr error
	var itook time.Duration
	var stateAfterCancel minidrv.State
	progress := func(pr minidrv.Progress) bool {
		if pr.Bytes == 0 {
			return true
		}
		once.Do(func() {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			cerr = r.d.CancelPendingIO(cctx)
			stateAfterCancel = r.d.State()
			uerr = r.d.Unlock()
			lerr = r.d.Lock(cctx)
			t0 := time.Now()
			ierr = r.d.Uninitialize()
			itook = time.Since(t0)
		})
		return true
	}
	s := &chunkSink{}
	var err error
	advWithin(t, 20*time.Second, "AcquireItemData", func() { err = r.d.AcquireItemData(ctx, r.bed, s, progress) })
	require.ErrorIs(t, err, minidrv.ErrCanceled)
	r.expectPrefix(s, minidrv.ChunkSize(p))
	require.NoError(t, cerr, "CancelPendingIO from the callback")
	assert.Equal(t, minidrv.Locked, stateAfterCancel)
	t.Logf("from the callback after the cancel: Unlock %v, Lock %v, Uninitialize %v (%v)", uerr, lerr, ierr, itook)
	require.NoError(t, uerr)
	require.NoError(t, lerr)
	require.ErrorIs(t, ierr, minidrv.ErrBusy, "Uninitialize while the acquisition still runs")
	assert.Less(t, itook, 2*abort+time.Second+adv5Slack)
	assert.Equal(t, minidrv.Locked, r.d.State())
	r.adv2Settled()
	r.advExact()
}

// adv5Sink misbehaves at its k-th write.
type adv5Sink struct {
	k      int
	mode   string
	inner  chunkSink
	writes int
}

var errAdv5Sink = errors.New("adv5 sink failure")

func (s *adv5Sink) Write(b []byte) (int, error) {
	s.writes++
	if s.writes < s.k {
		return s.inner.Write(b)
	}
	switch s.mode {
	case "error":
		return 0, errAdv5Sink
	case "error after part":
		n, _ := s.inner.Write(b[:len(b)/2])
		return n, errAdv5Sink
	case "short":
		n, _ := s.inner.Write(b[:len(b)/2])
		return n, nil
	case "negative":
		return -1, nil
	case "too much":
		n, _ := s.inner.Write(b)
		return n + 1, nil
	case "slow":
		time.Sleep(2 * time.Millisecond)
	case "eof":
		return 0, io.EOF
	}
	return s.inner.Write(b)
}

// TestAdv5SinkMisbehaves: a sink that fails (at once or after part of a
// chunk), that writes less than it was given without an error, that
// returns a negative or an oversized count, that returns io.EOF, or that is
// slow. Each failure ends the acquisition with a clear error (the sink's
// own, or io.ErrShortWrite), never success with a truncated image and never
// a panic; the driver is Locked, and the next acquisition exact. The slow
// sink gets the exact image.
func TestAdv5SinkMisbehaves(t *testing.T) {
	r := newRig(t, minidrv.Config{QueueDepth: 4})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	for _, mode := range []string{"error", "error after part", "short", "negative", "too much", "eof", "slow"} {
		for _, k := range []int{1, 2, 5, 10} {
			desc := fmt.Sprintf("%s at write %d", mode, k)
			p := r.small(200, 100, 512)
			s := &adv5Sink{k: k, mode: mode}
			var err error
			o := catching(t, func() error { return r.d.AcquireItemData(ctx, r.bed, s, nil) })
			require.Nil(t, o.panicked, desc)
			err = o.err
			switch mode {
			case "slow":
				require.NoError(t, err, desc)
				r.expectImage(&s.inner)
			case "error", "error after part":
				require.ErrorIs(t, err, errAdv5Sink, desc)
			case "eof":
				require.ErrorIs(t, err, io.EOF, desc)
			default:
				require.ErrorIs(t, err, io.ErrShortWrite, desc)
			}
			if err != nil {
				assert.NotErrorIs(t, err, minidrv.ErrCanceled, "%s: a sink failure is not a cancel", desc)
				assert.NotEqual(t, minidrv.HResultOK, minidrv.HResult(err), desc)
				assert.LessOrEqual(t, int64(s.inner.Len()), p.ImageSize(), desc)
			}
			assert.Equal(t, minidrv.Locked, r.d.State(), desc)
		}
	}
	r.advExact()
}

// adv5DupWatcher hands every event of the watcher it wraps over twice,
// as a watch that was subscribed twice would.
type adv5DupWatcher struct {
	w       minidrv.HotplugWatcher
	pending []usb.HotplugEvent
}

func (d *adv5DupWatcher) Next(ctx context.Context) (usb.HotplugEvent, error) {
	if len(d.pending) > 0 {
		e := d.pending[0]
		d.pending = d.pending[1:]
		return e, nil
	}
	e, err := d.w.Next(ctx)
	if err == nil {
		d.pending = append(d.pending, e)
	}
	return e, err
}

func (d *adv5DupWatcher) Close() error { return d.w.Close() }

// TestAdv5HotplugChaos: a driver that follows the simulated scanner's
// hotplug sees its device unplugged at random moments of acquisitions
// (alone, with CancelPendingIO racing the removal, or flapping: unplugged
// and plugged back several times in a row), with every event delivered
// once or twice (a duplicating watcher). Every acquisition returns the
// exact image, ErrCanceled or ErrOffline with whole chunks;
// CancelPendingIO returns within AbortTimeout + slack; once the device
// stays plugged in the driver is Idle by itself within replugWithin +
// slack, and the next acquisition is exact.
func TestAdv5HotplugChaos(t *testing.T) {
	for _, dup := range []bool{false, true} {
		t.Run(fmt.Sprintf("duplicated=%v", dup), func(t *testing.T) {
			seed := adv5Seed(t)
			rng := rand.New(rand.NewPCG(seed, 555))
			const abort = time.Second
			r := newSimRig(t, minidrv.Config{AbortTimeout: abort, QueueDepth: 4}, usbsim.Config{Serial: "ADV5"},
				func(sc *usbsim.Scanner, cfg *minidrv.Config) {
					h := minidrvtest.SimHotplug(sc)
					cfg.Hotplug = h
					if dup {
						cfg.Hotplug = func() (minidrv.HotplugWatcher, error) {
							w, err := h()
							if err != nil {
								return nil, err
							}
							return &adv5DupWatcher{w: w}, nil
						}
					}
				})
			ctx := context.Background()
			counts := map[string]int{}
			rounds := 12
			if testing.Short() {
				rounds = 5
			}
			for round := range rounds {
				waitState(t, r.d, minidrv.Idle, replugWithin+adv5Slack)
				lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
				require.NoError(t, r.d.Lock(lctx))
				lcancel()
				p := r.small(256+rng.IntN(256), 64+rng.IntN(256), 512*(1+rng.IntN(16)))
				r.sc.SetBandwidth(int64(512<<10 + rng.IntN(2<<20)))
				mode := rng.IntN(3)
				delay := time.Duration(rng.IntN(60000)) * time.Microsecond
				flaps := 1 + rng.IntN(4)
				desc := fmt.Sprintf("round %d: mode %d, delay %v, flaps %d", round, mode, delay, flaps)
				sink := &chunkSink{sc: r.sc}
				res := make(chan error, 1)
				go func() { res <- r.d.AcquireItemData(ctx, r.bed, sink, nil) }()
				time.Sleep(delay) // a random moment
				var wg sync.WaitGroup
				var took time.Duration
				var cerr error
				if mode == 1 {
					wg.Go(func() {
						cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
						defer cancel()
						t0 := time.Now()
						cerr = r.d.CancelPendingIO(cctx)
						took = time.Since(t0)
					})
				}
				require.NoError(t, r.sc.Unplug())
				if mode == 2 {
					for range flaps {
						time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
						require.NoError(t, r.sc.Replug())
						time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
						require.NoError(t, r.sc.Unplug())
					}
				}
				err := waitErr(t, res)
				advWithin(t, 20*time.Second, desc+": CancelPendingIO", wg.Wait)
				if mode == 1 {
					require.NoError(t, cerr, desc)
					assert.Less(t, took, abort+adv5Slack, "%s: CancelPendingIO took %v", desc, took)
				}
				switch {
				case err == nil:
					counts["whole"]++
					r.expectImage(sink)
				case errors.Is(err, minidrv.ErrCanceled):
					counts["canceled"]++
					r.expectPrefix(sink, minidrv.ChunkSize(p))
				case errors.Is(err, minidrv.ErrOffline):
					counts["offline"]++
					r.expectPrefix(sink, minidrv.ChunkSize(p))
				default:
					t.Fatalf("%s: acquisition: %v", desc, err)
				}
				// Unplugged now: the driver must find out by itself.
				waitUntil(t, r.d, func(s minidrv.State) bool { return s == minidrv.Removed }, abort+adv5Slack)
				require.NoError(t, r.sc.Replug())
				waitState(t, r.d, minidrv.Idle, replugWithin+adv5Slack)
				r.adv2Settled()
				lctx, lcancel = context.WithTimeout(ctx, 10*time.Second)
				require.NoError(t, r.d.Lock(lctx))
				lcancel()
				r.advExact()
				require.NoError(t, r.d.Unlock())
			}
			t.Logf("%v", counts)
		})
	}
}

// TestAdv5HotplugDuringInitialize: the device is unplugged, plugged back,
// or both, at random moments of the first Initialize of a driver that
// follows hotplug. Initialize returns nil or ErrOffline /
// ErrDeviceCommunication, never hangs; a driver it initialized is Idle
// once the device stays plugged in (by itself, within replugWithin +
// slack), one it did not is Unloaded and initializes then; the next
// acquisition is exact, and Uninitialize leaves no watch behind.
func TestAdv5HotplugDuringInitialize(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 5555))
	ring, err := ioring.New(ioring.Config{Entries: 64})
	require.NoError(t, err)
	defer ring.Close()
	sc, err := usbsim.NewScanner(usbsim.Config{Serial: "ADV5INIT"})
	require.NoError(t, err)
	defer sc.Close()
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc),
		Hotplug: minidrvtest.SimHotplug(sc), AbortTimeout: time.Second})
	require.NoError(t, err)
	// A round that fails leaves the driver initialized: its watch must not
	// outlive the test and fail the next one's count of followers.
	defer func() {
		_ = d.Unlock()
		for range 4 {
			if d.Uninitialize() != nil {
				break
			}
		}
	}()
	ctx := context.Background()
	counts := map[string]int{}
	for round := range 20 {
		sc.SetLatency(time.Duration(rng.IntN(2000)) * time.Microsecond)
		delay := time.Duration(rng.IntN(4000)) * time.Microsecond
		flaps := rng.IntN(3)
		desc := fmt.Sprintf("round %d: delay %v, flaps %d", round, delay, flaps)
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(delay)
			_ = sc.Unplug()
			for range flaps {
				_ = sc.Replug()
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				_ = sc.Unplug()
			}
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			_ = sc.Replug()
		})
		ictx, cancel := context.WithTimeout(ctx, 15*time.Second)
		var ierr error
		advWithin(t, 20*time.Second, desc+": Initialize", func() { ierr = d.Initialize(ictx) })
		cancel()
		wg.Wait()
		sc.SetLatency(0)
		if ierr != nil {
			counts["failed"]++
			if !errors.Is(ierr, minidrv.ErrOffline) {
				require.ErrorIs(t, ierr, minidrv.ErrDeviceCommunication, desc)
			}
			require.Equal(t, minidrv.Unloaded, d.State(), desc)
			ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
			require.NoError(t, d.Initialize(ictx), desc)
			cancel()
		} else {
			counts["ok"]++
		}
		// Idle on the device's current plug-in: an Initialize that opened
		// the device before the unplug returns with the driver Idle on the
		// dead plug-in, and the watch's goroutine has yet to read the
		// removal and the arrival the unplug and replug queued.
		bus, addr := sc.BusAddr()
		require.Eventually(t, func() bool {
			b, a, ok := minidrv.HeldAt(d)
			return d.State() == minidrv.Idle && ok && b == bus && a == addr
		}, replugWithin+adv5Slack, time.Millisecond, "%s: driver not Idle on the plug-in at %d:%d", desc, bus, addr)
		lctx, lcancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, d.Lock(lctx), desc)
		lcancel()
		root, err := d.Items()
		require.NoError(t, err)
		bed := root.Find("Flatbed")
		require.NoError(t, d.WriteItemProperties(bed, minidrv.PropValue{ID: minidrv.PropXExtent, Value: 64},
			minidrv.PropValue{ID: minidrv.PropYExtent, Value: 32}))
		var s chunkSink
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		require.NoError(t, d.AcquireItemData(actx, bed, &s, nil), desc)
		acancel()
		require.Equal(t, usbsim.ExpectedImage(sc.LastScan()), s.buf.Bytes(), desc)
		require.NoError(t, d.Unlock())
		require.NoError(t, d.Uninitialize())
		require.Equal(t, minidrv.Unloaded, d.State())
		// The follower closes its done channel in a deferred call, while
		// still on its stack: a stack dump may catch it for a moment.
		waitFollowers(t, 0)
	}
	t.Logf("%v", counts)
}
