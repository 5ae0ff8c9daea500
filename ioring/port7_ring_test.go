//go:build linux

package ioring

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, the ring and its files: ported from liburing's
// submit-and-wait, defer-tw-timeout and b5837bd5311d (how long a wait for
// completions waits), openat2 (what an open reports), and ooo-file-unreg
// and rsrc_tags (registered files dropped while a request still uses one).

// TestPort7ReapWaitsOnce ports submit-and-wait.c, defer-tw-timeout.c and
// b5837bd5311d.c: a wait for completions returns as soon as one is there,
// whatever room dst has for more, and does not wait a second time: a Nop
// submitted with SubmitAndReap comes back in the same call, long before
// its timeout; a Timeout of 200ms that fires during a Reap of 20s ends the
// Reap with it; a reap with nothing in flight waits its whole timeout
// (not less) and returns 0; a batch whose last op waits is submitted whole
// and the others' completions come back.
func TestPort7ReapWaitsOnce(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		dst := make([]Completion, 4)
		reqs := make([]Request, 4)

		start := time.Now()
		m, n, err := r.SubmitAndReap([]Op{Nop().WithUser("nop")}, reqs, dst[:2], 20*time.Second)
		require.NoError(t, err)
		assert.Equal(t, 1, m, "the submit count")
		require.Equal(t, 1, n)
		assert.Equal(t, "nop", dst[0].User)
		assert.NoError(t, dst[0].Err)
		assert.Less(t, time.Since(start), 10*time.Second, "no wait for a second completion")

		const d = 200 * time.Millisecond
		q, err := r.Submit(Timeout(d))
		require.NoError(t, err)
		start = time.Now()
		n, err = r.Reap(dst, 20*time.Second)
		took := time.Since(start)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		assert.Equal(t, q, dst[0].Req)
		assert.NoError(t, dst[0].Err, "a Timeout that fired completes with 0")
		assert.Zero(t, dst[0].N)
		assert.GreaterOrEqual(t, took, d-5*time.Millisecond, "not before the Timeout fired")
		assert.Less(t, took, 10*time.Second, "ends with the Timeout's completion")

		const idle = 300 * time.Millisecond
		start = time.Now()
		m, n, err = r.SubmitAndReap(nil, nil, dst, idle)
		took = time.Since(start)
		require.NoError(t, err)
		assert.Zero(t, m+n)
		assert.GreaterOrEqual(t, took, idle-5*time.Millisecond, "a reap of nothing waits its timeout")
		assert.Less(t, took, 10*time.Second)

		rd, _ := pipe(t)
		ops := []Op{Nop().WithUser(0), Nop().WithUser(1), Nop().WithUser(2), Poll(rd, unix.POLLIN).WithUser("poll")}
		m, n, err = r.SubmitAndReap(ops, reqs, dst, 20*time.Second)
		require.NoError(t, err)
		require.Equal(t, 4, m, "the submit count")
		require.GreaterOrEqual(t, n, 1)
		require.LessOrEqual(t, n, 3)
		seen := map[any]bool{}
		for _, c := range dst[:n] {
			seen[c.User] = true
		}
		for len(seen) < 3 {
			k, err := r.Reap(dst, 10*time.Second)
			require.NoError(t, err)
			require.NotZero(t, k)
			for _, c := range dst[:k] {
				assert.False(t, seen[c.User], "twice: %v", c.User)
				seen[c.User] = true
			}
		}
		assert.Equal(t, map[any]bool{0: true, 1: true, 2: true}, seen)
		require.True(t, reqs[3].Pending(), "the poll waits")
		require.NoError(t, reqs[3].Cancel())
		c := reapOne(t, r)
		require.Equal(t, reqs[3], c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assertNoMore(t, r)
	})
}

