package bench

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Workload parameters, the same for every impl.
const (
	dataFileSize = 64 << 20 // 64 MiB: page-cached, larger than the CPU caches
	blockSize    = 4096
	numOffsets   = 1 << 16
	offsetSeed   = 1
	msgSize      = 64 // ping-pong message; <= PIPE_BUF, so writes are atomic
	cancelBuf    = 4096
	cancelEvery  = time.Millisecond // CancelUnderLoad: 1,000 cancels a second
	warmupOps    = 256              // untimed ops before a throughput run
	warmupCancel = 512              // requests armed and canceled, untimed, before a cancel run
)

var (
	dataOnce    sync.Once
	dataFile    *os.File
	dataCleanup func()
	dataErr     error
	offsets     []int64
)

// data returns the shared page-cached data file and its offsets.
func data(tb testing.TB) (*os.File, []int64) {
	tb.Helper()
	dataOnce.Do(func() {
		dataFile, dataCleanup, dataErr = TempDataFile(dataFileSize)
		offsets = RandomOffsets(dataFileSize, blockSize, numOffsets, offsetSeed)
	})
	require.NoError(tb, dataErr, "create data file")
	return dataFile, offsets
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dataCleanup != nil {
		dataCleanup()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutine leak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// supporting returns the registered impls that support w.
func supporting(w Workload) []Impl {
	var out []Impl
	for _, impl := range Impls() {
		if impl.Supports(w) {
			out = append(out, impl)
		}
	}
	return out
}

// warmUp runs a few untimed ops, so that first-use costs (an engine's
// per-slot state, page faults on fresh buffers, goroutine stacks) stay out
// of the measured steady state, for every impl alike.
func warmUp(b *testing.B, r Runner) {
	require.NoError(b, r.Run(warmupOps), "warm-up")
}

// runThroughput times r.Run(b.N) after a warm-up and reports ops/s next to
// ns/op, and the process's user and system CPU time per op.
func runThroughput(b *testing.B, r Runner) {
	warmUp(b, r)
	b.ReportAllocs()
	user0, sys0 := processTimes()
	b.ResetTimer()
	err := r.Run(b.N)
	b.StopTimer()
	require.NoError(b, err)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	reportCPU(b, user0, sys0)
}

// reportCPU reports where the time of the b.N ops went since processTimes
// returned user0 and sys0: in the kernel (the system calls and the I/O
// itself, sys-ns/op) or in user space (the engine, the loop, Go's runtime,
// user-ns/op), for the whole process, per op. The kernel's tick-based
// accounting makes them rough at short -benchtime.
func reportCPU(b *testing.B, user0, sys0 time.Duration) {
	user, sys := processTimes()
	b.ReportMetric(float64(user-user0)/float64(b.N), "user-ns/op")
	b.ReportMetric(float64(sys-sys0)/float64(b.N), "sys-ns/op")
}

// closeAfter closes c when the benchmark function returns, failing it on error.
func closeAfter(b *testing.B, c interface{ Close() error }) {
	b.Cleanup(func() { require.NoError(b, c.Close(), "close") })
}

func BenchmarkNop(b *testing.B) {
	for _, impl := range supporting(WorkloadNop) {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("impl=%s/batch=%d", impl.Name(), batch), func(b *testing.B) {
				r, err := impl.NewNop(NopConfig{Batch: batch})
				require.NoError(b, err)
				closeAfter(b, r)
				runThroughput(b, r)
			})
		}
	}
}

func readConfig(tb testing.TB, qd int) ReadConfig {
	f, offs := data(tb)
	return ReadConfig{FD: int(f.Fd()), BlockSize: blockSize, QD: qd, Offsets: offs}
}

func BenchmarkRead4K(b *testing.B) { benchRead4K(b, false) }

// BenchmarkRead4KFixed is BenchmarkRead4K into buffers registered with the
// engine once (READ_FIXED), for impls that have registered buffers: the
// same file, offsets and queue depths, so that each row compares with its
// plain BenchmarkRead4K row of the same run.
func BenchmarkRead4KFixed(b *testing.B) { benchRead4K(b, true) }

