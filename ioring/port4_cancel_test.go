//go:build linux

package ioring

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fourth round, cancels across threads: ported from liburing's io-cancel
// (a cancel issued by another task than the submitter, while the
// submitter waits; a cancel racing the submitter's exit) and
// thread-exit. io_uring itself cancels the requests of a thread that
// exits, and cancelio hands those to the kernel again from a live thread;
// a cancel by the caller must win over that retry whenever it comes, and
// once a request's completion is delivered nothing of it may still run
// in the kernel and take data meant for later requests.

// port4ExitingGoroutine runs fn on a goroutine locked to its thread and
// returns without unlocking, so that Go ends the thread once fn is done;
// it does not wait for the thread to go.
func port4ExitingGoroutine(fn func()) {
	go func() {
		runtime.LockOSThread()
		fn()
	}()
}

// TestPort4CancelRacesSubmitterExit checks a read of an empty pipe
// submitted from a thread that exits at once, canceled at a random moment
// around that exit, from the test's goroutine or from another thread that
// exits too (io-cancel, cancel across tasks, with thread-exit's retry in
// the middle): it completes once, with ErrCanceled (no data ever came),
// and afterwards a byte written into the pipe stays there: no copy of the
// canceled read, submitted again for the exited thread, is left to take
// it.
func TestPort4CancelRacesSubmitterExit(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(4, 4))
		for round := range 150 {
			rd, wr := pipe(t)
			started := round%2 == 1
			what := fmt.Sprintf("round %d (started %v)", round, started)
			qc := make(chan Request, 1)
			port4ExitingGoroutine(func() {
				var q Request
				var err error
				if started {
					q, err = r.Start(Read(rd, make([]byte, 1), -1))
				} else {
					q, err = r.Submit(Read(rd, make([]byte, 1), -1))
				}
				assert.NoError(t, err, what)
				qc <- q
			})
			q := <-qc
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
			how := rng.IntN(4)
			cancel := func() {
				switch how {
				case 0:
					assert.NoError(t, q.Cancel(), what)
				case 1:
					n, err := r.Cancel(q)
					assert.NoError(t, err, what)
					assert.Equal(t, 1, n, what)
				case 2:
					assert.NoError(t, r.CancelAll(), what)
				case 3:
					assert.NoError(t, q.Cancel(), what)
					assert.ErrorIs(t, q.Cancel(), ErrNotFound, "%s: a second cancel", what)
				}
			}
			if rng.IntN(2) == 0 {
				cancel()
			} else {
				done := make(chan struct{})
				port4ExitingGoroutine(func() { defer close(done); cancel() })
				<-done
			}
			var c Completion
			if started {
				ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
				var err error
				c, err = q.Wait(ctx)
				stop()
				require.NoError(t, err, what)
			} else {
				c = reapOne(t, r)
			}
			require.Equal(t, q, c.Req, what)
			require.ErrorIs(t, c.Err, ErrCanceled, "%s: %+v", what, c)
			require.NotErrorIs(t, c.Err, ErrTimeout, what)
			require.Zero(t, c.N, what)
			_, err := unix.Write(wr, []byte{byte(round)})
			require.NoError(t, err)
			// Threads keep exiting (the cancel's, the submitter's): a
			// stray copy of the read would take the byte meanwhile.
			time.Sleep(2 * time.Millisecond)
			require.True(t, readable(t, rd), "%s: the byte written after the cancel's completion was taken", what)
			var b [2]byte
			n, err := unix.Read(rd, b[:])
			require.NoError(t, err)
			require.Equal(t, 1, n, what)
			assert.Equal(t, byte(round), b[0], what)
			var cs [1]Completion
			k, err := r.Reap(cs[:], 0)
			require.NoError(t, err)
			require.Zero(t, k, "%s: an extra completion %+v", what, cs[0])
		}
		assertSettled(t, r)
	})
}

// TestPort4CancelWhileSubmitterWaits checks the other half of io-cancel:
// goroutines blocked in Request.Wait (and one in Reap) for requests of
// every kind that never end by themselves, each canceled by a goroutine
// on another thread that exits right after, by every means (its own
// Cancel, a batch Ring.Cancel, its token, CancelAll); every waiter
// returns with ErrCanceled, and nothing else completes.
func TestPort4CancelWhileSubmitterWaits(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		lfd, _ := tcpListener(t, 4, unix.SOCK_NONBLOCK)
		efd := eventFD(t)
		ops := func() []Op {
			return []Op{
				Read(rd, make([]byte, 4), -1),
				Poll(efd, unix.POLLIN),
				Timeout(time.Hour),
				Recv(a, make([]byte, 4), 0),
				Accept(lfd, 0),
				Read(rd, make([]byte, 4), -1).Unordered(),
			}
		}
		for round, means := range []string{"cancel", "batch", "token", "all", "cancel", "token"} {
			what := fmt.Sprintf("round %d (%s)", round, means)
			tok := r.NewToken()
			var reqs []Request
			for _, op := range ops() {
				q, err := r.Start(op.WithToken(tok))
				require.NoError(t, err, what)
				reqs = append(reqs, q)
			}
			reaped, err := r.Submit(Timeout(time.Hour).WithToken(tok))
			require.NoError(t, err, what)
			results := make(chan Completion, len(reqs)+1)
			var wg sync.WaitGroup
			for _, q := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := q.Wait(context.Background())
					assert.NoError(t, err, what)
					results <- c
				}()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				var cs [2]Completion
				n, err := r.Reap(cs[:], 10*time.Second)
				assert.NoError(t, err, what)
				for _, c := range cs[:n] {
					results <- c
				}
			}()
			time.Sleep(5 * time.Millisecond) // every waiter blocks
			all := append(reqs, reaped)
			for i := range all {
				done := make(chan struct{})
				port4ExitingGoroutine(func() {
					defer close(done)
					switch means {
					case "cancel":
						assert.NoError(t, all[i].Cancel(), what)
					case "batch":
						if i == 0 {
							n, err := r.Cancel(all...)
							assert.NoError(t, err, what)
							assert.Equal(t, len(all), n, what)
						}
					case "token":
						if i == 0 {
							assert.NoError(t, tok.Cancel(), what)
						}
					case "all":
						if i == 0 {
							assert.NoError(t, r.CancelAll(), what)
						}
					}
				})
				<-done
			}
			portWithin(t, 10*time.Second, what+": the waiters", wg.Wait)
			close(results)
			got := map[Request]int{}
			for c := range results {
				got[c.Req]++
				assert.ErrorIs(t, c.Err, ErrCanceled, "%s: %v (%v)", what, c, c.Op)
				assert.Zero(t, c.N, "%s: %v", what, c)
			}
			for i, q := range all {
				assert.Equal(t, 1, got[q], "%s: completions of request %d", what, i)
			}
			assert.Zero(t, tok.Pending(), what)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}
