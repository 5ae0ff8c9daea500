//go:build linux

package ioring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockCall runs slot s's send, recv, sendmsg, recvmsg or accept once on fd
// (the request's, or the duplicate it holds) with extra msg flags
// (MSG_DONTWAIT for an attempt that must not block; 0 on a worker) and
// returns its result like a CQE: the count or fd, or -errno.
func sockCall(s *slot, fd int32, flags int) int32 {
	var nr, a1, a2, a3 uintptr
	fl := uintptr(int(s.events) | flags)
	switch s.code {
	case OpSend:
		nr, a1, a2, a3 = unix.SYS_SENDTO, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), fl|unix.MSG_NOSIGNAL
	case OpRecv:
		nr, a1, a2, a3 = unix.SYS_RECVFROM, uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)), fl
	case OpSendMsg:
		nr, a1, a2 = unix.SYS_SENDMSG, uintptr(unsafe.Pointer(msgOf(s))), fl|unix.MSG_NOSIGNAL
	case OpRecvMsg:
		h := msgOf(s)
		if h.Name != nil {
			h.Namelen = unix.SizeofSockaddrAny // a failed attempt may have written it
		}
		h.Flags = 0
		nr, a1, a2 = unix.SYS_RECVMSG, uintptr(unsafe.Pointer(h)), fl
	case OpAccept, OpAcceptMultishot:
		// No peer address; accept4 has no MSG_DONTWAIT: it is tried
		// without blocking only on an O_NONBLOCK listener (startOp).
		nr, a3 = unix.SYS_ACCEPT4, uintptr(s.events)
	default:
		return -int32(unix.EOPNOTSUPP)
	}
	return sockSys(nr, fd, a1, a2, a3)
}

// sockSys makes socket system call nr on fd with arguments a1 to a3,
// retried on EINTR, and returns its result like a CQE: the count or fd, or
// -errno.
func sockSys(nr uintptr, fd int32, a1, a2, a3 uintptr) int32 {
	for {
		r1, _, e := unix.Syscall6(nr, uintptr(fd), a1, a2, a3, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -int32(e)
		}
		return int32(r1)
	}
}

// sysConnect connects slot s's socket, fd, to its address, once.
func sysConnect(s *slot, fd int32) int32 {
	_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&s.buf[0])), uintptr(len(s.buf)))
	switch e {
	case 0:
		return 0
	case unix.EINTR:
		// The connection goes on in the background: wait for it.
		return -int32(unix.EINPROGRESS)
	}
	return -int32(e)
}

// sysShutdown shuts down fd's directions how.
func sysShutdown(fd int32, how int) int32 {
	if err := unix.Shutdown(int(fd), how); err != nil {
		return -errnoOf(err)
	}
	return 0
}

// sysStatx runs slot s's statx, blocking.
func sysStatx(s *slot) int32 {
	dirfd := uintptr(int(s.fd)) // AT_FDCWD sign-extends as the kernel's int wants
	for {
		r1, _, e := unix.Syscall6(unix.SYS_STATX, dirfd, uintptr(unsafe.Pointer(&s.bufs[0][0])), uintptr(s.events), uintptr(s.off), uintptr(unsafe.Pointer(&s.bufs[1][0])), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -int32(e)
		}
		return int32(r1)
	}
}

// sysOpen runs slot s's openat relative to dirfd (the caller's, or a
// duplicate of it) with flags in place of the request's own.
func sysOpen(s *slot, dirfd int32, flags uint32) int32 {
	for {
		// O_LARGEFILE as io_uring's openat (and os.Open) add it: on
		// 32-bit platforms a file past 2 GiB opens, and grows past it.
		// AT_FDCWD sign-extends as the kernel's int wants.
		r1, _, e := unix.Syscall6(unix.SYS_OPENAT, uintptr(int(dirfd)), uintptr(unsafe.Pointer(&s.buf[0])), uintptr(flags|unix.O_LARGEFILE), uintptr(s.off), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return -int32(e)
		}
		return int32(r1)
	}
}

// recvfrom receives into buf (not empty) from fd once with flags and
// returns the count or -errno, like a CQE (a multishot receive's round).
func recvfrom(fd int32, buf []byte, flags int) int32 {
	return sockSys(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), uintptr(flags))
}

// sockCallFrom is sockCall for a send, recv, sendmsg or recvmsg of which
// the first skip bytes have moved already (MSG_WAITALL: tryAll): it moves
// the rest. A retried recvmsg passes no address and no control buffer
// (the first call filled them, as io_uring's retries do) and keeps the
// first call's lengths; the message's flags are the last call's, as
// io_uring reports them; a retried sendmsg passes no control
// messages (the first call sent them: its descriptors or credentials go
// once, with the message, as io_uring's retries do).
func sockCallFrom(s *slot, fd int32, flags, skip int) int32 {
	if skip == 0 {
		return sockCall(s, fd, flags)
	}
	fl := uintptr(int(s.events) | flags)
	switch s.code {
	case OpSend, OpRecv:
		nr, extra := uintptr(unix.SYS_RECVFROM), uintptr(0)
		if s.code == OpSend {
			nr, extra = unix.SYS_SENDTO, unix.MSG_NOSIGNAL
		}
		b := s.buf[skip:]
		return sockSys(nr, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), fl|extra)
	case OpSendMsg, OpRecvMsg:
		h := msgOf(s)
		saved := *h
		rest := skipIovecs(unsafe.Slice(h.Iov, h.Iovlen), skip)
		h.Iov = &rest[0]
		h.SetIovlen(len(rest))
		nr, extra := uintptr(unix.SYS_RECVMSG), uintptr(0)
		h.Control, h.Controllen = nil, 0
		if s.code == OpSendMsg {
			nr, extra = unix.SYS_SENDMSG, unix.MSG_NOSIGNAL
		} else {
			h.Name, h.Namelen = nil, 0
		}
		r := sockSys(nr, fd, uintptr(unsafe.Pointer(h)), fl|extra, 0)
		flagsNow := h.Flags
		*h = saved
		if r >= 0 {
			h.Flags = flagsNow
		}
		return r
	}
	return -int32(unix.EOPNOTSUPP)
}

// sockBytes returns how many bytes slot s's send, recv, sendmsg or
// recvmsg moves in all.
func sockBytes(s *slot) int {
	switch s.code {
	case OpSend, OpRecv:
		return len(s.buf)
	}
	h := msgOf(s)
	n := 0
	for _, v := range unsafe.Slice(h.Iov, h.Iovlen) {
		n += int(v.Len)
	}
	return n
}

// recvsControl reports whether slot s is a RecvMsg with room for control
// messages (tryAll), before its first part moved.
func recvsControl(s *slot) bool { return s.code == OpRecvMsg && msgOf(s).Controllen > 0 }
