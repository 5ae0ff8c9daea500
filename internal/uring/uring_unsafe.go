//go:build linux

package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cancelio/cancelio/internal/release"
	"golang.org/x/sys/unix"
)

// The build fails here when a Go mirror's size drifts from the kernel's.
var (
	_ [64]byte  = [unsafe.Sizeof(SQE{})]byte{}           // struct io_uring_sqe
	_ [16]byte  = [unsafe.Sizeof(CQE{})]byte{}           // struct io_uring_cqe
	_ [40]byte  = [unsafe.Sizeof(SQRingOffsets{})]byte{} // struct io_sqring_offsets
	_ [40]byte  = [unsafe.Sizeof(CQRingOffsets{})]byte{} // struct io_cqring_offsets
	_ [120]byte = [unsafe.Sizeof(Params{})]byte{}        // struct io_uring_params
	_ [24]byte  = [unsafe.Sizeof(getEventsArg{})]byte{}  // struct io_uring_getevents_arg
	_ [16]byte  = [unsafe.Sizeof(Timespec{})]byte{}      // struct __kernel_timespec
	_ [8]byte   = [unsafe.Sizeof(probeOp{})]byte{}       // struct io_uring_probe_op
	_ [16]byte  = [unsafe.Sizeof(Buf{})]byte{}           // struct io_uring_buf
	_ [40]byte  = [unsafe.Sizeof(BufReg{})]byte{}        // struct io_uring_buf_reg
)

// MaxEntries is the kernel's limit on SQ entries (IORING_MAX_ENTRIES).
const MaxEntries = 32768

// Ring is one io_uring instance with its rings mapped.
//
// Memory ordering: the SQ ring has one producer (the caller, serialised by the
// caller's submit lock) and one consumer (the kernel, inside io_uring_enter).
// SQEs are written before the release store of the SQ tail. The CQ ring has
// one producer (the kernel) and one consumer (the caller, serialised by the
// caller's reap lock): CQEs are read after the acquire load of the CQ tail and
// released to the kernel by the store of the CQ head. Go's sync/atomic loads
// and stores are sequentially consistent, which covers acquire and release.
type Ring struct {
	fd          int
	params      Params
	ringMem     []byte
	cqMem       []byte // nil with IORING_FEAT_SINGLE_MMAP
	sqeMem      []byte
	sqHead      *uint32
	sqTail      *uint32
	sqFlags     *uint32
	sqMask      uint32
	sqes        []SQE
	cqHead      *uint32
	cqTail      *uint32
	cqFlags     *uint32
	cqMask      uint32
	cqes        []CQE
	sqLocal     uint32 // next free SQE position; guarded by the caller's submit lock
	sqPublished uint32 // the SQ tail as last published; guarded by the caller's submit lock
	probeOps    [maxProbeOps]bool
	enters      atomic.Uint64 // io_uring_enter calls, for Enters (stats_unsafe.go)
}

