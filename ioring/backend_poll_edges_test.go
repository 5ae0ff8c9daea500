//go:build linux

package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Edges of the contract found on the poll backend (issue 13, item 7). Each testXxx holds on every backend: the conformance suite can run it
// with forEachBackend; TestPollXxx runs it on the poll backend.

func TestPollFDReuseRead(t *testing.T)  { testFDReuseRead(t, newPollRing(t, 8)) }
func TestPollFDReuseWrite(t *testing.T) { testFDReuseWrite(t, newPollRing(t, 8)) }

// waiter awaits its requests (on some backends a completion is only
// reaped by a waiter): done yields each one's index as it completes.
type waiter struct {
	qs   []Request
	cs   []Completion
	done chan int
}

func await(qs []Request) *waiter {
	w := &waiter{qs: qs, cs: make([]Completion, len(qs)), done: make(chan int, len(qs))}
	for i, q := range qs {
		go func() {
			w.cs[i], _ = q.Wait(context.Background())
			w.done <- i
		}()
	}
	return w
}

// next waits (generously) for the next completion and returns its index.
func (w *waiter) next(t *testing.T, what string) int {
	t.Helper()
	select {
	case i := <-w.done:
		return i
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no completion within 10s", what)
		return -1
	}
}

// waitWithin waits for q's completion, failing after a generous bound.
func waitWithin(t *testing.T, q Request, what string) Completion {
	t.Helper()
	w := await([]Request{q})
	w.next(t, what)
	return w.cs[0]
}

// readyWithin reports whether fd becomes readable within d.
func readyWithin(t *testing.T, fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		return n > 0
	}
}

// The fd of a waiting read is closed while a dup keeps its pipe open, and
// its number is reused for another pipe: the read acts on the pipe its fd
// named at submission.
func testFDReuseRead(t *testing.T, r *Ring) {
	ard, awr := pipe(t)
	brd, bwr := pipe(t)
	keep, err := unix.Dup(ard) // keeps pipe A's read end open
	require.NoError(t, err)
	defer unix.Close(keep)
	buf := make([]byte, 8)
	q, err := r.Start(Read(ard, buf, -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	// ard now names pipe B's read end (pipe's cleanup closes it, B's own
	// number too).
	require.NoError(t, unix.Dup3(brd, ard, unix.O_CLOEXEC))
	_, err = unix.Write(bwr, []byte("B-data"))
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	assert.True(t, q.Pending(), "the read took pipe B's data")

	_, err = unix.Write(awr, []byte("A-data"))
	require.NoError(t, err)
	c := waitWithin(t, q, "read of pipe A")
	require.NoError(t, c.Err)
	assert.Equal(t, "A-data", string(buf[:c.N]))
	got := make([]byte, 8)
	n, err := unix.Read(brd, got)
	require.NoError(t, err)
	assert.Equal(t, "B-data", string(got[:n]), "pipe B's data stayed in pipe B")
}

// The same for a write waiting on a full pipe: it lands in its own pipe,
// and once it completed nothing of the ring holds that pipe's write end
// (its reader sees EOF when the caller closes its own).
func testFDReuseWrite(t *testing.T, r *Ring) {
	var a, b [2]int
	require.NoError(t, unix.Pipe2(a[:], unix.O_CLOEXEC))
	defer unix.Close(a[0])
	require.NoError(t, unix.Pipe2(b[:], unix.O_CLOEXEC))
	defer unix.Close(b[0])
	defer unix.Close(b[1])
	fillPipe(t, a[1])
	keep, err := unix.Dup(a[1]) // keeps pipe A's write end open
	require.NoError(t, err)
	q, err := r.Start(Write(a[1], []byte("W"), -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.True(t, q.Pending(), "pipe A is full")
	// a[1] now names pipe B's write end.
	require.NoError(t, unix.Dup3(b[1], a[1], unix.O_CLOEXEC))
	defer unix.Close(a[1])
	time.Sleep(50 * time.Millisecond)
	assert.True(t, q.Pending(), "the write went into pipe B")
	assert.True(t, pipeEmpty(t, b[0]), "pipe B got nothing")

	// Drain pipe A: the write completes into it.
	w := await([]Request{q})
	buf := make([]byte, 1<<16)
	var tail []byte
	deadline := time.After(10 * time.Second)
drain:
	for {
		select {
		case <-w.done:
			break drain
		case <-deadline:
			t.Fatal("the write did not complete within 10s of draining its pipe")
		default:
		}
		if readyWithin(t, a[0], 10*time.Millisecond) {
			n, err := unix.Read(a[0], buf)
			require.NoError(t, err)
			tail = append(tail[:0], buf[:n]...)
		}
	}
	c := w.cs[0]
	require.NoError(t, c.Err)
	assert.Equal(t, 1, c.N)
	for readyWithin(t, a[0], 100*time.Millisecond) {
		n, err := unix.Read(a[0], buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		tail = append(tail[:0], buf[:n]...)
	}
	require.NotEmpty(t, tail)
	assert.Equal(t, byte('W'), tail[len(tail)-1], "the write's byte is the last in pipe A")
	assert.True(t, pipeEmpty(t, b[0]), "pipe B got nothing")

	// The caller closes its last write end of A: its reader sees EOF.
	require.NoError(t, unix.Close(keep))
	require.True(t, readyWithin(t, a[0], 10*time.Second))
	n, err := unix.Read(a[0], buf)
	require.NoError(t, err)
	assert.Zero(t, n, "EOF: nothing else holds pipe A's write end")
}

// Without kcmp (seccomp, kernels without CONFIG_CHECKPOINT_RESTORE) every
// waiting request has a duplicate and an epoll registration of its own:
// many waiters on one fd, reuse of its number, and no fd left behind.
func TestPollNoKcmp(t *testing.T) {
	r := newPollRing(t, 32)
	b := pollBE(r)
	b.mu.Lock()
	b.noKcmp = true
	b.mu.Unlock()
	testFDReuseRead(t, r)
	testFDReuseWrite(t, r)

	rd, wr := pipe(t)
	qs := make([]Request, 16)
	for i := range qs {
		var err error
		qs[i], err = r.Submit(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
	}
	for i := 0; i < len(qs); i += 2 {
		require.NoError(t, qs[i].Cancel())
	}
	_, err := unix.Write(wr, make([]byte, len(qs)/2))
	require.NoError(t, err)
	canceled := 0
	for range qs {
		c := reapOne(t, r)
		if c.Err != nil {
			assert.ErrorIs(t, c.Err, ErrCanceled)
			canceled++
			continue
		}
		assert.Equal(t, 1, c.N)
	}
	assert.Equal(t, len(qs)/2, canceled)
	assert.True(t, pipeEmpty(t, rd))
}
