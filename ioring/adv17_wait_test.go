//go:build linux

package ioring

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv17Within runs fn and fails t when it does not return within d.
func adv17Within(t *testing.T, d time.Duration, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		t.Errorf("%s: not done within %v", what, d)
		return false
	}
}

// TestAdv17TwoWaitersOnStartedForeign: two goroutines Wait on one started
// foreign request; its owner completes it. "It is delivered to one waiter
// only": one gets it, the other returns ErrNotFound; neither may hang.
func TestAdv17TwoWaitersOnStartedForeign(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for round := 0; round < 20; round++ {
			q, err := r.Start(Foreign(nil))
			require.NoError(t, err)
			var wins, notFound atomic.Int32
			var wg sync.WaitGroup
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := q.Wait(context.Background())
					switch {
					case err == nil:
						wins.Add(1)
					case errors.Is(err, ErrNotFound):
						notFound.Add(1)
					default:
						t.Errorf("Wait: %v", err)
					}
				}()
			}
			time.Sleep(5 * time.Millisecond) // both parked
			require.NoError(t, r.Complete(q, 1, nil))
			if !adv17Within(t, 5*time.Second, "the two waiters", wg.Wait) {
				t.Fatalf("round %d: a waiter of a completed foreign request hangs (wins %d, notfound %d)", round, wins.Load(), notFound.Load())
			}
			assert.Equal(t, int32(1), wins.Load(), "round %d: waiters that got it", round)
		}
	})
}
