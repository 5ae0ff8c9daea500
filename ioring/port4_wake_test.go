//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fourth round, wake-ups: ported from liburing's eventfd, eventfd-disable,
// eventfd-ring and wakeup-hang tests. cancelio registers an eventfd of its
// own, lazily, for a reaper to park on, turns its notifications on only
// while one is parked, and lets it lapse when nobody parks for a while.
// Whatever state it is in, a consumer blocked in Reap or Request.Wait must
// wake when a completion it may take arrives: these tests park many
// consumers at once, let the eventfd lapse between bursts, and deliver
// completions from the kernel, from timers and from foreign transports
// at every moment. A user's own eventfd read through the ring behaves as
// a read of any other file.

// port4Lapse makes the io_uring eventfd lapse after idle without a park,
// for the duration of t (the variable is read by rings made afterwards).
func port4Lapse(t *testing.T, idle time.Duration) {
	saved := evIdleFor
	evIdleFor = idle
	t.Cleanup(func() { evIdleFor = saved })
}

// TestPort4ParkedConsumersWake checks that no completion waits for a
// consumer that is never woken (wakeup-hang and eventfd-ring, with many
// waiters): goroutines reap with every kind of timeout and others wait
// for started requests, while bursts of completions arrive after idle gaps
// long enough for every consumer to park and for the ring's eventfd to
// lapse: timeouts, reads of pipes written later, foreign requests
// completed from timers, and cancels. Every request must be delivered
// exactly once, within seconds of the last burst, however the consumers
// were parked.
func TestPort4ParkedConsumersWake(t *testing.T) {
	port4Lapse(t, 300*time.Microsecond)
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(4, 1))
		var (
			mu        sync.Mutex
			seen      = map[uint64]int{} // by Request.ID
			submitted atomic.Int64
			delivered atomic.Int64
		)
		note := func(c Completion) {
			mu.Lock()
			seen[c.Req.ID()]++
			k := seen[c.Req.ID()]
			mu.Unlock()
			assert.Equal(t, 1, k, "completions of %v (%+v)", c.Req, c)
			delivered.Add(1)
		}
		// Reapers: each with its own timeout, parked most of the time.
		var rg sync.WaitGroup
		timeouts := []time.Duration{-1, -1, -1, time.Millisecond, 7 * time.Millisecond, 0}
		for g, to := range timeouts {
			rg.Add(1)
			go func() {
				defer rg.Done()
				var dst [4]Completion
				for i := 0; ; i++ {
					n, err := r.Reap(dst[:1+(g+i)%4], to)
					for _, c := range dst[:n] {
						note(c)
					}
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
					if to == 0 && n == 0 {
						time.Sleep(200 * time.Microsecond)
					}
				}
			}()
		}
		rd, wr := pipe(t)
		var pending sync.WaitGroup // timers and waiters still to finish
		submit := func(op Op) (Request, bool) {
			for {
				q, err := r.Submit(op)
				if errors.Is(err, ErrFull) {
					time.Sleep(100 * time.Microsecond)
					continue
				}
				require.NoError(t, err)
				submitted.Add(1)
				return q, true
			}
		}
		const rounds = 60
		for round := range rounds {
			// Idle: every consumer parks, and the eventfd lapses.
			time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
			for range 1 + rng.IntN(6) {
				switch k := rng.IntN(6); k {
				case 0: // a timer in the kernel (or the poll backend's)
					submit(Timeout(time.Duration(rng.IntN(3000)) * time.Microsecond))
				case 1: // a read whose byte comes from another goroutine
					q, _ := submit(Read(rd, make([]byte, 1), -1))
					pending.Add(1)
					time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, func() {
						defer pending.Done()
						_, err := unix.Write(wr, []byte{byte(round)})
						assert.NoError(t, err)
					})
					if rng.IntN(4) == 0 {
						q.Cancel() // its byte stays in the pipe for a later read
					}
				case 2: // a foreign request completed from a timer
					q, _ := submit(Foreign(nil))
					pending.Add(1)
					time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, func() {
						defer pending.Done()
						assert.NoError(t, r.Complete(q, 5, nil))
					})
				case 3: // a started request, awaited by its own goroutine
					d := time.Duration(rng.IntN(3000)) * time.Microsecond
					var q Request
					for {
						var err error
						q, err = r.Start(Timeout(d))
						if errors.Is(err, ErrFull) {
							time.Sleep(100 * time.Microsecond)
							continue
						}
						require.NoError(t, err)
						break
					}
					submitted.Add(1)
					pending.Add(1)
					go func() {
						defer pending.Done()
						c, err := q.Wait(context.Background())
						if assert.NoError(t, err) {
							assert.NoError(t, c.Err)
							note(c)
						}
					}()
				case 4: // a poll of a file that is ready at once
					submit(Poll(wr, unix.POLLOUT))
				case 5: // a timeout canceled before it fires
					q, _ := submit(Timeout(time.Hour))
					go q.Cancel()
				}
			}
		}
		deadline := time.Now().Add(20 * time.Second)
		for delivered.Load() < submitted.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		require.Equal(t, submitted.Load(), delivered.Load(),
			"completions delivered 20s after the last burst (a consumer never woken?); in flight %d", r.InFlight())
		pending.Wait()
		portWithin(t, 10*time.Second, "Close", func() { require.NoError(t, r.Close()) })
		portWithin(t, 10*time.Second, "the reapers", rg.Wait)
	})
}

