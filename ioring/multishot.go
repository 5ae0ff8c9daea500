package ioring

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
)

// Multishot requests: one submission, many completions (a poll that stays
// armed, an accept per connection, a receive per message). The ring keeps
// the contract's second clause in this form: a multishot request delivers
// any number of completions with More set, then exactly one final
// completion with More clear, whatever ends it (its own end, an error, a
// cancel, a deadline, its token, Close). Its slot, its buffers and its
// BufRing stay the ring's until that final completion is delivered.
//
// How they travel: a request's undelivered completions wait in its slot's
// multiShot, oldest first, and the slot's index is on the completion queue
// (r.done) at most once at a time (queued), which keeps the queue's
// capacity of one cell per slot enough. A consumer that pops the index
// takes the oldest completion (takeShot) and puts the index back when more
// wait. The final completion is recorded last (finishMulti) and delivered
// last; the slot stays stActive until then, so that no other consumer can
// take it out of turn, and a cancel that finds it ended says ErrNotFound.
// Nothing of this touches a single-shot request: it never has s.multi, and
// its completions never reach takeShot.

// The completion flags of io_uring (IORING_CQE_F_BUFFER and its shift,
// checked against internal/uring on Linux), which the poll backend speaks
// too.
const (
	cqeFBuffer  = 1 << 0
	cqeFMore    = 1 << 1
	cqeBufShift = 16
)

// MaxUndelivered bounds the completions of one multishot request that may
// wait for Reap. When its consumer falls further behind, the ring cancels
// the request and its final completion carries ErrOverrun, so that a
// flood (connections, messages, events) cannot take unbounded memory.
const MaxUndelivered = 4096

// maxUndelivered is MaxUndelivered; tests lower it.
var maxUndelivered = MaxUndelivered

// multiShot is a multishot request's state beside its slot. It is made
// once per slot and reused; fillMulti resets it.
type multiShot struct {
	mu      sync.Mutex
	shots   []shot // undelivered completions, from head on; guarded by mu
	head    int    // guarded by mu
	queued  bool   // the slot's index is on r.done; guarded by mu
	overrun bool   // the ring canceled it for MaxUndelivered; guarded by mu
	gave    bool   // a completion with More set was recorded; guarded by mu
	ended   atomic.Bool
	br      *BufRing // RecvMultishot's buffers; set by fill, read by the completer
	stream  int8     // RecvMultishot's fd is a stream socket: 1, not: -1, not known yet: 0; the completer's
	// own is the io_uring ring's duplicate of a RecvMultishot's fd, made
	// by fillMulti, that eofCheck peeks at, not at the caller's fd number,
	// which a caller that closed its fd too early lets another file take.
	// -1: none (another backend, a registered file that is no stream
	// socket, or the dup failed).
	// finishMulti or unfill closes it.
	own     int32
	peekErr syscall.Errno // the socket's error eofCheck's peek took (and so cleared), for the final completion; reapMu
}

// shot is one completion of a multishot request, computed when it arrived.
type shot struct {
	n      int
	err    error
	bufID  uint16
	buffer bool
	final  bool
}

// fillMulti readies slot s for a multishot request (fill, r.sqMu held): br
// is its BufRing, or nil (PollMultishot, AcceptMultishot).
func (r *Ring) fillMulti(s *slot, br *BufRing) {
	if s.ms == nil {
		s.ms = &multiShot{}
	}
	ms := s.ms
	ms.mu.Lock()
	clear(ms.shots[ms.head:])
	ms.shots, ms.head, ms.queued, ms.overrun, ms.gave = ms.shots[:0], 0, false, false, false
	ms.mu.Unlock()
	ms.ended.Store(false)
	ms.br, ms.stream, ms.peekErr = br, 0, 0
	ms.own = -1
	if s.code == OpRecvMultishot && r.info.Backend == BackendURing {
		// The caller's fd is valid now (Submit's contract), and names
		// the file the kernel will take for the request; a registered
		// file's is the ring's duplicate of its entry, if a stream
		// socket.
		if fd := s.fd; !s.fixedFD {
			ms.own = dupOwn(fd)
		} else if fd = r.heldFile(fd); fd >= 0 {
			ms.own = dupOwn(fd)
		}
	}
	if br != nil {
		br.users.Add(1) // takeShot counts it out, with the final completion
	}
	s.multi, s.cold = true, true
	s.cflags = 0
}

// closeOwn closes ms.own, if any: its request ended (finishMulti: after
// its final CQE, when no eofCheck can run for it any more) or never
// started (unfill).
func (ms *multiShot) closeOwn() {
	if ms.own >= 0 {
		closeOwnFD(ms.own)
		ms.own = -1
	}
}

// shotResult turns a CQE's result and flags into a completion's fields.
func (s *slot) shotResult(res int32, cflags uint32) shot {
	if s.code == OpPollMultishot {
		res = pollResult(res, s.events)
	}
	sh := shot{n: int(res)}
	if res < 0 {
		sh.n = 0
		sh.err = &IOError{Op: s.code.String(), FD: int(s.fd), Err: sysErrno(-res)}
	}
	if cflags&cqeFBuffer != 0 {
		sh.buffer, sh.bufID = true, uint16(cflags>>cqeBufShift)
	}
	return sh
}

