package bench

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// These tests run every registered impl (the baselines, liburing with
// -tags liburing, and cancelio once its impl is registered) through each
// workload it supports, small, and check that it really does the work.

// checkFDs fails the test if it ends with more open fds than it started with.
func checkFDs(t *testing.T) {
	t.Helper()
	data(t) // the shared data file stays open for the whole run
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		return len(ents)
	}
	before := count()
	t.Cleanup(func() {
		// Give goroutines that close fds on exit a moment (they are waited for
		// by Close, so this is only a margin).
		deadline := time.Now().Add(5 * time.Second)
		for count() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		assert.Equal(t, before, count(), "open fds after the test, want as many as before")
	})
}

func forEachImpl(t *testing.T, w Workload, fn func(t *testing.T, impl Impl)) {
	impls := supporting(w)
	if len(impls) == 0 {
		t.Skipf("no impl supports %v here", w)
	}
	for _, impl := range impls {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			fn(t, impl)
		})
	}
}

// implsOf returns the impls called names, each of type T, that run here
// (support WorkloadNop); it skips the test when none does.
func implsOf[T Impl](t *testing.T, names ...string) []T {
	var out []T
	for _, name := range names {
		impl, ok := Lookup(name)
		require.True(t, ok, "%s registered", name)
		ti, ok := impl.(T)
		require.True(t, ok, "%s is a %T, got %T", name, *new(T), impl)
		if ti.Supports(WorkloadNop) {
			out = append(out, ti)
		}
	}
	if len(out) == 0 {
		t.Skipf("none of %v runs here", names)
	}
	return out
}

// runFixedRead makes a verifying read runner of impl at QD 4, with or
// without registered buffers, and runs 16 reads on it; the caller closes it.
func runFixedRead(t *testing.T, impl Impl, fixed bool) Runner {
	cfg := readConfig(t, 4)
	cfg.Fixed, cfg.Verify = fixed, true
	r, err := impl.NewRead(cfg)
	require.NoError(t, err)
	require.NoError(t, r.Run(16))
	return r
}

func TestImplsRegistered(t *testing.T) {
	names := map[string]bool{}
	for _, impl := range Impls() {
		names[impl.Name()] = true
		assert.NotContains(t, impl.Name(), "/", "impl name goes into a benchmark name")
		assert.NotContains(t, impl.Name(), " ")
	}
	assert.True(t, names["goroutines"] && names["netpoll"], "baselines registered, got %v", names)
	assert.Panics(t, func() { Register(goroutinesImpl{}) }, "duplicate name")
	i, ok := Lookup("netpoll")
	require.True(t, ok)
	assert.Equal(t, "netpoll", i.Name())
}

func TestImplOrder(t *testing.T) {
	var names []string
	for _, impl := range Impls() {
		names = append(names, impl.Name())
	}
	g, n := indexOf(names, "goroutines"), indexOf(names, "netpoll")
	assert.Less(t, g, n, "column order: %v", names)
	if l := indexOf(names, "liburing"); l >= 0 {
		assert.Zero(t, l, "liburing is the first column: %v", names)
	}
	r, f, p, c := indexOf(names, "raw-go"), indexOf(names, "raw-go-regfd"), indexOf(names, "raw-go-plain"), indexOf(names, "cancelio-uring")
	assert.True(t, r >= 0 && r < f && f < p && p < c, "the floor from Go (raw-go, raw-go-regfd, raw-go-plain) before cancelio: %v", names)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestNop(t *testing.T) {
	forEachImpl(t, WorkloadNop, func(t *testing.T, impl Impl) {
		for _, batch := range []int{1, 32} {
			r, err := impl.NewNop(NopConfig{Batch: batch})
			require.NoError(t, err)
			assert.NoError(t, r.Run(1000), "batch %d", batch)
			assert.NoError(t, r.Run(45), "n not a multiple of the batch")
			require.NoError(t, r.Close())
		}
	})
}

func TestRead(t *testing.T) {
	forEachImpl(t, WorkloadRead, func(t *testing.T, impl Impl) {
		for _, qd := range []int{1, 4, 32} {
			cfg := readConfig(t, qd)
			cfg.Verify = true
			r, err := impl.NewRead(cfg)
			require.NoError(t, err)
			assert.NoError(t, r.Run(500), "qd %d", qd)
			assert.NoError(t, r.Run(3), "qd %d, fewer ops than qd", qd)
			require.NoError(t, r.Close())
		}
	})
}

// TestReadVerifyCatchesWrongBytes checks the check: reading a file that does
// not hold the pattern must fail when Verify is set, and pass when not.
func TestReadVerifyCatchesWrongBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zeros")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	offs := RandomOffsets(1<<20, blockSize, 16, 2)
	offs[0] = blockSize // never offset 0 first: a zero block at 0 is "right" in its first word
	forEachImpl(t, WorkloadRead, func(t *testing.T, impl Impl) {
		for _, verify := range []bool{true, false} {
			r, err := impl.NewRead(ReadConfig{FD: int(f.Fd()), BlockSize: blockSize, QD: 4, Offsets: offs, Verify: verify})
			require.NoError(t, err)
			err = r.Run(16)
			if verify {
				assert.Error(t, err, "zeros must not pass as the data pattern")
			} else {
				assert.NoError(t, err)
			}
			require.NoError(t, r.Close())
		}
	})
}

func TestReadShortFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(path, make([]byte, 100), 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	forEachImpl(t, WorkloadRead, func(t *testing.T, impl Impl) {
		r, err := impl.NewRead(ReadConfig{FD: int(f.Fd()), BlockSize: blockSize, QD: 2, Offsets: []int64{0}})
		require.NoError(t, err)
		assert.Error(t, r.Run(4), "a short read is an error")
		require.NoError(t, r.Close())
	})
}

func TestReadFixed(t *testing.T) {
	forEachImpl(t, WorkloadReadFixed, func(t *testing.T, impl Impl) {
		for _, qd := range []int{1, 4, 32} {
			cfg := readConfig(t, qd)
			cfg.Verify, cfg.Fixed = true, true
			r, err := impl.NewRead(cfg)
			require.NoError(t, err)
			assert.NoError(t, r.Run(500), "qd %d", qd)
			assert.NoError(t, r.Run(3), "qd %d, fewer ops than qd", qd)
			require.NoError(t, r.Close())
		}
	})
	for _, impl := range Impls() {
		if !impl.Supports(WorkloadReadFixed) {
			cfg := readConfig(t, 1)
			cfg.Fixed = true
			_, err := impl.NewRead(cfg)
			assert.ErrorIs(t, err, ErrUnsupported, "%s: no registered buffers, so no fixed reads", impl.Name())
		}
	}
}

// forEachTransport runs fn for every impl on every ping-pong transport it
// supports.
func forEachTransport(t *testing.T, fn func(t *testing.T, impl Impl, transport string)) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			forEachImpl(t, tr.w, func(t *testing.T, impl Impl) { fn(t, impl, tr.name) })
		})
	}
}

func TestPingPong(t *testing.T) {
	forEachTransport(t, func(t *testing.T, impl Impl, transport string) {
		e, cfg := startTransportEcho(t, transport)
		cfg.Verify = true
		r, err := impl.NewPingPong(cfg)
		require.NoError(t, err)
		assert.NoError(t, r.Run(10))
		assert.NoError(t, r.Run(200))
		require.NoError(t, r.Close())
		require.NoError(t, e.Close())
	})
}

// TestPingPongVerifyCatchesWrongEcho puts a stray message in the pong pipe
// (or the socket) first: every echo is then one message late, which Verify
// must catch.
func TestPingPongVerifyCatchesWrongEcho(t *testing.T) {
	forEachTransport(t, func(t *testing.T, impl Impl, transport string) {
		e, cfg := startTransportEcho(t, transport)
		cfg.Verify = true
		stray := make([]byte, msgSize)
		FillMessage(stray, 999)
		require.NoError(t, writeFull(e.pongW, stray))
		r, err := impl.NewPingPong(cfg)
		require.NoError(t, err)
		assert.Error(t, r.Run(3), "a late echo must not verify")
		require.NoError(t, r.Close())
		require.NoError(t, e.Close())
	})
}

