//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Connects that get EAGAIN from the kernel for want of an ephemeral port,
// made real in a network namespace of the test's own (CLONE_NEWNET, on an
// OS thread that ends with it): its loopback is up and its ephemeral port
// range (net.ipv4.ip_local_port_range, per namespace) is the one port
// adv9EphPort, which a socket bound to it takes. Nothing outside the
// namespace is changed; a socket keeps its namespace wherever it is used
// from, so the rings run from the test's goroutine as usual.

const (
	adv9EphPort  = 40000 // the namespace's only ephemeral port
	adv9PeerPort = 40001 // outside the range: the peer's, bound explicitly
)

// adv9Netns runs mk, which makes the scenario's sockets, on an OS thread
// of its own in a new network namespace set up as described above. It
// fails the test when mk returns an error, and skips the
// test where no namespace can be made (no CAP_SYS_ADMIN).
func adv9Netns(t *testing.T, mk func() error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in its own namespace, ends with
		// the goroutine rather than run other goroutines.
		runtime.LockOSThread()
		errc <- adv9NetnsSetup(mk)
	}()
	err := <-errc
	if errors.Is(err, unix.EPERM) {
		t.Skipf("no network namespace of our own: %v", err)
	}
	require.NoError(t, err)
}

func adv9NetnsSetup(mk func() error) error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
	}
	// Loopback up: 127.0.0.1 is routed.
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	// /proc/sys/net is the opening thread's namespace.
	f, err := unix.Open("/proc/sys/net/ipv4/ip_local_port_range", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = unix.Write(f, fmt.Appendf(nil, "%d %d\n", adv9EphPort, adv9EphPort))
	unix.Close(f)
	if err != nil {
		return fmt.Errorf("ip_local_port_range: %w", err)
	}
	return mk()
}

// adv9NsSocks makes sockets in adv9Netns's mk, closed with the test.
type adv9NsSocks struct {
	t   *testing.T
	err error
}

// sock returns a new socket of type typ (AF_INET), bound to 127.0.0.1:port
// unless port is 0; on an error it returns -1 and keeps the first error.
func (k *adv9NsSocks) sock(typ, port int) int {
	if k.err != nil {
		return -1
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		k.err = err
		return -1
	}
	k.t.Cleanup(func() { unix.Close(fd) })
	if port != 0 {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
			k.err = fmt.Errorf("bind %d: %w", port, err)
			return -1
		}
	}
	return fd
}

// TestAdv9ConnectNoEphemeralPort: a Connect of a TCP or UDP socket that
// finds no ephemeral port free. connect(2) fails with EAGAIN at once,
// blocking socket or not (nothing it could wait for), and so does
// io_uring's Connect. The poll backend took a blocking socket's EAGAIN for
// an AF_UNIX listener's full backlog, which connect(2) waits out, and
// tried again on a timer until canceled (fixed: only an AF_UNIX stream or
// seqpacket socket waits). Once the port is free, the same socket
// connects. A TCP socket says EADDRNOTAVAIL there (not the EAGAIN of
// connect(2)'s manual page), which no backend ever waited on: that case
// guards the comparison, the UDP one failed before the fix.
func TestAdv9ConnectNoEphemeralPort(t *testing.T) {
	peerSA := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: adv9PeerPort}
	// The bound on a wait that should not be: what the poll backend
	// did is recorded as a timeout, a difference the harness shows.
	const bound = 5 * time.Second
	adv9Run(t, []adv9Case{
		{"tcp", func(t *testing.T, r *Ring, o *adv9Obs) {
			k := &adv9NsSocks{t: t}
			var lfd, blocker, fd, nb, plain int
			adv9Netns(t, func() error {
				lfd = k.sock(unix.SOCK_STREAM, adv9PeerPort)
				if k.err == nil {
					k.err = unix.Listen(lfd, 4)
				}
				blocker = k.sock(unix.SOCK_STREAM, adv9EphPort)
				fd = k.sock(unix.SOCK_STREAM, 0)
				nb = k.sock(unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
				plain = k.sock(unix.SOCK_STREAM, 0)
				return k.err
			})
			o.add("connect(2), blocking: %v", unix.Connect(plain, peerSA))
			o.add("O_NONBLOCK socket: %s", adv9Res(adv9Do(t, r, Connect(nb, peerSA).WithDeadline(bound))))
			o.add("blocking socket: %s", adv9Res(adv9Do(t, r, Connect(fd, peerSA).WithDeadline(bound))))
			require.NoError(t, adv9Close(blocker)) // the port is free
			o.add("after the port is freed: %s", adv9Res(adv9Do(t, r, Connect(fd, peerSA).WithDeadline(bound))))
			srv := adv9Accept(t, lfd)
			peer, err := unix.Getpeername(srv)
			require.NoError(t, err)
			o.add("the connection's port: %d", peer.(*unix.SockaddrInet4).Port)
			assertNoMore(t, r)
		}},
		{"udp", func(t *testing.T, r *Ring, o *adv9Obs) {
			k := &adv9NsSocks{t: t}
			var peer, blocker, fd, plain int
			adv9Netns(t, func() error {
				peer = k.sock(unix.SOCK_DGRAM, adv9PeerPort)
				blocker = k.sock(unix.SOCK_DGRAM, adv9EphPort)
				fd = k.sock(unix.SOCK_DGRAM, 0)
				plain = k.sock(unix.SOCK_DGRAM, 0)
				return k.err
			})
			o.add("connect(2), blocking: %v", unix.Connect(plain, peerSA))
			o.add("blocking socket: %s", adv9Res(adv9Do(t, r, Connect(fd, peerSA).WithDeadline(bound))))
			require.NoError(t, adv9Close(blocker))
			o.add("after the port is freed: %s", adv9Res(adv9Do(t, r, Connect(fd, peerSA).WithDeadline(bound))))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(fd, []byte("ping"), 0))))
			buf := make([]byte, 8)
			n, from, err := unix.Recvfrom(peer, buf, 0)
			require.NoError(t, err)
			o.add("peer got %q from port %d", buf[:n], from.(*unix.SockaddrInet4).Port)
			assertNoMore(t, r)
		}},
		{"unix-seqpacket-backlog-full", func(t *testing.T, r *Ring, o *adv9Obs) {
			// The other side of the line: an AF_UNIX seqpacket socket's
			// EAGAIN (a full backlog) still waits, as a stream one's
			// does (TestAdv9ConnectUnixBacklogFull).
			sock := func() int {
				fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				t.Cleanup(func() { unix.Close(fd) })
				return fd
			}
			lfd := sock()
			sa := &unix.SockaddrUnix{Name: filepath.Join(t.TempDir(), "l")}
			require.NoError(t, unix.Bind(lfd, sa))
			require.NoError(t, unix.Listen(lfd, 0))
			require.NoError(t, unix.Connect(sock(), sa)) // fills the backlog
			q := submitPending(t, r, Connect(sock(), sa))
			fd := sock()
			qw := submitPending(t, r, Connect(fd, sa))
			require.NoError(t, q.Cancel())
			o.add("canceled: %s", adv9Res(adv9Wait(t, r, q)[0]))
			adv9Accept(t, lfd) // room for one
			o.add("after an accept: %s", adv9Res(adv9Wait(t, r, qw)[0]))
			assertNoMore(t, r)
		}},
	})
}
