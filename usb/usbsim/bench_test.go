//go:build linux

package usbsim_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/usb/usbsim"
)

// BenchmarkBulkIn measures the simulator's bulk IN rate with a blocking
// host reading whole transfers.
func BenchmarkBulkIn(b *testing.B) {
	for _, mt := range []int{16 << 10, 64 << 10, 512 << 10} {
		b.Run(fmt.Sprintf("transfer=%d", mt), func(b *testing.B) {
			s := newScanner(b, usbsim.Config{MaxTransfer: mt})
			h := openHost(b, s)
			p := usbsim.ScanParams{DPI: 300, Width: uint32(mt), Height: 1 << 20, Format: usbsim.FormatGray8}
			require.NoError(b, h.send(usbsim.StartScanCommand(p)))
			b.SetBytes(int64(mt))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				n, err := readIn(h.in.FD, h.buf)
				if err != nil || n != mt {
					b.Fatalf("read %d, %v", n, err)
				}
			}
		})
	}
}

func BenchmarkImageFill(b *testing.B) {
	buf := make([]byte, 64<<10)
	p := usbsim.ScanParams{Seed: 1}
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		usbsim.FillImage(p, 3, buf)
	}
}
