package bench

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// Workload names one benchmark suite. An Impl says which ones it supports;
// the suites emit no sub-benchmark for the others.
type Workload int

// The workloads. Each is the same for every Impl in a run: the harness owns the
// fds, the data file, the random offsets and the echo peer; an Impl only
// chooses how to submit, wait and cancel.
const (
	// WorkloadNop submits no-op requests in batches (BenchmarkNop). Only
	// meaningful for submission-queue engines.
	WorkloadNop Workload = iota
	// WorkloadRead reads 4 KiB blocks at random offsets of a page-cached
	// file, QD at a time (BenchmarkRead4K).
	WorkloadRead
	// WorkloadPingPong sends a message down a pipe to the harness's echo peer
	// and reads the echo back, one round trip per op (BenchmarkPingPong).
	WorkloadPingPong
	// WorkloadCancel cancels reads pending on empty pipes, all at once,
	// and times the cancel until the last completion is delivered
	// (BenchmarkCancel).
	WorkloadCancel
	// WorkloadCancelUnderLoad runs WorkloadRead or WorkloadPingPong while a
	// read on another, empty pipe is submitted and canceled every
	// CancelLoad.Every (BenchmarkCancelUnderLoad).
	WorkloadCancelUnderLoad
	// WorkloadCancelEach is WorkloadCancel with every read canceled by
	// itself, request by request, through the impl's best API for that
	// (a batch form where it has one): NewCancel with CancelConfig.Each
	// (BenchmarkCancelEach).
	WorkloadCancelEach
	// WorkloadScale is BenchmarkScale's layout=each: several goroutines,
	// each with an engine instance (ring) of its own, each doing one no-op
	// or one 4 KiB read at a time. Impls that serve it implement Scaler.
	WorkloadScale
	// WorkloadScaleShared is BenchmarkScale's layout=shared: the same, with
	// one engine instance shared by every goroutine.
	WorkloadScaleShared
	// WorkloadReadFixed is WorkloadRead into buffers registered with the
	// engine once (ReadConfig.Fixed; io_uring's READ_FIXED), beside
	// WorkloadRead's plain reads of the same blocks (BenchmarkRead4KFixed).
	WorkloadReadFixed
	// WorkloadSockPingPong is WorkloadPingPong over a connected stream
	// socket (an AF_UNIX socketpair or TCP loopback) instead of two pipes:
	// send and recv, one round trip per op (BenchmarkPingPong's
	// transport=unix and transport=tcp).
	WorkloadSockPingPong
)

// String returns the workload's short name.
func (w Workload) String() string {
	switch w {
	case WorkloadNop:
		return "nop"
	case WorkloadRead:
		return "read"
	case WorkloadPingPong:
		return "pingpong"
	case WorkloadCancel:
		return "cancel"
	case WorkloadCancelUnderLoad:
		return "cancel-under-load"
	case WorkloadCancelEach:
		return "cancel-each"
	case WorkloadScale:
		return "scale"
	case WorkloadScaleShared:
		return "scale-shared"
	case WorkloadReadFixed:
		return "read-fixed"
	case WorkloadSockPingPong:
		return "sock-pingpong"
	}
	return "workload(?)"
}

// ErrUnsupported is returned by an Impl's constructors for a workload it does
// not support. The suites consult Supports first, so it is a safety net.
var ErrUnsupported = errors.New("bench: workload not supported by this impl")

// Impl is one way of doing the workloads' I/O: the value of a benchmark's
// impl= key. Constructors are called from the benchmark's goroutine, outside
// the timed region; the Runner they return is used by that goroutine only
// and closed by it. fds in the configs belong to the harness: a runner may
// dup them and may set O_NONBLOCK on them (each runner gets fresh pipes), but
// must not close them, and must close its dups in Close.
type Impl interface {
	// Name is the impl= value: short, no spaces, no '/'.
	Name() string
	// Supports reports whether the impl can run w here (it may probe the
	// kernel, e.g. for io_uring).
	Supports(w Workload) bool
	// NewNop returns a Runner whose Run(n) completes n no-op requests,
	// submitted cfg.Batch per system call where the impl can batch.
	NewNop(cfg NopConfig) (Runner, error)
	// NewRead returns a Runner whose Run(n) completes n reads of
	// cfg.BlockSize bytes, cfg.QD in flight.
	NewRead(cfg ReadConfig) (Runner, error)
	// NewPingPong returns a Runner whose Run(n) does n round trips.
	NewPingPong(cfg PingPongConfig) (Runner, error)
	// NewCancel returns a CancelRunner over len(cfg.FDs) empty pipes; with
	// cfg.Each (WorkloadCancelEach) it cancels request by request.
	NewCancel(cfg CancelConfig) (CancelRunner, error)
}

