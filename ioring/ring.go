package ioring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/release"
	"github.com/cancelio/cancelio/ioring/internal/cq"
)

// Backend names the mechanism beneath a Ring.
type Backend uint8

const (
	// BackendAuto picks io_uring where the kernel allows it and falls back to
	// BackendPoll otherwise. The environment variable CANCELIO_BACKEND
	// (uring or poll) overrides it.
	BackendAuto Backend = iota
	// BackendURing is Linux io_uring.
	BackendURing
	// BackendPoll is epoll for pollable fds plus a bounded worker pool for
	// regular files: the fallback where io_uring is missing or disabled.
	// What it runs on a worker (regular files, blocking ttys, accepts on
	// blocking listeners, OpenAt, Close, Statx, Fsync) is a blocking system
	// call that nothing interrupts: one still queued is canceled at once,
	// one already running delivers its result, and a cancel, a deadline or
	// Close waits for that (Stats.Fallbacks counts them). Most return
	// quickly; an accept runs on its worker once the listener is ready,
	// with O_NONBLOCK set on the listener for the call (other users of
	// its open file description see it meanwhile), so that one whose
	// connection another process or request took first waits for
	// readiness again, where a cancel reaches it. Those that may not
	// return quickly: any call on a path or file whose filesystem hangs (a
	// FUSE daemon that does not answer, a hard NFS mount whose server is
	// gone); a Close whose file's release waits (a serial port draining
	// its output); an open that would block for another reason than a
	// FIFO's peer (a lease to break: made again blocking after EAGAIN, as
	// io_uring's worker does). io_uring interrupts those, where the wait
	// is interruptible.
	//
	// OpenAt opens non-blocking, as io_uring's first attempt does, and
	// clears O_NONBLOCK on the new fd unless it was asked for: an open of
	// a FIFO for reading completes at once, without waiting for a writer
	// (its reads see end of file until one comes), and a terminal's open
	// does not wait for its carrier, on both backends. An open of a FIFO
	// for writing (O_WRONLY, without O_NONBLOCK) waits for a reader, as
	// open(2) does, tried again on a timer (every 20ms at most) where a
	// cancel ends it at once; it holds no worker. A reader that opens and
	// closes in between is seen (the FIFO is watched for opens with
	// inotify) and the open completes, as open(2)'s does, with a write end
	// whose reader is gone: to make it, the backend opens the FIFO for
	// reading itself for a moment, which lets in any other writer waiting
	// in open(2) then. Without inotify (or /proc) such a reader is missed.
	// Where io_uring differs: without O_CREAT
	// or O_TRUNC, its write-only open of a FIFO without a reader fails at
	// once with ENXIO (its non-blocking attempt's result, which it does
	// not retry); with O_CREAT or O_TRUNC, or a path not in the kernel's
	// dentry cache, its opens run blocking in its workers, so a read-only
	// one waits for a writer too, cancelably (but on Linux 6.18, when the
	// thread that submitted such an open exits while it waits, the exit
	// may wait for the open, out of a cancel's reach).
	//
	// A Poll (or a readiness a request waits for) that ends before the
	// backend's epoll wait returns it goes unseen: epoll asks the file
	// again for its events when it reports them, so data written and read
	// back by another thread at once, or a peer's POLLIN that a reader
	// took, leaves the request waiting for the next one. io_uring reports
	// the events its wakeup carried, even if they are gone by then.
	BackendPoll
)

// String returns "auto", "uring" or "poll".
func (b Backend) String() string {
	switch b {
	case BackendAuto:
		return "auto"
	case BackendURing:
		return "uring"
	case BackendPoll:
		return "poll"
	}
	return fmt.Sprintf("backend(%d)", uint8(b))
}

// ParseBackend parses "auto", "uring" or "poll" (the values of
// CANCELIO_BACKEND and of command-line flags).
func ParseBackend(s string) (Backend, error) {
	switch s {
	case "", "auto":
		return BackendAuto, nil
	case "uring", "io_uring":
		return BackendURing, nil
	case "poll", "epoll":
		return BackendPoll, nil
	}
	return 0, fmt.Errorf("%w: unknown backend %q (want auto, uring or poll)", ErrInvalid, s)
}

// BackendInfo says which backend a Ring uses and why.
type BackendInfo struct {
	Backend Backend
	Reason  string // for example "io_uring_setup: operation not permitted"
}

// Config configures a Ring. The zero value is a ring of 256 entries on the
// best backend available.
type Config struct {
	// Entries is the number of requests that may be accepted and not yet
	// delivered at once, and the size of the submission ring: a power of
	// two from 2 to 32768. 0 means 256.
	Entries int
	// Backend forces a backend; BackendAuto (the zero value) chooses, and
	// then CANCELIO_BACKEND may force one too. Forcing BackendURing where
	// io_uring is unavailable is an error, never a silent fallback.
	Backend Backend
}

const (
	defaultEntries = 256
	maxEntries     = 32768

	// user_data layout: kind (2 bits) | generation (46 bits) | slot index (16 bits).
	idxBits  = 16
	idxMask  = 1<<idxBits - 1
	kindShft = 62
	keyMask  = 1<<kindShft - 1
)

// user_data kinds.
const (
	kindReq    = 0 // the request itself
	kindLink   = 1 // its linked timeout
	kindCancel = 2 // an async cancel: its own result is informational
	kindWake   = 3 // a nop that wakes a blocked reaper
)

// Slot states, kept in the top two bits of slot.ks (the key needs 62).
const (
	stFree       uint32 = iota
	stActive            // accepted, not completed
	stDone              // completed, not delivered
	stDelivering        // being delivered (exactly one taker)

	stShift = kindShft
)

// Slot flags (slot.flags, atomic).
const (
	flCancelReq = 1 << iota // a cancel was requested
	flTimedOut              // the deadline fired
	flNopped                // canceled before the kernel saw it
	flCtx                   // the cancel came from a context
	flHeld                  // accepted, not in the backend (see held.go)
	flRetry                 // the kernel ended it unasked: submit it again
	flOverrun               // a multishot request's consumer fell too far behind: the ring ended it
	flEOF                   // a multishot receive's stream ended unreported: the ring ended it (eofCheck)
)

// maxRetries bounds how often a request the kernel canceled unasked (its
// submitting thread exited) is submitted again, in case a file reports
// ECANCELED itself. A cancel that follows the exit of the thread that
// submitted it again does not count (slot.retryTID): a request that
// outlives any number of threads keeps going.
const maxRetries = 8

// slot is one request's state. The submitter fills it and publishes it with
// the release store of state = stActive; the completer reads it after
// loading that state, records the result and publishes it with state =
// stDone; the deliverer reads it after loading stDone.
//
// The key (generation and index, what a Request holds) and the state share
// one word, ks, so that a check of both is one load, a transition of a
// given request one compare-and-swap, and a submission one store: the new
// generation becomes visible together with stActive.
//
// States move so (each arrow is one store or compare-and-swap of ks):
//
//	stFree -> stActive            enqueue, with the new key (r.sqMu held)
//	stActive -> stDone            finish: the completion waits in the queue or for Wait
//	stDone -> stDelivering        popInto or Wait: one taker wins the CAS
//	stDelivering -> stFree        take, before the slot returns to the free list
//	stActive -> stFree            finish on the reaping consumer (r.direct): the
//	                              completion goes straight into its Reap result
//	                              and nobody else can reach it, so there is no
//	                              taker to race with and no stDelivering
//	stActive -> stFree            enqueue failed: the request never started
//
// The fields live in slotFields; slot adds the padding that rounds it up to
// whole cache lines (slotPad, computed in slot_unsafe.go).
type slot struct {
	slotFields
	_ [slotPad]byte
}

// slotFields is a slot without its padding (see slot).
type slotFields struct {
	// Hot: every request reads or writes these, so they come first and
	// share as few cache lines as possible (the slab is page-aligned once
	// it is large, and slotPad keeps each slot on whole lines).
	ks      atomic.Uint64 // state<<stShift | key
	flags   atomic.Uint32
	foreign atomic.Bool // the request is OpForeign
	awaited atomic.Bool // completion goes to Wait, not to the queue

	code    Opcode
	fixedFD bool  // fd is an index into the registered files; cleared by releaseKey
	timerDL bool  // its deadline is a Go timer (set under r.sqMu)
	retries uint8 // submissions again after unasked kernel cancels
	// Any of these four takes a completion off the fast path; they are
	// adjacent, on a 4-byte boundary, so that slot.simple reads them in
	// one load (slot_unsafe.go).
	linked   bool // has an io_uring linked timeout (set by submit)
	multi    bool // a multishot request (ms holds its state); cleared by fill
	inOrd    bool // on its stream's FIFO; guarded by r.ordMu
	cold     bool // bufs, hook, tok, ferr, timer or panicE may be set: releaseKey clears them
	fd       int32
	events   uint32
	res      int32
	freeNext uint32 // free-list link (see freeList); owned by the holder of the slot's chain

	// Backend-private bookkeeping (guarded by the backend's locks).
	sqPos   uint32
	pending atomic.Int32 // CQEs still due, with a linked timeout only (the request's, the timeout's)

	// A plain request's fields end within the slot's second cache line
	// (TestSlotHotLines).
	off      int64
	dur      time.Duration
	deadline time.Duration
	buf      []byte
	user     any
	bufs     [][]byte
	hook     func()
	tok      *Token
	timer    *time.Timer
	fn       int   // foreign result; reset by fill
	ferr     error // foreign error

	// Cold: only some kinds of request use these.
	fref    atomic.Pointer[foreignRef] // while a foreign request is in flight
	tokPrev int32
	tokNext int32
	ordPrev int32 // stream FIFO links; guarded by r.ordMu
	ordNext int32
	start   time.Duration // since epoch, at submission, for requests with a deadline
	panicE  *HookPanicError
	iov     []iovec
	ms      *multiShot // a multishot request's undelivered completions (multishot.go), kept for reuse
	cflags  uint32     // the final CQE's flags, for a multishot request
	// retryTID is the thread that handed the request to the kernel again
	// last (runDeferred), 0 before any retry: an unasked cancel after that
	// thread exited is its exit's, and does not count in retries.
	retryTID int32
	ts       [2]timespec   // OpTimeout's duration, the linked timeout's
	wake     chan struct{} // cap 1: completion of an awaited request
}

