//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

import (
	"context"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/ioring"
)

// BenchmarkCancel measures the cancel latency of one pending bulk IN on a
// silent device: from Request.Cancel to the completion (ErrCanceled)
// delivered to Request.Wait, through USBDEVFS_DISCARDURB, the reaper's poll
// request and Ring.Complete. kind=ioctl times the bare USBDEVFS_DISCARDURB
// (the kernel's part: usb_kill_urb waits for the host controller) for
// comparison. Run it in the usbvm guest:
//
//	go test -exec usbvm-exec -run '^$' -bench Cancel ./usb/internal/usbfs/
func BenchmarkCancel(b *testing.B) {
	usbvm.RequireGuest(b)
	for _, be := range backends(b) {
		for _, kind := range []string{"request", "ioctl"} {
			b.Run("backend="+be.String()+"/kind="+kind, func(b *testing.B) {
				x := newRig(b, be, Config{})
				h := latstat.New()
				buf := make([]byte, 512)
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					req, err := x.in.Submit(buf, TransferOptions{Await: true})
					if err != nil {
						b.Fatal(err)
					}
					var t0 time.Time
					if kind == "ioctl" {
						x.d.mu.Lock()
						var addr uintptr
						for a := range x.d.inflight {
							addr = a
						}
						x.d.mu.Unlock()
						t0 = time.Now()
						if err := discardURB(x.d.fd, addr); err != nil {
							b.Fatalf("DISCARDURB: %v", err)
						}
						h.Record(time.Since(t0))
					} else {
						t0 = time.Now()
						req.Cancel()
					}
					c, err := req.Wait(ctx)
					if kind == "request" {
						h.Record(time.Since(t0))
					}
					if err != nil || !ioringIsCanceled(c.Err) {
						b.Fatalf("completion %v, %v; want ErrCanceled", c.Err, err)
					}
				}
				s := h.Summary()
				b.ReportMetric(float64(s.P50.Nanoseconds()), "p50-ns")
				b.ReportMetric(float64(s.P90.Nanoseconds()), "p90-ns")
				b.ReportMetric(float64(s.P99.Nanoseconds()), "p99-ns")
				b.ReportMetric(float64(s.Max.Nanoseconds()), "max-ns")
			})
		}
	}
}

func ioringIsCanceled(err error) bool {
	return err != nil && (err == ioring.ErrCanceled || err == ioring.ErrTimeout)
}
