//go:build linux

package ioring

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv9UnixListener returns a listening AF_UNIX stream socket bound to a
// new path, with backlog, and the path.
func adv9UnixListener(t *testing.T, backlog int) (int, string) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	path := filepath.Join(t.TempDir(), "l")
	require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: path}))
	require.NoError(t, unix.Listen(fd, backlog))
	return fd, path
}

func adv9UnixSocket(t *testing.T) int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// adv9FullUnixBacklog returns a listener with a backlog of 0 and its
// address, with one connection waiting in the backlog, which fills it.
func adv9FullUnixBacklog(t *testing.T) (lfd int, sa *unix.SockaddrUnix) {
	lfd, path := adv9UnixListener(t, 0)
	sa = &unix.SockaddrUnix{Name: path}
	require.NoError(t, unix.Connect(adv9UnixSocket(t), sa))
	return lfd, sa
}

// adv9Accept accepts one connection on lfd (blocking) and closes it with
// the test.
func adv9Accept(t *testing.T, lfd int) int {
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestAdv9ConnectUnixBacklogFull: a Connect of an AF_UNIX socket to a
// listener whose backlog is full. connect(2) on a blocking socket waits
// for room, and so does io_uring's, cancelably; a non-blocking one says
// EAGAIN. The poll backend's non-blocking emulation said EAGAIN for a
// blocking socket too, at once: no readiness of the connecting socket
// tells when room comes (fixed: it tries again on a timer).
func TestAdv9ConnectUnixBacklogFull(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		lfd, sa := adv9FullUnixBacklog(t)

		nb := adv9UnixSocket(t)
		require.NoError(t, unix.SetNonblock(nb, true))
		o.add("O_NONBLOCK socket: %s", adv9Res(adv9Do(t, r, Connect(nb, sa))))

		fd := adv9UnixSocket(t)
		q := submitPending(t, r, Connect(fd, sa)) // waits, not EAGAIN
		qc := submitPending(t, r, Connect(adv9UnixSocket(t), sa))
		qd, err := r.Submit(Connect(adv9UnixSocket(t), sa).WithDeadline(100 * time.Millisecond))
		require.NoError(t, err)
		o.add("deadline: %s", adv9Res(adv9Wait(t, r, qd)[0]))
		require.NoError(t, qc.Cancel())
		o.add("canceled: %s", adv9Res(adv9Wait(t, r, qc)[0]))
		assert.True(t, q.Pending(), "the blocking socket's connect waits")
		adv9Accept(t, lfd) // room for one
		o.add("after an accept: %s", adv9Res(adv9Wait(t, r, q)[0]))
		srv := adv9Accept(t, lfd)
		_, err = unix.Write(fd, []byte("hi"))
		require.NoError(t, err)
		buf := make([]byte, 4)
		k, err := unix.Read(srv, buf)
		require.NoError(t, err)
		o.add("the connection carries %q", buf[:k])
		assertNoMore(t, r)
	})
}

// TestAdv9ConnectUnixBacklogFullSndTimeo: a blocking AF_UNIX socket with
// SO_SNDTIMEO set. connect(2) waits for room in a full backlog only that
// long, then fails with EAGAIN; the poll backend must end its Connect as
// io_uring's does, not wait until a cancel or deadline.
func TestAdv9ConnectUnixBacklogFullSndTimeo(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		_, sa := adv9FullUnixBacklog(t)

		fd := adv9UnixSocket(t)
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		require.NoError(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv))
		start := time.Now()
		err := unix.Connect(fd, sa) // EINTR at times: Go's preemption signal
		o.log("connect(2): %v after %v", err, time.Since(start))

		fd = adv9UnixSocket(t)
		require.NoError(t, unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv))
		start = time.Now()
		q, err := r.Submit(Connect(fd, sa).WithDeadline(5 * time.Second))
		require.NoError(t, err)
		c := adv9Wait(t, r, q)[0]
		took := time.Since(start)
		o.add("Connect: %s", adv9Res(c))
		o.log("Connect took %v", took)
		assert.GreaterOrEqual(t, took, 40*time.Millisecond, "Connect waits for room first")
		assertNoMore(t, r)
	})
}
