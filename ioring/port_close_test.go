//go:build linux

package ioring

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's teardown, ring-leak, exit-no-cleanup and
// defer-taskrun "exit with requests pending" tests: Close with requests
// in flight, with consumers blocked in Reap or Wait, or from a hook,
// drains every request once and leaves nothing behind.

// portWithin runs fn on its own goroutine and fails the test when it does
// not return within d (a hang).
func portWithin(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// TestPortCloseWakesBlockedReap: a Reap blocked with no limit, with
// nothing in flight or with requests in flight, returns once the ring is
// closed: first what is queued, then ErrClosed.
func TestPortCloseWakesBlockedReap(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		q := submitPending(t, r, Read(rd, make([]byte, 8), -1))
		type result struct {
			cs  []Completion
			err error
		}
		results := make(chan result, 3)
		for range 3 {
			go func() {
				var res result
				for {
					var c [4]Completion
					n, err := r.Reap(c[:], -1)
					res.cs = append(res.cs, c[:n]...)
					if err != nil {
						res.err = err
						results <- res
						return
					}
				}
			}()
		}
		time.Sleep(20 * time.Millisecond) // let them block
		portWithin(t, 10*time.Second, "Close", func() { assert.NoError(t, r.Close()) })
		var all []Completion
		for range 3 {
			select {
			case res := <-results:
				assert.ErrorIs(t, res.err, ErrClosed)
				all = append(all, res.cs...)
			case <-time.After(10 * time.Second):
				t.Fatal("a Reap blocked with no limit did not return after Close")
			}
		}
		if assert.Len(t, all, 1) {
			assert.Equal(t, q, all[0].Req)
			assert.ErrorIs(t, all[0].Err, ErrCanceled)
		}
	})
}

// TestPortCloseWakesBlockedWait: a goroutine in Request.Wait on a pending
// request gets its canceled completion when the ring closes; a Do blocked
// likewise returns it.
func TestPortCloseWakesBlockedWait(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		q, err := r.Start(Read(rd, make([]byte, 8), -1))
		require.NoError(t, err)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			c, err := q.Wait(context.Background())
			assert.NoError(t, err)
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}()
		go func() {
			defer wg.Done()
			c, err := r.Do(context.Background(), Recv(a, make([]byte, 8), 0))
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed, "Do refused: the ring closed first")
				return
			}
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}()
		time.Sleep(20 * time.Millisecond)
		portWithin(t, 10*time.Second, "Close", func() { assert.NoError(t, r.Close()) })
		portWithin(t, 10*time.Second, "the waiters", wg.Wait)
	})
}

// TestPortCloseEveryKindInFlight: Close with every kind of request in
// flight (held reads, deadlines, timeouts, polls, accepts, multishot, a
// BufRing receive, a foreign request completed by its hook) delivers one
// final completion each, all canceled, and afterwards every call says
// ErrClosed.
func TestPortCloseEveryKindInFlight(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		l, _ := tcpListener(t, 4, 0)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		c1, _ := socketpair(t, unix.SOCK_STREAM)
		efd := eventFD(t)
		br, err := r.NewBufRing(4, 64)
		require.NoError(t, err)
		var fq Request
		var fmu sync.Mutex
		ops := []Op{
			Read(rd, make([]byte, 8), -1).WithUser("read"),
			Read(rd, make([]byte, 8), -1).WithUser("held"),
			Read(rd, make([]byte, 8), 0).WithDeadline(time.Hour).WithUser("deadline"),
			Timeout(time.Hour).WithUser("timeout"),
			Poll(rd, unix.POLLIN).WithUser("poll"),
			Accept(l, 0).WithUser("accept"),
			AcceptMultishot(l, 0).WithUser("accept-multishot"),
			PollMultishot(efd, unix.POLLIN).WithUser("poll-multishot"),
			RecvMultishot(c1, br, 0).WithUser("recv-multishot"),
			Recv(a, make([]byte, 8), 0).WithUser("recv"),
			Foreign(func() {
				fmu.Lock()
				q := fq
				fmu.Unlock()
				go r.Complete(q, 0, ErrCanceled)
			}).WithUser("foreign"),
		}
		reqs := make([]Request, len(ops))
		fmu.Lock()
		n, err := r.SubmitBatch(ops, reqs)
		fq = reqs[len(reqs)-1]
		fmu.Unlock()
		require.NoError(t, err)
		require.Equal(t, len(ops), n)
		portWithin(t, 10*time.Second, "Close", func() { assert.NoError(t, r.Close()) })
		assert.Zero(t, r.InFlight())

		seen := map[any]int{}
		for {
			var cs [4]Completion
			n, err := r.Reap(cs[:], 0)
			for _, c := range cs[:n] {
				if c.More {
					continue
				}
				assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
				seen[c.User]++
			}
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed)
				break
			}
			require.NotZero(t, n, "Reap after Close returns what is queued, then ErrClosed")
		}
		for _, op := range ops {
			assert.Equal(t, 1, seen[op.user], "final completions of %v", op.user)
		}

		// Everything afterwards: ErrClosed.
		_, err = r.Submit(Nop())
		assert.ErrorIs(t, err, ErrClosed)
		_, err = r.Start(Nop())
		assert.ErrorIs(t, err, ErrClosed)
		_, err = r.SubmitBatch([]Op{Nop(), Nop()}, make([]Request, 2))
		assert.ErrorIs(t, err, ErrClosed)
		_, err = r.SubmitBatch(nil, nil)
		assert.ErrorIs(t, err, ErrClosed)
		_, _, err = r.SubmitAndReap([]Op{Nop()}, make([]Request, 1), make([]Completion, 1), 0)
		assert.ErrorIs(t, err, ErrClosed)
		_, err = r.Do(context.Background(), Nop())
		assert.ErrorIs(t, err, ErrClosed)
		_, err = r.Cancel(reqs...)
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, r.CancelAll(), ErrClosed)
		assert.ErrorIs(t, r.NewToken().Cancel(), ErrClosed)
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{make([]byte, 8)}), ErrClosed)
		assert.ErrorIs(t, r.UnregisterBuffers(), ErrClosed)
		assert.ErrorIs(t, r.RegisterFiles([]int{rd}), ErrClosed)
		assert.ErrorIs(t, r.UnregisterFiles(), ErrClosed)
		_, err = r.NewBufRing(2, 8)
		assert.ErrorIs(t, err, ErrClosed)
		assert.ErrorIs(t, br.Close(), ErrClosed, "Ring.Close closed the BufRing")
		assert.ErrorIs(t, br.Release(0), ErrClosed)
		assert.Len(t, br.Buf(0), 64, "its memory stays readable")
		assert.ErrorIs(t, r.Complete(fq, 0, nil), ErrNotFound)
		assert.ErrorIs(t, r.Close(), ErrClosed)
		for _, q := range reqs {
			assert.ErrorIs(t, q.Cancel(), ErrNotFound)
			assert.False(t, q.Pending())
		}
	})
}

