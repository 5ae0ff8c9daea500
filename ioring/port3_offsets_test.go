//go:build linux

package ioring

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's lfs-openat, lfs-openat-write and the 32-bit
// offset cases of its read-write test: files beyond 2 GiB and 4 GiB, and
// offsets on each side of 2^31, 2^32 and 2^63, on every backend and on
// 32-bit platforms too (GOARCH=386), where an offset is two words on its
// way to the kernel and a file over 2 GiB needs O_LARGEFILE.

// port3BigOffsets are offsets around the 32-bit boundaries, as int64 so
// that they build on 32-bit platforms.
var port3BigOffsets = []int64{
	1<<31 - 1, 1 << 31, 1<<31 + 1,
	1<<32 - 1, 1 << 32, 1<<32 + 1,
	1<<40 + 3,
}

// port3Sparse returns the path and an fd (read-write) of an empty file in
// the test's directory.
func port3Sparse(t *testing.T) (string, int) {
	name := filepath.Join(t.TempDir(), "big")
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return name, fd
}

// TestPort3OffsetsAround32Bits checks that reads and writes at offsets on
// each side of 2^31 and 2^32 (and 2^40) reach exactly that byte of a
// sparse file, through Read and Write, Readv and Writev, ReadFixed and
// WriteFixed, Ring.ReadAt and WriteAt and a File's ReadAt and WriteAt: what
// the ring writes there pread(2) finds there, and what pwrite(2) put there
// the ring reads back.
func TestPort3OffsetsAround32Bits(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		_, fd := port3Sparse(t)
		fixed := make([]byte, 64)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		for i, off := range port3BigOffsets {
			name := strconv.FormatInt(off, 10)
			want := []byte("w" + name)
			c := doOp(t, r, Write(fd, want, off))
			require.NoError(t, c.Err, "write at %s", name)
			require.Equal(t, len(want), c.N, "write at %s", name)
			got := make([]byte, len(want))
			n, err := unix.Pread(fd, got, off)
			require.NoError(t, err)
			assert.Equal(t, string(want), string(got[:n]), "pread at %s after the ring's write", name)

			want2 := []byte("p" + name)
			_, err = unix.Pwrite(fd, want2, off)
			require.NoError(t, err)
			got = make([]byte, len(want2))
			c = doOp(t, r, Read(fd, got, off))
			require.NoError(t, c.Err)
			assert.Equal(t, string(want2), string(got[:c.N]), "ring read at %s", name)

			// The byte before the offset is another: what the ring read
			// began exactly at off.
			if i == 0 || port3BigOffsets[i-1] != off-1 {
				b := []byte{0xff}
				c = doOp(t, r, Read(fd, b, off-1))
				require.NoError(t, c.Err)
				assert.Equal(t, 1, c.N)
				assert.Zero(t, b[0], "the hole before %s", name)
			}

			// Vectored, split across two buffers.
			a, b := []byte("vv"), []byte("-"+name)
			c = doOp(t, r, Writev(fd, [][]byte{a, b}, off))
			require.NoError(t, c.Err)
			require.Equal(t, len(a)+len(b), c.N)
			ra, rb := make([]byte, 1), make([]byte, len(a)+len(b)-1)
			c = doOp(t, r, Readv(fd, [][]byte{ra, rb}, off))
			require.NoError(t, c.Err)
			assert.Equal(t, "vv-"+name, string(ra)+string(rb[:c.N-1]))

			// Registered buffer.
			w := copy(fixed, "f"+name)
			c = doOp(t, r, WriteFixed(fd, fixed[:w], off, 0))
			require.NoError(t, c.Err)
			require.Equal(t, w, c.N)
			got = make([]byte, w)
			_, err = unix.Pread(fd, got, off)
			require.NoError(t, err)
			assert.Equal(t, "f"+name, string(got))
			clear(fixed)
			c = doOp(t, r, ReadFixed(fd, fixed[:w], off, 0))
			require.NoError(t, c.Err)
			assert.Equal(t, "f"+name, string(fixed[:c.N]))

			// The synchronous forms.
			k, err := r.WriteAt(context.Background(), fd, []byte("s"+name), off)
			require.NoError(t, err)
			require.Equal(t, len(name)+1, k)
			got = make([]byte, len(name)+1)
			k, err = r.ReadAt(context.Background(), fd, got, off)
			require.NoError(t, err)
			assert.Equal(t, "s"+name, string(got[:k]))
		}

		// A File over the same fd (a duplicate: the File owns it).
		dfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		require.NoError(t, err)
		f := NewFile(r, dfd, "big")
		for _, off := range port3BigOffsets {
			name := strconv.FormatInt(off, 10)
			k, err := f.WriteAt([]byte("F"+name), off)
			require.NoError(t, err)
			require.Equal(t, len(name)+1, k)
			got := make([]byte, len(name)+1)
			k, err = f.ReadAt(got, off)
			require.NoError(t, err)
			assert.Equal(t, "F"+name, string(got[:k]))
		}
		require.NoError(t, f.Close())

		// The file's size is the last write's end, as fstat says.
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st))
		last := port3BigOffsets[len(port3BigOffsets)-1]
		assert.Equal(t, last+int64(len("vv-"+strconv.FormatInt(last, 10))), st.Size)
		assertNoMore(t, r)
	})
}

