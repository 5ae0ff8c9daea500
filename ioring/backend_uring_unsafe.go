//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cancelio/cancelio/internal/release"
	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// uringSetup creates the kernel ring; tests replace it to simulate a kernel
// where io_uring is disabled.
var uringSetup = uring.Setup

// uringSupports reports whether the kernel knows an io_uring opcode; tests
// replace it to simulate an older kernel.
var uringSupports = (*uring.Ring).Supports

// coreOps are the io_uring opcodes the ring itself needs, for every
// request: wake-ups, cancels and deadlines. The operations' own opcodes are
// probed one by one (opImpls): one the kernel lacks is ErrNotSupported for
// that operation alone, and the ring stays on io_uring for the others.
var coreOps = []uint8{uring.OpNop, uring.OpLinkTimeout, uring.OpAsyncCancel}

// uringBackend runs requests on io_uring. Submission (SQ) is serialised by
// Ring.sqMu, reaping (CQ) by Ring.reapMu. There is no background reaper: the
// consumer that waits reaps (submit, then wait in io_uring_enter), and
// parked consumers take over the role when it leaves (Ring.unlockReap).
type uringBackend struct {
	r         *Ring
	blk       blockingIO // requests on blocking character devices
	ring      *uring.Ring
	cancelAny bool // IORING_ASYNC_CANCEL_ANY|ALL (kernel 5.19)
	extArg    bool // io_uring_enter takes a timeout (IORING_FEAT_EXT_ARG, 5.11)
	// cancelFlags are the SQE flags of a cancel: IOSQE_CQE_SKIP_SUCCESS
	// where the kernel has it (5.17). A cancel's own result is
	// informational (handle drops it), so one that worked posts nothing:
	// a burst of cancels costs the kernel and the reaper half the CQEs.
	cancelFlags uint8
	efile       *os.File
	// efd is efile's descriptor, kept for the registration at the first
	// park: efile.Fd() would switch the file to blocking mode, and the
	// park's read deadline would stop working.
	efd int
	// evOn: efd is registered with the ring. Where registering does not
	// stall the ring (lazyEventFD) that waits for the first park, so a
	// ring whose reapers never block does not pay for the notifications
	// (see newURing). Guarded by Ring.reapMu after New.
	evOn  bool
	evbuf [8]byte
	// evIdle unregisters efd once no reaper has parked for evIdleFor
	// (evQuiet): a registered eventfd costs every enter that posts a
	// completion, its notifications off or not, and a ring whose reapers
	// parked once, then find their completions ready again, would pay
	// for it for good. lastEvPark is when the last park began. Only where
	// registering is lazy; nil elsewhere.
	evIdle     *time.Timer
	evIdleFor  time.Duration // evIdleFor when the ring was made
	lastEvPark time.Time     // guarded by Ring.reapMu
	evRegs     int           // registrations at a park, for the tests; guarded by Ring.reapMu
	lastYield  time.Time     // guarded by Ring.reapMu
	lastPark   time.Time     // guarded by Ring.reapMu
	// Enters run without Ring.sqMu (see enter), and close unmaps the ring
	// they read: close waits until every enter let out has finished. An
	// enter is let out under sqMu (tickets, refused once Ring.beDead is
	// set), and counts itself out with one atomic add (exits): a lock-free
	// enter costs one atomic operation, where a read lock cost two; or, on
	// SubmitAndReap's path, with a plain store under Ring.reapMu (exitsR,
	// see startOne).
	tickets uint64 // guarded by Ring.sqMu
	exits   atomic.Uint64
	exitsR  atomic.Uint64 // more exits, written (release) under Ring.reapMu only (exitOwed)
	// The system calls of enters that uring.Ring does not count, for
	// Stats.KernelEnters: one per exit, minus the exits that found nothing
	// to enter, plus the rest (retries, a reaper's enters).
	idleExits  atomic.Uint64
	extraEnter atomic.Uint64
	// woken is set while a wake nop is on its way to the reaper: the kicks
	// of a burst of foreign completions (a token canceling 64 queued USB
	// transfers) then cost one nop and one enter, not one each. The
	// reaper clears it when it takes the nop's CQE, before it looks at
	// the completion queue again, so a kick that finds it set is seen.
	woken atomic.Bool
	// pass is what a reap pass (reapReady) keeps across its CQEs and
	// settles once at its end (endPass): a burst of 64 cancels then takes
	// the streams' lock and adds to the counters once, not 64 times.
	// Guarded by Ring.reapMu.
	pass reapPass
}

// reapPass is the state reapReady carries from one CQE to the next.
type reapPass struct {
	used     bool   // something below was set: endPass is due
	held     uint8  // the locks the pass holds: passOrd, passTok
	tok      *Token // the token whose lock the pass holds (tokPass)
	canceled uint64 // completions canceled in the pass, not yet in Ring.stats
	timedOut uint64 // completions timed out in the pass, likewise
}

// The locks a reap pass may hold (reapPass.held).
const (
	passOrd = 1 << iota // Ring.ordMu (canceledRun)
	passTok             // reapPass.tok's mu (tokPass)
)

// note counts a completion canceled with flags f, whose error is
// cancelErr(f), as noteErr would count that error, in the pass's own
// counters (endPass adds them to the ring's).
func (p *reapPass) note(f uint32) {
	if f&(flCtx|flTimedOut|flOverrun) == flOverrun {
		return // ErrOverrun (see noteErr)
	}
	if f&flTimedOut != 0 {
		p.timedOut++
	} else {
		p.canceled++
	}
}