// TestPortCloseFromHook: a foreign request's cancel hook that completes
// its request and closes the ring (from inside CancelAll, a Token's
// cancel or Close itself) neither deadlocks nor loses a completion.
func TestPortCloseFromHook(t *testing.T) {
	for _, how := range []string{"cancel-all", "token", "request", "close"} {
		t.Run(how, func(t *testing.T) {
			forEachBackend(t, 8, func(t *testing.T, r *Ring) {
				tok := r.NewToken()
				var q Request
				var mu sync.Mutex
				closeErr := make(chan error, 1)
				hook := func() {
					mu.Lock()
					self := q
					mu.Unlock()
					assert.NoError(t, r.Complete(self, 0, ErrCanceled))
					closeErr <- r.Close()
				}
				mu.Lock()
				var err error
				q, err = r.Submit(Foreign(hook).WithToken(tok).WithUser("foreign"))
				mu.Unlock()
				require.NoError(t, err)
				rd, _ := pipe(t)
				other := submitPending(t, r, Read(rd, make([]byte, 8), -1).WithUser("read"))
				portWithin(t, 10*time.Second, how, func() {
					var err error
					switch how {
					case "cancel-all":
						err = r.CancelAll()
					case "token":
						err = tok.Cancel()
					case "request":
						err = q.Cancel()
					case "close":
						err = r.Close()
					}
					if err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("%s: %v", how, err)
					}
				})
				select {
				case err := <-closeErr:
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed, "the hook's Close")
					}
				case <-time.After(10 * time.Second):
					t.Fatal("the hook did not run")
				}
				portWithin(t, 10*time.Second, "Close", func() { r.Close() })
				seen := map[any]int{}
				for {
					var cs [4]Completion
					n, err := r.Reap(cs[:], time.Second)
					for _, c := range cs[:n] {
						assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
						seen[c.User]++
					}
					if err != nil {
						break
					}
				}
				assert.Equal(t, map[any]int{"foreign": 1, "read": 1}, seen)
				assert.False(t, other.Pending())
			})
		})
	}
}

// TestPortCloseConcurrentSubmitters: Close while goroutines submit,
// cancel and reap: each accepted request completes once, and each refused
// one says ErrClosed (or ErrFull).
func TestPortCloseConcurrentSubmitters(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		var mu sync.Mutex
		accepted := map[Request]bool{}
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var op Op
					switch (g + i) % 4 {
					case 0:
						op = Nop()
					case 1:
						op = Read(rd, make([]byte, 8), 0)
					case 2:
						op = Read(rd, make([]byte, 8), -1).WithDeadline(time.Millisecond)
					default:
						op = Timeout(time.Microsecond)
					}
					q, err := r.Submit(op)
					if err != nil {
						if !errors.Is(err, ErrFull) {
							assert.ErrorIs(t, err, ErrClosed)
							return
						}
						time.Sleep(10 * time.Microsecond)
						continue
					}
					mu.Lock()
					accepted[q] = true
					mu.Unlock()
					if i%3 == 0 {
						q.Cancel()
					}
				}
			}()
		}
		delivered := map[Request]int{}
		var rwg sync.WaitGroup
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				var cs [8]Completion
				n, err := r.Reap(cs[:], -1)
				mu.Lock()
				for _, c := range cs[:n] {
					delivered[c.Req]++
				}
				mu.Unlock()
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
			}
		}()
		time.Sleep(100 * time.Millisecond)
		portWithin(t, 10*time.Second, "Close", func() { assert.NoError(t, r.Close()) })
		close(stop)
		portWithin(t, 10*time.Second, "the submitters", wg.Wait)
		portWithin(t, 10*time.Second, "the reaper", rwg.Wait)
		mu.Lock()
		defer mu.Unlock()
		assert.NotEmpty(t, accepted)
		for q := range accepted {
			assert.Equal(t, 1, delivered[q], "completions of %v", q)
		}
		assert.Equal(t, len(accepted), len(delivered), "completions of requests never accepted")
	})
}
