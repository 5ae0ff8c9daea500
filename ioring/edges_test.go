//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/uring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The contract at its edges: thread exit, stale handles, fd ranges, ring
// sizes, Close racing everything, user hooks, zero values, stream order and
// contexts. Each test runs on every backend unless it is about one.

// submitFromExitingThread runs submit on a goroutine locked to its thread,
// returns without unlocking (so that Go ends the thread), and waits until
// the thread is gone.
func submitFromExitingThread(t *testing.T, submit func()) {
	t.Helper()
	var tid int
	for {
		tidc := make(chan int, 1)
		go func() {
			runtime.LockOSThread()
			tid := unix.Gettid()
			if tid != unix.Getpid() { // the main thread never exits
				submit()
			}
			tidc <- tid
			// Returning while locked ends the thread.
		}()
		if tid = <-tidc; tid != unix.Getpid() {
			break
		}
	}
	path := fmt.Sprintf("/proc/self/task/%d", tid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		require.True(t, time.Now().Before(deadline), "thread %d still alive after 10s", tid)
		time.Sleep(time.Millisecond)
	}
}

// A request nobody canceled gets its real result, whatever became of the
// thread that submitted it (io_uring cancels an exiting task's requests).
func TestConformanceThreadExit(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for _, unordered := range []bool{false, true} {
			t.Run("unordered="+strconv.FormatBool(unordered), func(t *testing.T) {
				rd, wr := pipe(t)
				bufs := make([][]byte, 4)
				submitFromExitingThread(t, func() {
					for i := range bufs {
						bufs[i] = make([]byte, 1)
						op := Read(rd, bufs[i], -1).WithUser(i)
						if unordered {
							op = op.Unordered()
						}
						_, err := r.Submit(op)
						assert.NoError(t, err)
					}
				})
				got := map[byte]bool{}
				for i := 0; i < 4; i++ {
					_, err := unix.Write(wr, []byte{'A' + byte(i)})
					require.NoError(t, err)
					c := reapOne(t, r)
					require.NoError(t, c.Err, "read %v: nobody canceled it", c.User)
					require.Equal(t, 1, c.N)
					got[bufs[c.User.(int)][0]] = true
				}
				assert.Len(t, got, 4, "every byte reached one read")
				assert.True(t, pipeEmpty(t, rd), "no data left in the pipe")
			})
		}

		// A deadline still fires for a request whose thread is gone.
		rd, _ := pipe(t)
		submitFromExitingThread(t, func() {
			_, err := r.Submit(Read(rd, make([]byte, 1), -1).WithDeadline(50 * time.Millisecond))
			assert.NoError(t, err)
		})
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrTimeout)

		// And a cancel still cancels it.
		q := make(chan Request, 1)
		submitFromExitingThread(t, func() {
			req, err := r.Submit(Read(rd, make([]byte, 1), -1))
			assert.NoError(t, err)
			q <- req
		})
		require.NoError(t, (<-q).Cancel())
		assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
	})
}

// A stale Complete, racing with the reuse of its slot, never touches the
// request that now holds the slot.
func TestConformanceStaleComplete(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		old, err := r.Submit(Foreign(nil))
		require.NoError(t, err)
		require.NoError(t, r.Complete(old, 1, nil))
		reapOne(t, r)

		rounds := 2000
		if testing.Short() {
			rounds = 200
		}
		for i := 0; i < rounds; i++ {
			q, err := r.Submit(Foreign(nil).WithUser(i))
			require.NoError(t, err)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				assert.ErrorIs(t, r.Complete(old, 99, nil), ErrNotFound, "stale Complete")
			}()
			require.NoError(t, r.Complete(q, i, nil), "the owner's only Complete")
			c := reapOne(t, r)
			assert.Equal(t, i, c.N)
			assert.Equal(t, i, c.User)
			wg.Wait()
			old = q
		}
		assertNoMore(t, r)
	})
}

// fds are C ints: larger values are refused, never truncated into another fd.
func TestConformanceFDRange(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("int is 32 bits: no fd can exceed MaxInt32")
	}
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		big := int(int64(1)<<32 | int64(wr))
		over := int64(math.MaxInt32) + 1 // a variable: the constant overflows int where int is 32 bits
		for _, op := range []Op{
			Write(big, []byte("x"), -1), Read(big, make([]byte, 1), -1),
			Writev(int(over), [][]byte{[]byte("x")}, -1), Poll(big, unix.POLLOUT), Fsync(big),
		} {
			_, err := r.Submit(op)
			assert.ErrorIs(t, err, ErrInvalid, "%v on fd %d", op.Code(), op.fd)
		}
		assert.True(t, pipeEmpty(t, rd), "nothing was written to the truncated fd")
	})
}

// Every size the docs allow works on io_uring.
func TestURingLargestRing(t *testing.T) {
	for _, b := range []Backend{BackendURing, BackendAuto} {
		r, err := New(Config{Entries: maxEntries, Backend: b})
		require.NoError(t, err, "New(%d entries, %v)", maxEntries, b)
		assert.Equal(t, BackendURing, r.Backend().Backend)
		c, err := r.Do(context.Background(), Nop())
		require.NoError(t, err)
		assert.NoError(t, c.Err)
		require.NoError(t, r.Close())
	}
}

// An io_uring_setup error caused by the configuration is reported, not
// hidden by the fallback meant for kernels without io_uring.
func TestURingConfigErrorNotHidden(t *testing.T) {
	saved := uringSetup
	uringSetup = func(sq, cq uint32) (*uring.Ring, error) {
		if sq > 64 {
			return nil, unix.EINVAL // as a kernel with a smaller limit would
		}
		return saved(sq, cq)
	}
	t.Cleanup(func() { uringSetup = saved })
	_, err := New(Config{Entries: 128})
	require.Error(t, err, "BackendAuto must not fall back on a configuration error")
	assert.ErrorIs(t, err, unix.EINVAL)
	assert.Contains(t, err.Error(), "Config.Entries")
	r, err := New(Config{Entries: 64})
	require.NoError(t, err)
	assert.Equal(t, BackendURing, r.Backend().Backend)
	require.NoError(t, r.Close())
}