func newURing(r *Ring, entries uint32) (backend, error) {
	// Completions never overflow into kernel memory in steady state: the
	// CQ is 4x the SQ, within the kernel's limit of twice its largest SQ
	// (IORING_MAX_CQ_ENTRIES).
	cq := min(4*entries, 2*uring.MaxEntries)
	ring, err := uringSetup(entries, cq)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOMEM) {
			// Is it this ring's size, or io_uring itself? A minimal ring
			// tells: when it works, the configuration is at fault, and
			// that is reported, never hidden by the fallback.
			if small, serr := uringSetup(2, 0); serr == nil {
				small.Close()
				return nil, &configError{fmt.Errorf("io_uring_setup with %d entries (completion ring %d): %w (this kernel takes a smaller Config.Entries)", entries, cq, err)}
			}
		}
		return nil, fmt.Errorf("io_uring_setup: %w", err)
	}
	b := &uringBackend{r: r, ring: ring}
	fail := func(err error) (backend, error) {
		ring.Close()
		return nil, err
	}
	if err := ring.Probe(); err != nil {
		return fail(fmt.Errorf("%w: %v", ErrNotSupported, err))
	}
	for _, op := range coreOps {
		if !ring.Supports(op) {
			return fail(fmt.Errorf("%w: kernel io_uring lacks opcode %d", ErrNotSupported, op))
		}
	}
	for op := range opImpls {
		if im := &opImpls[op]; im.prep != nil && !uringSupports(ring, im.uring) {
			r.lacks[op] = true
		}
	}
	for op := range opImpls {
		if Opcode(op).valid() && Opcode(op).desc().multi && !r.lacks[op] && !uringMultishot(b, Opcode(op)) {
			r.lacks[op] = true
		}
	}
	// SUBMIT_STABLE: the kernel has copied the iovecs and timespecs that
	// live in the slots when io_uring_enter returns, so only the buffers
	// themselves stay in use until their completions.
	const need = uring.FeatNoDrop | uring.FeatRWCurPos | uring.FeatSubmitStab
	if ring.Features()&need != need {
		return fail(fmt.Errorf("%w: kernel io_uring lacks NODROP, RW_CUR_POS or SUBMIT_STABLE (features %#x)", ErrNotSupported, ring.Features()))
	}
	b.cancelAny = b.probeCancelAny()
	b.extArg = ring.Features()&uring.FeatExtArg != 0
	if ring.Features()&uring.FeatCQESkip != 0 {
		b.cancelFlags = uring.SQECQESkipSucc
	}
	// An eventfd the kernel signals on completions lets a waiting reaper
	// park in Go's netpoller instead of in io_uring_enter, which would keep
	// its P (GOMAXPROCS slot) and starve other goroutines on small machines.
	// Its notifications stay off unless a reaper is parked on it.
	//
	// Registered, it costs every io_uring_enter that posts completions
	// about 27 ns here (6.18), notifications off or not: 5-7% of a
	// one-NOP round trip. So where the kernel registers an eventfd without
	// stalling the ring (lazyEventFD), the first park registers it: a ring
	// whose reapers always find their completions ready never does. Where
	// registering would stall the ring until every request in flight had
	// completed, it is registered now, while nothing is.
	b.ring.SetEventFDEnabled(false)
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fail(fmt.Errorf("eventfd: %w", err))
	}
	b.efd = efd
	if !lazyEventFD() {
		if err := ring.RegisterEventFD(efd); err != nil {
			unix.Close(efd)
			return fail(fmt.Errorf("register eventfd: %w", err))
		}
		b.evOn = true
	}
	b.efile = os.NewFile(uintptr(efd), "ioring-eventfd")
	if !b.evOn {
		b.evIdleFor = evIdleFor
		b.evIdle = time.AfterFunc(time.Hour, b.evQuiet)
		b.evIdle.Stop() // armed by the first park
	}
	return b, nil
}

// evIdleFor is how long no reaper must have parked before the eventfd is
// unregistered (a variable for the tests, read when a ring is made).
// Registering it again costs the next park a system call: at most one pair
// a second.
var evIdleFor = time.Second

// evQuiet is the evIdle timer's function: it unregisters the eventfd when
// no reaper has parked for evIdleFor, and looks again later otherwise.
// It holds the reaper role meanwhile, so no reaper is parked on the
// eventfd, and none registers it again, as it goes; a reaper that comes
// later registers it at its park, as the first one did.
func (b *uringBackend) evQuiet() {
	r := b.r
	if !r.reapMu.TryLock() {
		if !r.closed.Load() { // Close stops the timer: not again after it
			b.evIdle.Reset(b.evIdleFor) // a reaper is at work, parked maybe
		}
		return
	}
	defer r.unlockReap()
	if r.beClosed || !b.evOn {
		return
	}
	if idle := time.Since(b.lastEvPark); idle < b.evIdleFor {
		b.evIdle.Reset(b.evIdleFor - idle)
		return
	}
	if b.ring.UnregisterEventFD() == nil {
		b.evOn = false
	}
}

// lazyEventFD reports whether this kernel registers a ring's eventfd
// without quiescing the ring (Linux 5.18 and later). Before, registering
// waits until every request in flight has completed, which a reaper
// about to park for one of them must never do.
var lazyEventFD = sync.OnceValue(func() bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 18)
})

// kernelAtLeast reports whether release, a kernel release string such as
// "6.1.0-18-amd64", is major.minor or later; false when it does not parse.
func kernelAtLeast(release string, major, minor int) bool {
	var v [2]int
	i := 0
	for k := range v {
		start := i
		for i < len(release) && release[i] >= '0' && release[i] <= '9' && i-start < 6 {
			v[k] = v[k]*10 + int(release[i]-'0')
			i++
		}
		if i == start {
			return false
		}
		if k == 0 {
			if i == len(release) || release[i] != '.' {
				return false
			}
			i++
		}
	}
	return v[0] > major || v[0] == major && v[1] >= minor
}

// uringUnavailable reports whether a newURing error means io_uring cannot be
// used here, so that New may fall back.
func uringUnavailable(err error) bool {
	var ce *configError
	if errors.As(err, &ce) {
		return false
	}
	// EINVAL: flags this kernel does not know; ENOMEM: the locked-memory
	// limit of kernels before 5.12.
	return uring.Unavailable(err) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOMEM) ||
		errors.Is(err, ErrNotSupported)
}

// configError is a setup error caused by the Config, not by the kernel's
// lack of io_uring: New reports it instead of falling back.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// probeCancelAny asks the kernel for an IORING_ASYNC_CANCEL_ANY|ALL with
// nothing in flight: 0 canceled means it knows the flags.
func (b *uringBackend) probeCancelAny() bool {
	sqe, _ := b.ring.NextSQE()
	sqe.Opcode = uring.OpAsyncCancel
	sqe.FD = -1
	sqe.OpFlags = uring.CancelAny | uring.CancelAll
	sqe.UserData = kindCancel << kindShft
	if _, err := b.ring.Submit(1); err != nil {
		return false
	}
	ok := false
	first, second := b.ring.PeekCQ()
	for _, c := range append(first, second...) {
		if c.UserData == kindCancel<<kindShft {
			ok = c.Res >= 0
		}
	}
	b.ring.AdvanceCQ(uint32(len(first) + len(second)))
	return ok
}

func (b *uringBackend) nativeDeadlines() bool { return true }

func (b *uringBackend) reapsInline() bool { return true }

// sqe returns a free SQE, handing what is queued to the kernel first when
// the SQ is full. r.sqMu held.
func (b *uringBackend) sqe() (*uring.SQE, uint32) {
	for {
		if sqe, pos := b.ring.NextSQE(); sqe != nil {
			return sqe, pos
		}
		b.submitNow()
	}
}

func (b *uringBackend) submit(idx uint32, s *slot) error {
	im := &opImpls[s.code]
	if im.prep == nil || b.r.lacks[s.code] {
		return errNoPrep(s.code)
	}
	key := s.key()
	// A read or write at the current position on a blocking terminal goes
	// to the kernel's workers, its deadline kept by a timer of the ring
	// (backend_uring_blocking_linux.go), which Ring.enqueue arms after
	// this (runDeferred armed it before, for a request held or retried).
	blocking := s.off == -1 && b.blockingReq(s)
	if blocking && s.deadline > 0 {
		s.timerDL = true
	}
	s.linked = s.deadline > 0 && !s.timerDL
	if s.linked && b.ring.SQFree() < 2 {
		b.submitNow() // the request and its timeout go in together
	}
	sqe := b.nextSQE(s, key, im)
	if s.fixedFD {
		sqe.Flags = uring.SQEFixedFile
	}
	im.prep(s, sqe)
	if blocking {
		b.queueBlocking(key, sqe)
	}
	if s.linked {
		sqe.Flags |= uring.SQEIOLink
		lt, _ := b.sqe()
		lt.Opcode = uring.OpLinkTimeout
		lt.FD = -1
		s.ts[1] = uring.NsecToTimespec(int64(s.deadline))
		lt.Addr = uint64(uintptr(unsafe.Pointer(&s.ts[1])))
		lt.Len = 1
		lt.UserData = kindLink<<kindShft | key
		s.pending.Store(2) // published to the reaper with the SQ tail
	}
	return nil
}

