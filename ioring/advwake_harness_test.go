//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Helpers of the advwake tests: hunting lost wake-ups, hangs and miscounts
// in the consumer/reaper protocol (Reap, Request.Wait, Do, SubmitAndReap;
// reapMu, parked, waiters, handOff, kick, and the three in-flight counts).

// awHang is how long a step may take before the test calls it a hang.
const awHang = 20 * time.Second

// awDump logs the stack of every goroutine.
func awDump(t testing.TB) {
	buf := make([]byte, 16<<20)
	n := runtime.Stack(buf, true)
	t.Logf("goroutines:\n%s", buf[:n])
}

// awWithin runs fn on a goroutine of its own and waits at most d for it.
// When it takes longer, every goroutine's stack is logged and the test
// fails (fn's goroutine is left behind: the test is lost anyway).
func awWithin(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-done:
	case <-tm.C:
		awDump(t)
		t.Fatalf("hang: %s did not finish within %v (every goroutine's stack is logged above)", what, d)
	}
}

// awProcs sets GOMAXPROCS to n until the test ends.
func awProcs(t testing.TB, n int) {
	old := runtime.GOMAXPROCS(n)
	t.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// awSeed returns the seed of a randomized advwake test: ADVWAKE_SEED when
// set (to replay a failure), else one from the clock. The test logs it.
func awSeed(t testing.TB) uint64 { return envSeed(t, "ADVWAKE_SEED") }

// awRing returns a ring of the backend that is closed (within awHang) when
// the test ends, after which no fd it opened may be left.
func awRing(t *testing.T, b Backend, entries int) *Ring {
	t.Helper()
	fdcheck.Check(t) // its cleanup runs last
	r, err := New(Config{Entries: entries, Backend: b})
	require.NoError(t, err, "New(%v)", b)
	require.Equal(t, b, r.Backend().Backend)
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { r.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(awHang):
			awDump(t)
			t.Errorf("hang: Close in cleanup did not return within %v", awHang)
		}
	})
	return r
}

// awBackends are the backends every advwake test runs on.
var awBackends = []Backend{BackendURing, BackendPoll}

// Kinds of requests, for what their completions may carry.
const (
	awNop     = iota + 1 // nil, or ErrCanceled
	awRead               // 1 byte, or ErrCanceled / ErrTimeout
	awForeign            // nil, or ErrCanceled
	awTimer              // nil (the timer ran out), or ErrCanceled
)

// awTally is the ledger: every request gets an id (its Op's user value)
// before it is submitted, is marked accepted once the ring took it, and
// must be delivered exactly once if accepted, never otherwise.
type awTally struct {
	t         testing.TB
	kind      []atomic.Uint32
	accepted  []atomic.Bool
	seen      []atomic.Int32
	nextID    atomic.Int64
	nAccepted atomic.Int64
	nSeen     atomic.Int64
	bad       atomic.Int64 // errors reported, to stop early

	spareMu sync.Mutex
	spare   []int64 // ids of refused submissions, handed out again
}

func newAWTally(t testing.TB, max int) *awTally {
	return &awTally{
		t:        t,
		kind:     make([]atomic.Uint32, max),
		accepted: make([]atomic.Bool, max),
		seen:     make([]atomic.Int32, max),
	}
}

// id returns a fresh id for a request of kind k (-1 when the ledger is full):
// one refused before (refused), or a new one.
func (a *awTally) id(k uint32) int64 {
	a.spareMu.Lock()
	if n := len(a.spare); n > 0 {
		id := a.spare[n-1]
		a.spare = a.spare[:n-1]
		a.spareMu.Unlock()
		a.kind[id].Store(k)
		return id
	}
	a.spareMu.Unlock()
	id := a.nextID.Add(1) - 1
	if id >= int64(len(a.kind)) {
		return -1
	}
	a.kind[id].Store(k)
	return id
}

// refused gives back the ids of requests the ring refused (ErrFull): no
// completion can carry them, and a producer that retries until its
// requests go in would otherwise use up the ledger on a loaded machine.
func (a *awTally) refused(ids ...int64) {
	a.spareMu.Lock()
	a.spare = append(a.spare, ids...)
	a.spareMu.Unlock()
}

// accept records that the request with id was accepted.
func (a *awTally) accept(id int64) {
	a.accepted[id].Store(true)
	a.nAccepted.Add(1)
}

func (a *awTally) errorf(format string, args ...any) {
	if a.bad.Add(1) <= 20 {
		a.t.Errorf(format, args...)
	}
}

