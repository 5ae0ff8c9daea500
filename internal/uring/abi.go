//go:build linux

// Package uring is the io_uring ABI for cancelio: the kernel's structure
// layouts, setup, the mmap of the submission and completion rings, enter,
// register and the probe. It is the only package of cancelio that makes
// io_uring system calls. It knows nothing of requests, tokens or completion
// queues: package ioring builds those on top.
//
// Layouts mirror /usr/include/linux/io_uring.h; abi_unsafe.go makes the build
// fail when a size drifts.
package uring

// Opcodes (enum io_uring_op).
const (
	OpNop          = 0
	OpReadv        = 1
	OpWritev       = 2
	OpFsync        = 3
	OpReadFixed    = 4
	OpWriteFixed   = 5
	OpPollAdd      = 6
	OpPollRemove   = 7
	OpSendMsg      = 9
	OpRecvMsg      = 10
	OpTimeout      = 11
	OpAccept       = 13
	OpAsyncCancel  = 14
	OpLinkTimeout  = 15
	OpConnect      = 16
	OpOpenAt       = 18
	OpClose        = 19
	OpStatx        = 21
	OpRead         = 22
	OpWrite        = 23
	OpSend         = 26
	OpRecv         = 27
	OpShutdown     = 34
	opLastKnown    = 64
	maxProbeOps    = 256
	probeSupported = 1 // IO_URING_OP_SUPPORTED
)

// SQE flags (IOSQE_*).
const (
	SQEFixedFile    = 1 << 0
	SQEIODrain      = 1 << 1
	SQEIOLink       = 1 << 2
	SQEIOHardlink   = 1 << 3
	SQEAsync        = 1 << 4
	SQEBufferSelect = 1 << 5
	SQECQESkipSucc  = 1 << 6
)

// CQE flags (IORING_CQE_F_*).
const (
	CQEFBuffer       = 1 << 0 // the upper 16 bits of flags are the buffer ID
	CQEFMore         = 1 << 1 // the request posts more CQEs (multishot)
	CQEFSockNonempty = 1 << 2 // a receive left data in the socket
	CQEBufShift      = 16     // IORING_CQE_BUFFER_SHIFT
)

// Multishot flags: IORING_POLL_ADD_MULTI (sqe.len of POLL_ADD, 5.13),
// IORING_ACCEPT_MULTISHOT (sqe.ioprio of ACCEPT, 5.19) and
// IORING_RECV_MULTISHOT (sqe.ioprio of RECV, 6.0, with IOSQE_BUFFER_SELECT).
const (
	PollAddMulti    = 1 << 0
	AcceptMultishot = 1 << 0
	RecvMultishot   = 1 << 1
)

// Setup flags (IORING_SETUP_*).
const (
	SetupCQSize       = 1 << 3
	SetupClamp        = 1 << 4
	SetupSubmitAll    = 1 << 7
	SetupSingleIssuer = 1 << 12 // used by the benchmarks' bare-ABI floor, not by ioring
	SetupDeferTaskrun = 1 << 13 // likewise
	SetupNoSQArray    = 1 << 16 // no SQ index array: ring position i is SQE i (6.6)
)

// Feature flags (IORING_FEAT_*).
const (
	FeatSingleMmap = 1 << 0
	FeatNoDrop     = 1 << 1
	FeatSubmitStab = 1 << 2
	FeatRWCurPos   = 1 << 3
	FeatFastPoll   = 1 << 5
	FeatExtArg     = 1 << 8
	FeatCQESkip    = 1 << 11 // IOSQE_CQE_SKIP_SUCCESS works
)

// Enter flags (IORING_ENTER_*).
const (
	EnterGetEvents      = 1 << 0
	EnterExtArg         = 1 << 3
	EnterRegisteredRing = 1 << 4 // used by the benchmarks' bare-ABI floor, not by ioring
)

// Ring flags.
const (
	SQNeedWakeup      = 1 << 0 // IORING_SQ_NEED_WAKEUP
	SQCQOverflow      = 1 << 1 // IORING_SQ_CQ_OVERFLOW
	SQTaskrun         = 1 << 2 // IORING_SQ_TASKRUN
	CQEventFDDisabled = 1 << 0 // IORING_CQ_EVENTFD_DISABLED
)

