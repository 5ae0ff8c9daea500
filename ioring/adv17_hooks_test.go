//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv17HookAct is what one foreign request's cancel hook does. Those that
// cancel again complete their own request first: a hook they run may end
// the goroutine (Goexit), and every hook on it with it.
const (
	adv17CompleteOwn   = iota // Complete(own, 0, ErrCanceled)
	adv17CompleteErrno        // Complete(own, -ECANCELED, nil)
	adv17ResetToken           // Complete own, then Token.Reset
	adv17SubmitMore           // Submit a foreign request with the same token
	adv17CancelOther          // complete own, then Ring.Cancel another member
	adv17CancelAll            // complete own, then Ring.CancelAll
	adv17Panic                // complete own, then panic
	adv17Goexit               // complete own, then runtime.Goexit
	adv17ReapSome             // Reap(dst, 0) (recording what it takes), then complete own
	adv17Later                // nothing: the owner completes it afterwards
	adv17Register             // RegisterFiles/UnregisterFiles, RegisterBuffers/UnregisterBuffers
	adv17BufRing              // NewBufRing, Close
	adv17TokenCancel          // complete own, then Token.Cancel again (re-entry)
	adv17NumActs
)

// TestAdv17HookChaos: foreign requests on a token whose cancel hooks each
// do one of many things to the ring (complete, re-cancel, reset the token,
// submit, reap, panic, Goexit, register, make a BufRing), canceled by
// Token.Cancel, Ring.CancelAll, Ring.Cancel or Close from a goroutine of
// their own. Every accepted request completes exactly once; the Stats
// agree with what was delivered; Close returns.
func TestAdv17HookChaos(t *testing.T) {
	rng := adv13Rand(t)
	for round := 0; round < 12; round++ {
		seed := rng.Uint64()
		how := round % 4
		t.Run(fmt.Sprintf("round=%d/how=%d", round, how), func(t *testing.T) {
			adv13Both(t, 64, func(t *testing.T, r *Ring) []string {
				adv17HookChaos(t, r, seed, how)
				return nil
			})
		})
	}
}

