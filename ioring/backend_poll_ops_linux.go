//go:build linux

package ioring

import (
	"time"

	"golang.org/x/sys/unix"
)

// The poll backend's side of the socket and file operations (ops_sock.go,
// ops_file.go), reached from start, try and worker through small hooks.
//
//   - Socket operations are tried at once without blocking: send, recv,
//     sendmsg and recvmsg with MSG_DONTWAIT (which leaves the fd's
//     O_NONBLOCK flag alone); on EAGAIN the request waits on its fd's
//     waiter list for epoll like a read, and a cancel ends it at once.
//     accept4 is tried at once on an O_NONBLOCK listener; on a blocking one
//     the request waits for readiness and then accepts on a worker, the
//     listener non-blocking for the call (acceptNonblock: a connection
//     another took first sends it back to waiting). connect is made non-blocking (EINPROGRESS),
//     waits for POLLOUT and reads SO_ERROR; one that finds an AF_UNIX
//     listener's backlog full (EAGAIN) on a blocking stream or seqpacket
//     socket is tried again on a worker, then on a timer (connectAgain),
//     until the socket's SO_SNDTIMEO, if set, runs out (EAGAIN then);
//     any other EAGAIN is the result, as on io_uring. shutdown never blocks.
//   - OpenAt, Close and Statx run on the worker pool: one still queued is
//     canceled at once and never runs; one running delivers its result.
//     OpenAt opens non-blocking (openAt), so that a FIFO's open does not
//     wait in open(2) for its other end; a write-only one that finds no
//     reader waits on a timer and is tried again (openLater), and a cancel
//     ends it at once; a reader that comes and goes between tries is seen
//     (openFile, backend_poll_fifo_linux.go).

// startOp is start for the operations of ops_sock.go and ops_file.go. The
// request is psRunning: startOp owns it.
func (b *pollBackend) startOp(s *slot, p *pslot) {
	switch opImpls[s.code].poll {
	case pkWork:
		p.act = paWork
		return
	case pkSock:
	case pkMulti:
		b.startMulti(s, p) // backend_poll_multi_linux.go
		return
	default:
		p.res = -int32(unix.EOPNOTSUPP)
		return
	}
	if s.code == OpShutdown {
		p.res = sysShutdown(p.fd, int(s.events))
		return
	}
	fixed := s.code == OpReadFixed || s.code == OpWriteFixed
	if fixed && !b.r.inFixed(s) { // flush holds r.sqMu
		p.res = -int32(unix.EFAULT) // as io_uring says
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(s.fd), &st); err != nil {
		p.res = -errnoOf(err)
		return
	}
	if fixed {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFBLK, unix.S_IFDIR:
			// As a Read of a file: from the page cache when it can
			// (cachedRead's rules), else on a worker.
			if s.code == OpReadFixed && s.off >= 0 {
				res := rwFixed(s, p.fd, unix.RWF_NOWAIT)
				if res != -int32(unix.EAGAIN) && res != -int32(unix.EOPNOTSUPP) &&
					(res < 0 || int(res) == len(s.buf) || (st.Mode&unix.S_IFMT == unix.S_IFREG && s.off+int64(res) >= st.Size)) {
					p.res = res
					return
				}
			}
			p.act = paWork
			return
		}
	}
	p.want = unix.EPOLLIN
	if s.code.desc().write || s.code == OpConnect {
		p.want = unix.EPOLLOUT
	}
	p.mode = pmSock
	if s.code == OpAccept {
		fl, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETFL, 0)
		if err != nil {
			p.res = -errnoOf(err)
			return
		}
		if fl&unix.O_NONBLOCK == 0 {
			if res := listening(p.fd); res != 0 {
				p.res = res // it would wait for a connection that cannot come
				return
			}
			// accept4 has no per-call MSG_DONTWAIT: wait for a
			// connection, then accept on a worker.
			p.mode = pmBlocking
			b.try(s, p)
			return
		}
	}
	b.trySock(s, p)
}

