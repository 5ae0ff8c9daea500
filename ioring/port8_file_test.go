//go:build linux

package ioring

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Eighth round, regular files: ported from liburing's eeed8b54e0df.c
// (a read of a block that is not in the page cache, which io_uring's
// non-blocking first attempt cannot serve: -EAGAIN handling) and
// 500f9fbadef8.c (a ring of one entry writing 4096 blocks one after
// another with submit-and-wait, O_DIRECT: no hang, every write whole).

// port8Aligned returns n bytes aligned on 4096 (for O_DIRECT).
func port8Aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & 4095)
	return b[off : off+n : off+n]
}

// port8DiskFile creates a file in a directory of the test, filled with
// data and flushed, and returns its path.
func port8DiskFile(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "blocks")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	f, err := os.Open(path)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	f.Close()
	return path
}

// TestPort8ReadUncached ports eeed8b54e0df.c: a file's pages are dropped
// from the page cache (fsync, then POSIX_FADV_DONTNEED), so a read must go
// to the disk; io_uring's first, non-blocking attempt says EAGAIN
// inside the kernel. liburing asked for RWF_NOWAIT and accepted -EAGAIN or
// the whole block; the ring has no RWF_NOWAIT, so a read of such a file
// completes with all of its data, never with EAGAIN: Read and Readv at an
// offset and at the current position, on both backends, each after the
// pages were dropped again.
func TestPort8ReadUncached(t *testing.T) {
	const block = 4096
	data := make([]byte, 4*block)
	for i := range data {
		data[i] = byte(i*7 + i/block)
	}
	path := port8DiskFile(t, data)
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		drop := func() {
			require.NoError(t, unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED))
		}

		drop()
		buf := make([]byte, block)
		c := doOp(t, r, Read(fd, buf, block))
		require.NoError(t, c.Err, "an uncached read at an offset")
		assert.Equal(t, block, c.N)
		assert.True(t, bytes.Equal(data[block:2*block], buf), "the second block")

		drop()
		a, b := make([]byte, 1000), make([]byte, 3*block)
		c = doOp(t, r, Readv(fd, [][]byte{a, b}, 2*block-1000))
		require.NoError(t, c.Err, "an uncached Readv")
		assert.Equal(t, 1000+2*block, c.N, "up to the end of the file")
		assert.True(t, bytes.Equal(data[2*block-1000:2*block], a))
		assert.True(t, bytes.Equal(data[2*block:], b[:2*block]))

		drop()
		c = doOp(t, r, Read(fd, buf, -1))
		require.NoError(t, c.Err, "an uncached read at the current position")
		assert.Equal(t, block, c.N)
		assert.True(t, bytes.Equal(data[:block], buf), "the first block")
		pos, err := unix.Seek(fd, 0, 1)
		require.NoError(t, err)
		assert.EqualValues(t, block, pos, "the read moved the position")

		// Many at once, each its own block, all uncached.
		drop()
		bufs := make([][]byte, 4)
		reqs := make([]Request, 4)
		ops := make([]Op, 4)
		for i := range ops {
			bufs[i] = make([]byte, block)
			ops[i] = Read(fd, bufs[i], int64(i*block)).WithUser(i)
		}
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, 4, n)
		for _, c := range port7ReapAll(t, r, 4) {
			i := c.User.(int)
			require.NoError(t, c.Err, "block %d", i)
			assert.Equal(t, block, c.N, "block %d", i)
			assert.True(t, bytes.Equal(data[i*block:(i+1)*block], bufs[i]), "block %d", i)
		}
		assertSettled(t, r)
	})
}

// TestPort8SingleDepthDirectWrites ports 500f9fbadef8.c: on the smallest
// ring (2 entries; liburing used 1), write 256 blocks of 4096 bytes to
// an O_DIRECT file one after another, each with SubmitAndReap waiting for
// its completion: none hangs, none is refused (ErrFull: the slot of the
// one before is free once its completion is delivered), every write is
// whole. Then the blocks are read back the same way, through Start and
// Wait, and checked. Where the filesystem refuses O_DIRECT, the same runs
// through the page cache.
func TestPort8SingleDepthDirectWrites(t *testing.T) {
	const block, blocks = 4096, 256
	forEachBackend(t, 2, func(t *testing.T, r *Ring) {
		path := filepath.Join(t.TempDir(), "direct")
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EINVAL) {
			t.Logf("O_DIRECT refused here: buffered writes instead")
			fd, err = unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		}
		require.NoError(t, err)
		defer unix.Close(fd)

		buf := port8Aligned(block)
		reqs := make([]Request, 1)
		dst := make([]Completion, 2)
		for i := 0; i < blocks; i++ {
			for j := range buf {
				buf[j] = byte(i + j/512)
			}
			m, n, err := r.SubmitAndReap([]Op{Writev(fd, [][]byte{buf}, int64(i*block))}, reqs, dst, -1)
			require.NoError(t, err, "block %d", i)
			require.Equal(t, 1, m, "block %d submitted", i)
			require.Equal(t, 1, n, "block %d: one completion", i)
			require.Equal(t, reqs[0], dst[0].Req)
			require.NoError(t, dst[0].Err, "block %d", i)
			require.Equal(t, block, dst[0].N, "block %d written whole", i)
		}
		var st unix.Stat_t
		require.NoError(t, unix.Fstat(fd, &st))
		assert.EqualValues(t, blocks*block, st.Size)

		for i := 0; i < blocks; i++ {
			q, err := r.Start(Read(fd, buf, int64(i*block)))
			require.NoError(t, err, "read %d", i)
			c, err := q.Wait(context.Background())
			require.NoError(t, err)
			require.NoError(t, c.Err, "read %d", i)
			require.Equal(t, block, c.N, "read %d whole", i)
			for j, v := range buf {
				if v != byte(i+j/512) {
					t.Fatalf("block %d byte %d: %d, want %d", i, j, v, byte(i+j/512))
				}
			}
		}
		assertSettled(t, r)
	})
}
