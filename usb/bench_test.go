package usb_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// benchDev opens a simulated scanner with the given MaxTransfer for a
// benchmark; everything closes with it.
func benchDev(b *testing.B, maxTransfer int) (*ioring.Ring, *usbsim.Scanner, *Device) {
	b.Helper()
	r := NewRing(b, 64)
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: maxTransfer})
	require.NoError(b, err)
	b.Cleanup(func() { _ = s.Close() })
	d, err := usbsim.Open(r, s)
	require.NoError(b, err)
	b.Cleanup(func() { _ = d.Close() })
	return r, s, d
}

// BenchmarkBulkIn streams a scan from the simulated scanner with qd
// transfers of size bytes in flight on bulk IN, reaped from the ring. One
// op is one transfer.
func BenchmarkBulkIn(b *testing.B) {
	for _, size := range []int{16 << 10, 512 << 10} {
		for _, qd := range []int{1, 8} {
			b.Run(fmt.Sprintf("size=%dKiB/qd=%d", size>>10, qd), func(b *testing.B) {
				r, _, d := benchDev(b, size)
				out, _ := d.Endpoint(usbsim.AddrBulkOut)
				in, _ := d.Endpoint(usbsim.AddrBulkIn)
				mt := in.Desc().MaxTransfer
				p := usbsim.ScanParams{DPI: 300, Width: uint32(mt), Height: usbsim.MaxPixels, Format: usbsim.FormatGray8}
				_, err := out.Transfer(b.Context(), usbsim.StartScanCommand(p))
				require.NoError(b, err)
				bufs := make([][]byte, qd)
				for i := range bufs {
					bufs[i] = make([]byte, mt)
					_, err := in.Submit(bufs[i], Xfer{User: i})
					require.NoError(b, err)
				}
				cs := make([]ioring.Completion, 1)
				b.SetBytes(int64(mt))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := r.Reap(cs, -1); err != nil {
						b.Fatal(err)
					}
					c := cs[0]
					if c.Err != nil || c.N != mt {
						b.Fatalf("transfer: %d bytes, %v", c.N, c.Err)
					}
					i := c.User.(int)
					if _, err := in.Submit(bufs[i], Xfer{User: i}); err != nil {
						b.Fatal(err)
					}
				}
				require.NoError(b, d.CancelAll())
				Reap(b, r, qd)
			})
		}
	}
}

// BenchmarkCancelHung measures how long canceling pending bulk IN transfers
// on a hung device takes, from Token.Cancel until the last completion is
// reaped: one transfer whose readv waits in the kernel and pending-1 queued
// behind it. One op is one cancel of the batch; p50-ns and p99-ns are its
// latency.
func BenchmarkCancelHung(b *testing.B) {
	for _, pending := range []int{1, 8} {
		b.Run(fmt.Sprintf("pending=%d", pending), func(b *testing.B) {
			r, s, d := benchDev(b, 16<<10)
			s.Hang()
			in, _ := d.Endpoint(usbsim.AddrBulkIn)
			bufs := make([][]byte, pending)
			for i := range bufs {
				bufs[i] = make([]byte, in.Desc().MaxTransfer)
			}
			cs := make([]ioring.Completion, pending)
			h := latstat.New()
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				tok := r.NewToken()
				for i := range bufs {
					if _, err := in.Submit(bufs[i], Xfer{Token: tok}); err != nil {
						b.Fatal(err)
					}
				}
				// pending transfers and the readv of the first in the kernel.
				for r.InFlight() < pending+1 {
					time.Sleep(10 * time.Microsecond)
				}
				b.StartTimer()
				t0 := time.Now()
				if err := tok.Cancel(); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < pending; {
					n, err := r.Reap(cs[got:], -1)
					if err != nil {
						b.Fatal(err)
					}
					for _, c := range cs[got : got+n] {
						if c.Err != ErrCanceled {
							b.Fatalf("completion %v, want ErrCanceled", c.Err)
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
}
