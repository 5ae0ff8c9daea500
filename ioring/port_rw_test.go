//go:build linux

package ioring

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's read-write, short-read, eof, file-verify and
// rw_merge tests: short reads and writes are reported as they happened,
// the end of a file is 0 bytes and no error, and errors are errnos named
// by an *IOError, on both backends.

// TestPortReadShortAndEOF: a read larger than what is left of a file
// reports what is left; at and beyond the end it reports 0, nil.
func TestPortReadShortAndEOF(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		data := []byte("0123456789")
		fd := tempFile(t, data)
		cases := []struct {
			off  int64
			want string
		}{
			{0, "0123456789"},
			{4, "456789"},
			{9, "9"},
			{10, ""},
			{11, ""},
			{1 << 40, ""},
		}
		for _, tc := range cases {
			buf := make([]byte, 4096)
			c := doOp(t, r, Read(fd, buf, tc.off))
			require.NoError(t, c.Err, "read at %d", tc.off)
			assert.Equal(t, tc.want, string(buf[:c.N]), "read at %d", tc.off)
		}
		// Readv spreads a short read over its buffers in order.
		a, b, cc := make([]byte, 4), make([]byte, 4), make([]byte, 4)
		c := doOp(t, r, Readv(fd, [][]byte{a, b, cc}, 3))
		require.NoError(t, c.Err)
		assert.Equal(t, 7, c.N)
		assert.Equal(t, "3456789", (string(a) + string(b) + string(cc))[:c.N])
		// Readv past the end.
		c = doOp(t, r, Readv(fd, [][]byte{a, b}, 100))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N)
		assertSettled(t, r)
	})
}

// TestPortReadHugeOffset: an offset whose end overflows a loff_t is the
// kernel's EINVAL (as pread says), never a panic or a hang.
func TestPortReadHugeOffset(t *testing.T) {
	fdProbe := tempFile(t, []byte("x"))
	_, perr := unix.Pread(fdProbe, make([]byte, 8), math.MaxInt64)
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("abc"))
		c := doOp(t, r, Read(fd, make([]byte, 8), math.MaxInt64))
		if perr != nil {
			assert.ErrorIs(t, c.Err, perr, "as pread at MaxInt64")
			assert.Zero(t, c.N)
		} else {
			assert.NoError(t, c.Err)
			assert.Zero(t, c.N)
		}
		c = doOp(t, r, Write(fd, []byte("x"), math.MaxInt64))
		assert.Error(t, c.Err, "a write at MaxInt64 cannot succeed")
		assert.Zero(t, c.N)
	})
}

// TestPortPipeEOF: a read pending on a pipe whose writer closes completes
// with 0, nil; reads after it too; a write to a pipe whose reader closed
// is EPIPE (no signal kills the test).
func TestPortPipeEOF(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		rd, wr := p[0], p[1]
		defer unix.Close(rd)
		q := submitPending(t, r, Read(rd, make([]byte, 8), -1))
		_, err := unix.Write(wr, []byte("ab"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		assert.Equal(t, 2, c.N)

		q = submitPending(t, r, Read(rd, make([]byte, 8), -1))
		require.NoError(t, unix.Close(wr))
		c = reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.NoError(t, c.Err, "end of stream")
		assert.Zero(t, c.N)
		c = doOp(t, r, Read(rd, make([]byte, 8), -1))
		assert.NoError(t, c.Err)
		assert.Zero(t, c.N)

		var p2 [2]int
		require.NoError(t, unix.Pipe2(p2[:], unix.O_CLOEXEC))
		require.NoError(t, unix.Close(p2[0]))
		defer unix.Close(p2[1])
		c = doOp(t, r, Write(p2[1], []byte("x"), -1))
		assert.ErrorIs(t, c.Err, unix.EPIPE)
		assert.Zero(t, c.N)
		assertNoMore(t, r)
	})
}

// TestPortShortWrite: a write into a pipe with room for part of it
// reports at least the bytes that went in and never more than asked;
// what it reports is what the reader gets.
func TestPortShortWrite(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		fillPipe(t, wr)
		big := make([]byte, 256<<10)
		for i := range big {
			big[i] = byte(i)
		}
		q, err := r.Submit(Write(wr, big, -1))
		require.NoError(t, err)
		// Drain the pipe while the write is pending, then cancel it.
		got := 0
		buf := make([]byte, 64<<10)
		for got < 96<<10 {
			n, err := unix.Read(rd, buf)
			require.NoError(t, err)
			got += n
		}
		q.Cancel()
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.LessOrEqual(t, c.N, len(big))
		if c.Err == nil {
			assert.Positive(t, c.N)
		} else {
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}
		assertNoMore(t, r)
	})
}

// TestPortErrnos: the kernel's errno for a read or write it refuses is the
// completion's, named by an *IOError, and reports no bytes.
func TestPortErrnos(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(dfd)
		c := doOp(t, r, Read(dfd, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.EISDIR, "read of a directory")
		var ioe *IOError
		if assert.ErrorAs(t, c.Err, &ioe) {
			assert.Equal(t, dfd, ioe.FD)
		}
		assert.Zero(t, c.N)

		name := filepath.Join(dir, "ro")
		require.NoError(t, os.WriteFile(name, []byte("data"), 0o600))
		ro, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(ro)
		c = doOp(t, r, Write(ro, []byte("x"), 0))
		assert.ErrorIs(t, c.Err, unix.EBADF, "write to a read-only fd")
		assert.Zero(t, c.N)

		wo, err := unix.Open(name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(wo)
		c = doOp(t, r, Read(wo, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.EBADF, "read from a write-only fd")
		assert.Zero(t, c.N)

		// An fd that is not open at all.
		c = doOp(t, r, Read(ro+1000, make([]byte, 8), 0))
		assert.ErrorIs(t, c.Err, unix.EBADF, "read of a closed fd")
		c = doOp(t, r, Read(ro+1000, make([]byte, 8), -1))
		assert.ErrorIs(t, c.Err, unix.EBADF, "stream read of a closed fd")
		c = doOp(t, r, Fsync(ro+1000))
		assert.ErrorIs(t, c.Err, unix.EBADF, "fsync of a closed fd")
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPortWriteThenReadBack: writes at offsets, a write extending the
// file, then reads at offsets see exactly what was written (file-verify).
func TestPortWriteThenReadBack(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		fd := tempFile(t, nil)
		const chunk, n = 512, 16
		ops := make([]Op, n)
		reqs := make([]Request, n)
		for i := range ops {
			b := make([]byte, chunk)
			for j := range b {
				b[j] = byte(i)
			}
			ops[i] = Write(fd, b, int64(i*chunk)).WithUser(i)
		}
		done, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, n, done)
		for range n {
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			require.Equal(t, chunk, c.N)
		}
		bufs := make([][]byte, n)
		for i := range ops {
			bufs[i] = make([]byte, chunk)
			ops[i] = Read(fd, bufs[i], int64(i*chunk)).WithUser(i)
		}
		done, err = r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, n, done)
		for range n {
			c := reapOne(t, r)
			require.NoError(t, c.Err)
			require.Equal(t, chunk, c.N)
			i := c.User.(int)
			for _, v := range bufs[i] {
				if v != byte(i) {
					t.Fatalf("chunk %d holds %d", i, v)
				}
			}
		}
		assertNoMore(t, r)
	})
}
