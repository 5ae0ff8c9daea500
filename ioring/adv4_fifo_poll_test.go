//go:build linux

package ioring

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// An OpenAt of a FIFO with no peer on the poll backend: no worker may sit
// in an open(2) that waits for the other end, out of any cancel's reach.

// adv4FIFO makes a FIFO in a temporary directory. Its cleanup, which runs
// before the ring's Close when the FIFO is made after the ring, opens and
// closes both ends once: an open stuck waiting for a peer (the bug these
// tests look for) then returns, and the test fails instead of hanging.
func adv4FIFO(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(p, 0o600))
	t.Cleanup(func() { adv4Unstick(p) })
	return p
}

// adv4Unstick opens path for reading and writing at once, which ends any
// open of the FIFO waiting for a peer, and closes it again.
func adv4Unstick(path string) {
	if fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
}

// adv4Pending checks that nothing completes on r for a short while.
func adv4Pending(t *testing.T, r *Ring, what string) {
	t.Helper()
	var c [1]Completion
	n, err := r.Reap(c[:], 50*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n, "%s completed: %+v", what, c[0])
}

// adv4Blocking checks that fd, returned by an OpenAt without O_NONBLOCK,
// is blocking: the ring's own O_NONBLOCK does not leak to the caller.
func adv4Blocking(t *testing.T, fd int) {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.Zero(t, fl&unix.O_NONBLOCK, "O_NONBLOCK left on the caller's fd (flags %#x)", fl)
}

// A read-only open of a FIFO without a writer completes at once, as
// io_uring's does (its first attempt is non-blocking), with a blocking fd
// that then reads what a writer sends. Before the fix the worker sat in
// open(2) until a writer came.
func TestAdv4PollFIFOReadOpenNoWriter(t *testing.T) {
	r := newPollRing(t, 16)
	fifo := adv4FIFO(t)
	_, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_RDONLY, 0))
	require.NoError(t, err)
	c := reapOne(t, r)
	require.NoError(t, c.Err)
	defer unix.Close(c.N)
	adv4Blocking(t, c.N)

	w, err := unix.Open(fifo, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err, "the open made a reader")
	defer unix.Close(w)
	_, err = unix.Write(w, []byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 8)
	n, err := unix.Read(c.N, buf)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(buf[:n]))
}

// A write-only open of a FIFO without a reader waits for one, as open(2)
// does, and a cancel ends the wait at once with ErrCanceled. Before the fix
// the cancel could not reach the worker's open(2): no completion came.
func TestAdv4PollFIFOWriteOpenCanceled(t *testing.T) {
	r := newPollRing(t, 16)
	fifo := adv4FIFO(t)
	q, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY, 0))
	require.NoError(t, err)
	adv4Pending(t, r, "a write-only open without a reader")
	require.NoError(t, q.Cancel())
	c := reapOne(t, r)
	assert.Equal(t, q, c.Req)
	mustCancel(t, c, ErrCanceled)
	assertNoMore(t, r)
}

