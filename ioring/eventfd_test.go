//go:build linux

package ioring

import (
	"context"
	"fmt"
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
			saved := lazyEventFD
			lazyEventFD = func() bool { return lazy }
			t.Cleanup(func() { lazyEventFD = saved })
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