// Runner runs one throughput workload.
type Runner interface {
	// Run completes n operations and returns when the last one has
	// completed. An operation that fails, returns short or (with Verify)
	// returns wrong bytes ends Run with an error.
	Run(n int) error
	// Close stops any background work (CancelLoad), releases the runner's
	// resources and waits for its goroutines to exit.
	Close() error
}

// CancelCounter is implemented by runners built with a CancelLoad: it
// reports how many background read+cancel cycles have completed so far, so
// the suite can report the cancel rate that was really achieved.
type CancelCounter interface {
	Cancels() int64
}

// CancelRunner runs the cancel-latency workload: one read pending on each of
// several empty pipes, then one cancel of all of them.
type CancelRunner interface {
	// Arm starts one read on every fd and returns once each is pending: for a
	// submission-queue engine, once submitted; for goroutines, once each is
	// blocked in the kernel or parked, as far as the impl can tell (it should
	// say how it knows in its doc).
	Arm() error
	// CancelAndWait cancels every read started by Arm and waits until the
	// completion of each has been delivered to the caller (reaped, received).
	// It returns the time from just before the first cancel action to the
	// delivery of the last completion, on the monotonic clock. Every read must
	// complete as canceled; data or another error is an error.
	CancelAndWait() (time.Duration, error)
	// Close releases everything; the runner must be idle (not Armed).
	Close() error
}

// Scaler is the hook for WorkloadScale and WorkloadScaleShared: an Impl
// that also implements it (and Supports them) is benchmarked by
// BenchmarkScale.
type Scaler interface {
	// NewScale returns the engine of one BenchmarkScale run, from the
	// benchmark's goroutine.
	NewScale(cfg ScaleConfig) (ScaleGroup, error)
}

// ScaleConfig configures WorkloadScale and WorkloadScaleShared.
type ScaleConfig struct {
	// Op is WorkloadNop or WorkloadRead: what each goroutine does, one
	// request at a time (submit, then wait for its completion).
	Op Workload
	// Shared asks for one engine instance for all goroutines
	// (WorkloadScaleShared); otherwise each has its own.
	Shared bool
	// Goroutines is the number of workers.
	Goroutines int
	// Procs is the run's GOMAXPROCS (the harness sets it). An impl whose
	// threads GOMAXPROCS does not bound (C code in cgo calls) confines
	// them to this many CPUs itself, so that procs=1 means one CPU for it
	// too.
	Procs int
	// Read is the file, block size and offsets for WorkloadRead (QD is 1
	// per worker); worker i starts at its own point of Offsets.
	Read ReadConfig
}

// WorkerRead returns worker i's ReadConfig: cfg.Read with QD 1 and the
// offsets rotated to start at worker i's share, so that workers do not
// read the same blocks in step.
func (cfg ScaleConfig) WorkerRead(i int) ReadConfig {
	rc := cfg.Read
	rc.QD = 1
	if n := len(rc.Offsets); n > 0 && cfg.Goroutines > 0 {
		k := i * n / cfg.Goroutines
		rc.Offsets = append(slices.Clone(rc.Offsets[k:]), rc.Offsets[:k]...)
	}
	return rc
}

// ScaleGroup is the engine of one BenchmarkScale run.
type ScaleGroup interface {
	// Worker returns the Runner of worker i (0 <= i < Goroutines). It is
	// called on the worker's own goroutine, which then runs the Runner
	// and closes it, all on that goroutine.
	Worker(i int) (Runner, error)
	// Close releases what the workers shared, once every worker's Runner
	// is closed.
	Close() error
}

// NopConfig configures WorkloadNop.
type NopConfig struct {
	// Batch is the number of no-ops per submission (1 or 32 in the suite).
	Batch int
}