func adv17HookChaos(t *testing.T, r *Ring, seed uint64, how int) {
	rng := adv13RandFrom(seed)
	l := newAdv12Ledger(t)
	rd, _ := pipe(t)
	tok := r.NewToken()

	var mu sync.Mutex
	reqs := map[int]Request{}
	later := map[int]bool{}
	actOf := map[int]int{}
	nextID := 0
	var completes atomic.Int64 // Complete calls that returned nil
	var atOnce atomic.Int64    // submitted on a canceled token
	newID := func() int {
		mu.Lock()
		defer mu.Unlock()
		nextID++
		return nextID
	}
	var submit func(act int) bool
	hookFor := func(id, act int) func() {
		return func() {
			mu.Lock()
			own := reqs[id]
			var other Request
			for oid, q := range reqs {
				if oid != id {
					other = q
					break
				}
			}
			mu.Unlock()
			completeOwn := func(n int, err error) {
				if e := r.Complete(own, n, err); e == nil {
					completes.Add(1)
				} else if !errors.Is(e, ErrNotFound) {
					t.Errorf("hook %d: Complete: %v", id, e)
				}
			}
			switch act {
			case adv17CompleteOwn:
				completeOwn(0, ErrCanceled)
			case adv17CompleteErrno:
				completeOwn(-int(syscall.ECANCELED), nil)
			case adv17ResetToken:
				completeOwn(0, ErrCanceled)
				tok.Reset() // refused while members are pending; either is fine
			case adv17SubmitMore:
				submit(adv17Later) // pending unless the token is canceled: its owner completes it
				completeOwn(0, ErrCanceled)
			case adv17CancelOther:
				completeOwn(0, ErrCanceled)
				r.Cancel(other)
			case adv17CancelAll:
				completeOwn(0, ErrCanceled)
				r.CancelAll()
			case adv17Panic:
				completeOwn(0, ErrCanceled)
				panic(fmt.Sprintf("hook %d", id))
			case adv17Goexit:
				completeOwn(0, ErrCanceled)
				runtime.Goexit()
			case adv17ReapSome:
				var dst [3]Completion
				n, err := r.Reap(dst[:], 0)
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("hook %d: Reap: %v", id, err)
				}
				for _, c := range dst[:n] {
					l.got(c, "hook reap")
				}
				completeOwn(0, ErrCanceled)
			case adv17Later:
			case adv17Register:
				if r.RegisterFiles([]int{rd}) == nil {
					r.UnregisterFiles()
				}
				if r.RegisterBuffers([][]byte{make([]byte, 64)}) == nil {
					r.UnregisterBuffers()
				}
				completeOwn(0, ErrCanceled)
			case adv17BufRing:
				if b, err := r.NewBufRing(2, 16); err == nil {
					if err := b.Close(); err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("hook %d: BufRing.Close: %v", id, err)
					}
				}
				completeOwn(0, ErrCanceled)
			case adv17TokenCancel:
				completeOwn(0, ErrCanceled)
				tok.Cancel()
			}
		}
	}
	submit = func(act int) bool {
		id := newID()
		mu.Lock() // the hook looks its request up: record it before it can run
		defer mu.Unlock()
		later[id] = act == adv17Later
		actOf[id] = act
		q, err := r.Submit(Foreign(hookFor(id, act)).WithToken(tok).WithUser(id))
		if err != nil {
			if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrFull) {
				t.Errorf("Submit %d: %v", id, err)
			}
			return false
		}
		l.accept(id, q)
		reqs[id] = q
		if !q.Pending() {
			atOnce.Add(1)
		}
		return true
	}
	for range 24 {
		submit(rng.IntN(adv17NumActs))
	}
	t.Cleanup(func() {
		// On a failure, let Close drain: complete what is left.
		mu.Lock()
		defer mu.Unlock()
		for _, q := range reqs {
			r.Complete(q, 0, ErrCanceled)
		}
	})

	// The cancel, from a goroutine a hook may end.
	done := make(chan error, 1)
	go func() {
		defer close(done)
		var err error
		switch how {
		case 0:
			err = tok.Cancel()
		case 1:
			err = r.CancelAll()
		case 2:
			mu.Lock()
			qs := make([]Request, 0, len(reqs))
			for _, q := range reqs {
				qs = append(qs, q)
			}
			mu.Unlock()
			_, err = r.Cancel(qs...)
		case 3:
			err = r.Close()
		}
		done <- err
	}()
	// The owner completes the requests whose hooks leave it to the owner;
	// the others' hooks complete them, and a hook that never runs leaves
	// its request pending.
	deadline := time.Now().Add(adv13Hang)
	for {
		mu.Lock()
		var left []int
		for id, q := range reqs {
			if !q.Pending() {
				continue
			}
			if later[id] {
				if r.Complete(q, 0, ErrCanceled) == nil {
					completes.Add(1)
				}
				continue
			}
			left = append(left, id)
		}
		mu.Unlock()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			as := make([]int, len(left))
			for i, id := range left {
				as[i] = actOf[id]
			}
			mu.Unlock()
			t.Fatalf("%d foreign requests still pending, their hooks never run: %v (acts %v)", len(left), left, as)
		}
		time.Sleep(2 * time.Millisecond)
	}
	select {
	case err, ok := <-done:
		var hp *HookPanicError
		if ok && err != nil && !errors.As(err, &hp) && !errors.Is(err, ErrClosed) {
			t.Errorf("cancel %d: %v", how, err)
		}
	case <-time.After(adv13Hang):
		t.Fatalf("cancel %d did not return within %v", how, adv13Hang)
	}
	if how == 3 {
		// A hook's Goexit leaves Close's drain to another goroutine.
		select {
		case <-r.closedCh:
		case <-time.After(adv13Hang):
			t.Fatalf("Close did not release within %v", adv13Hang)
		}
	}
	if how != 3 {
		adv12Reap(t, r, l, "reap", func() bool { return l.done() == len(l.accepted) })
	} else {
		// Closed: what is queued is still delivered, then ErrClosed.
		var dst [16]Completion
		for l.done() < len(l.accepted) {
			n, err := r.Reap(dst[:], 100*time.Millisecond)
			for _, c := range dst[:n] {
				l.got(c, "reap after close")
			}
			if err != nil {
				require.ErrorIs(t, err, ErrClosed)
				break
			}
		}
	}
	l.check()
	// Stats: every request accepted, completed, and each canceled one
	// counted.
	l.mu.Lock()
	canceled := 0
	for _, c := range l.final {
		if errors.Is(c.Err, ErrCanceled) && !errors.Is(c.Err, ErrTimeout) {
			canceled++
		}
	}
	accepted := len(l.accepted)
	l.mu.Unlock()
	assert.Equal(t, int64(accepted), completes.Load()+atOnce.Load(), "successful Completes + requests completed at submission")
	st := r.Stats()
	assert.Equal(t, uint64(accepted), st.Submitted, "Stats.Submitted")
	assert.Equal(t, uint64(accepted), st.Completed, "Stats.Completed")
	assert.Equal(t, 0, st.InFlight, "Stats.InFlight")
	assert.Equal(t, uint64(canceled), st.Canceled, "Stats.Canceled")
}
