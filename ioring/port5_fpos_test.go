//go:build linux

package ioring

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fifth round, the file position: ported from liburing's fpos test. A
// burst of reads (or writes) at the current position (off -1) on a
// regular file, all submitted before any completes, must read the file
// in order, chunk after chunk, and leave the file's position where the
// last one ended, as read(2) and write(2) one after the other would.
// liburing links the requests (IOSQE_IO_LINK) to get that order; in
// cancelio it is the stream order of the package doc, and it holds on
// the poll backend, whose workers run such reads, as on io_uring.

// port5FposFile returns an fd, read-only, of a file of size bytes whose
// byte i is port5FposByte(i), unlinked.
func port5FposFile(t *testing.T, size int) int {
	t.Helper()
	name := filepath.Join(t.TempDir(), "fpos")
	data := make([]byte, size)
	for i := range data {
		data[i] = port5FposByte(i)
	}
	require.NoError(t, os.WriteFile(name, data, 0o600))
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, os.Remove(name))
	return fd
}

// port5FposByte is the content of the fpos files: not periodic over any
// chunk size the tests use, so that a chunk read at the wrong place, or
// two chunks swapped, shows.
func port5FposByte(i int) byte { return byte(i*7 + i/251) }

// port5Pos returns fd's file position.
func port5Pos(t *testing.T, fd int) int64 {
	t.Helper()
	pos, err := unix.Seek(fd, 0, io.SeekCurrent)
	require.NoError(t, err)
	return pos
}

// TestPort5FposReadBurst: reads of 1 and of 7 bytes at the current
// position, submitted in batches that fill the ring, on a file of 5000
// bytes (fpos.c's test_read): every completion, taken in the order
// Reap delivers them, carries the next chunk of the file, the last ones
// report 0 at its end, and the file's position is the count of bytes
// delivered after each batch.
func TestPort5FposReadBurst(t *testing.T) {
	for _, bs := range []int{1, 7} {
		t.Run(fmt.Sprintf("block=%d", bs), func(t *testing.T) { port5FposReadBurst(t, bs) })
	}
}

