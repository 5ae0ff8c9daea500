//go:build linux

package ioring

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, reading a file back: ported from liburing's file-verify.
// A file whose every 4-byte word holds its own offset / 4 is read back
// in chunks, 16 reads in flight at once, into one buffer, into 8 or 16
// buffers (a scatter read), and into registered buffers; between the
// passes parts of the file are dropped from the page cache, so that
// some reads go to the disk. Every word must come back at its place.
// Buffered, and with O_DIRECT where the file system has it (the read
// then needs aligned buffers: the registered ones and the vectors are
// cut from page-aligned memory).

const (
	port6FileSize  = 4 << 20
	port6ChunkSize = 128 << 10
	port6Batch     = 16
)

// port6PatternFile writes the pattern file and returns its path and
// its contents.
func port6PatternFile(t *testing.T) (string, []byte) {
	path := filepath.Join(t.TempDir(), "file-verify")
	b := make([]byte, port6FileSize)
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], uint32(i/4))
	}
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path, b
}

// port6Aligned returns n bytes that start on a page boundary.
func port6Aligned(n int) []byte {
	b := make([]byte, n+4096)
	skip := int(-uintptr(unsafe.Pointer(&b[0])) & 4095)
	return b[skip : skip+n : skip+n]
}

// port6Verify checks that b holds the pattern of the file at off, which
// file holds.
func port6Verify(t *testing.T, file, b []byte, off int64, what string) {
	t.Helper()
	if bytes.Equal(b, file[off:off+int64(len(b))]) {
		return
	}
	for i := 0; i < len(b); i += 4 {
		want := uint32((off + int64(i)) / 4)
		if got := binary.NativeEndian.Uint32(b[i:]); got != want {
			t.Fatalf("%s: at %d found %d, want %d", what, off+int64(i), got, want)
		}
	}
	t.Fatalf("%s: at %d: a difference in the last bytes", what, off)
}

// port6Uncache drops some chunks of fd from the page cache: at the
// front, the middle or the end of every other chunk.
func port6Uncache(t *testing.T, fd int, pass int) {
	for off := int64(0); off+port6ChunkSize <= port6FileSize; off += port6ChunkSize {
		where := (off/port6ChunkSize + int64(pass)) % 4
		if where == 0 {
			continue
		}
		at := off + (where-1)*(port6ChunkSize-32<<10)/2
		require.NoError(t, unix.Fadvise(fd, at, 32<<10, unix.FADV_DONTNEED))
	}
}

// port6Open opens path with flags, and O_DIRECT when direct; a file
// system without O_DIRECT says so in the log and ok is false.
func port6Open(t *testing.T, path string, flags int, direct bool) (fd int, ok bool) {
	t.Helper()
	if direct {
		flags |= unix.O_DIRECT
	}
	fd, err := unix.Open(path, flags, 0)
	if direct && err == unix.EINVAL {
		t.Logf("the file system of %s has no O_DIRECT: buffered only", path)
		return -1, false
	}
	require.NoError(t, err)
	return fd, true
}

