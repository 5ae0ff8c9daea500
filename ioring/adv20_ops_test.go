//go:build linux

package ioring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Twentieth round: operations other than multishot on both backends,
// compared where the package says they agree.

// adv20Do submits op, waits for its completion (10s at most) and names its
// outcome.
func adv20Do(t *testing.T, r *Ring, op Op) (Completion, string) {
	t.Helper()
	q, err := r.Start(op)
	if err != nil {
		return Completion{}, "refused: " + adv20Refusal(err)
	}
	c := adv13Wait(t, r, op.Code().String(), q)[0]
	require.Equal(t, q, c.Req, "%v: the completion of the request", op.Code())
	return c, adv13Out(c)
}

// adv20Refusal names a submission's refusal by the sentinel it wraps.
func adv20Refusal(err error) string {
	switch {
	case err == nil:
		return "accepted"
	case strings.Contains(err.Error(), ErrInvalid.Error()):
		return "invalid"
	}
	return err.Error()
}

// TestAdv20OpsOffsetOnUnseekable: a read or write at an explicit offset on
// files without a position (eventfd, timerfd, a pty's two ends, a FIFO,
// /dev/null and /dev/zero), compared across backends. The package says an
// offset on a file without a position is ignored, as io_uring ignores it
// (TestConformanceStreamOffsetIgnored pins pipes and sockets): the poll
// backend must give what io_uring gives on each of them.
func TestAdv20OpsOffsetOnUnseekable(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		// eventfd: a write of a counter, then a read of it, at offset 5.
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		_, s := adv20Do(t, r, Write(efd, one, 5))
		out = append(out, "eventfd write@5: "+s)
		if s == "n=8" {
			_, s = adv20Do(t, r, Read(efd, make([]byte, 8), 5))
			out = append(out, "eventfd read@5: "+s)
		}
		// timerfd armed to fire at once.
		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(tfd)
		require.NoError(t, unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.Timespec{Nsec: 1000}}, nil))
		_, s = adv20Do(t, r, Read(tfd, make([]byte, 8), 3))
		out = append(out, "timerfd read@3: "+s)
		// A pty, raw, both ends blocking.
		m, sl := adv12Pty(t)
		defer unix.Close(m)
		defer unix.Close(sl)
		_, s = adv20Do(t, r, Write(m, []byte("abc"), 9))
		out = append(out, "pty master write@9: "+s)
		_, s = adv20Do(t, r, Read(sl, make([]byte, 8), 9))
		out = append(out, "pty slave read@9: "+s)
		_, s = adv20Do(t, r, Write(sl, []byte("de"), 0))
		out = append(out, "pty slave write@0: "+s)
		_, s = adv20Do(t, r, Readv(m, [][]byte{make([]byte, 1), make([]byte, 4)}, 4))
		out = append(out, "pty master readv@4: "+s)
		// A FIFO, opened read-write (never waits).
		fifo := filepath.Join(t.TempDir(), "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		ff, err := unix.Open(fifo, unix.O_RDWR|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(ff)
		_, s = adv20Do(t, r, Write(ff, []byte("fifo"), 11))
		out = append(out, "fifo write@11: "+s)
		_, s = adv20Do(t, r, Read(ff, make([]byte, 8), 11))
		out = append(out, "fifo read@11: "+s)
		// Character devices with a position of no meaning.
		for _, dev := range []string{"/dev/null", "/dev/zero"} {
			fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			_, s = adv20Do(t, r, Write(fd, []byte("x"), 1<<40))
			out = append(out, dev+" write@2^40: "+s)
			_, s = adv20Do(t, r, Read(fd, make([]byte, 4), 1<<40))
			out = append(out, dev+" read@2^40: "+s)
			unix.Close(fd)
		}
		return out
	})
	adv13Agree(t, got)
}

