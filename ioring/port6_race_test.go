//go:build linux

package ioring

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, races and teardown: ported from liburing's cancel-race,
// pipe-bug, files-exit-hang-poll and files-exit-hang-timeout.

// TestPort6CancelRace ports cancel-race.c: a request submitted and
// canceled at once, thousands of times, gets exactly one completion:
// its real result or ErrCanceled, never both, never neither. A cancel
// that says ErrNotFound changed nothing, so its request has its real
// result. For polls on a pipe that has data every other round, the real
// result is POLLIN; for reads of a pipe that gets a byte every round,
// the bytes the reads report and the bytes left in the pipe add up to
// the bytes written (a canceled read took none). A third part cancels
// everything from another goroutine (CancelAll, liburing's
// IORING_ASYNC_CANCEL_ANY) while polls are submitted.
func TestPort6CancelRace(t *testing.T) {
	const iters = 2000
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		t.Run("poll", func(t *testing.T) {
			rd, wr := pipe(t)
			for i := range iters {
				if i%2 == 1 {
					_, err := unix.Write(wr, []byte{1})
					require.NoError(t, err)
				}
				q, err := r.Submit(Poll(rd, unix.POLLIN))
				require.NoError(t, err)
				cerr := q.Cancel()
				if cerr != nil {
					require.ErrorIs(t, cerr, ErrNotFound)
				}
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "round %d", i)
					require.NoError(t, cerr, "round %d: canceled by a cancel that found nothing", i)
				} else {
					require.NotZero(t, c.N&unix.POLLIN, "round %d", i)
				}
				if i%2 == 1 {
					_, err := unix.Read(rd, make([]byte, 1))
					require.NoError(t, err)
				}
			}
			assertNoMore(t, r)
		})
		t.Run("read", func(t *testing.T) {
			rd, wr := pipe(t)
			written, read := 0, 0
			buf := make([]byte, 64)
			for i := range iters {
				_, err := unix.Write(wr, []byte{byte(i)})
				require.NoError(t, err)
				written++
				q, err := r.Submit(Read(rd, buf, 0))
				require.NoError(t, err)
				cerr := q.Cancel()
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "round %d", i)
					require.NoError(t, cerr, "round %d", i)
					require.Zero(t, c.N, "round %d: a canceled read of a pipe took nothing", i)
				} else {
					require.Positive(t, c.N, "round %d", i)
				}
				read += c.N
			}
			require.NoError(t, unix.SetNonblock(rd, true))
			for {
				n, err := unix.Read(rd, buf)
				if err == unix.EAGAIN {
					break
				}
				require.NoError(t, err)
				read += n
			}
			require.Equal(t, written, read, "every byte written was read once")
			assertNoMore(t, r)
		})
		t.Run("concurrent", func(t *testing.T) {
			rd, _ := pipe(t)
			var stop atomic.Bool
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					if err := r.CancelAll(); err != nil {
						t.Errorf("CancelAll: %v", err)
						return
					}
				}
			}()
			pending := map[Request]bool{}
			for i := 0; i < iters; i++ {
				q, err := r.Submit(Poll(rd, unix.POLLIN))
				if errors.Is(err, ErrFull) {
					i--
				} else {
					require.NoError(t, err)
					pending[q] = true
				}
				var cs [16]Completion
				n, err := r.Reap(cs[:], 0)
				require.NoError(t, err)
				for _, c := range cs[:n] {
					require.True(t, pending[c.Req], "a completion of no pending request, or a second")
					delete(pending, c.Req)
					require.ErrorIs(t, c.Err, ErrCanceled)
				}
			}
			stop.Store(true)
			wg.Wait()
			require.NoError(t, r.CancelAll())
			for len(pending) > 0 {
				c := reapOne(t, r)
				require.True(t, pending[c.Req], "a completion of no pending request, or a second")
				delete(pending, c.Req)
				require.ErrorIs(t, c.Err, ErrCanceled)
			}
			assertNoMore(t, r)
		})
	})
}

// TestPort6PipeCloseThenRead ports pipe-bug.c: on a new ring each
// round, a Write of "foobar" to a pipe, a Close of its write end through
// the ring, then a Read that gets "foobar" and a Read that gets 0, each
// within a second or so (liburing waits 1s; the bound here is generous).
// A hundred rounds, each ring closed after; nothing is left open.
func TestPort6PipeCloseThenRead(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			fdcheck.Check(t)
			buf := make([]byte, 1024)
			for i := range 100 {
				r, err := New(Config{Entries: 8, Backend: b})
				require.NoError(t, err)
				var p [2]int
				require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
				c := doOp(t, r, Write(p[1], []byte("foobar"), 0))
				require.NoError(t, c.Err)
				require.Equal(t, 6, c.N)
				c = doOp(t, r, Close(p[1]))
				require.NoError(t, c.Err, "round %d: close of the write end", i)
				c = doOp(t, r, Read(p[0], buf, 0))
				require.NoError(t, c.Err)
				require.Equal(t, "foobar", string(buf[:c.N]), "round %d", i)
				c = doOp(t, r, Read(p[0], buf, 0))
				require.NoError(t, c.Err)
				require.Zero(t, c.N, "round %d: the end of the pipe", i)
				require.NoError(t, unix.Close(p[0]))
				require.NoError(t, r.Close())
			}
		})
	}
}

// TestPort6CloseWithPendingExits ports files-exit-hang-poll.c and
// files-exit-hang-timeout.c: a ring with an Accept pending on a listener
// and, beside it, a Poll on the listener or a Timeout of 300 seconds,
// closes promptly (liburing exits the process, with an alarm of 1s as
// its bound): Close cancels both, waits for their completions, and
// leaves them to Reap, each ErrCanceled.
func TestPort6CloseWithPendingExits(t *testing.T) {
	for _, b := range backends {
		for _, other := range []string{"poll", "timeout"} {
			t.Run("backend="+b.String()+"/"+other, func(t *testing.T) {
				fdcheck.Check(t)
				lfd, _ := tcpListener(t, 512, unix.SOCK_NONBLOCK)
				r, err := New(Config{Entries: 16, Backend: b})
				require.NoError(t, err)
				op := Poll(lfd, unix.POLLIN)
				if other == "timeout" {
					op = Timeout(300 * time.Second)
				}
				q1, err := r.Submit(op)
				require.NoError(t, err)
				q2 := submitPending(t, r, Accept(lfd, unix.SOCK_NONBLOCK))
				start := time.Now()
				require.NoError(t, r.Close())
				assert.Less(t, time.Since(start), 10*time.Second, "Close does not wait for the requests' own end")
				got := map[Request]Completion{}
				for {
					var cs [4]Completion
					n, err := r.Reap(cs[:], 0)
					for _, c := range cs[:n] {
						require.NotContains(t, got, c.Req)
						got[c.Req] = c
					}
					if err != nil {
						require.ErrorIs(t, err, ErrClosed)
						break
					}
					require.NotZero(t, n, "Reap after Close: what is queued, then ErrClosed")
				}
				require.Len(t, got, 2)
				assert.ErrorIs(t, got[q1].Err, ErrCanceled, other)
				assert.ErrorIs(t, got[q2].Err, ErrCanceled, "accept")
			})
		}
	}
}