// trySock runs a socket operation once without blocking and sets p.act
// (paDone or paWait) and p.res. It acts on p.fd: the caller's fd while the
// request is first tried (in its Submit), then the duplicate the request
// holds (attach), never a number the caller may have closed and reused.
func (b *pollBackend) trySock(s *slot, p *pslot) {
	p.act = paDone
	if s.code == OpReadFixed || s.code == OpWriteFixed {
		p.res = rwFixed(s, p.fd, unix.RWF_NOWAIT)
		switch p.res {
		case -int32(unix.EAGAIN):
			p.act = paWait
		case -int32(unix.EOPNOTSUPP):
			// No RWF_NOWAIT (a tty): wait for readiness, then run on a
			// worker, as a Read does on such a file.
			p.mode = pmBlocking
			b.try(s, p)
		}
		return
	}
	if s.code == OpConnect {
		// s.off, which a connect does not use, says whether the
		// connection was started: it belongs to whoever runs the
		// request, like p.
		if s.off == 0 {
			var blocking bool
			p.res, blocking = connectNonblock(s, p.fd)
			if p.res == -int32(unix.ECONNABORTED) {
				// The socket's last connect failed and its error was
				// taken (below, or by the caller's SO_ERROR): that call
				// only put it back to unconnected. Connect once more, as
				// io_uring does.
				p.res, blocking = connectNonblock(s, p.fd)
			}
			switch {
			case p.res == -int32(unix.EINPROGRESS):
				s.off = 1
				p.act = paWait
			case p.res == -int32(unix.EAGAIN) && blocking && waitsForRoom(p.fd):
				// An AF_UNIX listener's backlog is full: connect(2)
				// on a blocking socket waits for room, as io_uring
				// does, but no readiness of this socket tells when
				// room comes. A worker tries again, then a timer
				// (connectAgain, openLater). Any other EAGAIN (a UDP
				// socket with no ephemeral port to bind) is the
				// result, as connect(2) and io_uring say it at once.
				// A socket with SO_SNDTIMEO waits that long, then
				// fails with EAGAIN, in connect(2) as on io_uring.
				p.act = paWork
				if tv, err := unix.GetsockoptTimeval(int(p.fd), unix.SOL_SOCKET, unix.SO_SNDTIMEO); err == nil {
					if d := time.Duration(unix.TimevalToNsec(*tv)); d > 0 {
						p.giveUp = time.Since(epoch) + d
					}
				}
			}
			return
		}
		switch ev := pollNow(p.fd, unix.POLLOUT); {
		case ev == 0:
			p.act = paWait
		case ev < 0:
			p.res = ev
		case ev&unix.POLLERR != 0 && sockErr(p):
			// The handshake failed, or something aborted it (a
			// shutdown: the socket is unconnected again, and a connect
			// now would start over): its error is the outcome, as on
			// io_uring, which takes it on EPOLLERR too.
		default:
			// Connect again, as io_uring does: that reports the outcome
			// and, after a failure, puts the socket back to unconnected.
			switch r, _ := connectNonblock(s, p.fd); r {
			case 0, -int32(unix.EISCONN):
				p.res = 0
			case -int32(unix.EALREADY), -int32(unix.EINPROGRESS):
				p.act = paWait
			default:
				p.res = r
			}
		}
		return
	}
	if s.events&unix.MSG_WAITALL != 0 && moves(s.code) && !dontWait(s) {
		// (With MSG_DONTWAIT one call is the whole request, as on
		// io_uring and in recv(2).)
		b.tryAll(s, p)
		return
	}
	p.res = sockCall(s, p.fd, unix.MSG_DONTWAIT)
	if p.res == -int32(unix.EAGAIN) && !dontWait(s) {
		if (s.code == OpRecvMsg || s.code == OpRecv) && s.events&unix.MSG_ERRQUEUE != 0 {
			// A read of the error queue waits for the socket to be
			// readable or to have an error, once: then it completes
			// with what the error queue holds, EAGAIN when nothing, as
			// io_uring's does. (Readiness of the receive queue would
			// otherwise wake it again and again, for as long as its
			// data stays unread.)
			if p.tries != 0 {
				return
			}
			p.tries = 1
		}
		p.act = paWait
	}
}

