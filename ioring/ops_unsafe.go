//go:build linux

package ioring

import (
	"unsafe"

	"github.com/cancelio/cancelio/internal/uring"
)

// opImpl is how an operation runs on Linux: its io_uring opcode (probed one
// by one when a ring is made: an opcode the kernel lacks makes that
// operation, and only it, ErrNotSupported) and how it fills its SQE beyond
// the opcode, fd and user_data. The poll backend runs operations by their
// opDesc (direction, arguments) and pollKind.
type opImpl struct {
	uring uint8
	prep  func(s *slot, sqe *uring.SQE) // nil: not an io_uring operation (foreign)
	poll  pollKind
}

// pollKind says how the poll backend runs an operation.
type pollKind uint8

const (
	pkNone  pollKind = iota // not run by the backend (foreign)
	pkNow                   // completes at once with 0 (nop)
	pkTimer                 // a timer (timeout)
	pkWork                  // a blocking system call on a worker (fsync)
	pkPoll                  // waits for readiness (poll)
	pkRW                    // a read or write: tried at once, then by readiness or on a worker
	pkSock                  // a socket operation: tried at once, then by readiness (ops_sock_linux.go)
	pkMulti                 // multishot: an edge-triggered epoll registration of its own (backend_poll_multi_linux.go)
)

// uringOps holds opImpls' io_uring opcodes, indexed by any Opcode value:
// a table of 256 indexed by a byte needs no bounds check (submitPlains).
var uringOps = func() (t [256]uint8) {
	for op := range opImpls {
		t[op] = opImpls[op].uring
	}
	return t
}()

var opImpls = [numOps]opImpl{
	OpNop:     {uring: uring.OpNop, prep: prepNop, poll: pkNow},
	OpRead:    {uring: uring.OpRead, prep: prepRW, poll: pkRW},
	OpWrite:   {uring: uring.OpWrite, prep: prepRW, poll: pkRW},
	OpReadv:   {uring: uring.OpReadv, prep: prepRWv, poll: pkRW},
	OpWritev:  {uring: uring.OpWritev, prep: prepRWv, poll: pkRW},
	OpPoll:    {uring: uring.OpPollAdd, prep: prepPoll, poll: pkPoll},
	OpTimeout: {uring: uring.OpTimeout, prep: prepTimeout, poll: pkTimer},
	OpFsync:   {uring: uring.OpFsync, prep: prepNone, poll: pkWork},
	OpForeign: {},
	// Sockets (ops_sock_unsafe.go) and files (ops_file_unsafe.go).
	OpSend:     {uring: uring.OpSend, prep: prepSendRecv, poll: pkSock},
	OpRecv:     {uring: uring.OpRecv, prep: prepSendRecv, poll: pkSock},
	OpSendMsg:  {uring: uring.OpSendMsg, prep: prepMsg, poll: pkSock},
	OpRecvMsg:  {uring: uring.OpRecvMsg, prep: prepMsg, poll: pkSock},
	OpAccept:   {uring: uring.OpAccept, prep: prepAccept, poll: pkSock},
	OpConnect:  {uring: uring.OpConnect, prep: prepConnect, poll: pkSock},
	OpShutdown: {uring: uring.OpShutdown, prep: prepShutdown, poll: pkSock},
	OpOpenAt:   {uring: uring.OpOpenAt, prep: prepOpenAt, poll: pkWork},
	OpClose:    {uring: uring.OpClose, prep: prepNone, poll: pkWork},
	OpStatx:    {uring: uring.OpStatx, prep: prepStatx, poll: pkWork},
	// Registered buffers (fixed_unsafe.go).
	OpReadFixed:  {uring: uring.OpReadFixed, prep: prepFixed, poll: pkSock},
	OpWriteFixed: {uring: uring.OpWriteFixed, prep: prepFixed, poll: pkSock},
	// Multishot (multishot_linux.go): the opcode is probed, then its flag.
	OpPollMultishot:   {uring: uring.OpPollAdd, prep: prepPollMulti, poll: pkMulti},
	OpAcceptMultishot: {uring: uring.OpAccept, prep: prepAcceptMulti, poll: pkMulti},
	OpRecvMultishot:   {uring: uring.OpRecv, prep: prepRecvMulti, poll: pkMulti},
}

func prepNone(*slot, *uring.SQE) {}

func prepNop(_ *slot, sqe *uring.SQE) { sqe.FD = -1 }

func prepRW(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0])))
	sqe.Len = uint32(len(s.buf))
	sqe.Off = uint64(s.off) // -1: the current position (IORING_FEAT_RW_CUR_POS)
}

func prepRWv(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.iov[0])))
	sqe.Len = uint32(len(s.iov))
	sqe.Off = uint64(s.off)
}

func prepPoll(s *slot, sqe *uring.SQE) { sqe.OpFlags = s.events }

func prepTimeout(s *slot, sqe *uring.SQE) {
	sqe.FD = -1
	s.ts[0] = uring.NsecToTimespec(int64(s.dur))
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.ts[0])))
	sqe.Len = 1
}
