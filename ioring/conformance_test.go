//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The conformance suite: every clause of the cancellation contract (the
// package doc, and docs/contract.md at the repository root), each its own
// test, run against every backend as subtests named backend=uring and
// backend=poll.

var backends = []Backend{BackendURing, BackendPoll}

// forEachBackend runs fn once per backend, on a fresh ring of the given
// size, and checks afterwards that the ring closed and no fd leaked.
func forEachBackend(t *testing.T, entries int, fn func(t *testing.T, r *Ring)) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			fdcheck.Check(t) // its cleanup runs last, after the test's own
			r, err := New(Config{Entries: entries, Backend: b})
			require.NoError(t, err, "New(%v)", b)
			// When fn stops the test (require), the ring is closed here,
			// before the fd check, which would report its fds otherwise.
			t.Cleanup(func() { r.Close() })
			require.Equal(t, b, r.Backend().Backend)
			fn(t, r)
			if err := r.Close(); err != nil {
				require.ErrorIs(t, err, ErrClosed, "Close")
			}
		})
	}
}

// assertOnlyPipeLeft checks that the fds opened since before are the two
// ends of one pipe (the test's own), and nothing else.
func assertOnlyPipeLeft(t testing.TB, before fdcheck.Set, msg string) {
	t.Helper()
	left, err := fdcheck.Opened(before)
	require.NoError(t, err)
	if assert.Len(t, left, 2, "%s: %q", msg, left) {
		assert.Regexp(t, `^pipe:\[\d+\]$`, left[0], msg)
		assert.Equal(t, left[0], left[1], "%s: one pipe's two ends", msg)
	}
}

// pipe returns a pipe whose ends close with the test.
func pipe(t testing.TB) (rd, wr int) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// tempFile returns an fd of a temporary file holding data.
func tempFile(t testing.TB, data []byte) int {
	f, err := os.CreateTemp(t.TempDir(), "ioring")
	require.NoError(t, err)
	_, err = f.Write(data)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// reapOne waits (generously) for exactly one completion.
func reapOne(t testing.TB, r *Ring) Completion {
	t.Helper()
	var c [1]Completion
	n, err := r.Reap(c[:], 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, n, "a completion within 10s")
	return c[0]
}

// assertSettled checks that r's in-flight count reaches 0. The goroutine
// that takes a completion in counts it out just after making it available
// (Ring.InFlight), which may be a moment after another goroutine's Reap or
// Wait has returned it: the fallback backend's workers, for one.
func assertSettled(t testing.TB, r *Ring, msgAndArgs ...any) {
	t.Helper()
	if !assert.Eventually(t, func() bool { return r.InFlight() == 0 }, 10*time.Second, time.Millisecond, msgAndArgs...) {
		t.Logf("InFlight: %d", r.InFlight())
	}
}

// assertNoMore checks that no further completion shows up.
func assertNoMore(t testing.TB, r *Ring) {
	t.Helper()
	var c [4]Completion
	n, err := r.Reap(c[:], 50*time.Millisecond)
	require.NoError(t, err)
	assert.Zero(t, n, "unexpected extra completions: %v", c[:n])
}

// pipeEmpty reports whether nothing can be read from rd right now.
func pipeEmpty(t testing.TB, rd int) bool {
	fds := []unix.PollFd{{Fd: int32(rd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue // a signal (Go's preemption) interrupted it
		}
		require.NoError(t, err)
		return n == 0
	}
}

// Clause 1: cancel is always allowed, and says ErrNotFound when there is
// nothing to cancel.
func TestConformanceCancelAlwaysAllowed(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		assert.ErrorIs(t, Request{}.Cancel(), ErrNotFound, "zero request")
		rd, _ := pipe(t)
		q, err := r.Submit(Read(rd, make([]byte, 8), -1))
		require.NoError(t, err)
		assert.True(t, q.Pending())
		require.NoError(t, q.Cancel(), "first cancel of a pending read")
		err = q.Cancel() // the second may find it already completed
		if err != nil {
			assert.ErrorIs(t, err, ErrNotFound)
		}
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.ErrorIs(t, c.Err, unix.ECANCELED, "ErrCanceled wraps ECANCELED")
		assert.ErrorIs(t, q.Cancel(), ErrNotFound, "cancel after completion")
		assert.False(t, q.Pending())

		tok := r.NewToken()
		for i := 0; i < 3; i++ {
			assert.NoError(t, tok.Cancel(), "token cancel %d with nothing pending", i)
		}
		assert.NoError(t, r.CancelAll())
		assertNoMore(t, r)
	})
}

