//go:build linux

package ioring

import (
	"fmt"

	"github.com/cancelio/cancelio/internal/uring"
	"golang.org/x/sys/unix"
)

// The multishot operations and the io_uring side of BufRing and of the
// registered files (multishot.go, bufring.go, files.go).

// The completion flags the ring shares with the poll backend are io_uring's.
var (
	_ [cqeFBuffer]struct{}  = [uring.CQEFBuffer]struct{}{}
	_ [cqeFMore]struct{}    = [uring.CQEFMore]struct{}{}
	_ [cqeBufShift]struct{} = [uring.CQEBufShift]struct{}{}
)

// dupOwn returns the ring's own duplicate of fd (multiShot.own), or -1
// when it cannot be made (EMFILE: the request then goes unchecked, as one
// on a registered file does).
func dupOwn(fd int32) int32 {
	d, err := dupFD(fd)
	if err != nil {
		return -1
	}
	return d
}

// closeOwnFD closes multiShot.own.
func closeOwnFD(fd int32) { unix.Close(int(fd)) }

// PollMultishot waits for fd to have one of events (unix.POLLIN,
// POLLOUT...), again and again: each time the file signals readiness it
// delivers a completion with More set and N the ready events, and it stays
// armed until it is canceled (Request.Cancel, its token, its deadline,
// Close) or fails; the final completion (More clear) says why. Like
// io_uring's IORING_POLL_ADD_MULTI, it reports wake-ups, not levels: data
// that stays unread is not reported again until more arrives. A file that
// cannot be waited on (a regular file, always ready) ends it at once: the
// final completion carries the ready events. On io_uring the kernel ends
// it too when its completion ring is full (4 × Config.Entries results
// nobody reaped), on the events it could not post: the ring delivers those
// with More set and ends the request with ErrOverrun, as at
// MaxUndelivered (only a poll that had reported nothing before ends as a
// regular file's does). Submit again, and reap as results come. On io_uring
// it needs kernel 5.13; the poll backend emulates it with an
// edge-triggered epoll registration of its own.
func PollMultishot(fd int, events uint32) Op {
	return Op{code: OpPollMultishot, fd: fd, events: events, arg: noBufRing, rare: rareFeature}
}

// AcceptMultishot accepts connections on the listening socket fd, one
// completion (More set) per connection with N its new fd, which belongs to
// the caller, until it is canceled or fails; the final completion (More
// clear) says why; when a cancel meets io_uring's end of a full completion
// ring, it may carry one last connection (N > 0, no error): close it too. flags as Accept's. On io_uring it needs kernel 5.19
// (IORING_ACCEPT_MULTISHOT); the poll backend accepts on readiness, with
// the listener made non-blocking for each call when it is not (as Connect
// does).
func AcceptMultishot(fd int, flags int) Op {
	return Op{code: OpAcceptMultishot, fd: fd, events: uint32(flags | unix.SOCK_CLOEXEC), arg: noBufRing, rare: rareFeature}
}

// RecvMultishot receives from the socket fd into buffers of br, one
// completion per message or read (More set, Buffer set, BufID the buffer,
// N the bytes: br.Bytes(c)), until it is canceled, fails or the stream
// ends: the final completion (More clear) carries 0 at the end of the
// stream, ENOBUFS when br had no buffer left for data that arrived (give
// buffers back with br.Release, and submit again), an error, or a cancel.
// A final completion may carry a buffer as well (Buffer set). On io_uring
// a datagram socket's receive ends with ENOBUFS as soon as its last buffer
// is taken, data waiting or not (the kernel tries such a socket again at
// once). flags as
// Recv's (unix.MSG_WAITALL is refused: a multishot receive delivers what
// each read gets; so is unix.MSG_PEEK: every read would deliver the same
// data again). On io_uring it needs kernel 6.0 (IORING_RECV_MULTISHOT
// with a provided-buffer ring); the poll backend receives on readiness into
// the buffers br hands out in the same order.
//
// The end of a stream is reported even where io_uring misses it (Linux
// 6.17 on, until a 2026 fix: a receive that empties a stream whose peer
// has shut down may wait for ever): after each result that leaves a
// stream socket empty, the ring peeks at it without waiting, one system
// call, and at its end ends the request with 0 itself. It peeks at a
// duplicate of fd that the ring takes at submission (one more fd while the
// request is in flight), never at fd's number later, so another file that
// comes to take the number cannot end the request. For a request on a
// registered file (Op.FixedFile) the ring keeps a duplicate of each stream
// socket registered (RegisterFiles: one more fd each until UnregisterFiles
// or Close), and the request's own duplicate is taken from it.
//
// br stays the ring's until the request's final completion is delivered:
// BufRing.Close fails until then. A buffer is the caller's, for
// BufRing.Release, once the completion that carries it is delivered.
func RecvMultishot(fd int, br *BufRing, flags int) Op {
	return Op{code: OpRecvMultishot, fd: fd, events: uint32(flags), arg: br, rare: rareFeature}
}

