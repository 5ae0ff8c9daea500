//go:build linux

package ioring

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's async-cancel, poll-cancel, cancel-all,
// poll-cancel-ton and sq-full-cpp tests: a cancel of anything at any
// moment (pending, completing, completed, stale, another ring's), exactly
// one completion each, and a flood of cancels that fills the kernel's
// completion ring loses nothing.

// TestPortCancelOtherRingsRequest: two fresh rings hand out the same keys
// (slot 0, generation 1); a Request of one never cancels or completes the
// request with the same key on the other.
func TestPortCancelOtherRingsRequest(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			r1, err := New(Config{Entries: 4, Backend: b})
			require.NoError(t, err)
			defer r1.Close()
			r2, err := New(Config{Entries: 4, Backend: b})
			require.NoError(t, err)
			defer r2.Close()
			rd1, _ := pipe(t)
			rd, wr := pipe(t)
			q1 := submitPending(t, r1, Read(rd1, make([]byte, 8), -1))
			q2 := submitPending(t, r2, Read(rd, make([]byte, 8), -1))
			require.Equal(t, q1.ID(), q2.ID(), "same key on both rings")
			n, err := r2.Cancel(q1)
			require.NoError(t, err)
			assert.Zero(t, n, "r2.Cancel of r1's request")
			assert.True(t, q2.Pending(), "r2's request with the same key")
			f1, err := r1.Submit(Foreign(nil))
			require.NoError(t, err)
			assert.ErrorIs(t, r2.Complete(f1, 0, nil), ErrNotFound, "r2.Complete of r1's request")
			assert.True(t, f1.Pending())
			require.NoError(t, r1.Complete(f1, 3, nil))
			c := reapOne(t, r1)
			assert.Equal(t, f1, c.Req)
			assert.Equal(t, 3, c.N)

			// Nothing reached r2's request: it still takes data.
			_, err = unix.Write(wr, []byte("x"))
			require.NoError(t, err)
			var cs [1]Completion
			got, err := r2.Reap(cs[:], 10*time.Second)
			require.NoError(t, err)
			require.Equal(t, 1, got)
			assert.Equal(t, q2, cs[0].Req)
			assert.NoError(t, cs[0].Err)
			assert.Equal(t, 1, cs[0].N)
			require.NoError(t, q1.Cancel())
			c = reapOne(t, r1)
			assert.Equal(t, q1, c.Req)
			assert.ErrorIs(t, c.Err, ErrCanceled)
		})
	}
}

// TestPortCancelStaleAfterReuse: a handle whose slot serves a newer
// request is stale: its cancel finds nothing and leaves the newer request
// alone (async-cancel's "cancel of a completed request is ENOENT").
func TestPortCancelStaleAfterReuse(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		var stale []Request
		for range 4 {
			c := doOp(t, r, Nop())
			stale = append(stale, c.Req)
		}
		p1 := submitPending(t, r, Read(rd, make([]byte, 8), 0).WithUser("p1"))
		p2 := submitPending(t, r, Read(rd, make([]byte, 8), 0).WithUser("p2"))
		for _, q := range stale {
			assert.ErrorIs(t, q.Cancel(), ErrNotFound)
			assert.False(t, q.Pending())
			_, err := q.Wait(context.Background())
			assert.ErrorIs(t, err, ErrNotFound, "Wait on a stale handle")
		}
		n, err := r.Cancel(stale...)
		require.NoError(t, err)
		assert.Zero(t, n)
		assert.True(t, p1.Pending())
		assert.True(t, p2.Pending())
		_, err = r.Submit(Nop())
		assert.ErrorIs(t, err, ErrFull, "both slots are taken")
		n, err = r.Cancel(p1, p2, p1, Request{}, p2)
		require.NoError(t, err)
		assert.Equal(t, 2, n, "each counted once")
		seen := portReapCanceled(t, r, 2)
		assert.Equal(t, map[any]int{"p1": 1, "p2": 1}, seen)
		assertNoMore(t, r)
	})
}

