//go:build linux

package ioring

import (
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

// Second round, everything at once (liburing's ring-leak, wakeup-hang
// and submit-reuse, run together): goroutines submit reads and writes on
// pipes and sockets, nops, timeouts and foreign requests, with tokens,
// deadlines and contexts; others cancel them by every means and reap
// with every kind of timeout; Close comes at a random moment while the
// submitters still run. Every accepted request completes exactly once,
// every refused one was refused with ErrClosed (or ErrFull), nothing is
// left blocked, and no goroutine or fd outlives the ring (TestMain's
// goleak, forEachBackend's fd check).

func TestPort2ChaosCloseAtRandom(t *testing.T) {
	for round := range 3 {
		forEachBackend(t, 64, func(t *testing.T, r *Ring) {
			port2Chaos(t, r, uint64(round))
		})
	}
}

func port2Chaos(t *testing.T, r *Ring, seed uint64) {
	rd, wr := pipe(t)
	sa, sb := socketpair(t, unix.SOCK_STREAM)
	var (
		accepted  sync.Map // user id -> *atomic.Int32 (completions)
		nAccepted atomic.Int64
		nextID    atomic.Int64
		live      sync.Map // user id -> Request, for the cancelers
		toks      = []*Token{r.NewToken(), r.NewToken(), r.NewToken()}
		wg        sync.WaitGroup
		closing   = make(chan struct{})
	)
	noteDone := func(c Completion) {
		v, ok := accepted.Load(c.User)
		if !assert.True(t, ok, "completion of a request never accepted: %+v", c) {
			return
		}
		if n := v.(*atomic.Int32).Add(1); n != 1 {
			t.Errorf("request %v completed %d times", c.User, n)
		}
		live.Delete(c.User)
		if c.Err != nil && c.Op != OpForeign {
			if !isCancel(c.Err) {
				// A pipe or socket can say EAGAIN/EPIPE only if the test's
				// own pumps misbehave; anything else is the engine's.
				assert.True(t, errors.Is(c.Err, unix.EAGAIN), "completion %+v", c)
			}
		}
	}
	// Registered before the submission (its completion may come before
	// Submit returns), and taken back when it is refused.
	register := func(id int64) { accepted.Store(id, new(atomic.Int32)) }
	settle := func(id int64, err error) {
		if err != nil {
			accepted.Delete(id)
			return
		}
		nAccepted.Add(1)
	}

	// Pumps: keep data flowing so that reads complete now and then.
	wg.Add(1)
	go func() {
		defer wg.Done()
		var buf [256]byte
		for {
			select {
			case <-closing:
				return
			default:
			}
			unix.SendmsgN(sb, buf[:64], nil, nil, unix.MSG_DONTWAIT)
			unix.Recvfrom(sb, buf[:], unix.MSG_DONTWAIT)
			unix.Write(wr, buf[:32])
			time.Sleep(200 * time.Microsecond)
		}
	}()

	submitter := func(g int) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, uint64(g)))
		for {
			select {
			case <-closing:
				// Keep submitting a little after Close began: each is
				// refused with ErrClosed or accepted and then completed.
				if rng.IntN(20) == 0 {
					return
				}
			default:
			}
			id := nextID.Add(1)
			var op Op
			switch rng.IntN(7) {
			case 0:
				op = Read(rd, make([]byte, 1+rng.IntN(64)), -1)
			case 1:
				op = Recv(sa, make([]byte, 1+rng.IntN(64)), 0)
			case 2:
				op = Send(sa, make([]byte, 1+rng.IntN(64)), unix.MSG_NOSIGNAL)
			case 3:
				op = Timeout(time.Duration(rng.IntN(500)) * time.Microsecond)
			case 4:
				op = Poll(rd, unix.POLLIN)
			case 5:
				// Foreign: the hook completes it inline, or a transport
				// goroutine after a while; whoever is second finds it gone.
				var mu sync.Mutex
				var self Request
				complete := func() {
					mu.Lock()
					q := self
					mu.Unlock()
					if err := r.Complete(q, 0, ErrCanceled); err != nil {
						assert.ErrorIs(t, err, ErrNotFound)
					}
				}
				op = Foreign(complete)
				mu.Lock()
				register(id)
				q, err := r.Submit(op.WithUser(id))
				port2ChaosRefused(t, err)
				settle(id, err)
				if err == nil {
					self = q
					live.Store(id, q)
				}
				mu.Unlock()
				if err == nil {
					d := time.Duration(rng.IntN(2000)) * time.Microsecond
					wg.Add(1)
					go func() {
						defer wg.Done()
						time.Sleep(d)
						if err := r.Complete(q, 3, nil); err != nil {
							assert.ErrorIs(t, err, ErrNotFound)
						}
					}()
				}
				continue
			default:
				op = Nop()
			}
			if rng.IntN(3) == 0 {
				op = op.WithToken(toks[rng.IntN(len(toks))])
			}
			if rng.IntN(4) == 0 {
				op = op.WithDeadline(time.Duration(1+rng.IntN(1000)) * time.Microsecond)
			}
			op = op.WithUser(id)
			if rng.IntN(4) == 0 {
				// Synchronous, under a context that may end.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(1000))*time.Microsecond)
				register(id)
				q, err := r.Start(op)
				port2ChaosRefused(t, err)
				settle(id, err)
				if err == nil {
					c, err := q.Wait(ctx)
					if assert.NoError(t, err, "Wait") {
						noteDone(c)
					}
				}
				cancel()
				continue
			}
			register(id)
			q, err := r.Submit(op)
			port2ChaosRefused(t, err)
			settle(id, err)
			if err == nil {
				live.Store(id, q)
			}
			if errors.Is(err, ErrFull) {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	canceler := func(g int) {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 100+uint64(g)))
		for {
			select {
			case <-closing:
				return
			default:
			}
			switch rng.IntN(10) {
			case 0:
				tok := toks[rng.IntN(len(toks))]
				tok.Cancel()
				if rng.IntN(2) == 0 {
					tok.Reset() // refused while members are pending
				}
			case 1:
				r.CancelAll()
			default:
				var batch []Request
				live.Range(func(_, v any) bool {
					if rng.IntN(3) == 0 {
						batch = append(batch, v.(Request))
					}
					return len(batch) < 8
				})
				if rng.IntN(2) == 0 {
					r.Cancel(batch...)
				} else {
					for _, q := range batch {
						q.Cancel()
					}
				}
			}
			time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
		}
	}
	reapersDone := make(chan struct{})
	var rg sync.WaitGroup
	for g := range 3 {
		rg.Add(1)
		go func() {
			defer rg.Done()
			timeouts := []time.Duration{0, time.Nanosecond, 200 * time.Microsecond, -1}
			var dst [5]Completion
			for i := 0; ; i++ {
				n, err := r.Reap(dst[:1+(g+i)%5], timeouts[(g+i)%4])
				for _, c := range dst[:n] {
					noteDone(c)
				}
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed)
					return
				}
			}
		}()
	}
	go func() { rg.Wait(); close(reapersDone) }()

	for g := range 3 {
		wg.Add(1)
		go submitter(g)
	}
	for g := range 2 {
		wg.Add(1)
		go canceler(g)
	}
	rng := rand.New(rand.NewPCG(seed, 999))
	time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
	close(closing)
	portWithin(t, 10*time.Second, "Close", func() {
		if err := r.Close(); err != nil {
			assert.ErrorIs(t, err, ErrClosed)
		}
	})
	portWithin(t, 10*time.Second, "the submitters, cancelers and transports", wg.Wait)
	select {
	case <-reapersDone:
	case <-time.After(10 * time.Second):
		t.Fatal("the reapers did not end after Close")
	}
	// Every accepted request completed exactly once.
	missing := 0
	accepted.Range(func(k, v any) bool {
		if v.(*atomic.Int32).Load() == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("request %v accepted and never completed", k)
			}
		}
		return true
	})
	assert.Zero(t, missing)
	assert.Zero(t, r.InFlight())
	st := r.Stats()
	assert.Equal(t, uint64(nAccepted.Load()), st.Submitted, "Stats.Submitted vs the requests accepted")
	assert.Equal(t, st.Submitted, st.Completed)
	t.Logf("%d requests accepted; %d canceled, %d timed out", nAccepted.Load(), st.Canceled, st.TimedOut)
}

// port2ChaosRefused checks a submission's error in the chaos test: none,
// or a refusal that a closing or full ring gives.
func port2ChaosRefused(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrFull) {
		require.NoError(t, err)
	}
}