// Close races every other call: race-free, and every accepted request
// completes exactly once.
func TestConformanceCloseRaces(t *testing.T) {
	rounds := 30
	if testing.Short() {
		rounds = 5
	}
	forEachBackend(t, 8, func(t *testing.T, _ *Ring) {
		for i := 0; i < rounds; i++ {
			r, err := New(Config{Entries: 16, Backend: backendOf(t)})
			require.NoError(t, err)
			rd, _ := pipe(t)
			var accepted, delivered atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			tok := r.NewToken()
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					ops := make([]Op, 3)
					reqs := make([]Request, 3)
					var cs [8]Completion
					for {
						select {
						case <-stop:
							return
						default:
						}
						switch g {
						case 0:
							if _, err := r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok).Unordered()); err == nil {
								accepted.Add(1)
							}
							n, _ := r.Reap(cs[:], 0)
							delivered.Add(int64(n))
						case 1:
							for k := range ops {
								ops[k] = Nop()
							}
							n, _ := r.SubmitBatch(ops, reqs)
							accepted.Add(int64(n))
							reqs[0].Cancel()
							r.CancelAll()
						case 2:
							if q, err := r.Start(Nop()); err == nil {
								accepted.Add(1)
								if _, err := q.Wait(context.Background()); err == nil {
									delivered.Add(1)
								}
							}
						case 3:
							if q, err := r.Submit(Foreign(nil)); err == nil {
								accepted.Add(1)
								r.Complete(q, 0, nil)
							}
							tok.Cancel()
							n, _ := r.Reap(cs[:], time.Millisecond)
							delivered.Add(int64(n))
						}
					}
				}(g)
			}
			time.Sleep(5 * time.Millisecond)
			require.NoError(t, r.Close())
			close(stop)
			wg.Wait()
			var cs [64]Completion
			for {
				n, err := r.Reap(cs[:], 0)
				delivered.Add(int64(n))
				if err != nil {
					require.ErrorIs(t, err, ErrClosed)
					break
				}
			}
			assert.Equal(t, accepted.Load(), delivered.Load(), "every accepted request delivered once")
		}
	})
}

// backendOf returns the backend of the subtest forEachBackend runs.
func backendOf(t *testing.T) Backend {
	for _, b := range backends {
		if len(t.Name()) > 0 && containsSuffix(t.Name(), "backend="+b.String()) {
			return b
		}
	}
	t.Fatalf("no backend in %q", t.Name())
	return 0
}

func containsSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// A user's cancel hook that panics or re-enters never breaks the ring.
func TestConformanceHookPanics(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		// Fired by a deadline: recovered on the timer's goroutine, and
		// reported with the completion.
		fired := make(chan struct{}, 1)
		dq, err := r.Submit(Foreign(func() { fired <- struct{}{}; panic("deadline hook") }).WithDeadline(time.Millisecond))
		require.NoError(t, err)
		<-fired
		// The transport completes after the hook returned (the panic is
		// recorded as it unwinds).
		fr := r.slots[dq.key&idxMask].fref.Load()
		require.NotNil(t, fr)
		require.Eventually(t, func() bool { return fr.panicked.Load() != nil }, 10*time.Second, time.Millisecond)
		require.NoError(t, r.Complete(dq, 0, ErrCanceled))
		c := reapOne(t, r)
		var pe *HookPanicError
		require.ErrorAs(t, c.Err, &pe)
		assert.Equal(t, "deadline hook", pe.Value)
		assert.ErrorIs(t, c.Err, ErrTimeout, "still a timeout")

		// Inside Token.Cancel: every other member's hook still runs, and
		// the caller gets the panic as an error.
		tok := r.NewToken()
		var ran atomic.Int32
		qs := make([]Request, 3)
		for i := range qs {
			i := i
			qs[i], err = r.Submit(Foreign(func() {
				ran.Add(1)
				if i == 1 {
					panic(fmt.Sprintf("hook %d", i))
				}
			}).WithToken(tok))
			require.NoError(t, err)
		}
		err = tok.Cancel()
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "hook 1", pe.Value)
		assert.EqualValues(t, 3, ran.Load(), "every member's hook ran")
		for _, q := range qs {
			require.NoError(t, r.Complete(q, 0, ErrCanceled))
			reapOne(t, r)
		}

		// Re-entry: a hook that cancels its own request, its token and the
		// whole ring is not re-entered without bound.
		tok = r.NewToken()
		var calls atomic.Int32
		var rq Request
		rq, err = r.Submit(Foreign(func() {
			if calls.Add(1) > 100 {
				panic("unbounded re-entry")
			}
			rq.Cancel()
			tok.Cancel()
			r.CancelAll()
		}).WithToken(tok))
		require.NoError(t, err)
		require.NoError(t, rq.Cancel())
		assert.LessOrEqual(t, calls.Load(), int32(3), "hook calls")
		require.NoError(t, r.Complete(rq, 0, ErrCanceled))
		assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)

		// Request.Cancel returns the panic.
		var pq Request
		pq, err = r.Submit(Foreign(func() { panic("cancel hook") }))
		require.NoError(t, err)
		require.ErrorAs(t, pq.Cancel(), &pe)
		require.NoError(t, r.Complete(pq, 0, ErrCanceled))
		require.ErrorAs(t, reapOne(t, r).Err, &pe)
		assert.Equal(t, "cancel hook", pe.Value)

		// Inside Close: the ring still drains and closes whole (the fd
		// check of forEachBackend), and a second Close says ErrClosed.
		var cq Request
		cq, err = r.Submit(Foreign(func() {
			go r.Complete(cq, 0, ErrCanceled)
			panic("close hook")
		}))
		require.NoError(t, err)
		err = r.Close()
		require.ErrorAs(t, err, &pe)
		assert.Equal(t, "close hook", pe.Value)
		assert.ErrorIs(t, r.Close(), ErrClosed)
		assert.Zero(t, r.InFlight())
	})
}

