package ioring

import (
	"sync"
	"sync/atomic"
	"time"
)

// Held requests: accepted (stActive) but not in the backend. A request is
// held while it waits its turn on a stream (see "Order" in the package doc)
// or while it waits to be handed to the kernel again because the kernel
// ended it without being asked (see "Threads" in the package doc). Held
// requests carry flHeld; they are canceled by the Ring itself, at once and
// without the kernel.
//
// Requests are handed (back) to the backend from a list of deferred
// submissions, because whoever decides it (a completion, on the reaper or a
// backend goroutine) may not take r.sqMu: the reaper holds r.reapMu, which
// is taken after r.sqMu. The list is drained by whoever holds r.sqMu next:
// unlockSQ drains it before it releases the lock and looks again after, so
// an entry pushed while another goroutine held the lock is never stranded
// (the pusher tries the lock after the push; when that fails, the holder's
// look after its unlock sees the entry).

// deferList is the list of deferred submissions: entries are kind << kindShft
// | key, kindReq to hand a held request to the backend, kindCancel to send a
// cancel to the kernel for a request whose deadline the kernel lost.
type deferList struct {
	mu    sync.Mutex
	n     atomic.Int32 // len(list), readable without mu
	list  []uint64     // guarded by mu
	spare []uint64     // guarded by r.sqMu: the drainer's copy
}

// pushDeferred adds an entry for slot key. Any goroutine; no Ring lock
// needed. The caller then calls submitDeferred unless it holds r.reapMu
// (unlockReap does it then).
func (r *Ring) pushDeferred(kind, key uint64) {
	d := &r.def
	d.mu.Lock()
	d.list = append(d.list, kind<<kindShft|key)
	d.n.Store(int32(len(d.list)))
	d.mu.Unlock()
}

// submitDeferred drains the deferred submissions when r.sqMu is free. When
// it is not, its holder drains them (unlockSQ). Never call it with
// r.reapMu held: draining may flush, and a flush may reap.
func (r *Ring) submitDeferred() {
	if r.def.n.Load() > 0 {
		r.submitDeferredSlow()
	}
}

func (r *Ring) submitDeferredSlow() {
	if r.sqMu.TryLock() {
		r.unlockSQ()
	}
}

// unlockSQ releases r.sqMu, draining the deferred submissions first, and
// again after the unlock when more arrived meanwhile.
func (r *Ring) unlockSQ() {
	for {
		kick := false
		if r.def.n.Load() > 0 {
			kick = r.drainDeferred()
			r.flushLocked()
		}
		// Only the io_uring backend hands its flush to the kernel after
		// the unlock (the poll backend's flush starts requests itself).
		b := r.plainBe
		enter := b != nil && b.enterTicket()
		r.sqMu.Unlock()
		if enter {
			b.enter()
		}
		if kick {
			r.kick()
		}
		if r.def.n.Load() == 0 || !r.sqMu.TryLock() {
			return
		}
	}
}

// drainDeferred runs every deferred entry and reports whether a request
// completed outside the backend (the caller kicks reapers). r.sqMu held.
func (r *Ring) drainDeferred() bool {
	d := &r.def
	kick := false
	for d.n.Load() > 0 {
		d.mu.Lock()
		batch := d.list
		d.list = d.spare[:0]
		d.n.Store(0)
		d.mu.Unlock()
		for _, e := range batch {
			kick = r.runDeferred(e>>kindShft, e&keyMask) || kick
		}
		d.spare = batch[:0]
	}
	return kick
}

// runDeferred runs one deferred entry. r.sqMu held.
func (r *Ring) runDeferred(kind, key uint64) bool {
	idx := uint32(key & idxMask)
	s := &r.slots[idx]
	if k, st := s.keyState(); k != key || st != stActive {
		return false // stale: completed meanwhile
	}
	if kind == kindCancel {
		if !r.beDead {
			r.be.cancel(idx, key)
		}
		return false
	}
	f := s.flags.Load()
	s.flags.And(^uint32(flHeld | flRetry))
	if f&flCancelReq != 0 || r.closed.Load() || r.beDead {
		s.flags.Or(flCancelReq | flNopped)
		r.complete(idx, -int32(eCanceled))
		return true
	}
	if s.deadline > 0 && !s.timerDL {
		// Submitted again after the kernel dropped it: the rest of its
		// deadline is enforced by a timer from now on.
		left := s.deadline - (time.Since(epoch) - s.start)
		if left <= 0 {
			s.flags.Or(flCancelReq | flTimedOut | flNopped)
			r.complete(idx, -int32(eCanceled))
			return true
		}
		s.timerDL = true
		r.armTimer(s, key, left)
	}
	if s.retries > 0 {
		// Submitted again: the thread that enters it next is, as a
		// rule, this one (unlockSQ drains, then enters).
		s.retryTID = threadID()
	}
	if err := r.be.submit(idx, s); err != nil {
		s.flags.Or(flNopped)
		r.complete(idx, -int32(eInval))
		return true
	}
	return false
}

