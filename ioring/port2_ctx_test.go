//go:build linux

package ioring

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Second round, contexts and reaping: Do, Start/Wait and Token.Bind with
// contexts that end at random moments (liburing's timeout-new and
// wakeup-hang, through contexts), and Reap and SubmitAndReap with
// timeouts of 0, negative and a nanosecond and destinations of one
// (liburing's submit-reuse and cq-peek-batch).

// TestPort2DoContextRandomEnd: reads of a stream through Do under
// contexts that end (cancel or deadline) at random moments while a
// writer writes: each completion is the bytes or the context's cancel,
// never both lost, and the bytes read, in order, are the stream.
func TestPort2DoContextRandomEnd(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		const total = 32 << 10
		want := make([]byte, total)
		for i := range want {
			want[i] = byte(i ^ i>>8)
		}
		go func() {
			rng := rand.New(rand.NewPCG(11, 12))
			for off := 0; off < total; {
				n := min(1+rng.IntN(1500), total-off)
				m, err := unix.Write(wr, want[off:off+n])
				if err != nil {
					return
				}
				off += m
				time.Sleep(time.Duration(rng.IntN(150)) * time.Microsecond)
			}
		}()
		rng := rand.New(rand.NewPCG(13, 14))
		var got bytes.Buffer
		var ended, timedOut int
		for got.Len() < total {
			buf := make([]byte, 1+rng.IntN(2000))
			d := time.Duration(rng.IntN(300)) * time.Microsecond
			var ctx context.Context
			var cancel context.CancelFunc
			if rng.IntN(2) == 0 {
				ctx, cancel = context.WithTimeout(context.Background(), d)
			} else {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(d, cancel)
			}
			c, err := r.Do(ctx, Read(rd, buf, -1))
			cancel()
			require.NoError(t, err)
			if c.Err != nil {
				require.ErrorIs(t, c.Err, ErrCanceled, "completion %+v", c)
				if errors.Is(c.Err, ErrTimeout) {
					require.ErrorIs(t, c.Err, context.DeadlineExceeded)
					timedOut++
				} else {
					require.ErrorIs(t, c.Err, context.Canceled)
				}
				ended++
			}
			got.Write(buf[:c.N])
		}
		assert.True(t, bytes.Equal(want, got.Bytes()), "the stream, in order, once")
		t.Logf("%d reads ended by their context (%d deadlines)", ended, timedOut)
		assertSettled(t, r)
	})
}

// TestPort2WaitersWithContexts: several goroutines Wait for one started
// request, one of them under a context that ends: the request is
// canceled, exactly one waiter gets the completion, the others
// ErrNotFound, and none is left blocked.
func TestPort2WaitersWithContexts(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for round := range 20 {
			rd, _ := pipe(t)
			q, err := r.Start(Read(rd, make([]byte, 4), -1))
			require.NoError(t, err)
			var got, notFound atomic.Int32
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					if w == 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, time.Duration(round*50)*time.Microsecond)
						defer cancel()
					}
					c, err := q.Wait(ctx)
					if err != nil {
						assert.ErrorIs(t, err, ErrNotFound)
						notFound.Add(1)
						return
					}
					assert.ErrorIs(t, c.Err, ErrTimeout)
					got.Add(1)
				}()
			}
			portWithin(t, 10*time.Second, "the waiters", wg.Wait)
			assert.Equal(t, int32(1), got.Load(), "round %d: waiters given the completion", round)
			assert.Equal(t, int32(3), notFound.Load(), "round %d", round)
		}
		assertSettled(t, r)
	})
}

// TestPort2BindStopRace: Token.Bind's stop races the context's end:
// when stop reports that it detached the token, the token stays
// uncanceled; otherwise the token is canceled and a request submitted
// with it completes with the context's cancel.
func TestPort2BindStopRace(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for i := range 200 {
			tok := r.NewToken()
			ctx, cancel := context.WithCancel(context.Background())
			stop := tok.Bind(ctx)
			go cancel()
			if i%2 == 0 {
				time.Sleep(time.Duration(i) * time.Microsecond)
			}
			if stop() {
				time.Sleep(20 * time.Microsecond)
				assert.False(t, tok.Canceled(), "round %d: stop detached it, yet it was canceled", i)
				continue
			}
			require.Eventually(t, tok.Canceled, 10*time.Second, 100*time.Microsecond, "round %d", i)
			c := doOp(t, r, Nop().WithToken(tok))
			assert.ErrorIs(t, c.Err, context.Canceled, "round %d", i)
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}
		// Bind on a token of a closed ring: nothing happens, nothing panics.
		r2, err := New(Config{Entries: 4, Backend: r.Backend().Backend})
		require.NoError(t, err)
		tok := r2.NewToken()
		require.NoError(t, r2.Close())
		ctx, cancel := context.WithCancel(context.Background())
		stop := tok.Bind(ctx)
		cancel()
		stop()
		assert.ErrorIs(t, tok.Cancel(), ErrClosed)
	})
}