// A cancel hook that ends its goroutine (runtime.Goexit, as t.FailNow
// does) ends the caller's goroutine, which cannot be helped, but not the
// cancel: the other hooks still run, and a Close still drains and
// releases everything.
func TestConformanceHookGoexit(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		// goexits runs fn on a goroutine of its own and waits until that
		// goroutine has ended, reporting whether fn returned.
		goexits := func(fn func()) (returned bool) {
			done := make(chan struct{})
			go func() {
				defer close(done)
				fn()
				returned = true
			}()
			<-done
			return returned
		}
		// submit submits n foreign requests with tok whose hooks count
		// themselves in ran; the first one's hook ends its goroutine.
		submit := func(n int, tok *Token, ran *atomic.Int32) []Request {
			qs := make([]Request, n)
			for i := range qs {
				i := i
				var err error
				qs[i], err = r.Submit(Foreign(func() {
					ran.Add(1)
					if i == 0 {
						runtime.Goexit()
					}
				}).WithToken(tok))
				require.NoError(t, err)
			}
			return qs
		}
		completeAll := func(qs []Request) {
			for _, q := range qs {
				require.NoError(t, r.Complete(q, 0, ErrCanceled))
				assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
			}
		}

		// Token.Cancel: the members are canceled oldest first, so the
		// hook that ends the goroutine comes first.
		var ran atomic.Int32
		tok := r.NewToken()
		qs := submit(4, tok, &ran)
		require.False(t, goexits(func() { tok.Cancel() }), "the hook ended Cancel's goroutine")
		require.Eventually(t, func() bool { return ran.Load() == 4 }, 10*time.Second, time.Millisecond, "every hook ran")
		completeAll(qs)

		// Ring.Cancel and CancelAll.
		ran.Store(0)
		qs = submit(3, nil, &ran)
		require.False(t, goexits(func() { r.Cancel(qs...) }))
		require.Eventually(t, func() bool { return ran.Load() == 3 }, 10*time.Second, time.Millisecond)
		completeAll(qs)
		ran.Store(0)
		qs = submit(3, nil, &ran)
		require.False(t, goexits(func() { r.CancelAll() }))
		require.Eventually(t, func() bool { return ran.Load() == 3 }, 10*time.Second, time.Millisecond)
		completeAll(qs)

		// Close: the ring still drains (the other requests included) and
		// releases its backend; forEachBackend checks that no fd is left,
		// and TestMain that no goroutine is.
		rd, _ := pipe(t)
		pending, err := r.Submit(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
		var q Request
		q, err = r.Submit(Foreign(func() {
			go r.Complete(q, 0, ErrCanceled)
			runtime.Goexit()
		}))
		require.NoError(t, err)
		require.False(t, goexits(func() { r.Close() }))
		select {
		case <-r.closedCh:
		case <-time.After(10 * time.Second):
			t.Fatal("Close's drain and release did not finish")
		}
		assert.Equal(t, 0, r.InFlight())
		got := map[Request]error{}
		for range 2 {
			c := reapOne(t, r)
			got[c.Req] = c.Err
		}
		assert.ErrorIs(t, got[pending], ErrCanceled)
		assert.ErrorIs(t, got[q], ErrCanceled)
		assert.ErrorIs(t, r.Close(), ErrClosed)
	})
}

// Complete reads a negative count as io_uring reads a result: -errno, and
// no bytes.
func TestConformanceCompleteNegative(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		for _, tc := range []struct {
			n    int
			err  error
			want error
		}{
			{-int(unix.EIO), nil, unix.EIO},
			{-1, ErrCanceled, ErrCanceled},
			{-1 << 20, nil, ErrInvalid},
		} {
			q, err := r.Submit(Foreign(nil))
			require.NoError(t, err)
			require.NoError(t, r.Complete(q, tc.n, tc.err))
			c := reapOne(t, r)
			assert.Zero(t, c.N, "%d", tc.n)
			assert.ErrorIs(t, c.Err, tc.want, "%d", tc.n)
		}
	})
}

// A zero Token is refused with ErrInvalid, never a panic.
func TestConformanceZeroToken(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		var zero Token
		assert.ErrorIs(t, zero.Cancel(), ErrInvalid)
		assert.False(t, zero.Canceled())
		assert.Zero(t, zero.Pending())
		_, err := r.Submit(Nop().WithToken(&zero))
		assert.ErrorIs(t, err, ErrInvalid)
		assert.ErrorIs(t, Request{}.Cancel(), ErrNotFound)
	})
}

// A stream keeps its order, and its FIFO leaves the table once empty,
// whether its key lives in the dense slice or in the map (an fd of 4096
// or more): a waiting read canceled leaves the line, a canceled head lets
// the next one in.
func TestStreamOrderTableKinds(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		high, err := unix.FcntlInt(uintptr(rd), unix.F_DUPFD_CLOEXEC, ordDense/2) // the first fd whose key is past the slice
		require.NoError(t, err)
		t.Cleanup(func() { unix.Close(high) })
		for name, fd := range map[string]int{"dense": rd, "sparse": high} {
			var qs [3]Request
			for i := range qs {
				qs[i], err = r.Submit(Read(fd, make([]byte, 1), -1).WithUser(i))
				require.NoError(t, err, name)
			}
			k := ordKey(uint32(fd)) << 1
			r.ordMu.Lock()
			l := r.ord.get(k)
			r.ordMu.Unlock()
			assert.Equal(t, ordList{int32(qs[0].key & idxMask), int32(qs[2].key & idxMask)}, l,
				"%s: the three reads wait in one FIFO, the first at its head", name)
			require.NoError(t, qs[1].Cancel(), name)
			c := reapOne(t, r)
			assert.Equal(t, 1, c.User, name)
			assert.ErrorIs(t, c.Err, ErrCanceled, name)
			require.NoError(t, qs[0].Cancel(), name)
			c = reapOne(t, r)
			assert.Equal(t, 0, c.User, name)
			assert.ErrorIs(t, c.Err, ErrCanceled, name)
			_, err = unix.Write(wr, []byte("Z"))
			require.NoError(t, err)
			c = reapOne(t, r)
			assert.Equal(t, 2, c.User, name)
			require.NoError(t, c.Err, name)
			assert.Equal(t, 1, c.N, name)

			r.ordMu.Lock()
			assert.Equal(t, ordList{-1, -1}, r.ord.get(k), "%s: the stream's FIFO is gone", name)
			assert.Empty(t, r.ord.sparse, name)
			r.ordMu.Unlock()
		}
		assertNoMore(t, r)
	})
}

// Reads (and writes) at the current position on one fd complete in
// submission order on every backend; Unordered opts out.
func TestConformanceStreamOrder(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		bufs := make([][]byte, 4)
		for i := range bufs {
			bufs[i] = make([]byte, 1)
			_, err := r.Submit(Read(rd, bufs[i], -1).WithUser(i))
			require.NoError(t, err)
		}
		for i := 0; i < 4; i++ {
			_, err := unix.Write(wr, []byte{'A' + byte(i)})
			require.NoError(t, err)
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			assert.Equal(t, i, c.User, "read #%d completes %d-th", c.User, i)
			assert.Equal(t, string(rune('A'+i)), string(bufs[c.User.(int)][:c.N]))
		}

		// Canceling a waiting read takes it out of the line; canceling the
		// head lets the next one in.
		var qs [3]Request
		for i := range qs {
			var err error
			qs[i], err = r.Submit(Read(rd, make([]byte, 1), -1).WithUser(i))
			require.NoError(t, err)
		}
		require.NoError(t, qs[1].Cancel())
		c := reapOne(t, r)
		assert.Equal(t, 1, c.User)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		require.NoError(t, qs[0].Cancel())
		c = reapOne(t, r)
		assert.Equal(t, 0, c.User)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		_, err := unix.Write(wr, []byte("Z"))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, 2, c.User)
		require.NoError(t, c.Err)

		// A deadline runs for a read that waits its turn.
		head, err := r.Submit(Read(rd, make([]byte, 1), -1).WithUser("head"))
		require.NoError(t, err)
		_, err = r.Submit(Read(rd, make([]byte, 1), -1).WithUser("late").WithDeadline(20 * time.Millisecond))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, "late", c.User)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		require.NoError(t, head.Cancel())
		reapOne(t, r)

		// Writes keep their order too.
		rd2, wr2 := pipe(t)
		tok := r.NewToken()
		for i := 0; i < 8; i++ {
			_, err := r.Submit(Write(wr2, []byte{'0' + byte(i)}, -1).WithToken(tok))
			require.NoError(t, err)
		}
		for i := 0; i < 8; i++ {
			require.NoError(t, reapOne(t, r).Err)
		}
		got := make([]byte, 16)
		n, err := unix.Read(rd2, got)
		require.NoError(t, err)
		assert.Equal(t, "01234567", string(got[:n]))

		// Unordered reads all complete, in some order.
		seen := map[byte]bool{}
		ubufs := make([][]byte, 4)
		for i := range ubufs {
			ubufs[i] = make([]byte, 1)
			_, err := r.Submit(Read(rd, ubufs[i], -1).WithUser(i).Unordered())
			require.NoError(t, err)
		}
		for i := 0; i < 4; i++ {
			_, err := unix.Write(wr, []byte{'a' + byte(i)})
			require.NoError(t, err)
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			seen[ubufs[c.User.(int)][0]] = true
		}
		assert.Len(t, seen, 4)
		assertNoMore(t, r)
	})
}

