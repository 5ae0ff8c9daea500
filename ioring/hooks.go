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
	running  atomic.Bool                    // the hook is running: re-entry and concurrent cancels skip it
	panicked atomic.Pointer[HookPanicError] // the first panic of the hook, for the completion
}

// callHook runs fr's hook, unless it is already running (a cancel from
// inside the hook, or a concurrent one: the cancel is under way), and
// recovers a panic, which it returns and records for the completion. No
// Ring lock may be held.
func callHook(fr *foreignRef) (perr *HookPanicError) {
	if fr == nil || fr.hook == nil || !fr.running.CompareAndSwap(false, true) {
		return nil
	}
	defer func() {
		if v := recover(); v != nil {
			perr = &HookPanicError{Value: v, Stack: debug.Stack()}
			fr.panicked.CompareAndSwap(nil, perr)
		}
		fr.running.Store(false)
	}()
	fr.hook()
	return nil
}

// runHooks runs every hook, whatever the others do, and returns the first
// panic as an error (nil when none panicked).
func runHooks(hooks []*foreignRef) error {
	var first error
	for _, fr := range hooks {
		if pe := callHook(fr); pe != nil && first == nil {
			first = pe
		}
	}
	return first
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

// run runs every hook (runHooks) and gives a borrowed buffer back.
func (h *hookSet) run() error {
	if h.heap == nil {
		return runHooks(h.stack[:h.n])
	}
	err := runHooks(*h.heap)
	clear(*h.heap) // the hooks' requests are free to go
	*h.heap = (*h.heap)[:0]
	hookBufs.Put(h.heap)
	h.heap = nil
	return err
}
