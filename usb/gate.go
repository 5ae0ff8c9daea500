package usb

import "sync/atomic"

// gate counts the calls of one kind in progress (a Pump's transfers
// accepted and not yet completed, a Device's CancelAlls) and, in its top
// bit, that Close has begun. enter counts a call with a compare-and-swap
// that fails once the bit is set, so the look at the bit and the count are
// one step: a call is either counted before close sets the bit, and wait
// returns only after it left, or refused. (A sync.WaitGroup beside a flag
// lets a call that looked at the flag count itself after Wait returned.)
// Not a lock: a call that enters again from inside another (a cancel hook
// calling CancelAll) never waits for a Close waiting for the outer one.
type gate struct {
	n       atomic.Uint64
	drained chan struct{} // closed by the leave that brings the count to zero once the bit is set
}

const (
	gateClosed = 1 << 63
	gateCount  = gateClosed - 1
)

// init prepares g: before any other method, once.
func (g *gate) init() { g.drained = make(chan struct{}) }

// enter counts a call about to begin, or reports that close has begun
// (false: the call must not begin, nor leave).
func (g *gate) enter() bool {
	for {
		n := g.n.Load()
		if n&gateClosed != 0 {
			return false
		}
		if g.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// leave takes back the count of a call that ended (or, entered, did not
// begin after all); the last one after close began wakes wait. what names
// the calls for the panic of a leave without its enter.
func (g *gate) leave(what string) {
	n := g.n.Add(^uint64(0))
	if n&gateCount == gateCount {
		panic("usb: more " + what + " ended than began")
	}
	if n == gateClosed {
		close(g.drained)
	}
}

// closing reports whether close has begun.
func (g *gate) closing() bool { return g.n.Load()&gateClosed != 0 }

// close sets the closed bit and reports whether this call set it (false:
// close had begun already).
func (g *gate) close() bool { return g.n.Or(gateClosed)&gateClosed == 0 }

// wait returns once every call counted before close has left. close must
// have been called.
func (g *gate) wait() {
	if g.n.Load() != gateClosed {
		<-g.drained
	}
}
