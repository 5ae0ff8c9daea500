//go:build linux

package ioring

import (
	"sync"

	"golang.org/x/sys/unix"
)

// Multishot requests on the poll backend (multishot.go). Each one holds a
// duplicate of its fd (p.own, made in its Submit, so that a closed and
// reused fd number never gets its I/O) registered in epoll on its own,
// edge-triggered (EPOLLET), with the request's slot in the event's data
// (-1-idx, which no pollFD id is) and its generation beside it. A wake-up
// of the file is an edge, which is what io_uring's multishot requests
// report too: a poll delivers the ready events once per edge; an accept
// or a receive runs until the socket would block (an edge promises
// nothing more), in bounded rounds, re-armed between them.
//
// States: psMulti while armed (a cancel ends it at once: the registration
// is removed and the final completion delivered), psRunning while the
// poller runs its round (a cancel marks it, and the round's end delivers
// the final completion after the round's others).

// multiRound bounds the accepts or receives of one round, so that one busy
// socket does not hold the poller; a round that did not reach EAGAIN
// re-arms the registration, which reports the socket again at once.
const multiRound = 64

// startMulti readies slot s's multishot request (flush, r.sqMu held; the
// caller's fd is valid): a duplicate of its fd to register in settle.
func (b *pollBackend) startMulti(s *slot, p *pslot) {
	p.act, p.res = paDone, 0
	switch s.code {
	case OpAcceptMultishot:
		if res := listening(p.fd); res != 0 {
			p.res = res // as io_uring's first attempt says
			return
		}
	case OpRecvMultishot:
		if _, err := unix.GetsockoptInt(int(p.fd), unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
			p.res = -errnoOf(err) // ENOTSOCK, EBADF: as io_uring's first attempt says
			return
		}
	}
	d, err := dupFD(p.fd)
	if err != nil {
		p.res = -errnoOf(err)
		return
	}
	p.own, p.fd = d, d
	p.want = unix.EPOLLIN
	if s.code == OpPollMultishot {
		p.want = s.events & pollableMask
	}
	p.act = paMulti
}

// armMulti registers slot idx's duplicate in epoll and parks the request
// (settle, b.mu held).
func (b *pollBackend) armMulti(idx uint32, p *pslot, out []compl) []compl {
	ev := unix.EpollEvent{Events: p.want | unix.EPOLLET, Fd: -1 - int32(idx), Pad: int32(p.key >> idxBits)}
	err := unix.EpollCtl(b.epfd, unix.EPOLL_CTL_ADD, int(p.own), &ev)
	switch err {
	case nil:
		p.st = psMulti
	case unix.EPERM:
		// A file without poll support (a regular file) is always ready
		// and has no wait queue to stay armed on: io_uring completes a
		// multishot poll on it at once, with the ready events, as its
		// final completion (kernel 6.18).
		ready := p.want & (unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDNORM | unix.EPOLLWRNORM)
		if b.r.slots[idx].code != OpPollMultishot {
			return b.finish(idx, p, -int32(unix.EPERM), out)
		}
		if ready == 0 { // none of the events it reports: as io_uring
			return b.finish(idx, p, -int32(unix.EINVAL), out)
		}
		return b.finish(idx, p, int32(ready), out)
	default:
		return b.finish(idx, p, -errnoOf(err), out)
	}
	return out
}

// disarmMulti removes slot's registration before the request finishes
// (its duplicate, p.own, is closed by finish). b.mu held.
func (b *pollBackend) disarmMulti(p *pslot) {
	unix.EpollCtl(b.epfd, unix.EPOLL_CTL_DEL, int(p.own), nil)
}

// readyMulti runs a round of the multishot request an event names.
func (b *pollBackend) readyMulti(ev unix.EpollEvent) {
	idx := uint32(-1 - ev.Fd)
	if int(idx) >= len(b.ps) {
		return
	}
	p := &b.ps[idx]
	b.mu.Lock()
	if p.st != psMulti || int32(p.key>>idxBits) != ev.Pad {
		b.mu.Unlock()
		return // an event of a request that ended
	}
	p.st = psRunning
	b.mu.Unlock()

	s := &b.r.slots[idx]
	out := b.pollOut[:0]
	final, ended, rearm := int32(0), false, false
	switch s.code {
	case OpPollMultishot:
		out = append(out, compl{idx, int32(ev.Events & (p.want | epollAlways)), cqeFMore})
	case OpAcceptMultishot:
		out, final, ended, rearm = b.acceptRound(idx, s, p, out)
	case OpRecvMultishot:
		out, final, ended, rearm = b.recvRound(idx, s, p, out)
	}
	// The round's completions are recorded while the request is still
	// psRunning: a cancel meanwhile only marks it, so its final completion
	// (below, or by the cancel once it is psMulti again) comes after them.
	// An overrun's cancel is left on the deferred list, run once b.mu is
	// released.
	for _, c := range out {
		b.r.shot(c.idx, c.res, c.cflags, true)
	}
	if len(out) > 0 {
		select {
		case b.note <- struct{}{}:
		default:
		}
	}
	out = out[:0]

	b.mu.Lock()
	switch {
	case p.canceled:
		b.disarmMulti(p)
		out = b.finish(idx, p, -int32(unix.ECANCELED), out)
	case ended:
		b.disarmMulti(p)
		out = b.finish(idx, p, final, out)
	default:
		p.st = psMulti
		if rearm {
			ev := unix.EpollEvent{Events: p.want | unix.EPOLLET, Fd: -1 - int32(idx), Pad: int32(p.key >> idxBits)}
			if err := unix.EpollCtl(b.epfd, unix.EPOLL_CTL_MOD, int(p.own), &ev); err != nil {
				b.disarmMulti(p)
				out = b.finish(idx, p, -errnoOf(err), out)
			}
		}
	}
	b.mu.Unlock()
	b.deliverAll(out)
	b.pollOut = out[:0]
	b.r.submitDeferred()
}

