//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's fixed-buf, fixed-link, read-write (fixed),
// register-files, file-register, file-update and fixed-reuse tests:
// registered buffers and files at their edges, on both backends.

// TestPortFixedBufferEdges: indexes and ranges at the edge of the
// registered table: inside works, one byte over or another index's
// buffer is EFAULT, an index the package cannot name is refused.
func TestPortFixedBufferEdges(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("0123456789abcdef"))
		b0, b1 := make([]byte, 16), make([]byte, 32)
		c := doOp(t, r, ReadFixed(fd, b0[:8], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "no buffers registered yet")
		c = doOp(t, r, WriteFixed(fd, b0[:8], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "no buffers registered yet")

		require.NoError(t, r.RegisterBuffers([][]byte{b0, b1}))
		defer r.UnregisterBuffers()
		c = doOp(t, r, ReadFixed(fd, b0, 0, 0))
		require.NoError(t, c.Err)
		assert.Equal(t, "0123456789abcdef", string(b0[:c.N]))
		c = doOp(t, r, ReadFixed(fd, b1[31:], 15, 1))
		require.NoError(t, c.Err, "the last byte of buffer 1")
		assert.Equal(t, 1, c.N)
		assert.Equal(t, byte('f'), b1[31])

		c = doOp(t, r, ReadFixed(fd, b0[:8], 0, 1))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "buffer 0's memory named as index 1")
		assert.Zero(t, c.N)
		c = doOp(t, r, ReadFixed(fd, b0[:8], 0, 2))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "index beyond the table")
		c = doOp(t, r, ReadFixed(fd, b0[:8], 0, maxFixed-1))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "the largest index")
		// One byte beyond the registered buffer.
		big := make([]byte, 64)
		require.NoError(t, r.UnregisterBuffers())
		require.NoError(t, r.RegisterBuffers([][]byte{big[:16]}))
		c = doOp(t, r, ReadFixed(fd, big[8:17], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "one byte past the end")
		assert.Zero(t, c.N)
		c = doOp(t, r, WriteFixed(fd, big[8:17], 0, 0))
		assert.ErrorIs(t, c.Err, unix.EFAULT, "one byte past the end")

		for _, idx := range append([]int{-1, maxFixed}, portWideInts(1<<32)...) {
			_, err := r.Submit(ReadFixed(fd, big[:8], 0, idx))
			assert.ErrorIs(t, err, ErrInvalid, "index %d", idx)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPortFixedBufferLifecycle: registering twice is EBUSY, unregistering
// with none is ENXIO, bad lists are refused, and a read pending on a
// registered buffer completes normally after the buffers are
// unregistered (and after others are registered in their place).
func TestPortFixedBufferLifecycle(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		assert.ErrorIs(t, r.UnregisterBuffers(), unix.ENXIO)
		assert.ErrorIs(t, r.RegisterBuffers(nil), ErrInvalid)
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{make([]byte, 8), nil}), ErrInvalid)
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{{}}), ErrInvalid)
		assert.ErrorIs(t, r.RegisterBuffers(make([][]byte, maxFixed+1)), ErrInvalid)
		fixed := make([]byte, 64)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{fixed}), unix.EBUSY)

		rd, wr := pipe(t)
		q := submitPending(t, r, ReadFixed(rd, fixed[:8], -1, 0))
		require.NoError(t, r.UnregisterBuffers())
		require.NoError(t, r.RegisterBuffers([][]byte{make([]byte, 64)}))
		_, err := unix.Write(wr, []byte("late"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err, "a read accepted on the old table completes normally")
		assert.Equal(t, "late", string(fixed[:c.N]))
		require.NoError(t, r.UnregisterBuffers())
		assertNoMore(t, r)
	})
}