func port5FposReadBurst(t *testing.T, bs int) {
	const size = 5000
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		fd := port5FposFile(t, size)
		var got []byte
		eof := false
		for batch := 0; !eof; batch++ {
			require.Less(t, batch, size/bs+2, "the file should have ended by now")
			n := r.Entries()
			ops := make([]Op, n)
			bufs := make([][]byte, n)
			for i := range ops {
				bufs[i] = make([]byte, bs)
				ops[i] = Read(fd, bufs[i], -1).WithUser(i)
			}
			reqs := make([]Request, n)
			k, err := r.SubmitBatch(ops, reqs)
			require.NoError(t, err)
			require.Equal(t, n, k)
			for i := range n {
				c := reapOne(t, r)
				require.NoError(t, c.Err, "read %d of batch %d", c.User, batch)
				require.Equal(t, i, c.User, "batch %d: read %d delivered %d-th", batch, c.User, i)
				require.LessOrEqual(t, c.N, bs)
				if c.N == 0 {
					eof = true
					continue
				}
				require.False(t, eof, "batch %d: read %d got %d bytes after one got the end", batch, i, c.N)
				got = append(got, bufs[i][:c.N]...)
			}
			require.Equal(t, int64(len(got)), port5Pos(t, fd), "file position after batch %d", batch)
		}
		require.Len(t, got, size)
		for i, b := range got {
			if b != port5FposByte(i) {
				t.Fatalf("byte %d read is %#x, the file's is %#x", i, b, port5FposByte(i))
			}
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort5FposWriteBurst: 1-byte writes at the current position, a
// ring's worth submitted at once (fpos.c's test_write): each reports 1,
// the file holds the bytes in submission order, and its position is
// their count. The same through Writev, and on a file opened O_APPEND,
// whose writes go to its end whatever the position says.
func TestPort5FposWriteBurst(t *testing.T) {
	for _, kind := range []string{"write", "writev", "append"} {
		t.Run(kind, func(t *testing.T) { port5FposWriteBurst(t, kind) })
	}
}

func port5FposWriteBurst(t *testing.T, kind string) {
	forEachBackend(t, 128, func(t *testing.T, r *Ring) {
		name := filepath.Join(t.TempDir(), "fpos-write")
		flags := unix.O_RDWR | unix.O_CREAT | unix.O_CLOEXEC
		pre := []byte{}
		if kind == "append" {
			pre = []byte("already here:")
			require.NoError(t, os.WriteFile(name, pre, 0o600))
			flags |= unix.O_APPEND
		}
		fd, err := unix.Open(name, flags, 0o600)
		require.NoError(t, err)
		defer unix.Close(fd)
		n := r.Entries()
		want := make([]byte, n)
		ops := make([]Op, n)
		for i := range ops {
			want[i] = 'A' + byte(i%7)
			if i%7 == 6 {
				want[i] = '\n'
			}
			if kind == "writev" {
				ops[i] = Writev(fd, [][]byte{want[i : i+1]}, -1).WithUser(i)
			} else {
				ops[i] = Write(fd, want[i:i+1], -1).WithUser(i)
			}
		}
		reqs := make([]Request, n)
		k, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, n, k)
		for i := range n {
			c := reapOne(t, r)
			require.NoError(t, c.Err, "write %d", c.User)
			assert.Equal(t, 1, c.N, "write %d", c.User)
			assert.Equal(t, i, c.User, "write %d delivered %d-th", c.User, i)
		}
		assert.Equal(t, int64(len(pre)+n), port5Pos(t, fd), "file position")
		got, err := os.ReadFile(name)
		require.NoError(t, err)
		assert.Equal(t, string(pre)+string(want), string(got))
		assertNoMore(t, r)
	})
}

// TestPort5FposCanceledReadsMoveNothing: a burst of reads at the current
// position with some canceled at random as they run: a read that
// reports ErrCanceled read nothing, so the file's position is the sum of
// what the others delivered, and their bytes, in delivery order, are the
// file from its start without a gap (fpos.c accepts -ECANCELED in the
// middle of its chain and checks the position against what was read).
// Reads at an offset in between do not move the position.
func TestPort5FposCanceledReadsMoveNothing(t *testing.T) {
	const size = 64 << 10
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		fd := port5FposFile(t, size)
		rng := rand.New(rand.NewPCG(5, 5))
		var got []byte
		canceled := 0
		for round := 0; len(got) < size; round++ {
			require.Less(t, round, 10000, "no progress")
			n := 1 + rng.IntN(32)
			bufs := make([][]byte, n)
			reqs := make([]Request, n)
			for i := range n {
				bufs[i] = make([]byte, 1+rng.IntN(97))
				var err error
				reqs[i], err = r.Submit(Read(fd, bufs[i], -1).WithUser(i))
				require.NoError(t, err)
			}
			// A pread in the middle of the stream's reads: its own
			// offset, not the position, and no effect on it.
			pbuf := make([]byte, 16)
			poff := int64(rng.IntN(size - 16))
			pq, err := r.Submit(Read(fd, pbuf, poff).WithUser("pread"))
			require.NoError(t, err)
			for i := range n {
				if rng.IntN(3) == 0 {
					if err := reqs[i].Cancel(); err != nil {
						require.ErrorIs(t, err, ErrNotFound)
					}
				}
			}
			results := map[int]Completion{}
			var order []int
			for range n + 1 {
				c := reapOne(t, r)
				if c.Req == pq {
					require.NoError(t, c.Err, "pread")
					require.Equal(t, 16, c.N, "pread")
					for j, b := range pbuf {
						require.Equal(t, port5FposByte(int(poff)+j), b, "pread byte %d", j)
					}
					continue
				}
				i := c.User.(int)
				_, dup := results[i]
				require.False(t, dup, "read %d completed twice", i)
				results[i] = c
				if c.Err == nil {
					order = append(order, i)
				}
			}
			last := -1
			for _, i := range order {
				require.Greater(t, i, last, "reads delivered with data out of submission order: %v", order)
				last = i
			}
			for i := range n {
				c := results[i]
				if c.Err != nil {
					require.ErrorIs(t, c.Err, ErrCanceled, "read %d", i)
					require.Zero(t, c.N, "a canceled read reports no bytes")
					canceled++
					continue
				}
				require.Positive(t, c.N, "read %d before the end of the file", i)
				for j, b := range bufs[i][:c.N] {
					require.Equal(t, port5FposByte(len(got)+j), b, "read %d byte %d (file offset %d)", i, j, len(got)+j)
				}
				got = append(got, bufs[i][:c.N]...)
				if len(got) == size {
					break
				}
			}
			require.Equal(t, int64(len(got)), port5Pos(t, fd), "round %d: the position is what was delivered", round)
		}
		t.Logf("%d reads canceled", canceled)
		// What is left is the end of the file.
		c := doOp(t, r, Read(fd, make([]byte, 8), -1))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N, "at the end")
		assertNoMore(t, r)
	})
}