// TestPort7OpenAtErrors ports openat2.c's facts that an open through the
// ring reports what openat(2) does, on both backends: a path relative to a
// directory fd, an absolute one (the dirfd is not looked at), a missing
// file, an exclusive create of one that exists, a directory opened for
// writing, a dirfd or a path component that is not a directory, a symlink
// with O_NOFOLLOW, a dirfd that is not open, a name too long, an O_PATH fd (which reads refuse), O_TMPFILE, and a create's mode
// (the same umask applies as to open(2)). Each error comes with no fd;
// an empty path is refused at the call.
func TestPort7OpenAtErrors(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("hello"), 0o644))
		require.NoError(t, os.Symlink("f", filepath.Join(dir, "l")))
		require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
		dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(dirfd)
		filefd, err := unix.Open(filepath.Join(dir, "f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(filefd)
		// A number no fd has: the lowest free one, closed again.
		unused, err := unix.Dup(filefd)
		require.NoError(t, err)
		require.NoError(t, unix.Close(unused))

		open := func(what string, dfd int, path string, flags int, mode uint32) (int, error) {
			t.Helper()
			c := doOp(t, r, OpenAt(dfd, path, flags, mode))
			if c.Err != nil {
				assert.Zero(t, c.N, "%s: an error and an fd", what)
				return -1, c.Err
			}
			require.Positive(t, c.N, what)
			t.Cleanup(func() { unix.Close(c.N) })
			return c.N, nil
		}
		readAll := func(what string, fd int) string {
			t.Helper()
			buf := make([]byte, 16)
			c := doOp(t, r, Read(fd, buf, 0))
			require.NoError(t, c.Err, what)
			return string(buf[:c.N])
		}
		fails := []struct {
			what  string
			dfd   int
			path  string
			flags int
			want  syscall.Errno
		}{
			{"missing", dirfd, "missing", unix.O_RDONLY, unix.ENOENT},
			{"exclusive create of an existing file", dirfd, "f", unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY, unix.EEXIST},
			{"directory for writing", dirfd, "d", unix.O_WRONLY, unix.EISDIR},
			{"dirfd a regular file", filefd, "x", unix.O_RDONLY, unix.ENOTDIR},
			{"a file as a path component", dirfd, "f/x", unix.O_RDONLY, unix.ENOTDIR},
			{"O_DIRECTORY on a file", dirfd, "f", unix.O_RDONLY | unix.O_DIRECTORY, unix.ENOTDIR},
			{"O_NOFOLLOW on a symlink", dirfd, "l", unix.O_RDONLY | unix.O_NOFOLLOW, unix.ELOOP},
			{"dirfd not open", unused, "f", unix.O_RDONLY, unix.EBADF},
			{"a name too long", dirfd, strings.Repeat("n", 300), unix.O_RDONLY, unix.ENAMETOOLONG},
		}
		for _, tc := range fails {
			_, err := open(tc.what, tc.dfd, tc.path, tc.flags, 0)
			assert.ErrorIs(t, err, tc.want, tc.what)
			var ioe *IOError
			if assert.True(t, errors.As(err, &ioe), "%s: an IOError: %v", tc.what, err) {
				assert.Equal(t, tc.path, ioe.Path, tc.what)
			}
		}

		// An empty path (ENOENT for openat(2)) is refused at the call.
		_, err = r.Submit(OpenAt(dirfd, "", unix.O_RDONLY, 0))
		assert.ErrorIs(t, err, ErrInvalid, "an empty path")

		fd, err := open("relative", dirfd, "f", unix.O_RDONLY, 0)
		require.NoError(t, err)
		assert.Equal(t, "hello", readAll("relative", fd))
		fd, err = open("through a symlink", dirfd, "l", unix.O_RDONLY, 0)
		require.NoError(t, err)
		assert.Equal(t, "hello", readAll("symlink", fd))
		fd, err = open("absolute, dirfd not open", unused, filepath.Join(dir, "f"), unix.O_RDONLY, 0)
		require.NoError(t, err, "an absolute path does not look at dirfd")
		assert.Equal(t, "hello", readAll("absolute", fd))
		fd, err = open("directory", dirfd, "d", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st))
		assert.Equal(t, uint32(unix.S_IFDIR), st.Mode&unix.S_IFMT)
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		require.NoError(t, err)
		assert.NotZero(t, fl&unix.FD_CLOEXEC, "O_CLOEXEC is always added")

		// O_PATH: an fd that names the file and reads nothing.
		fd, err = open("O_PATH", dirfd, "f", unix.O_PATH, 0)
		require.NoError(t, err)
		c := doOp(t, r, Read(fd, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.EBADF, "a read of an O_PATH fd")

		// A create's mode goes through the umask as open(2)'s does.
		fd, err = open("create", dirfd, "new", unix.O_CREAT|unix.O_WRONLY, 0o666)
		require.NoError(t, err)
		ref, err := unix.Open(filepath.Join(dir, "ref"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		require.NoError(t, err)
		var st1, st2 unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st1))
		require.NoError(t, unix.Fstat(ref, &st2))
		unix.Close(ref)
		assert.Equal(t, st2.Mode, st1.Mode, "the mode of a file the ring created, and of one open(2) did")
		c = doOp(t, r, Write(fd, []byte("new data"), 0))
		require.NoError(t, c.Err)
		got, err := os.ReadFile(filepath.Join(dir, "new"))
		require.NoError(t, err)
		assert.Equal(t, "new data", string(got))

		// O_TMPFILE: a file with no name in the directory.
		fd, err = open("O_TMPFILE", dirfd, ".", unix.O_TMPFILE|unix.O_RDWR, 0o600)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) {
			t.Logf("no O_TMPFILE here: %v", err)
		} else {
			require.NoError(t, err)
			c = doOp(t, r, Write(fd, []byte("tmp"), 0))
			require.NoError(t, c.Err)
			assert.Equal(t, "tmp", readAll("tmpfile", fd))
			require.NoError(t, unix.Fstat(fd, &st))
			assert.Zero(t, st.Nlink, "no link to a tmpfile")
		}
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		assert.ElementsMatch(t, []string{"f", "l", "d", "new", "ref"}, names)
		assertNoMore(t, r)
	})
}