// submitPlain is enqueue and submit in one step for an op that Op.plain
// admits, in a slot just allocated with key, filled by slot.fillPlain
// (its wake channel drained when it is awaited) and counted in flight. Its opcode is
// one this ring supports (Op.check said so), and it has no linked timeout.
// r.sqMu held. An error means nothing was started.
func (b *uringBackend) submitPlain(idx uint32, s *slot, key uint64) error {
	im := &opImpls[s.code]
	if im.prep == nil {
		return errNoPrep(s.code)
	}
	s.set(key, stActive) // publish the slot to the completer
	sqe := b.nextSQE(s, key, im)
	im.prep(s, sqe)
	if s.off == -1 && b.blockingReq(s) {
		b.queueBlocking(key, sqe)
	}
	return nil
}

// errNoPrep is the error for an operation the io_uring backend has no
// preparation for.
func errNoPrep(code Opcode) error { return fmt.Errorf("%w: %v on io_uring", ErrNotSupported, code) }

// plainBackend returns be when it is the io_uring backend, the one with
// a one-step submission for plain ops; else nil.
func plainBackend(be backend) *uringBackend {
	b, _ := be.(*uringBackend)
	return b
}

// submitPlains is Op.checkedPlain, Ring.alloc, slot.fillPlain and
// submitPlain for each of ops in turn, in one loop: SubmitBatch's for a
// batch whose first op checkedPlain admits (the caller checked it, and
// only it). It stores the Requests in reqs and returns how many ops went
// in: fewer than len(ops) only when the slots ran out (nil error: the
// caller reports ErrFull). When an op is not admitted it returns
// errNotFast, and nothing of the batch was started. r.sqMu held; the
// caller counted all of ops in flight.
//
// The check is in the loop, not in a pass before it, which would cost a
// second walk over ops. An op found wanting after others were filled has
// them taken back (unwind): their SQEs were taken but not yet published,
// as long as the SQ has room for the whole batch. When it has not, the
// loop hands SQEs to the kernel midway, so the ops are checked first.
func (b *uringBackend) submitPlains(ops []Op, reqs []Request) (int, error) {
	r := b.r
	reqs = reqs[:len(ops)]
	room := b.ring.SQFree() // SQEs to take before looking again
	// ops[0] the caller checked; the others from unchecked on are checked
	// in the loop.
	unchecked := 1
	if uint32(len(ops)) > room {
		for i := 1; i < len(ops); i++ {
			if !ops[i].checkedPlain(r) {
				return 0, errNotFast
			}
		}
		unchecked = len(ops)
	}
	for i := 0; ; {
		var stop fillStop
		i, stop = b.fillPlains(ops, reqs, i, min(len(ops), i+int(room)), unchecked)
		switch {
		case stop == fillNotFast:
			b.unwind(reqs[:i])
			return 0, errNotFast
		case i == len(ops):
			return i, nil
		case stop == fillNoSlot:
			return b.outOfSlots(ops, reqs, i, unchecked)
		case stop == fillCall:
			// ops[i] is admitted, and there is room for its SQE.
			if !b.plainCall(&ops[i], &reqs[i], false) {
				return b.outOfSlots(ops, reqs, i, unchecked)
			}
			i++
		}
		// Out of room: hand what is queued to the kernel (all of ops was
		// checked, as they did not fit).
		for room = b.ring.SQFree(); room == 0; room = b.ring.SQFree() {
			b.submitNow()
		}
	}
}

// startOne is Submit, Start (awaited) or SubmitBatch for one op, when op
// is plain (checkedPlain admitted it) and nothing else is due: it starts op
// into req, counts it in flight, publishes it, releases r.sqMu and hands the
// SQE to the kernel, as the general path would. It reports false, with
// nothing changed and r.sqMu still held, when the SQ is full, no slot is
// free or deferred submissions wait: the general path handles those.
// r.sqMu held, the ring not closed.
//
// The system call is made from this frame, not from unlockSQ's four calls
// down, and that is the point: the kernel's own calls overwrite the CPU's
// return-address predictions, so each frame the call returns through
// afterwards costs a mispredicted return (measured on the bare ABI: 8 more
// frames took a 4 KiB read at queue depth 1 from about 1,060 to 1,130 ns).
//
// With owe set, an enter that succeeded at once is not counted out
// (exits): owed reports it, and the caller counts it under r.reapMu, which
// it takes next anyway (Ring.reapFirst), with a plain store in place of a
// locked add.
func (b *uringBackend) startOne(op *Op, req *Request, awaited, owe bool) (started, owed bool) {
	r := b.r
	if r.def.n.Load() > 0 || b.ring.SQFree() == 0 || !b.plainCall(op, req, awaited) {
		return false, false
	}
	r.addStarted(1) // before the request can complete
	b.ring.Publish()
	b.tickets++ // as enterTicket: the SQE is published and not consumed
	r.sqMu.Unlock()
	// enter, with the first system call made here.
	if n := b.ring.Unsubmitted(); n == 0 {
		b.enterMore(0, 0) // another enter handed it over already
	} else if err := b.ring.EnterOnce(n); err != 0 {
		b.enterMore(1, err)
	} else if owe {
		owed = true
	} else {
		b.exits.Add(1) // last: close may unmap the ring once it counts this
	}
	// As unlockSQ: an entry deferred while the lock was held.
	r.submitDeferred()
	return true, owed
}

// exitOwed counts out an enter that startOne left owed: with a plain
// store when the caller holds r.reapMu (exitsR), else with an atomic add.
// Close takes r.reapMu before it closes the backend, so it sees either.
func (b *uringBackend) exitOwed(reapLocked bool) {
	if reapLocked {
		release.AtomicUint64(&b.exitsR, b.exitsR.Load()+1)
		return
	}
	b.exits.Add(1)
}

// outOfSlots ends submitPlains when the slots ran out at ops[i], which
// was admitted: the batch goes in as far as it did (the caller reports
// ErrFull) only when every op after it is admitted too. Bad input is
// reported, not the slots, and nothing is submitted: when an op not yet
// checked is not admitted, the batch is taken back (errNotFast) for the
// general path, which checks every op first.
func (b *uringBackend) outOfSlots(ops []Op, reqs []Request, i, unchecked int) (int, error) {
	for j := max(i+1, unchecked); j < len(ops); j++ {
		if !ops[j].checkedPlain(b.r) {
			b.unwind(reqs[:i])
			return 0, errNotFast
		}
	}
	return i, nil
}