// Setup creates a ring with sqEntries submission entries and cqEntries
// completion entries (0: the kernel's default, twice sqEntries) and maps it.
func Setup(sqEntries, cqEntries uint32) (*Ring, error) {
	r := &Ring{}
	p := &r.params
	// Without the SQ index array (6.6) the kernel reads SQE i at ring
	// position i: one load less per SQE. cancelio only ever used the
	// identity mapping the array allows.
	p.Flags = SetupSubmitAll
	if noSQArray {
		p.Flags |= SetupNoSQArray
	}
	if cqEntries != 0 {
		p.Flags |= SetupCQSize
		p.CQEntries = cqEntries
	}
	fd, err := setup(sqEntries, p)
	// Kernels before 6.6 refuse NO_SQARRAY, before 5.18 SUBMIT_ALL: unknown
	// setup flags are EINVAL.
	for _, drop := range []uint32{SetupNoSQArray, SetupSubmitAll} {
		if err != unix.EINVAL {
			break
		}
		if p.Flags&drop == 0 {
			continue // not asked for (a test turned it off): nothing to retry without
		}
		p.Flags &^= drop
		fd, err = setup(sqEntries, p)
	}
	if err != nil {
		return nil, err
	}
	r.fd = fd
	if err := r.mmap(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if p.Flags&SetupNoSQArray == 0 {
		// The SQ array maps ring positions to SQE indices; cancelio always
		// uses the identity, so it is filled once here and never touched
		// again.
		array := unsafe.Slice((*uint32)(unsafe.Pointer(&r.ringMem[p.SQOff.Array])), p.SQEntries)
		for i := range array {
			array[i] = uint32(i)
		}
	}
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	r.sqPublished = r.sqLocal
	return r, nil
}

// noSQArray is whether Setup asks for IORING_SETUP_NO_SQARRAY; tests turn
// it off to run the layout with the array on a kernel that has both.
var noSQArray = true

func setup(entries uint32, p *Params) (int, error) {
	for {
		fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

func (r *Ring) mmap() error {
	p := &r.params
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	if p.Flags&SetupNoSQArray != 0 {
		// No array: the SQ ring is its head, tail and flags, in the one
		// mapping with the CQ ring (FeatSingleMmap, which every kernel
		// with NO_SQARRAY has).
		sqSize = 0
	}
	cqSize := int(p.CQOff.CQEs) + int(p.CQEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.Features&FeatSingleMmap != 0
	if single && cqSize > sqSize {
		sqSize = cqSize
	}
	mem, err := unix.Mmap(r.fd, OffSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap SQ ring: %w", err)
	}
	r.ringMem = mem
	cqMem := mem
	if !single {
		cqMem, err = unix.Mmap(r.fd, OffCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			unix.Munmap(mem)
			return fmt.Errorf("mmap CQ ring: %w", err)
		}
		r.cqMem = cqMem
	}
	sqeMem, err := unix.Mmap(r.fd, OffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(SQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.unmap()
		return fmt.Errorf("mmap SQEs: %w", err)
	}
	r.sqeMem = sqeMem
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead = u32(mem, p.SQOff.Head)
	r.sqTail = u32(mem, p.SQOff.Tail)
	r.sqFlags = u32(mem, p.SQOff.Flags)
	r.sqMask = *u32(mem, p.SQOff.RingMask)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&sqeMem[0])), p.SQEntries)
	r.cqHead = u32(cqMem, p.CQOff.Head)
	r.cqTail = u32(cqMem, p.CQOff.Tail)
	if p.CQOff.Flags != 0 {
		r.cqFlags = u32(cqMem, p.CQOff.Flags)
	}
	r.cqMask = *u32(cqMem, p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&cqMem[p.CQOff.CQEs])), p.CQEntries)
	// TakeSQE and CQView.At index by position&mask without a bounds
	// check: the masks must span the entries exactly, as the kernel's do
	// (its ring sizes are powers of two).
	if r.sqMask+1 != p.SQEntries || r.cqMask+1 != p.CQEntries {
		r.unmap()
		return fmt.Errorf("ring masks %#x, %#x for %d and %d entries", r.sqMask, r.cqMask, p.SQEntries, p.CQEntries)
	}
	return nil
}

func (r *Ring) unmap() {
	for _, m := range []*[]byte{&r.sqeMem, &r.cqMem, &r.ringMem} {
		if *m != nil {
			unix.Munmap(*m)
			*m = nil
		}
	}
	r.sqes, r.cqes = nil, nil
}

// Close unmaps the rings and closes the ring's fd. The kernel cancels what
// is still in flight; callers drain before they close.
func (r *Ring) Close() error {
	r.unmap()
	if r.fd >= 0 {
		err := unix.Close(r.fd)
		r.fd = -1
		return err
	}
	return nil
}

// FD returns the ring's file descriptor.
func (r *Ring) FD() int { return r.fd }

// Params returns the parameters the kernel filled in at setup.
func (r *Ring) Params() Params { return r.params }

// SQEntries returns the number of submission entries.
func (r *Ring) SQEntries() uint32 { return r.params.SQEntries }

// CQEntries returns the number of completion entries.
func (r *Ring) CQEntries() uint32 { return r.params.CQEntries }

// Features returns the IORING_FEAT_* bits the kernel reported.
func (r *Ring) Features() uint32 { return r.params.Features }

// NextSQE returns the next free SQE, zeroed, and its ring position, or nil
// when the SQ is full. The SQE reaches the kernel at the next Flush.
func (r *Ring) NextSQE() (*SQE, uint32) {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqLocal-head >= r.params.SQEntries {
		return nil, 0
	}
	return r.TakeSQE()
}

