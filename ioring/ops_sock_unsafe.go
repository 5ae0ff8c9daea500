//go:build linux

package ioring

import (
	"encoding/binary"
	"fmt"
	"sync"
	"unsafe"

	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// SQE preparation of the socket and file operations (see opImpls). The
// kernel reads the msghdr at prep (SUBMIT_STABLE) but writes the received
// name, control length and flags back into it at completion, which is why a
// Msg stays pinned until then.

func prepSendRecv(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0])))
	sqe.Len = uint32(len(s.buf))
	sqe.OpFlags = s.events // msg_flags
}

func prepMsg(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0]))) // the msghdr (fillArg)
	sqe.Len = 1
	sqe.OpFlags = s.events
}

func prepAccept(s *slot, sqe *uring.SQE) { sqe.OpFlags = s.events } // no peer address

func prepConnect(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0]))) // the address (Connect)
	sqe.Off = uint64(len(s.buf))                          // addr2: its length
}

func prepShutdown(s *slot, sqe *uring.SQE) { sqe.Len = s.events } // how

func prepOpenAt(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.buf[0])))
	sqe.Len = uint32(s.off) // mode
	sqe.OpFlags = s.events  // open_flags
}

func prepStatx(s *slot, sqe *uring.SQE) {
	sqe.Addr = uint64(uintptr(unsafe.Pointer(&s.bufs[0][0]))) // the path
	sqe.Len = uint32(s.off)                                   // mask
	sqe.Off = uint64(uintptr(unsafe.Pointer(&s.bufs[1][0])))  // the unix.Statx_t
	sqe.OpFlags = s.events                                    // statx_flags
}

// fillArg is fill for a request with an argument of its own (Op.arg: a
// *Msg). It builds the kernel's msghdr in the Msg, with the iovecs fill
// built in the slot, keeps the Msg reachable until the completion is
// delivered, and hands the msghdr to prep (and to the poll
// backend) as s.buf, which releaseKey clears. r.sqMu held.
func (r *Ring) fillArg(s *slot, op *Op, key uint64) {
	m, ok := op.arg.(*Msg)
	if !ok {
		return
	}
	mu := msgLock(m)
	mu.Lock()
	m.holder, m.holderKey, m.claimed = r, key, false // claimed by recheck
	mu.Unlock()
	m.build(s, len(op.bufs), op.code == OpSendMsg)
	// No pin: s.buf points into m, so the slot keeps m (and, through the
	// msghdr's pointers, its control buffer and address) reachable until
	// delivery, and Go's heap does not move (see "Buffers" in the doc).
	s.buf = unsafe.Slice((*byte)(unsafe.Pointer(&m.hdr)), unsafe.Sizeof(m.hdr))
}

// claimArg claims the Msg op names, if any, for a request about to be
// filled (Op.recheck, its ring's r.sqMu held): false when a request (of
// any ring) holds it already, or another submission is claiming it. fillArg records the
// request that holds it; a caller that does not fill op after all gives
// the claim back (unclaimArg). Nothing lets go of a Msg: its request
// holds it while that request's slot is not free with its key (until the
// completion is taken), which the next claim looks at. So the release
// paths of every request pay nothing for it.
func claimArg(op *Op) bool {
	m, ok := op.arg.(*Msg)
	if !ok || m == nil {
		return true
	}
	mu := msgLock(m)
	mu.Lock()
	defer mu.Unlock()
	if m.claimed || m.holder != nil && m.holder.holds(m.holderKey) {
		return false
	}
	m.claimed, m.holder = true, nil
	return true
}

// unclaimArg gives back the claim of claimArg for an op never filled.
func unclaimArg(op *Op) {
	if m, ok := op.arg.(*Msg); ok && m != nil {
		mu := msgLock(m)
		mu.Lock()
		m.claimed = false
		mu.Unlock()
	}
}

// holds reports whether the request with key still holds its slot: its
// completion is not taken yet.
func (r *Ring) holds(key uint64) bool {
	idx := key & idxMask
	if idx >= uint64(len(r.slots)) {
		return false
	}
	k, st := r.slots[idx].keyState()
	return k == key && st != stFree
}

// msgLocks guard the Msgs' holder records, striped by address: a Msg may
// be named on any ring (and so under no one ring's lock).
var msgLocks [16]sync.Mutex

func msgLock(m *Msg) *sync.Mutex {
	return &msgLocks[uintptr(unsafe.Pointer(m))/unsafe.Sizeof(Msg{})%uintptr(len(msgLocks))]
}

// msgOf returns the msghdr of slot s's SendMsg or RecvMsg (see fillArg).
func msgOf(s *slot) *unix.Msghdr { return (*unix.Msghdr)(unsafe.Pointer(&s.buf[0])) }

// sockaddrBytes returns the first n bytes of raw.
func sockaddrBytes(raw *unix.RawSockaddrAny, n uint32) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(raw)), n)
}

// statxBytes returns st's memory, for the kernel to fill.
func statxBytes(st *unix.Statx_t) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(st)), unsafe.Sizeof(*st))
}