// epoch is the origin of slot.start, a monotonic clock reading.
var epoch = time.Now()

// ordKey names the stream a request is ordered on: its fd and direction.
type ordKey uint64

// ordList is the FIFO of the ordered requests of one stream, linked
// through slot.ordPrev/ordNext; its head is the one in the backend.
type ordList struct{ head, tail int32 }

// ordDense bounds the keys that ordTable keeps in its slice: the streams
// of fds below 4096 (64 KiB of table at the most).
const ordDense = 2 * 4096

// ordTable holds the FIFO of each stream that has ordered requests. Most
// fds are small numbers: their streams live in a slice indexed by key,
// grown on demand, so that a request costs no map insert and delete (a
// request alone on its stream, as a driver's reads of several devices
// are, would cost both). Other keys (large fds, registered files) go in a
// map. Guarded by Ring.ordMu.
type ordTable struct {
	dense  []ordList // by key; {-1, -1}: empty
	sparse map[ordKey]ordList
}

// load returns the FIFO of stream k and, when it lives in the dense table,
// its cell there, which store then updates in place (every completion of
// an ordered request loads and stores its stream).
func (t *ordTable) load(k ordKey) (ordList, *ordList) {
	if k < ordKey(len(t.dense)) {
		return t.dense[k], &t.dense[k]
	}
	return t.get(k), nil
}

// store saves l as the FIFO of stream k, into at when load returned a cell.
func (t *ordTable) store(k ordKey, at *ordList, l ordList) {
	if at != nil {
		*at = l
		return
	}
	t.put(k, l)
}

// get returns the FIFO of stream k, {-1, -1} when it has none.
func (t *ordTable) get(k ordKey) ordList {
	if k < ordKey(len(t.dense)) {
		return t.dense[k]
	}
	if l, ok := t.sparse[k]; ok {
		return l
	}
	return ordList{-1, -1}
}

// put stores the FIFO of stream k; an empty one (head < 0) is dropped.
func (t *ordTable) put(k ordKey, l ordList) {
	if k < ordDense {
		if k >= ordKey(len(t.dense)) {
			if l.head < 0 {
				return
			}
			t.grow(k)
		}
		t.dense[k] = l
		return
	}
	if l.head < 0 {
		delete(t.sparse, k)
		return
	}
	if t.sparse == nil {
		t.sparse = make(map[ordKey]ordList)
	}
	t.sparse[k] = l
}

// grow makes room in dense for key k (< ordDense), doubling it.
func (t *ordTable) grow(k ordKey) {
	n := max(64, 2*len(t.dense))
	for ordKey(n) <= k {
		n *= 2
	}
	n = min(n, ordDense)
	d := make([]ordList, n)
	copy(d, t.dense)
	for i := len(t.dense); i < n; i++ {
		d[i] = ordList{-1, -1}
	}
	t.dense = d
}

// ordered reports whether op is ordered on its stream: a read or write at
// the current position (off -1) not marked Unordered.
func (o *Op) ordered() bool {
	return o.off == -1 && !o.unordered && o.code.valid() && o.code.desc().args&(argBuf|argBufs) != 0
}

// plain reports whether op needs nothing but a slot and its backend's
// submission: no deadline, token, hook, buffer list, argument, registered
// file or stream order, and it is not foreign (Ring.fill and Ring.enqueue
// have nothing more to do for it; plainSubmitter.submitPlain does it all).
func (o *Op) plain() bool {
	return o.deadline == 0 && o.token == nil && o.hook == nil && o.bufs == nil && o.arg == nil &&
		!o.fixedFD && o.code != OpForeign && !o.ordered()
}

// checkedPlain reports whether o is plain (see plain) and valid with
// nothing for check to look at beyond an fd, one buffer and an offset,
// all in range: check would accept it, and plain report true, at a
// fraction of their instructions (the submit path's). False is no
// verdict: check and plain decide then. The range checks of the fd,
// buffer and offset were made where they were set (Op.settleArgs), so it
// tests two bytes. The fds, offsets and buffers of the operations that
// take none are the constructors' zeros, which pass.
func (o *Op) checkedPlain(r *Ring) bool {
	return r.fast[o.code] != 0 && o.rare == 0
}

// setFast fills r.fast: for each operation checkedPlain may admit, its
// arguments with fastOp set; 0 for the others (invalid, foreign, lacking
// here, with arguments or an op-specific check beyond an fd, one buffer
// and an offset). Once, in New.
func (r *Ring) setFast() {
	for op := range opDescs {
		d := &opDescs[op]
		if Opcode(op).valid() && Opcode(op) != OpForeign && !r.lacks[op] && d.check == nil && d.args&^(argFD|argBuf|argOff) == 0 {
			r.fast[op] = d.args | fastOp
		}
	}
}

