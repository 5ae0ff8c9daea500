//go:build linux

package rawuring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/uring"
)

// The build fails here when the one mirror of its own drifts from the
// kernel's (internal/uring checks the others).
var _ [16]byte = [unsafe.Sizeof(rsrcUpdate{})]byte{}

// Opcodes (enum io_uring_op) the benchmarks use.
const (
	OpNop  = uring.OpNop
	OpRead = uring.OpRead
	// OpAsyncCancel cancels the request whose user_data is in Addr, or
	// with CancelAny in OpFlags every request.
	OpAsyncCancel = uring.OpAsyncCancel
)

// CancelAny is the IORING_ASYNC_CANCEL_ANY flag of OpAsyncCancel.
const CancelAny = uring.CancelAny

// SQECQESkipSuccess is IOSQE_CQE_SKIP_SUCCESS: the request posts a
// completion only when it fails (where the ring has FeatCQESkip).
const SQECQESkipSuccess = uring.SQECQESkipSucc

// FeatCQESkip is IORING_FEAT_CQE_SKIP (see Ring.Features).
const FeatCQESkip = uring.FeatCQESkip

// Setup flags (IORING_SETUP_*).
const (
	SetupSubmitAll    = uring.SetupSubmitAll
	SetupSingleIssuer = uring.SetupSingleIssuer
	SetupDeferTaskrun = uring.SetupDeferTaskrun
	SetupNoSQArray    = uring.SetupNoSQArray
)

// SQE is struct io_uring_sqe, CQE struct io_uring_cqe and params struct
// io_uring_params: the layouts of internal/uring, checked there against
// the kernel's header.
type (
	SQE    = uring.SQE
	CQE    = uring.CQE
	params = uring.Params
)

// rsrcUpdate is struct io_uring_rsrc_update.
type rsrcUpdate struct {
	Offset, Resv uint32
	Data         uint64
}

// Config says how to set a ring up.
type Config struct {
	// Entries is the SQ size (a power of two); the CQ is twice as large.
	Entries uint32
	// Flags are IORING_SETUP_* flags. With SetupSingleIssuer only the
	// thread that called Setup may submit: lock the goroutine to its thread
	// first (runtime.LockOSThread).
	Flags uint32
	// RegisterRingFD registers the ring's fd with the calling thread
	// (IORING_REGISTER_RING_FDS), so that io_uring_enter skips the fd
	// lookup: valid on that thread only.
	RegisterRingFD bool
}

// Ring is one io_uring instance with its rings mapped. One goroutine uses it.
type Ring struct {
	fd         int
	enterFD    int     // fd, or the registered ring's index
	enterFlags uintptr // uring.EnterRegisteredRing when registered
	mem        []byte  // SQ ring (and CQ ring with FEAT_SINGLE_MMAP)
	cqMem      []byte  // CQ ring, when mapped apart
	sqeMem     []byte
	sqHead     *uint32
	sqTail     *uint32
	sqMask     uint32
	sqEntries  uint32
	sqLocal    uint32 // next free SQE position
	sqes       []SQE
	cqHead     *uint32
	cqTail     *uint32
	cqMask     uint32
	cqes       []CQE
	features   uint32
}

// Setup creates and maps a ring.
func Setup(cfg Config) (*Ring, error) {
	var p params
	p.Flags = cfg.Flags
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(cfg.Entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd), enterFD: int(fd), features: p.Features}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	if cfg.RegisterRingFD {
		up := rsrcUpdate{Offset: ^uint32(0), Data: uint64(r.fd)} // offset -1: any free index
		if err := r.register(uring.RegisterRingFDs, &up); err != nil {
			r.Close()
			return nil, fmt.Errorf("io_uring_register(RING_FDS): %w", err)
		}
		r.enterFD, r.enterFlags = int(up.Offset), uring.EnterRegisteredRing
	}
	return r, nil
}

