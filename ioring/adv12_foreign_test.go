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
)

// TestAdv12ForeignCompleteRaces runs foreign requests whose owners post
// results at random moments, from several goroutines at once (a second
// Complete of one request among them), while cancels, tokens, deadlines,
// CancelAll and, at the end, Close race them; some cancel hooks complete
// their request synchronously (from inside the hook), some complete it
// twice, some cancel it again, some panic. Then Stats must agree with
// what was delivered.
//
// Checked: exactly one Complete per request returns nil (the others
// ErrNotFound, or ErrClosed after Close), and its completion carries what
// that call posted (a real result as posted; a cancel as the first
// cause: ErrTimeout for a deadline); each hook runs at most once and only
// for a request that was canceled; Stats.Submitted == Completed, and
// Canceled and TimedOut count what was delivered.
func TestAdv12ForeignCompleteRaces(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			seed := adv12Seed(t)
			for round := range 4 {
				adv12ForeignRound(t, b, seed+uint64(round))
				if t.Failed() {
					return
				}
			}
		})
	}
}

type adv12Foreign struct {
	id       int
	q        Request
	ready    chan struct{} // closed once q is set
	hookRuns atomic.Int32
	hookKind int // 0: nothing, 1: complete in the hook, 2: complete twice in the hook, 3: cancel again, 4: panic
	deadline bool
	token    bool
	wins     atomic.Int32 // Complete calls that returned nil
	winN     atomic.Int64
	winErr   atomic.Value // error posted by the winning Complete (wrapped)
}

type adv12ErrBox struct{ err error }

