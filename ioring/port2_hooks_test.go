//go:build linux

package ioring

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Second round, user hooks: a foreign request's cancel hook that calls
// back into the ring (Complete of its own request or of another, Submit,
// Cancel of itself, its token or the ring, Reap) from every path that
// runs hooks (Request.Cancel, Token.Cancel, Ring.Cancel, CancelAll, a
// deadline's timer, Close). Each request still completes exactly once and
// nothing deadlocks.

// port2Foreign submits a foreign request whose hook runs hook with the
// request's own handle, and returns the handle.
func port2Foreign(t *testing.T, r *Ring, tok *Token, d time.Duration, user any, hook func(q Request)) Request {
	t.Helper()
	var mu sync.Mutex
	var self Request
	op := Foreign(func() {
		mu.Lock()
		q := self
		mu.Unlock()
		hook(q)
	}).WithUser(user)
	if tok != nil {
		op = op.WithToken(tok)
	}
	if d > 0 {
		op = op.WithDeadline(d)
	}
	mu.Lock()
	defer mu.Unlock()
	q, err := r.Submit(op)
	require.NoError(t, err)
	self = q
	return q
}

// TestPort2HookCompletesItself: a hook that posts its own request's
// completion synchronously (a transport whose cancel is immediate), from
// each path that runs hooks; the completion is the cancel, once.
func TestPort2HookCompletesItself(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		completeSelf := func(q Request) {
			assert.NoError(t, r.Complete(q, 0, ErrCanceled), "Complete from the hook")
		}
		paths := []struct {
			name   string
			cancel func(q Request, tok *Token) error
			want   error
		}{
			{"request", func(q Request, _ *Token) error { return q.Cancel() }, ErrCanceled},
			{"token", func(_ Request, tok *Token) error { return tok.Cancel() }, ErrCanceled},
			{"ring-cancel", func(q Request, _ *Token) error {
				n, err := r.Cancel(q, q)
				assert.Equal(t, 1, n)
				return err
			}, ErrCanceled},
			{"cancel-all", func(Request, *Token) error { return r.CancelAll() }, ErrCanceled},
		}
		for _, p := range paths {
			tok := r.NewToken()
			q := port2Foreign(t, r, tok, 0, p.name, completeSelf)
			portWithin(t, 10*time.Second, p.name, func() { assert.NoError(t, p.cancel(q, tok), p.name) })
			c := reapOne(t, r)
			assert.Equal(t, p.name, c.User)
			assert.ErrorIs(t, c.Err, p.want, p.name)
			assert.ErrorIs(t, q.Cancel(), ErrNotFound, "%s: nothing left", p.name)
			assert.ErrorIs(t, r.Complete(q, 0, nil), ErrNotFound, "%s: completed once", p.name)
			assertNoMore(t, r)
		}

		// A deadline's timer runs the hook: ErrTimeout.
		q := port2Foreign(t, r, nil, 5*time.Millisecond, "deadline", completeSelf)
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort2HookReenters: a hook that calls Cancel of its own request,
// its token and the ring, submits a new request and reaps without
// waiting; a hook is never re-entered, the cancel returns, and the
// transport's completion (posted after the hook) is the only one.
func TestPort2HookReenters(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		var runs atomic.Int32
		var submitted []Request
		var smu sync.Mutex
		tok := r.NewToken()
		hook := func(q Request) {
			if runs.Add(1) > 8 {
				t.Error("hook re-entered without end")
				return
			}
			// Its own request: asked already, nothing left.
			assert.ErrorIs(t, q.Cancel(), ErrNotFound, "self cancel from the hook")
			assert.NoError(t, tok.Cancel())
			assert.NoError(t, r.CancelAll())
			_, err := r.Cancel(q)
			assert.NoError(t, err)
			nq, err := r.Submit(Nop().WithUser("from-hook"))
			if assert.NoError(t, err, "Submit from the hook") {
				smu.Lock()
				submitted = append(submitted, nq)
				smu.Unlock()
			}
			var c [1]Completion
			_, err = r.Reap(c[:0:0], 0)
			assert.ErrorIs(t, err, ErrInvalid)
		}
		q := port2Foreign(t, r, tok, 0, "foreign", hook)
		portWithin(t, 10*time.Second, "Request.Cancel", func() { assert.NoError(t, q.Cancel()) })
		assert.Equal(t, int32(1), runs.Load(), "the hook ran once")
		require.NoError(t, r.Complete(q, 0, ErrCanceled))
		seen := map[any]int{}
		for range 2 {
			c := reapOne(t, r)
			seen[c.User]++
			if c.User == "foreign" {
				assert.ErrorIs(t, c.Err, ErrCanceled)
			} else {
				assert.NoError(t, c.Err)
			}
		}
		assert.Equal(t, map[any]int{"foreign": 1, "from-hook": 1}, seen)
		assertNoMore(t, r)
	})
}

