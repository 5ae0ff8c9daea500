//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eleventh round: hooks that close the ring from a deadline's timer or
// block, token resets under submission storms, and fds no caller should
// hand the ring.

// TestAdv11HookClosesRingFromDeadline: a foreign request's cancel hook,
// run by its deadline's timer (no caller to report to), completes its
// own request and closes the ring. Close returns (it drains what is left:
// nothing), the completion says ErrTimeout, Reap delivers it and then
// ErrClosed, and nothing is left running.
func TestAdv11HookClosesRingFromDeadline(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		other, err := r.Submit(Read(rd, make([]byte, 1), -1).WithUser("read"))
		require.NoError(t, err)
		closed := make(chan error, 1)
		var q Request
		var hookRuns atomic.Int32
		ready := make(chan struct{})
		q, err = r.Submit(Foreign(func() {
			hookRuns.Add(1)
			<-ready
			assert.NoError(t, r.Complete(q, 0, ErrCanceled))
			closed <- r.Close()
		}).WithDeadline(time.Millisecond).WithUser("foreign"))
		require.NoError(t, err)
		close(ready)
		select {
		case err := <-closed:
			assert.NoError(t, err, "Close from a deadline's hook")
		case <-time.After(10 * time.Second):
			t.Fatal("Close from a deadline's hook did not return")
		}
		got := map[any]Completion{}
		var cs [4]Completion
		for {
			n, err := r.Reap(cs[:], time.Second)
			for _, c := range cs[:n] {
				_, dup := got[c.User]
				assert.False(t, dup, "%v delivered twice", c.User)
				got[c.User] = c
			}
			if err != nil {
				require.ErrorIs(t, err, ErrClosed)
				break
			}
		}
		require.Len(t, got, 2)
		assert.Equal(t, q, got["foreign"].Req)
		assert.ErrorIs(t, got["foreign"].Err, ErrTimeout, "the deadline's cancel")
		assert.Equal(t, other, got["read"].Req)
		assert.ErrorIs(t, got["read"].Err, ErrCanceled, "Close's cancel")
		assert.Equal(t, int32(1), hookRuns.Load())
	})
}

// TestAdv11BlockedHookBlocksNoCancel: while a foreign request's hook is
// blocked (its transport is slow to stop), every other cancel of that
// request, of its token, of the ring, returns at once ("a cancel that
// finds the hook running neither calls it again nor waits for it"), and
// requests submitted meanwhile run and are canceled normally.
func TestAdv11BlockedHookBlocksNoCancel(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		tok := r.NewToken()
		entered := make(chan struct{})
		release := make(chan struct{})
		var runs atomic.Int32
		q, err := r.Submit(Foreign(func() {
			runs.Add(1)
			close(entered)
			<-release
		}).WithToken(tok))
		require.NoError(t, err)
		firstDone := make(chan error, 1)
		go func() { firstDone <- q.Cancel() }()
		<-entered
		within := func(what string, f func()) {
			t.Helper()
			done := make(chan struct{})
			go func() { defer close(done); f() }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				close(release)
				t.Fatalf("%s waited for a hook that is blocked", what)
			}
		}
		within("Request.Cancel", func() { assert.ErrorIs(t, q.Cancel(), ErrNotFound) })
		within("Ring.Cancel", func() {
			n, err := r.Cancel(q, q)
			assert.NoError(t, err)
			assert.Zero(t, n)
		})
		within("Token.Cancel", func() { assert.NoError(t, tok.Cancel()) })
		within("CancelAll", func() { assert.NoError(t, r.CancelAll()) })
		within("Token.Reset", func() { assert.ErrorIs(t, tok.Reset(), ErrInvalid, "a member pending") })
		// Meanwhile the ring works: a read runs, a canceled token covers
		// the future.
		within("a read", func() {
			unix.Write(wr, []byte("z"))
			c := doOp(t, r, Read(rd, make([]byte, 1), -1))
			assert.Equal(t, 1, c.N)
			c = doOp(t, r, Nop().WithToken(tok))
			assert.ErrorIs(t, c.Err, ErrCanceled)
		})
		close(release)
		select {
		case err := <-firstDone:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("the first cancel did not return once its hook did")
		}
		assert.Equal(t, int32(1), runs.Load(), "the hook ran once")
		require.NoError(t, r.Complete(q, 0, ErrCanceled))
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		require.NoError(t, tok.Reset())
		assert.NoError(t, doOp(t, r, Nop().WithToken(tok)).Err, "reset: runs again")
		assertSettled(t, r)
	})
}