// keyState returns the slot's current key and state.
func (s *slot) keyState() (uint64, uint32) {
	w := s.ks.Load()
	return w & keyMask, uint32(w >> stShift)
}

// key returns the key of the slot's current (or last) request.
func (s *slot) key() uint64 { return s.ks.Load() & keyMask }

// state returns the slot's current state.
func (s *slot) state() uint32 { return uint32(s.ks.Load() >> stShift) }

// set moves the slot to state st for the request with key. Only the
// slot's owner of the moment calls it (see the table above). It is a
// release store: whatever the owner wrote before is visible to whoever
// loads the new state, and nobody needs it ordered before the owner's
// later loads (on amd64 this saves an XCHG, twice per request).
func (s *slot) set(key uint64, st uint32) { release.AtomicUint64(&s.ks, uint64(st)<<stShift|key) }

// move moves the request with key from state from to state to and reports
// whether it was there.
func (s *slot) move(key uint64, from, to uint32) bool {
	return s.ks.CompareAndSwap(uint64(from)<<stShift|key, uint64(to)<<stShift|key)
}

// backend is the mechanism beneath a Ring: io_uring, or epoll plus workers.
// The Ring owns slots, tokens, the completion queue and the contract; a
// backend moves requests to the kernel and reports their results with
// Ring.complete, exactly once per submitted slot.
type backend interface {
	// submit starts slot idx (s, at &r.slots[idx]), whose fields are
	// filled and whose state is stActive. Called with r.sqMu held; it may
	// defer the actual hand-off to flush. An error means nothing was
	// started.
	submit(idx uint32, s *slot) error
	// flush hands what submit deferred to the kernel, or readies it for
	// the io_uring backend's enter, which Ring.unlockSQ calls after it
	// releases r.sqMu. r.sqMu held.
	flush() error
	// cancel asks for slot idx, identified by key, to be canceled; the
	// slot's own completion still follows. r.sqMu held. Never blocks on I/O.
	cancel(idx uint32, key uint64)
	// cancelAll cancels every in-flight request (foreign ones excepted).
	// r.sqMu held.
	cancelAll()
	// reap completes what is ready. With wait, and nothing ready, it blocks
	// until something completes, wake is called, or timeout passes (< 0:
	// no limit). r.reapMu held.
	reap(wait bool, timeout time.Duration) error
	// wake makes a blocked reap return. Any goroutine, no Ring lock held.
	wake()
	// reapsInline reports whether every completion comes from reap, on the
	// reaping goroutine (io_uring), so that the reaper may take them
	// directly; otherwise other goroutines complete requests too.
	reapsInline() bool
	// nativeDeadlines reports whether the backend enforces Op deadlines
	// itself (io_uring linked timeouts); otherwise the Ring arms timers.
	nativeDeadlines() bool
	// close releases the mechanism after every request completed. Called
	// once, with no Ring lock held, after the Ring stopped calling it.
	close() error
}

// Ring is an overlapped-I/O engine: requests are submitted without waiting,
// each can be canceled at any moment from any goroutine, and every accepted
// request completes exactly once, into the ring's completion queue (Submit)
// or to a single waiter (Start).
//
// All methods are safe for concurrent use. Make a Ring with New: on a nil
// *Ring or a zero Ring every method returns an error wrapping ErrInvalid
// (Backend, Entries, InFlight and Stats return zero values).
type Ring struct {
	be    backend
	info  BackendInfo
	slots []slot
	free  freeList  // free slots
	done  *cq.Queue // indices of completed, undelivered slots (queue mode)

	sqMu   sync.Mutex // serialises submission and cancels; guards closed transitions
	reapMu sync.Mutex // one reaper of the backend at a time

	closed     atomic.Bool
	beClosed   bool      // guarded by reapMu
	beDead     bool      // guarded by sqMu: the backend is closed
	cancelReqs []Request // guarded by sqMu: scratch for Token.Cancel
	// The requests in flight are started - ended - endedDirect: three
	// counts, so that the hot paths count with a plain store where one
	// locked add cost about 5 ns on x86 (a fortieth of a NOP's round
	// trip): started only under sqMu (every submission and its
	// corrections), endedDirect only under reapMu (endDirect), ended by
	// anyone (finish, with an atomic add). inflightNow reads the ends
	// before the starts, so it never goes below 0; every increment is
	// followed by sqMu's unlock (a full barrier) before its holder looks
	// for parked consumers, as a locked add was.
	started     atomic.Uint64 // written (release) under sqMu only
	ended       atomic.Uint64
	endedDirect atomic.Uint64 // written (release) under reapMu only
	// batchSeq is odd while a SubmitBatch has counted in flight ops that
	// may not go in (from its up-front count to its correction): InFlight
	// and Stats read the count between two batches (inFlight). Written
	// (release) under sqMu only.
	batchSeq   uint32
	foreign    atomic.Int64 // in-flight foreign requests
	reaping    atomic.Int32 // goroutines blocked in be.reap(wait)
	direct     []Completion // guarded by reapMu: the reaping consumer's free room
	directN    int          // guarded by reapMu: completions handed over directly
	directFree chain        // guarded by reapMu: their slots, freed at the end of the pass
	// selfWait is idx+1 of the request whose Request.Wait holds reapMu
	// and reaps for it (0: none): finish need not wake that waiter.
	// Guarded by reapMu.
	selfWait uint32
	parked   atomic.Int32 // consumers parked on a channel, not reaping
	// readied is set when a completion wakes the goroutine waiting for
	// it (Request.Wait). Go runs a goroutine woken by the reaper on the
	// reaper's P, after it: a reaper that went on to block in the kernel
	// would hold that P, and the woken goroutine would wait for the
	// runtime to take the P back (tens of microseconds, per wake). The
	// reaper yields first (backend reap) and clears it.
	readied  atomic.Bool
	reaperCh chan struct{} // cap 1: the reaper left while consumers were parked

	waiters  atomic.Int32  // consumers parked in Reap
	wakeCh   chan struct{} // cap 1: the completion queue has entries
	closedCh chan struct{}
	drainCh  chan struct{} // cap 1: a request completed after Close began

	lacks       [numOps]bool  // operations the backend cannot run here (set by New)
	fast        [256]opArgs   // by Opcode: what Op.checkedPlain may admit (set by New)
	goDeadlines bool          // the backend has no deadlines of its own: Go timers enforce them
	inlineReap  bool          // the backend completes requests only in reap (be.reapsInline)
	plainBe     *uringBackend // the backend, when it submits plain ops in one step (io_uring); else nil
	def         deferList     // deferred submissions (held.go)
	ordMu       sync.Mutex    // guards ord and the slots' stream links
	ord         ordTable      // FIFOs of ordered requests, by stream (held.go)
	stats       ringStats     // counters of Stats (stats.go)
	fixed       [][]byte      // guarded by sqMu: registered buffers (fixed.go)
	files       regFiles      // registered files (files.go)
	bufRings    []*BufRing    // guarded by sqMu: provided-buffer rings by group (bufring.go)
}

// New returns a Ring configured by cfg.
func New(cfg Config) (*Ring, error) {
	n := cfg.Entries
	if n == 0 {
		n = defaultEntries
	}
	if n < 2 || n > maxEntries || n&(n-1) != 0 {
		return nil, &OpError{Op: "new", Err: fmt.Errorf("%w: entries %d (want a power of two from 2 to %d)", ErrInvalid, cfg.Entries, maxEntries)}
	}
	want := cfg.Backend
	forcedBy := "Config.Backend"
	if want == BackendAuto {
		if env := os.Getenv("CANCELIO_BACKEND"); env != "" {
			b, err := ParseBackend(env)
			if err != nil {
				return nil, &OpError{Op: "new", Err: fmt.Errorf("CANCELIO_BACKEND: %w", err)}
			}
			want = b
			forcedBy = "CANCELIO_BACKEND"
		}
	}
	if want > BackendPoll {
		return nil, &OpError{Op: "new", Err: fmt.Errorf("%w: unknown backend %d", ErrInvalid, uint8(want))}
	}
	r := &Ring{
		slots:    make([]slot, n),
		wakeCh:   make(chan struct{}, 1),
		reaperCh: make(chan struct{}, 1),
		closedCh: make(chan struct{}),
		drainCh:  make(chan struct{}, 1),
	}
	r.def.list = make([]uint64, 0, 2*n)
	r.def.spare = make([]uint64, 0, 2*n)
	r.done, _ = cq.New(n)
	var free chain
	for i := n - 1; i >= 0; i-- { // slot 0 is taken first
		s := &r.slots[i]
		s.set(uint64(i), stFree)
		s.tokPrev, s.tokNext = -1, -1
		s.ordPrev, s.ordNext = -1, -1
		s.wake = make(chan struct{}, 1)
		addFree(&free, uint32(i), &r.slots[i])
	}
	r.pushFree(&free)

	var err error
	switch want {
	case BackendURing:
		r.be, err = newURing(r, uint32(n))
		if err != nil {
			if uringUnavailable(err) && !errors.Is(err, ErrNotSupported) {
				err = fmt.Errorf("%w: %w", ErrNotSupported, err)
			}
			return nil, &OpError{Op: "new", Err: fmt.Errorf("io_uring forced by %s: %w", forcedBy, err)}
		}
		r.info = BackendInfo{BackendURing, "forced by " + forcedBy}
	case BackendPoll:
		r.be, err = newPoll(r)
		if err != nil {
			return nil, &OpError{Op: "new", Err: err}
		}
		r.info = BackendInfo{BackendPoll, "forced by " + forcedBy}
	default:
		r.be, err = newURing(r, uint32(n))
		if err == nil {
			r.info = BackendInfo{BackendURing, "io_uring available"}
			break
		}
		if !uringUnavailable(err) {
			return nil, &OpError{Op: "new", Err: err}
		}
		reason := "io_uring unavailable: " + err.Error()
		r.lacks = [numOps]bool{}
		r.be, err = newPoll(r)
		if err != nil {
			return nil, &OpError{Op: "new", Err: err}
		}
		r.info = BackendInfo{BackendPoll, reason}
	}
	r.goDeadlines = !r.be.nativeDeadlines()
	r.inlineReap = r.be.reapsInline()
	r.plainBe = plainBackend(r.be)
	r.setFast()
	return r, nil
}

