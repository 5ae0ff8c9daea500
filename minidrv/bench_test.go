package minidrv_test

import (
	"context"
	"errors"
	"fmt"
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
// transfers in flight: from the call until the transfer has unwound (every
// completion in, the job aborted on the device, its IN pipe flushed, the
// driver Locked again).
//
// The scanner sends 4 MiB messages at 16 MiB/s, so the first transfer
// completes after about 250 ms, long after the cancel, while the abort's
// one-byte command is answered at once. (A low bandwidth cap would delay
// that answer too: usbsim waits out each message's transfer time with a
// timer, and sub-millisecond timers on an idle Go runtime fire late.)
func BenchmarkCancelPendingIO(b *testing.B) {
	for _, pending := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			r := newSimRig(b, minidrv.Config{QueueDepth: pending},
				usbsim.Config{MaxTransfer: usbsim.MaxMaxTransfer, Bandwidth: 16 << 20})
			ctx := context.Background()
			require.NoError(b, r.d.Lock(ctx))
			r.small(1024, 1024, 4096) // 256 chunks of 4 KiB
			h := latstat.New()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				res := make(chan error, 1)
				go func() { res <- r.d.AcquireItemData(ctx, r.bed, io.Discard, nil) }()
				// Wait until all the transfers are in flight on the ring.
				for r.ring.InFlight() < pending || r.d.State() != minidrv.Transferring {
					select {
					case err := <-res:
						b.Fatalf("acquisition ended before the cancel: %v", err)
					default:
					}
					runtime.Gosched()
				}
				t0 := time.Now()
				if err := r.d.CancelPendingIO(ctx); err != nil {
					b.Fatal(err)
				}
				h.Record(time.Since(t0))
				if err := <-res; !errors.Is(err, minidrv.ErrCanceled) {
					b.Fatalf("acquisition: %v, want ErrCanceled", err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(h.Quantile(0.50).Nanoseconds()), "p50-ns")
			b.ReportMetric(float64(h.Quantile(0.99).Nanoseconds()), "p99-ns")
		})
	}
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
