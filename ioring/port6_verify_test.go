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

// TestPort6FileVerify: see above.
func TestPort6FileVerify(t *testing.T) {
	path, file := port6PatternFile(t)
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for _, direct := range []bool{false, true} {
			flags := unix.O_RDONLY | unix.O_CLOEXEC
			if direct {
				flags |= unix.O_DIRECT
			}
			fd, err := unix.Open(path, flags, 0)
			if direct && err == unix.EINVAL {
				t.Logf("the file system of %s has no O_DIRECT: buffered only", path)
				continue
			}
			require.NoError(t, err)
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