// TestConformanceStreamOrderBurst: reads waiting on one stream, whose data
// all arrives at once, are delivered in the order they were submitted,
// not only completed in it. A stream's next read starts when the one
// before it completes, and may complete at once (the poll backend reads
// data already there as it starts the read): it is handed on only after
// the one before it is delivered. Reaped one at a time and in batches.
func TestConformanceStreamOrderBurst(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		const n = 16
		bufs := make([][]byte, n)
		for i := range bufs {
			bufs[i] = make([]byte, 1)
		}
		data := make([]byte, n)
		for round := 0; round < 20; round++ {
			for i := range bufs {
				_, err := r.Submit(Read(rd, bufs[i], -1).WithUser(i))
				require.NoError(t, err)
			}
			for i := range data {
				data[i] = byte(round*n + i)
			}
			_, err := unix.Write(wr, data)
			require.NoError(t, err)
			batch := 1 + round%4
			next := 0
			for next < n {
				cs := make([]Completion, batch)
				k, err := r.Reap(cs, 10*time.Second)
				require.NoError(t, err)
				require.NotZero(t, k, "a completion within 10s")
				for _, c := range cs[:k] {
					require.NoError(t, c.Err)
					require.Equal(t, next, c.User, "round %d: read #%v delivered %d-th", round, c.User, next)
					require.Equal(t, data[next], bufs[next][0])
					next++
				}
			}
		}

		// Writes too: each one completes as it starts, into a pipe with
		// room, and hands the stream on to the next.
		for i := 0; i < n; i++ {
			_, err := r.Submit(Write(wr, data[i:i+1], -1).WithUser(i))
			require.NoError(t, err)
		}
		for i := 0; i < n; i++ {
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			require.Equal(t, i, c.User, "write #%v delivered %d-th", c.User, i)
		}
		got := make([]byte, 2*n)
		k, err := unix.Read(rd, got)
		require.NoError(t, err)
		assert.Equal(t, data, got[:k])
		assertNoMore(t, r)
	})
}

// One rule for contexts: a deadline is ErrTimeout, the context's own error
// is reachable with errors.Is, and an ended context starts nothing.
func TestConformanceContexts(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)

		// Do and ReadAt with a deadline.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		_, err := r.ReadAt(ctx, rd, make([]byte, 1), -1)
		cancel()
		assert.ErrorIs(t, err, ErrTimeout)
		assert.ErrorIs(t, err, ErrCanceled)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

		// Do canceled while running.
		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(10*time.Millisecond, cancel)
		c, err := r.Do(ctx, Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.ErrorIs(t, c.Err, context.Canceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout)

		// An ended context never starts the operation.
		c, err = r.Do(ctx, Write(wr, []byte("must not be written"), -1).WithUser("u"))
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, context.Canceled)
		assert.Equal(t, "u", c.User)
		n, err := r.WriteAt(ctx, wr, []byte("nor this"), -1)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, context.Canceled)
		assert.True(t, pipeEmpty(t, rd), "an ended context wrote nothing")
		_, err = r.Do(ctx, Read(-1, nil, 0))
		assert.ErrorIs(t, err, ErrInvalid, "bad input is still bad input")

		// Token.Bind: a deadline is ErrTimeout, like everywhere else.
		tok := r.NewToken()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		tok.Bind(ctx)
		_, err = r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.ErrorIs(t, c.Err, context.DeadlineExceeded)

		// Bind with an ended context: nothing submitted after starts.
		tok = r.NewToken()
		ended, endNow := context.WithCancel(context.Background())
		endNow()
		tok.Bind(ended)
		_, err = r.Submit(Write(wr, []byte("no"), -1).WithToken(tok))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, context.Canceled)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.True(t, pipeEmpty(t, rd))

		// Request.Wait with a deadline.
		q, err := r.Start(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		c, err = q.Wait(ctx)
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.ErrorIs(t, c.Err, context.DeadlineExceeded)
		_, err = q.Wait(context.Background())
		assert.ErrorIs(t, err, ErrNotFound, "a delivered request's handle is stale")
	})
}

// Smaller edges: Readv with an empty element, ErrFull's advice.
func TestConformanceSmallEdges(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		_, err := r.Submit(Readv(rd, [][]byte{make([]byte, 4), nil}, -1))
		assert.ErrorIs(t, err, ErrInvalid, "nil element, as Read refuses nil")
		for i := 0; i < 2; i++ {
			_, err := r.Submit(Read(rd, make([]byte, 1), -1).Unordered())
			require.NoError(t, err)
		}
		_, err = r.Submit(Nop())
		require.ErrorIs(t, err, ErrFull)
		assert.Contains(t, err.Error(), "Reap", "ErrFull says what frees a slot")
		assert.Equal(t, 2, r.InFlight())
		require.NoError(t, r.CancelAll())
		reapOne(t, r)
		reapOne(t, r)
		assertSettled(t, r)
		assert.True(t, errors.Is(ErrTimeout, ErrCanceled))
	})
}

// An errno completion says which operation on which fd failed, and still
// matches the errno.
func TestConformanceErrnoNamesOpAndFD(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		bad, err := unix.Dup(rd)
		require.NoError(t, err)
		require.NoError(t, unix.Close(bad)) // a number that names nothing now
		c, err := r.Do(context.Background(), Read(bad, make([]byte, 1), -1))
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, unix.EBADF)
		var ioe *IOError
		require.ErrorAs(t, c.Err, &ioe)
		assert.Equal(t, "read", ioe.Op)
		assert.Equal(t, bad, ioe.FD)
		assert.Contains(t, c.Err.Error(), "read fd "+strconv.Itoa(bad)+": bad file descriptor")
	})
}

