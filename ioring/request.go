package ioring

import (
	"context"
	"fmt"
)

// Request is a handle to a submitted request: a small value, safe to copy
// and to use from any goroutine. It names one submission only: once the
// request's completion is delivered and its slot reused, the handle goes
// stale and its methods return ErrNotFound. The zero Request is stale.
type Request struct {
	r   *Ring
	key uint64 // generation << 16 | slot index; never a pointer
}

// Completion is the result of one request, delivered exactly once.
//
// A multishot request (PollMultishot, AcceptMultishot, RecvMultishot)
// delivers any number of completions with More set, then exactly one with
// More clear, its final one: only that one ends the request and frees its
// slot. A completion with Buffer set carries a buffer of a BufRing (BufID;
// BufRing.Bytes returns its N bytes): the caller owns it until it gives it
// back with BufRing.Release.
type Completion struct {
	Req    Request
	Op     Opcode
	More   bool   // a multishot request's completion with more to come
	Buffer bool   // BufID names a buffer of the request's BufRing, now the caller's
	BufID  uint16 // the buffer's id, when Buffer is set
	N      int    // bytes transferred, poll events, an accepted fd, or 0
	Err    error  // nil, ErrCanceled, ErrTimeout, ErrNoDevice, or a syscall.Errno
	User   any    // the value given with Op.WithUser
}

// set writes the completion of slot s's one-shot request key, with result
// n and err, into c in place, field by field: a Completion literal is
// built on the stack and copied. The reap paths that deliver straight into
// a consumer's slice use it.
func (c *Completion) set(r *Ring, key uint64, s *slot, n int, err error) {
	c.Req = Request{r: r, key: key}
	c.Op, c.More, c.Buffer, c.BufID, c.N = s.code, false, false, 0, n
	c.Err, c.User = err, s.user
}

// ID returns a number that identifies this submission among all of its
// ring's, for logs and maps.
func (q Request) ID() uint64 { return q.key }

// Ring returns the ring the request was submitted to (nil for the zero
// Request).
func (q Request) Ring() *Ring { return q.r }

// String describes the request for logs.
func (q Request) String() string {
	return fmt.Sprintf("request(slot %d, gen %d)", q.key&idxMask, q.key>>idxBits)
}

func (q Request) slot() *slot {
	if q.r == nil {
		return nil
	}
	idx := q.key & idxMask
	if int(idx) >= len(q.r.slots) {
		return nil
	}
	s := &q.r.slots[idx]
	if s.key() != q.key {
		return nil
	}
	return s
}

// active reports whether the slot still holds this request, in flight.
func (q Request) active() bool {
	k, st := q.r.slots[q.key&idxMask].keyState()
	return k == q.key && st == stActive
}

// Pending reports whether the request is still in flight (accepted and not
// completed). A transport that runs a foreign request checks it after
// Submit: a request whose token was already canceled completes at once. A
// multishot request is pending until its final completion is delivered.
func (q Request) Pending() bool {
	s := q.slot()
	if s == nil {
		return false
	}
	k, st := s.keyState()
	return k == q.key && st == stActive
}

// Cancel asks for the request to be canceled and returns without waiting.
// Its completion still follows, exactly once: ErrCanceled, or its real
// result when the operation won the race. Cancel returns ErrNotFound when
// nothing is left to cancel (already completed, already canceled by any
// cause, stale or zero handle) and changes nothing then: the first cause of
// a cancel is the one its completion reports. One exception to "nothing":
// a foreign request canceled already whose cancel hook has not run yet
// (the cancel that marked it is still running the hooks before it) has its
// hook run by this Cancel, on the calling goroutine; Cancel still returns
// ErrNotFound, or the hook's *HookPanicError. (See Foreign.)
func (q Request) Cancel() error {
	if q.slot() == nil {
		return ErrNotFound
	}
	return q.r.cancelKey(q.key, flCancelReq)
}