// acceptRound accepts what the listener has, up to multiRound connections,
// each a completion with more to come. It reports the final result when
// the request ends (an error), and whether to re-arm (the round stopped
// short of EAGAIN). A listener without O_NONBLOCK has it for the round (a
// blocking accept4 would hold the poller), as connectNonblock does.
func (b *pollBackend) acceptRound(idx uint32, s *slot, p *pslot, out []compl) (_ []compl, final int32, ended, rearm bool) {
	undo, _, errno := setNonblock(p.own)
	if errno != 0 {
		return out, -int32(errno), true, false
	}
	defer undo()
	for range multiRound {
		res := sockCall(s, p.own, 0)
		switch {
		case res >= 0:
			out = append(out, compl{idx, res, cqeFMore})
		case res == -int32(unix.EAGAIN):
			return out, 0, false, false
		case res == -int32(unix.ECONNABORTED):
			// The connection went away before it was accepted: the
			// next one may be there.
		default:
			return out, res, true, false
		}
	}
	return out, 0, false, true
}

// nonblockMu serializes the poll backend's toggles of a socket's
// O_NONBLOCK (setNonblock), across rings: two that overlap would each
// restore what they saw, and one could leave a listener blocking under
// the other's accept4, which then waits for a connection that may not
// come (an Accept on a worker, whose connection a multishot accept took).
var nonblockMu sync.Mutex

// setNonblock makes fd non-blocking, holding nonblockMu, until undo,
// which restores its flags and releases the lock. blocking reports that
// fd was without O_NONBLOCK (false when its flags could not be read). On
// error the lock is not held and undo is nil.
func setNonblock(fd int32) (undo func(), blocking bool, errno unix.Errno) {
	nonblockMu.Lock()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		nonblockMu.Unlock()
		return nil, false, unix.Errno(errnoOf(err))
	}
	if fl&unix.O_NONBLOCK != 0 {
		return nonblockMu.Unlock, false, 0
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NONBLOCK); err != nil {
		nonblockMu.Unlock()
		return nil, true, unix.Errno(errnoOf(err))
	}
	return func() {
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
		nonblockMu.Unlock()
	}, true, 0
}

// acceptNonblock runs an Accept on a blocking listener that poll said is
// ready, on a worker: accept4 made non-blocking for the call, so that a
// connection another took first (a multishot accept on the listener, an
// Accept on a dup of it) ends it with EAGAIN, and the request waits for
// readiness again, where a cancel reaches it, rather than in accept4.
func acceptNonblock(s *slot, fd int32) int32 {
	undo, _, errno := setNonblock(fd)
	if errno != 0 {
		return -int32(errno)
	}
	defer undo()
	return sockCall(s, fd, 0)
}

// recvRound receives what the socket has into buffers of the request's
// BufRing, up to multiRound reads, each a completion with more to come.
// It reports the final result when the request ends (the end of the
// stream, an error, ENOBUFS for data with no buffer left, as io_uring
// does), and whether to re-arm. It reads until EAGAIN even after a short
// read of a stream: wake-ups before the event was taken merge into it, so
// an end of stream (or more data) that came after the data read may have
// no edge of its own left to report it.
func (b *pollBackend) recvRound(idx uint32, s *slot, p *pslot, out []compl) (_ []compl, final int32, ended, rearm bool) {
	br := s.ms.br
	for range multiRound {
		id, ok := br.takeFree()
		if !ok {
			var one [1]byte
			switch res := recvfrom(p.own, one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT); {
			case res == -int32(unix.EAGAIN):
				return out, 0, false, false // nothing to put anywhere yet
			case res < 0:
				return out, res, true, false
			}
			return out, -int32(unix.ENOBUFS), true, false // data (or an end) and no buffer
		}
		switch res := recvfrom(p.own, br.Buf(id), int(s.events)|unix.MSG_DONTWAIT); {
		case res == -int32(unix.EAGAIN):
			br.putBack(id)
			return out, 0, false, false
		case res < 0:
			br.putBack(id)
			return out, res, true, false
		case res == 0:
			br.putBack(id)
			return out, 0, true, false // the end of the stream
		default:
			out = append(out, compl{idx, res, cqeFMore | cqeFBuffer | uint32(id)<<cqeBufShift})
		}
	}
	return out, 0, false, true
}