// Backend reports which backend the ring runs on and why it was chosen.
func (r *Ring) Backend() BackendInfo {
	if r == nil {
		return BackendInfo{}
	}
	return r.info
}

// Entries returns the number of request slots.
func (r *Ring) Entries() int {
	if r == nil {
		return 0
	}
	return len(r.slots)
}

// InFlight returns the number of requests accepted whose completions the
// ring has not yet taken in: in the kernel, waiting their turn, or finished
// by the kernel but not yet reaped from its completion ring. Completions
// taken in and waiting for Reap or Request.Wait are not counted. It is
// never more than Entries: a batch being submitted counts only once it
// knows how many of its ops went in.
//
// The goroutine that takes a completion in counts it out just after it has
// made it available, so that whoever sees the count drop finds the
// completion (Close relies on that). When that goroutine is not the one
// that receives the completion (the fallback backend's workers, a
// transport's, another reaper), Reap or Wait may return it a moment before
// the count drops. Once every completion has been taken in, the count
// reaches 0 with no further call; after Close it is 0.
func (r *Ring) InFlight() int {
	if r == nil {
		return 0
	}
	return int(r.inFlight())
}

// batchBegin and batchEnd bracket a batch's count of ops in flight that
// may not go in (see batchSeq): a plain store each, on x86 a MOV, ordered
// around the stores to r.started they bracket. r.sqMu held; no user
// code runs between them (hooks run outside the ring's locks).
func (r *Ring) batchBegin() { release.Uint32(&r.batchSeq, r.batchSeq+1) }
func (r *Ring) batchEnd()   { release.Uint32(&r.batchSeq, r.batchSeq+1) }

// addStarted counts n more requests in flight (n < 0: counts them out
// again). r.sqMu held.
func (r *Ring) addStarted(n int64) {
	release.AtomicUint64(&r.started, r.started.Load()+uint64(n))
}

// inflightNow returns the requests in flight (see Ring.started): the ends
// are read first, so that a request that ended is seen started.
func (r *Ring) inflightNow() int64 {
	e := r.endedDirect.Load() + r.ended.Load()
	return int64(r.started.Load() - e)
}

// inFlight returns inflightNow as it is outside a batch's submission (a
// batch counts all its ops before it knows how many fit), and never more
// than the ring's slots: a request is counted out just after its
// completion is published (finish), and in that moment its slot may
// already serve a new request.
func (r *Ring) inFlight() int64 {
	for {
		if seq := atomic.LoadUint32(&r.batchSeq); seq&1 == 0 {
			n := r.inflightNow()
			if atomic.LoadUint32(&r.batchSeq) == seq {
				return min(n, int64(len(r.slots)))
			}
		}
		runtime.Gosched() // a batch is being submitted: it ends shortly
	}
}

// alloc takes a free slot and returns its index, its address (nil when
// none is free) and its next key (a new generation), which the slot takes
// on at enqueue. r.sqMu held.
func (r *Ring) alloc() (uint32, *slot, uint64) {
	idx, s := r.popFree()
	if s == nil {
		return 0, nil, 0
	}
	return idx, s, s.nextKey()
}

// nextKey returns the key of the slot's next request: its key's next
// generation, (key + 1<<idxBits) & keyMask, with the state's bits above
// keyMask masked off in the same step. Its owner of the moment calls it.
func (s *slot) nextKey() uint64 { return (s.ks.Load() + 1<<idxBits) & keyMask }

// releaseKey frees slot s (at &r.slots[idx]) onto c with key; the caller
// pushes c to the free list. Its flags are left for fill to clear: until
// the slot is filled again only a late Complete reads them, and finds its
// request's claim.
func (r *Ring) releaseKey(idx uint32, s *slot, key uint64, c *chain) {
	if s.cold {
		s.bufs, s.hook, s.tok, s.ferr, s.timer, s.panicE = nil, nil, nil, nil, nil, nil
		s.fixedFD = false // s.multi stays until fill: cancelOne may read it under r.sqMu
		s.cold = false
	}
	s.releaseHot(idx, key, c)
}

// releaseHot is Ring.releaseKey for a slot (at index idx) that is not
// cold: only its buffer and user value may be set.
func (s *slot) releaseHot(idx uint32, key uint64, c *chain) {
	// Only what was set is cleared: a pointer store costs a write-barrier
	// check, and a plain request sets few of them (fill writes only those
	// its Op has, onto the nil this leaves).
	if s.buf != nil {
		s.buf = nil
	}
	if s.user != nil {
		s.user = nil
	}
	s.set(key, stFree)
	addFree(c, idx, s)
}

// fill copies op into slot idx and pins its buffers. r.sqMu held.
func (r *Ring) fill(s *slot, op *Op, key uint64, awaited bool) {
	s.fillPlain(op, awaited)
	s.fn = 0 // a foreign request's result (plain ones are never foreign)
	// The rest is for the features Op.plain rules out.
	if op.bufs != nil {
		s.bufs = op.bufs
		s.cold = true
	}
	if op.hook != nil || op.token != nil {
		s.hook, s.tok = op.hook, op.token
		s.cold = true
	}
	// The buffers need no pin: Go's collector does not move heap objects,
	// and a buffer stored in the ring's slab is on the heap (it escapes
	// into it), so the address the kernel holds stays valid; the slot keeps
	// it reachable until delivery (see "Buffers" in the package doc).
	if len(op.bufs) > 0 {
		if cap(s.iov) < len(op.bufs) {
			s.iov = make([]iovec, len(op.bufs))
		}
		s.iov = s.iov[:len(op.bufs)]
		for i, b := range op.bufs {
			s.iov[i] = iovec{}
			if len(b) > 0 {
				s.iov[i].Base = &b[0]
				s.iov[i].SetLen(len(b))
			}
		}
	}
	if op.fixedFD {
		s.fixedFD, s.cold = true, true
	}
	if op.arg != nil {
		if br, ok := op.arg.(*BufRing); ok {
			r.fillMulti(s, br) // multishot.go
		} else {
			r.fillArg(s, op, key) // ops_sock_unsafe.go
		}
	}
}

// drainWake takes a wake-up left over from the slot's previous use off its
// channel. The channel's length is read first: a receive from an empty
// channel, even one that does not block, costs as much as the rest of a
// fill. A token that arrives after the look (from a stale handle's Wait)
// is as harmless as any stray one: waiters re-check the state.
func (s *slot) drainWake() {
	if len(s.wake) > 0 {
		select {
		case <-s.wake:
		default:
		}
	}
}

// fillPlain copies the fields that every op has into s (all of op when
// op.plain()), and for an awaited request drains the wake channel.
// r.sqMu held.
func (s *slot) fillPlain(op *Op, awaited bool) {
	s.fillKind(op.code == OpForeign, awaited)
	s.fillOp(op)
	s.fillReset()
	if op.code == OpPoll {
		s.cold = true // finishCold masks its result (pollResult)
	}
	if awaited {
		s.drainWake()
	}
}

// fillKind sets how the slot's request is delivered: foreign, awaited.
func (s *slot) fillKind(foreign, awaited bool) {
	// Atomic stores are full barriers on amd64: skip the ones that change
	// nothing (a slot keeps serving the same kind of request).
	if s.foreign.Load() != foreign {
		s.foreign.Store(foreign)
	}
	if s.awaited.Load() != awaited {
		s.awaited.Store(awaited)
	}
}

// fillOp copies the fields of op that every op has, but for what
// fillPlain does about the kind of delivery.
func (s *slot) fillOp(op *Op) { s.fillArgs(op, op.dur, op.deadline) }

// fillFast is fillOp for an op that Op.checkedPlain admitted, which has
// neither a duration nor a deadline (TestCheckedPlainAgreesWithCheck): it
// reads only the op's first 64 bytes.
func (s *slot) fillFast(op *Op) { s.fillArgs(op, 0, 0) }

// fillArgs is fillOp with op's duration and deadline given.
func (s *slot) fillArgs(op *Op, dur, deadline time.Duration) {
	s.code = op.code
	s.fd = int32(op.fd)
	s.events = op.events
	s.off = op.off
	s.dur, s.deadline = dur, deadline
	// release left the references nil: write only those op has.
	if op.buf != nil {
		s.buf = op.buf
	}
	if op.user != nil {
		s.user = op.user
	}
}

// fillReset clears what the slot's previous request may have left, for
// fillPlain.
func (s *slot) fillReset() {
	s.resetFields()
	s.clearFlags()
}

// resetFields clears the fields of the slot's previous request that fill
// does not write, but for its flags (clearFlags); the io_uring backend's
// plain submissions call it beside slot.dirty. r.sqMu held.
func (s *slot) resetFields() {
	s.linked, s.timerDL, s.multi, s.retries, s.retryTID = false, false, false, 0, 0
	s.res = 0
}

// clearFlags clears the flags the slot's previous request left (release
// keeps them, so that a late Complete still finds its claim). Cancels set
// flags only with r.sqMu held, as the caller holds it, and only on active
// slots. r.sqMu held.
func (s *slot) clearFlags() {
	if s.flags.Load() != 0 {
		s.flags.Store(0)
	}
}

