//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestAdvWakeIdleConsumersPark checks that consumers blocked in Reap with
// no time limit on a ring with nothing to reap actually sleep. With one
// such consumer the ring is quiet (TestConformanceReapTimeouts checks
// it); with two or more, each that finds nothing must park, not pass the
// reaper role to the next parked one, which finds nothing either and
// passes it back (unlockReap's wake-up of a parked consumer, reapWait's
// continue on reaperCh), keeping a CPU busy for as long as the ring is
// idle. Over a second of an idle ring, the process must use well under
// a second of CPU time (a CPU kept busy uses all of it). Then a NOP still
// reaches one of them, and Close releases them all.
func TestAdvWakeIdleConsumersPark(t *testing.T) {
	for _, consumers := range []int{2, 4} {
		for _, b := range awBackends {
			t.Run(fmt.Sprintf("consumers=%d/backend=%v", consumers, b), func(t *testing.T) {
				leaks := goleak.IgnoreCurrent()
				r := awRing(t, b, 8)
				a := newAWTally(t, 16)
				var cons sync.WaitGroup
				for i := range consumers {
					cons.Add(1)
					go func() {
						defer cons.Done()
						awReaper(a, r, fmt.Sprintf("consumer %d", i), 1, func() time.Duration { return -1 })
					}()
				}
				time.Sleep(200 * time.Millisecond) // let them all block
				cpu := cpuTime(t)
				wall := time.Now()
				time.Sleep(time.Second)
				used, elapsed := cpuTime(t)-cpu, time.Since(wall)
				assert.Less(t, used, elapsed/2,
					"CPU time the process used in %v while %d consumers waited in Reap(-1) on an idle ring (busy: the consumers pass the reaper role around instead of parking)", elapsed, consumers)

				id := a.id(awNop)
				_, err := r.Submit(Nop().WithUser(id))
				require.NoError(t, err)
				a.accept(id)
				awWithin(t, awHang, "a NOP's delivery to the idle consumers", func() {
					for a.nSeen.Load() < 1 {
						time.Sleep(time.Millisecond)
					}
				})
				awWithin(t, awHang, "Close with idle consumers", func() { r.Close() })
				awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
				a.check()
				goleak.VerifyNone(t, leaks)
			})
		}
	}
}

// TestAdvWakeInFlightWithinEntries checks InFlight's bound (never more
// than Entries, which docs/contract.md counts among what is settled) on a
// small ring kept full: two goroutines fill its 4 slots with NOPs, one at
// a time and in batches, while three consumers reap them one at a time
// (so that the io_uring reaper, whose room is one completion, queues the
// rest, and other consumers deliver them and free their slots at once),
// and two goroutines read InFlight all the while, for 2 seconds.
func TestAdvWakeInFlightWithinEntries(t *testing.T) {
	for _, b := range awBackends {
		t.Run(fmt.Sprintf("backend=%v", b), func(t *testing.T) {
			leaks := goleak.IgnoreCurrent()
			awProcs(t, 4)
			const entries = 4
			r := awRing(t, b, entries)
			a := newAWTally(t, 1<<22)
			stop := make(chan struct{})
			var readers, prods, cons sync.WaitGroup
			var worst, reads atomic.Int64
			for range 2 {
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						n := int64(r.InFlight())
						reads.Add(1)
						for w := worst.Load(); n > w && !worst.CompareAndSwap(w, n); w = worst.Load() {
						}
						if n < 0 {
							a.errorf("InFlight = %d", n)
							return
						}
					}
				}()
			}
			for i := range 3 {
				cons.Add(1)
				go func() {
					defer cons.Done()
					awReaper(a, r, fmt.Sprintf("consumer %d", i), 1, func() time.Duration { return -1 })
				}()
			}
			for p := range 2 {
				prods.Add(1)
				go func() {
					defer prods.Done()
					ops := make([]Op, entries)
					reqs := make([]Request, entries)
					for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && a.bad.Load() == 0; {
						n := 1 + (p+int(reads.Load()))%entries
						ids := make([]int64, n)
						for j := range n {
							ids[j] = a.id(awNop)
							ops[j] = Nop().WithUser(ids[j])
						}
						if ids[n-1] < 0 {
							return // the ledger is full: enough for one run
						}
						m, err := r.SubmitBatch(ops[:n], reqs[:n])
						if err != nil && !errors.Is(err, ErrFull) {
							a.errorf("SubmitBatch: %v", err)
							return
						}
						for j := range m {
							a.accept(ids[j])
						}
						if m == 0 {
							runtime.Gosched()
						}
					}
				}()
			}
			awWithin(t, awHang, "the producers", prods.Wait)
			awWithin(t, awHang, "delivery of every accepted request", func() {
				for a.nSeen.Load() < a.nAccepted.Load() && a.bad.Load() == 0 {
					time.Sleep(100 * time.Microsecond)
				}
			})
			close(stop)
			awWithin(t, awHang, "the readers", readers.Wait)
			assert.LessOrEqual(t, worst.Load(), int64(entries), "the largest InFlight read (Entries %d) in %d reads, %d requests", entries, reads.Load(), a.nAccepted.Load())
			awWithin(t, awHang, "Close with consumers parked", func() { r.Close() })
			awWithin(t, awHang, "the consumers' return after Close", cons.Wait)
			a.check()
			goleak.VerifyNone(t, leaks)
		})
	}
}