// got records a delivered completion, by who.
func (a *awTally) got(c Completion, who string) {
	id, ok := c.User.(int64)
	if !ok || id < 0 || id >= a.nextID.Load() || id >= int64(len(a.kind)) {
		a.errorf("%s: completion of no request of ours: %+v", who, c)
		return
	}
	if n := a.seen[id].Add(1); n != 1 {
		a.errorf("%s: request %d delivered %d times (%+v)", who, id, n, c)
	}
	a.nSeen.Add(1)
	switch k := a.kind[id].Load(); {
	case c.Err == nil:
		if k == awRead && c.N != 1 {
			a.errorf("%s: read %d: N=%d, want 1", who, id, c.N)
		}
	case errors.Is(c.Err, ErrCanceled):
		// A cancel (Ring.Cancel, Close, a context, a deadline) won.
	default:
		a.errorf("%s: request %d (kind %d): unexpected error %v", who, id, k, c.Err)
	}
}

// check verifies the ledger once everything returned: each accepted
// request delivered exactly once, nothing else delivered.
func (a *awTally) check() {
	n := min(a.nextID.Load(), int64(len(a.kind)))
	missing, extra := 0, 0
	var firstMissing []int64
	for id := int64(0); id < n; id++ {
		want := int32(0)
		if a.accepted[id].Load() {
			want = 1
		}
		switch got := a.seen[id].Load(); {
		case got < want:
			missing++
			if len(firstMissing) < 10 {
				firstMissing = append(firstMissing, id)
			}
		case got > want:
			extra++
		}
	}
	if missing > 0 || extra > 0 {
		a.t.Errorf("ledger: %d accepted requests never delivered (ids %v, kinds by id in order), %d delivered more than accepted; accepted %d, delivered %d",
			missing, firstMissing, extra, a.nAccepted.Load(), a.nSeen.Load())
	}
}

// awReaper is a consumer in a loop of Reap with the timeouts pick gives,
// until Reap returns an error (ErrClosed once the ring closed and the
// queue is empty; anything else is reported). It returns Reap's last error.
func awReaper(a *awTally, r *Ring, who string, dstMax int, pick func() time.Duration) error {
	dst := make([]Completion, dstMax)
	for {
		n, err := r.Reap(dst, pick())
		if n < 0 || n > len(dst) {
			a.errorf("%s: Reap returned n=%d for a dst of %d", who, n, len(dst))
			return err
		}
		for i := range dst[:n] {
			a.got(dst[i], who)
			dst[i] = Completion{}
		}
		if err != nil {
			if !errors.Is(err, ErrClosed) {
				a.errorf("%s: Reap: %v", who, err)
			}
			return err
		}
	}
}

// awPipes is a set of pipes whose reads complete when a writer goroutine
// writes, at a random moment after the read was submitted, one byte per
// read (a canceled read leaves its byte to the next read).
type awPipes struct {
	rd, wr []int
	bytes  chan int // pipe index to write one byte to
	done   chan struct{}
}

func newAWPipes(t *testing.T, n int, seed uint64) *awPipes {
	p := &awPipes{bytes: make(chan int, 1<<16), done: make(chan struct{})}
	for range n {
		var fds [2]int
		require.NoError(t, unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK))
		p.rd = append(p.rd, fds[0])
		p.wr = append(p.wr, fds[1])
	}
	t.Cleanup(func() {
		for i := range p.rd {
			unix.Close(p.rd[i])
			unix.Close(p.wr[i])
		}
	})
	go func() {
		defer close(p.done)
		rng := rand.New(rand.NewPCG(seed, 7))
		for i := range p.bytes {
			switch rng.IntN(4) {
			case 0:
			case 1:
				runtime.Gosched()
			default:
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
			if _, err := unix.Write(p.wr[i], []byte{'x'}); err != nil {
				panic(fmt.Sprintf("advwake pipe write: %v", err))
			}
		}
	}()
	return p
}

// stop ends the writer after it wrote every byte asked for.
func (p *awPipes) stop() {
	close(p.bytes)
	<-p.done
}

// awForeigns completes foreign requests from a goroutine of its own, each
// at a random moment after its submission.
type awForeigns struct {
	reqs chan Request
	done chan struct{}
}

func newAWForeigns(t testing.TB, a *awTally, r *Ring, seed uint64) *awForeigns {
	f := &awForeigns{reqs: make(chan Request, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		rng := rand.New(rand.NewPCG(seed, 11))
		for q := range f.reqs {
			switch rng.IntN(4) {
			case 0:
			case 1:
				runtime.Gosched()
			default:
				time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
			var err error
			if rng.IntN(8) == 0 {
				err = ErrCanceled
			}
			if e := r.Complete(q, 0, err); e != nil {
				a.errorf("Complete of a pending foreign request: %v", e)
			}
		}
	}()
	return f
}

func (f *awForeigns) stop() {
	close(f.reqs)
	<-f.done
}

// awCtx is a context that ends after d (d < 0: never).
func awCtx(d time.Duration) (context.Context, context.CancelFunc) {
	if d < 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), d)
}