// TestAdv11TokenResetStorm: goroutines submit with one token (single ops,
// batches, foreign ones) while others cancel it and reset it at random.
// Reset succeeds only with nothing pending; every request is delivered
// exactly once, with its result or ErrCanceled; a request submitted after
// a Cancel that returned and before any Reset began (the submitter knows:
// it did both itself, under a lock the resetters take) is canceled
// without running; and Pending is 0 at the end.
func TestAdv11TokenResetStorm(t *testing.T) {
	seed := adv11Seed(t)
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(seed, 1111))
		rd, wr := pipe(t)
		tok := r.NewToken()
		x := newAdv11Tally()
		var resetMu sync.RWMutex // held for writing by Reset, for reading by "cancel then submit"
		var covered sync.Map     // ID -> true: must complete canceled
		var fq sync.Map
		var stop atomic.Bool
		var wg sync.WaitGroup
		var resets, resetRefused atomic.Int64
		for g := 0; g < 5; g++ {
			wg.Add(1)
			sg := rng.Uint64()
			go func(g int) {
				defer wg.Done()
				rg := rand.New(rand.NewPCG(sg, uint64(g)))
				reqs := make([]Request, 4)
				var cs [8]Completion
				for !stop.Load() {
					switch rg.IntN(7) {
					case 0, 1:
						op := Read(rd, make([]byte, 1), -1).WithToken(tok)
						if rg.IntN(2) == 0 {
							op = Timeout(time.Duration(rg.IntN(300)) * time.Microsecond).WithToken(tok)
						}
						if q, err := r.Submit(op); err == nil {
							x.accept(q, "single")
						} else if !errors.Is(err, ErrFull) {
							t.Errorf("Submit: %v", err)
						}
					case 2:
						ops := []Op{Nop().WithToken(tok), Timeout(50 * time.Microsecond).WithToken(tok), Nop(), Foreign(nil).WithToken(tok)}
						n, err := r.SubmitBatch(ops, reqs)
						if err != nil && !errors.Is(err, ErrFull) {
							t.Errorf("SubmitBatch: %v", err)
						}
						for i, q := range reqs[:n] {
							x.accept(q, fmt.Sprintf("batch %d", i))
							if i == 3 {
								fq.Store(q.ID(), q)
							}
						}
					case 3:
						// Cancel, then submit: covered, unless a Reset
						// comes between (which the lock keeps out).
						resetMu.RLock()
						if err := tok.Cancel(); err != nil {
							t.Errorf("Token.Cancel: %v", err)
						}
						q, err := r.Submit(Nop().WithToken(tok).WithUser("covered"))
						if err == nil {
							covered.Store(q.ID(), true)
							x.accept(q, "covered")
						}
						resetMu.RUnlock()
					case 4:
						resetMu.Lock()
						if err := tok.Reset(); err == nil {
							resets.Add(1)
						} else {
							resetRefused.Add(1)
							if !errors.Is(err, ErrInvalid) {
								t.Errorf("Reset: %v", err)
							}
						}
						resetMu.Unlock()
					case 5:
						n, _ := r.Reap(cs[:1+rg.IntN(len(cs))], time.Duration(rg.IntN(2))*time.Millisecond)
						for _, c := range cs[:n] {
							x.deliver(c)
							if _, ok := covered.Load(c.Req.ID()); ok && !errors.Is(c.Err, ErrCanceled) {
								t.Errorf("%v submitted with a canceled token ran: %+v", c.Req, c)
							}
						}
					case 6:
						unix.Write(wr, []byte{1})
						fq.Range(func(k, v any) bool {
							fq.Delete(k)
							err := r.Complete(v.(Request), 1, nil)
							if err != nil && !errors.Is(err, ErrNotFound) {
								t.Errorf("Complete: %v", err)
							}
							return true
						})
					}
				}
			}(g)
		}
		time.Sleep(300 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		// End it all: cancel what runs, complete the foreign ones, reap.
		require.NoError(t, tok.Cancel())
		require.NoError(t, r.CancelAll())
		deadline := time.Now().Add(10 * time.Second)
		for r.InFlight() > 0 || tok.Pending() > 0 {
			fq.Range(func(k, v any) bool {
				fq.Delete(k)
				r.Complete(v.(Request), 0, ErrCanceled)
				return true
			})
			var cs [16]Completion
			n, err := r.Reap(cs[:], 10*time.Millisecond)
			require.NoError(t, err)
			for _, c := range cs[:n] {
				x.deliver(c)
			}
			require.True(t, time.Now().Before(deadline), "in flight %d, pending %d", r.InFlight(), tok.Pending())
		}
		for {
			var cs [16]Completion
			n, err := r.Reap(cs[:], 20*time.Millisecond)
			require.NoError(t, err)
			if n == 0 {
				break
			}
			for _, c := range cs[:n] {
				x.deliver(c)
			}
		}
		x.check(t)
		assert.Zero(t, tok.Pending())
		assert.NoError(t, tok.Reset())
		t.Logf("resets %d, refused %d", resets.Load(), resetRefused.Load())
	})
}