// Ring.Cancel cancels many requests in one batch; a Token can be reset and
// reused once its requests are delivered.
func TestConformanceBatchCancelAndTokenReset(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		tok := r.NewToken()
		for round := 0; round < 3; round++ {
			reqs := make([]Request, 16)
			for i := range reqs {
				rd, _ := pipe(t)
				var err error
				reqs[i], err = r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok))
				require.NoError(t, err)
			}
			fq, err := r.Submit(Foreign(nil))
			require.NoError(t, err)
			done, err := r.Submit(Nop())
			require.NoError(t, err)
			reapOne(t, r) // the nop: its handle is stale now
			n, err := r.Cancel(append(reqs, done, Request{}, fq)...)
			require.NoError(t, err)
			assert.Equal(t, 17, n, "in flight among those given")
			require.NoError(t, r.Complete(fq, 0, ErrCanceled))
			for i := 0; i < 17; i++ {
				assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
			}
			assertNoMore(t, r)

			rd, _ := pipe(t)
			_, err = r.Submit(Read(rd, make([]byte, 1), -1).WithToken(tok))
			require.NoError(t, err)
			assert.ErrorIs(t, tok.Reset(), ErrInvalid, "a member is still pending")
			require.NoError(t, tok.Cancel())
			assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
			q, err := r.Submit(Nop().WithToken(tok))
			require.NoError(t, err)
			assert.False(t, q.Pending(), "a canceled token covers the future")
			assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
			require.NoError(t, tok.Reset())
			assert.False(t, tok.Canceled())
		}
	})
}

// An operation the kernel's io_uring lacks is ErrNotSupported for that
// operation alone: the ring stays on io_uring for the others.
func TestURingProbesEachOp(t *testing.T) {
	saved := uringSupports
	uringSupports = func(r *uring.Ring, op uint8) bool { return op != uring.OpFsync && saved(r, op) }
	t.Cleanup(func() { uringSupports = saved })
	r, err := New(Config{Entries: 8})
	require.NoError(t, err)
	defer r.Close()
	assert.Equal(t, BackendURing, r.Backend().Backend, "one missing op does not turn io_uring off")
	fd := tempFile(t, []byte("data"))
	_, err = r.Submit(Fsync(fd))
	assert.ErrorIs(t, err, ErrNotSupported)
	assert.NotErrorIs(t, err, ErrInvalid)
	n, err := r.ReadAt(context.Background(), fd, make([]byte, 4), 0)
	require.NoError(t, err)
	assert.Equal(t, 4, n)
}

// A buffer the caller dropped stays alive, at the address the kernel
// holds, until its request's completion is delivered, whatever the garbage
// collector does meanwhile.
func TestConformanceBufferSurvivesGC(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		var freed atomic.Bool
		const n = 8
		reqs := make([]Request, n)
		for i := range reqs {
			b := new([4096]byte)
			runtime.SetFinalizer(b, func(*[4096]byte) { freed.Store(true) })
			var err error
			reqs[i], err = r.Submit(Read(rd, b[:], -1).WithUser(i))
			require.NoError(t, err)
		}
		for i := 0; i < 5; i++ {
			runtime.GC()
		}
		assert.False(t, freed.Load(), "a buffer of a pending request was collected")
		// Churn the heap, then let the reads land.
		junk := make([][]byte, 0, 1024)
		for i := 0; i < 1024; i++ {
			junk = append(junk, make([]byte, 4096))
		}
		runtime.GC()
		_ = junk
		for i := 0; i < n; i++ {
			_, err := unix.Write(wr, []byte{byte('a' + i)})
			require.NoError(t, err)
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			assert.Equal(t, 1, c.N)
		}
		assert.False(t, freed.Load(), "collected before delivery")
	})
}

// Canceling allocates nothing in steady state: a token's cancel of pending
// reads, their delivery and the token's reuse.
func TestConformanceCancelZeroAllocs(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		const n = 8
		fds := make([]int, n)
		bufs := make([][]byte, n)
		for i := range fds {
			fds[i], _ = pipe(t)
			bufs[i] = make([]byte, 8)
		}
		tok := r.NewToken()
		var cs [n]Completion
		cycle := func() {
			for i := range fds {
				if _, err := r.Submit(Read(fds[i], bufs[i], -1).WithToken(tok)); err != nil {
					t.Fatal(err)
				}
			}
			if err := tok.Cancel(); err != nil {
				t.Fatal(err)
			}
			for got := 0; got < n; {
				k, err := r.Reap(cs[got:], 10*time.Second)
				if err != nil || k == 0 {
					t.Fatalf("reap: %d, %v", k, err)
				}
				for _, c := range cs[got : got+k] {
					if !errors.Is(c.Err, ErrCanceled) {
						t.Fatalf("completion %v, want ErrCanceled", c.Err)
					}
				}
				got += k
			}
			if err := tok.Reset(); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < 4; i++ {
			cycle() // warm up: every slot used once
		}
		assert.Zero(t, testing.AllocsPerRun(20, cycle), "allocations per cancel cycle")
	})
}

// Canceling many foreign requests at once (a token over 64 queued USB
// transfers, Ring.Cancel of all of them, or Ring.CancelAll) allocates
// nothing either: the hooks are gathered in a buffer that is reused.
func TestConformanceCancelForeignZeroAllocs(t *testing.T) {
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		const n = 64
		tok := r.NewToken()
		reqs := make([]Request, n)
		hooks := make([]func(), n)
		for i := range hooks {
			hooks[i] = func() { _ = r.Complete(reqs[i], 0, ErrCanceled) }
		}
		var cs [n]Completion
		submit := func() {
			for i := range reqs {
				q, err := r.Submit(Foreign(hooks[i]).WithToken(tok))
				require.NoError(t, err)
				reqs[i] = q
			}
		}
		drain := func() {
			for got := 0; got < n; {
				k, err := r.Reap(cs[got:], 10*time.Second)
				require.NoError(t, err)
				require.NotZero(t, k)
				for _, c := range cs[got : got+k] {
					require.ErrorIs(t, c.Err, ErrCanceled)
				}
				got += k
			}
		}
		// mallocs returns the fewest allocations one call of f made in
		// ten tries: another goroutine of the test binary (an earlier
		// test's, winding down) may allocate meanwhile; f itself must
		// not. As testing.AllocsPerRun does, f runs with GOMAXPROCS at 1,
		// so that others run only where f blocks.
		mallocs := func(f func()) uint64 {
			best := ^uint64(0)
			for range 10 {
				submit()
				var before, after runtime.MemStats
				procs := runtime.GOMAXPROCS(1)
				runtime.ReadMemStats(&before)
				f()
				runtime.ReadMemStats(&after)
				runtime.GOMAXPROCS(procs)
				best = min(best, after.Mallocs-before.Mallocs)
				drain()
				require.NoError(t, tok.Reset())
			}
			return best
		}
		assert.Zero(t, mallocs(func() { require.NoError(t, tok.Cancel()) }), "allocations of Token.Cancel over %d foreign requests", n)
		assert.Zero(t, mallocs(func() {
			k, err := r.Cancel(reqs...)
			require.NoError(t, err)
			require.Equal(t, n, k)
		}), "allocations of Ring.Cancel over %d foreign requests", n)
		assert.Zero(t, mallocs(func() { require.NoError(t, r.CancelAll()) }), "allocations of Ring.CancelAll over %d foreign requests", n)
	})
}