// Clause 1, concurrently: many goroutines cancel the same requests.
func TestConformanceConcurrentCancel(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		tok := r.NewToken()
		reqs := make([]Request, 32)
		for i := range reqs {
			var err error
			reqs[i], err = r.Submit(Read(rd, make([]byte, 8), -1).WithToken(tok).WithUser(i))
			require.NoError(t, err)
		}
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := range reqs {
					switch (i + g) % 3 {
					case 0:
						reqs[i].Cancel()
					case 1:
						tok.Cancel()
					default:
						r.CancelAll()
					}
				}
			}(g)
		}
		wg.Wait()
		seen := map[int]int{}
		for len(seen) < len(reqs) {
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			seen[c.User.(int)]++
		}
		for i, n := range seen {
			assert.Equal(t, 1, n, "completions of request %d", i)
		}
		assertNoMore(t, r)
	})
}

// Clause 2: a pending read canceled completes once with ErrCanceled; a read
// that completed reports its bytes even when canceled afterwards.
func TestConformanceExactlyOneCompletion(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		q, err := r.Submit(Read(rd, make([]byte, 8), -1).WithUser("pending"))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		c := reapOne(t, r)
		assert.Equal(t, "pending", c.User)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Zero(t, c.N)
		assertNoMore(t, r)

		_, err = unix.Write(wr, []byte("abc"))
		require.NoError(t, err)
		buf := make([]byte, 8)
		q, err = r.Start(Read(rd, buf, -1))
		require.NoError(t, err)
		// Let it complete, then cancel: the real result stands.
		deadline := time.Now().Add(10 * time.Second)
		for q.Pending() && time.Now().Before(deadline) {
			r.Reap(make([]Completion, 1), 0) // nudge a reaper; the queue stays empty
			time.Sleep(time.Millisecond)
		}
		cancelErr := q.Cancel()
		c, err = q.Wait(context.Background())
		require.NoError(t, err)
		require.NoError(t, c.Err)
		assert.Equal(t, 3, c.N)
		assert.Equal(t, "abc", string(buf[:3]))
		if cancelErr != nil {
			assert.ErrorIs(t, cancelErr, ErrNotFound)
		}
		assert.ErrorIs(t, q.Cancel(), ErrNotFound, "cancel after delivery")
		_, err = q.Wait(context.Background())
		assert.ErrorIs(t, err, ErrNotFound, "second Wait")
	})
}

// Clause 2: a request is delivered to one waiter only.
func TestConformanceOneWaiterWins(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		q, err := r.Start(Read(rd, make([]byte, 8), -1))
		require.NoError(t, err)
		var wg sync.WaitGroup
		results := make(chan error, 4)
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := q.Wait(context.Background())
				if err == nil {
					err = c.Err
				}
				results <- err
			}()
		}
		time.Sleep(10 * time.Millisecond)
		unix.Write(wr, []byte("x"))
		wg.Wait()
		close(results)
		wins, notFound := 0, 0
		for err := range results {
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrNotFound):
				notFound++
			default:
				t.Errorf("unexpected Wait error %v", err)
			}
		}
		assert.Equal(t, 1, wins, "waiters that got the completion")
		assert.Equal(t, 3, notFound)
	})
}

// Clause 2 under races: requests that complete at once, each with three
// waiters racing to reap it themselves, to park, or to find it done. One
// waiter gets each completion, the others get ErrNotFound, and none is
// left waiting (a waiter that reaps its own completion is not woken
// through the slot's channel, and skips passing the wake-up on when
// nobody is parked).
func TestConformanceOneWaiterWinsRacing(t *testing.T) {
	rounds := 2000
	if testing.Short() {
		rounds = 300
	}
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for round := 0; round < rounds; round++ {
			q, err := r.Start(Nop())
			require.NoError(t, err)
			var wg sync.WaitGroup
			var wins, notFound atomic.Int32
			for i := 0; i < 3; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := q.Wait(context.Background())
					switch {
					case err == nil && c.Err == nil:
						wins.Add(1)
					case errors.Is(err, ErrNotFound):
						notFound.Add(1)
					default:
						t.Errorf("round %d: Wait: %v, %v", round, err, c.Err)
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: a waiter is still waiting", round)
			}
			require.Equal(t, int32(1), wins.Load(), "round %d: waiters that got the completion", round)
			require.Equal(t, int32(2), notFound.Load(), "round %d", round)
		}
	})
}