// adv11FDNames returns the open fds as "fd=target" (the fd that reads
// the directory names nothing once read, and is left out).
func adv11FDNames(t *testing.T) map[string]int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	m := map[string]int{}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l != "" {
			m[fmt.Sprintf("%d=%s", fd, l)] = fd
		}
	}
	return m
}

// adv11NewFDs returns the fds open now that were not in before, and
// what they name.
func adv11NewFDs(t *testing.T, before map[string]int) map[int]string {
	out := map[int]string{}
	for k, fd := range adv11FDNames(t) {
		if _, ok := before[k]; !ok {
			out[fd] = k
		}
	}
	return out
}

// TestAdv11OpsOnRingsOwnFDs: a hostile caller finds the fds the ring
// opened for itself (its io_uring or epoll instance, its eventfds) in
// /proc/self/fd and aims requests at them: polls, reads, writes, a
// multishot poll. Each is accepted or refused, and each accepted one
// completes exactly once (by itself, or by its cancel); the ring keeps
// working and closes cleanly. (Closing them is not tried: that is the
// caller destroying the ring's state, as closing any fd under a request.)
func TestAdv11OpsOnRingsOwnFDs(t *testing.T) {
	for _, be := range backends {
		t.Run("backend="+be.String(), func(t *testing.T) {
			before := adv11FDNames(t)
			r, err := New(Config{Entries: 64, Backend: be})
			require.NoError(t, err)
			own := adv11NewFDs(t, before)
			require.NotEmpty(t, own)
			var names []string
			for _, k := range own {
				names = append(names, k)
			}
			t.Logf("the ring's own fds: %s", strings.Join(names, " "))
			var qs []Request
			for fd := range own {
				for _, op := range []Op{
					Poll(fd, unix.POLLIN),
					Poll(fd, unix.POLLOUT),
					PollMultishot(fd, unix.POLLIN),
					Read(fd, make([]byte, 8), -1).Unordered(),
					Read(fd, make([]byte, 8), 0),
				} {
					q, err := r.Submit(op.WithDeadline(100 * time.Millisecond).WithUser(fmt.Sprintf("%v on fd %d", op.Code(), fd)))
					if err != nil {
						t.Logf("refused: %v", err)
						continue
					}
					qs = append(qs, q)
				}
			}
			final := map[Request]int{}
			deadline := time.Now().Add(10 * time.Second)
			for len(final) < len(qs) && time.Now().Before(deadline) {
				var cs [16]Completion
				n, err := r.Reap(cs[:], time.Second)
				require.NoError(t, err)
				for _, c := range cs[:n] {
					if !c.More {
						final[c.Req]++
						t.Logf("%v: %s", c.User, adv9Res(c))
					}
				}
			}
			if len(final) < len(qs) {
				var left []string
				for _, q := range qs {
					if final[q] == 0 {
						left = append(left, q.String())
					}
				}
				t.Errorf("requests on the ring's own fds not completed within 10s: %v", left)
				r.CancelAll()
			}
			for q, k := range final {
				assert.Equal(t, 1, k, "%v final completions", q)
			}
			c, err := r.Do(context.Background(), Nop().WithUser("after"))
			require.NoError(t, err)
			assert.NoError(t, c.Err)
			done := make(chan error, 1)
			go func() { done <- r.Close() }()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs after requests on the ring's own fds")
			}
			assert.Empty(t, adv11NewFDs(t, before), "fds of the ring left after Close")
		})
	}
}
