//go:build linux

package ioring

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's link-timeout, timeout, timeout-new and
// linked-timeout racing tests: a deadline ends a request through the
// cancel path with ErrTimeout, never erases a result that came first, and
// a Timeout op runs its course with 0.

// TestPortLinkTimeoutFires: a linked timeout that fires first ends the
// request with ErrTimeout and no bytes; one that does not fire leaves the
// request's result (link-timeout.c: the read gets -ECANCELED, the timeout
// -ETIME; the nop with a timeout completes with 0).
func TestPortLinkTimeoutFires(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		a, _ := socketpair(t, unix.SOCK_STREAM)
		l, _ := tcpListener(t, 4, 0)
		for _, op := range []Op{
			Read(rd, make([]byte, 8), -1),
			Read(rd, make([]byte, 8), 0),
			Readv(rd, [][]byte{make([]byte, 4), make([]byte, 4)}, -1),
			Poll(rd, unix.POLLIN),
			Recv(a, make([]byte, 8), 0),
			Accept(l, 0),
			Timeout(time.Hour),
		} {
			c := doOp(t, r, op.WithDeadline(5*time.Millisecond))
			assert.ErrorIs(t, c.Err, ErrTimeout, "%v", op.Code())
			assert.ErrorIs(t, c.Err, ErrCanceled, "%v: a timeout is a cancel", op.Code())
			assert.ErrorIs(t, c.Err, os.ErrDeadlineExceeded, "%v", op.Code())
			assert.Zero(t, c.N, "%v", op.Code())
			assert.ErrorIs(t, c.Req.Cancel(), ErrNotFound)
		}
		// Deadlines that do not fire.
		c := doOp(t, r, Nop().WithDeadline(time.Hour))
		assert.NoError(t, c.Err)
		c = doOp(t, r, Timeout(time.Millisecond).WithDeadline(time.Hour))
		assert.NoError(t, c.Err, "the timeout ran its course")
		_, err := unix.Write(wr, []byte("abc"))
		require.NoError(t, err)
		buf := make([]byte, 8)
		c = doOp(t, r, Read(rd, buf, -1).WithDeadline(time.Hour))
		require.NoError(t, c.Err)
		assert.Equal(t, "abc", string(buf[:c.N]))
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPortTimeoutEdges: Timeout(0) completes at once with 0; a huge
// duration or deadline neither overflows nor fires, and is canceled.
func TestPortTimeoutEdges(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		c := doOp(t, r, Timeout(0))
		assert.NoError(t, c.Err, "Timeout(0)")
		assert.Zero(t, c.N)
		c = doOp(t, r, Timeout(1))
		assert.NoError(t, c.Err, "Timeout(1ns)")

		rd, _ := pipe(t)
		q1 := submitPending(t, r, Timeout(math.MaxInt64).WithUser("huge timeout"))
		q2 := submitPending(t, r, Read(rd, make([]byte, 8), 0).WithDeadline(math.MaxInt64).WithUser("huge deadline"))
		q3 := submitPending(t, r, Timeout(math.MaxInt64).WithDeadline(math.MaxInt64).WithUser("both"))
		n, err := r.Cancel(q1, q2, q3)
		require.NoError(t, err)
		assert.Equal(t, 3, n)
		seen := portReapCanceled(t, r, 3)
		assert.Len(t, seen, 3)
		for _, c := range seen {
			assert.Equal(t, 1, c)
		}
		assertNoMore(t, r)
	})
}

