//go:build linux

package ioring

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// An open that waits in one of io_uring's workers (a FIFO's open for
// writing with O_CREAT, which io_uring never tries non-blocking) when the
// thread that submitted it exits is interrupted by the kernel, and ends
// with its internal ERESTARTSYS, not ECANCELED or EINTR. Nobody canceled
// it: like any request its thread's exit ended, it is submitted again and
// completes with its real result once a reader comes. Before the fix it
// completed with EINTR. (The kernel sometimes lets the thread's exit wait
// for the open instead: the test tries until an exit comes first.) A
// cancel still ends such an open with ErrCanceled.
func TestAdv4URingOpenOutlivesThread(t *testing.T) {
	r, err := New(Config{Entries: 16, Backend: BackendURing})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	t.Cleanup(func() {
		// An open still waiting (a failure) ends; then the ring's Close.
		if fd, err := unix.Open(fifo, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	})
	retried := false
	for i := 0; i < 10 && !retried; i++ {
		retried = adv4ExitedOpen(t, r, fifo)
	}
	if !retried {
		t.Log("each thread outlived its open's wait: no retry exercised")
	}

	q, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CREAT, 0o600))
	require.NoError(t, err)
	var cs [1]Completion
	n, err := r.Reap(cs[:], 50*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n, "the open waits for a reader: %+v", cs[0])
	require.NoError(t, q.Cancel())
	mustCancel(t, reapOne(t, r), ErrCanceled)
}

// adv4ExitedOpen submits a FIFO's open for writing from a thread that then
// exits, lets a reader come, and checks the open's real result. It reports
// whether the thread was gone before the reader came.
func adv4ExitedOpen(t *testing.T, r *Ring, fifo string) bool {
	var tid int
	for tid == 0 {
		tidc := make(chan int, 1)
		go func() {
			runtime.LockOSThread()
			id := unix.Gettid()
			if id == unix.Getpid() {
				tidc <- 0 // the main thread never exits: try again
				return
			}
			_, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CREAT, 0o600).WithUser("exited"))
			assert.NoError(t, err)
			tidc <- id
			// Returning while locked ends the thread.
		}()
		tid = <-tidc
	}
	// The thread's exit interrupts the open in io_uring's worker, most of
	// the time; sometimes the kernel lets the exit wait for the open
	// instead (it completes, real, once the reader below comes, and the
	// thread then exits): the retry is not exercised then.
	task := fmt.Sprintf("/proc/self/task/%d", tid)
	gone := false
	for deadline := time.Now().Add(2 * time.Second); !gone && time.Now().Before(deadline); {
		_, err := os.Stat(task)
		gone = os.IsNotExist(err)
		time.Sleep(time.Millisecond)
	}
	var cs [1]Completion
	n, err := r.Reap(cs[:], 100*time.Millisecond)
	require.NoError(t, err)
	require.Zero(t, n, "the open waits for a reader: %+v", cs[0])

	rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	c := reapOne(t, r)
	unix.Close(rd)
	require.NoError(t, c.Err, "nobody canceled it")
	assert.Equal(t, "exited", c.User)
	unix.Close(c.N)
	return gone
}
