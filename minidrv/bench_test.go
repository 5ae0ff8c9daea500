package minidrv_test

import (
	"context"
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// BenchmarkCancelPendingIO measures CancelPendingIO with `pending` bulk-IN
// transfers in flight: from the call until it returns, that is until every
// transfer has delivered its completion and the driver is Locked again.
// The device's recovery (abort, flush) runs after that, off the measured
// path; the next iteration's acquisition waits for it, untimed.
//
// The scanner sends the image (about 2 MB) as one message at 16 MiB/s, so
// the first transfer completes after about 120 ms, long after the cancel.
// A cancel that loses the race all the same (the image ended first) is not
// a sample. In hung/pending=8 the device stops answering on every endpoint
// a millisecond before the cancel (and resumes after it, so that its recovery ends and
// the next iteration can start). Only the cancel is timed (the timer stops
// around the set-up of each iteration), so allocs/op counts the
// allocations of the cancel path, and those other goroutines (the
// acquisition returning, the recovery starting) make meanwhile.
//
// Run it as go test -run '^$' -bench CancelPendingIO -benchmem -count 5
// ./minidrv/ (the set-up of each iteration is untimed but not free: with
// the default -benchtime a run takes minutes; -benchtime 2000x is shorter).
func BenchmarkCancelPendingIO(b *testing.B) {
	for _, c := range []struct {
		name    string
		pending int
		hung    bool
	}{
		{"pending=1", 1, false},
		{"pending=8", 8, false},
		{"pending=64", 64, false},
		{"hung/pending=8", 8, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			// A generous AbortTimeout: the rig's set-up probes the device,
			// on a machine that may be busy; the cancel never waits for it.
			r := newSimRig(b, minidrv.Config{QueueDepth: c.pending, AbortTimeout: 5 * time.Second},
				usbsim.Config{MaxTransfer: usbsim.MaxMaxTransfer, Bandwidth: 16 << 20})
			ctx := context.Background()
			require.NoError(b, r.d.Lock(ctx))
			r.small(1200, 1700, 4096) // about 2 MB in 4 KiB chunks: the first message takes about 120 ms
			h := latstat.New()
			lost := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				res := r.startInFlight(b, c.pending)
				if c.hung {
					r.sc.Hang()
					// Let the device's goroutines settle into the hang (an
					// IN write blocked on the socket is kicked, which
					// allocates its error): the cancel meets a device that
					// has stopped answering, and what its simulation does
					// on the way there is not counted as the cancel's.
					time.Sleep(time.Millisecond)
				}
				b.StartTimer()
				t0 := time.Now()
				if err := r.d.CancelPendingIO(ctx); err != nil {
					b.Fatal(err)
				}
				took := time.Since(t0)
				b.StopTimer()
				if c.hung {
					r.sc.Resume()
				}
				switch err := <-res; {
				case errors.Is(err, minidrv.ErrCanceled):
					h.Record(took)
				case err == nil:
					// The image was complete before the cancel (the machine
					// is busy, the benchmark's goroutine waited): the cancel
					// lost the race, as the contract allows. Not a sample.
					lost++
				default:
					b.Fatalf("acquisition: %v, want ErrCanceled", err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(h.Quantile(0.50).Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(h.Quantile(0.99).Nanoseconds()), "p99-ns")
			if lost > b.N/10 {
				b.Fatalf("%d of %d cancels lost the race to the image's end", lost, b.N)
			}
		})
	}
}

// startInFlight starts an acquisition into io.Discard and returns once
// pending transfers are in flight on the ring; the channel gets the
// acquisition's result. An acquisition that ends first (the simulated
// device may deliver the whole image before the waiting goroutine looks,
// when the machine is busy) is started again, up to 100 times.
func (r *rig) startInFlight(b *testing.B, pending int) <-chan error {
	ctx := context.Background()
	for range 100 {
		res := make(chan error, 1)
		go func() { res <- r.d.AcquireItemData(ctx, r.bed, io.Discard, nil) }()
		for r.ring.InFlight() < pending || !minidrv.Streaming(r.d) {
			select {
			case err := <-res:
				if err != nil {
					b.Fatalf("acquisition ended before the cancel: %v", err)
				}
				res = nil
			default:
			}
			if res == nil {
				break
			}
			runtime.Gosched()
		}
		if res != nil {
			return res
		}
	}
	b.Fatalf("100 acquisitions ended before %d transfers were in flight", pending)
	return nil
}

// BenchmarkAcquire acquires a simulated A4 page at 300 dpi in 24-bit color
// (2480×3507 pixels, about 26 MB) in 64 KiB chunks.
func BenchmarkAcquire(b *testing.B) {
	r := newRig(b, minidrv.Config{})
	ctx := context.Background()
	require.NoError(b, r.d.Lock(ctx))
	require.NoError(b, r.d.WriteItemProperties(r.bed,
		minidrv.PropValue{ID: minidrv.PropXResolution, Value: 300},
		minidrv.PropValue{ID: minidrv.PropYResolution, Value: 300},
		minidrv.PropValue{ID: minidrv.PropXExtent, Value: 2480},
		minidrv.PropValue{ID: minidrv.PropYExtent, Value: 3507},
		minidrv.PropValue{ID: minidrv.PropDataType, Value: int(minidrv.DataColor)},
	))
	b.SetBytes(r.d.Properties().ImageSize())
	b.ReportAllocs()
	for b.Loop() {
		if err := r.d.AcquireItemData(ctx, r.bed, io.Discard, nil); err != nil {
			b.Fatal(err)
		}
	}
}