// Submit submits op; its completion is delivered through the ring's
// completion queue (Reap). It does not wait for the operation. The returned
// Request can cancel it. Errors (bad input, ErrClosed, ErrFull) mean nothing
// was submitted.
func (r *Ring) Submit(op Op) (Request, error) {
	return r.submitOne(&op, false)
}

// Start submits op like Submit, but its completion is delivered only to
// Request.Wait, never to the completion queue. Every started request must be
// waited for (or its ring closed), or its slot stays taken.
func (r *Ring) Start(op Op) (Request, error) {
	return r.submitOne(&op, true)
}

func (r *Ring) submitOne(op *Op, awaited bool) (Request, error) {
	if !r.made() {
		return Request{}, errNoRing(op.code.String(), r)
	}
	plain := op.checkedPlain(r)
	fast := plain && r.plainBe != nil
	if !plain {
		if err := op.check(r); err != nil {
			return Request{}, err
		}
		plain = op.plain()
	}
	if awaited && op.code.desc().multi {
		return Request{}, errAwaitedMulti(op)
	}
	r.sqMu.Lock()
	// Closed is set under sqMu: checked here, no Close can run between this
	// check and the end of the enqueue, so a request is either refused or
	// counted in flight before Close starts to drain.
	if r.closed.Load() {
		r.sqMu.Unlock()
		return Request{}, &OpError{Op: op.code.String(), Err: ErrClosed}
	}
	if op.arg != nil {
		if err := op.recheck(); err != nil {
			r.sqMu.Unlock()
			return Request{}, err
		}
	}
	if fast {
		var req Request
		if started, _ := r.plainBe.startOne(op, &req, awaited, false); started {
			r.handOff()
			return req, nil
		}
	}
	idx, s, key := r.alloc()
	if s == nil {
		if op.arg != nil {
			unclaimArg(op) // claimed by recheck, never filled
		}
		r.sqMu.Unlock()
		return Request{}, &OpError{Op: op.code.String(), Err: ErrFull}
	}
	r.addStarted(1) // before the request can complete
	var kicked bool
	var err error
	if r.plainBe != nil && plain {
		// Awaited ones too: fill and enqueue have nothing more to do
		// for a plain op.
		s.fillPlain(op, awaited)
		err = r.plainBe.submitPlain(idx, s, key)
	} else {
		r.fill(s, op, key, awaited)
		kicked, err = r.enqueue(s, idx, key, op.ordered())
	}
	if err == nil {
		// A flush error is not the request's: the backend keeps what it
		// could not hand over and hands it over at the next flush.
		r.flushLocked()
	} else {
		r.addStarted(-1)
		r.unfill(idx)
	}
	r.unlockSQ()
	if err != nil {
		return Request{}, &OpError{Op: op.code.String(), Err: err}
	}
	if kicked {
		r.kick()
	}
	r.handOff() // a consumer parked with nothing to reap may now have work
	return Request{r: r, key: key}, nil
}

// SubmitBatch submits ops in one hand-off to the kernel (one io_uring_enter)
// and stores their Requests in reqs, which must be at least as long. It
// checks every op first: on bad input nothing is submitted. It returns how
// many were submitted; fewer than len(ops) only with an error.
func (r *Ring) SubmitBatch(ops []Op, reqs []Request) (int, error) {
	if !r.made() {
		return 0, errNoRing("submit", r)
	}
	if len(reqs) < len(ops) {
		return 0, &OpError{Op: "submit", Err: fmt.Errorf("%w: %d requests for %d ops", ErrInvalid, len(reqs), len(ops))}
	}
	// A batch that starts with an op on the fast path is tried whole on
	// it (submitPlains checks each op as it goes, and takes the batch back
	// when one is not admitted); any other goes the general way at once,
	// an empty one too (which reports ErrClosed on a closed ring).
	if r.plainBe != nil && len(ops) > 0 && ops[0].checkedPlain(r) {
		r.sqMu.Lock()
		if r.closed.Load() { // under sqMu: see submitOne
			r.sqMu.Unlock()
			return 0, &OpError{Op: "submit", Err: ErrClosed}
		}
		if len(ops) == 1 {
			if started, _ := r.plainBe.startOne(&ops[0], &reqs[0], false, false); started {
				r.handOff()
				return 1, nil
			}
		}
		// The batch is counted in flight with one atomic add, before any
		// of it can complete; what does not go in is counted out again.
		r.batchBegin()
		r.addStarted(int64(len(ops)))
		done, err := r.plainBe.submitPlains(ops, reqs)
		if err != errNotFast {
			return r.endBatch(len(ops), done, false, err)
		}
		// Counted in, never started (as in endBatch): a reaper that saw
		// the count meanwhile may be waiting for them.
		r.addStarted(-int64(len(ops)))
		r.batchEnd()
		r.unlockSQ()
		r.kick()
	}
	for i := range ops {
		if ops[i].checkedPlain(r) {
			continue
		}
		if err := ops[i].check(r); err != nil {
			return 0, fmt.Errorf("op %d: %w", i, err)
		}
	}
	r.sqMu.Lock()
	if r.closed.Load() { // as above
		r.sqMu.Unlock()
		return 0, &OpError{Op: "submit", Err: ErrClosed}
	}
	for i := range ops {
		if ops[i].arg == nil {
			continue
		}
		if err := ops[i].recheck(); err != nil {
			unclaimArgs(ops[:i]) // nothing of the batch is submitted
			r.sqMu.Unlock()
			return 0, fmt.Errorf("op %d: %w", i, err)
		}
	}
	r.batchBegin()
	r.addStarted(int64(len(ops)))
	var err error
	kicked := false
	done := 0
	for ; done < len(ops); done++ {
		idx, s, key := r.alloc()
		if s == nil {
			break
		}
		reqs[done] = Request{r: r, key: key}
		op := &ops[done]
		var k bool
		var e error
		if r.plainBe != nil && op.plain() {
			s.fillPlain(op, false)
			e = r.plainBe.submitPlain(idx, s, key)
		} else {
			r.fill(s, op, key, false)
			k, e = r.enqueue(s, idx, key, op.ordered())
		}
		if e != nil {
			r.unfill(idx) // releases its Msg, if any
			reqs[done] = Request{}
			err = e
			break
		}
		kicked = kicked || k
	}
	if done < len(ops) {
		// The ops never filled give back what recheck claimed for them
		// (the one enqueue refused was filled: unfill let go of its Msg).
		next := done
		if err != nil {
			next++
		}
		unclaimArgs(ops[next:])
	}
	return r.endBatch(len(ops), done, kicked, err)
}

// unclaimArgs gives back the claims recheck made for ops, which were not
// filled (unclaimArg). r.sqMu held.
func unclaimArgs(ops []Op) {
	for i := range ops {
		if ops[i].arg != nil {
			unclaimArg(&ops[i])
		}
	}
}

// SubmitAndReap submits ops as SubmitBatch does, then reaps into dst as
// Reap(dst, timeout) does: one call for the loop of a program that keeps
// requests in flight, as io_uring_submit_and_wait is for liburing. It
// returns how many ops were submitted and how many completions went into
// dst. When the submission fails it reaps nothing and returns SubmitBatch's
// count and error; when the reap fails, the count of the submitted ops
// (which are in flight) and Reap's error. With no ops it only reaps. An
// empty dst is refused (ErrInvalid) before anything is submitted.
//
// Its common case, one op on the fast path of the io_uring backend, is one
// step: the op goes in, the kernel is entered once, and what is ready when
// it returns is delivered without the rest of Reap's path.
func (r *Ring) SubmitAndReap(ops []Op, reqs []Request, dst []Completion, timeout time.Duration) (submitted, reaped int, err error) {
	if !r.made() {
		return 0, 0, errNoRing("submit", r)
	}
	if len(dst) == 0 {
		return 0, 0, errEmptyDst()
	}
	if b := r.plainBe; b != nil && len(ops) == 1 && len(reqs) > 0 && ops[0].checkedPlain(r) {
		r.sqMu.Lock()
		started, owed := false, false
		if !r.closed.Load() {
			started, owed = b.startOne(&ops[0], &reqs[0], false, true)
		}
		if !started {
			r.unlockSQ() // SubmitBatch reports why, or takes the general path
		} else {
			// The rest of Reap: it would look at the queue and make this
			// first step again; reapWait looks at the queue first, and
			// the step was just made.
			n, err := r.reapFirst(dst, owed)
			if n == 0 && err == nil {
				n, err = r.reapWait(dst, timeout)
			}
			r.handOff()
			return 1, n, err
		}
	}
	if len(ops) > 0 {
		if submitted, err = r.SubmitBatch(ops, reqs); err != nil {
			return submitted, 0, err
		}
	}
	reaped, err = r.Reap(dst, timeout)
	return submitted, reaped, err
}

// errEmptyDst is Reap's refusal of an empty destination, out of line: the
// error's construction would sit in the middle of the callers' fast paths.
//
//go:noinline
func errEmptyDst() error {
	return &OpError{Op: "reap", Err: fmt.Errorf("%w: empty destination", ErrInvalid)}
}

// made reports whether New made r: every method refuses a nil *Ring and a
// zero Ring (errNoRing) rather than panic or pretend.
func (r *Ring) made() bool { return r != nil && r.be != nil }

// errNoRing is the refusal of a call on a Ring that New did not make, out
// of line like errEmptyDst.
//
//go:noinline
func errNoRing(op string, r *Ring) error {
	what := "zero Ring"
	if r == nil {
		what = "nil *Ring"
	}
	return &OpError{Op: op, Err: fmt.Errorf("%w: %s (make rings with New)", ErrInvalid, what)}
}

// errNotMade refuses op on a value of type typ that its constructor, maker,
// did not make (a nil pointer or a zero value).
func errNotMade(op, typ, maker string) error {
	return &OpError{Op: op, Err: fmt.Errorf("%w: %s not made by %s", ErrInvalid, typ, maker)}
}