// TestAdv20TtyHangUp: a blocking read of a pty's master pending while the
// last fd of its slave is closed ends with EIO on both backends; a read of
// the slave pending while the master is closed ends (0 or EIO), never
// waits for ever.
func TestAdv20TtyHangUp(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, nonblock := range []bool{false, true} {
			m, sl := adv12Pty(t)
			if nonblock {
				require.NoError(t, unix.SetNonblock(m, true))
				require.NoError(t, unix.SetNonblock(sl, true))
			}
			q, err := r.Start(Read(m, make([]byte, 8), -1))
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond)
			unix.Close(sl)
			c := adv13Wait(t, r, "master read, slave closed", q)[0]
			out = append(out, fmt.Sprintf("nonblock=%v master read, slave closed under it: %s", nonblock, adv13Out(c)))
			_, s := adv20Do(t, r, Read(m, make([]byte, 8), -1))
			out = append(out, fmt.Sprintf("nonblock=%v master read after: %s", nonblock, s))
			_, s = adv20Do(t, r, Write(m, []byte("x"), -1))
			out = append(out, fmt.Sprintf("nonblock=%v master write after: %s", nonblock, s))
			unix.Close(m)

			m, sl = adv12Pty(t)
			if nonblock {
				require.NoError(t, unix.SetNonblock(m, true))
				require.NoError(t, unix.SetNonblock(sl, true))
			}
			q, err = r.Start(Read(sl, make([]byte, 8), -1))
			require.NoError(t, err)
			time.Sleep(20 * time.Millisecond)
			unix.Close(m)
			c = adv13Wait(t, r, "slave read, master closed", q)[0]
			out = append(out, fmt.Sprintf("nonblock=%v slave read, master closed under it: %s", nonblock, adv13Out(c)))
			_, s = adv20Do(t, r, Read(sl, make([]byte, 8), -1))
			out = append(out, fmt.Sprintf("nonblock=%v slave read after: %s", nonblock, s))
			_, s = adv20Do(t, r, Write(sl, []byte("x"), -1))
			out = append(out, fmt.Sprintf("nonblock=%v slave write after: %s", nonblock, s))
			unix.Close(sl)
		}
		return out
	})
	adv13Agree(t, got)
}

// TestAdv20OpsOpenAtEdges: OpenAt's answers at the edges, compared across
// backends: flags that clash, a directory fd that is a file, O_EXCL on an
// existing file, modes under a umask, O_TMPFILE, O_NOFOLLOW on a link, a
// path too long.
func TestAdv20OpsOpenAtEdges(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		dir := t.TempDir()
		dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(dfd)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), []byte("data"), 0o644))
		require.NoError(t, os.Symlink("file", filepath.Join(dir, "link")))
		require.NoError(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
		ffd, err := unix.Open(filepath.Join(dir, "file"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(ffd)
		old := unix.Umask(0o022)
		defer unix.Umask(old)
		cases := []struct {
			name  string
			dirfd int
			path  string
			flags int
			mode  uint32
		}{
			{"create 0o666", dfd, "new", unix.O_CREAT | unix.O_WRONLY, 0o666},
			{"create excl existing", dfd, "new", unix.O_CREAT | unix.O_EXCL | unix.O_WRONLY, 0o600},
			{"create 0o7777", dfd, "suid", unix.O_CREAT | unix.O_RDWR, 0o7777},
			{"directory on a file", dfd, "file", unix.O_DIRECTORY, 0},
			{"file as dirfd", ffd, "x", unix.O_RDONLY, 0},
			{"write a directory", dfd, ".", unix.O_WRONLY, 0},
			{"nofollow link", dfd, "link", unix.O_RDONLY | unix.O_NOFOLLOW, 0},
			{"path of a link", dfd, "link", unix.O_PATH | unix.O_NOFOLLOW, 0},
			{"tmpfile", dfd, ".", unix.O_TMPFILE | unix.O_RDWR, 0o600},
			{"tmpfile read-only", dfd, ".", unix.O_TMPFILE | unix.O_RDONLY, 0o600},
			{"too long", dfd, strings.Repeat("a", 300), unix.O_RDONLY, 0},
			{"missing", dfd, "nope/x", unix.O_RDONLY, 0},
			{"fifo rdwr", dfd, "fifo", unix.O_RDWR, 0},
			{"fifo wronly nonblock", dfd, "fifo", unix.O_WRONLY | unix.O_NONBLOCK, 0},
			{"trunc read-only", dfd, "file", unix.O_RDONLY | unix.O_TRUNC, 0},
			{"accmode 3", dfd, "file", 3, 0},
			{"absolute ignores dirfd", ffd, "/dev/null", unix.O_RDONLY, 0},
		}
		for _, tc := range cases {
			c, s := adv20Do(t, r, OpenAt(tc.dirfd, tc.path, tc.flags, tc.mode))
			if c.Err == nil && c.N >= 0 && !strings.HasPrefix(s, "refused") {
				var st unix.Stat_t
				require.NoError(t, unix.Fstat(c.N, &st))
				fl, err := unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
				require.NoError(t, err)
				fdfl, err := unix.FcntlInt(uintptr(c.N), unix.F_GETFD, 0)
				require.NoError(t, err)
				s = fmt.Sprintf("fd mode %#o flags %#o cloexec %v", st.Mode, fl&^unix.O_LARGEFILE, fdfl&unix.FD_CLOEXEC != 0)
				unix.Close(c.N)
			}
			out = append(out, tc.name+": "+s)
			if tc.name == "create 0o7777" {
				os.Remove(filepath.Join(dir, "suid"))
			}
		}
		return out
	})
	adv13Agree(t, got)
}