// Clause 3: after a canceled read's completion is delivered, data written
// into the pipe never lands in the old buffer; it stays in the pipe.
func TestConformanceBufferLifetime(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		old := []byte("SENTINEL")
		q, err := r.Start(Read(rd, old, -1))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		c, err := q.Wait(context.Background())
		require.NoError(t, err)
		require.ErrorIs(t, c.Err, ErrCanceled)

		_, err = unix.Write(wr, []byte("newdata!"))
		require.NoError(t, err)
		time.Sleep(20 * time.Millisecond) // room for a stray kernel write
		assert.Equal(t, "SENTINEL", string(old), "old buffer changed after its completion")
		fresh := make([]byte, 8)
		n, err := r.ReadAt(context.Background(), rd, fresh, -1)
		require.NoError(t, err)
		assert.Equal(t, "newdata!", string(fresh[:n]), "the bytes stayed in the pipe")
	})
}

// Clause 3: the slot (and with it the buffer reference and pin) is not
// handed back before the completion is delivered: the ring reports full.
func TestConformanceSlotsHeldUntilDelivery(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		var reqs []Request
		for i := 0; i < 4; i++ {
			q, err := r.Submit(Nop())
			require.NoError(t, err)
			reqs = append(reqs, q)
		}
		time.Sleep(10 * time.Millisecond) // all four have completed by now
		_, err := r.Submit(Nop())
		assert.ErrorIs(t, err, ErrFull, "completed but undelivered requests keep their slots")
		for range reqs {
			c := reapOne(t, r)
			assert.NoError(t, c.Err)
		}
		_, err = r.Submit(Nop())
		assert.NoError(t, err, "a slot is free again after delivery")
		reapOne(t, r)
	})
}

// Clause 4: a request submitted with a canceled token never reaches the
// kernel, and a token cancels everything submitted with it.
func TestConformanceTokensCoverTheFuture(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		tok := r.NewToken()
		require.NoError(t, tok.Cancel())
		assert.True(t, tok.Canceled())
		q, err := r.Submit(Write(wr, []byte("must not be written"), -1).WithToken(tok))
		require.NoError(t, err)
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.True(t, pipeEmpty(t, rd), "a write with a canceled token reached the kernel")

		group := r.NewToken()
		other := r.NewToken()
		for i := 0; i < 8; i++ {
			_, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(group).WithUser(i))
			require.NoError(t, err)
		}
		keep, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(other).WithUser("other"))
		require.NoError(t, err)
		assert.Equal(t, 8, group.Pending())
		require.NoError(t, group.Cancel())
		for i := 0; i < 8; i++ {
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.NotEqual(t, "other", c.User, "another token's request was canceled")
		}
		assert.Zero(t, group.Pending())
		assert.True(t, keep.Pending(), "the other token's read is untouched")
		_, err = unix.Write(wr, []byte("ok!!"))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.Equal(t, "other", c.User)
		assert.NoError(t, c.Err)
		assert.Equal(t, 4, c.N)
	})
}

// Clause 4: a batch whose token is canceled before it is handed over never
// reaches the kernel; Bind ties a token to a context.
func TestConformanceTokenBind(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		ctx, cancel := context.WithCancel(context.Background())
		tok := r.NewToken()
		stop := tok.Bind(ctx)
		defer stop()
		_, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok))
		require.NoError(t, err)
		cancel()
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.True(t, tok.Canceled())
	})
}