// TestPortDeadlineRacesData: deadlines of a few microseconds racing data
// already written: each read completes once, with its byte or with
// ErrTimeout, and no byte is lost (link-timeout's "timeout races the
// request").
func TestPortDeadlineRacesData(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		const rounds = 300
		got, timedOut := 0, 0
		for i := range rounds {
			if i%2 == 0 {
				_, err := unix.Write(wr, []byte{byte(i)})
				require.NoError(t, err)
			}
			d := time.Duration(1+i%20) * time.Microsecond
			q, err := r.Submit(Read(rd, make([]byte, 1), -1).WithDeadline(d))
			require.NoError(t, err)
			if i%2 == 1 {
				go unix.Write(wr, []byte{byte(i)})
			}
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if c.Err != nil {
				require.ErrorIs(t, c.Err, ErrTimeout, "round %d", i)
				require.Zero(t, c.N)
				timedOut++
				continue
			}
			require.Equal(t, 1, c.N)
			got++
		}
		// The writers of odd rounds may still be on their way.
		left := 0
		buf := make([]byte, rounds)
		deadline := time.Now().Add(10 * time.Second)
		for got+left < rounds && time.Now().Before(deadline) {
			if pipeEmpty(t, rd) {
				time.Sleep(time.Millisecond)
				continue
			}
			n, err := unix.Read(rd, buf)
			require.NoError(t, err)
			left += n
		}
		assert.Equal(t, rounds, got+left, "received %d, left %d, %d timed out", got, left, timedOut)
		assertNoMore(t, r)
	})
}

// TestPortDeadlineAfterCompletion: a request that completed is not turned
// into a timeout by its deadline passing before it is reaped.
func TestPortDeadlineAfterCompletion(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		_, err := unix.Write(wr, []byte("abcd"))
		require.NoError(t, err)
		q1, err := r.Submit(Nop().WithDeadline(time.Millisecond).WithUser("nop"))
		require.NoError(t, err)
		q2, err := r.Submit(Read(rd, make([]byte, 4), -1).WithDeadline(time.Millisecond).WithUser("read"))
		require.NoError(t, err)
		q3, err := r.Submit(Foreign(nil).WithDeadline(2 * time.Millisecond).WithUser("foreign"))
		require.NoError(t, err)
		require.NoError(t, r.Complete(q3, 7, nil))
		time.Sleep(20 * time.Millisecond)
		for range 3 {
			c := reapOne(t, r)
			assert.NoError(t, c.Err, "%v", c.User)
			switch c.Req {
			case q1:
			case q2:
				assert.Equal(t, 4, c.N)
			case q3:
				assert.Equal(t, 7, c.N)
			}
		}
		assertNoMore(t, r)
	})
}

// TestPortHeldDeadline: a read held behind another on its stream times
// out on its own deadline while the first waits; the first is unaffected
// and still gets the stream's next bytes.
func TestPortHeldDeadline(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		first := submitPending(t, r, Read(rd, make([]byte, 8), -1).WithUser("first"))
		held, err := r.Submit(Read(rd, make([]byte, 8), -1).WithDeadline(5 * time.Millisecond).WithUser("held"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, held, c.Req)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.True(t, first.Pending())
		_, err = unix.Write(wr, []byte("xy"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, first, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 2, c.N)
		assertNoMore(t, r)
	})
}

// TestPortCanceledThenDeadline: the first cause counts: a request
// canceled by its token just before its deadline completes with
// ErrCanceled, not ErrTimeout, and a token canceled before submission
// wins over any deadline.
func TestPortCanceledThenDeadline(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		// The cancel must come before the deadline, which a loaded
		// machine may not run the test soon enough for: a try where the
		// deadline may have passed first says nothing, and the next gives
		// it twice as long.
		var tok *Token
		for d := 2 * time.Millisecond; ; d *= 2 {
			require.Less(t, d, 10*time.Second, "the token's cancel never came before the deadline")
			tok = r.NewToken()
			start := time.Now()
			q, err := r.Submit(Read(rd, make([]byte, 8), 0).WithToken(tok).WithDeadline(d))
			require.NoError(t, err)
			require.NoError(t, tok.Cancel())
			first := time.Since(start) < d
			time.Sleep(time.Until(start.Add(d + 3*time.Millisecond))) // the deadline passes
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			if first {
				assert.NotErrorIs(t, c.Err, ErrTimeout)
				break
			}
		}
		c := doOp(t, r, Read(rd, make([]byte, 8), 0).WithToken(tok).WithDeadline(time.Nanosecond))
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.NotErrorIs(t, c.Err, ErrTimeout)
		assertNoMore(t, r)
	})
}