// TestPort4IdleThenOneCompletion checks the simplest lost wake-up, many
// times over: every consumer is parked (several in Reap with no limit,
// one in Request.Wait for a started request) on a ring with nothing to
// reap for a while, so that the io_uring eventfd has lapsed; then one
// completion arrives from each source in turn. The consumer that takes
// it must return (eventfd-disable: notifications off, then on again,
// must never leave a completion unannounced).
func TestPort4IdleThenOneCompletion(t *testing.T) {
	port4Lapse(t, 200*time.Microsecond)
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		got := make(chan Completion, 16)
		var rg sync.WaitGroup
		for range 3 {
			rg.Add(1)
			go func() {
				defer rg.Done()
				var dst [2]Completion
				for {
					n, err := r.Reap(dst[:], -1)
					for _, c := range dst[:n] {
						got <- c
					}
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						return
					}
				}
			}()
		}
		rd, wr := pipe(t)
		efd := eventFD(t)
		sources := []struct {
			name string
			arm  func() (Request, func())
		}{
			{"pipe read", func() (Request, func()) {
				q, err := r.Submit(Read(rd, make([]byte, 1), -1))
				require.NoError(t, err)
				return q, func() { _, err := unix.Write(wr, []byte{1}); require.NoError(t, err) }
			}},
			{"eventfd poll", func() (Request, func()) {
				drainEventFD(efd)
				q, err := r.Submit(Poll(efd, unix.POLLIN))
				require.NoError(t, err)
				return q, func() { signal(t, efd) }
			}},
			{"foreign", func() (Request, func()) {
				q, err := r.Submit(Foreign(nil))
				require.NoError(t, err)
				return q, func() { require.NoError(t, r.Complete(q, 1, nil)) }
			}},
			{"timeout", func() (Request, func()) {
				q, err := r.Submit(Timeout(2 * time.Millisecond))
				require.NoError(t, err)
				return q, func() {}
			}},
			{"cancel", func() (Request, func()) {
				q, err := r.Submit(Timeout(time.Hour))
				require.NoError(t, err)
				return q, func() { require.NoError(t, q.Cancel()) }
			}},
		}
		// The eventfd lapses when the ring's idle timer finds the reaper
		// role free with no park for a while: a race with the parked
		// consumers that a loaded machine may not let it win within the
		// first 40 rounds. The rounds go on until it has lapsed and been
		// registered again at least once (checked below), within a
		// generous bound.
		lapses := r.plainBe != nil && lazyEventFD()
		regs := func() int {
			r.reapMu.Lock()
			defer r.unlockReap() // hands the role on, as a reaper leaving does
			return r.plainBe.evRegs
		}
		until := time.Now().Add(20 * time.Second)
		var lat []time.Duration
		for round := 0; round < 40 || (lapses && time.Now().Before(until) && regs() <= 1); round++ {
			src := sources[round%len(sources)]
			// A started request waited for by its own goroutine, pending
			// throughout: one more parked consumer of another kind.
			wq, err := r.Start(Timeout(time.Hour))
			require.NoError(t, err)
			waited := make(chan Completion, 1)
			go func() {
				c, err := wq.Wait(context.Background())
				assert.NoError(t, err)
				waited <- c
			}()
			q, fire := src.arm()
			time.Sleep(3 * time.Millisecond) // everyone parks; the eventfd lapses
			fired := time.Now()
			fire()
			select {
			case c := <-got:
				require.Equal(t, q, c.Req, "round %d (%s)", round, src.name)
				lat = append(lat, time.Since(fired))
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d (%s): the completion was never reaped (in flight %d)", round, src.name, r.InFlight())
			}
			require.NoError(t, wq.Cancel())
			select {
			case c := <-waited:
				require.ErrorIs(t, c.Err, ErrCanceled, "round %d: the waiter", round)
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d (%s): the waiter was never woken", round, src.name)
			}
		}
		slices.Sort(lat)
		t.Logf("latencies from the completion's cause to its delivery: %v", lat)
		if lapses {
			assert.Greater(t, regs(), 1, "the eventfd lapsed and was registered again (in %d rounds)", len(lat))
		}
		portWithin(t, 10*time.Second, "Close", func() { require.NoError(t, r.Close()) })
		portWithin(t, 10*time.Second, "the reapers", rg.Wait)
		select {
		case c := <-got:
			t.Errorf("an extra completion: %+v", c)
		default:
		}
	})
}