// Clause 5: deadlines and contexts end in the cancel path.
func TestConformanceTimeoutsAreCancels(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		_, err := r.Submit(Read(rd, make([]byte, 4), -1).WithDeadline(5 * time.Millisecond))
		require.NoError(t, err)
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.ErrorIs(t, c.Err, ErrCanceled, "a timeout is a cancel")
		assert.ErrorIs(t, c.Err, os.ErrDeadlineExceeded)

		// A deadline that does not fire leaves the real result.
		unix.Write(wr, []byte("data"))
		_, err = r.Submit(Read(rd, make([]byte, 4), -1).WithDeadline(10 * time.Second))
		require.NoError(t, err)
		c = reapOne(t, r)
		assert.NoError(t, c.Err)
		assert.Equal(t, 4, c.N)

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		_, err = r.ReadAt(ctx, rd, make([]byte, 4), -1)
		assert.ErrorIs(t, err, ErrTimeout, "context deadline")

		ctx2, cancel2 := context.WithCancel(context.Background())
		time.AfterFunc(5*time.Millisecond, cancel2)
		_, err = r.ReadAt(ctx2, rd, make([]byte, 4), -1)
		assert.ErrorIs(t, err, ErrCanceled, "context cancel")
		assert.NotErrorIs(t, err, ErrTimeout)

		// The Timeout operation runs its course, or is canceled.
		start := time.Now()
		c, err = r.Do(context.Background(), Timeout(5*time.Millisecond))
		require.NoError(t, err)
		assert.NoError(t, c.Err)
		assert.GreaterOrEqual(t, time.Since(start), 5*time.Millisecond)
		q, err := r.Submit(Timeout(time.Hour))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)
	})
}

// Clause 6: Close cancels everything, waits for every completion, keeps
// undelivered completions and refuses later calls.
func TestConformanceCloseDrains(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			before, err := fdcheck.Take()
			require.NoError(t, err)
			r, err := New(Config{Entries: 16, Backend: b})
			require.NoError(t, err)
			rd, wr := pipe(t)
			tok := r.NewToken()
			for i := 0; i < 6; i++ {
				_, err := r.Submit(Read(rd, make([]byte, 4), -1).WithToken(tok))
				require.NoError(t, err)
			}
			waited, err := r.Start(Read(rd, make([]byte, 4), -1))
			require.NoError(t, err)
			require.NoError(t, r.Close())
			assert.Zero(t, r.InFlight())
			assertOnlyPipeLeft(t, before, "the ring's fds are closed (the pipe's remain)")

			got := 0
			var c [8]Completion
			for {
				n, err := r.Reap(c[:], time.Second)
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					break
				}
				for _, cc := range c[:n] {
					assert.ErrorIs(t, cc.Err, ErrCanceled)
				}
				got += n
			}
			assert.Equal(t, 6, got, "queued completions survive Close")
			wc, err := waited.Wait(context.Background())
			require.NoError(t, err)
			assert.ErrorIs(t, wc.Err, ErrCanceled)

			_, err = r.Submit(Nop())
			assert.ErrorIs(t, err, ErrClosed)
			_, err = r.Submit(Write(wr, []byte("x"), -1))
			assert.ErrorIs(t, err, ErrClosed)
			for _, ops := range [][]Op{{Nop(), Nop()}, {Write(wr, []byte("x"), -1)}, nil} {
				n, err := r.SubmitBatch(ops, make([]Request, len(ops)))
				assert.ErrorIs(t, err, ErrClosed, "a batch of %d", len(ops))
				assert.Zero(t, n)
			}
			assert.ErrorIs(t, r.CancelAll(), ErrClosed)
			assert.ErrorIs(t, tok.Cancel(), ErrClosed)
			assert.ErrorIs(t, r.Close(), ErrClosed)
			assert.True(t, pipeEmpty(t, rd))
		})
	}
}

