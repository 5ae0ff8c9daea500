//go:build linux

package ioring

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, files: ported from liburing's short-read, close-opath,
// statx, fsync, pipe-eof, stdout and tty-write-dpoll. Each behaviour is
// the file's own, so both backends must give the same results.

// TestPort6ShortRead ports short-read.c: a Readv of 4096 bytes at offset
// 0 of a 1024-byte file completes with 1024, the file's bytes; a Read
// from the middle gets the rest, and one at the end gets 0. A short read
// of a regular file is the end of the file, never an error or a wait.
func TestPort6ShortRead(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		data := port6Pattern(1024, 6)
		fd := tempFile(t, data)
		buf := make([]byte, 4096)
		c := doOp(t, r, Readv(fd, [][]byte{buf}, 0))
		require.NoError(t, c.Err)
		require.Equal(t, 1024, c.N)
		assert.Equal(t, data, buf[:1024])

		clear(buf)
		c = doOp(t, r, Read(fd, buf, 512))
		require.NoError(t, c.Err)
		require.Equal(t, 512, c.N)
		assert.Equal(t, data[512:], buf[:512])

		c = doOp(t, r, Read(fd, buf, 1024))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N, "at the end of the file")
		c = doOp(t, r, Readv(fd, [][]byte{buf[:100], buf[100:]}, 4000))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N, "past the end of the file")
	})
}

// TestPort6CloseOPath ports close-opath.c: the Close operation closes an
// fd opened O_RDONLY and one opened O_PATH (which has no file
// operations of its own: an old kernel's io_uring refused it), each
// completing with 0, and the fd is gone afterwards. An O_PATH fd opened
// through the ring is closed through it the same way, after a Statx
// with AT_EMPTY_PATH has used it. A second Close of the same number is
// EBADF.
func TestPort6CloseOPath(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		for _, fl := range []struct {
			name  string
			flags int
		}{{"O_RDONLY", unix.O_RDONLY}, {"O_PATH", unix.O_PATH}} {
			fd, err := unix.Open(dir, fl.flags|unix.O_CLOEXEC, 0)
			require.NoError(t, err, fl.name)
			c := doOp(t, r, Close(fd))
			require.NoError(t, c.Err, "Close of an fd opened %s", fl.name)
			assert.Zero(t, c.N)
			_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			assert.ErrorIs(t, err, unix.EBADF, "%s: the fd is closed", fl.name)
		}

		c := doOp(t, r, OpenAt(unix.AT_FDCWD, dir, unix.O_PATH|unix.O_DIRECTORY, 0))
		require.NoError(t, c.Err)
		fd := c.N
		require.Positive(t, fd)
		var st unix.Statx_t
		c = doOp(t, r, Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_TYPE, &st))
		require.NoError(t, c.Err, "statx of an O_PATH fd")
		assert.Equal(t, uint16(unix.S_IFDIR), st.Mode&unix.S_IFMT)
		c = doOp(t, r, Close(fd))
		require.NoError(t, c.Err)
		c = doOp(t, r, Close(fd))
		assert.ErrorIs(t, c.Err, unix.EBADF, "a second close of the same fd")
	})
}

// TestPort6Statx ports statx.c: Statx of a path (relative to AT_FDCWD),
// and of an fd with "" and AT_EMPTY_PATH, fills exactly what statx(2)
// fills for the same file, field for field. liburing's cases with a bad
// buffer or path pointer (EFAULT) cannot be written against this API: a
// nil Statx_t is refused at submission with ErrInvalid instead. A path
// that does not exist is ENOENT.
func TestPort6Statx(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		path := filepath.Join(t.TempDir(), ".statx")
		require.NoError(t, os.WriteFile(path, port6Pattern(4096, 7), 0o644))

		var got, want unix.Statx_t
		c := doOp(t, r, Statx(unix.AT_FDCWD, path, 0, unix.STATX_ALL, &got))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N)
		require.NoError(t, unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_ALL, &want))
		assert.Equal(t, want, got, "statx through the ring and statx(2)")
		assert.Equal(t, uint64(4096), got.Size)

		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		got, want = unix.Statx_t{}, unix.Statx_t{}
		c = doOp(t, r, Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_ALL, &got))
		require.NoError(t, c.Err)
		require.NoError(t, unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_ALL, &want))
		assert.Equal(t, want, got, "statx of an fd through the ring and statx(2)")

		_, err = r.Submit(Statx(unix.AT_FDCWD, path, 0, unix.STATX_ALL, nil))
		assert.ErrorIs(t, err, ErrInvalid, "a nil Statx_t")
		c = doOp(t, r, Statx(unix.AT_FDCWD, path+".missing", 0, unix.STATX_ALL, &got))
		assert.ErrorIs(t, c.Err, unix.ENOENT)
		assertNoMore(t, r)
	})
}