// TakeSQE is NextSQE for a caller that knows the SQ has room (SQFree
// said so, and nothing was taken since but what it counted): no check.
func (r *Ring) TakeSQE() (*SQE, uint32) {
	pos := r.sqLocal
	// The mask keeps the index inside the SQEs (mmap checked that it
	// spans them exactly): no bounds check.
	sqe := (*SQE)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(r.sqes)), uintptr(pos&r.sqMask)*unsafe.Sizeof(SQE{})))
	*sqe = SQE{}
	r.sqLocal++
	return sqe, pos
}

// A Taker takes SQEs as TakeSQE does, with the ring's position in a
// variable of the caller's (a register, in a loop) instead of the Ring:
// Ring.Taker starts one, Take takes the next SQE, and Ring.Took stores the
// position back. Between Taker and Took nothing else may take SQEs, and
// the caller takes no more than SQFree said there was room for. Caller's
// submit lock held.
type Taker struct {
	base      unsafe.Pointer
	pos, mask uint32
}

// Taker starts taking SQEs at the ring's position.
func (r *Ring) Taker() Taker {
	return Taker{base: unsafe.Pointer(unsafe.SliceData(r.sqes)), pos: r.sqLocal, mask: r.sqMask}
}

// Take is TakeSQE on t's position.
func (t *Taker) Take() (*SQE, uint32) {
	pos := t.pos
	sqe := (*SQE)(unsafe.Add(t.base, uintptr(pos&t.mask)*unsafe.Sizeof(SQE{})))
	*sqe = SQE{}
	t.pos++
	return sqe, pos
}

// Took ends t: the SQEs it took count as taken.
func (r *Ring) Took(t Taker) { r.sqLocal = t.pos }

// Untake gives back the last n SQEs taken, none of which may have been
// published, and reports whether it did: false (and nothing given back)
// when fewer than n were taken since the last Publish. Caller's submit
// lock held.
func (r *Ring) Untake(n uint32) bool {
	if r.sqLocal-r.sqPublished < n {
		return false
	}
	r.sqLocal -= n
	return true
}

// SQEAt returns the SQE at ring position pos; only for rewriting an entry
// that the kernel has not consumed yet (Unconsumed reports which).
func (r *Ring) SQEAt(pos uint32) *SQE { return &r.sqes[pos&r.sqMask] }

// Consumed reports whether the kernel has consumed the SQE at position pos.
func (r *Ring) Consumed(pos uint32) bool {
	return int32(atomic.LoadUint32(r.sqHead)-pos) > 0
}

// SQFree returns how many SQEs can be taken before the SQ is full.
func (r *Ring) SQFree() uint32 {
	return r.params.SQEntries - (r.sqLocal - atomic.LoadUint32(r.sqHead))
}

// Pending returns how many SQEs were taken but not yet consumed by the kernel.
func (r *Ring) Pending() uint32 { return r.sqLocal - atomic.LoadUint32(r.sqHead) }

// publish makes every taken SQE visible to the kernel and returns how many
// are waiting to be consumed.
func (r *Ring) publish() uint32 {
	r.Publish()
	return r.sqLocal - atomic.LoadUint32(r.sqHead)
}

// Publish makes every taken SQE visible to the kernel without entering it
// (caller's submit lock held); Enter hands them over. Once published, an
// SQE may be read by the kernel at any moment, from any thread's Enter.
func (r *Ring) Publish() {
	r.raceRelease()
	release.Uint32(r.sqTail, r.sqLocal) // SQE contents before the tail
	r.sqPublished = r.sqLocal
}

// Published reports whether the SQE at position pos was published (the
// kernel may be reading it). Caller's submit lock held.
func (r *Ring) Published(pos uint32) bool { return int32(r.sqPublished-pos) > 0 }

// Unsubmitted returns how many published SQEs the kernel has not consumed.
// Any goroutine.
func (r *Ring) Unsubmitted() uint32 {
	return atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead)
}