// fillStop is why fillPlains stopped.
type fillStop uint8

const (
	fillDone    fillStop = iota // it filled all it was given
	fillNotFast                 // ops[i] is not admitted
	fillNoSlot                  // no slot is free
	fillCall                    // ops[i]'s preparation is not one of the inline ones
)

// fillPlains is submitPlains' loop: it starts ops[i:n], for which the SQ
// has room, until one of them stops it, and returns where it stopped and
// why. It calls nothing (every call in a loop spills the registers the
// loop holds), so it takes the preparations of Nop, Read and Write inline
// and leaves the others to plainCall; it keeps the SQ's position and the
// free list's head in variables and stores them back once. r.sqMu held.
func (b *uringBackend) fillPlains(ops []Op, reqs []Request, i, n, unchecked int) (int, fillStop) {
	r := b.r
	ops = ops[:n]
	reqs = reqs[:len(ops)]
	t := b.ring.Taker()
	local := r.free.local
	stop := fillDone
	for ; i < len(ops); i++ {
		op := &ops[i]
		if i >= unchecked && !op.checkedPlain(r) {
			stop = fillNotFast
			break
		}
		opc := inlineOps[op.code]
		if opc == noInline {
			stop = fillCall
			break
		}
		if local == 0 { // popFree, inline
			if local = r.free.shared.Swap(0); local == 0 {
				stop = fillNoSlot
				break
			}
		}
		s := r.slotAt(local - 1)
		local = s.freeNext
		key := s.nextKey()
		reqs[i] = Request{r: r, key: key}
		// slot.fillPlain for a plain op, inline (as in plainCall).
		if s.dirty() {
			s.clean()
		}
		s.fillFast(op)
		s.resetFields()
		s.set(key, stActive)
		sqe, pos := t.Take()
		s.head(sqe, pos, key, opc)
		if opc == uring.OpNop {
			prepNop(s, sqe)
		} else {
			prepRW(s, sqe)
		}
	}
	r.free.local = local
	b.ring.Took(t)
	return i, stop
}

// noInline marks the operations inlineOps has no io_uring opcode for.
const noInline = 0xff

// inlineOps holds the io_uring opcodes of the operations whose
// preparations fillPlains takes inline (TestPrepInline checks them against
// opImpls), indexed by any Opcode value; noInline for the others.
var inlineOps = func() (t [256]uint8) {
	for i := range t {
		t[i] = noInline
	}
	t[OpNop], t[OpRead], t[OpWrite] = uring.OpNop, uring.OpRead, uring.OpWrite
	return t
}()

// plainCall starts op, which checkedPlain admitted, into req, and reports
// whether a slot was free: startOne's, and submitPlains' for an op whose
// preparation fillPlains does not take inline. An awaited request's
// completion goes to Request.Wait (Start). The SQ has room. r.sqMu held.
func (b *uringBackend) plainCall(op *Op, req *Request, awaited bool) bool {
	r := b.r
	_, s := r.popFree()
	if s == nil {
		return false
	}
	key := s.nextKey()
	*req = Request{r: r, key: key}
	// slot.fillPlain for a plain op, which is not foreign.
	if awaited {
		s.fillKind(false, true)
		s.clearFlags()
		s.drainWake()
	} else if s.dirty() { // as a rule the slot served a plain request last
		s.clean()
	}
	s.fillFast(op)
	s.resetFields()
	s.set(key, stActive)
	sqe, pos := b.ring.TakeSQE()
	s.head(sqe, pos, key, uringOps[op.code])
	switch op.code { // the commonest preparations without a call through prep
	case OpRead, OpWrite:
		prepRW(s, sqe)
	case OpNop:
		prepNop(s, sqe)
	default:
		opImpls[op.code].prep(s, sqe)
	}
	return true
}

// clean makes the kind of the slot's request plain (neither foreign nor
// awaited) and clears the flags its previous request left: what
// slot.dirty found. r.sqMu held.
func (s *slot) clean() {
	s.fillKind(false, false)
	s.clearFlags()
}

// unwind takes back the requests of reqs, which submitPlains started in
// this pass and whose SQEs are the last ones taken, none of them
// published: the kernel never saw them, and nobody else holds their
// Requests. Their slots go back to the free list with their previous keys
// (prevKey): no request was accepted. r.sqMu held.
func (b *uringBackend) unwind(reqs []Request) {
	if len(reqs) == 0 {
		return
	}
	if !b.ring.Untake(uint32(len(reqs))) {
		panic("ioring: unwinding published SQEs") // submitPlains' room check rules it out
	}
	r := b.r
	var free chain
	for i := range reqs {
		idx := uint32(reqs[i].key & idxMask)
		r.slots[idx].releaseHot(idx, prevKey(reqs[i].key), &free)
		reqs[i] = Request{}
	}
	r.pushFree(&free)
}

// nextSQE takes an SQE for the request with key in slot s and fills in
// what every request's has. r.sqMu held.
func (b *uringBackend) nextSQE(s *slot, key uint64, im *opImpl) *uring.SQE {
	sqe, pos := b.ring.NextSQE()
	if sqe == nil {
		sqe, pos = b.sqe()
	}
	s.head(sqe, pos, key, im.uring)
	return sqe
}

// head fills in what every request's SQE has (taken at ring position pos)
// and notes the position in the slot.
func (s *slot) head(sqe *uring.SQE, pos uint32, key uint64, opcode uint8) {
	s.sqPos = pos
	sqe.UserData = kindReq<<kindShft | key
	sqe.FD = s.fd
	sqe.Opcode = opcode
}

// flush publishes the queued SQEs; the io_uring_enter that hands them to
// the kernel runs in enter, after r.sqMu is released (Ring.unlockSQ), so
// that a cancel or a submission from another goroutine never waits for the
// kernel to run a batch inline (a batch of page-cache reads is done inside
// that enter). r.sqMu held.
func (b *uringBackend) flush() error {
	b.ring.Publish()
	return nil
}

// enterTicket reports whether an enter is due after the holder of r.sqMu
// releases it (something published is not yet consumed), and lets it out:
// the caller must call enter once after the unlock. r.sqMu held.
func (b *uringBackend) enterTicket() bool {
	if b.r.beDead || b.ring.Unsubmitted() == 0 {
		return false
	}
	b.tickets++
	return true
}

// enter hands what flush published to the kernel, once enterTicket let it
// out. No Ring lock held; concurrent enters are fine (see
// uring.Ring.Enter): another may have handed everything over already.
func (b *uringBackend) enter() {
	// The common case first: one system call hands everything over.
	n, err := b.ring.Enter()
	if n == 1 && err == 0 {
		b.exits.Add(1) // last: close may unmap the ring once it counts this
		return
	}
	b.enterMore(n, err)
}

