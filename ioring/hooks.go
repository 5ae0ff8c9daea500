package ioring

import (
	"runtime/debug"
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
