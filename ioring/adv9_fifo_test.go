//go:build linux

package ioring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A write-only OpenAt of a FIFO that waits for a reader, compared across
// backends (O_CREAT: io_uring's non-blocking first attempt would say ENXIO
// without it; with it the open runs blocking in its workers, as open(2)).

// adv9FIFOWaiters counts the threads of this process that wait in a FIFO's
// open for its other end (wchan wait_for_partner): io_uring's workers are
// among them, and so is a goroutine's open(2).
func adv9FIFOWaiters(t *testing.T) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	require.NoError(t, err)
	n := 0
	for _, e := range tasks {
		b, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "wchan"))
		if err == nil && strings.TrimSpace(string(b)) == "wait_for_partner" {
			n++
		}
	}
	return n
}

// adv9AwaitFIFOWaiters waits (10s at most) until want threads wait in a
// FIFO's open.
func adv9AwaitFIFOWaiters(t *testing.T, want int) {
	t.Helper()
	require.Eventually(t, func() bool { return adv9FIFOWaiters(t) == want },
		10*time.Second, time.Millisecond, "%d threads waiting in a FIFO's open (wchan)", want)
}

// adv9OpenWaits submits a write-only open of fifo and waits until it
// waits for a reader: on io_uring, a worker is in the FIFO's open (waiters
// is the count before); on the poll backend, the request sits on its retry
// timer, a try made.
func adv9OpenWaits(t *testing.T, r *Ring, fifo string, waiters int) Request {
	t.Helper()
	q, err := r.Submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CREAT, 0o600))
	require.NoError(t, err)
	if r.Backend().Backend == BackendURing {
		adv9AwaitFIFOWaiters(t, waiters+1)
		return q
	}
	b := pollBE(r)
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		p := &b.ps[q.key&idxMask]
		return p.st == psRetry && p.tries > 0
	}, 10*time.Second, time.Millisecond, "the open waits on its timer")
	return q
}

// adv9Between runs fn while nothing of the ring tries the open: on the
// poll backend, with b.mu held while the request waits on its timer (no
// try in flight, none can start). On io_uring, the worker waits in the
// kernel; fn runs as is.
func adv9Between(t *testing.T, r *Ring, q Request, fn func()) {
	t.Helper()
	if r.Backend().Backend == BackendURing {
		fn()
		return
	}
	adv9PollQuiet(t, pollBE(r), fn)
}

// adv9PollQuiet runs fn with b.mu held once no request of b is being
// tried (psRunning): every one waits on its timer or in the worker queue,
// or is done, and none can start while fn runs (10s at most).
func adv9PollQuiet(t *testing.T, b *pollBackend, fn func()) {
	t.Helper()
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for i := range b.ps {
			if b.ps[i].st == psRunning {
				return false
			}
		}
		fn()
		return true
	}, 10*time.Second, 100*time.Microsecond, "no try in flight")
}

// TestAdv9FIFOWriteOpenQuickReader: a reader that opens a FIFO and closes
// it again while a write-only open waits. open(2) completes (the reader
// came: the kernel counts readers that came, not those still there), and
// so does io_uring's; the write end then has no reader (EPIPE). The poll
// backend, which tried a non-blocking open on a timer, missed a reader
// that came and went between two tries and waited on (fixed: it watches
// the FIFO for opens, inotify IN_OPEN, and completes the open after one).
func TestAdv9FIFOWriteOpenQuickReader(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		fifo := adv4FIFO(t)
		q := adv9OpenWaits(t, r, fifo, adv9FIFOWaiters(t))
		adv9Between(t, r, q, func() {
			rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Close(rd))
		})
		c := adv9Wait(t, r, q)[0]
		if c.Err == nil {
			_, err := unix.Write(c.N, []byte("x"))
			o.add("opened; a write: %v", err)
			fl, ferr := unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
			require.NoError(t, ferr)
			o.add("access mode %#x, O_NONBLOCK %v", fl&unix.O_ACCMODE, fl&unix.O_NONBLOCK != 0)
			require.NoError(t, unix.Close(c.N))
		} else {
			o.add("open: %s", adv9Res(c))
		}
		// A reader that stays, for a second open: it completes too.
		q2 := adv9OpenWaits(t, r, fifo, adv9FIFOWaiters(t))
		rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(rd)
		c = adv9Wait(t, r, q2)[0]
		o.add("with a reader: %v", c.Err)
		if c.Err == nil {
			_, err := unix.Write(c.N, []byte("y"))
			o.add("a write: %v", err)
			require.NoError(t, unix.Close(c.N))
		}
		assertNoMore(t, r)
	})
}

