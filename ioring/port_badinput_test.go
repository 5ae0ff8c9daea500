//go:build linux

package ioring

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's "bad input" corners (nop-all-sizes, invalid-opcode
// probes, accept on a socket that does not listen, shutdown, socket,
// close-opath, open-close, statx, fsync on a bad fd, 32-bit fd
// truncation) and from adversarial use of the API: every refusal wraps
// ErrInvalid (or names the kernel's errno), takes no slot, and leaves the
// ring working.

// TestPortRefusalsTakeNoSlot: every kind of refused Submit, Start, Do and
// SubmitBatch on a ring of 2 leaves both slots free.
func TestPortRefusalsTakeNoSlot(t *testing.T) {
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
		require.NoError(t, err)
		foreignTok := other.NewToken()
		require.NoError(t, other.Close())
		buf := make([]byte, 8)
		bad := []Op{
			{},
			{code: Opcode(numOps)},
			Read(rd, nil, 0),
			Read(rd, buf[:0], 0),
			Read(-1, buf, 0),
			Read(rd, buf, -2),
			Read(rd, buf, math.MinInt64),
			Write(rd, nil, -1),
			Readv(rd, nil, 0),
			Readv(rd, [][]byte{buf, nil}, 0),
			Readv(rd, make([][]byte, 1025), 0),
			Writev(rd, [][]byte{{}}, 0),
			Poll(rd, 0),
			Timeout(-1),
			Nop().WithDeadline(-1),
			Read(rd, buf, 0).WithDeadline(math.MinInt64),
			Nop().WithToken(&Token{}),
			Nop().WithToken(foreignTok),
			Fsync(-5),
			Close(-1),
			OpenAt(-2, "x", 0, 0),
			OpenAt(unix.AT_FDCWD, "a\x00b", 0, 0),
			Statx(unix.AT_FDCWD, "x", 0, 0, nil),
			Shutdown(rd, 7),
			Accept(-1, 0),
			Recv(rd, nil, 0),
			Send(rd, buf, 0).FixedFile(), // no files registered
			PollMultishot(rd, 0),
			ReadFixed(rd, buf, 0, -1),
		}
		for _, fd := range portWideInts(math.MaxInt32 + 1) { // an fd the kernel's 32 bits truncate
			bad = append(bad, Read(fd, buf, 0))
		}
		for i, op := range bad {
			_, err := r.Submit(op)
			assert.ErrorIs(t, err, ErrInvalid, "Submit of bad op %d (%v)", i, op.Code())
			_, err = r.Start(op)
			assert.ErrorIs(t, err, ErrInvalid, "Start of bad op %d (%v)", i, op.Code())
			_, err = r.Do(context.Background(), op)
			assert.ErrorIs(t, err, ErrInvalid, "Do of bad op %d (%v)", i, op.Code())
			n, err := r.SubmitBatch([]Op{Nop(), op}, make([]Request, 2))
			assert.ErrorIs(t, err, ErrInvalid, "batch with bad op %d (%v)", i, op.Code())
			assert.Zero(t, n)
			n, _, err = r.SubmitAndReap([]Op{op}, make([]Request, 1), make([]Completion, 1), 0)
			assert.ErrorIs(t, err, ErrInvalid, "SubmitAndReap of bad op %d (%v)", i, op.Code())
			assert.Zero(t, n)
		}
		// Misused calls.
		_, err = r.SubmitBatch([]Op{Nop(), Nop()}, make([]Request, 1))
		assert.ErrorIs(t, err, ErrInvalid, "reqs shorter than ops")
		_, err = r.Reap(nil, 0)
		assert.ErrorIs(t, err, ErrInvalid, "Reap into nothing")
		_, _, err = r.SubmitAndReap([]Op{Nop()}, make([]Request, 1), nil, 0)
		assert.ErrorIs(t, err, ErrInvalid, "SubmitAndReap into nothing")
		var noCtx context.Context // nil, on purpose
		_, err = r.Do(noCtx, Nop())
		assert.ErrorIs(t, err, ErrInvalid)
		_, err = r.Start(PollMultishot(rd, unix.POLLIN))
		assert.ErrorIs(t, err, ErrInvalid, "Start of a multishot op")
		_, err = r.Do(context.Background(), PollMultishot(rd, unix.POLLIN))
		assert.ErrorIs(t, err, ErrInvalid, "Do of a multishot op")
		assert.ErrorIs(t, r.Complete(Request{}, 0, nil), ErrNotFound)
		assert.ErrorIs(t, (&Token{}).Cancel(), ErrInvalid)
		assert.ErrorIs(t, (&Token{}).Reset(), ErrInvalid)

		assert.Zero(t, r.InFlight())
		// Both slots are still free.
		q1 := submitPending(t, r, Read(rd, buf, 0))
		q2 := submitPending(t, r, Read(rd, make([]byte, 8), 0))
		n, err := r.Cancel(q1, q2)
		require.NoError(t, err)
		assert.Equal(t, 2, n)
		portReapCanceled(t, r, 2)
		assertNoMore(t, r)
		st := r.Stats()
		assert.EqualValues(t, st.Submitted, st.Completed)
	})
}