// shot records a completion with more to come of multishot slot idx
// (stActive) and queues the slot when it is not queued already. Backends
// call it for each such result, in order, from one goroutine at a time per
// request. inline: the caller holds r.reapMu (the io_uring reap loop),
// which unlockReap's deferred submissions follow.
func (r *Ring) shot(idx uint32, res int32, cflags uint32, inline bool) {
	s := &r.slots[idx]
	sh := s.shotResult(res, cflags)
	ms := s.ms
	ms.mu.Lock()
	ms.shots = append(ms.shots, sh)
	ms.gave = true
	over := len(ms.shots)-ms.head > maxUndelivered && !ms.overrun
	if over {
		ms.overrun = true
	}
	push := !ms.queued
	ms.queued = true
	ms.mu.Unlock()
	if push {
		r.queueIdx(idx)
	}
	// Canceled by the ring, through the deferred list: r.sqMu may be held
	// by our caller's caller (the poll backend) or rank above r.reapMu
	// (io_uring's reap). A request canceled already (its caller, token,
	// deadline or context came first) is ending anyway, and keeps that
	// first cause (askCancel).
	if over && s.askCancel(flCancelReq|flOverrun) {
		r.pushDeferred(kindCancel, s.key())
		if !inline {
			r.submitDeferred()
		}
	}
}

// queueIdx puts slot idx on the completion queue and wakes a parked
// consumer.
func (r *Ring) queueIdx(idx uint32) {
	r.done.PushWait(idx) // the queue has a cell for every slot
	if r.waiters.Load() > 0 {
		select {
		case r.wakeCh <- struct{}{}:
		default:
		}
	}
}

// finishMulti records the final completion of multishot slot idx after its
// others and counts the request out of flight (finish, by way of
// finishCold). The slot stays stActive until takeShot delivers it.
func (r *Ring) finishMulti(idx uint32, s *slot) {
	ms := s.ms
	n, err := s.result()
	sh := shot{n: n, err: err, final: true}
	if err != nil {
		r.stats.noteErr(err)
		if s.res < 0 {
			sh.n = 0
		}
	}
	if s.cflags&cqeFBuffer != 0 && s.res > 0 && s.flags.Load()&flNopped == 0 {
		// The kernel ended the request on a message it delivered (its
		// completion ring was full as a cancel came): the final
		// completion carries it.
		sh.buffer, sh.bufID = true, uint16(s.cflags>>cqeBufShift)
	}
	ms.closeOwn()
	ms.mu.Lock()
	ms.shots = append(ms.shots, sh)
	ms.ended.Store(true)
	push := !ms.queued
	ms.queued = true
	ms.mu.Unlock()
	if push {
		r.queueIdx(idx)
	}
	r.ended.Add(1)
	r.noteDrain()
}

// takeShot delivers the oldest completion of multishot slot idx, whose
// index the caller popped from the queue, and puts the index back when
// more wait. After the final one it frees the slot onto free.
func (r *Ring) takeShot(idx uint32, s *slot, free *chain) Completion {
	ms := s.ms
	if ms == nil || !s.multi {
		panic(fmt.Sprintf("ioring: queued slot %d not done (state %d, %v, multi %v)", idx, s.state(), s.code, s.multi))
	}
	ms.mu.Lock()
	sh := ms.shots[ms.head]
	ms.shots[ms.head] = shot{}
	ms.head++
	more := ms.head < len(ms.shots)
	// The slot's fields are read before the lock is let go: once it is,
	// with nothing more queued, the reaper may record the final completion
	// and queue the index again, and another consumer take it and free the
	// slot for reuse while this one still builds its completion.
	key := s.key()
	c := Completion{Req: Request{r: r, key: key}, Op: s.code, More: !sh.final, Buffer: sh.buffer, BufID: sh.bufID, N: sh.n, Err: sh.err, User: s.user}
	br := ms.br
	if !more {
		ms.shots, ms.head, ms.queued = ms.shots[:0], 0, false
	}
	ms.mu.Unlock()
	if br != nil {
		// A buffer is the caller's (BufRing.Release takes it) once its
		// completion is delivered, not when the kernel filled it; and
		// the BufRing is the request's until its final completion is.
		if sh.buffer {
			br.handedOut(sh.bufID)
		}
		if sh.final {
			br.users.Add(-1)
		}
	}
	if sh.final {
		if more {
			panic(fmt.Sprintf("ioring: slot %d: a multishot completion after the final one", idx))
		}
		ms.br = nil
		r.releaseKey(idx, s, key, free)
		return c
	}
	if more {
		// Complete before the index is back: another consumer may take
		// the final completion and free the slot at once.
		r.done.PushWait(idx)
	}
	return c
}