// sockErr takes the pending error of p's socket (SO_ERROR) into p.res
// and reports whether there was one.
func sockErr(p *pslot) bool {
	e, err := unix.GetsockoptInt(int(p.fd), unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		p.res = -errnoOf(err)
	case e != 0:
		p.res = -int32(e)
	default:
		return false
	}
	return true
}

// moves reports whether op is a send, recv, sendmsg or recvmsg.
func moves(op Opcode) bool {
	return op == OpSend || op == OpRecv || op == OpSendMsg || op == OpRecvMsg
}

// tryAll is trySock for a send or receive given MSG_WAITALL. A
// non-blocking call moves what it can now; as io_uring does on a stream
// socket, the request goes on after a short transfer until all of it has
// moved, the peer ends the stream, or an error comes. p.moved counts what
// has moved, which the completion reports after an error or a cancel too
// (finish).
func (b *pollBackend) tryAll(s *slot, p *pslot) {
	p.act = paDone
	total := sockBytes(s)
	// Read before the first part moves: recvmsg writes back the room the
	// control messages used.
	oneRecv := recvsControl(s)
	for {
		r := sockCallFrom(s, p.fd, unix.MSG_DONTWAIT, int(p.moved))
		switch {
		case r == -int32(unix.EAGAIN) && !dontWait(s):
			p.act = paWait
			return
		case r <= 0: // an error, or the end of the stream
			p.res = r
			return
		}
		p.moved += r
		if int(p.moved) >= total || !streamSocket(p.fd) || oneRecv {
			// A RecvMsg with room for control messages ends at its first
			// part too, as io_uring's does (6.18): the descriptors of a
			// later part would otherwise be closed by the kernel (no room
			// left for them), where io_uring leaves them queued.
			p.res = 0 // finish reports p.moved
			return
		}
	}
}

// streamSocket reports whether fd is a socket whose transfers MSG_WAITALL
// continues (SOCK_STREAM or SOCK_SEQPACKET, as io_uring's retry of short
// transfers): a datagram socket's message is whole at once.
func streamSocket(fd int32) bool {
	t, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && (t == unix.SOCK_STREAM || t == unix.SOCK_SEQPACKET)
}

// dontWait reports whether slot s's socket operation was given
// MSG_DONTWAIT: it completes with EAGAIN rather than wait, as on io_uring.
func dontWait(s *slot) bool {
	return moves(s.code) && s.events&unix.MSG_DONTWAIT != 0
}

// connectNonblock starts a non-blocking connect of slot s's socket, fd: a
// socket without O_NONBLOCK gets it for the call (a blocking connect would
// hold the poller) and loses it again (setNonblock); the connection goes
// on regardless. blocking reports that the socket was without O_NONBLOCK:
// the caller's connect(2) would have waited.
func connectNonblock(s *slot, sfd int32) (res int32, blocking bool) {
	undo, blocking, errno := setNonblock(sfd)
	if errno != 0 {
		return -int32(errno), blocking
	}
	defer undo()
	return sysConnect(s, sfd), blocking
}

// waitsForRoom reports whether fd is a socket whose blocking connect(2)
// waits where a non-blocking one says EAGAIN: an AF_UNIX stream or
// seqpacket socket, whose listener's backlog is full. Elsewhere EAGAIN
// from connect(2) is final, blocking or not: an AF_INET or AF_INET6
// datagram socket found no ephemeral port to bind (a TCP socket says
// EADDRNOTAVAIL then), and io_uring's Connect completes with it too.
func waitsForRoom(fd int32) bool {
	d, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil || d != unix.AF_UNIX {
		return false
	}
	t, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil && (t == unix.SOCK_STREAM || t == unix.SOCK_SEQPACKET)
}