// TestCheckedPlainAgreesWithCheck holds the submit path's fast check to the
// full one: for every constructor, with good and bad arguments and every
// modifier, an op that checkedPlain admits is one that check accepts and
// plain calls plain. And the fast check does serve the ops it is for.
func TestCheckedPlainAgreesWithCheck(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
		require.NoError(t, err)
		defer other.Close()
		buf := make([]byte, 16)
		ms := &Msg{Buffers: [][]byte{buf}}
		var over int64 = math.MaxInt32 + 1 // truncated where ints have 32 bits: another negative fd
		fds := []int{-1, 0, 5, math.MaxInt32, int(over), math.MinInt}
		bufs := [][]byte{nil, {}, buf}
		offs := []int64{-2, -1, 0, 4096}
		var ops []Op
		for _, fd := range fds {
			for _, b := range bufs {
				for _, off := range offs {
					ops = append(ops, Read(fd, b, off), Write(fd, b, off), ReadFixed(fd, b, off, 0),
						WriteFixed(fd, b, off, 1<<20), Readv(fd, [][]byte{b}, off), Writev(fd, [][]byte{b, buf}, off))
				}
				ops = append(ops, Send(fd, b, 0), Recv(fd, b, 0), Send(fd, b, -1))
			}
			ops = append(ops, Poll(fd, unix.POLLIN), Poll(fd, 0), Fsync(fd), Close(fd), Accept(fd, 0),
				Shutdown(fd, unix.SHUT_RD), SendMsg(fd, ms, 0), RecvMsg(fd, ms, 0), PollMultishot(fd, unix.POLLIN),
				AcceptMultishot(fd, 0), Connect(fd, &unix.SockaddrInet4{Port: 1}), OpenAt(fd, "x", 0, 0),
				Statx(fd, "x", 0, 0, new(unix.Statx_t)))
		}
		ops = append(ops, Nop(), Timeout(time.Second), Timeout(-1), Foreign(func() {}), Op{}, Op{code: Opcode(numOps)})
		tok, zeroTok := r.NewToken(), new(Token)
		mods := []func(Op) Op{
			func(o Op) Op { return o },
			func(o Op) Op { return o.WithUser(7) },
			func(o Op) Op { return o.Unordered() },
			func(o Op) Op { return o.FixedFile() },
			func(o Op) Op { return o.WithToken(tok) },
			func(o Op) Op { return o.WithToken(zeroTok) },
			func(o Op) Op { return o.WithToken(other.NewToken()) },
			func(o Op) Op { return o.WithDeadline(time.Second) },
			func(o Op) Op { return o.WithDeadline(-1) },
			func(o Op) Op { o.hook = func() {}; o.rare |= rareFeature; return o }, // as Foreign has
			// Offsets set in place, after the constructor checked its own.
			func(o Op) Op { o.SetOffset(-1); return o },
			func(o Op) Op { o.SetOffset(-2); return o },
			func(o Op) Op { o.SetOffset(4096); return o },
			func(o Op) Op { o = o.Unordered(); o.SetOffset(-1); return o },
			func(o Op) Op { o.SetOffset(-1); return o.Unordered() },
		}
		fast := 0
		for _, o := range ops {
			for _, m := range mods {
				op := m(o)
				if op.rare&rareFeature == 0 {
					// The fast check tests rare alone for these.
					require.True(t, op.deadline == 0 && op.token == nil && op.hook == nil && op.bufs == nil && op.arg == nil && !op.fixedFD,
						"%v carries a rare field without rare set", op.code)
				}
				if !op.checkedPlain(r) {
					continue
				}
				fast++
				require.NoError(t, op.check(r), "checkedPlain admits %v (fd %d, %d bytes, offset %d) that check refuses", op.code, op.fd, len(op.buf), op.off)
				require.True(t, op.plain(), "checkedPlain admits %v (fd %d, offset %d) that plain refuses", op.code, op.fd, op.off)
				require.True(t, op.dur == 0 && op.deadline == 0, "checkedPlain admits %v with a duration or deadline (slot.fillFast drops them)", op.code)
				if r.plainBe != nil {
					// submitPlains calls its preparation without looking.
					require.NotNil(t, opImpls[op.code].prep, "checkedPlain admits %v, which io_uring has no preparation for", op.code)
				}
			}
		}
		for _, op := range []Op{Nop(), Read(5, buf, 0), Write(5, buf, 4096),
			Read(0, buf, 0).WithUser(1), Close(5), Fsync(5), setOffset(Read(5, buf, -1), 0),
			setOffset(Write(5, buf, -2), 4096)} {
			if op.check(r) == nil { // what this backend runs here
				assert.True(t, op.checkedPlain(r), "the fast check does not serve %v", op.code)
			}
		}
		// At the current position, even unordered: the io_uring backend
		// looks at the file first (a blocking terminal's request goes to
		// the kernel's workers), which the one-step path does not.
		for _, op := range []Op{Read(5, buf, -1).Unordered(), Write(5, buf, -1).Unordered(), setOffset(Read(5, buf, 0), -1).Unordered()} {
			assert.False(t, op.checkedPlain(r), "the fast check serves %v at the current position", op.code)
		}
		t.Logf("%d of %d ops admitted by the fast check", fast, len(ops)*len(mods))
	})
}

// setOffset returns o with its offset set in place to off.
func setOffset(o Op, off int64) Op {
	o.SetOffset(off)
	return o
}