// ReadConfig configures WorkloadRead.
type ReadConfig struct {
	// FD is a regular file opened read-only, fully in the page cache, whose
	// content is DataFile's pattern.
	FD int
	// BlockSize is the read size (4096).
	BlockSize int
	// QD is the number of reads in flight: real queue depth for a
	// submission-queue engine, QD goroutines for the others.
	QD int
	// Offsets are block-aligned offsets inside the file in random order;
	// reads walk them round-robin, continuing across Run calls.
	Offsets []int64
	// Verify asks the runner to check every block with CheckBlock (tests
	// set it; benchmarks do not).
	Verify bool
	// Fixed asks for WorkloadReadFixed: the runner registers its QD
	// buffers with its engine once, when it is made, and reads into them
	// by index (READ_FIXED). Impls that do not Support WorkloadReadFixed
	// refuse it.
	Fixed bool
	// Load, if Load.Every > 0, adds background cancels (WorkloadCancelUnderLoad).
	Load CancelLoad
}

// PingPongConfig configures WorkloadPingPong.
type PingPongConfig struct {
	// PingFD is the write end of the pipe the echo peer reads; with
	// Socket, the connected stream socket whose other end the echo peer
	// holds.
	PingFD int
	// PongFD is the read end of the pipe the echo peer writes to; with
	// Socket, the same socket as PingFD.
	PongFD int
	// Socket asks for WorkloadSockPingPong: PingFD is a connected stream
	// socket (AF_UNIX or TCP with TCP_NODELAY), the ping is sent and the
	// echo received on it with the impl's socket calls (send and recv
	// where it has them). Impls that do not Support WorkloadSockPingPong
	// refuse it.
	Socket bool
	// MsgSize is the message size (at most PIPE_BUF, so pipe writes are
	// atomic). An op writes MsgSize bytes to PingFD and reads MsgSize bytes
	// (possibly in several reads) from PongFD.
	MsgSize int
	// Verify asks the runner to check that the echo equals the message.
	Verify bool
	// Load, if Load.Every > 0, adds background cancels (WorkloadCancelUnderLoad).
	Load CancelLoad
}

// CancelLoad is the background cancel traffic of WorkloadCancelUnderLoad:
// every Every, the runner submits a read on FD (the read end of an empty
// pipe nobody writes to), cancels it by itself (a token, a request, a
// deadline: not by cancel-all, which would hit the measured requests too)
// and consumes its completion. It should use the same engine instance
// (ring, poller) as the measured requests.
type CancelLoad struct {
	Every time.Duration
	FD    int
}

// CancelConfig configures WorkloadCancel and WorkloadCancelEach.
type CancelConfig struct {
	// FDs are read ends of empty pipes; Arm starts one read on each.
	FDs []int
	// BufSize is the size of each read's buffer.
	BufSize int
	// Each asks CancelAndWait to cancel every read by itself, by its own
	// handle (request, user_data, file), not as a group (a token, cancel-any,
	// a shared event): WorkloadCancelEach. An impl may batch those cancels
	// into one system call where its API allows, but may not delay one.
	Each bool
}

var (
	implsMu sync.Mutex
	impls   []Impl
)

// implOrder fixes the column order benchstat shows (it orders columns by
// first appearance): the physical limit first, then the floor from Go (the
// bare ABI), then cancelio, then the baselines. Unknown names follow,
// alphabetically.
var implOrder = []string{"liburing", "raw-go", "raw-go-regfd", "raw-go-plain", "cancelio-uring", "cancelio-poll", "goroutines", "netpoll"}

// Register adds an impl to the suites; call it from an init function. It
// panics if the name is taken.
func Register(impl Impl) {
	implsMu.Lock()
	defer implsMu.Unlock()
	for _, have := range impls {
		if have.Name() == impl.Name() {
			panic("bench: impl " + impl.Name() + " registered twice")
		}
	}
	impls = append(impls, impl)
}

// Impls returns the registered impls in column order.
func Impls() []Impl {
	implsMu.Lock()
	defer implsMu.Unlock()
	out := slices.Clone(impls)
	rank := func(name string) int {
		if i := slices.Index(implOrder, name); i >= 0 {
			return i
		}
		return len(implOrder)
	}
	slices.SortStableFunc(out, func(a, b Impl) int {
		if ra, rb := rank(a.Name()), rank(b.Name()); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Name(), b.Name())
	})
	return out
}

// Lookup returns the registered impl called name, if any.
func Lookup(name string) (Impl, bool) {
	for _, impl := range Impls() {
		if impl.Name() == name {
			return impl, true
		}
	}
	return nil, false
}
