//go:build linux

package ioring

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eighth round, polls: ported from liburing's poll-update-trigger.c (a
// poll for an event its file can never have stays pending; updated to one
// it has, it fires) and ce593a6c480a.c (a poll completes while the thread
// that submitted it waits in the kernel on another file).

// TestPort8PollNeverTriggers ports poll-update-trigger.c. A Poll for
// POLLIN on a pipe's write end can never fire (the write end is never
// readable), however much data goes through the pipe, and neither can a
// PollMultishot for it; a Poll for POLLIN|POLLOUT on the same end fires at
// once with POLLOUT alone. The ring has no poll update (IORING_POLL_UPDATE):
// the update is a cancel and a new Poll, so the port checks what that
// takes: the cancel ends the first with ErrCanceled and no events (it
// never reported POLLOUT, which it did not ask for), the multishot one with
// one final completion and nothing before it, and the new Poll for POLLOUT
// fires at once. Both backends.
func TestPort8PollNeverTriggers(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		in, err := r.Submit(Poll(wr, unix.POLLIN).WithUser("in"))
		require.NoError(t, err)
		multi, err := r.Submit(PollMultishot(wr, unix.POLLIN).WithUser("multi"))
		require.NoError(t, err)

		c := doOp(t, r, Poll(wr, unix.POLLIN|unix.POLLOUT))
		require.NoError(t, c.Err)
		assert.Equal(t, unix.POLLOUT, c.N, "the write end is writable, not readable")

		buf := make([]byte, 512)
		for i := 0; i < 4; i++ {
			_, err := unix.Write(wr, []byte("through the pipe"))
			require.NoError(t, err)
			_, err = unix.Read(rd, buf)
			require.NoError(t, err)
		}
		_, err = unix.Write(wr, []byte("left in the pipe"))
		require.NoError(t, err)
		advPending(t, r, "POLLIN on a pipe's write end", in, multi)

		n, err := r.Cancel(in, multi)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		got := map[Request]Completion{}
		var cs [4]Completion
		for len(got) < 2 {
			k, err := r.Reap(cs[:], 5*time.Second)
			require.NoError(t, err)
			require.NotZero(t, k, "the canceled polls complete")
			for _, c := range cs[:k] {
				assert.False(t, c.More, "%v reported events it was not asked for: %#x", c.User, c.N)
				_, dup := got[c.Req]
				assert.False(t, dup, "two final completions for %v", c.User)
				got[c.Req] = c
			}
		}
		for _, q := range []Request{in, multi} {
			c := got[q]
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
			assert.Zero(t, c.N, "%v", c.User)
		}

		c = doOp(t, r, Poll(wr, unix.POLLOUT))
		require.NoError(t, c.Err)
		assert.Equal(t, unix.POLLOUT, c.N, "the updated poll fires")
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort8PollWhileSubmitterWaits ports ce593a6c480a.c (a 5.7 regression:
// a poll's completion, task work of the submitting task, was never run
// while that task waited in read(2) on another eventfd). A goroutine locked
// to its thread submits a Poll on eventfd A, then blocks that thread in
// read(2) on eventfd B; another goroutine signals A a moment later. The
// Poll's completion reaches Reap while the submitter still waits, and the
// submitter's read, interrupted by the task-work notification, restarts
// transparently (the package doc: system calls restart) and returns B's
// count when B is signaled, with no error. liburing waited for the ring's
// registered eventfd instead of the completion ring; the ring has none.
// Both backends (the poll backend has no task work: there it is the plain
// promise that a poll completes whatever its submitter does).
func TestPort8PollWhileSubmitterWaits(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(a)
		b, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(b)

		type result struct {
			n   int
			err error
			buf [8]byte
		}
		submitted := make(chan Request, 1)
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			q, err := r.Submit(Poll(a, unix.POLLIN))
			if err != nil {
				close(submitted)
				done <- result{err: err}
				return
			}
			submitted <- q
			var res result
			res.n, res.err = unix.Read(b, res.buf[:])
			done <- res
		}()
		q, ok := <-submitted
		if !ok {
			res := <-done
			t.Fatalf("submit: %v", res.err)
		}
		// Let the submitter reach its read.
		time.Sleep(50 * time.Millisecond)
		go func() {
			time.Sleep(50 * time.Millisecond)
			unix.Write(a, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		}()

		var cs [1]Completion
		n, err := r.Reap(cs[:], 5*time.Second)
		require.NoError(t, err)
		if !assert.Equal(t, 1, n, "the poll completes while its submitter waits in read(2)") {
			r.CancelAll()
			reapOne(t, r)
		} else {
			assert.Equal(t, q, cs[0].Req)
			assert.NoError(t, cs[0].Err)
			assert.Equal(t, unix.POLLIN, cs[0].N)
		}
		select {
		case res := <-done:
			t.Fatalf("the submitter's read(2) returned before B was signaled: %d, %v", res.n, res.err)
		default:
		}

		unix.Write(b, []byte{7, 0, 0, 0, 0, 0, 0, 0})
		select {
		case res := <-done:
			assert.NoError(t, res.err, "the submitter's read(2) restarts transparently")
			assert.Equal(t, 8, res.n)
			assert.Equal(t, byte(7), res.buf[0])
		case <-time.After(10 * time.Second):
			t.Fatal("the submitter's read(2) did not return after B was signaled")
		}
		// The poll consumed nothing: A still holds its count.
		var v [8]byte
		k, err := unix.Read(a, v[:])
		require.NoError(t, err)
		assert.Equal(t, 8, k)
		assert.Equal(t, byte(1), v[0])
		assertSettled(t, r)
	})
}