// TestPortKernelRefusals: operations the kernel refuses complete with its
// errno, named by the operation and fd (accept on a socket that does not
// listen, shutdown of a non-socket or an unconnected one, connect
// refused, open and statx of a missing path, close of an O_PATH fd).
func TestPortKernelRefusals(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		s := tcpSocket(t)
		c := doOp(t, r, Accept(s, 0))
		assert.ErrorIs(t, c.Err, unix.EINVAL, "accept on a socket that does not listen")
		c = doOp(t, r, Accept(rd, 0))
		assert.ErrorIs(t, c.Err, unix.ENOTSOCK, "accept on a pipe")
		c = doOp(t, r, Shutdown(rd, unix.SHUT_RDWR))
		assert.ErrorIs(t, c.Err, unix.ENOTSOCK, "shutdown of a pipe")
		c = doOp(t, r, Shutdown(s, unix.SHUT_WR))
		assert.ErrorIs(t, c.Err, unix.ENOTCONN, "shutdown of an unconnected socket")
		c = doOp(t, r, Recv(rd, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.ENOTSOCK, "recv on a pipe")

		l, sa := tcpListener(t, 1, 0)
		require.NoError(t, unix.Close(l)) // nothing listens there now
		c = doOp(t, r, Connect(tcpSocket(t), sa))
		assert.ErrorIs(t, c.Err, unix.ECONNREFUSED)

		dir := t.TempDir()
		c = doOp(t, r, OpenAt(unix.AT_FDCWD, dir+"/missing", unix.O_RDONLY, 0))
		assert.ErrorIs(t, c.Err, fs.ErrNotExist)
		var ioe *IOError
		if assert.ErrorAs(t, c.Err, &ioe) {
			assert.Equal(t, dir+"/missing", ioe.Path)
		}
		var st unix.Statx_t
		c = doOp(t, r, Statx(unix.AT_FDCWD, dir+"/missing", 0, unix.STATX_BASIC_STATS, &st))
		assert.ErrorIs(t, c.Err, unix.ENOENT)

		// close-opath: an O_PATH fd opened and closed through the ring;
		// I/O on it is EBADF.
		c = doOp(t, r, OpenAt(unix.AT_FDCWD, dir, unix.O_PATH, 0))
		require.NoError(t, c.Err)
		opath := c.N
		c = doOp(t, r, Read(opath, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.EBADF, "read of an O_PATH fd")
		c = doOp(t, r, Close(opath))
		assert.NoError(t, c.Err, "close of an O_PATH fd")
		c = doOp(t, r, Close(opath))
		assert.ErrorIs(t, c.Err, unix.EBADF, "close twice")
		assertNoMore(t, r)
	})
}