func ordKeyOf(s *slot) ordKey {
	k := ordKey(uint32(s.fd)) << 1
	if s.code.desc().write {
		k |= 1
	}
	if s.fixedFD {
		k |= 1 << 33 // an index into the registered files, not an fd
	}
	return k
}

// ordEnqueue appends slot idx to its stream's FIFO and reports whether it
// is the head (to be handed to the backend now). r.sqMu held.
func (r *Ring) ordEnqueue(idx uint32, s *slot) bool {
	k := ordKeyOf(s)
	r.ordMu.Lock()
	l, at := r.ord.load(k)
	s.ordPrev, s.ordNext = l.tail, -1
	if l.tail >= 0 {
		r.slots[l.tail].ordNext = int32(idx)
	} else {
		l.head = int32(idx)
	}
	l.tail = int32(idx)
	s.inOrd = true
	r.ord.store(k, at, l)
	r.ordMu.Unlock()
	return l.head == int32(idx)
}

// ordRemove takes slot idx off its stream's FIFO. When it was the head and
// another request waits, that one becomes the head and is returned (its
// key), to be handed to the backend; onlyQueued refuses to remove the head
// (a cancel of the head goes through the backend). It reports whether idx
// was removed. r.ordMu is taken here.
func (r *Ring) ordRemove(idx uint32, s *slot, onlyQueued bool) (next uint64, hasNext, removed bool) {
	r.ordMu.Lock()
	next, hasNext, removed = r.ordRemoveLocked(idx, s, onlyQueued)
	r.ordMu.Unlock()
	return next, hasNext, removed
}

// ordRemoveLocked is ordRemove with r.ordMu held by the caller.
func (r *Ring) ordRemoveLocked(idx uint32, s *slot, onlyQueued bool) (next uint64, hasNext, removed bool) {
	if !s.inOrd {
		return 0, false, false
	}
	// The stream's FIFO is updated in place when it lives in the dense
	// table.
	k := ordKeyOf(s)
	l, at := r.ord.load(k)
	wasHead := l.head == int32(idx)
	if wasHead && onlyQueued {
		return 0, false, false
	}
	if s.ordPrev >= 0 {
		r.slots[s.ordPrev].ordNext = s.ordNext
	} else {
		l.head = s.ordNext
	}
	if s.ordNext >= 0 {
		r.slots[s.ordNext].ordPrev = s.ordPrev
	} else {
		l.tail = s.ordPrev
	}
	s.ordPrev, s.ordNext, s.inOrd = -1, -1, false
	r.ord.store(k, at, l)
	if wasHead && l.head >= 0 {
		next, hasNext = r.slots[l.head].key(), true
	}
	return next, hasNext, true
}

// removeAlone takes slot s off its stream (key k, ordKeyOf(s)) when it is
// alone there and the stream lives in the dense table, and reports whether
// it did: ordRemoveLocked's commonest case (a driver's reads of several
// devices, each on its own fd), where the stream empties and nothing is
// handed on, small enough to inline where a call per request counts (the
// reaper's burst of cancels). Ring.ordMu held.
func (t *ordTable) removeAlone(k ordKey, s *slot) bool {
	if s.ordPrev >= 0 || s.ordNext >= 0 || k >= ordKey(len(t.dense)) {
		return false
	}
	t.dense[k] = ordList{-1, -1}
	s.ordPrev, s.ordNext, s.inOrd = -1, -1, false
	return true
}

// ordPass takes slot idx, whose submission failed, off its stream and,
// when it was the head, hands the stream's next request to the deferred
// list at once: idx has no completion to deliver first (a completed
// request leaves its stream in finishCold, and its successor is handed on
// after the delivery: passOn).
func (r *Ring) ordPass(idx uint32, s *slot) {
	if next, ok, _ := r.ordRemove(idx, s, false); ok {
		r.pushDeferred(kindReq, next)
	}
}

// cancelHeld cancels held request idx with flags f. A request waiting its
// turn completes here and now; one already due for (re)submission is
// completed by runDeferred, which sees the cancel. It reports whether a
// completion happened here (the caller kicks reapers once unlocked).
// r.sqMu held.
func (r *Ring) cancelHeld(idx uint32, s *slot, f uint32) bool {
	s.flags.Or(f)
	if _, _, removed := r.ordRemove(idx, s, true); !removed {
		return false
	}
	s.flags.And(^uint32(flHeld))
	s.flags.Or(flNopped)
	r.complete(idx, -int32(eCanceled))
	return true
}