// Wait waits for the completion of a request submitted with Start and
// returns it; it is delivered to one waiter only. When ctx ends first, Wait
// cancels the request and still waits for its completion, so that the
// buffer is free when Wait returns. Wait on a request submitted with Submit,
// or already delivered, returns ErrNotFound. It allocates nothing unless it
// has to block under a context that can end (ctx.Done() not nil): only then
// does it watch ctx, with context.AfterFunc. A nil ctx never ends: Wait
// waits as with context.Background.
func (q Request) Wait(ctx context.Context) (Completion, error) {
	r := q.r
	s := q.slot()
	// Only atomics are read before the request is known to be ours: a
	// stale handle's slot may be filled for another request meanwhile.
	if s == nil || !s.awaited.Load() || s.key() != q.key {
		return Completion{}, ErrNotFound
	}
	if ctx == nil {
		// Refusing would leave the request running with nobody to wait
		// for it, its buffer still in use: the caller's code returns on
		// the error. A nil ctx never ends, as context.Background. (Not
		// assigned to ctx: the watch's closure would move it to the heap.)
		return q.Wait(context.Background())
	}
	idx := uint32(q.key & idxMask)
	// A context ends in the cancel path; its error stays reachable from
	// the completion's (see ErrCanceled). It is watched (context.AfterFunc,
	// which allocates) only once Wait is about to block: a request that is
	// done, or completes in a first look at what is ready, needs no watch.
	done := ctx.Done()
	var stop func() bool
	watch := func() {
		if done != nil && stop == nil {
			stop = context.AfterFunc(ctx, func() { r.cancelKey(q.key, ctxFlags(ctx)) })
		}
	}
	defer func() {
		if stop != nil {
			stop()
		}
		r.handOff()
	}()
	for q.active() {
		if s.foreign.Load() {
			// Its transport completes it (Ring.Complete), which wakes us;
			// there is nothing to reap for it.
			watch()
			<-s.wake
			continue
		}
		if r.reapMu.TryLock() {
			if q.active() && !r.beClosed {
				// Reap the kernel ourselves: no hand-off to another
				// goroutine, and no wake-up from finish for our own
				// completion (selfWait).
				r.reaping.Add(1)
				r.selfWait = idx + 1
				var err error
				if done != nil && stop == nil {
					err = r.be.reap(false, 0) // what is ready, before the watch
				}
				if err == nil && q.active() {
					watch()
					err = r.be.reap(true, -1)
				}
				r.selfWait = 0
				r.reaping.Add(-1)
				r.unlockReap()
				if err != nil {
					return Completion{}, err
				}
				continue
			} else {
				r.unlockReap()
				continue
			}
		}
		// Another goroutine is reaping and will wake us, or hand the
		// reaper role on when it leaves.
		watch()
		r.parked.Add(1)
		if !q.active() || r.reapFree() {
			r.parked.Add(-1)
			continue
		}
		select {
		case <-s.wake:
		case <-r.reaperCh:
		}
		r.parked.Add(-1)
	}
	// Pass the wake-up on: other goroutines may be waiting for the same
	// request (they will find it taken). A stray token is harmless: waiters
	// re-check the state, and the next use of the slot drains it. With no
	// goroutine parked there is nobody to pass it to: one about to park
	// raises parked first and then finds the request done (the state was
	// published before the reaper's unlock, which orders it before this
	// load), so the send, and the drain it would cost the slot's next use,
	// are skipped. Waiters of a foreign request do not count themselves in
	// parked (they wait for its transport, not for a reaper), so its wake
	// is always passed on: a second waiter would otherwise wait for ever.
	if r.parked.Load() > 0 || s.foreign.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	if !s.move(q.key, stDone, stDelivering) {
		return Completion{}, ErrNotFound
	}
	var free chain
	c := r.take(idx, &free)
	r.pushFree(&free)
	return c, nil
}