func (r *Ring) register(op uintptr, up *rsrcUpdate) error {
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), op, uintptr(unsafe.Pointer(up)), 1, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	noArray := p.Flags&SetupNoSQArray != 0
	if noArray {
		sqSize = 0 // in the single mapping with the CQ ring
	}
	cqSize := int(p.CQOff.CQEs) + int(p.CQEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.Features&uring.FeatSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	const prot, flags = unix.PROT_READ | unix.PROT_WRITE, unix.MAP_SHARED | unix.MAP_POPULATE
	var err error
	if r.mem, err = unix.Mmap(r.fd, uring.OffSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("mmap SQ ring: %w", err)
	}
	cq := r.mem
	if !single {
		if r.cqMem, err = unix.Mmap(r.fd, uring.OffCQRing, cqSize, prot, flags); err != nil {
			return fmt.Errorf("mmap CQ ring: %w", err)
		}
		cq = r.cqMem
	}
	if r.sqeMem, err = unix.Mmap(r.fd, uring.OffSQEs, int(p.SQEntries)*int(unsafe.Sizeof(SQE{})), prot, flags); err != nil {
		return fmt.Errorf("mmap SQEs: %w", err)
	}
	u32 := func(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }
	r.sqHead, r.sqTail = u32(r.mem, p.SQOff.Head), u32(r.mem, p.SQOff.Tail)
	r.sqMask, r.sqEntries = *u32(r.mem, p.SQOff.RingMask), p.SQEntries
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), p.SQEntries)
	if !noArray {
		array := unsafe.Slice(u32(r.mem, p.SQOff.Array), p.SQEntries)
		for i := range array { // ring position i is SQE i, once and for all
			array[i] = uint32(i)
		}
	}
	r.sqLocal = atomic.LoadUint32(r.sqTail)
	r.cqHead, r.cqTail = u32(cq, p.CQOff.Head), u32(cq, p.CQOff.Tail)
	r.cqMask = *u32(cq, p.CQOff.RingMask)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&cq[p.CQOff.CQEs])), p.CQEntries)
	return nil
}

// RegisteredFD reports whether the ring's fd is registered with the
// calling thread (Config.RegisterRingFD).
func (r *Ring) RegisteredFD() bool { return r.enterFlags != 0 }

// Features returns the IORING_FEAT_* flags the kernel reported at setup.
func (r *Ring) Features() uint32 { return r.features }

// Close unmaps the rings and closes the ring (the kernel cancels what is in
// flight). A registered ring fd is unregistered first: the thread's table
// holds a reference to the ring and has 16 entries
// (IO_RINGFD_REG_MAX), as liburing's io_uring_queue_exit does. Call it on
// the thread that called Setup.
func (r *Ring) Close() error {
	var err error
	if r.enterFlags != 0 {
		if e := r.register(uring.UnregisterRingFDs, &rsrcUpdate{Offset: uint32(r.enterFD)}); e != nil {
			err = fmt.Errorf("io_uring_register(UNREGISTER_RING_FDS): %w", e)
		}
		r.enterFD, r.enterFlags = r.fd, 0
	}
	for _, m := range [][]byte{r.sqeMem, r.cqMem, r.mem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	r.sqeMem, r.cqMem, r.mem, r.sqes, r.cqes = nil, nil, nil, nil, nil
	return errors.Join(err, unix.Close(r.fd))
}

// NextSQE returns the next free SQE, zeroed, or nil when the SQ is full.
// It reaches the kernel at the next Enter.
func (r *Ring) NextSQE() *SQE {
	if r.sqLocal-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		return nil
	}
	sqe := &r.sqes[r.sqLocal&r.sqMask]
	*sqe = SQE{}
	r.sqLocal++
	return sqe
}

// PrepRead fills sqe with a read of buf from fd at off.
func PrepRead(sqe *SQE, fd int, buf []byte, off int64) {
	sqe.Opcode, sqe.FD = OpRead, int32(fd)
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&buf[0])))
	sqe.Len = uint32(len(buf))
	sqe.Off = uint64(off)
}

// Enter publishes the SQEs taken since the last Enter and hands them to the
// kernel in one io_uring_enter, which waits for wait completions. It
// returns the number of SQEs consumed. Without waiting, the system call is
// made raw (no scheduler hand-off: submission does not sleep); a wait goes
// through the scheduler, as any blocking call from Go must.
func (r *Ring) Enter(wait uint32) (int, error) {
	atomic.StoreUint32(r.sqTail, r.sqLocal) // release: SQE contents before the tail
	submit := r.sqLocal - atomic.LoadUint32(r.sqHead)
	for {
		var ret uintptr
		var errno syscall.Errno
		if wait == 0 {
			if submit == 0 {
				return 0, nil
			}
			ret, _, errno = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.enterFD), uintptr(submit), 0, r.enterFlags, 0, 0)
		} else {
			ret, _, errno = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.enterFD), uintptr(submit), uintptr(wait),
				r.enterFlags|uring.EnterGetEvents, 0, 0)
		}
		switch errno {
		case 0:
			return int(ret), nil
		case unix.EINTR:
			submit = r.sqLocal - atomic.LoadUint32(r.sqHead)
			continue
		}
		return 0, fmt.Errorf("io_uring_enter: %w", errno)
	}
}

// Ready returns how many completions wait in the CQ.
func (r *Ring) Ready() uint32 { return atomic.LoadUint32(r.cqTail) - *r.cqHead } // only this consumer writes the head

// CQEAt returns waiting completion i (0 is the oldest; i < Ready()).
func (r *Ring) CQEAt(i uint32) *CQE { return &r.cqes[(*r.cqHead+i)&r.cqMask] }

// Advance hands the n oldest completions back to the kernel.
func (r *Ring) Advance(n uint32) { atomic.StoreUint32(r.cqHead, *r.cqHead+n) }