// errNilContext refuses a nil context.
func errNilContext(op string) error {
	return &OpError{Op: op, Err: fmt.Errorf("%w: nil context (use context.Background)", ErrInvalid)}
}

// errNotFast is submitPlains' report of an op that Op.checkedPlain does
// not admit: nothing of the batch was started, and the caller takes the
// general path, which checks every op in full. It never leaves the package.
var errNotFast = errors.New("ioring: op off the fast path")

// endBatch ends SubmitBatch after done of n ops went in (err: why the
// next did not): it counts the rest out of flight, hands the batch over
// and releases r.sqMu, which the caller holds.
func (r *Ring) endBatch(n, done int, kicked bool, err error) (int, error) {
	if done < n {
		// Counted in, never started: count them out. A reaper that saw
		// the count meanwhile may be waiting for them: wake it.
		r.addStarted(int64(done - n))
		kicked = true
	}
	r.batchEnd()
	r.flushLocked()
	r.unlockSQ()
	if kicked {
		r.kick()
	}
	r.handOff()
	if err != nil {
		return done, &OpError{Op: "submit", Err: err}
	}
	if done < n {
		return done, &OpError{Op: "submit", Err: ErrFull}
	}
	return done, nil
}

// unfill undoes fill (or alloc) for a slot that never started. The slot
// goes back to its previous key (prevKey).
func (r *Ring) unfill(idx uint32) {
	s := &r.slots[idx]
	if s.multi && s.ms.br != nil {
		s.ms.br.users.Add(-1) // counted in by fillMulti
		s.ms.br = nil
	}
	if s.multi {
		s.ms.closeOwn() // made by fillMulti
	}
	var free chain
	r.releaseKey(idx, s, prevKey(s.key()), &free)
	r.pushFree(&free)
}

// prevKey returns the key its slot had before key (the generation before
// key's, modulo the generations' range): a slot whose request never
// started (unfill, the io_uring backend's unwind) goes back to it, as if
// it had never been taken. Stats counts the requests accepted as the sum
// of the slots' generations, and the new key's Request never left the
// ring, so nobody can tell the generation was used: only that it was not
// counted. r.sqMu held.
func prevKey(key uint64) uint64 { return (key - 1<<idxBits) & keyMask }

// enqueue hands slot idx to the backend, or completes it at once when its
// token is already canceled, or holds it when it is ordered behind another
// request on its stream. Called with r.sqMu held, after the caller counted
// the request in flight (and counts it out again on error). It reports
// whether a completion happened outside the backend (the caller kicks
// reapers).
func (r *Ring) enqueue(s *slot, idx uint32, key uint64, ordered bool) (bool, error) {
	// The callers checked r.closed since they took r.sqMu: Close sets it
	// under r.sqMu, so it is still false.
	if s.deadline > 0 {
		s.start = time.Since(epoch)
	}
	if t := s.tok; t != nil {
		t.mu.Lock()
		if t.canceled {
			why := t.why
			t.mu.Unlock()
			// Tokens cover the future: this request never reaches the kernel.
			if s.code == OpForeign {
				r.foreign.Add(1) // finish counts it out
			}
			s.flags.Store(why | flNopped)
			s.set(key, stActive)
			r.complete(idx, -int32(eCanceled))
			return true, nil
		}
		t.link(r, idx)
		t.mu.Unlock()
	}
	s.set(key, stActive) // publish the slot to the completer
	if s.code == OpForeign {
		r.foreign.Add(1)
		s.fref.Store(&foreignRef{key: key, hook: s.hook})
		r.armTimer(s, key, s.deadline)
		return false, nil
	}
	if ordered && !r.ordEnqueue(idx, s) {
		// Behind another request on its stream: held until that one
		// completes (finish hands it over). Its deadline runs from now.
		s.flags.Or(flHeld)
		if s.deadline > 0 {
			s.timerDL = true
			r.armTimer(s, key, s.deadline)
		}
		return false, nil
	}
	if s.deadline > 0 && (r.goDeadlines || s.code.desc().timerDeadline) {
		s.timerDL = true
	}
	if err := r.be.submit(idx, s); err != nil {
		if ordered {
			r.ordPass(idx, s)
		}
		s.set(key, stFree)
		if t := s.tok; t != nil {
			t.mu.Lock()
			t.unlink(r, idx)
			t.mu.Unlock()
		}
		return false, err
	}
	if s.timerDL {
		r.armTimer(s, key, s.deadline)
	}
	return false, nil
}

// armTimer enforces a deadline d from now with a Go timer, for foreign
// requests, held ones, and backends without native deadlines. r.sqMu held.
func (r *Ring) armTimer(s *slot, key uint64, d time.Duration) {
	if d <= 0 {
		return
	}
	s.timer = time.AfterFunc(d, func() { r.cancelKey(key, flCancelReq|flTimedOut) })
	s.cold = true
}

func (r *Ring) flushLocked() error {
	if r.beDead {
		return nil
	}
	if b := r.plainBe; b != nil {
		return b.flush() // by its concrete type: inlined
	}
	return r.be.flush()
}

// complete records the result of slot idx and delivers it: to the
// completion queue, or to the request's waiter. Backends call it exactly
// once per submitted slot; it may run on several goroutines at once for
// different slots.
func (r *Ring) complete(idx uint32, res int32) {
	s := &r.slots[idx]
	if st := s.state(); st != stActive {
		panic(fmt.Sprintf("ioring: completion of slot %d in state %d", idx, st))
	}
	s.res = res
	r.finish(idx, s, false)
}

// finish delivers a completed slot and counts it out of flight (after
// publishing it, so that whoever sees the count drop finds the completion).
// inline is true only on the reaping goroutine, under reapMu (the io_uring
// reap loop), where the completion may go straight to the reaping consumer;
// reapLocked counts those out, all at once.
func (r *Ring) finish(idx uint32, s *slot, inline bool) {
	// An ordered request's successor on its stream, handed on only once
	// this completion is delivered (see passOn).
	var next uint64
	hasNext := false
	if s.cold || s.inOrd || s.code == OpForeign {
		var delivered bool
		if delivered, next, hasNext = r.finishCold(idx, s, inline); delivered {
			return
		}
	}
	awaited := s.awaited.Load()
	if inline && !awaited && r.directN < len(r.direct) {
		// The reaper is a consumer with room: hand the completion over
		// without the round trip through the queue (see reapLocked). The
		// queue was empty when the pass began, and the pass queues nothing
		// before dst is full, so no queued completion is overtaken.
		r.takeDirect(idx, s, &r.direct[r.directN])
		r.directN++
		if hasNext {
			r.passOn(next, inline)
		}
		return
	}
	s.set(s.key(), stDone) // publish the result
	if awaited {
		// A waiter that is reaping for itself (selfWait) sees the state
		// when its reap returns: nothing to wake. Others parked on the
		// request are woken by the waiter (Request.Wait).
		if !inline || r.selfWait != idx+1 {
			select {
			case s.wake <- struct{}{}:
				r.readied.Store(true)
			default:
			}
		}
	} else {
		r.done.PushWait(idx) // the queue has a cell for every slot
		if r.waiters.Load() > 0 {
			select {
			case r.wakeCh <- struct{}{}:
			default:
			}
		}
	}
	if hasNext {
		r.passOn(next, inline)
	}
	r.ended.Add(1)
	r.noteDrain()
}

// finishCold is the part of finish that only some requests need: a timer
// to stop, a token to leave, a foreign count, a stream to leave. It
// reports whether it delivered the completion itself (a multishot
// request's final one, after its others: multishot.go) and, when it did
// not and the request was its stream's head, the stream's next request,
// which finish hands on after the delivery.
func (r *Ring) finishCold(idx uint32, s *slot, inline bool) (delivered bool, next uint64, hasNext bool) {
	if s.timer != nil {
		s.timer.Stop()
	}
	if t := s.tok; t != nil {
		t.mu.Lock()
		t.unlink(r, idx)
		t.mu.Unlock()
	}
	if s.code == OpForeign {
		s.fref.Store(nil)
		r.foreign.Add(-1)
	}
	if s.code == OpPoll {
		s.res = pollResult(s.res, s.events)
	}
	if s.inOrd {
		// Done: it leaves its stream. When it was the head, the next
		// one goes to the backend once this one is delivered. Most
		// completions of ordered requests come here (the reaper's
		// canceled ones go through uringBackend.canceledRun): the lock is
		// taken here, not through ordRemove, which would cost a call more.
		r.ordMu.Lock()
		next, hasNext, _ = r.ordRemoveLocked(idx, s, false)
		r.ordMu.Unlock()
	}
	if s.multi {
		r.finishMulti(idx, s)
		if hasNext {
			r.passOn(next, inline)
		}
		return true, 0, false
	}
	return false, next, hasNext
}

// passOn hands next, the request behind a completed one on its stream, to
// the backend through the deferred list, after the completed one was
// delivered: started sooner, next could complete, and be delivered, first
// (the poll backend completes a read of data already there as it starts
// it), and a stream's completions would arrive out of order. Off the
// reaping goroutine the deferred list is drained at once if r.sqMu is
// free; its holder, or the next one, drains it otherwise (see unlockSQ).
func (r *Ring) passOn(next uint64, inline bool) {
	r.pushDeferred(kindReq, next)
	if !inline {
		r.submitDeferred()
	}
}

// noteDrain wakes Close's drain after requests were counted out.
func (r *Ring) noteDrain() {
	if r.closed.Load() {
		select {
		case r.drainCh <- struct{}{}:
		default:
		}
	}
}

// kick wakes a goroutine blocked in the backend's reap, after a completion
// that did not come from the backend (a foreign one, or a canceled token's).
func (r *Ring) kick() {
	if r.reaping.Load() > 0 {
		r.be.wake()
	}
}

