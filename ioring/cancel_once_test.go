//go:build linux

package ioring

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A request is canceled once: a second cancel, by any means, finds nothing
// left to cancel on every backend and changes nothing, and the completion
// reports the first cause.
func TestConformanceCancelOnce(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		buf := make([]byte, 8)

		t.Run("Request.Cancel twice", func(t *testing.T) {
			q, err := r.Submit(Read(rd, buf, -1))
			require.NoError(t, err)
			require.NoError(t, q.Cancel())
			assert.ErrorIs(t, q.Cancel(), ErrNotFound, "the second cancel")
			n, err := r.Cancel(q)
			assert.NoError(t, err)
			assert.Zero(t, n, "Ring.Cancel after Request.Cancel")
			c := reapOne(t, r)
			assert.Equal(t, q, c.Req)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assertNoMore(t, r)
		})

		t.Run("Ring.Cancel of one request thrice", func(t *testing.T) {
			q, err := r.Submit(Read(rd, buf, -1))
			require.NoError(t, err)
			q2, err := r.Submit(Read(rd, buf, -1))
			require.NoError(t, err)
			n, err := r.Cancel(q, q, q2, q)
			assert.NoError(t, err)
			assert.Equal(t, 2, n, "two requests, each counted once")
			got := map[Request]int{}
			for range 2 {
				c := reapOne(t, r)
				assert.ErrorIs(t, c.Err, ErrCanceled)
				got[c.Req]++
			}
			assert.Equal(t, map[Request]int{q: 1, q2: 1}, got)
			assertNoMore(t, r)
		})

		t.Run("token after Request.Cancel", func(t *testing.T) {
			tok := r.NewToken()
			q, err := r.Submit(Read(rd, buf, -1).WithToken(tok))
			require.NoError(t, err)
			require.NoError(t, q.Cancel())
			assert.NoError(t, tok.Cancel(), "a token's cancel of its requests")
			c := reapOne(t, r)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assertNoMore(t, r)
		})

		t.Run("context after Request.Cancel", func(t *testing.T) {
			q, err := r.Start(Read(rd, buf, -1))
			require.NoError(t, err)
			require.NoError(t, q.Cancel())
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c, err := q.Wait(ctx)
			require.NoError(t, err)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			assert.NotErrorIs(t, c.Err, context.Canceled, "the caller's cancel came first")
		})

		// A foreign request completes only when its owner says so, so the
		// causes that come after the first one are sure to find it in
		// flight: its hook runs once, and its completion keeps the first
		// cause.
		for _, first := range []string{"cancel", "deadline"} {
			t.Run("foreign, "+first+" first", func(t *testing.T) {
				var hooked atomic.Int32
				op := Foreign(func() { hooked.Add(1) })
				if first == "deadline" {
					op = op.WithDeadline(time.Millisecond)
				} else {
					// Long enough that the cancel below comes first even
					// on a loaded machine.
					op = op.WithDeadline(500 * time.Millisecond)
				}
				tok := r.NewToken()
				q, err := r.Submit(op.WithToken(tok))
				require.NoError(t, err)
				if first == "deadline" {
					require.Eventually(t, func() bool { return hooked.Load() == 1 }, 5*time.Second, time.Millisecond)
					assert.ErrorIs(t, q.Cancel(), ErrNotFound, "canceled by its deadline already")
				} else {
					require.NoError(t, q.Cancel())
					time.Sleep(600 * time.Millisecond) // the deadline passes
				}
				assert.NoError(t, tok.Cancel())
				n, err := r.Cancel(q)
				assert.NoError(t, err)
				assert.Zero(t, n)
				assert.Equal(t, int32(1), hooked.Load(), "the cancel hook ran once")
				assert.True(t, q.Pending())
				require.NoError(t, r.Complete(q, 0, ErrCanceled))
				c := reapOne(t, r)
				if first == "deadline" {
					assert.ErrorIs(t, c.Err, ErrTimeout)
				} else {
					assert.ErrorIs(t, c.Err, ErrCanceled)
					assert.NotErrorIs(t, c.Err, ErrTimeout, "canceled before its deadline")
				}
				assertNoMore(t, r)
			})
		}
		assertSettled(t, r)
	})
}

// Two tokens' members, interleaved, on streams of their own and behind
// one another on a stream, canceled together: the reaper takes the
// canceled completions out of their tokens in bursts (holding a token's
// lock across them, and the streams' lock beside it), switching between
// the tokens as their completions alternate. Every member completes once,
// both tokens end with nothing pending, and both are reusable.
func TestConformanceTokenBurst(t *testing.T) {
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		const pipes = 24
		var rds [pipes]int
		for i := range rds {
			rds[i], _ = pipe(t)
		}
		buf := make([]byte, 8)
		toks := [2]*Token{r.NewToken(), r.NewToken()}
		for round := range 3 {
			want := map[Request]bool{}
			for i, rd := range rds {
				for range 1 + i%3 { // a second and third read wait behind the first
					q, err := r.Submit(Read(rd, buf, -1).WithToken(toks[i%2]))
					require.NoError(t, err)
					want[q] = true
				}
			}
			require.NoError(t, toks[0].Cancel())
			require.NoError(t, toks[1].Cancel())
			for len(want) > 0 {
				c := reapOne(t, r)
				require.True(t, want[c.Req], "round %d: one completion per request", round)
				delete(want, c.Req)
				require.ErrorIs(t, c.Err, ErrCanceled)
			}
			assertNoMore(t, r)
			for _, tok := range toks {
				assert.Zero(t, tok.Pending())
				require.NoError(t, tok.Reset())
			}
		}
		assertSettled(t, r)
	})
}