// noBufRing marks a multishot Op without buffers (fill sees *BufRing).
var noBufRing = (*BufRing)(nil)

func checkRecvMultishot(o Op) error {
	if br, _ := o.arg.(*BufRing); br == nil {
		return fmt.Errorf("nil BufRing")
	}
	if err := checkMsgFlags(o); err != nil {
		return err
	}
	if o.events&unix.MSG_WAITALL != 0 {
		return fmt.Errorf("MSG_WAITALL with a multishot receive")
	}
	if o.events&unix.MSG_PEEK != 0 {
		// Each read would find the same data again: an endless stream of
		// copies, each taking a buffer of br.
		return fmt.Errorf("MSG_PEEK with a multishot receive")
	}
	return nil
}

func prepPollMulti(s *slot, sqe *uring.SQE) {
	sqe.OpFlags = s.events
	sqe.Len = uring.PollAddMulti
}

func prepAcceptMulti(s *slot, sqe *uring.SQE) {
	sqe.OpFlags = s.events
	sqe.IOPrio = uring.AcceptMultishot
}

func prepRecvMulti(s *slot, sqe *uring.SQE) {
	sqe.OpFlags = s.events
	sqe.IOPrio = uring.RecvMultishot
	sqe.Flags |= uring.SQEBufferSelect
	sqe.BufIndex = s.ms.br.group // buf_group
}

// uringMultishot reports whether the kernel knows op's multishot flag;
// tests replace it to simulate an older kernel. Only multishot operations
// whose opcode the kernel has are asked.
var uringMultishot = (*uringBackend).probeMultishot

// probeMultishot asks the kernel whether it runs op's multishot form: the
// opcode alone (IORING_REGISTER_PROBE) does not tell, as the flags came
// later (poll 5.13, accept 5.19, recv 6.0). A kernel without the flag
// refuses the SQE with EINVAL at preparation; one with it goes on to issue
// the request, on an eventfd (a valid fd that is no socket): the accept
// and the receive fail there with ENOTSOCK, the poll is armed and then
// canceled. Run once per op at New, on the empty ring.
func (b *uringBackend) probeMultishot(op Opcode) bool {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return false
	}
	defer unix.Close(efd)
	const ud = kindCancel<<kindShft | keyMask // never a request's
	sqe, _ := b.ring.NextSQE()
	sqe.FD = int32(efd)
	sqe.UserData = ud
	n := uint32(1)
	switch op {
	case OpPollMultishot:
		sqe.Opcode = uring.OpPollAdd
		sqe.OpFlags = unix.POLLIN
		sqe.Len = uring.PollAddMulti
		if c, _ := b.ring.NextSQE(); c != nil {
			c.Opcode = uring.OpAsyncCancel
			c.FD = -1
			c.Addr = ud
			c.UserData = ud - 1
			n = 2
		}
	case OpAcceptMultishot:
		sqe.Opcode = uring.OpAccept
		sqe.IOPrio = uring.AcceptMultishot
	case OpRecvMultishot:
		sqe.Opcode = uring.OpRecv
		sqe.IOPrio = uring.RecvMultishot
		sqe.Flags = uring.SQEBufferSelect
		sqe.BufIndex = 0xffff
	default:
		return false
	}
	if _, err := b.ring.Submit(n); err != nil {
		return false
	}
	res, seen := int32(0), false
	for got := uint32(0); got < n; {
		first, second := b.ring.PeekCQ()
		k := len(first) + len(second)
		if k == 0 {
			if err := b.ring.Wait(n-got, -1); err != nil {
				return false
			}
			continue
		}
		for _, c := range append(first, second...) {
			if c.UserData == ud && c.Flags&uring.CQEFMore == 0 {
				res, seen = c.Res, true
			}
			if c.Flags&uring.CQEFMore == 0 {
				got++
			}
		}
		b.ring.AdvanceCQ(uint32(k))
	}
	return seen && res != -int32(unix.EINVAL)
}