// Complete posts the result of a foreign request (see Foreign): n bytes and
// err, which may be nil, ErrCanceled, ErrNoDevice or any error of the
// transport. A negative n is read as io_uring reads a result: with a nil
// err, it is the errno -n (-5 completes with EIO), and the completion
// counts 0 bytes. It must be called exactly once per foreign request; a second
// call, a call with a stale handle (whose slot may already serve another
// request), or one for a request that is not foreign returns ErrNotFound
// and changes nothing; on a nil or zero Ring the error wraps both
// ErrInvalid and ErrNotFound. When the request's deadline fired or a context ended
// it and err is a cancel, the completion carries ErrTimeout or the
// context's error (see ErrCanceled); when its cancel hook panicked, a
// *HookPanicError wrapping that.
func (r *Ring) Complete(q Request, n int, err error) error {
	if !r.made() {
		// Refused as every call on such a ring is (ErrInvalid), and no
		// request of it can be found either (ErrNotFound, as before).
		e := errNoRing("complete", r).(*OpError)
		e.Err = fmt.Errorf("%w, so %w", e.Err, ErrNotFound)
		return e
	}
	if q.r != r {
		return ErrNotFound
	}
	idx := uint32(q.key & idxMask)
	if int(idx) >= len(r.slots) {
		return ErrNotFound
	}
	s := &r.slots[idx]
	// The claim: swap this submission's own reference (checked by key)
	// for nil. A stale handle finds another reference or none, and the
	// slot's plain fields are not read before the claim is won.
	fr := s.fref.Load()
	if fr == nil || fr.key != q.key || !s.fref.CompareAndSwap(fr, nil) {
		return ErrNotFound
	}
	if n < 0 {
		n, err = 0, negativeResult(n, err)
	}
	s.fn, s.ferr = n, err
	s.panicE = fr.panicked.Load()
	s.cold = true
	// A waiter of its own is woken by finish; only a completion bound for
	// the queue may need a consumer blocked in the kernel to look.
	// (Read before finish: once published, the slot may serve another
	// request.)
	queued := !s.awaited.Load()
	r.finish(idx, s, false)
	if queued {
		r.kick()
	}
	return nil
}

// negativeResult is the error of a foreign request completed with the
// negative count n and err: err, or else the errno -n as io_uring's results
// give it (an error wrapping ErrInvalid when -n is no errno).
func negativeResult(n int, err error) error {
	switch {
	case err != nil:
		return err
	case n >= -4095:
		return sysErrno(-n)
	}
	return fmt.Errorf("%w: negative count %d", ErrInvalid, n)
}

// result computes what slot s's completion reports.
func (s *slot) result() (int, error) {
	f := s.flags.Load()
	if f&flNopped != 0 {
		return 0, cancelErr(f) // canceled before it started: never ran
	}
	if s.code == OpForeign {
		err := s.ferr
		if err != nil && f&(flTimedOut|flCtx) != 0 && isCancel(err) {
			err = cancelErr(f)
		}
		if s.panicE != nil {
			pe := *s.panicE
			pe.Err = err
			err = &pe
		}
		return s.fn, err
	}
	res := s.res
	if res >= 0 {
		return int(res), nil
	}
	errno := sysErrno(-res)
	switch {
	case errno == eCanceled && f&(flCancelReq|flTimedOut) != 0:
		return 0, cancelErr(f)
	case errno == eTime && s.code == OpTimeout:
		return 0, nil // the timer ran its course
	case (errno == eIntr || errno == errnoRestartSys) && f&flCancelReq != 0:
		// A blocking open interrupted in io_uring's workers reports the
		// kernel's internal ERESTARTSYS (ops_file.go).
		return 0, cancelErr(f)
	case errno == errnoRestartSys:
		errno = eIntr
	}
	// ECANCELED that nobody asked for is the file's own result (a
	// timerfd's, say): only a request we canceled completes as ErrCanceled.
	switch {
	case s.code == OpOpenAt || s.code == OpStatx:
		return 0, &IOError{Op: s.code.String(), FD: int(s.fd), Path: s.path(), Err: errno}
	case s.code.desc().args&argFD == 0:
		return 0, errno
	}
	return 0, &IOError{Op: s.code.String(), FD: int(s.fd), Err: errno}
}

// path returns the path of an OpenAt or Statx request (a C string in buf,
// or in bufs[0]: ops_file.go), for its error.
func (s *slot) path() string {
	p := s.buf
	if s.code == OpStatx {
		p = nil
		if len(s.bufs) > 0 {
			p = s.bufs[0]
		}
	}
	if i := bytes.IndexByte(p, 0); i >= 0 {
		p = p[:i]
	}
	return string(p)
}

// cancelErr returns the error of a request canceled with flags f.
func cancelErr(f uint32) error {
	switch {
	case f&flCtx != 0 && f&flTimedOut != 0:
		return errCtxTimeout
	case f&flCtx != 0:
		return errCtxCanceled
	case f&flTimedOut != 0:
		return ErrTimeout
	case f&flOverrun != 0:
		return ErrOverrun
	}
	return ErrCanceled
}

// ctxFlags returns the cancel flags for ctx, which has ended.
func ctxFlags(ctx context.Context) uint32 {
	f := uint32(flCancelReq | flCtx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		f |= flTimedOut
	}
	return f
}

// isCancel reports whether a foreign transport's error says the operation
// was canceled (ErrCanceled, ErrTimeout, or a wrapped ECANCELED).
func isCancel(err error) bool {
	return errors.Is(err, ErrCanceled) || errors.Is(err, eCanceled)
}

// take delivers slot idx (state stDelivering, claimed by the caller) and
// frees it onto free; the caller pushes free to the free list before the
// completion leaves its hands.
func (r *Ring) take(idx uint32, free *chain) Completion {
	s := &r.slots[idx]
	n, err := s.result()
	if err != nil {
		r.stats.noteErr(err)
	}
	key := s.key()
	c := Completion{Req: Request{r: r, key: key}, Op: s.code, N: n, Err: err, User: s.user}
	r.releaseKey(idx, s, key, free)
	return c
}

// takeDirect delivers slot idx, still stActive, into c (room of the reaping
// consumer) and frees it onto r.directFree. r.reapMu held: nobody else can
// reach the completion, so unlike take it needs no stDelivering claim.
func (r *Ring) takeDirect(idx uint32, s *slot, c *Completion) {
	key := s.key()
	var n int
	var err error
	if s.res >= 0 && s.code != OpForeign && s.flags.Load()&flNopped == 0 {
		n = int(s.res) // the common case, without result's checks
	} else {
		n, err = s.result()
		if err != nil {
			r.stats.noteErr(err)
		}
	}
	c.set(r, key, s, n, err)
	r.releaseKey(idx, s, key, &r.directFree)
}

// Reap moves completed requests into dst and returns how many (at least one
// unless it returns an error or timeout passes). timeout 0 polls without
// blocking; a negative timeout blocks until a completion arrives. Several
// goroutines may reap at once; each completion goes to exactly one. After
// Close, Reap returns what is still queued, then ErrClosed.
func (r *Ring) Reap(dst []Completion, timeout time.Duration) (int, error) {
	if !r.made() {
		return 0, errNoRing("reap", r)
	}
	if len(dst) == 0 {
		return 0, errEmptyDst()
	}
	// The common case first, without the set-up of a wait: what is queued,
	// or what the kernel has ready. (An entry Len misses, being pushed at
	// this moment, is found as if it had come a moment later.)
	if r.done.Len() > 0 {
		if n := r.popInto(dst); n > 0 {
			r.handOff()
			return n, nil
		}
	}
	if n, err := r.reapFirst(dst, false); n > 0 || err != nil {
		r.handOff()
		return n, err
	}
	n, err := r.reapWait(dst, timeout)
	r.handOff()
	return n, err
}

// reapFirst is Reap's first step, and SubmitAndReap's once its op is in:
// when no other goroutine holds the reaper role and no completion is
// queued, it delivers what the backend has ready straight into dst, the
// io_uring backend's without reapLocked's set-up for a wait.
//
// owed is startOne's: an enter to count out (exitOwed), which it does
// under r.reapMu when it takes it.
func (r *Ring) reapFirst(dst []Completion, owed bool) (int, error) {
	if !r.reapMu.TryLock() {
		if owed {
			r.plainBe.exitOwed(false)
		}
		return 0, nil
	}
	if owed {
		r.plainBe.exitOwed(true)
	}
	var n int
	var err error
	if r.done.Len() == 0 && !r.beClosed {
		if b := r.plainBe; b != nil { // it reaps inline
			r.direct, r.directN = dst, 0
			b.reapReady()
			n = r.endDirect()
		} else {
			n, _, err = r.reapLocked(dst, 0)
		}
	}
	r.unlockReap()
	return n, err
}

// reapWait is Reap once nothing was ready at once: it reaps or parks until
// a completion arrives or timeout passes.
func (r *Ring) reapWait(dst []Completion, timeout time.Duration) (int, error) {
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if n := r.popInto(dst); n > 0 {
			return n, nil
		}
		if r.closed.Load() && r.inflightNow() == 0 && r.done.Len() == 0 {
			return 0, ErrClosed
		}
		remaining := time.Duration(-1)
		if timeout == 0 {
			remaining = 0
		} else if timeout > 0 {
			remaining = time.Until(deadline)
			if remaining <= 0 {
				return r.popInto(dst), nil
			}
		}
		if r.reapMu.TryLock() {
			if r.done.Len() == 0 && !r.beClosed {
				n, waited, err := r.reapLocked(dst, remaining)
				r.unlockReap()
				if n > 0 {
					return n, nil
				}
				if err != nil {
					return 0, err
				}
				if waited || r.done.Len() > 0 {
					continue
				}
			} else {
				r.unlockReap()
				continue
			}
		}
		if timeout == 0 {
			return r.popInto(dst), nil
		}
		// Park until a completion is queued, or until the reaper leaves and
		// hands its role on.
		r.waiters.Add(1)
		r.parked.Add(1)
		if r.done.Len() > 0 || (r.kernelWork() && r.reapFree()) {
			r.parked.Add(-1)
			r.waiters.Add(-1)
			continue
		}
		var tc <-chan time.Time
		if remaining > 0 {
			if timer == nil {
				timer = time.NewTimer(remaining)
			} else {
				timer.Reset(remaining)
			}
			tc = timer.C
		}
		select {
		case <-r.wakeCh:
		case <-r.reaperCh:
		case <-tc:
		case <-r.closedCh:
		}
		r.parked.Add(-1)
		r.waiters.Add(-1)
	}
}

