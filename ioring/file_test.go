//go:build linux

package ioring

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestConformanceFile(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		rf, wf := NewFile(r, p[0], "pipe-r"), NewFile(r, p[1], "pipe-w")
		var _ io.ReadWriteCloser = rf
		var _ io.ReaderAt = rf
		var _ io.WriterAt = rf

		n, err := wf.Write([]byte("hello"))
		require.NoError(t, err)
		assert.Equal(t, 5, n)
		buf := make([]byte, 16)
		n, err = rf.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "hello", string(buf[:n]))

		// A read deadline ends a pending read, and later reads at once.
		// start is taken before the deadline is set: after, a test
		// descheduled between the two would measure from too late.
		start := time.Now()
		require.NoError(t, rf.SetReadDeadline(start.Add(20*time.Millisecond)))
		_, err = rf.Read(buf)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.ErrorIs(t, err, ErrTimeout)
		assert.GreaterOrEqual(t, time.Since(start), 15*time.Millisecond)
		_, err = rf.Read(buf)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "deadline passed: refused at once")
		// Cleared, reads work again.
		require.NoError(t, rf.SetReadDeadline(time.Time{}))
		wf.Write([]byte("again"))
		n, err = rf.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "again", string(buf[:n]))

		// A deadline moved into the past cancels a pending read at once.
		errc := make(chan error, 1)
		go func() { _, err := rf.Read(buf); errc <- err }()
		time.Sleep(10 * time.Millisecond)
		require.NoError(t, rf.SetReadDeadline(time.Now().Add(-time.Second)))
		assert.ErrorIs(t, <-errc, os.ErrDeadlineExceeded)
		require.NoError(t, rf.SetReadDeadline(time.Time{}))

		// A context cancels.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_, err = rf.ReadContext(ctx, buf)
		assert.ErrorIs(t, err, context.DeadlineExceeded)

		// Close cancels a pending read, which reports the close.
		go func() { _, err := rf.Read(buf); errc <- err }()
		time.Sleep(10 * time.Millisecond)
		require.NoError(t, rf.Close())
		err = <-errc
		assert.ErrorIs(t, err, os.ErrClosed)
		assert.ErrorIs(t, err, ErrClosed)
		_, err = rf.Read(buf)
		assert.ErrorIs(t, err, os.ErrClosed)
		assert.ErrorIs(t, rf.Close(), os.ErrClosed)

		// The reader gone, a write fails with the errno.
		_, err = wf.Write([]byte("x"))
		assert.ErrorIs(t, err, unix.EPIPE)
		var pe *os.PathError
		require.True(t, errors.As(err, &pe))
		assert.Equal(t, "pipe-w", pe.Path)
		require.NoError(t, wf.Close())

		// ReadAt and WriteAt on a regular file, and EOF.
		f, err := os.CreateTemp(t.TempDir(), "file")
		require.NoError(t, err)
		fd, err := unix.Dup(int(f.Fd()))
		require.NoError(t, err)
		f.Close()
		ff := NewFile(r, fd, "tmp")
		n, err = ff.WriteAt([]byte("0123456789"), 0)
		require.NoError(t, err)
		assert.Equal(t, 10, n)
		n, err = ff.ReadAt(buf[:4], 3)
		require.NoError(t, err)
		assert.Equal(t, "3456", string(buf[:n]))
		n, err = ff.ReadAt(buf[:8], 6)
		assert.ErrorIs(t, err, io.EOF)
		assert.Equal(t, "6789", string(buf[:n]))
		all, err := io.ReadAll(ff)
		require.NoError(t, err)
		assert.Equal(t, "0123456789", string(all))
		require.NoError(t, ff.Close())
	})
}

// A File that NewFile did not make with a Ring, and a Ring that New did not
// make, are refused with ErrInvalid; such a File leaves its fd alone.
func TestZeroFile(t *testing.T) {
	for name, r := range map[string]*Ring{"nil": nil, "zero": new(Ring)} {
		assert.ErrorIs(t, r.RegisterBuffers([][]byte{make([]byte, 8)}), ErrInvalid, name)
		assert.ErrorIs(t, r.UnregisterBuffers(), ErrInvalid, name)
	}
	rd, wr := pipe(t)
	buf := make([]byte, 4)
	for name, f := range map[string]*File{"nil": nil, "zero": new(File), "nil ring": NewFile(nil, rd, "pipe"), "zero ring": NewFile(new(Ring), wr, "pipe")} {
		_, err := f.Read(buf)
		assert.ErrorIs(t, err, ErrInvalid, name)
		_, err = f.Read(nil)
		assert.ErrorIs(t, err, ErrInvalid, name)
		_, err = f.Write(buf)
		assert.ErrorIs(t, err, ErrInvalid, name)
		_, err = f.ReadAt(buf, 0)
		assert.ErrorIs(t, err, ErrInvalid, name)
		_, err = f.WriteAt(buf, 0)
		assert.ErrorIs(t, err, ErrInvalid, name)
		assert.ErrorIs(t, f.SetDeadline(time.Now()), ErrInvalid, name)
		assert.ErrorIs(t, f.SetReadDeadline(time.Time{}), ErrInvalid, name)
		assert.ErrorIs(t, f.SetWriteDeadline(time.Time{}), ErrInvalid, name)
		assert.ErrorIs(t, f.Close(), ErrInvalid, name)
	}
	assert.Equal(t, -1, (*File)(nil).Fd())
	// Close left the fds of the Files on no Ring alone.
	for _, fd := range []int{rd, wr} {
		_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		assert.NoError(t, err, "fd %d is still open", fd)
	}
}