// TestPortZeroAndNilValues: the zero Ring, a nil *Ring, the zero Request
// and the zero Completion's Request: every call refuses or says
// ErrNotFound, none panics.
func TestPortZeroAndNilValues(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			_, err := r.Submit(Nop())
			assert.ErrorIs(t, err, ErrInvalid)
			_, err = r.Start(Nop())
			assert.ErrorIs(t, err, ErrInvalid)
			_, err = r.SubmitBatch([]Op{Nop()}, make([]Request, 1))
			assert.ErrorIs(t, err, ErrInvalid)
			_, _, err = r.SubmitAndReap(nil, nil, make([]Completion, 1), 0)
			assert.ErrorIs(t, err, ErrInvalid)
			_, err = r.Reap(make([]Completion, 1), 0)
			assert.ErrorIs(t, err, ErrInvalid)
			_, err = r.Reap(make([]Completion, 1), -1)
			assert.ErrorIs(t, err, ErrInvalid, "a blocking Reap on no ring")
			_, err = r.Do(context.Background(), Nop())
			assert.ErrorIs(t, err, ErrInvalid)
			_, err = r.Cancel(Request{})
			assert.ErrorIs(t, err, ErrInvalid)
			assert.ErrorIs(t, r.CancelAll(), ErrInvalid)
			assert.ErrorIs(t, r.Close(), ErrInvalid)
			assert.ErrorIs(t, r.RegisterBuffers([][]byte{{1}}), ErrInvalid)
			assert.ErrorIs(t, r.RegisterFiles([]int{0}), ErrInvalid)
			_, err = r.NewBufRing(2, 2)
			assert.ErrorIs(t, err, ErrInvalid)
			assert.Zero(t, r.InFlight())
			assert.Zero(t, r.Entries())
			tok := r.NewToken()
			if tok != nil {
				assert.ErrorIs(t, tok.Cancel(), ErrInvalid)
			}
		})
	}
	var q Request
	assert.ErrorIs(t, q.Cancel(), ErrNotFound)
	assert.False(t, q.Pending())
	assert.Nil(t, q.Ring())
	_, err := q.Wait(context.Background())
	assert.ErrorIs(t, err, ErrNotFound)
	assert.NotPanics(t, func() { _ = q.String() })
}

// TestPortForeignCompleteEdges: Complete's arguments at their edges:
// twice, before any cancel, with a negative count and an error, with an
// errno beyond the kernel's, and on a request that is not foreign.
func TestPortForeignCompleteEdges(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		q, err := r.Submit(Foreign(nil).WithUser("a"))
		require.NoError(t, err)
		require.NoError(t, r.Complete(q, -int(unix.EIO), nil))
		assert.ErrorIs(t, r.Complete(q, 0, nil), ErrNotFound, "twice")
		c := reapOne(t, r)
		assert.ErrorIs(t, c.Err, unix.EIO)
		assert.Zero(t, c.N)

		q, err = r.Submit(Foreign(nil).WithUser("b"))
		require.NoError(t, err)
		myErr := errors.New("transport")
		require.NoError(t, r.Complete(q, -5, myErr))
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, myErr, "the error wins over the count")

		q, err = r.Submit(Foreign(nil).WithUser("c"))
		require.NoError(t, err)
		require.NoError(t, r.Complete(q, math.MinInt, nil))
		c = reapOne(t, r)
		assert.Error(t, c.Err, "a count below every errno")
		assert.Zero(t, c.N)

		rd, _ := pipe(t)
		p := submitPending(t, r, Read(rd, make([]byte, 8), -1))
		assert.ErrorIs(t, r.Complete(p, 1, nil), ErrNotFound, "not a foreign request")
		assert.True(t, p.Pending())
		require.NoError(t, p.Cancel())
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrCanceled)

		// A deadline on a foreign request whose transport says canceled.
		hooked := make(chan struct{})
		q, err = r.Submit(Foreign(func() { close(hooked) }).WithDeadline(time.Millisecond))
		require.NoError(t, err)
		select {
		case <-hooked:
		case <-time.After(10 * time.Second):
			t.Fatal("the deadline did not run the hook")
		}
		assert.ErrorIs(t, q.Cancel(), ErrNotFound, "canceled by its deadline already")
		require.NoError(t, r.Complete(q, 0, ErrCanceled))
		c = reapOne(t, r)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assertNoMore(t, r)
	})
}

// portWideInts returns those of vs that an int holds on this platform:
// values beyond 32 bits only where int has 64 (the tests of wide values
// build on 32-bit platforms too, and skip them there).
func portWideInts(vs ...int64) []int {
	var out []int
	for _, v := range vs {
		if int64(int(v)) == v {
			out = append(out, int(v))
		}
	}
	return out
}