// TestPortFixedFileEdges: registered files with empty entries, indexes
// beyond the table, and an fd closed by its caller after registration
// (register-files: the table holds its own reference).
func TestPortFixedFileEdges(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		_, err := r.Submit(Read(0, make([]byte, 8), 0).FixedFile())
		assert.ErrorIs(t, err, ErrInvalid, "no table at all")
		assert.ErrorIs(t, r.UnregisterFiles(), unix.ENXIO)
		assert.ErrorIs(t, r.RegisterFiles(nil), ErrInvalid)
		assert.ErrorIs(t, r.RegisterFiles([]int{-2}), ErrInvalid)
		for _, fd := range portWideInts(1 << 40) {
			assert.ErrorIs(t, r.RegisterFiles([]int{fd}), ErrInvalid)
		}

		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		rd, wr := p[0], p[1]
		defer unix.Close(wr)
		require.NoError(t, r.RegisterFiles([]int{-1, rd, -1}))
		assert.ErrorIs(t, r.RegisterFiles([]int{rd}), unix.EBUSY)
		// The caller's fd is closed: the registered file lives on.
		require.NoError(t, unix.Close(rd))

		c := doOp(t, r, Read(0, make([]byte, 8), 0).FixedFile())
		assert.ErrorIs(t, c.Err, unix.EBADF, "an empty entry")
		c = doOp(t, r, Poll(2, unix.POLLIN).FixedFile())
		assert.ErrorIs(t, c.Err, unix.EBADF, "an empty entry")
		_, err = r.Submit(Read(3, make([]byte, 8), 0).FixedFile())
		assert.ErrorIs(t, err, ErrInvalid, "one beyond the table")
		_, err = r.Submit(Close(1).FixedFile())
		assert.ErrorIs(t, err, ErrInvalid, "Close of a registered file")

		q := submitPending(t, r, Read(1, make([]byte, 8), -1).FixedFile().WithUser("fixed"))
		_, err = unix.Write(wr, []byte("hi"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 2, c.N)

		// Unregister while a request on a registered file is pending: it
		// keeps its file.
		q = submitPending(t, r, Read(1, make([]byte, 8), -1).FixedFile().WithUser("pending"))
		require.NoError(t, r.UnregisterFiles())
		_, err = r.Submit(Read(1, make([]byte, 8), -1).FixedFile())
		assert.ErrorIs(t, err, ErrInvalid, "the table is gone")
		_, err = unix.Write(wr, []byte("xyz"))
		require.NoError(t, err)
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 3, c.N)
		assertNoMore(t, r)
	})
}

// TestPortFixedFileHeldAcrossUnregister: a read held behind another on
// its registered file's stream is handed the table of its turn: with no
// table then, it completes with EBADF, once, and the first read is not
// disturbed.
func TestPortFixedFileHeldAcrossUnregister(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		require.NoError(t, r.RegisterFiles([]int{rd}))
		first := submitPending(t, r, Read(0, make([]byte, 8), -1).FixedFile().WithUser("first"))
		held, err := r.Submit(Read(0, make([]byte, 8), -1).FixedFile().WithUser("held"))
		require.NoError(t, err)
		require.NoError(t, r.UnregisterFiles())
		_, err = unix.Write(wr, []byte("ab"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, first, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 2, c.N)
		c = reapOne(t, r)
		require.Equal(t, held, c.Req)
		assert.ErrorIs(t, c.Err, unix.EBADF)
		assert.Zero(t, c.N)
		assertNoMore(t, r)
	})
}

// TestPortFixedUnderCancel: reads on registered buffers and files are
// canceled like any other, by request, token and deadline.
func TestPortFixedUnderCancel(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, _ := pipe(t)
		fixed := make([]byte, 64)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		require.NoError(t, r.RegisterFiles([]int{rd}))
		tok := r.NewToken()
		q1 := submitPending(t, r, ReadFixed(rd, fixed[:8], -1, 0).WithUser("fixed buffer"))
		q2 := submitPending(t, r, Read(0, make([]byte, 8), 0).FixedFile().WithToken(tok).WithUser("fixed file"))
		q3, err := r.Submit(ReadFixed(0, fixed[8:16], 0, 0).FixedFile().WithDeadline(5 * time.Millisecond).WithUser("both"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q3, c.Req)
		assert.ErrorIs(t, c.Err, ErrTimeout)
		require.NoError(t, q1.Cancel())
		require.NoError(t, tok.Cancel())
		seen := portReapCanceled(t, r, 2)
		assert.Equal(t, map[any]int{"fixed buffer": 1, "fixed file": 1}, seen)
		assert.False(t, q2.Pending())
		require.NoError(t, r.UnregisterFiles())
		require.NoError(t, r.UnregisterBuffers())
		assertNoMore(t, r)
	})
}