// Async cancel flags (IORING_ASYNC_CANCEL_*).
const (
	CancelAll = 1 << 0
	CancelFD  = 1 << 1
	CancelAny = 1 << 2
)

// Timeout flags.
const (
	TimeoutAbs = 1 << 0 // IORING_TIMEOUT_ABS
)

// Register opcodes (IORING_REGISTER_*).
const (
	RegisterBuffers    = 0
	UnregisterBuffers  = 1
	RegisterFiles      = 2
	UnregisterFiles    = 3
	RegisterEventFD    = 4
	UnregisterEventFD  = 5
	RegisterProbe      = 8
	RegisterPbufRing   = 22
	UnregisterPbufRing = 23
	RegisterRingFDs    = 20 // used by the benchmarks' bare-ABI floor, not by ioring
	UnregisterRingFDs  = 21 // likewise
)

// MaxPbufEntries is the kernel's limit on a provided-buffer ring's entries.
const MaxPbufEntries = 32768

// mmap offsets (IORING_OFF_*).
const (
	OffSQRing = 0
	OffCQRing = 0x8000000
	OffSQEs   = 0x10000000
)

// SQE is struct io_uring_sqe (64 bytes). Union members are named after the
// use cancelio makes of them.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	FD          int32
	Off         uint64 // off, addr2
	Addr        uint64 // addr, splice_off_in
	Len         uint32
	OpFlags     uint32 // rw_flags, fsync_flags, poll32_events, timeout_flags, cancel_flags
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFDIn  int32
	Addr3       uint64
	pad2        uint64
}

// CQE is struct io_uring_cqe (16 bytes, no CQE32).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// SQRingOffsets is struct io_sqring_offsets.
type SQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	Resv2                                                           uint64
}

// CQRingOffsets is struct io_cqring_offsets.
type CQRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	Resv2                                                           uint64
}

// Params is struct io_uring_params.
type Params struct {
	SQEntries    uint32
	CQEntries    uint32
	Flags        uint32
	SQThreadCPU  uint32
	SQThreadIdle uint32
	Features     uint32
	WQFD         uint32
	Resv         [3]uint32
	SQOff        SQRingOffsets
	CQOff        CQRingOffsets
}

// Timespec is struct __kernel_timespec, which io_uring reads for every
// time it is given (IORING_OP_TIMEOUT, IORING_OP_LINK_TIMEOUT, the wait of
// IORING_ENTER_EXT_ARG): 64-bit seconds and nanoseconds on every
// architecture. unix.Timespec is the C library's struct timespec, whose
// fields are 32 bits on 386 and arm: the kernel would read a second word
// past it.
type Timespec struct {
	Sec  int64
	Nsec int64
}

// NsecToTimespec converts ns nanoseconds to a Timespec (for a negative
// ns, Nsec stays in [0, 1e9) and Sec carries the sign, as the kernel
// wants).
func NsecToTimespec(ns int64) Timespec {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return Timespec{Sec: sec, Nsec: nsec}
}

// getEventsArg is struct io_uring_getevents_arg.
type getEventsArg struct {
	Sigmask   uint64
	SigmaskSz uint32
	Pad       uint32
	TS        uint64
}

// probeOp is struct io_uring_probe_op.
type probeOp struct {
	Op    uint8
	Resv  uint8
	Flags uint16
	Resv2 uint32
}

// probe is struct io_uring_probe followed by its ops.
type probe struct {
	LastOp uint8
	OpsLen uint8
	Resv   uint16
	Resv2  [3]uint32
	Ops    [maxProbeOps]probeOp
}

// Buf is struct io_uring_buf: one entry of a provided-buffer ring. The
// ring's tail overlays the Resv field of its first entry
// (struct io_uring_buf_ring).
type Buf struct {
	Addr uint64
	Len  uint32
	BID  uint16
	Resv uint16
}

// BufReg is struct io_uring_buf_reg, the argument of
// IORING_(UN)REGISTER_PBUF_RING.
type BufReg struct {
	RingAddr    uint64
	RingEntries uint32
	BGID        uint16
	Pad         uint16
	Resv        [3]uint64
}