// TestPrepInline holds fillPlains' inline preparations and opcodes to opImpls: the
// functions it calls for Read, Write and Nop are the ones their entries
// name, so that the inline path and the general one prepare alike.
func TestPrepInline(t *testing.T) {
	fn := func(f func(*slot, *uring.SQE)) uintptr { return reflect.ValueOf(f).Pointer() }
	inline := map[Opcode]func(*slot, *uring.SQE){OpRead: prepRW, OpWrite: prepRW, OpNop: prepNop}
	for op, want := range inline {
		require.NotNil(t, opImpls[op].prep, "%v has no preparation", op)
		assert.Equal(t, fn(want), fn(opImpls[op].prep), "%v: submitPlains prepares it with another function than opImpls", op)
	}
	// fillPlains' opcodes: opImpls' own for these, noInline for the rest.
	for code := range 256 {
		op := Opcode(code)
		if _, ok := inline[op]; ok {
			assert.Equal(t, uringOps[op], inlineOps[op], "%v: fillPlains' io_uring opcode", op)
		} else {
			assert.Equal(t, uint8(noInline), inlineOps[op], "%v: fillPlains would take it inline", op)
		}
	}
}

// TestConformanceBatchTakenBack: a batch that starts with ops on the fast
// path and meets one that is not, at any position. A bad one refuses the
// whole batch: nothing started, no Request handed out, every slot free. A
// good one (with a token) goes in with the rest, and each op completes
// once.
func TestConformanceBatchTakenBack(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		tok := r.NewToken()
		for k := 1; k < 8; k++ {
			ops, reqs := nopsWith(8, k, Read(rd, nil, 0))
			n, err := r.SubmitBatch(ops, reqs)
			require.ErrorIs(t, err, ErrInvalid, "bad op at %d", k)
			require.ErrorContains(t, err, fmt.Sprintf("op %d", k))
			require.Zero(t, n)
			assert.Zero(t, r.InFlight(), "bad op at %d", k)
			for i := range reqs {
				assert.Zero(t, reqs[i], "request %d of a batch refused for its op %d", i, k)
			}
			ops[k] = Nop().WithToken(tok).WithUser(k)
			n, err = r.SubmitBatch(ops, reqs)
			require.NoError(t, err)
			require.Equal(t, 8, n)
			seen := reapUsers(t, r, 8)
			for i := range 8 {
				assert.Equal(t, 1, seen[i], "completions of op %d (token op at %d)", i, k)
			}
			assertNoMore(t, r)
		}
	})
}

// nopsWith returns a batch of n NOPs, each carrying its index as its User
// value, but for op k, and room for its Requests.
func nopsWith(n, k int, op Op) ([]Op, []Request) {
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = Nop().WithUser(i)
	}
	ops[k] = op
	return ops, make([]Request, n)
}

// reapUsers reaps n completions, none of them failed, and counts them by
// their User values.
func reapUsers(t *testing.T, r *Ring, n int) map[any]int {
	t.Helper()
	seen := map[any]int{}
	comps := make([]Completion, n)
	for got := 0; got < n; {
		m, err := r.Reap(comps[:n-got], 10*time.Second)
		require.NoError(t, err)
		require.NotZero(t, m, "completions within 10s")
		for _, c := range comps[:m] {
			assert.NoError(t, c.Err)
			seen[c.User]++
		}
		got += m
	}
	return seen
}

// occupySQ fills n entries of r's SQ with wake nops, published and not
// yet entered, as another submitter leaves them just before its enter.
func occupySQ(t *testing.T, r *Ring, n int) {
	t.Helper()
	b := r.plainBe
	r.sqMu.Lock()
	for range n {
		sqe, _ := b.sqe()
		sqe.Opcode, sqe.FD, sqe.UserData = uring.OpNop, -1, kindWake<<kindShft
	}
	b.flush()
	r.sqMu.Unlock() // not unlockSQ: no enter
	require.EqualValues(t, n, b.ring.Unsubmitted())
}

// TestURingBatchCheckedWhenSQShort: a batch larger than the room left in
// the SQ hands part of itself to the kernel before its last op is taken,
// so it cannot be taken back then; its ops are all checked first, and a
// bad one late in the batch still refuses all of it.
func TestURingBatchCheckedWhenSQShort(t *testing.T) {
	r, err := New(Config{Entries: 8, Backend: BackendURing})
	require.NoError(t, err)
	defer r.Close()
	require.NotNil(t, r.plainBe)
	// Half the SQ holds wake nops, published and not yet entered (as
	// another submitter leaves them just before its enter).
	occupy := func() { occupySQ(t, r, 4) }
	rd, _ := pipe(t)
	for _, k := range []int{5, 7} {
		occupy()
		ops, reqs := nopsWith(8, k, Read(rd, nil, 0))
		n, err := r.SubmitBatch(ops, reqs)
		require.ErrorIs(t, err, ErrInvalid, "bad op at %d", k)
		require.Zero(t, n)
		assert.Zero(t, r.InFlight())
		assertNoMore(t, r)
	}
	occupy()
	ops, reqs := nopsWith(8, 0, Nop().WithUser(0))
	n, err := r.SubmitBatch(ops, reqs)
	require.NoError(t, err)
	require.Equal(t, 8, n)
	seen := reapUsers(t, r, 8)
	for i := range 8 {
		assert.Equal(t, 1, seen[i], "completions of op %d", i)
	}
	assertNoMore(t, r)
}

// TestOpHotFields: what Op.checkedPlain and slot.fillFast read of an op
// lies in its first 64 bytes.
func TestOpHotFields(t *testing.T) {
	assertFieldsWithin(t, reflect.TypeOf(Op{}), 64, "code", "unordered", "rare", "events", "fd", "buf", "off", "user")
}

// TestSlotHotLines: every field that a plain request's submission and
// completion touch lies in the slot's first two cache lines (the cold
// ones after them), so that a batch touches two lines per slot.
func TestSlotHotLines(t *testing.T) {
	assertFieldsWithin(t, reflect.TypeOf(slotFields{}), 128, "ks", "flags", "foreign", "awaited", "code", "cold",
		"fd", "events", "res", "freeNext", "sqPos", "off", "dur", "deadline", "buf", "user")
}

// assertFieldsWithin checks that each named field of struct type typ ends
// within its first limit bytes.
func assertFieldsWithin(t *testing.T, typ reflect.Type, limit uintptr, names ...string) {
	t.Helper()
	for _, name := range names {
		f, ok := typ.FieldByName(name)
		require.True(t, ok, "%v has no field %s", typ, name)
		assert.LessOrEqual(t, f.Offset+f.Type.Size(), limit, "%v field %s ends at byte %d", typ, name, f.Offset+f.Type.Size())
	}
}