// TestPort2ReapTimeoutsAndSmallDst: Reap with a destination of one takes
// the completions one at a time, none lost; with timeout 0 and nothing
// ready it returns at once; with a nanosecond it returns soon; negative
// blocks until a completion comes; SubmitAndReap with a destination
// smaller than the batch leaves the rest for later.
func TestPort2ReapTimeoutsAndSmallDst(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		var one [1]Completion
		for _, timeout := range []time.Duration{0, time.Nanosecond, time.Microsecond} {
			start := time.Now()
			n, err := r.Reap(one[:], timeout)
			require.NoError(t, err)
			assert.Zero(t, n)
			assert.Less(t, time.Since(start), 5*time.Second, "Reap(%v) with nothing in flight", timeout)
		}
		rd, wr := pipe(t)
		q := submitPending(t, r, Read(rd, make([]byte, 4), -1))
		for range 50 {
			n, err := r.Reap(one[:], time.Nanosecond)
			require.NoError(t, err)
			require.Zero(t, n)
			n, err = r.Reap(one[:], 0)
			require.NoError(t, err)
			require.Zero(t, n)
		}
		time.AfterFunc(5*time.Millisecond, func() { unix.Write(wr, []byte("data")) })
		n, err := r.Reap(one[:], -1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		assert.Equal(t, q, one[0].Req)
		assert.Equal(t, 4, one[0].N)

		ops := make([]Op, 20)
		for i := range ops {
			ops[i] = Nop().WithUser(i)
		}
		reqs := make([]Request, len(ops))
		seen := map[any]int{}
		sub, got, err := r.SubmitAndReap(ops, reqs, one[:], -1)
		require.NoError(t, err)
		assert.Equal(t, len(ops), sub)
		require.Equal(t, 1, got)
		seen[one[0].User]++
		for len(seen) < len(ops) {
			_, got, err := r.SubmitAndReap(nil, nil, one[:], time.Nanosecond)
			require.NoError(t, err)
			if got == 1 {
				seen[one[0].User]++
			}
		}
		for i := range ops {
			assert.Equal(t, 1, seen[i], "completions of %d", i)
		}
		// A refused batch reaps nothing and submits nothing.
		_, err = r.Submit(Nop().WithUser("queued"))
		require.NoError(t, err)
		time.Sleep(time.Millisecond)
		sub, got, err = r.SubmitAndReap([]Op{Nop(), Read(-1, nil, 0)}, make([]Request, 2), one[:], -1)
		assert.ErrorIs(t, err, ErrInvalid)
		assert.Zero(t, sub)
		assert.Zero(t, got)
		c := reapOne(t, r)
		assert.Equal(t, "queued", c.User)
		// reqs shorter than ops, and an empty dst: refused, nothing submitted.
		_, _, err = r.SubmitAndReap([]Op{Nop(), Nop()}, make([]Request, 1), one[:], 0)
		assert.ErrorIs(t, err, ErrInvalid)
		_, _, err = r.SubmitAndReap([]Op{Nop()}, make([]Request, 1), nil, 0)
		assert.ErrorIs(t, err, ErrInvalid)
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort2ConcurrentReapersTimeouts: submitters and reapers with every
// kind of timeout (0, a nanosecond, a millisecond, negative) at once:
// each completion goes to exactly one reaper, and the blocked reapers
// return once the ring closes.
func TestPort2ConcurrentReapersTimeouts(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		const perSubmitter, submitters = 400, 3
		var counts sync.Map
		var total atomic.Int64
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				timeouts := []time.Duration{0, time.Nanosecond, time.Millisecond, -1}
				var dst [3]Completion
				for i := 0; ; i++ {
					n, err := r.Reap(dst[:1+i%3], timeouts[(g+i)%4])
					for _, c := range dst[:n] {
						v, _ := counts.LoadOrStore(c.User, new(atomic.Int32))
						v.(*atomic.Int32).Add(1)
						total.Add(1)
					}
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
				}
			}()
		}
		var sg sync.WaitGroup
		for s := range submitters {
			sg.Add(1)
			go func() {
				defer sg.Done()
				for i := range perSubmitter {
					op := Nop()
					if i%5 == 0 {
						op = Timeout(time.Duration(i%7) * time.Microsecond)
					}
					for {
						_, err := r.Submit(op.WithUser(s*perSubmitter + i))
						if errors.Is(err, ErrFull) {
							time.Sleep(50 * time.Microsecond)
							continue
						}
						require.NoError(t, err)
						break
					}
				}
			}()
		}
		sg.Wait()
		require.Eventually(t, func() bool { return total.Load() == perSubmitter*submitters }, 10*time.Second, time.Millisecond)
		portWithin(t, 10*time.Second, "Close", func() { require.NoError(t, r.Close()) })
		portWithin(t, 10*time.Second, "the reapers", wg.Wait)
		n := 0
		counts.Range(func(k, v any) bool {
			n++
			assert.Equal(t, int32(1), v.(*atomic.Int32).Load(), "completions of %v", k)
			return true
		})
		assert.Equal(t, perSubmitter*submitters, n)
	})
}
