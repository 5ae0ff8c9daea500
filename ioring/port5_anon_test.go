//go:build linux

package ioring

import (
	"encoding/binary"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fifth round, files of anonymous inodes and FIFOs: ported from
// liburing's evfd-short-read, timerfd-short-read and fifo-nonblock-read.
// A read asking for more than an eventfd or a timerfd ever gives (16
// bytes of an 8-byte counter) waits for the counter and completes with
// the 8 bytes: it is not a short read of a regular file to be retried
// until the buffer is full (a kernel once took anonymous inodes for
// regular files and hung there). A read asking for less than 8 bytes is
// EINVAL, as read(2) says. A named FIFO opened O_NONBLOCK waits for data
// like a pipe, rather than ending with EAGAIN.

// port5U64 is v as the 8 bytes an eventfd or a timerfd reads and writes.
func port5U64(v uint64) []byte {
	return binary.NativeEndian.AppendUint64(nil, v)
}

// TestPort5CounterReadLargerBuffer: a 16-byte read of an eventfd
// (blocking and not, read at the position and at offset 0, as liburing
// does) and of a timerfd waits until the counter is set, then completes
// with exactly 8 bytes holding it; the 8 bytes after them are untouched.
func TestPort5CounterReadLargerBuffer(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, tc := range []struct {
			name string
			open func() int
			arm  func(fd int)
		}{
			{"eventfd", func() int {
				fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
				require.NoError(t, err)
				return fd
			}, func(fd int) {
				_, err := unix.Write(fd, port5U64(1))
				require.NoError(t, err)
			}},
			{"eventfd-nonblock", func() int {
				fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
				require.NoError(t, err)
				return fd
			}, func(fd int) {
				_, err := unix.Write(fd, port5U64(1))
				require.NoError(t, err)
			}},
			{"timerfd", func() int {
				fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
				require.NoError(t, err)
				return fd
			}, func(fd int) {
				require.NoError(t, unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(int64(10 * time.Millisecond))}, nil))
			}},
		} {
			for _, off := range []int64{-1, 0} {
				fd := tc.open()
				buf := make([]byte, 16)
				for i := range buf {
					buf[i] = 0xa5
				}
				q := submitPending(t, r, Read(fd, buf, off).WithUser(tc.name))
				tc.arm(fd)
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.NoError(t, c.Err, "%s off %d", tc.name, off)
				assert.Equal(t, 8, c.N, "%s off %d: one counter", tc.name, off)
				assert.Equal(t, port5U64(1), buf[:8], "%s off %d: the counter (one event, one expiry)", tc.name, off)
				for i, b := range buf[8:] {
					assert.Equal(t, byte(0xa5), b, "%s off %d: byte %d past the counter written", tc.name, off, 8+i)
				}
				require.NoError(t, unix.Close(fd))
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort5CounterSmallBufferEINVAL: a read or a write of fewer than 8
// bytes on an eventfd, and a read of fewer than 8 on a timerfd, is
// EINVAL at once, whether the counter is set or not, as read(2) and
// write(2) say (checked first on the fd itself); the counter is left as
// it was. An eventfd in semaphore mode gives 1 per read, as many times
// as its count.
func TestPort5CounterSmallBufferEINVAL(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(tfd)

		// What the system calls say, on non-blocking twins of the fds.
		nb, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		require.NoError(t, err)
		defer unix.Close(nb)
		_, err = unix.Read(nb, make([]byte, 4))
		require.ErrorIs(t, err, unix.EINVAL, "read(2) of 4 bytes of an eventfd")
		_, err = unix.Write(nb, make([]byte, 4))
		require.ErrorIs(t, err, unix.EINVAL, "write(2) of 4 bytes to an eventfd")

		for _, set := range []bool{false, true} {
			if set {
				_, err := unix.Write(efd, port5U64(5))
				require.NoError(t, err)
				require.NoError(t, unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(1)}, nil))
				time.Sleep(time.Millisecond)
			}
			for _, op := range []struct {
				name string
				op   Op
			}{
				{"eventfd read 4", Read(efd, make([]byte, 4), -1)},
				{"eventfd read 7", Read(efd, make([]byte, 7), 0)},
				{"eventfd readv 4+3", Readv(efd, [][]byte{make([]byte, 4), make([]byte, 3)}, -1)},
				{"eventfd write 4", Write(efd, []byte{1, 0, 0, 0}, -1)},
				{"timerfd read 4", Read(tfd, make([]byte, 4), -1)},
			} {
				c := doOp(t, r, op.op)
				assert.ErrorIs(t, c.Err, unix.EINVAL, "%s (counter set: %v)", op.name, set)
				assert.Zero(t, c.N, op.name)
			}
		}
		// The counters are intact: 5 on the eventfd, an expiry on the timerfd.
		buf := make([]byte, 8)
		c := doOp(t, r, Read(efd, buf, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, port5U64(5), buf[:c.N], "eventfd counter")
		c = doOp(t, r, Read(tfd, buf, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, port5U64(1), buf[:c.N], "timerfd expirations")

		// Semaphore mode.
		sem, err := unix.Eventfd(3, unix.EFD_CLOEXEC|unix.EFD_SEMAPHORE)
		require.NoError(t, err)
		defer unix.Close(sem)
		for i := range 3 {
			buf := make([]byte, 16)
			c := doOp(t, r, Read(sem, buf, -1))
			require.NoError(t, c.Err)
			require.Equal(t, 8, c.N)
			assert.Equal(t, port5U64(1), buf[:8], "semaphore read %d", i)
		}
		q := submitPending(t, r, Read(sem, make([]byte, 8), -1).WithUser("sem empty"))
		both := doOpAmong(t, r, Write(sem, port5U64(2), -1), q) // either may come first
		require.NoError(t, both[0].Err)
		assert.Equal(t, 8, both[0].N)
		c = both[1]
		require.NoError(t, c.Err)
		assert.Equal(t, 8, c.N)
		c = doOp(t, r, Read(sem, buf, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, port5U64(1), buf, "the second of the two")
		assertNoMore(t, r)
	})
}

// TestPort5FifoNonblockRead: a read of a named FIFO opened O_NONBLOCK
// (the reader end alone, and O_RDWR), submitted before anything is
// written, waits and completes with the bytes written later, at offset 0
// (as liburing's test reads) and at the position; a canceled one
// moves nothing. When the last writer closes, a pending read completes
// with 0.
func TestPort5FifoNonblockRead(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		fifo := filepath.Join(t.TempDir(), "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(rd)
		wr, err := unix.Open(fifo, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		wrOpen := true
		defer func() {
			if wrOpen {
				unix.Close(wr)
			}
		}()
		rw, err := unix.Open(fifo, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		rwOpen := true
		defer func() {
			if rwOpen {
				unix.Close(rw)
			}
		}()

		for _, fd := range []int{rd, rw} {
			for _, off := range []int64{0, -1} {
				canceled := make([]byte, 32)
				q := submitPending(t, r, Read(fd, canceled, off))
				require.NoError(t, q.Cancel())
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.ErrorIs(t, c.Err, ErrCanceled)
				assert.Zero(t, c.N)

				buf := make([]byte, 32)
				q = submitPending(t, r, Read(fd, buf, off))
				_, err := unix.Write(wr, []byte("Hello\n"))
				require.NoError(t, err)
				c = reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.NoError(t, c.Err, "fd %d off %d: not EAGAIN", fd, off)
				assert.Equal(t, "Hello\n", string(buf[:c.N]))
				assert.Equal(t, make([]byte, 32), canceled, "the canceled read got nothing")
			}
		}

		// The last writer goes: a read of the reader-only end sees the end.
		// (The O_RDWR end is a writer itself, so it has no end to see.)
		rwOpen = false
		require.NoError(t, unix.Close(rw))
		q := submitPending(t, r, Read(rd, make([]byte, 8), -1))
		wrOpen = false
		require.NoError(t, unix.Close(wr))
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Zero(t, c.N, "end of the FIFO")
		assertNoMore(t, r)
	})
}