// TestURingBatchMixedPreparations: a batch whose ops fillPlains prepares
// inline (Nop, Read, Write) and ops it leaves to plainCall (Fsync, Close
// of a bad fd), larger than the SQ, so that the batch also goes to the
// kernel midway: every op completes once, with its own result. A bad op
// after a called one takes the whole batch back, whatever ran between.
func TestURingBatchMixedPreparations(t *testing.T) {
	r, err := New(Config{Entries: 8, Backend: BackendURing})
	require.NoError(t, err)
	defer r.Close()
	require.NotNil(t, r.plainBe)
	data := []byte("0123456789abcdef")
	fd := tempFile(t, data)
	for _, c := range []struct{ size, occupied int }{{1, 0}, {3, 0}, {8, 0}, {1, 7}, {5, 4}, {8, 4}, {8, 7}} {
		size := c.size
		if c.occupied > 0 {
			occupySQ(t, r, c.occupied) // room for fewer than the batch: it goes in midway
		}
		ops := make([]Op, size)
		bufs := make([][]byte, size)
		for i := range ops {
			switch i % 5 {
			case 0:
				ops[i] = Nop()
			case 1:
				bufs[i] = make([]byte, 4)
				ops[i] = Read(fd, bufs[i], int64(i%4)*4)
			case 2:
				ops[i] = Fsync(fd)
			case 3:
				ops[i] = Write(fd, data[:2], 0) // the same bytes again
			case 4:
				ops[i] = Close(1 << 20) // no such fd: EBADF, from the kernel
			}
			ops[i] = ops[i].WithUser(i)
		}
		reqs := make([]Request, size)
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err, "a batch of %d, %d SQEs taken", size, c.occupied)
		require.Equal(t, size, n)
		comps := make([]Completion, size)
		seen := map[int]int{}
		for got := 0; got < size; {
			m, err := r.Reap(comps[got:], 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, m, "completions within 10s")
			got += m
		}
		for _, c := range comps {
			i := c.User.(int)
			seen[i]++
			assert.Equal(t, ops[i].Code(), c.Op, "op %d of %d", i, size)
			assert.Equal(t, reqs[i], c.Req, "op %d of %d: its Request", i, size)
			switch i % 5 {
			case 1:
				assert.NoError(t, c.Err)
				assert.Equal(t, 4, c.N)
				off := (i % 4) * 4
				assert.Equal(t, data[off:off+4], bufs[i], "op %d of %d", i, size)
			case 3:
				assert.NoError(t, c.Err)
				assert.Equal(t, 2, c.N)
			case 4:
				assert.ErrorIs(t, c.Err, unix.EBADF, "op %d of %d", i, size)
			default:
				assert.NoError(t, c.Err, "op %d of %d", i, size)
			}
		}
		for i := range size {
			assert.Equal(t, 1, seen[i], "completions of op %d of %d", i, size)
		}
		assertNoMore(t, r)
	}
	// A bad op (an empty buffer) after ops of both kinds: nothing starts.
	ops := []Op{Nop(), Fsync(fd), Read(fd, make([]byte, 4), 0), Close(1 << 20), Read(fd, nil, 0)}
	n, err := r.SubmitBatch(ops, make([]Request, len(ops)))
	require.ErrorIs(t, err, ErrInvalid)
	require.Zero(t, n)
	assert.Zero(t, r.InFlight())
	assertNoMore(t, r)
}

// TestURingStartOneEdges: a lone plain op (Submit, or SubmitBatch of one)
// is started in one step only when nothing else is due; a full SQ, a ring
// with no free slot and deferred submissions each take the general path,
// with the same results, and every submission is one enter.
func TestURingStartOneEdges(t *testing.T) {
	r, err := New(Config{Entries: 8, Backend: BackendURing})
	require.NoError(t, err)
	defer r.Close()
	b := r.plainBe
	require.NotNil(t, b)
	comps := make([]Completion, 8)
	reapAll := func(want int) {
		t.Helper()
		for got := 0; got < want; {
			m, err := r.Reap(comps, 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, m, "completions within 10s")
			for _, c := range comps[:m] {
				require.NoError(t, c.Err)
			}
			got += m
		}
		require.Zero(t, r.InFlight())
	}
	submitBoth := func(what string) {
		t.Helper()
		_, err := r.Submit(Nop())
		require.NoError(t, err, "Submit, %s", what)
		reqs := make([]Request, 1)
		n, err := r.SubmitBatch([]Op{Nop()}, reqs)
		require.NoError(t, err, "SubmitBatch, %s", what)
		require.Equal(t, 1, n)
		reapAll(2)
	}

	// The common case: one enter per submission, none left over.
	before := b.kernelEnters()
	submitBoth("alone")
	assert.EqualValues(t, 2, b.kernelEnters()-before, "one io_uring_enter per lone op")
	assert.Zero(t, b.ring.Unsubmitted())

	// A full SQ (published by a submitter on its way to enter): handed
	// over first, then the op.
	occupySQ(t, r, int(b.ring.SQEntries()))
	submitBoth("the SQ full")
	assert.Zero(t, b.ring.Unsubmitted())

	// A deferred entry (a stale one: its slot is free) is drained by the
	// general path, as unlockSQ does.
	r.pushDeferred(kindCancel, r.slots[0].key())
	submitBoth("an entry deferred")
	assert.Zero(t, r.def.n.Load(), "deferred entries drained")

	// No free slot: refused, nothing counted in flight or handed over.
	rd, wr := pipe(t)
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 1)
		_, err := r.Submit(Read(rd, bufs[i], -1))
		require.NoError(t, err, "read %d", i)
	}
	before = b.kernelEnters()
	_, err = r.Submit(Nop())
	require.ErrorIs(t, err, ErrFull)
	n, err := r.SubmitBatch([]Op{Nop()}, make([]Request, 1))
	require.ErrorIs(t, err, ErrFull)
	require.Zero(t, n)
	assert.Equal(t, 8, r.InFlight())
	assert.Equal(t, before, b.kernelEnters(), "nothing handed over")
	_, err = unix.Write(wr, make([]byte, 8))
	require.NoError(t, err)
	reapAll(8)
	submitBoth("after the ring was full")
}

// A nil context is refused by Do, which then starts nothing; Wait, whose
// request is already running, waits as with context.Background (an error
// would leave the request to nobody), and Token.Bind binds nothing.
func TestConformanceNilContext(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		var nilCtx context.Context
		_, err := r.Do(nilCtx, Nop())
		assert.ErrorIs(t, err, ErrInvalid)
		rd, wr := pipe(t)
		q, err := r.Start(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
		time.AfterFunc(50*time.Millisecond, func() { unix.Write(wr, []byte{1}) })
		c, err := q.Wait(nilCtx)
		require.NoError(t, err)
		assert.NoError(t, c.Err)
		assert.Equal(t, 1, c.N, "waited for the data")
		assert.Zero(t, r.InFlight())
		tok := r.NewToken()
		assert.True(t, tok.Bind(nilCtx)())
		assert.False(t, tok.Canceled())
	})
}