// enterMore is enter after its first calls system calls ended with err
// (0 and no calls: there was nothing left to hand over).
func (b *uringBackend) enterMore(calls int, err syscall.Errno) {
	for tries := 0; ; tries++ {
		switch err {
		case unix.EINTR:
		case unix.EBUSY, unix.EAGAIN:
			b.makeRoom(tries)
		default:
			// Done, or an error that leaves the SQEs published: the next
			// enter, or a waiting reaper, hands them over.
			switch {
			case calls == 0:
				b.idleExits.Add(1)
			case calls > 1:
				b.extraEnter.Add(uint64(calls - 1))
			}
			b.exits.Add(1) // last: close may unmap the ring once it counts this
			return
		}
		var n int
		n, err = b.ring.Enter()
		calls += n
	}
}

// kernelEnters returns how many io_uring_enter calls the ring made.
func (b *uringBackend) kernelEnters() uint64 {
	idle := b.idleExits.Load() // before exits: the difference never goes below 0
	return b.ring.Enters() + b.exits.Load() + b.exitsR.Load() - idle + b.extraEnter.Load()
}

// submitNow publishes and enters under r.sqMu, for when the SQ must have
// room before the holder goes on (it is full). When the kernel pushes back
// (EBUSY: completions overflowed; EAGAIN: no memory for now) it reaps to
// make room and tries again. r.sqMu held.
func (b *uringBackend) submitNow() error {
	for tries := 0; ; tries++ {
		_, err := b.ring.Submit(0)
		if err == nil {
			return nil
		}
		if err != unix.EBUSY && err != unix.EAGAIN {
			return fmt.Errorf("io_uring_enter: %w", err)
		}
		b.makeRoom(tries)
	}
}

// makeRoom reaps what the kernel has ready, overflowed completions
// included, so that a refused submission can go in, and backs off a little.
func (b *uringBackend) makeRoom(tries int) {
	r := b.r
	r.reapMu.Lock()
	if !r.beClosed {
		b.reapReady()
		b.ring.FlushOverflow()
		b.reapReady()
	}
	r.reapMu.Unlock()
	if r.parked.Load() > 0 {
		select {
		case r.reaperCh <- struct{}{}:
		default:
		}
	}
	if tries > 10 {
		time.Sleep(100 * time.Microsecond)
	} else {
		runtime.Gosched()
	}
}

func (b *uringBackend) cancel(idx uint32, key uint64) {
	s := &b.r.slots[idx]
	if !b.ring.Published(s.sqPos) {
		// Still ours alone: the kernel never sees the operation.
		sqe := b.ring.SQEAt(s.sqPos)
		link := sqe.Flags & uring.SQEIOLink
		ud := sqe.UserData
		*sqe = uring.SQE{Opcode: uring.OpNop, FD: -1, Flags: link, UserData: ud}
		s.flags.Or(flNopped)
		return
	}
	sqe, _ := b.ring.NextSQE() // zeroed; inlined, where sqe is a call
	if sqe == nil {
		sqe, _ = b.sqe()
	}
	sqe.Opcode = uring.OpAsyncCancel
	sqe.Flags = b.cancelFlags
	sqe.FD = -1
	sqe.Addr = kindReq<<kindShft | key
	sqe.UserData = kindCancel<<kindShft | key
}

// cancelPlains is cancelRequests' loop for its commonest case, with no
// call in it (a call spills every register the loop holds: a burst of
// cancels went through three per request). From the first of reqs on, it
// skips those not in flight or canceled already, as cancelOne does, and
// asks the kernel to cancel each request of this backend whose SQE it has
// (not foreign, multishot or held), marked with f first: the cancel SQE
// b.cancel writes, written here. It stops at the first request it cannot
// take so, or when the SQ is full, and returns how many it canceled and
// the requests from there on, for cancelOne. r.sqMu held.
func (b *uringBackend) cancelPlains(f uint32, reqs []Request) (int, []Request) {
	r := b.r
	room := b.ring.SQFree()
	t := b.ring.Taker()
	n, i := 0, 0
	for ; i < len(reqs); i++ {
		q := &reqs[i]
		idx := uint32(q.key & idxMask)
		if q.r != r || int(idx) >= len(r.slots) {
			continue
		}
		s := r.slotAt(idx)
		if k, st := s.keyState(); k != q.key || st != stActive {
			continue
		}
		old := s.flags.Load()
		if old&flCancelReq != 0 {
			continue // canceled already: the first cause stands (askCancel)
		}
		if room == 0 || old&flHeld != 0 || s.foreign.Load() || s.multi || !b.ring.Published(s.sqPos) ||
			!s.flags.CompareAndSwap(old, old|f) {
			break
		}
		room--
		n++
		sqe, _ := t.Take()
		sqe.Opcode = uring.OpAsyncCancel
		sqe.Flags = b.cancelFlags
		sqe.FD = -1
		sqe.Addr = kindReq<<kindShft | q.key
		sqe.UserData = kindCancel<<kindShft | q.key
	}
	b.ring.Took(t)
	return n, reqs[i:]
}

func (b *uringBackend) cancelAll() {
	if b.blk.n.Load() != 0 {
		b.kickBlocking() // the kernel's count of what it canceled says nothing of what landed
	}
	if b.ring.Pending() > 0 {
		b.submitNow()
	}
	if b.cancelAny && b.ring.Pending() == 0 {
		sqe, _ := b.sqe()
		sqe.Opcode = uring.OpAsyncCancel
		sqe.FD = -1
		sqe.Flags = b.cancelFlags
		sqe.OpFlags = uring.CancelAny | uring.CancelAll
		sqe.UserData = kindCancel << kindShft
		return
	}
	for i := range b.r.slots {
		s := &b.r.slots[i]
		if key, st := s.keyState(); st == stActive && s.code != OpForeign && s.flags.Load()&flHeld == 0 {
			b.cancel(uint32(i), key)
		}
	}
}

// reapSpin is how long a waiting reaper blocks in io_uring_enter before it
// parks in the netpoller: long enough for the completions of a cancel or of
// fast I/O, short enough that holding the P costs others little.
const reapSpin = 50 * time.Microsecond

// reapYieldEvery bounds how often a reaper about to block yields its P.
const reapYieldEvery = 250 * time.Microsecond

// reapParkMax bounds one park of a reaper on the eventfd (see reap).
const reapParkMax = 100 * time.Millisecond

// reapParkEvery bounds how often a reaper about to block parks at once,
// without spinning in the kernel first (see reap).
const reapParkEvery = 2 * time.Millisecond