func benchRead4K(b *testing.B, fixed bool) {
	w := WorkloadRead
	if fixed {
		w = WorkloadReadFixed
	}
	for _, impl := range supporting(w) {
		for _, qd := range []int{1, 32} {
			b.Run(fmt.Sprintf("impl=%s/qd=%d", impl.Name(), qd), func(b *testing.B) {
				cfg := readConfig(b, qd)
				cfg.Fixed = fixed
				r, err := impl.NewRead(cfg)
				require.NoError(b, err)
				closeAfter(b, r)
				b.SetBytes(blockSize)
				runThroughput(b, r)
			})
		}
	}
}

// startEcho starts the shared echo peer for one benchmark or test.
func startEcho(tb testing.TB) *Echo {
	e, err := StartEcho(msgSize)
	require.NoError(tb, err)
	return e
}

// transports are BenchmarkPingPong's: two pipes (WorkloadPingPong), an
// AF_UNIX socketpair and TCP loopback (WorkloadSockPingPong).
var transports = []struct {
	name string
	w    Workload
}{{TransportPipe, WorkloadPingPong}, {TransportUnix, WorkloadSockPingPong}, {TransportTCP, WorkloadSockPingPong}}

// startTransportEcho starts the echo peer of a transport and returns it
// with the PingPongConfig that talks to it.
func startTransportEcho(tb testing.TB, transport string) (*Echo, PingPongConfig) {
	if transport == TransportPipe {
		e := startEcho(tb)
		return e, PingPongConfig{PingFD: e.PingFD, PongFD: e.PongFD, MsgSize: msgSize}
	}
	e, err := StartSockEcho(transport, msgSize)
	require.NoError(tb, err)
	return e, PingPongConfig{PingFD: e.PingFD, PongFD: e.PongFD, Socket: true, MsgSize: msgSize}
}

// BenchmarkPingPong is a 64-byte message and its echo per op, through two
// pipes (transport=pipe) or over a connected stream socket: an AF_UNIX
// socketpair (transport=unix) or TCP loopback (transport=tcp), sent and
// received with each impl's socket calls. ns/op is the round trip.
func BenchmarkPingPong(b *testing.B) {
	for _, impl := range Impls() {
		for _, tr := range transports {
			if !impl.Supports(tr.w) {
				continue
			}
			b.Run("impl="+impl.Name()+"/transport="+tr.name, func(b *testing.B) {
				e, cfg := startTransportEcho(b, tr.name)
				closeAfter(b, e) // cleanups run last-in first-out: runner first, then echo
				r, err := impl.NewPingPong(cfg)
				require.NoError(b, err)
				closeAfter(b, r)
				runThroughput(b, r)
			})
		}
	}
}

// warmUpCancel runs untimed arm+cancel cycles of pending requests until
// warmupCancel requests have been through: first-use costs out, as in
// warmUp, and an engine that takes other slots of its ring each cycle has
// met each of them by then (cancelio's cancel rings have 256 entries).
func warmUpCancel(tb testing.TB, r CancelRunner, pending int) {
	for range max(1, (warmupCancel+pending-1)/pending) {
		require.NoError(tb, r.Arm(), "warm-up arm")
		_, err := r.CancelAndWait()
		require.NoError(tb, err, "warm-up cancel")
	}
}

// runCancel arms and cancels b.N times after warmUpCancel, and reports the
// latency distribution of the cancels: ns/op is the mean cancel latency
// (Arm is not in it, though it is in the wall time), p50-ns, p99-ns and
// p999-ns its percentiles, and slow-% the share of cancels that took more
// than 1.25 times the median (see the package doc).
func runCancel(b *testing.B, r CancelRunner, pending int) {
	h := latstat.New()
	warmUpCancel(b, r, pending)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// No require here: testify's require calls b.Helper, which walks
		// the stack (thousands of instructions) on every call, failing or
		// not, and that work between two cancels evicts the caches the
		// next one runs from.
		if err := r.Arm(); err != nil {
			b.Fatalf("arm: %v", err)
		}
		d, err := r.CancelAndWait()
		if err != nil {
			b.Fatalf("cancel: %v", err)
		}
		h.Record(d)
	}
	b.StopTimer()
	s := h.Summary()
	b.ReportMetric(float64(s.Mean), "ns/op")
	b.ReportMetric(float64(s.P50), "p50-ns")
	b.ReportMetric(float64(s.P99), "p99-ns")
	b.ReportMetric(float64(s.P999), "p999-ns")
	b.ReportMetric(100*float64(h.Above(s.P50*5/4))/float64(max(1, s.Count)), "slow-%")
}