// Enter hands the published SQEs to the kernel in one io_uring_enter. It
// needs no lock: the kernel serialises submission, and takes at most what
// was published, in ring order, so concurrent Enters each submit a part
// and together all of it. It returns how many system calls it made (0 when
// nothing was left to hand over, more than 1 after EINTR); unlike the
// other calls that enter the kernel, it does not count them in Enters: the
// caller does, when it wants to (an atomic add per call would cost as much
// as the rest of it). The error is the system call's errno, 0 for none:
// a type the caller compares without an interface.
func (r *Ring) Enter() (calls int, err syscall.Errno) {
	for {
		n := r.Unsubmitted()
		if n == 0 {
			return calls, 0
		}
		calls++
		// syscall's own RawSyscall6, a Go function: x/sys/unix's is an
		// assembly jump to it, which costs an ABI wrapper per call.
		_, _, errno := syscall.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, 0, 0, 0)
		switch errno {
		case 0:
			return calls, 0
		case unix.EINTR:
			continue
		}
		return calls, errno
	}
}

// EnterOnce hands n published SQEs to the kernel in one io_uring_enter
// that waits for nothing, and returns its error: no retry, no count. It is
// small enough to be inlined into its caller, so that the system call is
// made from the caller's frame (see ioring's uringBackend.startOne).
func (r *Ring) EnterOnce(n uint32) syscall.Errno {
	_, _, errno := syscall.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, 0, 0, 0)
	return errno
}

// Submit publishes the taken SQEs and hands them to the kernel in one
// io_uring_enter, optionally waiting for minComplete completions. It returns
// how many SQEs the kernel consumed. A raw system call is used when nothing is
// waited for: submission does not sleep.
func (r *Ring) Submit(minComplete uint32) (int, error) {
	n := r.publish()
	if n == 0 && minComplete == 0 {
		return 0, nil
	}
	flags := uintptr(0)
	if minComplete > 0 {
		flags = EnterGetEvents
	}
	for {
		var ret uintptr
		var errno syscall.Errno
		r.enters.Add(1)
		if minComplete == 0 {
			ret, _, errno = syscall.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, flags, 0, 0)
		} else {
			ret, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(minComplete), flags, 0, 0)
		}
		if errno == unix.EINTR {
			if minComplete > 0 {
				// The submission may have happened; what is left is re-counted.
				n = r.sqLocal - atomic.LoadUint32(r.sqHead)
			}
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(ret), nil
	}
}

// Wait blocks in io_uring_enter until minComplete completions are in the CQ
// or the timeout passes (timeout < 0: no limit). It submits nothing. It
// returns nil on timeout too; callers look at the CQ.
func (r *Ring) Wait(minComplete uint32, timeout time.Duration) error {
	var arg getEventsArg
	var ts Timespec
	flags := uintptr(EnterGetEvents)
	var argp unsafe.Pointer
	var argsz uintptr
	if timeout >= 0 && r.params.Features&FeatExtArg != 0 {
		ts = NsecToTimespec(int64(timeout))
		arg.TS = uint64(uintptr(unsafe.Pointer(&ts)))
		flags |= EnterExtArg
		argp = unsafe.Pointer(&arg)
		argsz = unsafe.Sizeof(arg)
	}
	r.enters.Add(1)
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, uintptr(minComplete), flags, uintptr(argp), argsz)
	switch errno {
	case 0, unix.EINTR, unix.ETIME, unix.EAGAIN, unix.EBUSY:
		return nil
	}
	return errno
}

// FlushOverflow asks the kernel to move completions that overflowed the CQ
// (IORING_FEAT_NODROP keeps them) into the ring.
func (r *Ring) FlushOverflow() error {
	r.enters.Add(1)
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 0, EnterGetEvents, 0, 0)
	if errno != 0 && errno != unix.EINTR && errno != unix.EAGAIN && errno != unix.EBUSY {
		return errno
	}
	return nil
}

// Overflowed reports whether the kernel holds completions that did not fit
// the CQ ring.
func (r *Ring) Overflowed() bool {
	return atomic.LoadUint32(r.sqFlags)&SQCQOverflow != 0
}

// PeekCQ returns the completions ready in the CQ ring without consuming
// them: a batch of up to two slices (the ring may wrap). Call AdvanceCQ
// with the number handled.
func (r *Ring) PeekCQ() (first, second []CQE) {
	head, tail := r.CQRange()
	n := tail - head
	if n == 0 {
		return nil, nil
	}
	start := head & r.cqMask
	end := start + n
	if end <= uint32(len(r.cqes)) {
		return r.cqes[start:end], nil
	}
	return r.cqes[start:], r.cqes[:end-uint32(len(r.cqes))]
}

