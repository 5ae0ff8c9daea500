//go:build linux

package ioring

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestKernelAtLeast(t *testing.T) {
	for _, c := range []struct {
		release string
		want    bool
	}{
		{"5.18.0", true},
		{"5.18", true},
		{"5.19.17-generic", true},
		{"6.1.0-18-amd64", true},
		{"6.18.44-fc-v1272", true},
		{"10.0", true},
		{"5.17.15", false},
		{"5.4.0-150-generic", false},
		{"4.19.0", false},
		{"", false},
		{"6", false},
		{"6.", false},
		{"x.18", false},
		{"99999999999999999999.1", false}, // no overflow into a large version
	} {
		assert.Equal(t, c.want, kernelAtLeast(c.release, 5, 18), "%q", c.release)
	}
}

// The eventfd a parked reaper sleeps on is registered with the ring at New
// where registering would stall a busy ring (before 5.18), and at the first
// park where it does not: a ring whose reapers always find their
// completions ready never pays for the kernel's notifications. Either way,
// a reaper parked before its completion comes is woken by the completion,
// not by the bound on a park.
func TestURingEventFDRegistration(t *testing.T) {
	for _, lazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lazy=%v", lazy), func(t *testing.T) {
			if lazy && !lazyEventFD() {
				t.Skip("this kernel registers an eventfd by quiescing the ring (before 5.18)")
			}
			saved, savedIdle := lazyEventFD, evIdleFor
			lazyEventFD = func() bool { return lazy }
			evIdleFor = time.Hour // TestURingEventFDIdle lets it lapse
			t.Cleanup(func() { lazyEventFD, evIdleFor = saved, savedIdle })
			before, err := fdcheck.Take()
			require.NoError(t, err)
			r, err := New(Config{Entries: 8, Backend: BackendURing})
			require.NoError(t, err)
			b := r.plainBe
			require.NotNil(t, b)
			assert.Equal(t, !lazy, b.evOn, "registered at New")

			// Round trips whose completions are ready when they reap.
			var comps [1]Completion
			for range 100 {
				c, err := r.Do(context.Background(), Nop())
				require.NoError(t, err)
				require.NoError(t, c.Err)
				_, err = r.Submit(Nop())
				require.NoError(t, err)
				n, err := r.Reap(comps[:], -1)
				require.NoError(t, err)
				require.Equal(t, 1, n)
			}
			r.reapMu.Lock()
			assert.Equal(t, !lazy, b.evOn, "registered without a park")
			r.reapMu.Unlock()

			// A read of an empty pipe: the reaper parks until the write.
			// The park's bound is reapParkMax after it began; a wake that
			// took the eventfd comes long before, at least once in five.
			rd, wr := pipe(t)
			fastest := time.Hour
			for range 5 {
				buf := make([]byte, 1)
				q, err := r.Submit(Read(rd, buf, -1))
				require.NoError(t, err)
				done := make(chan time.Time, 1)
				go func() {
					_, err := r.Reap(comps[:], -1)
					assert.NoError(t, err)
					done <- time.Now()
				}()
				time.Sleep(20 * time.Millisecond) // past the spin: parked
				sent := time.Now()
				_, err = unix.Write(wr, []byte{7})
				require.NoError(t, err)
				select {
				case at := <-done:
					fastest = min(fastest, at.Sub(sent))
				case <-time.After(10 * time.Second):
					t.Fatal("the parked reaper was never woken")
				}
				assert.Equal(t, q, comps[0].Req)
				assert.Equal(t, 1, comps[0].N)
				assert.NoError(t, comps[0].Err)
			}
			assert.Less(t, fastest, reapParkMax*6/10, "woken by the completion, not by the park's bound")
			r.reapMu.Lock()
			assert.True(t, b.evOn, "registered once a reaper parked")
			r.reapMu.Unlock()
			require.NoError(t, r.Close())
			assertOnlyPipeLeft(t, before, "the ring's fds closed (the pipe's two remain)")
		})
	}
}

// Once no reaper has parked for evIdleFor, the eventfd is unregistered
// again, so a ring back to completions that are ready when it reaps stops
// paying for the notifications; the next park registers it again, and the
// completion still wakes that park.
func TestURingEventFDIdle(t *testing.T) {
	r := lapsingRing(t, 8, 30*time.Millisecond)
	state := func() (on bool, regs int) {
		r.reapMu.Lock()
		defer r.reapMu.Unlock()
		return r.plainBe.evOn, r.plainBe.evRegs
	}
	lapsed := func(msg string) {
		deadline := time.Now().Add(10 * time.Second)
		for on, _ := state(); on; on, _ = state() {
			require.True(t, time.Now().Before(deadline), "still registered: %s", msg)
			time.Sleep(5 * time.Millisecond)
		}
	}
	rd, wr := pipe(t)
	buf := make([]byte, 1)
	// park waits in Do for a read of the empty pipe until a write 20ms
	// later: past the spin, the reaper parks. It returns how long the
	// read took after the write.
	park := func() time.Duration {
		sent := make(chan time.Time, 1)
		time.AfterFunc(20*time.Millisecond, func() {
			sent <- time.Now()
			unix.Write(wr, []byte{7})
		})
		n, err := r.ReadAt(context.Background(), rd, buf, -1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		return time.Since(<-sent)
	}
	prev := 0
	for round := 1; round <= 3; round++ {
		fastest := time.Hour
		for range 3 {
			fastest = min(fastest, park())
		}
		_, regs := state()
		assert.Greater(t, regs, prev, "round %d: registered again at a park after the lapse", round)
		prev = regs
		assert.Less(t, fastest, reapParkMax*6/10, "woken by the completion, not by the park's bound")
		lapsed(fmt.Sprintf("round %d", round))
		// Round trips whose completions are ready do not register it.
		for range 50 {
			_, err := r.Do(context.Background(), Nop())
			require.NoError(t, err)
		}
		on, _ := state()
		assert.False(t, on, "registered without a park")
	}
}

// The stress test with the eventfd lapsing all the time: unregistering
// races the reapers' parks and re-registrations, and nothing may be lost.
func TestURingEventFDIdleStress(t *testing.T) {
	// On one P a reaper is parked, holding the reaper role, nearly all the
	// time the stress runs, so the eventfd seldom gets the idle second it
	// needs to lapse (evQuiet waits for the role): this test needs two.
	if runtime.GOMAXPROCS(0) < 2 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	r := lapsingRing(t, 1024, 100*time.Microsecond)
	stress(t, r, 20000)
	r.reapMu.Lock()
	regs := r.plainBe.evRegs
	r.reapMu.Unlock()
	t.Logf("%d registrations", regs)
	assert.Greater(t, regs, 1, "the eventfd lapsed and was registered again")
}

// lapsingRing is an io_uring ring whose eventfd lapses after idle without
// a park, closed (and its fds checked) when t ends. It skips t where the
// eventfd is registered at New, for good.
func lapsingRing(t *testing.T, entries int, idle time.Duration) *Ring {
	if !lazyEventFD() {
		t.Skip("this kernel registers the eventfd at New, for good (before 5.18)")
	}
	saved := evIdleFor
	evIdleFor = idle
	t.Cleanup(func() { evIdleFor = saved })
	fdcheck.Check(t)
	r, err := New(Config{Entries: entries, Backend: BackendURing})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, r.Close()) })
	return r
}
