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

// A cancel of several foreign requests marks them all canceled, then runs
// their hooks one after another. While the first one's hook runs, the
// second is canceled but its hook has not run yet. A hook that cancels the
// second again (its own Request.Cancel, Ring.Cancel, Ring.CancelAll, the
// token's Cancel, Ring.Close) and waits for it to end (the usb case: a
// device's hook closes another device, which waits for its transfers) must
// find that hook run by its own cancel, not left to the first cancel once
// the first hook returns: that would be a deadlock. Each hook still runs
// exactly once, each request completes exactly once.

// nestedPair submits two foreign requests a and b with tok, a first; b's
// hook is hookB, a's is hookA, each given the pair's handles.
func nestedPair(t *testing.T, r *Ring, tok *Token, hookA, hookB func(a, b Request)) (a, b Request) {
	t.Helper()
	var mu sync.Mutex
	handles := func() (Request, Request) {
		mu.Lock()
		defer mu.Unlock()
		return a, b
	}
	mu.Lock()
	defer mu.Unlock()
	var err error
	a, err = r.Submit(Foreign(func() { hookA(handles()) }).WithToken(tok).WithUser("a"))
	require.NoError(t, err)
	b, err = r.Submit(Foreign(func() { hookB(handles()) }).WithToken(tok).WithUser("b"))
	require.NoError(t, err)
	return a, b
}

