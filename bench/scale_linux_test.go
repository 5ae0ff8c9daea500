package bench

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// processCPU returns the CPU time, user and system, of every thread of the
// process so far (0 if getrusage fails, which it does not on Linux).
func processCPU() time.Duration {
	user, sys := processTimes()
	return user + sys
}

// processTimes returns the user and system CPU time of every thread of the
// process so far (0 if getrusage fails).
func processTimes() (user, sys time.Duration) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// scaleLayouts are BenchmarkScale's ring layouts.
var scaleLayouts = []struct {
	name string
	w    Workload
}{{"shared", WorkloadScaleShared}, {"each", WorkloadScale}}

// scaleOps are BenchmarkScale's operations.
var scaleOps = []struct {
	name string
	w    Workload
}{{"nop", WorkloadNop}, {"read4k", WorkloadRead}}

// scalers returns the registered impls that implement Scaler, with the
// layouts each supports.
func scalers() []Impl {
	var out []Impl
	for _, impl := range Impls() {
		if _, ok := impl.(Scaler); ok && (impl.Supports(WorkloadScale) || impl.Supports(WorkloadScaleShared)) {
			out = append(out, impl)
		}
	}
	return out
}

// BenchmarkScale runs 1, 2, 4 and 8 goroutines, each doing one request at
// a time (submit, wait for its completion), NOPs or 4 KiB page-cache reads,
// on one ring shared by all of them (layout=shared) or on a ring each
// (layout=each), at GOMAXPROCS 1 and 2. ns/op is wall time per request of
// all goroutines together; ops/s is the total rate; cpu-ns/op is the CPU
// time (user and system, every thread of the process) per request, which
// says what a layout costs even when other load on the machine blurs the
// wall time.
func BenchmarkScale(b *testing.B) {
	for _, impl := range scalers() {
		sc := impl.(Scaler)
		for _, layout := range scaleLayouts {
			if !impl.Supports(layout.w) {
				continue
			}
			for _, g := range []int{1, 2, 4, 8} {
				for _, procs := range []int{1, 2} {
					for _, op := range scaleOps {
						if !impl.Supports(op.w) {
							continue
						}
						name := fmt.Sprintf("impl=%s/layout=%s/goroutines=%d/procs=%d/op=%s", impl.Name(), layout.name, g, procs, op.name)
						b.Run(name, func(b *testing.B) {
							cfg := ScaleConfig{Op: op.w, Shared: layout.w == WorkloadScaleShared, Goroutines: g, Procs: procs}
							if op.w == WorkloadRead {
								cfg.Read = readConfig(b, 1)
								b.SetBytes(blockSize)
							}
							defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
							var cpu time.Duration
							require.NoError(b, runScale(b, sc, cfg, b.N, true, &cpu))
							b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
							b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
						})
					}
				}
			}
		}
	}
}

// runScale runs n requests split over cfg.Goroutines workers, each of
// which makes its runner on its own goroutine, warms it up, and waits for
// the others; with b non-nil the timer covers only the workers' Run calls,
// and with cpu non-nil it receives the process's CPU time over them.
func runScale(b *testing.B, sc Scaler, cfg ScaleConfig, n int, warm bool, cpu *time.Duration) error {
	grp, err := sc.NewScale(cfg)
	if err != nil {
		return err
	}
	g := cfg.Goroutines
	var (
		ready            = make(chan error, g)
		start            = make(chan struct{})
		aborted          bool // written before start is closed
		running, exiting sync.WaitGroup
		runErrs          = make([]error, g)
		closeErrs        = make([]error, g)
	)
	running.Add(g)
	exiting.Add(g)
	for i := range g {
		share := n / g
		if i < n%g {
			share++
		}
		go func() {
			defer exiting.Done()
			r, err := grp.Worker(i)
			if err == nil && warm {
				if err = r.Run(warmupOps); err != nil {
					closeErrs[i] = r.Close()
				}
			}
			ready <- err
			if err != nil {
				running.Done()
				return
			}
			<-start
			if !aborted {
				runErrs[i] = r.Run(share)
			}
			running.Done()
			closeErrs[i] = r.Close()
		}()
	}
	var setupErr error
	for range g {
		setupErr = errors.Join(setupErr, <-ready)
	}
	aborted = setupErr != nil
	if b != nil {
		b.ReportAllocs()
		b.ResetTimer()
	}
	cpu0 := processCPU()
	close(start)
	running.Wait()
	if cpu != nil {
		*cpu = processCPU() - cpu0
	}
	if b != nil {
		b.StopTimer()
	}
	exiting.Wait()
	return errors.Join(setupErr, errors.Join(runErrs...), errors.Join(closeErrs...), grp.Close())
}

// TestScale runs every Scaler's layouts, small, with reads verified.
func TestScale(t *testing.T) {
	impls := scalers()
	if len(impls) == 0 {
		t.Skip("no impl implements Scaler here")
	}
	for _, impl := range impls {
		sc := impl.(Scaler)
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, layout := range scaleLayouts {
				if !impl.Supports(layout.w) {
					continue
				}
				for _, op := range scaleOps {
					for _, g := range []int{1, 3, 8} {
						cfg := ScaleConfig{Op: op.w, Shared: layout.w == WorkloadScaleShared, Goroutines: g, Procs: 1}
						if op.w == WorkloadRead {
							cfg.Read = readConfig(t, 1)
							cfg.Read.Verify = true
						}
						assert.NoError(t, runScale(nil, sc, cfg, 301, false, nil), "%s, %s, %d goroutines", layout.name, op.name, g)
					}
				}
			}
		})
	}
}

func TestScaleWorkerRead(t *testing.T) {
	cfg := ScaleConfig{Goroutines: 4, Read: ReadConfig{QD: 32, Offsets: []int64{0, 1, 2, 3, 4, 5, 6, 7}}}
	assert.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7}, cfg.WorkerRead(0).Offsets)
	assert.Equal(t, []int64{4, 5, 6, 7, 0, 1, 2, 3}, cfg.WorkerRead(2).Offsets)
	assert.Equal(t, 1, cfg.WorkerRead(3).QD, "one read at a time per worker")
	assert.Equal(t, []int64{0, 1, 2, 3, 4, 5, 6, 7}, cfg.Read.Offsets, "the shared offsets are left alone")
}