// TestPort3OffsetsNear63Bits checks that offsets at the top of the int64
// range give the kernel's own answer on every backend (the errno pwrite(2)
// and pread(2) give at that offset), never a panic, a hang or an offset
// taken as the current position; and that offsets below -1 are refused up
// front (ErrInvalid), -2 and math.MinInt64 included.
func TestPort3OffsetsNear63Bits(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		_, fd := port3Sparse(t)
		_, err := unix.Pwrite(fd, []byte("head"), 0)
		require.NoError(t, err)
		for _, off := range []int64{math.MaxInt64 - 4096, math.MaxInt64 - 1, math.MaxInt64, 1 << 62, 1<<63 - 1<<40} {
			name := strconv.FormatInt(off, 10)
			_, werr := unix.Pwrite(fd, []byte("x"), off)
			c := doOp(t, r, Write(fd, []byte("x"), off))
			if werr != nil {
				assert.ErrorIs(t, c.Err, werr, "write at %s: as pwrite", name)
				assert.Zero(t, c.N)
			} else {
				assert.NoError(t, c.Err, "write at %s: pwrite took it", name)
			}
			rbuf := make([]byte, 8)
			_, rerr := unix.Pread(fd, rbuf, off)
			c = doOp(t, r, Read(fd, rbuf, off))
			if rerr != nil {
				assert.ErrorIs(t, c.Err, rerr, "read at %s: as pread", name)
			} else {
				assert.NoError(t, c.Err, "read at %s", name)
			}
			assert.LessOrEqual(t, c.N, 1, "read at %s", name)
		}
		// Nothing went to the current position: the file's head is intact
		// and its position still 0.
		head := make([]byte, 4)
		c := doOp(t, r, Read(fd, head, -1))
		require.NoError(t, c.Err)
		assert.Equal(t, "head", string(head[:c.N]))

		for _, off := range []int64{-2, -3, math.MinInt32, math.MinInt64} {
			_, err := r.Submit(Read(fd, make([]byte, 1), off))
			assert.ErrorIs(t, err, ErrInvalid, "read at %d", off)
			_, err = r.Submit(Write(fd, []byte("x"), off))
			assert.ErrorIs(t, err, ErrInvalid, "write at %d", off)
			op := Read(fd, make([]byte, 1), 0)
			op.SetOffset(off)
			_, err = r.Submit(op)
			assert.ErrorIs(t, err, ErrInvalid, "SetOffset(%d)", off)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort3LargeFileOpenAt checks that OpenAt opens a file larger than
// 2 GiB and larger than 4 GiB on every backend, for reading and for
// writing (liburing's lfs-openat and lfs-openat-write: io_uring adds
// O_LARGEFILE itself, and a 32-bit caller's open without it fails with
// EOVERFLOW), that Statx reports its size, and that the new fd reads and
// writes beyond 4 GiB.
func TestPort3LargeFileOpenAt(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, size := range []int64{3 << 30, 5 << 30} {
			name, fd := port3Sparse(t)
			require.NoError(t, unix.Ftruncate(fd, size))
			_, err := unix.Pwrite(fd, []byte("tail"), size-4)
			require.NoError(t, err)

			for _, flags := range []int{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR} {
				_, err := unix.Pwrite(fd, []byte("tail"), size-4)
				require.NoError(t, err)
				c := doOp(t, r, OpenAt(unix.AT_FDCWD, name, flags, 0))
				require.NoError(t, c.Err, "open of a %d-byte file with flags %#x", size, flags)
				nfd := c.N
				require.Positive(t, nfd)
				if flags != unix.O_WRONLY {
					got := make([]byte, 4)
					c = doOp(t, r, Read(nfd, got, size-4))
					assert.NoError(t, c.Err)
					assert.Equal(t, "tail", string(got[:c.N]))
				}
				if flags != unix.O_RDONLY {
					c = doOp(t, r, Write(nfd, []byte("TAIL"), size-4))
					assert.NoError(t, c.Err)
					assert.Equal(t, 4, c.N)
				}
				c = doOp(t, r, Close(nfd))
				assert.NoError(t, c.Err)
			}

			// Relative to a directory fd, and with O_CREAT on the existing
			// file.
			dfd, err := unix.Open(filepath.Dir(name), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			c := doOp(t, r, OpenAt(dfd, filepath.Base(name), unix.O_RDWR|unix.O_CREAT, 0o600))
			unix.Close(dfd)
			require.NoError(t, c.Err, "open in a directory fd")
			require.NoError(t, unix.Close(c.N))

			var stx unix.Statx_t
			c = doOp(t, r, Statx(unix.AT_FDCWD, name, 0, unix.STATX_SIZE, &stx))
			require.NoError(t, c.Err)
			assert.Equal(t, uint64(size), stx.Size)
			got := make([]byte, 4)
			_, err = unix.Pread(fd, got, size-4)
			require.NoError(t, err)
			assert.Equal(t, "TAIL", string(got))
		}
		assertNoMore(t, r)
	})
}

// TestPort3LargeFileThroughOS checks the same through os.File's view: a
// file the ring wrote beyond 4 GiB has the size os.Stat reports, and
// ReadAt of os.File finds the ring's bytes there (the offset was not cut
// to 32 bits anywhere on the way).
func TestPort3LargeFileThroughOS(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		name := filepath.Join(t.TempDir(), "big")
		c := doOp(t, r, OpenAt(unix.AT_FDCWD, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600))
		require.NoError(t, c.Err)
		fd := c.N
		defer unix.Close(fd)
		const off = int64(1)<<32 + 5
		c = doOp(t, r, Write(fd, []byte("beyond"), off))
		require.NoError(t, c.Err)
		require.Equal(t, 6, c.N)
		fi, err := os.Stat(name)
		require.NoError(t, err)
		assert.Equal(t, off+6, fi.Size())
		f, err := os.Open(name)
		require.NoError(t, err)
		defer f.Close()
		got := make([]byte, 6)
		_, err = f.ReadAt(got, off)
		require.NoError(t, err)
		assert.Equal(t, "beyond", string(got))
		_, err = f.ReadAt(got, 1<<32-1)
		require.NoError(t, err)
		assert.Equal(t, []byte{0, 0, 0, 0, 0, 0}, got, "the hole just below 4 GiB")
	})
}