// nestedReap collects the completions of want's requests (until all came,
// or the ring is closed and drained) and checks each came once, as a
// cancel.
func nestedReap(t *testing.T, r *Ring, closed bool, want []any, wantB func(error)) {
	t.Helper()
	seen := map[any]int{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < len(want) && time.Now().Before(deadline) {
		var cs [4]Completion
		n, err := r.Reap(cs[:], time.Second)
		for _, c := range cs[:n] {
			seen[c.User]++
			if c.User == "b" && wantB != nil {
				wantB(c.Err)
			} else {
				assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
			}
		}
		if err != nil {
			require.True(t, closed, "Reap: %v", err)
			break
		}
	}
	wantSeen := map[any]int{}
	for _, u := range want {
		wantSeen[u] = 1
	}
	assert.Equal(t, wantSeen, seen, "each completes exactly once")
	if !closed {
		assertNoMore(t, r)
	}
}

// TestNestedCancelRunsPendingHook: the first cancel is the token's (hooks
// oldest first: a's, then b's) or a Ring.Cancel(a, b); a's hook completes
// a, cancels b again and waits (bounded) for b's hook, which completes b.
// "ring-cancel-mixed" cancels a pending read along with b: on io_uring the
// read goes through the backend's batch loop, which skips b (canceled
// already), and b's hook is found among what it skipped.
func TestNestedCancelRunsPendingHook(t *testing.T) {
	outers := []string{"token", "ring-cancel"}
	nesteds := []string{"request", "ring-cancel", "ring-cancel-mixed", "cancel-all", "token", "close"}
	for _, outer := range outers {
		for _, nested := range nesteds {
			t.Run(outer+"/"+nested, func(t *testing.T) {
				forEachBackend(t, 8, func(t *testing.T, r *Ring) {
					tok := r.NewToken()
					var runsA, runsB atomic.Int32
					bRan := make(chan struct{})
					want := []any{"a", "b"}
					var read Request
					if nested == "ring-cancel-mixed" {
						rd, _ := pipe(t)
						read = submitPending(t, r, Read(rd, make([]byte, 8), -1).WithUser("read"))
						want = append(want, "read")
					}
					hookB := func(_, b Request) {
						if runsB.Add(1) != 1 {
							return // counted: a hook runs once
						}
						assert.NoError(t, r.Complete(b, 0, ErrCanceled), "b's Complete from its hook")
						close(bRan)
					}
					hookA := func(a, b Request) {
						if runsA.Add(1) != 1 {
							return
						}
						select {
						case <-bRan:
							t.Error("b's hook ran before a's: the test shows nothing")
						default:
						}
						assert.NoError(t, r.Complete(a, 0, ErrCanceled), "a's Complete from its hook")
						switch nested {
						case "request":
							// b was canceled already (by the outer cancel):
							// nothing left to cancel, but its hook runs here.
							assert.ErrorIs(t, b.Cancel(), ErrNotFound, "b.Cancel from a's hook")
						case "ring-cancel":
							n, err := r.Cancel(b)
							assert.NoError(t, err, "Ring.Cancel(b) from a's hook")
							assert.Zero(t, n, "b was canceled before")
						case "ring-cancel-mixed":
							n, err := r.Cancel(read, b)
							assert.NoError(t, err, "Ring.Cancel(read, b) from a's hook")
							assert.Equal(t, 1, n, "the read, not b (canceled before)")
						case "cancel-all":
							assert.NoError(t, r.CancelAll(), "CancelAll from a's hook")
						case "token":
							assert.NoError(t, tok.Cancel(), "Token.Cancel from a's hook")
						case "close":
							// Close drains: it returns once b completed.
							assert.NoError(t, r.Close(), "Close from a's hook")
						}
						select {
						case <-bRan:
						case <-time.After(10 * time.Second):
							t.Errorf("%s from a's hook: b's hook did not run within 10s", nested)
						}
					}
					a, b := nestedPair(t, r, tok, hookA, hookB)
					portWithin(t, 30*time.Second, outer, func() {
						switch outer {
						case "token":
							assert.NoError(t, tok.Cancel(), "the outer Token.Cancel")
						case "ring-cancel":
							n, err := r.Cancel(a, b)
							assert.NoError(t, err, "the outer Ring.Cancel")
							assert.Equal(t, 2, n, "the outer Ring.Cancel")
						}
					})
					nestedReap(t, r, nested == "close", want, nil)
					assert.EqualValues(t, 1, runsA.Load(), "a's hook runs once")
					assert.EqualValues(t, 1, runsB.Load(), "b's hook runs once")
					assert.ErrorIs(t, r.Complete(a, 0, nil), ErrNotFound, "a completed once")
					assert.ErrorIs(t, r.Complete(b, 0, nil), ErrNotFound, "b completed once")
				})
			})
		}
	}
}

// TestNestedCancelHookPanic: b's hook, run by a's hook's Request.Cancel(b),
// panics; that Request.Cancel reports it, the outer cancel does not (it did
// not run b's hook), and b's completion carries it, as a hook's panic is.
func TestNestedCancelHookPanic(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		tok := r.NewToken()
		var runsA, runsB atomic.Int32
		hookB := func(_, _ Request) {
			runsB.Add(1)
			panic("b's hook")
		}
		hookA := func(a, b Request) {
			if runsA.Add(1) != 1 {
				return
			}
			assert.Zero(t, runsB.Load(), "b's hook ran before a's: the test shows nothing")
			assert.NoError(t, r.Complete(a, 0, ErrCanceled), "a's Complete from its hook")
			err := b.Cancel()
			var pe *HookPanicError
			if assert.True(t, errors.As(err, &pe), "b.Cancel from a's hook ran b's hook: %v", err) {
				assert.Equal(t, "b's hook", pe.Value)
			}
			// b's owner (here a's hook) completes b once its interruption ran.
			if runsB.Load() == 1 {
				assert.NoError(t, r.Complete(b, 0, ErrCanceled), "b's Complete")
			}
		}
		a, b := nestedPair(t, r, tok, hookA, hookB)
		portWithin(t, 30*time.Second, "token", func() {
			assert.NoError(t, tok.Cancel(), "the outer Token.Cancel ran only a's hook")
		})
		if b.Pending() {
			// Not completed by a's hook (b's hook did not run from there):
			// complete it now, so the test ends.
			_ = r.Complete(b, 0, ErrCanceled)
		}
		nestedReap(t, r, false, []any{"a", "b"}, func(err error) {
			var pe *HookPanicError
			assert.True(t, errors.As(err, &pe), "b's completion carries its hook's panic: %v", err)
			assert.ErrorIs(t, err, ErrCanceled, "b")
		})
		assert.EqualValues(t, 1, runsA.Load(), "a's hook runs once")
		assert.EqualValues(t, 1, runsB.Load(), "b's hook runs once")
		assert.ErrorIs(t, r.Complete(a, 0, nil), ErrNotFound, "a completed once")
	})
}
