//go:build linux

package ioring

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Socket operations. Each is one request with the whole contract (cancel at
// any time, one completion, buffers held until it, token, deadline): on
// io_uring the kernel's own socket opcodes (IORING_OP_SEND, RECV, SENDMSG,
// RECVMSG, ACCEPT, CONNECT, SHUTDOWN, each probed alone); on the poll
// backend a non-blocking attempt (MSG_DONTWAIT), then readiness through
// epoll. None of them is ordered on its stream (see Op.Unordered): submit
// one Recv at a time per socket when the order of the data matters, or use
// Read, which is ordered.

// Send sends buf on the connected socket fd with flags (unix.MSG_*; the ring
// adds MSG_NOSIGNAL: a peer that went away is EPIPE, never SIGPIPE). It
// completes with the number of bytes sent.
func Send(fd int, buf []byte, flags int) Op {
	return Op{code: OpSend, fd: fd, buf: buf, events: uint32(flags)}
}

// Recv receives into buf from the socket fd with flags (unix.MSG_PEEK,
// MSG_WAITALL...). It completes with the number of bytes received: 0 is the
// end of a stream.
func Recv(fd int, buf []byte, flags int) Op {
	return Op{code: OpRecv, fd: fd, buf: buf, events: uint32(flags)}
}

// SendMsg sends the message m on the socket fd with flags (unix.MSG_*; the
// ring adds MSG_NOSIGNAL): m.Buffers as data (read when the Op is built),
// m.Control as control messages (unix.UnixRights...), to m.Addr, or to the
// connected peer when m.Addr is nil. It completes with the number of bytes
// sent.
//
// m belongs to the Ring from submission until the completion is delivered,
// like every buffer: the ring builds the kernel's msghdr in it and keeps it
// pinned. Reuse it (for the next message) only then.
func SendMsg(fd int, m *Msg, flags int) Op {
	op := Op{code: OpSendMsg, fd: fd, events: uint32(flags)}
	if m != nil {
		op.bufs, op.arg, op.rare = m.Buffers, m, op.rare|rareFeature
	}
	return op
}

// RecvMsg receives a message from the socket fd with flags into m:
// m.Buffers (read when the Op is built) take the data, m.Control the
// control messages (credentials, timestamps, CAN frames' flags...), and
// the sender's address is kept for Msg.From. It completes with the number
// of data bytes received; Msg.ControlLen, Msg.Flags and Msg.From tell the
// rest once it is delivered. Datagram, netlink and CAN sockets deliver one
// message per request. With unix.MSG_ERRQUEUE it reads the socket's error
// queue (IP_RECVERR, timestamps, zero-copy notices): it waits while the
// socket has neither data nor an error, then completes with what the
// error queue holds, EAGAIN when it is empty (data in the receive queue
// ends the wait too: io_uring's behaviour, kept by both backends). With
// unix.MSG_WAITALL on a stream socket it goes on after a short transfer,
// as Recv does, unless m has room for control messages: then it ends with
// its first part, as io_uring's does, and descriptors sent with a later
// part stay queued with it for the next receive.
//
// m belongs to the Ring from submission until the completion is delivered.
func RecvMsg(fd int, m *Msg, flags int) Op {
	op := Op{code: OpRecvMsg, fd: fd, events: uint32(flags)}
	if m != nil {
		op.bufs, op.arg, op.rare = m.Buffers, m, op.rare|rareFeature
	}
	return op
}

// Accept accepts a connection on the listening socket fd with flags
// (unix.SOCK_NONBLOCK; SOCK_CLOEXEC is always added). It completes with the
// new connection's fd, which belongs to the caller (a cancel that loses
// the race delivers it too: close it). unix.Getpeername tells the peer.
func Accept(fd int, flags int) Op {
	return Op{code: OpAccept, fd: fd, events: uint32(flags | unix.SOCK_CLOEXEC)}
}

// Connect connects the socket fd to sa (a *unix.SockaddrInet4,
// SockaddrInet6, SockaddrUnix, SockaddrNetlink or SockaddrCAN). It
// completes with 0 once the connection is made. A canceled connect leaves
// the socket in whatever state the kernel reached: close it.
//
// On the poll backend the connect is made non-blocking (a socket without
// O_NONBLOCK has it set for the call and cleared again) and then waits for
// the socket to become writable, as Go's net package does. An AF_UNIX
// listener whose backlog is full makes a blocking socket's connect wait
// for room on both backends (a socket the caller made O_NONBLOCK gets
// EAGAIN on both): io_uring connects as soon as room comes; the poll
// backend, which no readiness event tells, tries again on a timer, every
// 20ms at most, and a cancel ends the wait at once. Any other EAGAIN (a UDP
// socket finding no ephemeral port to bind) completes the Connect at once
// on both, as connect(2) says it at once.
//
// Building the Op copies sa into the kernel's layout (one allocation); an
// address of another type is refused at submission with ErrInvalid.
func Connect(fd int, sa unix.Sockaddr) Op {
	op := Op{code: OpConnect, fd: fd}
	if sa != nil && checkSockaddr(sa) == nil {
		raw := new(unix.RawSockaddrAny)
		op.buf = sockaddrBytes(raw, putSockaddr(raw, sa))
	}
	return op
}

// Shutdown shuts down the sending (unix.SHUT_WR), receiving (SHUT_RD) or
// both directions (SHUT_RDWR) of the socket fd. It completes with 0.
func Shutdown(fd int, how int) Op {
	return Op{code: OpShutdown, fd: fd, events: uint32(how)}
}

// Msg is the message of a SendMsg or RecvMsg request: its data buffers, its
// control messages and the peer's address. The ring builds the kernel's
// msghdr inside it, so a Msg serves one request at a time and is the
// caller's again once that request's completion is delivered; reusing one
// Msg for request after request allocates nothing. A submission naming a
// Msg that a request still holds (on any ring, or twice in one batch) is
// refused with ErrInvalid, and nothing of it is submitted.
type Msg struct {
	// Buffers hold the data, sent in order or received into in order. A
	// RecvMsg may have none when it only wants control messages.
	Buffers [][]byte
	// Control holds the control messages to send (unix.UnixRights...), or
	// room for those received (unix.CmsgSpace).
	Control []byte
	// Addr is where SendMsg sends (nil: the connected peer). RecvMsg
	// ignores it; Msg.From returns the sender.
	Addr unix.Sockaddr

	hdr  unix.Msghdr         // what the kernel reads, and writes back on receive
	name unix.RawSockaddrAny // the address, in the kernel's layout
	// The request that holds the Msg (claimArg, fillArg): its ring and key;
	// claimed while a submission is between its claim and its fill.
	// Guarded by msgLock(m).
	holder    *Ring
	holderKey uint64
	claimed   bool
}

// ControlLen returns the number of bytes of control messages a delivered
// RecvMsg stored at the start of m.Control.
func (m *Msg) ControlLen() int { return int(m.hdr.Controllen) }

// Flags returns the flags a delivered RecvMsg reported (unix.MSG_TRUNC:
// the datagram was larger than the buffers; MSG_CTRUNC: control messages
// did not fit).
func (m *Msg) Flags() int { return int(m.hdr.Flags) }

// ControlMessages parses the control messages a delivered RecvMsg received.
func (m *Msg) ControlMessages() ([]unix.SocketControlMessage, error) {
	n := m.ControlLen()
	if n == 0 {
		return nil, nil
	}
	return unix.ParseSocketControlMessage(m.Control[:n])
}

// From returns the sender's address of a delivered RecvMsg (a
// *unix.SockaddrInet4, SockaddrInet6, SockaddrUnix, SockaddrNetlink or
// SockaddrCAN), or nil when the socket reports none or its family is
// another.
func (m *Msg) From() unix.Sockaddr { return parseSockaddr(&m.name, m.hdr.Namelen) }

// errNotSockaddr is the refusal of an address of a type the ring cannot
// hand to the kernel.
var errNotSockaddr = errors.New("unsupported address type (want *unix.SockaddrInet4, Inet6, Unix, Netlink or CAN)")

// checkMsgFlags refuses what is not a msg_flags value, and a receive
// given both MSG_PEEK and MSG_WAITALL: after a short peek io_uring's retry
// peeks again from the start of the queue, so the buffer would hold the
// same bytes twice (recv(2) would wait for the whole length).
func checkMsgFlags(o Op) error {
	if int32(o.events) < 0 {
		return fmt.Errorf("flags %#x", o.events)
	}
	if (o.code == OpRecv || o.code == OpRecvMsg) && o.events&(unix.MSG_PEEK|unix.MSG_WAITALL) == unix.MSG_PEEK|unix.MSG_WAITALL {
		return errors.New("MSG_PEEK with MSG_WAITALL: a short peek would be repeated into the rest of the buffer")
	}
	return nil
}

func checkMsg(o Op) error {
	m, _ := o.arg.(*Msg)
	if m == nil {
		return errors.New("nil Msg")
	}
	if err := checkMsgFlags(o); err != nil {
		return err
	}
	if len(o.bufs) > maxIovecs {
		return fmt.Errorf("%d buffers, more than %d", len(o.bufs), maxIovecs)
	}
	total := int64(0) // 64 bits: two buffers of 1 GiB overflow a 32-bit int
	for i, b := range o.bufs {
		if len(b) == 0 {
			return fmt.Errorf("buffer %d is nil or empty", i)
		}
		total += int64(len(b))
	}
	if total > 1<<31-1 {
		return fmt.Errorf("buffers of %d bytes in all, larger than 2 GiB", total)
	}
	if len(o.bufs) != len(m.Buffers) {
		return errors.New("Msg.Buffers changed after the Op was built")
	}
	if total == 0 && len(m.Control) == 0 {
		return errors.New("no buffers and no control room")
	}
	if o.code == OpSendMsg && m.Addr != nil {
		if err := checkSockaddr(m.Addr); err != nil {
			return err
		}
	}
	return nil
}

func checkAccept(o Op) error {
	if o.events&^uint32(unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC) != 0 {
		return fmt.Errorf("accept flags %#x (want SOCK_NONBLOCK, SOCK_CLOEXEC)", o.events)
	}
	return nil
}

func checkConnect(o Op) error {
	if len(o.buf) == 0 {
		return fmt.Errorf("nil address, or %v", errNotSockaddr)
	}
	return nil
}

func checkShutdown(o Op) error {
	switch o.events {
	case unix.SHUT_RD, unix.SHUT_WR, unix.SHUT_RDWR:
		return nil
	}
	return fmt.Errorf("shutdown how %d (want SHUT_RD, SHUT_WR or SHUT_RDWR)", o.events)
}