func adv12ForeignRound(t *testing.T, b Backend, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 51))
	r := adv12Ring(t, b, 256)
	l := newAdv12Ledger(t)
	toks := []*Token{r.NewToken(), r.NewToken()}
	var closed atomic.Bool

	const n = 200
	fs := make([]*adv12Foreign, n)
	complete := func(f *adv12Foreign, nb int, err error) {
		e := r.Complete(f.q, nb, err)
		switch {
		case e == nil:
			if f.wins.Add(1) == 1 {
				f.winN.Store(int64(nb))
				f.winErr.Store(adv12ErrBox{err})
			}
		case errors.Is(e, ErrNotFound):
		case errors.Is(e, ErrClosed) && closed.Load():
		default:
			t.Errorf("Complete: %v", e)
		}
	}
	for i := range fs {
		f := &adv12Foreign{id: i, ready: make(chan struct{}), hookKind: rng.IntN(5), deadline: rng.IntN(5) == 0}
		fs[i] = f
	}
	// Submit them all, each with its hook, from a few goroutines.
	var swg sync.WaitGroup
	for w := range 4 {
		swg.Add(1)
		wrng := rand.New(rand.NewPCG(seed, uint64(60+w)))
		go func() {
			defer swg.Done()
			for i := w; i < n; i += 4 {
				f := fs[i]
				hook := func() {
					f.hookRuns.Add(1)
					<-f.ready
					switch f.hookKind {
					case 1:
						complete(f, 0, ErrCanceled)
					case 2:
						complete(f, 0, ErrCanceled)
						complete(f, 3, nil)
					case 3:
						f.q.Cancel()
						complete(f, 0, ErrCanceled)
					case 4:
						panic("adv12 hook")
					}
				}
				op := Foreign(hook)
				switch wrng.IntN(4) {
				case 0:
					op = op.WithToken(toks[wrng.IntN(len(toks))])
					f.token = true
				}
				if f.deadline {
					op = op.WithDeadline(time.Duration(1+wrng.IntN(3000)) * time.Microsecond)
				}
				q, err := r.Submit(op.WithUser(i))
				if err != nil {
					t.Errorf("Submit: %v", err)
					close(f.ready)
					continue
				}
				f.q = q
				l.accept(i, q)
				close(f.ready)
			}
		}()
	}
	// The owners: post results at random moments, sometimes twice, from
	// two goroutines.
	var owg sync.WaitGroup
	for w := range 2 {
		owg.Add(1)
		orng := rand.New(rand.NewPCG(seed, uint64(70+w)))
		go func() {
			defer owg.Done()
			for _, i := range orng.Perm(n) {
				f := fs[i]
				<-f.ready
				if f.q == (Request{}) {
					continue
				}
				if orng.IntN(3) == 0 {
					time.Sleep(time.Duration(orng.IntN(300)) * time.Microsecond)
				}
				if orng.IntN(2) == 0 {
					complete(f, 1+f.id, nil)
				} else if orng.IntN(2) == 0 {
					complete(f, -5, nil) // EIO, no bytes
				}
			}
		}()
	}
	// The cancels.
	cstop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		crng := rand.New(rand.NewPCG(seed, 80))
		for {
			select {
			case <-cstop:
				return
			case <-time.After(time.Duration(crng.IntN(500)) * time.Microsecond):
			}
			var err error
			switch x := crng.IntN(20); {
			case x < 14:
				f := fs[crng.IntN(n)]
				select {
				case <-f.ready:
				default:
					continue
				}
				err = f.q.Cancel()
				if errors.Is(err, ErrNotFound) {
					err = nil
				}
			case x < 16:
				f, g := fs[crng.IntN(n)], fs[crng.IntN(n)]
				select {
				case <-f.ready:
				default:
					continue
				}
				select {
				case <-g.ready:
				default:
					continue
				}
				_, err = r.Cancel(f.q, g.q)
			case x < 19:
				err = toks[crng.IntN(len(toks))].Cancel()
			default:
				err = r.CancelAll()
			}
			var hp *HookPanicError
			if err != nil && !errors.As(err, &hp) && !(errors.Is(err, ErrClosed) && closed.Load()) {
				t.Errorf("cancel: %v", err)
			}
		}
	}()
	swg.Wait()
	// Half the rounds close the ring while all this goes on; the others
	// let the owners finish and then complete what is left.
	closeNow := rng.IntN(2) == 0
	var closeErr error
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		dst := make([]Completion, 16)
		for {
			m, err := r.Reap(dst, 20*time.Millisecond)
			for _, c := range dst[:m] {
				l.got(c, "reap")
			}
			if err != nil {
				if !errors.Is(err, ErrClosed) {
					t.Errorf("Reap: %v", err)
				}
				return
			}
			if !closed.Load() && l.done() == n {
				return
			}
		}
	}()
	if closeNow {
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		// Close waits for every foreign request: its owners must finish.
		done := make(chan error, 1)
		go func() {
			closed.Store(true)
			done <- r.Close()
		}()
		owg.Wait()
		// Complete whatever no owner and no hook completed.
		for _, f := range fs {
			if f.wins.Load() == 0 {
				complete(f, 0, ErrCanceled)
			}
		}
		select {
		case closeErr = <-done:
		case <-time.After(adv12Hang):
			t.Fatalf("seed %d: Close did not return", seed)
		}
		var hp *HookPanicError
		if closeErr != nil && !errors.As(closeErr, &hp) {
			t.Errorf("seed %d: Close: %v", seed, closeErr)
		}
	} else {
		owg.Wait()
		for _, f := range fs {
			if f.wins.Load() == 0 {
				complete(f, 0, ErrCanceled)
			}
		}
	}
	select {
	case <-reaped:
	case <-time.After(adv12Hang):
		t.Fatalf("seed %d: completions missing: %d of %d", seed, l.done(), n)
	}
	close(cstop)
	cwg.Wait()
	l.check()

	// Each request: one winning Complete, and its completion says what
	// it posted.
	var canceled, timedOut uint64
	for _, f := range fs {
		if f.q == (Request{}) {
			continue
		}
		c := l.final[f.id]
		switch {
		case errors.Is(c.Err, ErrTimeout):
			timedOut++
		case errors.Is(c.Err, ErrCanceled):
			canceled++
		}
		if w := f.wins.Load(); w == 0 && f.token && errors.Is(c.Err, ErrCanceled) && f.hookRuns.Load() == 0 {
			continue // submitted with a canceled token: completed at once, without its owner
		} else if w != 1 {
			t.Errorf("seed %d: foreign %d: %d Complete calls returned nil; delivered %s (token %v, hook ran %d)", seed, f.id, w, adv12Res(c), f.token, f.hookRuns.Load())
			continue
		}
		if h := f.hookRuns.Load(); h > 1 {
			t.Errorf("seed %d: foreign %d: hook ran %d times", seed, f.id, h)
		}
		posted := f.winErr.Load().(adv12ErrBox).err
		pn := int(f.winN.Load())
		cerr := c.Err
		var hp *HookPanicError
		if errors.As(c.Err, &hp) {
			// The hook panicked and the owner posted after it: the
			// completion carries the panic, wrapping what was posted.
			if f.hookKind != 4 || f.hookRuns.Load() != 1 {
				t.Errorf("seed %d: foreign %d: a hook panic delivered, hook kind %d ran %d times", seed, f.id, f.hookKind, f.hookRuns.Load())
			}
			cerr = hp.Err
		}
		switch {
		case posted == nil && pn > 0:
			if cerr != nil || c.N != pn {
				t.Errorf("seed %d: foreign %d: posted n=%d, delivered %s", seed, f.id, pn, adv12Res(c))
			}
		case posted == nil && pn < 0:
			if c.N != 0 || cerr == nil || errors.Is(cerr, ErrCanceled) {
				t.Errorf("seed %d: foreign %d: posted n=%d, delivered %s", seed, f.id, pn, adv12Res(c))
			}
		default: // a cancel was posted
			if !errors.Is(cerr, ErrCanceled) {
				t.Errorf("seed %d: foreign %d: posted a cancel, delivered %s", seed, f.id, adv12Res(c))
			}
			if errors.Is(cerr, ErrTimeout) && !f.deadline {
				t.Errorf("seed %d: foreign %d: no deadline, delivered %s", seed, f.id, adv12Res(c))
			}
		}
	}
	assert.Eventually(t, func() bool { return r.InFlight() == 0 }, adv12Hang, time.Millisecond)
	st := r.Stats()
	assert.Equal(t, uint64(n), st.Submitted, "seed %d: Stats %+v", seed, st)
	assert.Equal(t, st.Submitted, st.Completed, "seed %d: Stats %+v", seed, st)
	assert.Equal(t, canceled, st.Canceled, "seed %d: Stats.Canceled vs delivered (Stats %+v)", seed, st)
	assert.Equal(t, timedOut, st.TimedOut, "seed %d: Stats.TimedOut vs delivered (Stats %+v)", seed, st)
	for _, tk := range toks {
		assert.Zero(t, tk.Pending())
	}
	if !closeNow {
		require.NoError(t, r.Close())
	}
	// After Close: Complete of any of them finds nothing.
	for _, f := range fs[:10] {
		e := r.Complete(f.q, 1, nil)
		assert.True(t, errors.Is(e, ErrNotFound) || errors.Is(e, ErrClosed), "Complete after Close: %v", e)
	}
	t.Logf("seed %d: close during: %v; canceled %d, timed out %d", seed, closeNow, canceled, timedOut)
}