// TestPort6Fsync ports fsync.c: an Fsync of a fresh file completes with
// 0; so does one after four writes of 4 KiB at offsets 0..12 KiB (liburing
// orders them with IOSQE_IO_DRAIN; here the writes complete first, in
// any order, then the fsync runs), and the file holds the writes. An
// fsync of a pipe, which has nothing to flush, is EINVAL, as fsync(2)
// says; of a closed fd, EBADF.
func TestPort6Fsync(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd := tempFile(t, nil)
		c := doOp(t, r, Fsync(fd))
		require.NoError(t, c.Err)
		assert.Zero(t, c.N)

		data := port6Pattern(4*4096, 8)
		var qs []Request
		for i := range 4 {
			q, err := r.Submit(Writev(fd, [][]byte{data[i*4096 : (i+1)*4096]}, int64(i*4096)))
			require.NoError(t, err)
			qs = append(qs, q)
		}
		got := port6Reap(t, r, 4)
		for i, q := range qs {
			require.NoError(t, got[q].Err, "write %d", i)
			require.Equal(t, 4096, got[q].N, "write %d", i)
		}
		c = doOp(t, r, Fsync(fd))
		require.NoError(t, c.Err)
		back := make([]byte, len(data))
		n, err := unix.Pread(fd, back, 0)
		require.NoError(t, err)
		require.Equal(t, len(data), n)
		assert.Equal(t, data, back)

		rd, _ := pipe(t)
		c = doOp(t, r, Fsync(rd))
		assert.ErrorIs(t, c.Err, unix.EINVAL, "fsync of a pipe")

		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		require.NoError(t, unix.Close(p[0]))
		require.NoError(t, unix.Close(p[1]))
		c = doOp(t, r, Fsync(p[0]))
		assert.ErrorIs(t, c.Err, unix.EBADF, "fsync of a closed fd")
		assertNoMore(t, r)
	})
}

// TestPort6PipeEOF ports pipe-eof.c: while another goroutine writes a
// string into a pipe and closes its write end, reads at offset 0 (which
// a pipe ignores) keep going until one completes with 0: the closed
// pipe is the end of the stream, not a wait for more. Together the reads
// have the string.
func TestPort6PipeEOF(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		rd, wr := p[0], p[1]
		defer unix.Close(rd)
		msg := []byte("This is a test string")
		werr := make(chan error, 1)
		go func() {
			_, err := unix.Write(wr, msg)
			if cerr := unix.Close(wr); err == nil {
				err = cerr
			}
			werr <- err
		}()
		var got []byte
		buf := make([]byte, 512)
		for i := 0; ; i++ {
			require.Less(t, i, 100, "the reads do not end")
			c := doOp(t, r, Read(rd, buf, 0))
			require.NoError(t, c.Err)
			if c.N == 0 {
				break
			}
			got = append(got, buf[:c.N]...)
		}
		require.NoError(t, <-werr)
		assert.Equal(t, msg, got)
	})
}

// port6Pty opens a pseudo-terminal in raw mode (no output processing, no
// echo) and returns its master and its slave, the slave O_NONBLOCK; both
// close with the test unless the caller closes them first (see the
// returned closeSlave).
func port6Pty(t *testing.T) (master, slave int, closeSlave func()) {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { unix.Close(master) })
	require.NoError(t, unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0), "unlockpt")
	n, err := unix.IoctlGetUint32(master, unix.TIOCGPTN)
	require.NoError(t, err, "ptsname")
	slave, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	var once sync.Once
	closeSlave = func() { once.Do(func() { unix.Close(slave) }) }
	t.Cleanup(closeSlave)
	tio, err := unix.IoctlGetTermios(slave, unix.TCGETS)
	require.NoError(t, err)
	// cfmakeraw
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	require.NoError(t, unix.IoctlSetTermios(slave, unix.TCSETS, tio))
	return master, slave, closeSlave
}

// TestPort6TtyWrites ports stdout.c and tty-write-dpoll.c: writes to a
// terminal (a pty's slave, O_NONBLOCK, where liburing writes stdout and
// a serial port). 128 Writevs of 512 bytes at the position, submitted at
// once, more than the terminal buffers, so that most of them wait for
// room (a terminal waits on two queues: the case of liburing's
// double-poll regression); a goroutine drains the master. Every write
// completes, without an error, and since writes at the position are
// ordered, the master reads each write's bytes after the one before's.
// A WriteFixed from a registered buffer to the terminal works too.
func TestPort6TtyWrites(t *testing.T) {
	const writes, size = 128, 512
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		master, slave, closeSlave := port6Pty(t)
		var mu sync.Mutex
		var out []byte
		readerDone := make(chan error, 1)
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := unix.Read(master, buf)
				if err == unix.EINTR {
					continue
				}
				if n <= 0 {
					// EIO once the slave is closed: the end.
					if err == unix.EIO {
						err = nil
					}
					readerDone <- err
					return
				}
				mu.Lock()
				out = append(out, buf[:n]...)
				mu.Unlock()
			}
		}()
		received := func() int { mu.Lock(); defer mu.Unlock(); return len(out) }

		ops := make([]Op, writes)
		for i := range ops {
			b := make([]byte, size)
			for j := range b {
				b[j] = byte(i)
			}
			ops[i] = Writev(slave, [][]byte{b}, -1)
		}
		reqs := make([]Request, writes)
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, writes, n)
		got := port6Reap(t, r, writes)
		total := 0
		for i, q := range reqs {
			c := got[q]
			require.NoError(t, c.Err, "write %d", i)
			require.Positive(t, c.N, "write %d", i)
			total += c.N
		}

		msg := []byte("This is a fixed tty test\n")
		fixed := make([]byte, 4096)
		copy(fixed, msg)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		c := doOp(t, r, WriteFixed(slave, fixed[:len(msg)], -1, 0))
		require.NoError(t, c.Err)
		require.Equal(t, len(msg), c.N)
		total += c.N
		require.NoError(t, r.UnregisterBuffers())

		require.Eventually(t, func() bool { return received() >= total }, 10*time.Second, time.Millisecond,
			"the master reads all %d bytes written", total)
		closeSlave()
		select {
		case err := <-readerDone:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("the master's reader did not end after the slave closed")
		}
		require.Equal(t, total, len(out))
		off := 0
		for i, q := range reqs {
			k := got[q].N
			for j, b := range out[off : off+k] {
				require.Equal(t, byte(i), b, "write %d, its byte %d, at %d of the stream", i, j, off+j)
			}
			off += k
		}
		assert.Equal(t, msg, out[off:])
	})
}