// Clause 7: bad input is refused up front, with an error naming the problem,
// and the ring is left intact.
func TestConformanceBadInput(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
		require.NoError(t, err)
		foreignTok := other.NewToken()
		require.NoError(t, other.Close())
		cases := []struct {
			name string
			op   Op
			want string
		}{
			{"nil buffer", Read(rd, nil, -1), "empty buffer"},
			{"empty buffer", Write(rd, []byte{}, 0), "empty buffer"},
			{"negative fd", Read(-1, make([]byte, 1), 0), "negative fd"},
			{"negative offset", Read(rd, make([]byte, 1), -2), "offset -2"},
			{"no iovecs", Readv(rd, nil, 0), "no buffers"},
			{"empty iovecs", Writev(rd, [][]byte{{}, nil}, 0), "all buffers are empty"},
			{"too many iovecs", Readv(rd, make([][]byte, 1025), 0), "more than 1024"},
			{"negative timeout", Timeout(-time.Second), "negative duration"},
			{"negative deadline", Nop().WithDeadline(-1), "negative deadline"},
			{"poll without events", Poll(rd, 0), "no poll events"},
			{"zero op", Op{}, "unknown opcode"},
			{"token of another ring", Nop().WithToken(foreignTok), "another ring"},
		}
		for _, tc := range cases {
			_, err := r.Submit(tc.op)
			assert.ErrorIs(t, err, ErrInvalid, tc.name)
			assert.ErrorContains(t, err, tc.want, tc.name)
			var oe *OpError
			assert.ErrorAs(t, err, &oe, tc.name)
			_, err = r.Start(tc.op)
			assert.ErrorIs(t, err, ErrInvalid, tc.name)
		}
		_, err = r.SubmitBatch([]Op{Nop(), Read(rd, nil, 0)}, make([]Request, 2))
		assert.ErrorIs(t, err, ErrInvalid, "a bad op in a batch")
		assert.ErrorContains(t, err, "op 1")
		_, err = r.SubmitBatch([]Op{Nop()}, nil)
		assert.ErrorIs(t, err, ErrInvalid, "short request slice")
		_, err = r.Reap(nil, 0)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, r.InFlight(), "nothing reached the ring")

		// Every slot is still free: the ring is intact.
		reqs := make([]Request, 4)
		n, err := r.SubmitBatch([]Op{Nop(), Nop(), Nop(), Nop()}, reqs)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		for i := 0; i < 4; i++ {
			assert.NoError(t, reapOne(t, r).Err)
		}
	})
	for _, n := range []int{-1, 1, 3, 100, 65536} {
		_, err := New(Config{Entries: n})
		assert.ErrorIs(t, err, ErrInvalid, "entries %d", n)
	}
	_, err := New(Config{Backend: Backend(9)})
	assert.ErrorIs(t, err, ErrInvalid)
	t.Setenv("CANCELIO_BACKEND", "bogus")
	_, err = New(Config{})
	assert.ErrorIs(t, err, ErrInvalid)
	assert.ErrorContains(t, err, "CANCELIO_BACKEND")
}

// The operations do what they say, on every backend.
func TestConformanceOperations(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		ctx := context.Background()
		data := []byte("0123456789abcdef")
		fd := tempFile(t, data)

		buf := make([]byte, 4)
		n, err := r.ReadAt(ctx, fd, buf, 10)
		require.NoError(t, err)
		assert.Equal(t, "abcd", string(buf[:n]))

		n, err = r.WriteAt(ctx, fd, []byte("WXYZ"), 2)
		require.NoError(t, err)
		assert.Equal(t, 4, n)

		a, b := make([]byte, 3), make([]byte, 5)
		c, err := r.Do(ctx, Readv(fd, [][]byte{a, b}, 0))
		require.NoError(t, err)
		require.NoError(t, c.Err)
		assert.Equal(t, 8, c.N)
		assert.Equal(t, "01W", string(a))
		assert.Equal(t, "XYZ67", string(b))

		c, err = r.Do(ctx, Writev(fd, [][]byte{[]byte("ab"), []byte("cd")}, 12))
		require.NoError(t, err)
		require.NoError(t, c.Err)
		assert.Equal(t, 4, c.N)
		c, err = r.Do(ctx, Fsync(fd))
		require.NoError(t, err)
		assert.NoError(t, c.Err)
		got := make([]byte, 16)
		_, err = unix.Pread(fd, got, 0)
		require.NoError(t, err)
		assert.Equal(t, "01WXYZ6789ababcd", string(got))

		rd, wr := pipe(t)
		q, err := r.Submit(Poll(rd, unix.POLLIN).WithUser("poll"))
		require.NoError(t, err)
		n, err = r.WriteAt(ctx, wr, []byte("ping"), -1)
		require.NoError(t, err)
		assert.Equal(t, 4, n)
		c = reapOne(t, r)
		assert.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.NotZero(t, c.N&unix.POLLIN, "poll events %#x", c.N)
		n, err = r.ReadAt(ctx, rd, buf, -1)
		require.NoError(t, err)
		assert.Equal(t, "ping", string(buf[:n]))

		c, err = r.Do(ctx, Nop().WithUser(7))
		require.NoError(t, err)
		assert.Equal(t, 7, c.User)
		assert.Equal(t, OpNop, c.Op)

		// A closed fd is an error of the request, not a panic.
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		unix.Close(p[0])
		unix.Close(p[1])
		_, err = r.ReadAt(ctx, p[0], buf, -1)
		assert.ErrorIs(t, err, unix.EBADF)
	})
}