// build fills m's msghdr for a request of slot s with nbufs buffers (whose
// iovecs fill built in s.iov). r.sqMu held.
func (m *Msg) build(s *slot, nbufs int, send bool) {
	m.hdr = unix.Msghdr{}
	if nbufs > 0 {
		m.hdr.Iov = &s.iov[0]
		m.hdr.SetIovlen(nbufs)
	}
	if len(m.Control) > 0 {
		m.hdr.Control = &m.Control[0]
		m.hdr.SetControllen(len(m.Control))
	}
	switch {
	case !send:
		m.hdr.Name = (*byte)(unsafe.Pointer(&m.name))
		m.hdr.Namelen = unix.SizeofSockaddrAny
	case m.Addr != nil:
		m.hdr.Namelen = putSockaddr(&m.name, m.Addr)
		m.hdr.Name = (*byte)(unsafe.Pointer(&m.name))
	}
}

// checkSockaddr returns why sa cannot be handed to the kernel, or nil.
func checkSockaddr(sa unix.Sockaddr) error {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		if sa == nil || sa.Port < 0 || sa.Port > 0xffff {
			return fmt.Errorf("bad IPv4 address %v", sa)
		}
	case *unix.SockaddrInet6:
		if sa == nil || sa.Port < 0 || sa.Port > 0xffff {
			return fmt.Errorf("bad IPv6 address %v", sa)
		}
	case *unix.SockaddrUnix:
		var raw unix.RawSockaddrUnix
		if sa == nil || len(sa.Name) >= len(raw.Path) {
			return fmt.Errorf("bad unix address %v", sa)
		}
	case *unix.SockaddrNetlink:
		if sa == nil {
			return errNotSockaddr
		}
	case *unix.SockaddrCAN:
		if sa == nil || sa.Ifindex < 0 || sa.Ifindex > 0x7fffffff {
			return fmt.Errorf("bad CAN address %v", sa)
		}
	default:
		return errNotSockaddr
	}
	return nil
}

// putSockaddr stores sa (checked by checkSockaddr) into raw in the kernel's
// layout and returns its length.
func putSockaddr(raw *unix.RawSockaddrAny, sa unix.Sockaddr) uint32 {
	*raw = unix.RawSockaddrAny{}
	p := unsafe.Pointer(raw)
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		r := (*unix.RawSockaddrInet4)(p)
		r.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&r.Port))[:], uint16(sa.Port))
		r.Addr = sa.Addr
		return unix.SizeofSockaddrInet4
	case *unix.SockaddrInet6:
		r := (*unix.RawSockaddrInet6)(p)
		r.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&r.Port))[:], uint16(sa.Port))
		r.Scope_id = sa.ZoneId
		r.Addr = sa.Addr
		return unix.SizeofSockaddrInet6
	case *unix.SockaddrUnix:
		r := (*unix.RawSockaddrUnix)(p)
		r.Family = unix.AF_UNIX
		n := len(sa.Name)
		for i := 0; i < n; i++ {
			r.Path[i] = int8(sa.Name[i])
		}
		// As x/sys does: a name starting with '@' (or NUL) is abstract,
		// with no terminating NUL counted.
		sl := uint32(2)
		if n > 0 {
			sl += uint32(n) + 1
		}
		if n > 0 && (r.Path[0] == '@' || r.Path[0] == 0) {
			r.Path[0] = 0
			sl--
		}
		return sl
	case *unix.SockaddrNetlink:
		r := (*unix.RawSockaddrNetlink)(p)
		r.Family = unix.AF_NETLINK
		r.Pid = sa.Pid
		r.Groups = sa.Groups
		return unix.SizeofSockaddrNetlink
	case *unix.SockaddrCAN:
		r := (*unix.RawSockaddrCAN)(p)
		r.Family = unix.AF_CAN
		r.Ifindex = int32(sa.Ifindex)
		binary.NativeEndian.PutUint32(r.Addr[0:4], sa.RxID)
		binary.NativeEndian.PutUint32(r.Addr[4:8], sa.TxID)
		return unix.SizeofSockaddrCAN
	}
	return 0
}

// parseSockaddr returns the address of n bytes in raw, or nil.
func parseSockaddr(raw *unix.RawSockaddrAny, n uint32) unix.Sockaddr {
	if n < 2 || n > unix.SizeofSockaddrAny {
		return nil
	}
	p := unsafe.Pointer(raw)
	switch raw.Addr.Family {
	case unix.AF_INET:
		r := (*unix.RawSockaddrInet4)(p)
		return &unix.SockaddrInet4{Port: int(binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&r.Port))[:])), Addr: r.Addr}
	case unix.AF_INET6:
		r := (*unix.RawSockaddrInet6)(p)
		return &unix.SockaddrInet6{Port: int(binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&r.Port))[:])), ZoneId: r.Scope_id, Addr: r.Addr}
	case unix.AF_UNIX:
		r := (*unix.RawSockaddrUnix)(p)
		l := int(n) - 2
		b := make([]byte, 0, l)
		for i := 0; i < l && i < len(r.Path); i++ {
			if r.Path[i] == 0 && i > 0 {
				break
			}
			b = append(b, byte(r.Path[i]))
		}
		if len(b) > 0 && b[0] == 0 {
			b[0] = '@' // abstract
		}
		return &unix.SockaddrUnix{Name: string(b)}
	case unix.AF_NETLINK:
		r := (*unix.RawSockaddrNetlink)(p)
		return &unix.SockaddrNetlink{Family: r.Family, Pad: r.Pad, Pid: r.Pid, Groups: r.Groups}
	case unix.AF_CAN:
		r := (*unix.RawSockaddrCAN)(p)
		return &unix.SockaddrCAN{Ifindex: int(r.Ifindex), RxID: binary.NativeEndian.Uint32(r.Addr[0:4]), TxID: binary.NativeEndian.Uint32(r.Addr[4:8])}
	}
	return nil
}
