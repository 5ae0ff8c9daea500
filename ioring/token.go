package ioring

import (
	"context"
	"fmt"
	"sync"
)

// Token is a cancel token: it covers every request submitted with it (one
// request, or a group such as all of a device's I/O). Cancel cancels them
// all, including those queued and not yet handed to the kernel, and every
// later request submitted with it, which then completes with ErrCanceled
// without reaching the kernel. A Token belongs to the Ring that made it and
// is safe for concurrent use.
type Token struct {
	r        *Ring
	mu       sync.Mutex
	canceled bool   // guarded by mu
	why      uint32 // the cancel's flags, for later members; guarded by mu
	head     int32  // first member slot, -1 if none; guarded by mu
	n        int    // members; guarded by mu
}

// NewToken returns a new, uncanceled token for requests on r.
func (r *Ring) NewToken() *Token { return &Token{r: r, head: -1} }

// Canceled reports whether Cancel was called.
func (t *Token) Canceled() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.canceled
}

// Pending returns how many requests submitted with t have not completed.
func (t *Token) Pending() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Cancel cancels every request submitted with t that has not completed and
// marks t canceled for the future. It requests and returns: the requests'
// completions follow, each exactly once. The cancels of all members reach
// the kernel in one batch. Calling it again is harmless. It returns
// ErrClosed only when the ring was closed (whose Close canceled
// everything), an error wrapping ErrInvalid for a Token not made by
// Ring.NewToken, and a *HookPanicError when a member's cancel hook that it
// ran panicked (the other members' hooks still ran).
//
// It runs the foreign members' cancel hooks on the calling goroutine, once
// unlocked, oldest member first, each hook once (see Foreign): a hook
// another cancel claimed first (running, or run) is skipped, and a member
// canceled before whose hook has not run yet has it run here (a second
// Cancel from one member's hook runs the hooks of the members after it at
// once, instead of leaving them to the first Cancel).
func (t *Token) Cancel() error { return t.cancel(flCancelReq) }

func (t *Token) cancel(f uint32) error {
	if t == nil || t.r == nil {
		return errNoToken("cancel")
	}
	r := t.r
	if r.be == nil {
		return errNoRing("cancel", r)
	}
	r.sqMu.Lock()
	t.mu.Lock()
	if !t.canceled {
		t.canceled, t.why = true, f
	}
	if r.beDead {
		t.mu.Unlock()
		r.sqMu.Unlock()
		return ErrClosed
	}
	// Collect the members under t.mu, cancel them after: the backend may
	// need to reap to make room, and reapers take t.mu.
	reqs := r.cancelReqs[:0]
	for i := t.head; i >= 0; i = r.slots[i].tokNext {
		if key, st := r.slots[i].keyState(); st == stActive {
			reqs = append(reqs, Request{r: r, key: key})
		}
	}
	t.mu.Unlock()
	r.cancelReqs = reqs[:0] // reqs stays valid: nobody appends to it while r.sqMu is held
	if b := r.plainBe; b != nil {
		// Most of them, or all (cancelRequests). When it went past some it
		// did not cancel (canceled before: a second Cancel), cancelLocked
		// looks at them all again, for a foreign one's hook still to run.
		m, rest := b.cancelPlains(f, reqs)
		if m == len(reqs)-len(rest) {
			reqs = rest
		}
		if len(reqs) == 0 {
			b.flush()
			r.unlockSQ()
			return nil
		}
	}
	// Members are listed newest first; the oldest is the likeliest to be
	// in progress (a USB transfer on the bus while later ones wait), and
	// its cancel the slowest: its hook runs first.
	_, err := r.cancelRest(f, 0, reqs, true)
	return err
}

// Bind cancels t when ctx ends. Calling stop detaches it (see
// context.AfterFunc).
//
// When ctx ends, its members complete with an error that matches both
// ErrCanceled (ErrTimeout for a deadline) and ctx's own error, as requests
// canceled by a context always do. A ctx that has already ended cancels t
// before Bind returns, so nothing submitted with t afterwards starts. A nil
// ctx never ends: it binds nothing.
func (t *Token) Bind(ctx context.Context) (stop func() bool) {
	if ctx == nil { // as context.Background
		return func() bool { return true }
	}
	if ctx.Err() != nil {
		t.cancel(ctxFlags(ctx))
		return func() bool { return false }
	}
	stop = context.AfterFunc(ctx, func() { t.cancel(ctxFlags(ctx)) })
	if ctx.Err() != nil {
		// It ended meanwhile: AfterFunc's goroutine may not have run
		// yet, and a request submitted once Bind returned could start.
		// A second cancel changes nothing.
		t.cancel(ctxFlags(ctx))
	}
	return stop
}

// errNoToken refuses op on a nil or zero Token.
func errNoToken(op string) error { return errNotMade(op, "Token", "Ring.NewToken") }

// link adds slot idx to t's members. t.mu held.
func (t *Token) link(r *Ring, idx uint32) {
	s := &r.slots[idx]
	s.tokPrev = -1
	s.tokNext = t.head
	if t.head >= 0 {
		r.slots[t.head].tokPrev = int32(idx)
	}
	t.head = int32(idx)
	t.n++
}

// unlink removes slot idx from t's members. t.mu held.
func (t *Token) unlink(r *Ring, idx uint32) {
	s := &r.slots[idx]
	if s.tokPrev >= 0 {
		r.slots[s.tokPrev].tokNext = s.tokNext
	} else if t.head == int32(idx) {
		t.head = s.tokNext
	} else {
		return // not a member
	}
	if s.tokNext >= 0 {
		r.slots[s.tokNext].tokPrev = s.tokPrev
	}
	s.tokPrev, s.tokNext = -1, -1
	t.n--
}

// Reset makes a canceled t usable again, for a new group of requests, so
// that a driver that cancels often need not allocate a token each time. It
// fails (with an error wrapping ErrInvalid) while requests submitted with t
// have not completed (Pending > 0): a request of the old group could
// otherwise escape its cancel.
func (t *Token) Reset() error {
	if t == nil || t.r == nil {
		return errNoToken("reset")
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n > 0 {
		return &OpError{Op: "reset", Err: fmt.Errorf("%w: %d requests of the token still pending", ErrInvalid, t.n)}
	}
	t.canceled, t.why = false, 0
	return nil
}