// connectAgain runs slot s's Connect on a worker, without blocking, on
// the duplicate it holds: trySock found the listener's backlog full
// (EAGAIN on a blocking AF_UNIX socket). It reports wait when the
// backlog is still full, the socket still blocking and its SO_SNDTIMEO
// (p.giveUp) not run out: the request is tried again on a timer a cancel
// stops (openLater), as connect(2) and io_uring would wait. Once room
// comes, the connect completes at once (an AF_UNIX connect does not go
// through EINPROGRESS); once SO_SNDTIMEO has run out, EAGAIN is the
// result, as connect(2) and io_uring's Connect say then.
func connectAgain(s *slot, p *pslot, fd int32) (res int32, wait bool) {
	res, blocking := connectNonblock(s, fd)
	wait = res == -int32(unix.EAGAIN) && blocking
	if wait && p.giveUp > 0 && time.Since(epoch) >= p.giveUp {
		wait = false
	}
	return res, wait
}

// runBlocking runs one of these operations on a worker, blocking, on fd:
// the duplicate a socket operation holds (settle, attach), or the caller's
// own fd for the file operations.
func runBlocking(s *slot, fd int32) int32 {
	switch s.code {
	case OpClose:
		// Never retried: after EINTR the fd is closed all the same.
		if err := unix.Close(int(fd)); err != nil {
			return -errnoOf(err)
		}
		return 0
	case OpStatx:
		return sysStatx(s)
	case OpReadFixed, OpWriteFixed:
		return rwFixed(s, fd, 0)
	}
	return sockCall(s, fd, 0)
}

// openAt runs slot s's OpenAt on a worker, relative to dirfd (the
// caller's, or the duplicate a waiting open holds: openLater). The open
// is non-blocking, as io_uring's first attempt is, so that a FIFO's open
// never sits in open(2) waiting for its other end, where no cancel could
// reach it; the fd it returns loses O_NONBLOCK again unless the caller
// asked for it. It reports wait when the open is to be tried again later:
// a write-only open of a FIFO that has no reader yet (ENXIO once
// non-blocking), which open(2) would wait for.
//
// What that changes, against a blocking open(2), is what it changes on
// io_uring: a read-only open of a FIFO does not wait for a writer (no
// system call tells when one comes; reads see end of file until then), a
// terminal's open does not wait for its carrier. An open that would block
// for another reason (EAGAIN: a lease to break) is made again blocking,
// as io_uring's worker makes it.
func openAt(s *slot, dirfd int32) (res int32, wait bool) {
	flags := s.events
	if flags&(unix.O_NONBLOCK|unix.O_PATH) != 0 {
		// O_PATH ignores O_NONBLOCK, and opens nothing that waits.
		return sysOpen(s, dirfd, flags), false
	}
	res = sysOpen(s, dirfd, flags|unix.O_NONBLOCK)
	switch {
	case res >= 0:
		if e := clearNonblock(res); e != 0 {
			unix.Close(int(res))
			return e, false
		}
	case res == -int32(unix.EAGAIN):
		res = sysOpen(s, dirfd, flags)
	case res == -int32(unix.ENXIO) && flags&unix.O_ACCMODE == unix.O_WRONLY:
		// A FIFO without a reader, or a file that says ENXIO however
		// it is opened (a socket, a device without its driver).
		return res, isFIFO(s, dirfd)
	}
	return res, false
}