// TestPort7FixedFilesOutliveUnregister ports ooo-file-unreg.c and
// rsrc_tags.c: a poll on a registered UDP socket waits; the caller closes
// its own fds of every registered file and drops the table. The poll
// keeps its socket (a datagram sent to its address completes it with
// POLLIN), the other registered file is released (the read end of the
// registered pipe sees its end: nothing holds the write end any more), a
// poll pending on a dropped table is canceled normally, and a new table
// can be registered and used at once.
func TestPort7FixedFilesOutliveUnregister(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		newUDP := func() (int, *unix.SockaddrInet4) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
			sa, err := unix.Getsockname(fd)
			require.NoError(t, err)
			return fd, sa.(*unix.SockaddrInet4)
		}
		u1, sa1 := newUDP()
		u2, _ := newUDP()
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		rd, wr := p[0], p[1]
		defer unix.Close(rd)
		sender, _ := udpSocket(t)

		require.NoError(t, r.RegisterFiles([]int{u1, wr, u2}))
		q1 := submitPending(t, r, Poll(0, unix.POLLIN).FixedFile().WithUser("answered"))
		q2 := submitPending(t, r, Poll(2, unix.POLLIN).FixedFile().WithUser("canceled"))
		// The caller lets go of all three, then the ring's table goes.
		require.NoError(t, unix.Close(u1))
		require.NoError(t, unix.Close(wr))
		require.NoError(t, unix.Close(u2))
		require.NoError(t, r.UnregisterFiles())
		assertNoMore(t, r)
		assert.True(t, q1.Pending())
		assert.True(t, q2.Pending())

		// The pipe's write end had no request: the ring let go of it.
		fds := []unix.PollFd{{Fd: int32(rd), Events: unix.POLLIN}}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			n, err := unix.Poll(fds, 100)
			if err == unix.EINTR {
				continue
			}
			require.NoError(t, err)
			if n > 0 {
				break
			}
		}
		require.NotZero(t, fds[0].Revents&unix.POLLHUP, "the registered write end is released: %#x", fds[0].Revents)

		// The first poll's socket lives on: a datagram wakes it.
		require.NoError(t, unix.Sendto(sender, []byte("ping"), 0, sa1))
		c := reapOne(t, r)
		require.Equal(t, q1, c.Req)
		require.NoError(t, c.Err)
		assert.NotZero(t, c.N&unix.POLLIN, "events %#x", c.N)

		require.NoError(t, q2.Cancel())
		c = reapOne(t, r)
		require.Equal(t, q2, c.Req)
		assert.ErrorIs(t, c.Err, ErrCanceled)

		// A new table, at once.
		u3, sa3 := udpSocket(t)
		require.NoError(t, r.RegisterFiles([]int{-1, u3}))
		q3 := submitPending(t, r, Poll(1, unix.POLLIN).FixedFile())
		require.NoError(t, unix.Sendto(sender, []byte("pong"), 0, sa3))
		c = reapOne(t, r)
		require.Equal(t, q3, c.Req)
		require.NoError(t, c.Err)
		assert.NotZero(t, c.N&unix.POLLIN)
		c = doOp(t, r, Poll(0, unix.POLLOUT).FixedFile())
		assert.ErrorIs(t, c.Err, unix.EBADF, "an empty entry of the new table")
		require.NoError(t, r.UnregisterFiles())
		assertNoMore(t, r)
	})
}
