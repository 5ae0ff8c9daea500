package usbsim

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// msgOverhead is what the kernel keeps of SO_SNDBUF for itself when it
// checks a datagram's size: unix_dgram_sendmsg refuses len > sk_sndbuf - 32
// with EMSGSIZE (net/unix/af_unix.c).
const msgOverhead = 32

// socketPair returns a connected SOCK_SEQPACKET pair: the host end as a raw
// blocking fd and the device end as a *net.UnixConn served by Go's
// netpoller. Both ends get a send buffer of at least sndbuf bytes where the
// kernel allows it; maxMsg is the largest message either end can send.
func socketPair(sndbuf int) (host int, dev *net.UnixConn, maxMsg int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, 0, fmt.Errorf("usbsim: socketpair: %w", err)
	}
	hostCap := setSendBuffer(fds[0], sndbuf)
	devCap := setSendBuffer(fds[1], sndbuf)
	f := os.NewFile(uintptr(fds[1]), "usbsim-device")
	c, err := net.FileConn(f) // dups the fd and makes it non-blocking
	f.Close()
	if err != nil {
		unix.Close(fds[0])
		return -1, nil, 0, fmt.Errorf("usbsim: device end: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		unix.Close(fds[0])
		return -1, nil, 0, fmt.Errorf("usbsim: device end is a %T", c)
	}
	return fds[0], uc, min(hostCap, devCap) - msgOverhead, nil
}

// setSendBuffer asks for an SO_SNDBUF of size bytes, past net.core.wmem_max
// with SO_SNDBUFFORCE where the process has CAP_NET_ADMIN, and returns the
// buffer the kernel granted (it doubles the value asked for, socket(7)).
func setSendBuffer(fd, size int) int {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
	}
	got, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return 0
	}
	return got
}

// setConnSendBuffer is setSendBuffer on the device end.
func setConnSendBuffer(c *net.UnixConn, size int) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { setSendBuffer(int(fd), size) })
}

// drainFD discards every message queued for reading on fd without blocking.
func drainFD(fd int) {
	var buf [64]byte // SOCK_SEQPACKET drops the rest of a longer message
	for {
		n, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return
		}
	}
}

func closeFD(fd int) { _ = unix.Close(fd) }

// msgTrunc is recvmsg's flag for a datagram longer than the buffer.
const msgTrunc = unix.MSG_TRUNC

// sendNow sends msg on the non-blocking socket fd as one message. It
// reports again when the socket is full (nothing was sent).
func sendNow(fd int, msg []byte) (again bool, err error) {
	for {
		_, err = unix.Write(fd, msg)
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return true, nil
		}
		return false, err
	}
}

// peerClosed reports whether the other end of c is gone (POLLHUP), which
// tells end of file from an empty message after a read of 0 bytes.
func peerClosed(c *net.UnixConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return true
	}
	closed := true
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		closed = err == nil && n > 0 && fds[0].Revents&unix.POLLHUP != 0
	})
	return closed
}