func (b *uringBackend) reap(wait bool, timeout time.Duration) error {
	if b.reapReady() > 0 || !wait {
		return nil
	}
	if b.ring.Overflowed() {
		b.ring.FlushOverflow()
		if b.reapReady() > 0 {
			return nil
		}
	}
	// What was published and not yet entered (its submitter is on its way
	// to enter it) is handed over now: the reaper may be waiting for it.
	// The ring is open: Close fences reapers off before it closes it.
	if b.ring.Unsubmitted() > 0 {
		if n, _ := b.ring.Enter(); n > 0 {
			b.extraEnter.Add(uint64(n))
		}
		if b.reapReady() > 0 {
			return nil
		}
	}
	// Yield now and then before blocking: a goroutine that submits and
	// reaps in a loop never parks, and Go would let it keep its P for a
	// whole 10ms time slice while others (a canceller, a timer) wait to run.
	// Not every time: a yield may move the goroutine to another thread, and
	// the kernel then finishes the request as task work of the submitting
	// thread, which costs a cross-thread wake-up.
	//
	// A goroutine this ring just woke (r.readied) waits on this P for it
	// to block: the reaper yields to it first, every time.
	now := time.Now()
	if b.r.readied.Swap(false) || now.Sub(b.lastYield) > reapYieldEvery {
		b.lastYield = now
		runtime.Gosched()
		if b.reapReady() > 0 {
			return nil
		}
	}
	// A yield runs what is queued on this P and on the global queue, but
	// only a P with nothing to run looks at the other Ps' timers: a timer
	// on a P whose goroutine never goes through the scheduler (one in a
	// loop of blocking reads and writes, say) waits for the runtime's
	// 10ms preemption, while this reaper keeps its own P spinning in the
	// kernel. So, less often, the reaper parks at once, without the spin:
	// its P, with nothing to run, runs those timers, and the eventfd
	// brings the reaper back as soon as a completion comes.
	//
	// A wait shorter than the spin is left to the kernel's timer: parked,
	// it would end on a Go timer, which an idle P may fire up to a
	// millisecond late (the netpoller sleeps in milliseconds).
	spinFirst := b.extArg
	if (timeout < 0 || timeout > reapSpin) && now.Sub(b.lastPark) > reapParkEvery {
		b.lastPark = now
		spinFirst = false
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = now.Add(timeout)
	}
	if spinFirst {
		spin := reapSpin
		if timeout >= 0 && timeout < spin {
			spin = timeout
		}
		if err := b.ring.Wait(1, spin); err != nil {
			return fmt.Errorf("io_uring_enter: %w", err)
		}
		if b.reapReady() > 0 || (timeout >= 0 && timeout <= spin) {
			return nil
		}
	}
	// Park on the eventfd. Completions posted before notifications are on
	// are found by the reapReady below; later ones signal the eventfd.
	if !b.evOn {
		if err := b.ring.RegisterEventFD(b.efd); err != nil {
			// No eventfd to park on (the kernel is short of memory, say):
			// wait in the kernel instead, bounded as a park is. This
			// kernel has timed waits (lazyEventFD implies 5.18).
			wait := reapParkMax
			if timeout >= 0 && timeout < wait {
				wait = timeout
			}
			if err := b.ring.Wait(1, wait); err != nil {
				return fmt.Errorf("io_uring_enter: %w", err)
			}
			b.reapReady()
			return nil
		}
		b.evOn = true
		b.evRegs++
		if b.evIdle != nil {
			b.evIdle.Reset(b.evIdleFor)
		}
	}
	b.lastEvPark = now
	b.ring.SetEventFDEnabled(true)
	defer b.ring.SetEventFDEnabled(false)
	if b.reapReady() > 0 {
		return nil
	}
	// The park is bounded: a kernel may read the disabled flag right after
	// it publishes a CQE with no full barrier between (6.1 does: it checks
	// the flag before the barrier of its wake-up check; newer kernels run
	// that barrier first, which pairs with the compare-and-swap that
	// cleared the flag), so a completion posted as the flag is cleared may
	// find it still set while the reapReady above missed the CQE, and
	// signal nothing. The bound turns such a lost notification into a late
	// look (the caller reaps again), never a reaper asleep for good.
	if lim := now.Add(reapParkMax); deadline.IsZero() || deadline.After(lim) {
		deadline = lim
	}
	b.efile.SetReadDeadline(deadline)
	b.efile.Read(b.evbuf[:]) // a signal, the deadline, or Close
	b.reapReady()
	return nil
}

// reapReady handles every CQE in the ring, in order. The commonest case
// is done in a loop without a call: a request with one CQE that did not
// fail, with nothing to undo (no timer, token or stream; a nopped one
// reports its cancel from its flags), whose completion the reaping
// consumer has room for. handle does the rest, one CQE at a time.
// r.reapMu held.
func (b *uringBackend) reapReady() int {
	head, tail := b.ring.CQRange()
	if head == tail {
		return 0
	}
	r := b.r
	cq := b.ring.CQ()
	if tail-head == 1 && r.directN < len(r.direct) {
		// One CQE, the rule at queue depth 1: the direct path without
		// the loop's set-up.
		cqe := cq.At(head)
		if ud, res := cqe.UserData, cqe.Res; ud>>kindShft == kindReq && res >= 0 {
			key := ud & keyMask
			idx := uint32(key & idxMask)
			if s := &r.slots[idx]; s.direct() {
				completionAt(r.direct, r.directN).setPlain(r, key, s.code, int(res), s.user)
				r.directN++
				s.releaseHot(idx, key, &r.directFree)
				b.ring.SetCQHead(tail)
				return 1
			}
		}
		// A lone canceled one (a cancel of one request) goes to
		// canceledRun without the loop's set-up.
		if b.canceledRun(cq, head, tail) == tail {
			b.ring.SetCQHead(tail)
			b.endPass() // canceledRun took it: the pass was used
			return 1
		}
	}
	pos := head
	for {
		// The direct path, with no call in its loop (a call spills the
		// registers the loop holds): finish and takeDirect in one step,
		// into the room left in r.direct.
		n, direct := r.directN, r.direct
		end := tail
		if room := len(direct) - n; int(end-pos) > room {
			end = pos + uint32(max(room, 0))
		}
		// The chain of freed slots (r.directFree), in registers.
		fhead, ftail := r.directFree.head, r.directFree.tail
		slots := r.slots
		for ; pos != end; pos++ {
			cqe := cq.At(pos)
			ud, res := cqe.UserData, cqe.Res
			if ud>>kindShft != kindReq || res < 0 {
				break
			}
			key := ud & keyMask
			idx := uint32(key & idxMask)
			s := &slots[idx]
			if !s.direct() {
				break
			}
			// n < len(direct): the loop ends at the room's end.
			user := s.user
			completionAt(direct, n).setPlain(r, key, s.code, int(res), user)
			n++
			// slot.releaseHot, inline, with the chain in registers:
			// calling it with the chain's address costs 5-8 instructions
			// per completion (callgrind, NOP batch 32 and 1).
			if s.buf != nil {
				s.buf = nil
			}
			if user != nil {
				s.user = nil
			}
			s.set(key, stFree)
			s.freeNext = fhead
			fhead = idx + 1
			if ftail == 0 {
				ftail = fhead
			}
		}
		r.directN = n
		r.directFree = chain{head: fhead, tail: ftail}
		if pos == tail {
			break
		}
		// Not for the direct path, or beyond the room: a run of canceled
		// requests (a burst of cancels), or handle, which queues it.
		if p := b.canceledRun(cq, pos, tail); p != pos {
			pos = p
			continue
		}
		cqe := cq.At(pos)
		b.handle(cqe.UserData, cqe.Res, cqe.Flags)
		pos++
	}
	b.ring.SetCQHead(tail)
	if b.pass.used {
		b.endPass()
	}
	return int(tail - head)
}