// uringBufRing is a BufRing's provided-buffer ring on io_uring.
type uringBufRing struct{ p *uring.PbufRing }

func (u uringBufRing) add(id uint16, buf []byte) { u.p.Add(id, buf) }

func (u uringBufRing) close(unregister bool) error { return u.p.Close(unregister) }

// newKernelBufRing registers b with the kernel, every buffer available
// (nil on the poll backend, which hands buffers out itself). r.sqMu held.
func (r *Ring) newKernelBufRing(b *BufRing) (kernelBufRing, error) {
	ub, ok := r.be.(*uringBackend)
	if !ok {
		return nil, nil
	}
	p, err := ub.ring.RegisterPbufRing(uint32(b.count), b.group)
	if err != nil {
		if err == unix.EINVAL {
			return nil, fmt.Errorf("%w: provided-buffer rings (IORING_REGISTER_PBUF_RING): %v", ErrNotSupported, err)
		}
		return nil, err
	}
	for i := 0; i < b.count; i++ {
		p.Add(uint16(i), b.Buf(uint16(i)))
	}
	return uringBufRing{p}, nil
}

// registerFiles hands the table to the backend. r.sqMu held.
func (r *Ring) registerFiles(table []int32) error {
	if b, ok := r.be.(*uringBackend); ok {
		if err := b.ring.RegisterFiles(table); err != nil {
			return err
		}
		b.registerBlocking(table)
		r.files.held = streamDups(table)
		return nil
	}
	// Every fd checked before any is duplicated: a duplicate takes the
	// lowest free number, which may be a later entry's closed fd, and
	// that entry would then name the duplicate (io_uring refuses the
	// table with EBADF).
	for i, fd := range table {
		if fd < 0 {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
			return fmt.Errorf("fd %d at index %d: %w", fd, i, err)
		}
	}
	held := make([]int32, len(table))
	for i, fd := range table {
		held[i] = -1
		if fd < 0 {
			continue
		}
		d, err := dupFD(fd)
		if err != nil {
			for _, h := range held[:i] {
				if h >= 0 {
					unix.Close(int(h))
				}
			}
			return fmt.Errorf("fd %d at index %d: %w", fd, i, err)
		}
		held[i] = d
	}
	r.files.held = held
	return nil
}

// streamDups returns the io_uring backend's duplicates of the stream
// sockets of table, -1 for every other entry, or nil when there is none:
// what a RecvMultishot on a registered file peeks at (eofCheck, through
// its own duplicate of the entry's, made by fillMulti). A socket whose
// duplicate fails is not checked, as an fd's is not.
func streamDups(table []int32) []int32 {
	var held []int32
	for i, fd := range table {
		if fd < 0 {
			continue
		}
		if t, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); err != nil || t != unix.SOCK_STREAM {
			continue
		}
		if held == nil {
			held = make([]int32, len(table))
			for j := range held {
				held[j] = -1
			}
		}
		held[i] = dupOwn(fd)
	}
	return held
}

// unregisterFiles takes the table back. r.sqMu held. Requests in flight
// hold duplicates of their own (the poll backend's, made while r.sqMu was
// held, before the request left flush; a RecvMultishot's on io_uring, by
// fillMulti), so closing the table's is safe.
func (r *Ring) unregisterFiles() error {
	if b, ok := r.be.(*uringBackend); ok {
		if err := b.ring.UnregisterFiles(); err != nil {
			return err
		}
		b.blk.fixed = nil
	}
	for _, h := range r.files.held {
		if h >= 0 {
			unix.Close(int(h))
		}
	}
	r.files.held = nil
	return nil
}

// closeFiles releases the ring's duplicates of registered files at Close
// (the kernel's references go with the io_uring instance).
func (r *Ring) closeFiles() {
	r.sqMu.Lock()
	held := r.files.held
	r.files.held = nil
	r.files.n.Store(0)
	r.sqMu.Unlock()
	for _, h := range held {
		if h >= 0 {
			unix.Close(int(h))
		}
	}
}

// heldFile returns the ring's duplicate of registered file index (see
// regFiles.held), or -1. r.sqMu held.
func (r *Ring) heldFile(index int32) int32 {
	if index < 0 || int(index) >= len(r.files.held) {
		return -1
	}
	return r.files.held[index]
}