// reapLocked reaps the backend for a consumer with room dst: what is ready,
// and when that is nothing, remaining != 0 and requests are in the kernel,
// it waits up to remaining for more. It returns how many completions went
// straight into dst and whether it waited. r.reapMu held.
func (r *Ring) reapLocked(dst []Completion, remaining time.Duration) (n int, waited bool, err error) {
	if r.inlineReap && r.done.Len() == 0 {
		r.direct, r.directN = dst, 0
	}
	// Ready completions first: the common case, which needs no reaping
	// count (kick only has to find reapers that block). The io_uring
	// backend's by its concrete type: a direct call.
	if b := r.plainBe; b != nil {
		b.reapReady()
	} else {
		err = r.be.reap(false, 0)
	}
	if err == nil && r.directN == 0 && r.done.Len() == 0 && remaining != 0 && r.kernelWork() {
		waited = true
		r.reaping.Add(1)
		// A completion queued before the count went up was not kicked
		// for: look once more before blocking.
		if r.done.Len() == 0 {
			err = r.be.reap(true, remaining)
		}
		r.reaping.Add(-1)
	}
	return r.endDirect(), waited, err
}

// endDirect ends a delivery straight into a consumer's room (r.direct):
// it counts the completions delivered out of flight and frees their slots
// in one go, before the room reaches the caller, and returns how many.
// r.reapMu held.
func (r *Ring) endDirect() int {
	n := r.directN
	if n > 0 {
		release.AtomicUint64(&r.endedDirect, r.endedDirect.Load()+uint64(n))
		r.noteDrain()
		r.pushFree(&r.directFree)
	}
	r.direct, r.directN = nil, 0
	return n
}

// unlockReap releases the reaper role; when consumers are parked, one of
// them is woken to take it, so completions never wait for a reaper that
// left. No goroutine reaps in the background: a consumer that waits is the
// reaper, which saves a hand-off per completion.
func (r *Ring) unlockReap() {
	r.reapMu.Unlock()
	// The role is handed on only when there is something to reap: with
	// nothing in the kernel, parked consumers wait for the queue (wakeCh),
	// and waking one to reap nothing would have it hand the role on in
	// turn, round and round (a CPU kept busy by idle consumers). A
	// submitter that puts work in the kernel afterwards hands the role on
	// itself (handOff: its count is seen by this check or it sees parked).
	if r.parked.Load() > 0 && r.kernelWork() {
		select {
		case r.reaperCh <- struct{}{}:
		default:
		}
	}
	// What the pass decided to hand to the backend (held.go).
	r.submitDeferred()
}

// reapFree reports whether nobody holds the reaper role right now; a
// goroutine about to park takes it instead (checked after parked is
// raised, so a reaper leaving at the same time sees the parked count).
func (r *Ring) reapFree() bool {
	if r.reapMu.TryLock() {
		r.reapMu.Unlock()
		return true
	}
	return false
}

// kernelWork reports whether requests other than foreign ones are in
// flight: only then is there anything for a reaper to reap.
func (r *Ring) kernelWork() bool { return r.inflightNow() > r.foreign.Load() }

// handOff passes the reaper role on when a consumer leaves after a wake-up
// it did not use.
func (r *Ring) handOff() {
	if r.parked.Load() > 0 {
		r.handOffSlow()
	}
}

func (r *Ring) handOffSlow() {
	if r.reapMu.TryLock() {
		r.unlockReap()
	}
}

// popInto delivers queued completions into dst.
func (r *Ring) popInto(dst []Completion) int {
	var free chain
	n := 0
	for n < len(dst) {
		idx, ok := r.done.Pop()
		if !ok {
			break
		}
		s := &r.slots[idx]
		if !s.move(s.key(), stDone, stDelivering) {
			// Only a multishot request is queued while active: one of
			// its completions (multishot.go).
			dst[n] = r.takeShot(idx, s, &free)
			n++
			continue
		}
		dst[n] = r.take(idx, &free)
		n++
	}
	r.pushFree(&free)
	if n > 0 && r.done.Len() > 0 && r.waiters.Load() > 0 {
		select { // pass the baton to another parked consumer
		case r.wakeCh <- struct{}{}:
		default:
		}
	}
	return n
}

// CancelAll cancels every request in flight (queued ones before they reach
// the kernel). Each still completes exactly once. It does not cancel tokens:
// later requests run normally. It runs the cancel hooks of the foreign
// requests in flight that no cancel claimed yet (those canceled before
// included, when their cancel has not got to the hook yet: see Foreign),
// on the calling goroutine once unlocked, each once. It returns ErrClosed
// after Close, and a *HookPanicError when a cancel hook it ran panicked
// (every other hook still ran).
func (r *Ring) CancelAll() error {
	if !r.made() {
		return errNoRing("cancel", r)
	}
	r.sqMu.Lock()
	if r.closed.Load() {
		r.sqMu.Unlock()
		return ErrClosed
	}
	var hooks hookSet
	kick := r.cancelAllLocked(flCancelReq, &hooks)
	r.unlockSQ()
	if kick {
		r.kick()
	}
	return hooks.run(nil)
}

// cancelAllLocked cancels every request in flight with flags f, adds the
// cancel hooks of foreign ones to hooks, to run once r.sqMu is released,
// and reports whether a request completed here. r.sqMu held.
func (r *Ring) cancelAllLocked(f uint32, hooks *hookSet) (kick bool) {
	for i := range r.slots {
		s := &r.slots[i]
		key, st := s.keyState()
		if st != stActive {
			continue
		}
		if s.foreign.Load() {
			s.flags.Or(f)
			// Its hook, unless a cancel before claimed it (callHook):
			// a hook runs once, whoever cancels the request again.
			if fr := s.pendingHook(key); fr != nil {
				hooks.add(fr)
			}
			continue
		}
		if s.flags.Load()&flHeld != 0 {
			kick = r.cancelHeld(uint32(i), s, f) || kick
			continue
		}
		// Marked as asked for: an ECANCELED it gets is this cancel's.
		s.flags.Or(f)
	}
	if !r.beDead {
		r.be.cancelAll()
		r.be.flush()
	}
	return kick
}

// Cancel cancels each of reqs that is in flight, like Request.Cancel on
// each, with the cancels reaching the kernel in one batch (one system call
// for all of them, where Request.Cancel makes one each). It returns how
// many it canceled: those in flight and not canceled before (by a cancel,
// their token, a deadline, a context, or an earlier argument: a request
// given twice counts once); the others (completed, already canceled,
// stale, zero, of another ring) are skipped. Each canceled request still
// completes exactly once. It runs the foreign ones' cancel hooks on the
// calling goroutine once unlocked, each once, in the order of reqs: those
// it canceled, and those canceled before whose hook no cancel claimed yet
// (not counted: see Foreign). The error is ErrClosed after Close, or a
// *HookPanicError when a cancel hook it ran panicked (every other cancel
// still happened).
func (r *Ring) Cancel(reqs ...Request) (int, error) {
	if !r.made() {
		return 0, errNoRing("cancel", r)
	}
	return r.cancelRequests(flCancelReq, reqs...)
}

// cancelRequests cancels each of reqs that is in flight with flags f
// (flCancelReq, and flTimedOut for a deadline, flCtx for a context), in one
// batch, and runs the cancel hooks of foreign ones once r.sqMu is released.
// It returns how many were in flight, and ErrClosed after Close or the
// first hook's *HookPanicError.
func (r *Ring) cancelRequests(f uint32, reqs ...Request) (int, error) {
	r.sqMu.Lock()
	if r.beDead {
		r.sqMu.Unlock()
		return 0, ErrClosed
	}
	n := 0
	if b := r.plainBe; b != nil {
		// Most of them, or all, here and not through cancelLocked: a
		// call more costs a lone cancel 23 instructions and measurably
		// slowed the bursts (Token.cancel does the same).
		m, rest := b.cancelPlains(f, reqs)
		switch {
		case m < len(reqs)-len(rest):
			// It went past requests it did not cancel, maybe a foreign
			// one canceled already whose hook is still to run (see
			// skippedHooks): cancelLocked looks at them all again (those
			// canceled just now are canceled already then, not counted
			// twice). Only a cancel that skips some comes here.
			n = m
		case len(rest) == 0:
			// No foreign request, none held: no hook to run, nothing
			// completed here.
			b.flush()
			r.unlockSQ()
			return m, nil
		default:
			n, reqs = m, rest
		}
	}
	return r.cancelRest(f, n, reqs, false)
}

// cancelRest is the rest of cancelRequests (and of Token.cancel) when
// reqs, the requests cancelPlains left (all of them without it), is not
// empty: n were canceled before it. It runs the foreign ones' cancel hooks
// once r.sqMu is released, in the order of reqs, or the opposite order
// with reverse. The hooks are set up only here, where there may be some: a
// hookSet is 144 bytes to clear, and running an empty one is a call more
// (together about 90 instructions of a lone cancel). r.sqMu held; it
// releases it.
func (r *Ring) cancelRest(f uint32, n int, reqs []Request, reverse bool) (int, error) {
	var hooks hookSet
	m, kick := r.cancelLocked(f, reqs, &hooks)
	r.be.flush()
	r.unlockSQ()
	if kick {
		r.kick()
	}
	if reverse {
		hooks.reverse()
	}
	return n + m, hooks.run(nil)
}

