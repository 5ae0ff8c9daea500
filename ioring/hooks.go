package ioring

import (
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
)

// foreignRef names a foreign request's cancel hook together with the key of
// the request it belongs to, so that a late cancel never calls the hook of
// the slot's next request. It is made anew for every foreign submission,
// so its address names that one submission: Ring.Complete claims the
// request by swapping the slot's reference for nil, one atomic step that
// checks the key and claims at once.
type foreignRef struct {
	key      uint64
	hook     func()
	claimed  atomic.Bool                    // a cancel took the hook's one run (callHook)
	panicked atomic.Pointer[HookPanicError] // the hook's panic, for the completion
}

// callHook runs fr's hook unless a cancel claimed it before, and recovers a
// panic, which it returns and records for the completion. The hook runs
// once per request, by whichever cancel claims it first: the cancel that
// collected it, when it comes to it, or any cancel of the request in the
// meantime (one that finds it canceled already, from another hook of the
// same cancel, say), so that no cancel waits for another to run it. A
// cancel that finds it claimed (running, or run) skips it. No Ring lock may
// be held.
func callHook(fr *foreignRef) (perr *HookPanicError) {
	if fr == nil || fr.hook == nil || !fr.claimed.CompareAndSwap(false, true) {
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			perr = &HookPanicError{Value: v, Stack: debug.Stack()}
			fr.panicked.Store(perr)
		}
	}()
	fr.hook()
	return nil
}

// pendingHook returns the cancel hook of foreign slot s's request with key
// while it is still to run (no cancel claimed it), else nil.
func (s *slot) pendingHook(key uint64) *foreignRef {
	if fr := s.fref.Load(); fr != nil && fr.key == key && fr.hook != nil && !fr.claimed.Load() {
		return fr
	}
	return nil
}

// runHooks runs every hook, whatever the others do, and returns the first
// panic as an error (nil when none panicked).
//
// A hook may also end its goroutine (runtime.Goexit, which testing's
// FailNow calls): that ends the caller's goroutine too, which cannot be
// helped, but not the cancel. The hooks after it run on a new goroutine,
// and then after, when not nil: what the caller had still to do (Close's
// drain).
func runHooks(hooks []*foreignRef, after func()) error {
	if len(hooks) == 0 {
		return nil
	}
	var first error
	i := 0
	defer func() {
		if i < len(hooks) { // hook i did not return
			// Copied: the caller's array (hookSet.stack) must not escape.
			rest := append([]*foreignRef(nil), hooks[i+1:]...)
			go finishHooks(rest, after)
		}
	}()
	for ; i < len(hooks); i++ {
		if pe := callHook(hooks[i]); pe != nil && first == nil {
			first = pe
		}
	}
	return first
}

// finishHooks runs the hooks a goroutine that ended left, then after (if
// one of them ends this goroutine too, the next one takes over).
func finishHooks(hooks []*foreignRef, after func()) {
	runHooks(hooks, after)
	if after != nil {
		after()
	}
}

// hookSet gathers the cancel hooks a cancel runs once the ring's locks are
// released: up to len(stack) in the set itself (on the canceling
// goroutine's stack), more (a token over 64 queued USB transfers) in a
// buffer from hookBufs, so that no cancel (Token.Cancel, Ring.Cancel,
// Ring.CancelAll) allocates in steady state. Its methods never let the set
// escape.
type hookSet struct {
	stack [16]*foreignRef
	n     int
	heap  *[]*foreignRef // from hookBufs, once stack is full
}

// hookBufs holds the buffers of cancels with more hooks than hookSet.stack.
var hookBufs = sync.Pool{New: func() any { b := make([]*foreignRef, 0, 64); return &b }}

func (h *hookSet) add(fr *foreignRef) {
	switch {
	case h.heap != nil:
		*h.heap = append(*h.heap, fr)
	case h.n < len(h.stack):
		h.stack[h.n] = fr
		h.n++
	default:
		h.heap = hookBufs.Get().(*[]*foreignRef)
		*h.heap = append(append((*h.heap)[:0], h.stack[:]...), fr)
	}
}

// reverse puts the hooks in the opposite order.
func (h *hookSet) reverse() {
	if h.heap != nil {
		slices.Reverse(*h.heap)
		return
	}
	slices.Reverse(h.stack[:h.n])
}

// run runs every hook (runHooks, which calls after only when a hook ended
// the goroutine) and gives a borrowed buffer back.
func (h *hookSet) run(after func()) error {
	if h.heap == nil {
		return runHooks(h.stack[:h.n], after)
	}
	err := runHooks(*h.heap, after)
	clear(*h.heap) // the hooks' requests are free to go
	*h.heap = (*h.heap)[:0]
	hookBufs.Put(h.heap)
	h.heap = nil
	return err
}