// Foreign requests complete through the same queue, tokens and deadlines.
func TestConformanceForeign(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		q, err := r.Submit(Foreign(nil).WithUser("posted"))
		require.NoError(t, err)
		require.NoError(t, r.Complete(q, 42, nil))
		assert.ErrorIs(t, r.Complete(q, 1, nil), ErrNotFound, "second Complete")
		c := reapOne(t, r)
		assert.Equal(t, 42, c.N)
		assert.Equal(t, "posted", c.User)
		assert.Equal(t, OpForeign, c.Op)

		// A cancel calls the hook; the transport then posts ErrCanceled.
		tok := r.NewToken()
		hooked := make(chan Request, 4)
		var fq Request
		fq, err = r.Submit(Foreign(func() { hooked <- fq }).WithToken(tok))
		require.NoError(t, err)
		posted := make(chan struct{})
		go func() {
			defer close(posted)
			q := <-hooked
			r.Complete(q, 3, ErrCanceled)
		}()
		require.NoError(t, tok.Cancel())
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Equal(t, 3, c.N, "bytes transferred before the cancel are reported")
		// The transport's goroutine counts the request out just after
		// reapOne may have it (Ring.InFlight): the count checked at the
		// end is exact once its Complete has returned.
		<-posted

		// A deadline calls the hook too, and the result is ErrTimeout.
		done := make(chan struct{})
		var dq Request
		dq, err = r.Submit(Foreign(func() {
			select {
			case <-done:
			default:
				close(done)
			}
		}).WithDeadline(5 * time.Millisecond))
		require.NoError(t, err)
		<-done
		require.NoError(t, r.Complete(dq, 0, fmt.Errorf("transfer: %w", ErrCanceled)))
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrTimeout)

		// Any transport error passes through; ErrNoDevice is not a cancel.
		q, err = r.Submit(Foreign(nil))
		require.NoError(t, err)
		require.NoError(t, r.Complete(q, 0, ErrNoDevice))
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrNoDevice)
		assert.NotErrorIs(t, c.Err, ErrCanceled)
		assert.ErrorIs(t, r.Complete(Request{}, 0, nil), ErrNotFound)

		// A foreign request with a canceled token never starts.
		dead := r.NewToken()
		dead.Cancel()
		q, err = r.Submit(Foreign(func() { t.Error("hook of a request that never started") }).WithToken(dead))
		require.NoError(t, err)
		assert.False(t, q.Pending(), "completed at submission")
		assert.ErrorIs(t, r.Complete(q, 5, nil), ErrNotFound, "the transport must not complete it")
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.Zero(t, r.foreign.Load(), "foreign requests in flight")
		assert.Zero(t, r.InFlight())
	})
}

// Several consumers reap one queue: each completion goes to exactly one.
func TestConformanceConcurrentConsumers(t *testing.T) {
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		const total = 2000
		var mu sync.Mutex
		seen := make([]int, total)
		var wg sync.WaitGroup
		got := make(chan int, 4)
		var delivered atomic.Int64
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var c [16]Completion
				n := 0
				for {
					// Consumers stop once every request is delivered, not
					// after a quiet spell: on a loaded machine the
					// submitter may not run for a while.
					if delivered.Load() >= total {
						got <- n
						return
					}
					k, err := r.Reap(c[:], 200*time.Millisecond)
					if err != nil {
						got <- n
						return
					}
					delivered.Add(int64(k))
					mu.Lock()
					for _, cc := range c[:k] {
						seen[cc.User.(int)]++
					}
					mu.Unlock()
					n += k
				}
			}()
		}
		for i := 0; i < total; {
			if _, err := r.Submit(Nop().WithUser(i)); err != nil {
				require.ErrorIs(t, err, ErrFull)
				time.Sleep(time.Millisecond)
				continue
			}
			i++
		}
		wg.Wait()
		close(got)
		sum := 0
		for n := range got {
			sum += n
		}
		assert.Equal(t, total, sum)
		for i, n := range seen {
			if n != 1 {
				t.Fatalf("request %d delivered %d times", i, n)
			}
		}
	})
}