// cancelLocked is the rest of cancelRequests' work under r.sqMu, and of
// Token.cancel's, after the backend's cancelPlains stopped at reqs[0] (or
// with no such backend): it cancels each of reqs that is in flight with
// flags f, reqs[0] by cancelOne and those after it as the caller did,
// adds the cancel hooks of foreign ones to hooks, and returns how many it
// canceled and whether a request completed here (the caller kicks reapers
// once unlocked). The caller flushes. r.sqMu held.
func (r *Ring) cancelLocked(f uint32, reqs []Request, hooks *hookSet) (n int, kick bool) {
	for len(reqs) > 0 {
		q := reqs[0]
		reqs = reqs[1:]
		if q.r == r && int(q.key&idxMask) < len(r.slots) {
			fr, ok, k := r.cancelOne(q.key, f)
			if ok {
				n++
			}
			if fr != nil {
				hooks.add(fr)
			}
			kick = kick || k
		}
		if b := r.plainBe; b != nil && len(reqs) > 0 {
			m, rest := b.cancelPlains(f, reqs)
			if went := len(reqs) - len(rest); m < went {
				r.skippedHooks(reqs[:went], hooks)
			}
			n, reqs = n+m, rest
		}
	}
	return n, kick
}

// skippedHooks adds to hooks the cancel hooks still to run of the foreign
// requests among qs, requests the backend's cancelPlains went past: it
// stops at a foreign request, unless that one is canceled already (the
// first cause stands), and then its hook may not have run yet (its cancel
// runs hooks one after another once unlocked; see cancelOne). r.sqMu held.
func (r *Ring) skippedHooks(qs []Request, hooks *hookSet) {
	for _, q := range qs {
		if s := q.slot(); q.r == r && s != nil && q.active() && s.foreign.Load() {
			if fr := s.pendingHook(q.key); fr != nil {
				hooks.add(fr)
			}
		}
	}
}

// cancelOne cancels the request with key with flags f, if it is in flight:
// a held one completes here (kick: reapers are to be woken once r.sqMu is
// released), a foreign one's hook is returned (to run once r.sqMu is
// released), and the backend is asked for the others (the caller flushes).
// r.sqMu held.
func (r *Ring) cancelOne(key uint64, f uint32) (hook *foreignRef, ok, kick bool) {
	idx := uint32(key & idxMask)
	s := &r.slots[idx]
	if k, st := s.keyState(); k != key || st != stActive {
		return nil, false, false
	}
	// Under sqMu no slot becomes active, so one that is active with our key
	// stays ours until it completes; a foreign one completes without sqMu,
	// so its plain fields are off limits: its hook is reached through fref,
	// checked by key.
	foreign := s.foreign.Load()
	if !foreign && s.multi && s.ms.ended.Load() {
		// A multishot request whose final completion is recorded and
		// waits behind its others: nothing is left to cancel.
		return nil, false, false
	}
	if !s.askCancel(f) {
		// Canceled already: the first cause stands, and this cancel
		// counts for nothing. But a foreign request's hook may not have
		// run yet: the cancel that marked it runs its hooks one after
		// another, once unlocked, and this one may come from one of them
		// (or from any goroutine meanwhile). Whoever claims it first runs
		// it (callHook), so that this cancel need not wait for that one.
		if foreign {
			if fr := s.pendingHook(key); fr != nil {
				return fr, false, false
			}
		}
		return nil, false, false
	}
	switch {
	case foreign:
		if s.key() != key {
			// Completed, delivered and reused meanwhile: the flags belong
			// to another request now.
			s.flags.And(^f)
			return nil, false, false
		}
		if fr := s.fref.Load(); fr != nil && fr.key == key {
			hook = fr
		}
	case s.flags.Load()&flHeld != 0:
		kick = r.cancelHeld(idx, s, f)
	default:
		// A request of the backend completes without sqMu too, but it is
		// reused only through sqMu (enqueue), so its fields are stable.
		if b := r.plainBe; b != nil {
			b.cancel(idx, key) // by its concrete type: a direct call
		} else {
			r.be.cancel(idx, key)
		}
	}
	return hook, true, kick
}

// askCancel records the cancel flags f on s unless a cancel was asked for
// already, and reports whether it did. The first cause of a cancel wins:
// a request canceled by its caller, its token, its deadline, its context or
// the ring says so in its completion, whatever asks after it, and a second
// cancel finds nothing left to cancel on every backend (io_uring would
// take another cancel SQE; the poll backend has completed the request).
func (s *slot) askCancel(f uint32) bool {
	for {
		old := s.flags.Load()
		if old&flCancelReq != 0 {
			return false
		}
		if s.flags.CompareAndSwap(old, old|f) {
			return true
		}
	}
}

// cancelKey cancels the request with key with flags f. It returns
// ErrNotFound when the request is not in flight (or the ring is closed),
// and a *HookPanicError when the request's cancel hook panicked.
func (r *Ring) cancelKey(key uint64, f uint32) error {
	n, err := r.cancelRequests(f, Request{r: r, key: key})
	if n == 0 && (err == nil || err == ErrClosed) {
		return ErrNotFound
	}
	return err
}

// Close cancels every request, waits until each has completed, and releases
// the rings. Completions not yet delivered stay available to Reap and Wait;
// every other call returns ErrClosed afterwards. Foreign requests must be
// completed by their owners for Close to return: Close runs, before it
// drains, the cancel hooks that no cancel claimed yet (each hook runs once:
// see Foreign), on the calling goroutine. A Close from a hook of another
// cancel thus runs itself the hooks that cancel has not reached yet, rather
// than wait for it to (its drain waits for the hook's own request too: its
// owner completes it first). A cancel hook that panics does not stop Close:
// it drains and releases everything, then returns a *HookPanicError.
func (r *Ring) Close() error {
	if !r.made() {
		return errNoRing("close", r)
	}
	r.sqMu.Lock()
	if r.closed.Load() {
		r.sqMu.Unlock()
		return &OpError{Op: "close", Err: ErrClosed}
	}
	r.closed.Store(true)
	var hooks hookSet
	kick := r.cancelAllLocked(flCancelReq, &hooks)
	r.unlockSQ()
	if kick {
		r.kick()
	}
	// A hook that ends this goroutine (runtime.Goexit) leaves the drain
	// and the release to another one: the ring is closed all the same.
	hookErr := hooks.run(func() { r.drainAndRelease() })
	err := r.drainAndRelease()
	if hookErr != nil {
		return errors.Join(hookErr, err)
	}
	return err
}

// drainAndRelease is the end of Close, once every request was canceled:
// it waits until each has completed and releases the backend and what the
// kernel held.
func (r *Ring) drainAndRelease() error {
	// Drain: every accepted request completes.
	for r.inflightNow() > 0 {
		if r.kernelWork() {
			r.reapMu.Lock()
			if r.kernelWork() {
				r.reaping.Add(1)
				r.be.reap(true, 20*time.Millisecond)
				r.reaping.Add(-1)
			}
			r.unlockReap()
			continue
		}
		// Only foreign requests (or held ones on their way) are left:
		// every completion signals drainCh once closed is set.
		<-r.drainCh
		r.submitDeferred()
	}
	// Fence the backend off, then close it outside the locks (its own
	// goroutines may be waiting for them).
	r.sqMu.Lock()
	r.beDead = true
	r.sqMu.Unlock()
	r.reapMu.Lock()
	r.beClosed = true
	r.reapMu.Unlock()
	err := r.be.close()
	// What the kernel held for requests is released with it: the
	// provided-buffer rings' mappings and the registered files.
	r.closeBufRings()
	r.closeFiles()
	close(r.closedCh)
	// Completions nobody took keep their results (and their buffers stay
	// reachable) until Reap or Wait delivers them.
	return err
}

// Do submits op and waits for its completion; ctx ending cancels it (the
// completion, ErrCanceled or the real result if it won the race, is still
// awaited and returned). The error is for a refused submission only (a nil
// ctx is refused with ErrInvalid); the operation's own error is in
// Completion.Err.
func (r *Ring) Do(ctx context.Context, op Op) (Completion, error) {
	if !r.made() {
		return Completion{}, errNoRing(op.code.String(), r)
	}
	if ctx == nil {
		return Completion{}, errNilContext(op.code.String())
	}
	if ctx.Err() != nil {
		// An ended context starts nothing; bad input and a closed ring are
		// still reported as such.
		if err := op.check(r); err != nil {
			return Completion{}, err
		}
		if op.code.desc().multi {
			return Completion{}, errAwaitedMulti(&op)
		}
		if r.closed.Load() {
			return Completion{}, &OpError{Op: op.code.String(), Err: ErrClosed}
		}
		return Completion{Op: op.code, Err: cancelErr(ctxFlags(ctx)), User: op.user}, nil
	}
	q, err := r.Start(op)
	if err != nil {
		return Completion{}, err
	}
	return q.Wait(ctx)
}

// errAwaitedMulti refuses a multishot op to Start and Do.
func errAwaitedMulti(op *Op) error {
	return badOp(op.code.desc(), "a multishot request delivers its completions to Reap: submit it with Submit, not Start or Do")
}

// ReadAt is a synchronous read at offset off (-1: the current position)
// that ctx can cancel.
func (r *Ring) ReadAt(ctx context.Context, fd int, buf []byte, off int64) (int, error) {
	c, err := r.Do(ctx, Read(fd, buf, off))
	if err != nil {
		return 0, err
	}
	return c.N, c.Err
}

// WriteAt is a synchronous write at offset off (-1: the current position)
// that ctx can cancel.
func (r *Ring) WriteAt(ctx context.Context, fd int, buf []byte, off int64) (int, error) {
	c, err := r.Do(ctx, Write(fd, buf, off))
	if err != nil {
		return 0, err
	}
	return c.N, c.Err
}
