//go:build linux

package ioring

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fifth round, what crosses into a child process: ported from liburing's
// across-fork. liburing forks and uses the ring from both processes; a
// Go program cannot fork without exec, and what it hands a child that it
// execs is every fd without FD_CLOEXEC. So: with a ring of each backend
// busy in every way that makes it open fds of its own (its rings and
// eventfd, epoll, duplicates of the caller's fds for multishot requests
// and registered files, reopened terminals, worker calls, provided
// buffers), and with the fds its operations hand to the caller (Accept's,
// OpenAt's), every fd of the process is close-on-exec, and a child
// started then sees none of them.

const port5ExecChild = "port5-fds"

// port5FdNumbers returns the open fds of the process and their targets.
func port5FdNumbers(t *testing.T) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	fds := map[int]string{}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		require.NoError(t, err)
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the listing's own fd, closed since
		}
		fds[fd] = target
	}
	return fds
}

// TestPort5NothingCrossesExec: see above. In the child process it runs
// in, it prints the child's fds instead.
func TestPort5NothingCrossesExec(t *testing.T) {
	if os.Getenv(childEnv) == port5ExecChild {
		for fd, target := range port5FdNumbers(t) {
			fmt.Printf("port5-fd %d %s\n", fd, target)
		}
		return
	}
	forEachBackend(t, 32, func(t *testing.T, fe *Ring) {
		// A ring of the same backend, made after the snapshot, so that
		// its own fds are among the new ones.
		before := port5FdNumbers(t)
		r, err := New(Config{Entries: 32, Backend: fe.Backend().Backend})
		require.NoError(t, err)
		defer r.Close()

		// Requests in flight of every kind that keeps an fd.
		rd, wr := pipe(t)
		_, fullWr := pipe(t)
		fillPipe(t, fullWr)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		efd := eventFD(t)
		lfd, sa := tcpListener(t, 8, 0)
		lfd2, _ := tcpListener(t, 8, 0)
		port5Submit(t, r,
			Read(rd, make([]byte, 8), -1),
			Read(rd, make([]byte, 8), -1), // held behind the first
			Write(fullWr, []byte("more"), -1),
			PollMultishot(efd, unix.POLLIN),
			AcceptMultishot(lfd2, 0),
		)
		if br, err := r.NewBufRing(4, 64); err == nil {
			defer br.Close()
			port5Submit(t, r, RecvMultishot(a, br, 0))
		} else {
			require.ErrorIs(t, err, ErrNotSupported)
		}
		if _, err := os.Stat("/dev/ptmx"); err == nil {
			master, _ := openPTY(t)
			port5Submit(t, r, Read(master, make([]byte, 8), -1))
		}
		require.NoError(t, r.RegisterFiles([]int{rd, wr, -1}))
		port5Submit(t, r, Poll(0, unix.POLLIN).FixedFile())

		// Fds the ring hands over.
		cl := tcpSocket(t)
		q, err := r.Submit(Accept(lfd, 0))
		require.NoError(t, err)
		require.NoError(t, unix.Connect(cl, sa))
		var c Completion
		for {
			c = reapOne(t, r)
			if c.Req == q {
				break
			}
			require.True(t, c.More, "only the accept completes: %+v", c)
		}
		require.NoError(t, c.Err)
		defer unix.Close(c.N)
		name := filepath.Join(t.TempDir(), "opened")
		c = doOp(t, r, OpenAt(unix.AT_FDCWD, name, unix.O_RDWR|unix.O_CREAT, 0o600))
		require.NoError(t, c.Err)
		defer unix.Close(c.N)
		c = doOp(t, r, Fsync(c.N)) // a worker call on the poll backend
		require.NoError(t, c.Err)
		// A consumer parks (io_uring registers its eventfd for it).
		var cs [4]Completion
		n, err := r.Reap(cs[:], 30*time.Millisecond)
		require.NoError(t, err)
		require.Zero(t, n, "%+v", cs[:n])

		// Every fd opened since is close-on-exec (those the process
		// inherited, stdin to stderr and whatever the harness passed,
		// need not be).
		now := port5FdNumbers(t)
		mine := map[string]bool{}
		for fd, target := range now {
			if before[fd] == target {
				continue
			}
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil {
				continue // closed since the listing (the Go runtime's, say)
			}
			assert.NotZero(t, flags&unix.FD_CLOEXEC, "fd %d (%s) is not close-on-exec", fd, target)
			mine[target] = true
		}
		t.Logf("%d fds opened since the ring was made: %v", len(mine), mine)
		assert.True(t, mine["anon_inode:[io_uring]"] || r.Backend().Backend != BackendURing, "the ring's own fd is among them")
		assert.True(t, mine["anon_inode:[eventpoll]"] || r.Backend().Backend != BackendPoll, "the ring's epoll fd is among them")

		// And a child sees none of them.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPort5NothingCrossesExec$", "-test.count=1")
		env := []string{childEnv + "=" + port5ExecChild}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, childEnv+"=") {
				env = append(env, kv)
			}
		}
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child:\n%s", out)
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), "port5-fd ")
			if !ok {
				continue
			}
			lines++
			_, target, _ := strings.Cut(rest, " ")
			assert.NotEqual(t, "anon_inode:[io_uring]", target, "the child has an io_uring fd: %s", rest)
			if !strings.HasPrefix(target, "anon_inode:") {
				assert.False(t, mine[target], "the child has fd %s, the parent's", rest)
			}
		}
		require.Positive(t, lines, "the child listed its fds:\n%s", out)

		require.NoError(t, r.CancelAll()) // Close drains them
	})
}
