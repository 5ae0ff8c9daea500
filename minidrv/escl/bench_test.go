package escl_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// BenchmarkScanimageCancel measures Ctrl-C in scanimage during a scan
// served by the handler: SIGINT until scanimage has exited
// (sigint-to-exit), and the DELETE's arrival until the driver is unlocked
// and idle (delete-to-idle), as p50 and p99 over b.N cancels; also
// CancelPendingIO's own time. device=ok streams slowly; device=hung stops
// answering mid-page, so the driver's abort runs into its timeout (250 ms
// here) before the device is reset.
func BenchmarkScanimageCancel(b *testing.B) {
	for _, hung := range []bool{false, true} {
		name := "device=ok"
		if hung {
			name = "device=hung"
		}
		b.Run(name, func(b *testing.B) {
			bin := scanimage(b)
			r := newRig(b, nil)
			env := saneConfig(b, r)
			out := filepath.Join(b.TempDir(), "out.png")
			exit, idle, cpio := latstat.New(), latstat.New(), latstat.New()
			for b.Loop() {
				if hung {
					r.dev.hangAfter(1 << 20) // of 8.9 MB, in milliseconds
				} else {
					r.dev.setBandwidth(500_000) // 8.9 MB in 18 s
				}
				var stderr bytes.Buffer
				cmd := slowScan(b, bin, env, r, out, &stderr)
				took, err := interrupt(b, cmd, os.Interrupt, 15*time.Second)
				if err == nil {
					b.Fatalf("scanimage succeeded; want a cancel")
				}
				rep := r.report(b)
				if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseDelete || !errors.Is(rep.Err, minidrv.ErrCanceled) {
					b.Fatalf("job %v by %v (%v), want canceled by DELETE", rep.Outcome, rep.Cause, rep.Err)
				}
				r.dev.resume()
				r.waitState(b, minidrv.Idle)
				exit.Record(took)
				idle.Record(rep.Idle.Sub(rep.CancelAt))
				cpio.Record(rep.CancelTook)
			}
			b.ReportMetric(float64(exit.Quantile(0.5)), "sigint-to-exit-p50-ns")
			b.ReportMetric(float64(exit.Quantile(0.99)), "sigint-to-exit-p99-ns")
			b.ReportMetric(float64(idle.Quantile(0.5)), "delete-to-idle-p50-ns")
			b.ReportMetric(float64(idle.Quantile(0.99)), "delete-to-idle-p99-ns")
			b.ReportMetric(float64(cpio.Quantile(0.5)), "cancelpendingio-p50-ns")
			b.ReportMetric(float64(cpio.Quantile(0.99)), "cancelpendingio-p99-ns")
		})
	}
}