// TestPortCancelAfterKernelCompletion: a read that the kernel completed
// and nobody reaped yet keeps its bytes when it is canceled then
// (async-cancel: -ENOENT/-EALREADY for the cancel, the result for the
// read).
func TestPortCancelAfterKernelCompletion(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		for i := range 20 {
			q, err := r.Submit(Read(rd, make([]byte, 8), -1).WithUser(i))
			require.NoError(t, err)
			_, err = unix.Write(wr, []byte("abc"))
			require.NoError(t, err)
			// Let the kernel complete it, then cancel before reaping.
			require.Eventually(t, func() bool { return pipeEmpty(t, rd) }, 10*time.Second, time.Millisecond)
			time.Sleep(time.Millisecond)
			if err := q.Cancel(); err != nil {
				assert.ErrorIs(t, err, ErrNotFound)
			}
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.NoError(t, c.Err, "round %d: a read the kernel completed", i)
			require.Equal(t, 3, c.N)
			assert.ErrorIs(t, q.Cancel(), ErrNotFound)
		}
		assertNoMore(t, r)
	})
}

// TestPortPollCancel: a pending poll canceled completes once with
// ErrCanceled and never fires afterwards; a new poll sees the data
// (poll-cancel.c, poll-cancel-ton.c with many polls).
func TestPortPollCancel(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		var qs []Request
		for i := range 32 {
			q, err := r.Submit(Poll(rd, unix.POLLIN).WithUser(i))
			require.NoError(t, err)
			qs = append(qs, q)
		}
		// Cancel every other one, one by one, then write.
		for i := 0; i < len(qs); i += 2 {
			require.NoError(t, qs[i].Cancel())
		}
		_, err := unix.Write(wr, []byte("x"))
		require.NoError(t, err)
		seen := map[int]int{}
		for range qs {
			c := reapOne(t, r)
			i := c.User.(int)
			seen[i]++
			if i%2 == 0 {
				// Canceled before the data came: a poll does not race
				// with data that was not there.
				assert.ErrorIs(t, c.Err, ErrCanceled, "poll %d", i)
				assert.Zero(t, c.N)
			} else {
				assert.NoError(t, c.Err, "poll %d", i)
				assert.NotZero(t, c.N&unix.POLLIN)
			}
		}
		for i := range qs {
			assert.Equal(t, 1, seen[i], "completions of poll %d", i)
		}
		assertNoMore(t, r)
	})
}

// TestPortCancelAllEveryKind: CancelAll ends every kind of pending
// request, each exactly once, the held ones of a stream and a foreign
// one's hook included (cancel-all's "cancel everything, ANY|ALL").
func TestPortCancelAllEveryKind(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		_, fwr := pipe(t)
		fillPipe(t, fwr)
		l, _ := tcpListener(t, 4, 0)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		efd := eventFD(t)
		hooked := make(chan struct{}, 4)
		ops := []Op{
			Read(rd, make([]byte, 8), -1).WithUser("read"),
			Read(rd, make([]byte, 8), -1).WithUser("held read"),
			Read(rd, make([]byte, 8), -1).WithUser("held read 2"),
			Write(fwr, []byte("x"), -1).WithUser("write"),
			Poll(rd, unix.POLLIN).WithUser("poll"),
			Timeout(time.Hour).WithUser("timeout"),
			Accept(l, 0).WithUser("accept"),
			Recv(a, make([]byte, 8), 0).WithUser("recv"),
			Read(rd, make([]byte, 8), 0).WithDeadline(time.Hour).WithUser("deadline"),
			PollMultishot(efd, unix.POLLIN).WithUser("multishot"),
			Foreign(func() { hooked <- struct{}{} }).WithUser("foreign"),
		}
		reqs := make([]Request, len(ops))
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, len(ops), n)
		var cs [4]Completion
		got, err := r.Reap(cs[:], 30*time.Millisecond)
		require.NoError(t, err)
		require.Zero(t, got, "nothing completes by itself: %+v", cs[:got])

		require.NoError(t, r.CancelAll())
		select {
		case <-hooked:
		case <-time.After(10 * time.Second):
			t.Fatal("the foreign request's hook did not run")
		}
		require.NoError(t, r.Complete(reqs[len(reqs)-1], 0, ErrCanceled))
		seen := map[any]int{}
		for range ops {
			c := reapOne(t, r)
			assert.False(t, c.More, "%v", c.User)
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
			assert.Zero(t, c.N, "%v", c.User)
			seen[c.User]++
		}
		for _, op := range ops {
			assert.Equal(t, 1, seen[op.user], "completions of %v", op.user)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
		// Not a token: later requests run.
		c := doOp(t, r, Nop())
		assert.NoError(t, c.Err)
	})
}

