//go:build cgo && linux

package usb_test

// Benchmarks on a real Linux USB host stack: usbsim's scanner served as a
// FunctionFS gadget on dummy_hcd inside the usbvm guest, opened through
// each backend of gadgetBackends. Run them with
//
//	go test -exec usbvm-exec -run '^$' -bench Gadget ./usb/
//
// The guest is emulated (QEMU TCG on most machines) and dummy_hcd moves
// data on a 1 ms timer in software: absolute figures are not those of USB
// hardware. They exist to compare the backends with each other in one run,
// on the same kernel code paths (usbcore, usbfs, the host controller
// driver's cancel and completion). Outside the guest they skip.

import (
	"fmt"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// forEachBackendB runs f as one sub-benchmark per backend.
func forEachBackendB(b *testing.B, f func(b *testing.B, backend string)) {
	for _, name := range gadgetBackends {
		b.Run("backend="+name, func(b *testing.B) { f(b, name) })
	}
}

// BenchmarkGadgetCancel measures the cancel of pending bulk IN transfers
// on a hung gadget scanner, from Token.Cancel until the last of them is
// reaped: each of the pending transfers covered by one token, the oldest
// one handed to the backend (an URB in the kernel) for a while. One op is
// one cancel of the batch; p50-ns and p99-ns are its latency. Under TCG
// the figures are not hardware figures: compare backends in one run.
func BenchmarkGadgetCancel(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, backend string) {
		for _, pending := range []int{1, 8} {
			b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
				gd := newGadgetDev(b, backend, usbsim.Config{MaxTransfer: 16 << 10})
				gd.s.Hang()
				bufs := make([][]byte, pending)
				for i := range bufs {
					bufs[i] = make([]byte, gd.maxTransfer)
				}
				cs := make([]ioring.Completion, pending)
				h := latstat.New()
				b.ReportAllocs()
				for b.Loop() {
					b.StopTimer()
					tok := gd.r.NewToken()
					for i := range bufs {
						if _, err := gd.in.Submit(bufs[i], Xfer{Token: tok}); err != nil {
							b.Fatal(err)
						}
					}
					// Let the oldest transfer reach the kernel.
					time.Sleep(2 * time.Millisecond)
					b.StartTimer()
					t0 := time.Now()
					if err := tok.Cancel(); err != nil {
						b.Fatal(err)
					}
					for got := 0; got < pending; {
						n, err := gd.r.Reap(cs[got:], -1)
						if err != nil {
							b.Fatal(err)
						}
						for _, c := range cs[got : got+n] {
							if c.Err != ErrCanceled {
								b.Fatalf("completion %d bytes, %v; want ErrCanceled", c.N, c.Err)
							}
						}
						got += n
					}
					h.Record(time.Since(t0))
				}
				b.ReportMetric(float64(h.Quantile(0.5)), "p50-ns")
				b.ReportMetric(float64(h.Quantile(0.99)), "p99-ns")
			})
		}
	})
}

// BenchmarkGadgetBulkIn streams a scan from the gadget scanner with qd
// bulk IN transfers of size bytes in flight, reaped from the ring and
// submitted again. One op is one transfer (b.SetBytes: MB/s). Under TCG
// the figures are not hardware figures: compare backends in one run.
func BenchmarkGadgetBulkIn(b *testing.B) {
	forEachBackendB(b, func(b *testing.B, backend string) {
		for _, size := range []int{16 << 10, 512 << 10} {
			for _, qd := range []int{1, 8} {
				b.Run(fmt.Sprintf("size=%dKiB/qd=%d", size>>10, qd), func(b *testing.B) {
					streamBulkIn(b, newGadgetDev(b, backend, usbsim.Config{}), size, qd)
				})
			}
		}
	})
}

// BenchmarkGadgetDepth streams a scan from the gadget scanner through
// usbfs with qd=8 bulk IN transfers of size bytes submitted and depth of
// them in the kernel at once (WithDepth; the rest wait in the Device), to
// choose WithDepth's default: more URBs in the kernel keep the bus busy
// between completions, fewer make a cancel cheaper (one DISCARDURB per
// URB in the kernel). One op is one transfer (b.SetBytes: MB/s). Under TCG
// the figures are not hardware figures: compare depths in one run.
func BenchmarkGadgetDepth(b *testing.B) {
	const qd = 8
	for _, size := range []int{16 << 10, 64 << 10} {
		for _, depth := range []int{1, 2, 4, 8} {
			b.Run(fmt.Sprintf("size=%dKiB/depth=%d", size>>10, depth), func(b *testing.B) {
				streamBulkIn(b, newGadgetDev(b, "usbfs", usbsim.Config{}, WithDepth(depth)), size, qd)
			})
		}
	}
}

// streamBulkIn is the loop of the bulk IN benchmarks: a scan longer than
// any run streams from gd with qd transfers of size bytes in flight, each
// reaped from the ring and submitted again. One op is one transfer.
func streamBulkIn(b *testing.B, gd *gadgetDev, size, qd int) {
	// Lines of MaxTransfer bytes, so every message is full and transfers
	// gather them.
	p := usbsim.ScanParams{DPI: 300, Width: uint32(gd.maxTransfer), Height: usbsim.MaxPixels, Format: usbsim.FormatGray8}
	gd.send(b, usbsim.StartScanCommand(p))
	bufs := make([][]byte, qd)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		if _, err := gd.in.Submit(bufs[i], Xfer{User: i}); err != nil {
			b.Fatal(err)
		}
	}
	cs := make([]ioring.Completion, 1)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := gd.r.Reap(cs, -1); err != nil {
			b.Fatal(err)
		}
		c := cs[0]
		if c.Err != nil || c.N != size {
			b.Fatalf("transfer: %d bytes, %v", c.N, c.Err)
		}
		i := c.User.(int)
		if _, err := gd.in.Submit(bufs[i], Xfer{User: i}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := gd.d.CancelAll(); err != nil {
		b.Fatal(err)
	}
	Reap(b, gd.r, qd)
}