// openFile runs slot s's OpenAt on a worker (openAt), relative to dirfd,
// for request p. A write-only open that is to wait for a FIFO's reader
// watches the FIFO for opens (watchFIFO); once one came since the last
// try, although no reader is there now, a reader came and went, and the
// open completes as open(2)'s would (openPast). See
// backend_poll_fifo_linux.go.
func (b *pollBackend) openFile(s *slot, p *pslot, dirfd int32) (res int32, wait bool) {
	res, wait = openAt(s, dirfd)
	if !wait {
		return res, false
	}
	if p.fwd >= 0 {
		if fpath, opened := b.fifoOpened(p); opened && !b.canceledNow(p) {
			// Not after a cancel: that came first, and openPast opens
			// the FIFO for reading, which other writers see.
			if r, ok := openPast(s, fpath); ok {
				return r, false
			}
		}
	}
	b.watchFIFO(s, p, dirfd)
	return res, true
}

// canceledNow reports whether running request p was canceled meanwhile.
func (b *pollBackend) canceledNow(p *pslot) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return p.canceled
}

// clearNonblock clears O_NONBLOCK on fd, which openAt opened: 0 or -errno.
func clearNonblock(fd int32) int32 {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && fl&unix.O_NONBLOCK != 0 {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		return -errnoOf(err)
	}
	return 0
}

// isFIFO reports whether slot s's OpenAt path names a FIFO now, relative
// to dirfd, following a last symbolic link as the open does.
func isFIFO(s *slot, dirfd int32) bool {
	flags := 0
	if s.events&unix.O_NOFOLLOW != 0 {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	var st unix.Stat_t
	path := string(s.buf[:len(s.buf)-1]) // a C string (cString)
	for {
		err := unix.Fstatat(int(dirfd), path, &st, flags)
		if err == unix.EINTR {
			continue
		}
		return err == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
	}
}

// openRetryMax bounds the interval at which an open waiting for a FIFO's
// reader, or a connect waiting for room in a backlog, is tried again
// (openLater): a reader that blocks in its own open (waiting for a
// writer) is met within it.
const openRetryMax = 20 * time.Millisecond

// openLater makes request idx, an OpenAt that openAt found waiting for a
// FIFO's reader or a Connect that connectAgain found waiting for room in
// an AF_UNIX listener's backlog, try again after a while, on a timer
// (psRetry), where a cancel ends it at once: from 1ms, doubling up to
// openRetryMax. It holds no worker meanwhile. The first time, it takes a
// duplicate of the caller's directory fd (p.own, closed by finish), so
// that every attempt resolves the path in the directory the first one
// did (a Connect holds its socket's duplicate already: settle). A worker calls it
// with b.mu held; the request is psRunning and not canceled.
func (b *pollBackend) openLater(idx uint32, p *pslot, out []compl) []compl {
	if p.own < 0 && p.fd != unix.AT_FDCWD {
		fd, err := dupFD(p.fd)
		if err != nil {
			return b.finish(idx, p, -errnoOf(err), out)
		}
		p.own, p.fd = fd, fd
	}
	d := min(time.Millisecond<<p.tries, openRetryMax)
	if p.giveUp > 0 {
		// The try after SO_SNDTIMEO runs out ends the Connect.
		d = max(min(d, p.giveUp-time.Since(epoch)), 0)
	}
	p.tries = min(p.tries+1, 16)
	p.st = psRetry
	b.armTimer(idx, p, d)
	return out
}

// listening returns 0 when fd is a listening socket, else what accept4
// (and io_uring's accept) says at once: EINVAL for a socket that does not
// listen, ENOTSOCK or EBADF for the rest. The poll backend accepts on
// readiness, which a socket that does not listen may never report.
func listening(fd int32) int32 {
	v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	switch {
	case err != nil:
		return -errnoOf(err)
	case v == 0:
		// As accept4(2) and io_uring: a socket type without accept
		// (datagrams) says so; a stream socket not listening, EINVAL.
		if t, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); err == nil &&
			t != unix.SOCK_STREAM && t != unix.SOCK_SEQPACKET {
			return -int32(unix.EOPNOTSUPP)
		}
		return -int32(unix.EINVAL)
	}
	return 0
}