// TestAdv9FIFOWriteOpenCancelAlone: a cancel of a write-only open waiting
// for a FIFO's reader ends that open and nothing else: another writer
// waiting in open(2) for the same FIFO (another thread, another process)
// still waits, and no reader it could mistake for one came. io_uring
// interrupts its worker; the poll backend stops its timer. (A cancel that
// opened the FIFO for reading to let a blocked open(2) of its own return
// would let that other writer in too, with no reader behind it.)
func TestAdv9FIFOWriteOpenCancelAlone(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		fifo := adv4FIFO(t)
		base := adv9FIFOWaiters(t)
		other := make(chan int, 1)
		go func() {
			fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				fd = -1
			}
			other <- fd
		}()
		adv9AwaitFIFOWaiters(t, base+1)
		q := adv9OpenWaits(t, r, fifo, base+1)
		require.NoError(t, q.Cancel())
		o.add("canceled: %s", adv9Res(adv9Wait(t, r, q)[0]))
		// The other writer's thread is in the FIFO's open again (a
		// signal to the thread restarts the open, out of
		// wait_for_partner for a moment: the count is awaited, not
		// read once), and its open has not returned.
		adv9AwaitFIFOWaiters(t, base+1)
		select {
		case fd := <-other:
			unix.Close(fd)
			o.add("the other writer's open returned")
		default:
			o.add("the other writer still waits")
		}
		// A reader lets the other writer in.
		rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(rd)
		select {
		case fd := <-other:
			assert.GreaterOrEqual(t, fd, 0, "the other writer's open")
			unix.Close(fd)
		case <-time.After(10 * time.Second):
			t.Fatal("the other writer's open did not return")
		}
		assertNoMore(t, r)
	})
}

// adv9Watches returns the poll backend's FIFO watches: inode number ->
// requests watching it.
func adv9Watches(b *pollBackend) map[uint64]int32 {
	b.fifo.mu.Lock()
	defer b.fifo.mu.Unlock()
	m := map[uint64]int32{}
	for _, fw := range b.fifo.by {
		m[fw.ino] = fw.refs
	}
	return m
}

// adv9Ino returns path's inode number.
func adv9Ino(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Stat(path, &st))
	return st.Ino
}

// The poll backend's FIFO watches: one per FIFO, shared by the opens
// waiting for it, moved to the new FIFO when the path is replaced by one
// (tries open what the path names then), and gone with the last request,
// the inotify instance with them. A reader that comes and
// goes completes every open waiting for its FIFO, not one canceled
// before.
func TestAdv9PollFIFOWatches(t *testing.T) {
	r := newPollRing(t, 16)
	b := pollBE(r)
	f1, f2 := adv4FIFO(t), adv4FIFO(t)
	quick := func(path string) {
		adv9PollQuiet(t, b, func() {
			rd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			require.NoError(t, unix.Close(rd))
		})
	}
	var q1, q2 []Request
	for range 3 {
		q1 = append(q1, adv9OpenWaits(t, r, f1, 0))
	}
	for range 2 {
		q2 = append(q2, adv9OpenWaits(t, r, f2, 0))
	}
	assert.Equal(t, map[uint64]int32{adv9Ino(t, f1): 3, adv9Ino(t, f2): 2}, adv9Watches(b))
	b.fifo.mu.Lock()
	ino := b.fifo.fd
	b.fifo.mu.Unlock()
	require.GreaterOrEqual(t, ino, 0, "the inotify instance")
	info, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", ino))
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(info), "inotify wd:"), "one watch per FIFO:\n%s", info)

	// f2 replaced by a new FIFO: its opens watch the new one.
	n2 := f2 + ".new"
	require.NoError(t, unix.Mkfifo(n2, 0o600))
	require.NoError(t, os.Rename(n2, f2))
	ino2 := adv9Ino(t, f2)
	require.Eventually(t, func() bool {
		w := adv9Watches(b)
		return len(w) == 2 && w[ino2] == 2
	}, 10*time.Second, time.Millisecond, "the watch follows the path")
	quick(f2)
	for _, c := range adv9Wait(t, r, q2...) {
		require.NoError(t, c.Err, "%+v", c)
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(c.N, &st))
		assert.Equal(t, ino2, st.Ino, "the new FIFO")
		require.NoError(t, unix.Close(c.N))
	}

	require.NoError(t, q1[0].Cancel())
	mustCancel(t, adv9Wait(t, r, q1[0])[0], ErrCanceled)
	assert.Equal(t, map[uint64]int32{adv9Ino(t, f1): 2}, adv9Watches(b))
	quick(f1)
	for _, c := range adv9Wait(t, r, q1[1:]...) {
		require.NoError(t, c.Err, "%+v", c)
		_, err := unix.Write(c.N, []byte("x"))
		assert.ErrorIs(t, err, unix.EPIPE, "the reader is gone")
		require.NoError(t, unix.Close(c.N))
	}
	assertNoMore(t, r)
	assert.Empty(t, adv9Watches(b))
	b.fifo.mu.Lock()
	fd := b.fifo.fd
	b.fifo.mu.Unlock()
	assert.Equal(t, -1, fd, "the inotify instance, closed with its last watch")
}