// Opens waiting for a FIFO's reader hold no worker: with more of them
// than the pool has workers, other file operations still run; a reader
// that comes (non-blocking, or blocking in its own open, which waits for a
// writer) lets its open complete; Close cancels the rest at once. Before
// the fix every worker sat in open(2), the Statx never ran, and Close
// waited for readers that never came.
func TestAdv4PollFIFOWriteOpensHoldNoWorker(t *testing.T) {
	r := newPollRing(t, 128)
	b := pollBE(r)
	n := b.maxWorkers + 2
	fifos := make([]string, n)
	reqs := make(map[Request]int, n)
	for i := range fifos {
		fifos[i] = adv4FIFO(t)
		q, err := r.Submit(OpenAt(unix.AT_FDCWD, fifos[i], unix.O_WRONLY, 0).WithUser(i))
		require.NoError(t, err)
		reqs[q] = i
	}
	t.Cleanup(func() {
		// Before the FIFOs' own cleanups: drop what is queued first, or
		// a worker freed by one of them takes an open of a FIFO already
		// let go, and waits for ever (before the fix).
		r.CancelAll()
		for _, f := range fifos {
			adv4Unstick(f)
		}
	})
	adv4Pending(t, r, "an open without a reader")

	var st unix.Statx_t
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := r.Do(ctx, Statx(unix.AT_FDCWD, fifos[0], 0, unix.STATX_TYPE, &st))
	require.NoError(t, err)
	require.NoError(t, c.Err, "a worker ran the statx")
	assert.Equal(t, uint16(unix.S_IFIFO), st.Mode&unix.S_IFMT)

	// A non-blocking reader: the open completes with a blocking write end.
	rd, err := unix.Open(fifos[0], unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(rd)
	c = reapOne(t, r)
	require.NoError(t, c.Err)
	assert.Equal(t, 0, c.User)
	adv4Blocking(t, c.N)
	_, err = unix.Write(c.N, []byte("x"))
	require.NoError(t, err)
	unix.Close(c.N)
	buf := make([]byte, 4)
	k, err := unix.Read(rd, buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:k]))

	// A blocking reader, whose own open waits for a writer: the two meet.
	got := make(chan error, 1)
	go func() {
		fd, err := unix.Open(fifos[1], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
		}
		got <- err
	}()
	c = reapOne(t, r)
	require.NoError(t, c.Err)
	assert.Equal(t, 1, c.User)
	unix.Close(c.N)
	select {
	case err := <-got:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking reader's open did not return")
	}

	// Close cancels the rest at once and returns.
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for opens without a reader")
	}
	var cs [256]Completion
	k, err = r.Reap(cs[:], 0)
	if err != nil {
		require.ErrorIs(t, err, ErrClosed)
	}
	for _, c := range cs[:k] {
		mustCancel(t, c, ErrCanceled)
	}
}

// A deadline ends an open waiting for a FIFO's reader with ErrTimeout.
func TestAdv4PollFIFOWriteOpenDeadline(t *testing.T) {
	r := newPollRing(t, 16)
	fifo := adv4FIFO(t)
	start := time.Now()
	_, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CREAT, 0o600).WithDeadline(100 * time.Millisecond))
	require.NoError(t, err)
	c := reapOne(t, r)
	mustCancel(t, c, ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 90*time.Millisecond)
}

// An open waiting for a FIFO's reader acts on the directory its dirfd
// named at submission's first try, also when the caller closes the dirfd
// and its number is reused meanwhile.
func TestAdv4PollFIFOWriteOpenDirfdReused(t *testing.T) {
	r := newPollRing(t, 16)
	fifo := adv4FIFO(t)
	dfd, err := unix.Open(filepath.Dir(fifo), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	_, err = r.Submit(OpenAt(dfd, "fifo", unix.O_WRONLY, 0))
	require.NoError(t, err)
	adv4Pending(t, r, "an open without a reader")
	require.NoError(t, unix.Close(dfd))
	other := t.TempDir()
	require.NoError(t, unix.Mkfifo(filepath.Join(other, "fifo"), 0o600))
	t.Cleanup(func() { adv4Unstick(filepath.Join(other, "fifo")) })
	d2, err := unix.Open(other, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(d2)

	rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(rd)
	c := reapOne(t, r)
	require.NoError(t, c.Err, "the open found the first directory's FIFO")
	defer unix.Close(c.N)
	var a, b unix.Stat_t
	require.NoError(t, unix.Fstat(c.N, &a))
	require.NoError(t, unix.Stat(fifo, &b))
	assert.Equal(t, b.Ino, a.Ino)
}

// Many opens waiting for readers, canceled in a burst, each complete once
// with ErrCanceled, and none is left to run later.
func TestAdv4PollFIFOWriteOpensCanceledBurst(t *testing.T) {
	r := newPollRing(t, 64)
	fifo := adv4FIFO(t)
	var reqs []Request
	for i := range 40 {
		q, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY, 0).WithUser(strconv.Itoa(i)))
		require.NoError(t, err)
		reqs = append(reqs, q)
	}
	time.Sleep(30 * time.Millisecond) // let some retry
	require.NoError(t, r.CancelAll())
	seen := map[Request]bool{}
	for range reqs {
		c := reapOne(t, r)
		require.False(t, seen[c.Req], "second completion")
		seen[c.Req] = true
		mustCancel(t, c, ErrCanceled)
	}
	assertNoMore(t, r)
	_, err := os.Stat(fifo)
	require.NoError(t, err)
}
