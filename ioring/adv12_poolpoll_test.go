//go:build linux

package ioring

import (
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

// TestAdv12PollPoolSaturated holds every worker of the poll backend's
// pool (its test seam), queues many times more file operations than it
// has workers, and ends the queued ones at random by every means
// (Request.Cancel, Ring.Cancel, tokens, deadlines, contexts through a
// bound token, CancelAll). Every queued request so ended completes while
// the workers are still held (a cancel of a queued op does not wait for
// a worker), and never runs (a canceled write wrote nothing). Then Close
// is called with the workers still held: it must wait for them, deliver
// every completion once, and return once they are let go.
func TestAdv12PollPoolSaturated(t *testing.T) {
	seed := adv12Seed(t)
	for round := range 3 {
		adv12PoolRound(t, seed+uint64(round))
		if t.Failed() {
			return
		}
	}
}

func adv12PoolRound(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 101))
	r := newPollRing(t, 512)
	b := pollBE(r)
	release := make(chan struct{})
	var held atomic.Int32
	b.mu.Lock()
	b.testHold = func(uint32) {
		held.Add(1)
		<-release
	}
	b.mu.Unlock()
	var relOnce sync.Once
	unhold := func() { relOnce.Do(func() { close(release) }) }
	t.Cleanup(unhold)

	const n, size = 300, 64
	fd := tempFile(t, nil)
	require.NoError(t, unix.Ftruncate(fd, n*size))
	l := newAdv12Ledger(t)
	toks := []*Token{r.NewToken(), r.NewToken(), r.NewToken()}
	reqs := make([]Request, n)
	for i := range n {
		buf := make([]byte, size)
		for j := range buf {
			buf[j] = byte(1 + i%250)
		}
		// Positioned writes past the page cache's reach: on a worker.
		op := Write(fd, buf, int64(i*size))
		if i%7 == 3 {
			op = Fsync(fd)
		}
		switch rng.IntN(5) {
		case 0:
			op = op.WithDeadline(time.Duration(1+rng.IntN(50)) * time.Millisecond)
		case 1:
			op = op.WithToken(toks[rng.IntN(len(toks))])
		}
		q, err := r.Submit(op.WithUser(i))
		require.NoError(t, err)
		l.accept(i, q)
		reqs[i] = q
	}
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return int(held.Load()) == b.maxWorkers && b.nworkers == b.maxWorkers
	}, adv12Hang, time.Millisecond, "every worker holds a request")

	// End the queued ones at random, all within a bound, the workers held.
	start := time.Now()
	for range 40 {
		switch x := rng.IntN(10); {
		case x < 5:
			reqs[rng.IntN(n)].Cancel()
		case x < 7:
			r.Cancel(reqs[rng.IntN(n)], reqs[rng.IntN(n)], reqs[rng.IntN(n)])
		case x < 9:
			require.NoError(t, toks[rng.IntN(len(toks))].Cancel())
		default:
			require.NoError(t, r.CancelAll())
		}
	}
	require.NoError(t, r.CancelAll())
	cancelTook := time.Since(start)
	running := int(held.Load())
	// Every request but those the workers hold completes now.
	adv12Reap(t, r, l, "queued", func() bool { return l.done() >= n-running })
	assert.Less(t, time.Since(start), 5*time.Second, "the queued requests ended while the workers were held")
	assert.Less(t, cancelTook, 2*time.Second, "the cancels returned at once")
	assert.Equal(t, running, int(held.Load()), "no queued request reached a worker after its cancel")
	for id, c := range l.final {
		if !adv12IsCancel(c.Err) {
			t.Errorf("seed %d: queued request %d completed with %s while every worker was held", seed, id, adv12Res(c))
		}
	}

	// Close with the workers held: it waits, then returns once they go.
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("seed %d: Close returned (%v) with %d requests on held workers", seed, err, running)
	case <-time.After(time.Duration(rng.IntN(50)) * time.Millisecond):
	}
	unhold()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(adv12Hang):
		t.Fatalf("seed %d: Close did not return after the workers were let go", seed)
	}
	// What Close drained is still there to reap, then ErrClosed.
	dst := make([]Completion, 16)
	for {
		m, err := r.Reap(dst, 0)
		for _, c := range dst[:m] {
			l.got(c, "after close")
		}
		if err != nil {
			require.ErrorIs(t, err, ErrClosed)
			break
		}
		if m == 0 {
			t.Fatalf("seed %d: Reap after Close returned nothing and no error", seed)
		}
	}
	l.check()
	// A canceled write wrote nothing: its range is still zeros.
	page := make([]byte, size)
	for id, c := range l.final {
		if id%7 == 3 {
			continue
		}
		_, err := unix.Pread(fd, page, int64(id*size))
		require.NoError(t, err)
		wrote := page[0] != 0
		switch {
		case c.Err == nil && (!wrote || c.N != size):
			t.Errorf("seed %d: write %d reported %s, wrote %v", seed, id, adv12Res(c), wrote)
		case c.Err != nil && wrote:
			t.Errorf("seed %d: write %d reported %s, but its bytes are in the file", seed, id, adv12Res(c))
		case c.Err != nil && !adv12IsCancel(c.Err):
			t.Errorf("seed %d: write %d: %s", seed, id, adv12Res(c))
		}
	}
	st := r.Stats()
	assert.Equal(t, uint64(n), st.Submitted)
	assert.Equal(t, st.Submitted, st.Completed, "Stats %+v", st)
	var canceled, timedOut uint64
	for _, c := range l.final {
		switch {
		case errors.Is(c.Err, ErrTimeout):
			timedOut++
		case errors.Is(c.Err, ErrCanceled):
			canceled++
		}
	}
	assert.Equal(t, canceled, st.Canceled, "Stats %+v", st)
	assert.Equal(t, timedOut, st.TimedOut, "Stats %+v", st)
	t.Logf("seed %d: %d held on workers, %d canceled, %d timed out", seed, running, canceled, timedOut)
}