// tokPass takes canceledRun's request idx out of its token t, as
// finishCold does: it takes t.mu and keeps it for the next completions of
// the same token in the pass (a token's cancel ends a burst of them), until
// the pass ends, handle takes another path or another token comes (endOrd).
// t.mu is a leaf everywhere else, so holding it with Ring.ordMu, in
// either order, cannot deadlock: only the reaper nests them. r.reapMu held.
func (b *uringBackend) tokPass(idx uint32, t *Token) {
	if b.pass.tok != t {
		if b.pass.held&passTok != 0 {
			b.unlockTok()
		}
		t.mu.Lock()
		b.pass.tok = t
		b.pass.held |= passTok
	}
	t.unlink(b.r, idx)
}

// endOrd releases the locks the pass holds (Ring.ordMu, a token's), before
// anything that may take them again or run a caller's code. It is inlined:
// a pass without them pays a test, not a call. r.reapMu held.
func (b *uringBackend) endOrd() {
	if b.pass.held != 0 {
		b.unlockPass()
	}
}

// unlockPass releases the locks the pass holds. r.reapMu held.
func (b *uringBackend) unlockPass() {
	if b.pass.held&passOrd != 0 {
		b.unlockOrd()
	}
	if b.pass.held&passTok != 0 {
		b.unlockTok()
	}
}

// unlockOrd releases Ring.ordMu, which the pass holds. r.reapMu held.
func (b *uringBackend) unlockOrd() {
	b.pass.held &^= passOrd
	b.r.ordMu.Unlock()
}

// unlockTok releases the lock of the token the pass holds. r.reapMu held.
func (b *uringBackend) unlockTok() {
	t := b.pass.tok
	b.pass.held &^= passTok
	b.pass.tok = nil
	t.mu.Unlock()
}

// endPass settles the pass: the streams' lock released, its cancels
// counted. r.reapMu held.
func (b *uringBackend) endPass() {
	// endOrd, flat: a pass that held a lock (the commonest kind) pays no
	// call for it.
	if h := b.pass.held; h != 0 {
		if h&passOrd != 0 {
			b.r.ordMu.Unlock()
		}
		if h&passTok != 0 {
			b.pass.tok.mu.Unlock()
		}
	}
	st := &b.r.stats
	if n := b.pass.canceled; n != 0 {
		st.canceled.Add(n)
	}
	if n := b.pass.timedOut; n != 0 {
		st.timedOut.Add(n)
	}
	b.pass = reapPass{}
}

// eofCheck works around a kernel race (Linux 6.17 and later, until the
// fix "io_uring/poll: fix multishot recv missing EOF on wakeup race"): a
// multishot receive that empties a stream socket whose peer has already
// shut down may wait for a wake-up that never comes, instead of ending
// with the end of the stream. After a result that left the socket empty
// (no IORING_CQE_F_SOCK_NONEMPTY), s's stream socket is peeked at without
// waiting; at its end the ring cancels the request (flEOF), and its final
// completion reports the end of the stream (0, nil), as the kernel's own
// would have. The peek is at the ring's own duplicate of the request's fd
// (multiShot.own), never at the caller's fd number: the caller may close
// its fd while the request goes on, and the number may then name another
// socket, whose end would end this request and whose pending error the
// peek would take; a registered file's is taken from the ring's
// duplicate of its entry (RegisterFiles). A request without one (a
// registered file that is no stream socket, or a duplicate that failed)
// is not checked. r.reapMu held.
func (b *uringBackend) eofCheck(s *slot, key uint64) {
	ms := s.ms
	if ms.own < 0 || ms.stream < 0 || s.flags.Load()&(flEOF|flCancelReq) != 0 {
		return
	}
	fd := int(ms.own)
	if ms.stream == 0 {
		ms.stream = -1
		if t, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err == nil && t == unix.SOCK_STREAM {
			ms.stream = 1
		}
		if ms.stream < 0 {
			return
		}
	}
	var c byte
	n, _, errno := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&c)), 1,
		unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	switch {
	case n != 0 || errno == unix.EAGAIN || errno == unix.EINTR:
		return // data (the request is on it), or none yet
	case errno != 0:
		// The socket's pending error (a reset): the peek took it, and
		// cleared it, so the kernel's receive would end with 0, as at
		// the end of the stream. The final completion reports it.
		ms.peekErr = errno
	}
	s.flags.Or(flEOF)
	b.r.pushDeferred(kindCancel, key)
}

