//go:build linux

package ioring

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's eof, short-read and "close while pending"
// cases, through File, the io.Reader/io.Writer face a driver uses: EOF is
// io.EOF, short ReadAt is io.EOF, deadlines and Close end pending I/O
// with the errors os.File and net.Conn give.

// TestPortFileEOFAndShortReadAt: Read at the end of a file or a stream
// is 0, io.EOF; ReadAt that reads fewer than asked says io.EOF with the
// count.
func TestPortFileEOFAndShortReadAt(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		fd, err := unix.Dup(tempFile(t, []byte("hello")))
		require.NoError(t, err)
		_, err = unix.Seek(fd, 0, io.SeekStart)
		require.NoError(t, err)
		f := NewFile(r, fd, "hello")
		defer f.Close()
		buf := make([]byte, 8)
		n, err := f.ReadAt(buf, 2)
		assert.Equal(t, 3, n)
		assert.ErrorIs(t, err, io.EOF)
		n, err = f.ReadAt(buf, 5)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.EOF)
		n, err = f.ReadAt(buf[:5], 0)
		assert.Equal(t, 5, n)
		assert.NoError(t, err, "a full ReadAt")
		n, err = f.Read(buf)
		assert.Equal(t, 5, n)
		assert.NoError(t, err)
		n, err = f.Read(buf)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, io.EOF)
		n, err = f.Read(nil)
		assert.Zero(t, n, "an empty Read")
		if err != nil {
			assert.NotErrorIs(t, err, ErrInvalid, "io.Reader allows an empty buffer")
		}

		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		pf := NewFile(r, p[0], "pipe")
		defer pf.Close()
		go func() {
			unix.Write(p[1], []byte("ab"))
			unix.Close(p[1])
		}()
		all, err := io.ReadAll(pf)
		assert.NoError(t, err)
		assert.Equal(t, "ab", string(all))
	})
}

// TestPortFileCloseEndsPending: Close of a File with reads and writes
// pending ends them with errors matching os.ErrClosed, closes the fd
// once, and later calls say os.ErrClosed.
func TestPortFileCloseEndsPending(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		defer unix.Close(p[1])
		f := NewFile(r, p[0], "pipe")
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := f.Read(make([]byte, 8))
				errs <- err
			}()
		}
		time.Sleep(20 * time.Millisecond)
		portWithin(t, 10*time.Second, "File.Close", func() { assert.NoError(t, f.Close()) })
		portWithin(t, 10*time.Second, "the readers", wg.Wait)
		close(errs)
		for err := range errs {
			assert.ErrorIs(t, err, os.ErrClosed)
		}
		assert.ErrorIs(t, f.Close(), os.ErrClosed)
		_, err := f.Read(make([]byte, 8))
		assert.ErrorIs(t, err, os.ErrClosed)
		_, err = f.Write([]byte("x"))
		assert.ErrorIs(t, err, os.ErrClosed)
		// The fd was closed: its number is not open (or is another file).
		_, err = unix.FcntlInt(uintptr(p[0]), unix.F_GETFD, 0)
		assert.ErrorIs(t, err, unix.EBADF)
		assertSettled(t, r)
	})
}

// TestPortFileDeadlines: a read deadline in the past fails at once, one
// in the future ends a pending read with os.ErrDeadlineExceeded, and
// clearing it lets the next read wait for data.
func TestPortFileDeadlines(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		fd, err := unix.Dup(rd)
		require.NoError(t, err)
		f := NewFile(r, fd, "pipe")
		defer f.Close()
		require.NoError(t, f.SetReadDeadline(time.Now().Add(-time.Second)))
		_, err = f.Read(make([]byte, 8))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		require.NoError(t, f.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
		_, err = f.Read(make([]byte, 8))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		assert.ErrorIs(t, err, ErrTimeout)
		require.NoError(t, f.SetReadDeadline(time.Time{}))
		go func() {
			time.Sleep(10 * time.Millisecond)
			unix.Write(wr, []byte("ok"))
		}()
		buf := make([]byte, 8)
		n, err := f.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, "ok", string(buf[:n]))

		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(10 * time.Millisecond)
			cancel()
		}()
		_, err = f.ReadContext(ctx, buf)
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, ErrCanceled)
		assert.False(t, errors.Is(err, os.ErrDeadlineExceeded))
	})
}