// TestPort6FileVerify: see above.
func TestPort6FileVerify(t *testing.T) {
	path, file := port6PatternFile(t)
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for _, direct := range []bool{false, true} {
			fd, ok := port6Open(t, path, unix.O_RDONLY|unix.O_CLOEXEC, direct)
			if !ok {
				continue
			}
			bufs := make([][]byte, port6Batch)
			for i := range bufs {
				bufs[i] = port6Aligned(port6ChunkSize)
			}
			require.NoError(t, r.RegisterBuffers(bufs))
			for pass, mode := range []string{"read", "readv8", "readv16", "fixed"} {
				what := fmt.Sprintf("direct=%v %s", direct, mode)
				port6Uncache(t, fd, pass)
				for off := int64(0); off < port6FileSize; off += port6Batch * port6ChunkSize {
					ops := make([]Op, port6Batch)
					for i := range ops {
						at := off + int64(i)*port6ChunkSize
						buf := bufs[i]
						clear(buf)
						switch mode {
						case "read":
							ops[i] = Read(fd, buf, at)
						case "readv8", "readv16":
							n := 8
							if mode == "readv16" {
								n = 16
							}
							vecs := make([][]byte, n)
							for j := range vecs {
								vecs[j] = buf[j*len(buf)/n : (j+1)*len(buf)/n]
							}
							ops[i] = Readv(fd, vecs, at)
						case "fixed":
							ops[i] = ReadFixed(fd, buf, at, i)
						}
						ops[i] = ops[i].WithUser(i)
					}
					reqs := make([]Request, port6Batch)
					n, err := r.SubmitBatch(ops, reqs)
					require.NoError(t, err, what)
					require.Equal(t, port6Batch, n)
					got := port6Reap(t, r, port6Batch)
					for i, q := range reqs {
						c := got[q]
						require.NoError(t, c.Err, "%s at %d", what, off+int64(i)*port6ChunkSize)
						require.Equal(t, port6ChunkSize, c.N, "%s at %d: a whole chunk", what, off+int64(i)*port6ChunkSize)
						port6Verify(t, file, bufs[i], off+int64(i)*port6ChunkSize, what)
					}
				}
			}
			require.NoError(t, r.UnregisterBuffers())
			require.NoError(t, unix.Close(fd))
		}
		assertNoMore(t, r)
	})
}

// TestPort6FixedSegments ports fixed-seg.c and fixed-buf-iter.c. A
// registered buffer that starts 0, 512, 1024 or 4096 bytes into a
// page-aligned region (liburing's vec_off), and ReadFixed at offset 0
// of a file of random bytes into parts of it at several places and
// lengths (4 KiB at its start, 8 KiB and 4 KiB a page into the region,
// which crosses its pages): each read completes with its full length
// and holds the file's first bytes. With O_DIRECT where the file system
// has it (every offset is a multiple of 512), buffered otherwise too.
// Then, as fixed-buf-iter does, a ReadFixed from the file and a
// WriteFixed of the same registered bytes to another file copy a page
// across intact.
func TestPort6FixedSegments(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fixed-seg")
	want := make([]byte, 128<<10)
	_, err := unix.Getrandom(want, 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, want, 0o644))
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		region := port6Aligned(512 << 10)
		for _, direct := range []bool{false, true} {
			fd, ok := port6Open(t, path, unix.O_RDWR|unix.O_CLOEXEC, direct)
			if !ok {
				continue
			}
			for _, vecOff := range []int{0, 512, 1024, 4096} {
				require.NoError(t, r.RegisterBuffers([][]byte{region[vecOff:]}))
				for _, part := range []struct{ off, n int }{{vecOff, 4096}, {4096, 8192}, {4096, 4096}} {
					what := fmt.Sprintf("direct=%v vec_off=%d: %d bytes at %d", direct, vecOff, part.n, part.off)
					clear(region)
					c := doOp(t, r, ReadFixed(fd, region[part.off:part.off+part.n], 0, 0))
					require.NoError(t, c.Err, what)
					require.Equal(t, part.n, c.N, what)
					require.True(t, bytes.Equal(want[:part.n], region[part.off:part.off+part.n]), what)
				}
				require.NoError(t, r.UnregisterBuffers())
			}
			require.NoError(t, unix.Close(fd))
		}

		// fixed-buf-iter: read into a registered buffer, write it out.
		in, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(in)
		out := tempFile(t, nil)
		bufs := [][]byte{make([]byte, 4096), make([]byte, 4096)}
		require.NoError(t, r.RegisterBuffers(bufs))
		c := doOp(t, r, ReadFixed(in, bufs[0], 0, 0))
		require.NoError(t, c.Err)
		require.Equal(t, 4096, c.N)
		c = doOp(t, r, WriteFixed(out, bufs[0], 0, 0))
		require.NoError(t, c.Err)
		require.Equal(t, 4096, c.N)
		got := make([]byte, 4096)
		n, err := unix.Pread(out, got, 0)
		require.NoError(t, err)
		require.Equal(t, 4096, n)
		require.Equal(t, want[:4096], got)
		require.NoError(t, r.UnregisterBuffers())
	})
}