// TestPort4UserEventFDRead checks a read of the caller's own eventfd
// through the ring (eventfd-disable and eventfd: the ring reads a counter
// that others add to): blocking or not, it waits while 63 no-ops
// complete around it, then completes with the 8-byte counter once
// something adds to it; a semaphore eventfd gives 1 per read; a buffer
// shorter than 8 bytes is the kernel's EINVAL on both backends.
func TestPort4UserEventFDRead(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		for _, flags := range []int{0, unix.EFD_NONBLOCK, unix.EFD_SEMAPHORE} {
			t.Run(fmt.Sprintf("flags=%#x", flags), func(t *testing.T) {
				efd, err := unix.Eventfd(0, flags|unix.EFD_CLOEXEC)
				require.NoError(t, err)
				defer unix.Close(efd)
				buf := make([]byte, 8)
				q, err := r.Submit(Read(efd, buf, -1))
				require.NoError(t, err)
				ops := make([]Op, 63)
				for i := range ops {
					ops[i] = Nop().WithUser(i)
				}
				reqs := make([]Request, len(ops))
				n, err := r.SubmitBatch(ops, reqs)
				require.NoError(t, err)
				require.Equal(t, len(ops), n)
				var cs [16]Completion
				for got := 0; got < len(ops); {
					k, err := r.Reap(cs[:], 10*time.Second)
					require.NoError(t, err)
					require.NotZero(t, k, "the no-ops within 10s")
					for _, c := range cs[:k] {
						require.NotEqual(t, q, c.Req, "the eventfd read completed with nothing added: %+v", c)
						require.NoError(t, c.Err)
						got++
					}
				}
				port3Pending(t, r, "the eventfd read")
				var add [8]byte
				add[0] = 3
				_, err = unix.Write(efd, add[:])
				require.NoError(t, err)
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.NoError(t, c.Err)
				require.Equal(t, 8, c.N)
				want := byte(3)
				if flags == unix.EFD_SEMAPHORE {
					want = 1
				}
				assert.Equal(t, []byte{want, 0, 0, 0, 0, 0, 0, 0}, buf, "the counter read")
				if flags == unix.EFD_SEMAPHORE {
					c := doOp(t, r, Read(efd, buf, -1))
					require.NoError(t, c.Err)
					assert.Equal(t, byte(1), buf[0], "the second unit")
				}
				c = doOp(t, r, Read(efd, make([]byte, 4), -1))
				assert.ErrorIs(t, c.Err, unix.EINVAL, "a read of 4 bytes: %+v", c)
				assert.Zero(t, c.N)
			})
		}
	})
}