func (b *uringBackend) handle(ud uint64, res int32, cflags uint32) {
	kind := ud >> kindShft
	if kind >= kindCancel {
		if kind == kindWake {
			b.woken.Store(false)
		} else if (res == -int32(unix.EALREADY) || res == -int32(unix.ENOENT)) && kind == kindCancel && b.blk.n.Load() != 0 {
			b.kickBlocking() // it may not land (backend_uring_blocking_linux.go)
		}
		return // a cancel's own result is informational; wake nops carry nothing
	}
	key := ud & keyMask
	idx := uint32(key & idxMask)
	r := b.r
	s := &r.slots[idx]
	if kind == kindReq && res >= 0 && !s.linked && !s.multi {
		// The common case: a request with one CQE that did not fail (a
		// nopped one reports its cancel from its flags, in result). The
		// commonest of it reapReady took already.
		b.endOrd()
		s.res = res
		r.finish(idx, s, true)
		return
	}
	if kind == kindReq && res == -int32(unix.ECANCELED) && !s.linked && !s.multi {
		// The next commonest: a request canceled as it was asked to be,
		// which the general path below would finish just so.
		if f := s.flags.Load(); f&(flCancelReq|flTimedOut) != 0 && f&flRetry == 0 {
			// One canceledRun did not take (a timer to stop, an awaited
			// request, or no room in the consumer's slice).
			b.endOrd()
			s.res = res
			r.finish(idx, s, true)
			return
		}
	}
	b.endOrd()
	if k, st := s.keyState(); k != key || st != stActive {
		return // cannot happen: a slot is reused only after all its CQEs
	}
	if s.multi && kind == kindReq {
		if cflags&uring.CQEFMore != 0 {
			b.r.shot(idx, res, cflags, true) // more follows (multishot.go)
			if s.code == OpRecvMultishot && res > 0 && cflags&uring.CQEFSockNonempty == 0 {
				b.eofCheck(s, key)
			}
			return
		}
		if f := s.flags.Load(); f&(flEOF|flCancelReq|flTimedOut) == flEOF && (res == -int32(unix.ECANCELED) || res == 0) {
			res = 0 // the end of the stream eofCheck saw, which the kernel missed
			if e := s.ms.peekErr; e != 0 {
				res = -int32(e) // or the error its peek took from the socket
			}
		}
		if s.cqFullEnd(res) {
			// The kernel could not post this result with More set (its
			// completion ring was full) and ended the request on it. It is
			// delivered as one more, and the request ends as the ring ends
			// one whose consumer fell MaxUndelivered behind: ErrOverrun.
			b.r.shot(idx, res, cflags, true)
			s.flags.Or(flCancelReq | flOverrun)
			res, cflags = -int32(unix.ECANCELED), 0
		}
		s.cflags = cflags // the final one (finishMulti)
	}
	// io_uring ties a request to the thread that submitted it, and when
	// that thread exits (a goroutine that locked its thread returns),
	// requests still waiting end with -ECANCELED (or, from a worker, -EINTR
	// or the kernel's internal -ERESTARTSYS: an open waiting for a FIFO's
	// other end) once they would have run: nothing was transferred. In Go any thread
	// may submit, so such a request, which nobody canceled, is submitted
	// again from a live thread (runDeferred), bounded by maxRetries.
	// A cancel that follows the exit of the thread that submitted the
	// request again last is that exit's for sure, and is not counted.
	f := s.flags.Load()
	exited := false
	switch {
	case kind == kindReq:
		s.res = res
		if (res == -int32(unix.ECANCELED) || res == -int32(unix.EINTR) || res == -int32(errnoRestartSys)) && f&(flCancelReq|flTimedOut) == 0 {
			if exited = s.retryTID != 0 && threadGone(s.retryTID); exited || s.retries < maxRetries {
				s.flags.Or(flRetry)
			}
		}
	case res == -int32(unix.ETIME):
		// The deadline fired, but a cancel the ring recorded before it
		// saw this (Request.Cancel returned nil, a token's, a context's)
		// is the first cause: the completion reports that one.
		s.askCancel(flCancelReq | flTimedOut)
	case res == -int32(unix.ECANCELED) && s.pending.Load() == 2 && f&flCancelReq == 0:
		// The linked timeout ended before its request, not by firing
		// (ETIME) and not because the request finished (its CQE would
		// come first): the kernel dropped it with the submitting thread,
		// when it fired. The deadline passed: cancel the request now.
		s.flags.Or(flCancelReq | flTimedOut)
		b.r.pushDeferred(kindCancel, key)
	}
	// Without a deadline the request's own CQE is its only one, and
	// pending was not even set (submit).
	if s.linked && s.pending.Add(-1) != 0 {
		return
	}
	if f := s.flags.Load(); f&flRetry != 0 {
		if f&(flCancelReq|flTimedOut) == 0 {
			if !exited { // exited implies retries > 0 (retryTID is set only then)
				s.retries++
			}
			s.flags.Or(flHeld)
			b.r.pushDeferred(kindReq, key)
			return
		}
		s.flags.And(^uint32(flRetry))
	}
	b.r.finish(idx, s, true)
}

// canceledRun takes, from CQ position pos to end, the run of completions
// of one-shot requests canceled as they were asked to be (nothing to
// retry) that need nothing undone but their place on their stream and in
// their token (no timer to stop), while the reaping consumer has room:
// finish, takeDirect and result for that case, in one step, without
// handle's dispatch (a burst of cancels is 64 of them in a row). It
// returns the position of the first one it did not take. r.reapMu held.
func (b *uringBackend) canceledRun(cq uring.CQView, pos, end uint32) uint32 {
	r := b.r
	for ; pos != end; pos++ {
		cqe := cq.At(pos)
		ud := cqe.UserData
		if ud>>kindShft != kindReq || cqe.Res != -int32(unix.ECANCELED) || r.directN >= len(r.direct) {
			break
		}
		key := ud & keyMask
		idx := uint32(key & idxMask)
		s := &r.slots[idx]
		f := s.flags.Load()
		if s.linked || s.multi || f&(flCancelReq|flTimedOut) == 0 || f&flRetry != 0 ||
			s.cold && s.timer != nil || s.awaited.Load() {
			break
		}
		b.pass.used = true
		if s.inOrd {
			// Off its stream, as finishCold does: the pass takes
			// Ring.ordMu at the first such request and keeps it for the
			// next ones, until it ends or handle takes another path
			// (endOrd). A stream's next request is handed on after the
			// lock is released.
			if b.pass.held&passOrd == 0 {
				r.ordMu.Lock()
				b.pass.held |= passOrd
			}
			if r.ord.removeAlone(ordKeyOf(s), s) {
				// Alone on its stream: emptied inline.
			} else if next, ok, _ := r.ordRemoveLocked(idx, s, false); ok {
				b.unlockOrd()
				r.pushDeferred(kindReq, next)
			}
		}
		if t := s.tok; t == b.pass.tok && t != nil {
			t.unlink(r, idx) // the pass holds its lock: a member after another
		} else if t != nil {
			b.tokPass(idx, t)
		}
		b.pass.note(f)
		r.direct[r.directN].set(r, key, s, 0, cancelErr(f))
		r.directN++
		if s.cold {
			r.releaseKey(idx, s, key, &r.directFree)
		} else {
			s.releaseHot(idx, key, &r.directFree) // inline
		}
	}
	return pos
}

// cqFullEnd reports whether the final completion (More clear) of
// multishot slot s, with result res from io_uring, is one the kernel made because its
// completion ring had no room for it as a result with More set. io_uring
// says so by the result alone: nobody asked for a cancel, and it carries
// what a result with More set would have (a connection, data, events),
// where the request's own ends carry an error or, for a receive, 0 (the
// end of the stream). A poll's events are ambiguous on the first result: a
// file that cannot be waited on (a regular file) ends it at once with its
// events, so a poll counts only once it delivered a result before.
func (s *slot) cqFullEnd(res int32) bool {
	if s.flags.Load()&(flCancelReq|flTimedOut) != 0 {
		return false // a cancel's race: the result is the request's own
	}
	switch s.code {
	case OpAcceptMultishot:
		return res >= 0
	case OpRecvMultishot:
		return res > 0
	case OpPollMultishot:
		if res <= 0 {
			return false
		}
		ms := s.ms
		ms.mu.Lock()
		gave := ms.gave
		ms.mu.Unlock()
		return gave
	}
	return false
}

func (b *uringBackend) wake() {
	if !b.woken.CompareAndSwap(false, true) {
		return // a nop is on its way: the reaper looks at everything after it
	}
	r := b.r
	r.sqMu.Lock()
	if !r.beDead {
		sqe, _ := b.sqe()
		sqe.Opcode = uring.OpNop
		sqe.FD = -1
		sqe.UserData = kindWake << kindShft
		b.flush()
	}
	r.unlockSQ()
}

func (b *uringBackend) close() error {
	// Ring.beDead is set: no enter is let out any more. Wait for those
	// that were (each is a system call that does not block).
	for b.exits.Load()+b.exitsR.Load() != b.tickets {
		runtime.Gosched()
	}
	if b.evIdle != nil {
		b.evIdle.Stop() // one that runs meanwhile finds Ring.beClosed
	}
	b.efile.Close()
	if b.evOn {
		b.ring.UnregisterEventFD()
	}
	return b.ring.Close()
}