// TestSockPingPongUsesSocket checks that the socket rows really go over a
// socket of the named kind, and that every impl that has the pipe
// ping-pong has the socket one too.
func TestSockPingPongUsesSocket(t *testing.T) {
	for _, tc := range []struct {
		transport string
		domain    int
	}{{TransportUnix, unix.AF_UNIX}, {TransportTCP, unix.AF_INET}} {
		e, cfg := startTransportEcho(t, tc.transport)
		assert.True(t, cfg.Socket)
		assert.Equal(t, cfg.PingFD, cfg.PongFD, "one socket both ways")
		domain, err := unix.GetsockoptInt(cfg.PingFD, unix.SOL_SOCKET, unix.SO_DOMAIN)
		require.NoError(t, err)
		assert.Equal(t, tc.domain, domain, tc.transport)
		typ, err := unix.GetsockoptInt(cfg.PingFD, unix.SOL_SOCKET, unix.SO_TYPE)
		require.NoError(t, err)
		assert.Equal(t, unix.SOCK_STREAM, typ, tc.transport)
		if tc.transport == TransportTCP {
			nodelay, err := unix.GetsockoptInt(cfg.PingFD, unix.IPPROTO_TCP, unix.TCP_NODELAY)
			require.NoError(t, err)
			assert.NotZero(t, nodelay, "TCP_NODELAY")
		}
		require.NoError(t, e.Close())
	}
	for _, impl := range Impls() {
		if impl.Supports(WorkloadPingPong) {
			assert.True(t, impl.Supports(WorkloadSockPingPong), "%s: a pipe ping-pong but no socket one", impl.Name())
		}
	}
}

// cancelModes are the two cancel workloads: all at once, and request by
// request (CancelConfig.Each).
var cancelModes = []struct {
	name string
	w    Workload
	each bool
}{{"all", WorkloadCancel, false}, {"each", WorkloadCancelEach, true}}

func TestCancel(t *testing.T) {
	for _, mode := range cancelModes {
		t.Run(mode.name, func(t *testing.T) {
			forEachImpl(t, mode.w, func(t *testing.T, impl Impl) {
				testCancel(t, impl, mode.each)
			})
		})
	}
}

func testCancel(t *testing.T, impl Impl, each bool) {
	for _, pending := range []int{1, 64} {
		p, err := NewPipes(pending)
		require.NoError(t, err)
		r, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf, Each: each})
		require.NoError(t, err)
		for cycle := range 3 {
			require.NoError(t, r.Arm(), "pending %d, cycle %d", pending, cycle)
			d, err := r.CancelAndWait()
			require.NoError(t, err, "every one of %d reads canceled, cycle %d", pending, cycle)
			assert.Positive(t, d, "measured cancel latency")
			assert.Less(t, d, 5*time.Second)
		}
		// After the cancels the pipes are untouched: nothing read, nothing left over.
		for _, w := range p.W {
			require.NoError(t, writeFull(w, []byte{7}))
		}
		buf := make([]byte, 8)
		for _, fd := range p.R {
			n, err := readFD(fd, buf)
			require.NoError(t, err)
			assert.Equal(t, 1, n, "the byte written after the cancels is still in the pipe")
		}
		require.NoError(t, r.Close())
		require.NoError(t, p.Close())
	}
}

// TestCancelRaceWithData arms, writes into one pipe, gives the read a moment
// to take the bytes, then cancels. Either outcome of the race is fine, but
// it must be told truthfully (contract rule 2): if CancelAndWait reports
// every read canceled, the bytes are still in the pipe; if a read got them,
// CancelAndWait reports an error. For the Go baselines the read does get
// them, which also shows the reads were really pending on their fds (an
// io_uring with DEFER_TASKRUN only completes it at its next enter, so the
// cancel may win there).
func TestCancelRaceWithData(t *testing.T) {
	for _, mode := range cancelModes {
		t.Run(mode.name, func(t *testing.T) {
			forEachImpl(t, mode.w, func(t *testing.T, impl Impl) {
				testCancelRaceWithData(t, impl, mode.each)
			})
		})
	}
}

func testCancelRaceWithData(t *testing.T, impl Impl, each bool) {
	p, err := NewPipes(4)
	require.NoError(t, err)
	defer p.Close()
	r, err := impl.NewCancel(CancelConfig{FDs: p.R, BufSize: cancelBuf, Each: each})
	require.NoError(t, err)
	defer func() { require.NoError(t, r.Close()) }()
	require.NoError(t, r.Arm())
	require.NoError(t, writeFull(p.W[2], []byte("data")))
	goBaseline := impl.Name() == "goroutines" || impl.Name() == "netpoll"
	wait := 100 * time.Millisecond // others may legitimately leave the data until cancel
	if goBaseline {
		wait = 10 * time.Second // they do take it: the loop ends as soon as they have
	}
	deadline := time.Now().Add(wait)
	for pipeBytes(t, p.R[2]) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	_, err = r.CancelAndWait()
	left := pipeBytes(t, p.R[2])
	if err == nil {
		assert.Equal(t, 4, left, "all reads reported canceled, so the data must still be in the pipe")
	} else {
		assert.Zero(t, left, "a read reported data (%v), so the pipe must be empty", err)
	}
	if goBaseline {
		assert.Error(t, err, "the pending read took the data")
	}
}

