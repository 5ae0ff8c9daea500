//go:build linux

package ioring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// rw runs slot s's read or write (OpRead, OpWrite, OpReadv, OpWritev) once
// on fd (the slot's own fd, or a duplicate of it), with preadv2/pwritev2
// and flags (unix.RWF_NOWAIT, or 0 to block), at s.off or at the current
// position when s.off is -1, for at most limit bytes when limit > 0 (all
// of the buffers when limit < 0). It returns the byte count or -errno, like
// a CQE. The call is synchronous: the iovec may live on the stack
// (uintptr(unsafe.Pointer) in the syscall's arguments keeps it alive and in
// place for the call), and the buffers are kept reachable by the Ring.
func rw(s *slot, fd int32, flags int, limit int) int32 {
	var one unix.Iovec
	var iov *unix.Iovec
	var n int
	switch s.code {
	case OpRead, OpWrite:
		one.Base = &s.buf[0]
		l := len(s.buf)
		if limit > 0 && limit < l {
			l = limit
		}
		one.SetLen(l)
		iov, n = &one, 1
	default:
		iov, n = &s.iov[0], len(s.iov)
		if limit > 0 && limit < opBytes(s) {
			// Rare (a bounded read of a device): a shortened copy.
			v := make([]unix.Iovec, 0, len(s.iov))
			for _, e := range s.iov {
				if limit == 0 {
					break
				}
				if int(e.Len) > limit {
					e.SetLen(limit)
				}
				limit -= int(e.Len)
				v = append(v, e)
			}
			iov, n = &v[0], len(v)
		}
	}
	return rwv(fd, s.code == OpWrite || s.code == OpWritev, iov, n, s.off, flags)
}

// rwFrom is rw (flags 0, no limit) for a request of which the first skip
// bytes have moved already (twinWrite): it moves the rest.
func rwFrom(s *slot, fd int32, skip int) int32 {
	if skip == 0 {
		return rw(s, fd, 0, -1)
	}
	if s.code == OpRead || s.code == OpWrite {
		b := s.buf[skip:]
		one := unix.Iovec{Base: &b[0]}
		one.SetLen(len(b))
		return rwv(fd, s.code == OpWrite, &one, 1, s.off, 0)
	}
	rest := skipIovecs(s.iov, skip)
	return rwv(fd, s.code == OpWritev, &rest[0], len(rest), s.off, 0)
}

// skipIovecs returns a copy of iov without its first skip bytes (fewer
// than iov holds): the rest of a transfer of which those have moved
// (rwFrom, sockCallFrom).
func skipIovecs(iov []unix.Iovec, skip int) []unix.Iovec {
	rest := make([]unix.Iovec, 0, len(iov))
	for _, v := range iov {
		if n := int(v.Len); skip >= n {
			skip -= n
			continue
		}
		v.Base = (*byte)(unsafe.Add(unsafe.Pointer(v.Base), skip))
		v.SetLen(int(v.Len) - skip)
		skip = 0
		rest = append(rest, v)
	}
	return rest
}

// rwv is the system call of rw and rwFixed: preadv2 (pwritev2 when write)
// of the n iovecs at iov on fd at off (-1: the current position) with
// flags, retried on EINTR, falling back to rwOld on a kernel without
// preadv2 when flags is 0. An offset on a file that has no position
// (ESPIPE) is ignored, as io_uring ignores it there: any offset on a pipe,
// offset 0 on a socket (whose read and write refuse any other, on io_uring
// too). It returns the byte count or -errno.
func rwv(fd int32, write bool, iov *unix.Iovec, n int, off int64, flags int) int32 {
	nr := uintptr(unix.SYS_PREADV2)
	if write {
		nr = unix.SYS_PWRITEV2
	}
	lo, hi := posLoHi(off)
	for {
		r1, _, e := unix.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(iov)), uintptr(n), lo, hi, uintptr(flags))
		switch e {
		case 0:
			return int32(r1)
		case unix.EINTR:
			continue
		case unix.ESPIPE:
			if ignoresOffset(fd, off) {
				off = -1
				lo, hi = posLoHi(off)
				continue
			}
		case unix.ENOSYS:
			if flags == 0 {
				return rwOld(fd, write, iov, n, off)
			}
			// No preadv2 (kernels before 4.6): no RWF_NOWAIT either.
			return -int32(unix.EOPNOTSUPP)
		}
		return -int32(e)
	}
}

// posLoHi splits off into pos_l and pos_h as the kernel's pos_from_hilo
// wants them (on 64-bit kernels the high word is ignored; -1 means the
// current position).
func posLoHi(off int64) (lo, hi uintptr) {
	const longBits = unix.SizeofLong * 8
	return uintptr(off), uintptr(uint64(off) >> (longBits - 1) >> 1)
}

// ignoresOffset reports whether a read or write at off on fd, which has no
// position (ESPIPE), runs at its current position instead, as on io_uring:
// any offset on a pipe or a character device, only 0 on a socket.
func ignoresOffset(fd int32, off int64) bool {
	if off < 0 {
		return false
	}
	if off == 0 {
		return true
	}
	var st unix.Stat_t
	return unix.Fstat(int(fd), &st) == nil && st.Mode&unix.S_IFMT != unix.S_IFSOCK
}

// rwOld is rw for kernels without preadv2: readv/writev at the current
// position, preadv/pwritev at an offset.
func rwOld(fd int32, write bool, iov *unix.Iovec, n int, off int64) int32 {
	var nr uintptr
	switch {
	case off < 0 && write:
		nr = unix.SYS_WRITEV
	case off < 0:
		nr = unix.SYS_READV
	case write:
		nr = unix.SYS_PWRITEV
	default:
		nr = unix.SYS_PREADV
	}
	lo, hi := posLoHi(off)
	for {
		r1, _, e := unix.Syscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(iov)), uintptr(n), lo, hi, 0)
		if e == unix.EINTR {
			continue
		}
		if e == unix.ESPIPE && ignoresOffset(fd, off) { // as rwv
			return rwOld(fd, write, iov, n, -1)
		}
		if e != 0 {
			return -int32(e)
		}
		return int32(r1)
	}
}