// Reap without waiting returns at once; with a timeout it waits about that
// long (the bound is generous: this is not a timing test).
func TestConformanceReapTimeouts(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		var c [2]Completion
		n, err := r.Reap(c[:], 0)
		require.NoError(t, err)
		assert.Zero(t, n)
		start := time.Now()
		n, err = r.Reap(c[:], 20*time.Millisecond)
		require.NoError(t, err)
		assert.Zero(t, n)
		assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)
		assert.Less(t, time.Since(start), 5*time.Second)

		// A consumer that waits with nothing to reap sleeps; it does not spin.
		fq, err := r.Submit(Foreign(nil)) // in flight, but nothing for the kernel
		require.NoError(t, err)
		cpu := cpuTime(t)
		n, err = r.Reap(c[:], 300*time.Millisecond)
		require.NoError(t, err)
		assert.Zero(t, n)
		assert.Less(t, cpuTime(t)-cpu, 150*time.Millisecond, "CPU used by a 300ms Reap on an idle ring")
		require.NoError(t, r.Complete(fq, 0, nil))
		assert.NoError(t, reapOne(t, r).Err)
	})
}

func cpuTime(t testing.TB) time.Duration {
	var ru unix.Rusage
	require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// The hot path allocates nothing.
func TestConformanceZeroAllocs(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		fd := tempFile(t, make([]byte, 8192))
		buf := make([]byte, 4096)
		var c [8]Completion
		for name, op := range map[string]Op{"nop": Nop(), "read": Read(fd, buf, 4096)} {
			allocs := testing.AllocsPerRun(500, func() {
				if _, err := r.Submit(op); err != nil {
					t.Fatal(err)
				}
				if n, err := r.Reap(c[:], -1); n != 1 || err != nil {
					t.Fatal(n, err)
				}
			})
			if r.Backend().Backend == BackendURing {
				assert.Zero(t, allocs, "%s: allocations per request", name)
			} else {
				t.Logf("%s: %.1f allocations per request", name, allocs)
			}
		}
		// batchAllocs measures the allocations of submit (which submits n
		// requests with SubmitBatch) and of reaping them: none on io_uring.
		var cs [32]Completion
		batchAllocs := func(what string, n int, submit func() error) {
			allocs := testing.AllocsPerRun(200, func() {
				if err := submit(); err != nil {
					t.Fatal(err)
				}
				for got := 0; got < n; {
					k, err := r.Reap(cs[got:n], -1)
					if err != nil {
						t.Fatal(err)
					}
					got += k
				}
			})
			if r.Backend().Backend == BackendURing {
				assert.Zero(t, allocs, "allocations per %s", what)
			} else {
				t.Logf("%.1f allocations per %s", allocs, what)
			}
		}
		// 32 reads in flight at once: every slot keeps its pin state.
		ops := make([]Op, 32)
		bufs := make([][]byte, 32)
		for i := range ops {
			bufs[i] = make([]byte, 4096)
			ops[i] = Read(fd, bufs[i], 0)
		}
		reqs := make([]Request, 32)
		batchAllocs("batch of 32 reads", 32, func() error {
			_, err := r.SubmitBatch(ops, reqs)
			return err
		})
		// A batch built where it is submitted, in a local array, stays on
		// the stack: SubmitBatch keeps no reference to its ops (nor does
		// Submit to its op), whatever path they take inside.
		var reqs4 [4]Request
		batchAllocs("batch built in a local array", 4, func() error {
			batch := [4]Op{Nop(), Read(fd, bufs[0], 0), Nop(), Read(fd, bufs[1], 4096).WithUser(1)}
			_, err := r.SubmitBatch(batch[:], reqs4[:])
			return err
		})
	})
}