func BenchmarkCancel(b *testing.B) {
	for _, impl := range supporting(WorkloadCancel) {
		for _, pending := range []int{1, 64} {
			b.Run(fmt.Sprintf("impl=%s/pending=%d", impl.Name(), pending), func(b *testing.B) {
				p, err := NewPipes(pending)
				require.NoError(b, err)
				closeAfter(b, p)
				r, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf})
				require.NoError(b, err)
				closeAfter(b, r)
				runCancel(b, r, pending)
			})
		}
	}
}

// BenchmarkCancelEach is BenchmarkCancel with the 64 pending reads canceled
// request by request, each by its own handle, through the impl's best API
// for that (cancelio: Ring.Cancel of the 64 Requests, one system call;
// liburing: 64 IORING_OP_ASYNC_CANCEL by user_data in one submit;
// goroutines: one eventfd write per request; netpoll: SetReadDeadline per
// file, as in BenchmarkCancel). Same metrics as BenchmarkCancel.
func BenchmarkCancelEach(b *testing.B) {
	const pending = 64
	for _, impl := range supporting(WorkloadCancelEach) {
		b.Run("impl="+impl.Name()+"/pending="+strconv.Itoa(pending), func(b *testing.B) {
			p, err := NewPipes(pending)
			require.NoError(b, err)
			closeAfter(b, p)
			r, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf, Each: true})
			require.NoError(b, err)
			closeAfter(b, r)
			runCancel(b, r, pending)
		})
	}
}

// BenchmarkCancelUnderLoad measures 4 KiB reads (QD 32) and ping-pongs while
// the same impl submits and cancels a read on another, empty pipe 1,000
// times a second. cancels/s is the cancel rate really achieved, and
// cancels-% the share of the requested cycles (one per cancelEvery of the
// timed run) that completed as canceled within it: a starved canceler shows
// there, not as a flattering throughput. A run shorter than about 100
// cancelEvery makes both noise (a cycle more or less is 1%).
func BenchmarkCancelUnderLoad(b *testing.B) {
	for _, impl := range supporting(WorkloadCancelUnderLoad) {
		if impl.Supports(WorkloadRead) {
			b.Run("impl="+impl.Name()+"/op=read4k-qd32", func(b *testing.B) {
				load := loadPipe(b)
				cfg := readConfig(b, 32)
				cfg.Load = load
				r, err := impl.NewRead(cfg)
				require.NoError(b, err)
				closeAfter(b, r)
				b.SetBytes(blockSize)
				runUnderLoad(b, r)
			})
		}
		if impl.Supports(WorkloadPingPong) {
			b.Run("impl="+impl.Name()+"/op=pingpong", func(b *testing.B) {
				load := loadPipe(b)
				e := startEcho(b)
				closeAfter(b, e)
				r, err := impl.NewPingPong(PingPongConfig{PingFD: e.PingFD, PongFD: e.PongFD, MsgSize: msgSize, Load: load})
				require.NoError(b, err)
				closeAfter(b, r)
				runUnderLoad(b, r)
			})
		}
	}
}

// loadPipe returns the CancelLoad on a fresh empty pipe.
func loadPipe(tb testing.TB) CancelLoad {
	p, err := NewPipes(1)
	require.NoError(tb, err)
	tb.Cleanup(func() { p.Close() })
	return CancelLoad{Every: cancelEvery, FD: p.R[0]}
}

func runUnderLoad(b *testing.B, r Runner) {
	cc, ok := r.(CancelCounter)
	require.True(b, ok, "a runner with a CancelLoad must implement CancelCounter")
	warmUp(b, r)
	b.ReportAllocs()
	user0, sys0 := processTimes()
	b.ResetTimer()
	before := cc.Cancels()
	err := r.Run(b.N)
	after := cc.Cancels()
	b.StopTimer()
	require.NoError(b, err)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	b.ReportMetric(float64(after-before)/b.Elapsed().Seconds(), "cancels/s")
	b.ReportMetric(100*float64(after-before)/(float64(b.Elapsed())/float64(cancelEvery)), "cancels-%")
	reportCPU(b, user0, sys0)
}