// TestPort2HookCompletesOthers: hooks that complete another foreign
// request (the next one of a chain) while a token cancels them all:
// every request completes exactly once, with ErrCanceled or the count its
// neighbour posted, and a Complete that loses says ErrNotFound.
func TestPort2HookCompletesOthers(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		const n = 40 // more than a hookSet holds on its stack
		tok := r.NewToken()
		qs := make([]Request, n)
		var mu sync.Mutex
		for i := range qs {
			i := i
			op := Foreign(func() {
				mu.Lock()
				q, next := qs[i], qs[(i+1)%n]
				mu.Unlock()
				// Complete the neighbour (may lose to its own hook), then
				// ourselves (may lose to the previous one's hook).
				if err := r.Complete(next, 7, nil); err != nil {
					assert.ErrorIs(t, err, ErrNotFound)
				}
				if err := r.Complete(q, 0, ErrCanceled); err != nil {
					assert.ErrorIs(t, err, ErrNotFound)
				}
			}).WithToken(tok).WithUser(i)
			mu.Lock()
			q, err := r.Submit(op)
			qs[i] = q
			mu.Unlock()
			require.NoError(t, err)
		}
		portWithin(t, 10*time.Second, "Token.Cancel", func() { assert.NoError(t, tok.Cancel()) })
		seen := map[any]int{}
		for range n {
			c := reapOne(t, r)
			seen[c.User]++
			if c.Err != nil {
				assert.ErrorIs(t, c.Err, ErrCanceled)
			} else {
				assert.Equal(t, 7, c.N)
			}
		}
		for i := range n {
			assert.Equal(t, 1, seen[i], "completions of %d", i)
		}
		assert.Zero(t, tok.Pending())
		assertNoMore(t, r)
	})
}

// TestPort2HookPanicsOnDeadline: a hook run by a deadline's timer that
// panics; the completion the transport posts carries a *HookPanicError
// that wraps ErrTimeout, and the ring keeps working.
func TestPort2HookPanicsOnDeadline(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		ran := make(chan Request, 1)
		q := port2Foreign(t, r, nil, 5*time.Millisecond, "p", func(q Request) {
			ran <- q
			panic("deadline hook")
		})
		select {
		case got := <-ran:
			assert.Equal(t, q, got)
		case <-time.After(10 * time.Second):
			t.Fatal("the deadline's hook did not run")
		}
		// The transport posts after the hook returned (the panic is
		// recorded by then): wait for the ring's record of it.
		fr := r.slots[q.key&idxMask].fref.Load()
		require.NotNil(t, fr)
		// (callHook records the panic as the last thing it does.)
		require.Eventually(t, func() bool { return fr.panicked.Load() != nil },
			10*time.Second, time.Millisecond)
		require.NoError(t, r.Complete(q, 0, ErrCanceled))
		c := reapOne(t, r)
		var pe *HookPanicError
		if assert.True(t, errors.As(c.Err, &pe), "completion %v", c.Err) {
			assert.Equal(t, "deadline hook", pe.Value)
		}
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		c2, err := r.Do(t.Context(), Nop())
		require.NoError(t, err)
		assert.NoError(t, c2.Err)
	})
}

// TestPort2HookCloseCompletesFromHook: Close with foreign requests whose
// hooks complete them on another goroutine after a while, and one whose
// hook completes it inline: Close drains every one and returns.
func TestPort2HookCloseCompletesFromHook(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var wg sync.WaitGroup
		for i := range 6 {
			port2Foreign(t, r, nil, 0, i, func(q Request) {
				if i%2 == 0 {
					assert.NoError(t, r.Complete(q, 0, ErrCanceled))
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					time.Sleep(time.Duration(i) * time.Millisecond)
					assert.NoError(t, r.Complete(q, 0, ErrCanceled))
				}()
			})
		}
		portWithin(t, 10*time.Second, "Close", func() { assert.NoError(t, r.Close()) })
		wg.Wait()
		seen := map[any]int{}
		for {
			var c [8]Completion
			n, err := r.Reap(c[:], time.Second)
			for _, c := range c[:n] {
				seen[c.User]++
				assert.ErrorIs(t, c.Err, ErrCanceled)
			}
			if err != nil {
				assert.ErrorIs(t, err, ErrClosed)
				break
			}
		}
		assert.Len(t, seen, 6)
		for u, k := range seen {
			assert.Equal(t, 1, k, "completions of %v", u)
		}
	})
}