// CQRange returns the CQ ring positions of the ready completions, from
// head (the first) up to tail (one past the last). It is PeekCQ as
// positions rather than slices, for a loop that reads each entry in place
// (see CQ) for pos from head while pos != tail, then calls
// SetCQHead(tail).
func (r *Ring) CQRange() (head, tail uint32) {
	head = *r.cqHead // only this consumer writes the head
	tail = atomic.LoadUint32(r.cqTail)
	r.raceAcquire()
	return head, tail
}

// CQ returns a view of the CQ ring's entries, which does not change while
// the ring is open: its At(pos) is the completion at position pos, which
// CQRange reported ready.
func (r *Ring) CQ() CQView {
	return CQView{base: unsafe.Pointer(unsafe.SliceData(r.cqes)), mask: r.cqMask}
}

// CQView is the CQ ring's entries, for a loop over them (CQ).
type CQView struct {
	base unsafe.Pointer
	mask uint32
}

// At returns the completion at ring position pos. The mask keeps it inside
// the ring (mmap checked that it spans the entries exactly): no
// bounds check.
func (v CQView) At(pos uint32) *CQE {
	return (*CQE)(unsafe.Add(v.base, uintptr(pos&v.mask)*unsafe.Sizeof(CQE{})))
}

// SetCQHead hands every completion before position head back to the kernel.
func (r *Ring) SetCQHead(head uint32) {
	release.Uint32(r.cqHead, head) // the CQEs were read before
}

// AdvanceCQ hands n completion entries back to the kernel.
func (r *Ring) AdvanceCQ(n uint32) { r.SetCQHead(*r.cqHead + n) }

// CQReady returns how many completions are waiting in the CQ ring.
func (r *Ring) CQReady() uint32 {
	return atomic.LoadUint32(r.cqTail) - atomic.LoadUint32(r.cqHead)
}

// SetEventFDEnabled turns the registered eventfd's notifications on or off
// (IORING_CQ_EVENTFD_DISABLED). It reports false where the kernel lacks the
// flag.
func (r *Ring) SetEventFDEnabled(on bool) bool {
	if r.cqFlags == nil {
		return false
	}
	for {
		old := atomic.LoadUint32(r.cqFlags)
		nw := old | CQEventFDDisabled
		if on {
			nw = old &^ CQEventFDDisabled
		}
		if old == nw || atomic.CompareAndSwapUint32(r.cqFlags, old, nw) {
			return true
		}
	}
}

func (r *Ring) register(op uintptr, arg unsafe.Pointer, nr uintptr) error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), op, uintptr(arg), nr, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// RegisterEventFD makes the kernel signal efd for every completion.
func (r *Ring) RegisterEventFD(efd int) error {
	fd := int32(efd)
	return r.register(RegisterEventFD, unsafe.Pointer(&fd), 1)
}

// UnregisterEventFD removes the registered eventfd.
func (r *Ring) UnregisterEventFD() error {
	return r.register(UnregisterEventFD, nil, 0)
}

// Probe asks the kernel which opcodes it supports (IORING_REGISTER_PROBE,
// kernel 5.6). Supports answers afterwards.
func (r *Ring) Probe() error {
	p := new(probe)
	if err := r.register(RegisterProbe, unsafe.Pointer(p), maxProbeOps); err != nil {
		return fmt.Errorf("probe opcodes: %w", err)
	}
	for i := 0; i < int(p.OpsLen) && i < maxProbeOps; i++ {
		if p.Ops[i].Flags&probeSupported != 0 {
			r.probeOps[p.Ops[i].Op] = true
		}
	}
	return nil
}

// Supports reports whether the kernel supports opcode op (after Probe).
func (r *Ring) Supports(op uint8) bool { return r.probeOps[op] }

// Unavailable reports whether err from Setup means io_uring cannot be used
// here at all (missing, disabled by sysctl, or blocked by seccomp), as
// opposed to a bad argument.
func Unavailable(err error) bool {
	return errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) ||
		errors.Is(err, unix.EACCES) || errors.Is(err, unix.EOPNOTSUPP)
}