// TestPortCancelFloodOverflowsCQ: thousands of cancels that find nothing
// each post a completion in the kernel's ring, far more than it holds,
// with nobody reaping; the requests' own completions still come, each
// once, and the ring keeps working (cq-overflow with NODROP).
func TestPortCancelFloodOverflowsCQ(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		q1 := submitPending(t, r, Read(rd, make([]byte, 8), 0).WithUser(1))
		q2 := submitPending(t, r, Poll(rd, unix.POLLIN).WithUser(2))
		for range 2000 {
			require.NoError(t, r.CancelAll())
		}
		for range 500 {
			q1.Cancel()
			r.Cancel(q1, q2)
		}
		seen := portReapCanceled(t, r, 2)
		assert.Equal(t, map[any]int{1: 1, 2: 1}, seen)
		assertNoMore(t, r)
		for i := range 50 {
			_, err := unix.Write(wr, []byte("y"))
			require.NoError(t, err)
			c := doOp(t, r, Read(rd, make([]byte, 8), -1))
			require.NoError(t, c.Err, "round %d", i)
			require.Equal(t, 1, c.N)
			require.NoError(t, r.CancelAll())
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPortCancelRacesData: a read canceled while data arrives either gets
// the data or is canceled, never both and never neither: every byte
// written is received by exactly one read or is still in the pipe.
func TestPortCancelRacesData(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		const rounds = 300
		got, canceled := 0, 0
		for i := range rounds {
			q, err := r.Submit(Read(rd, make([]byte, 1), -1).WithUser(i))
			require.NoError(t, err)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				unix.Write(wr, []byte{byte(i)})
			}()
			if i%3 != 0 {
				time.Sleep(time.Duration(i%7) * time.Microsecond)
			}
			q.Cancel()
			wg.Wait()
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if c.Err != nil {
				require.ErrorIs(t, c.Err, ErrCanceled)
				require.Zero(t, c.N)
				canceled++
				continue
			}
			require.Equal(t, 1, c.N)
			got++
		}
		left := 0
		buf := make([]byte, rounds)
		for !pipeEmpty(t, rd) {
			n, err := unix.Read(rd, buf)
			require.NoError(t, err)
			left += n
		}
		assert.Equal(t, rounds, got+left, "bytes received (%d) + left in the pipe (%d); %d reads canceled", got, left, canceled)
		assertNoMore(t, r)
	})
}

// TestPortWaitAfterCancel: a started request canceled is waited for once
// (ErrCanceled); a second Wait, and a Wait on a submitted request, find
// nothing, and the submitted one's completion stays for Reap.
func TestPortWaitAfterCancel(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		q, err := r.Start(Read(rd, make([]byte, 8), -1))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		c, err := q.Wait(context.Background())
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		_, err = q.Wait(context.Background())
		assert.ErrorIs(t, err, ErrNotFound)

		qs, err := r.Submit(Nop().WithUser("queued"))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = qs.Wait(ctx)
		assert.ErrorIs(t, err, ErrNotFound, "Wait on a submitted request")
		c = reapOne(t, r)
		assert.Equal(t, "queued", c.User)
		assertNoMore(t, r)
	})
}

// portReapCanceled reaps n completions, checks each is a cancel, and
// counts them by user value.
func portReapCanceled(t *testing.T, r *Ring, n int) map[any]int {
	t.Helper()
	seen := map[any]int{}
	for range n {
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled, "%v", c.User)
		seen[c.User]++
	}
	return seen
}