// pipeBytes returns the number of unread bytes in a pipe.
func pipeBytes(t *testing.T, fd int) int {
	n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
	require.NoError(t, err)
	return n
}

func readFD(fd int, buf []byte) (int, error) {
	for {
		n, err := unix.Read(fd, buf)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func TestCancelUnderLoad(t *testing.T) {
	forEachImpl(t, WorkloadCancelUnderLoad, func(t *testing.T, impl Impl) {
		waitCancels := func(r Runner) {
			cc, ok := r.(CancelCounter)
			require.True(t, ok, "runner with a CancelLoad implements CancelCounter")
			deadline := time.Now().Add(10 * time.Second)
			for cc.Cancels() < 5 && time.Now().Before(deadline) {
				require.NoError(t, r.Run(50))
			}
			assert.GreaterOrEqual(t, cc.Cancels(), int64(5), "background cancels happen while the workload runs")
		}
		if impl.Supports(WorkloadRead) {
			cfg := readConfig(t, 8)
			cfg.Verify = true
			cfg.Load = loadPipe(t)
			r, err := impl.NewRead(cfg)
			require.NoError(t, err)
			waitCancels(r)
			require.NoError(t, r.Close())
		}
		if impl.Supports(WorkloadPingPong) {
			e := startEcho(t)
			r, err := impl.NewPingPong(PingPongConfig{PingFD: e.PingFD, PongFD: e.PongFD, MsgSize: msgSize, Verify: true, Load: loadPipe(t)})
			require.NoError(t, err)
			waitCancels(r)
			require.NoError(t, r.Close())
			require.NoError(t, e.Close())
		}
	})
}

func TestCheckBlock(t *testing.T) {
	f, offs := data(t)
	buf := make([]byte, blockSize)
	_, err := f.ReadAt(buf, offs[5])
	require.NoError(t, err)
	assert.NoError(t, CheckBlock(buf, offs[5]))
	assert.Error(t, CheckBlock(buf, offs[5]+blockSize), "wrong offset")
	buf[blockSize-1] ^= 1
	assert.Error(t, CheckBlock(buf, offs[5]), "flipped bit in the last word")
	for _, off := range offs {
		require.Zero(t, off%blockSize)
		require.Less(t, off, int64(dataFileSize))
	}
}

// TestCancelLoopCatchesUp: cycles keep to their schedule. When one runs
// long, the cycles that came due meanwhile run as soon as it returns, back
// to back, instead of being dropped as a ticker drops ticks.
func TestCancelLoopCatchesUp(t *testing.T) {
	const period = 100 * time.Millisecond
	var mu sync.Mutex
	var starts []time.Time
	var slowEnd time.Time
	done := make(chan struct{})
	l := StartCancelLoop(period, func() error {
		mu.Lock()
		starts = append(starts, time.Now())
		k := len(starts)
		mu.Unlock()
		switch k {
		case 1:
			time.Sleep(4*period + period/2) // 4 more cycles come due
			mu.Lock()
			slowEnd = time.Now()
			mu.Unlock()
		case 5:
			close(done)
		}
		return nil
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("5 cycles did not run within 10 s")
	}
	require.NoError(t, l.Stop())
	mu.Lock()
	defer mu.Unlock()
	for i, st := range starts[1:5] {
		// A ticker would space them a period apart.
		assert.Less(t, st.Sub(slowEnd), period/2, "cycle %d started %v after the slow one ended", i+2, st.Sub(slowEnd))
	}
}

func TestCancelLoopStops(t *testing.T) {
	calls := 0
	l := StartCancelLoop(time.Millisecond, func() error { calls++; return nil })
	deadline := time.Now().Add(5 * time.Second)
	for l.Cycles() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, l.Stop())
	assert.GreaterOrEqual(t, calls, 3)
	assert.Equal(t, int64(calls), l.Cycles())
}
