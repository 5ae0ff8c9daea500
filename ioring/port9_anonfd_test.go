//go:build linux

package ioring

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ports of liburing's evfd-short-read.c, timerfd-short-read.c,
// fifo-nonblock-read.c and read-before-exit.c: reads on files that are
// neither regular files nor sockets (an eventfd, a timerfd, a pipe made
// O_NONBLOCK) that wait for data which comes later. liburing checks that a
// read asking for more than one event (16 bytes of an eventfd or timerfd)
// completes with the one event (8 bytes), as the file's read(2) does, and
// not with a retry loop or a short-read resubmission that never ends;
// that an O_NONBLOCK pipe's read waits for data instead of completing
// with EAGAIN; and (read-before-exit) that reads on timerfds submitted by
// a thread that exits at once complete with their real results.
//
// Ported through cancelio: both backends, each read at offset 0 (as the C
// tests) and at -1 (the stream's order), and both backends must agree.

// port9Evfd returns an eventfd (flags added to EFD_CLOEXEC) closed with
// the test.
func port9Evfd(t *testing.T, flags int) int {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|flags)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// port9Timerfd returns a timerfd (CLOCK_MONOTONIC, flags added to
// TFD_CLOEXEC), disarmed, closed with the test.
func port9Timerfd(t *testing.T, flags int) int {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|flags)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// port9Arm arms timerfd fd to fire once after d (and every interval after
// that when interval is not 0).
func port9Arm(t *testing.T, fd int, d, interval time.Duration) {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d)), Interval: unix.NsecToTimespec(int64(interval))}
	require.NoError(t, unix.TimerfdSettime(fd, 0, &its, nil))
}

func TestPort9ShortReadAnonFd(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, off := range []int64{0, -1} {
			// evfd-short-read.c: a non-blocking eventfd, 16 bytes asked, one
			// event (8 bytes) written later.
			for _, fl := range []int{unix.EFD_NONBLOCK, 0} {
				fd := port9Evfd(t, fl)
				buf := make([]byte, 16)
				q, err := r.Start(Read(fd, buf, off))
				require.NoError(t, err)
				time.Sleep(10 * time.Millisecond)
				var one [8]byte
				binary.NativeEndian.PutUint64(one[:], 7)
				_, err = unix.Write(fd, one[:])
				require.NoError(t, err)
				c := adv13Wait(t, r, "eventfd read", q)[0]
				s := fmt.Sprintf("eventfd flags=%#x off=%d: %s", fl, off, adv13Out(c))
				if c.Err == nil && c.N == 8 {
					s += fmt.Sprintf(" value=%d", binary.NativeEndian.Uint64(buf))
				}
				out = append(out, s)
			}
			// timerfd-short-read.c: a blocking timerfd, 16 bytes asked, the
			// timer armed after the submission.
			tfd := port9Timerfd(t, 0)
			buf := make([]byte, 16)
			q, err := r.Start(Read(tfd, buf, off))
			require.NoError(t, err)
			port9Arm(t, tfd, 10*time.Millisecond, 0)
			c := adv13Wait(t, r, "timerfd read", q)[0]
			s := fmt.Sprintf("timerfd off=%d: %s", off, adv13Out(c))
			if c.Err == nil && c.N == 8 {
				s += fmt.Sprintf(" expirations=%d", binary.NativeEndian.Uint64(buf))
			}
			out = append(out, s)

			// fifo-nonblock-read.c: a pipe whose read end is O_NONBLOCK; the
			// read waits for the write that comes 10ms later.
			rd, wr := pipe(t)
			require.NoError(t, unix.SetNonblock(rd, true))
			pbuf := make([]byte, 32)
			q, err = r.Start(Read(rd, pbuf, off))
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond)
			_, err = unix.Write(wr, []byte("Hello\n"))
			require.NoError(t, err)
			c = adv13Wait(t, r, "nonblocking pipe read", q)[0]
			s = fmt.Sprintf("O_NONBLOCK pipe off=%d: %s", off, adv13Out(c))
			if c.Err == nil {
				s += fmt.Sprintf(" %q", pbuf[:c.N])
			}
			out = append(out, s)
		}
		return out
	})
	want := []string{}
	for _, off := range []int64{0, -1} {
		want = append(want,
			fmt.Sprintf("eventfd flags=%#x off=%d: n=8 value=7", unix.EFD_NONBLOCK, off),
			fmt.Sprintf("eventfd flags=0x0 off=%d: n=8 value=7", off),
			fmt.Sprintf("timerfd off=%d: n=8 expirations=1", off),
			fmt.Sprintf("O_NONBLOCK pipe off=%d: n=6 \"Hello\\n\"", off))
	}
	for b, g := range got {
		require.Equal(t, want, g, "backend %v", b)
	}
	adv13Agree(t, got)
}

// read-before-exit.c: reads of two timerfds submitted from a thread that
// exits right after (a goroutine that locked its thread and returns); the
// timers fire later. The contract's "threads do not matter": each read
// completes with its real result (8 bytes, one expiration), on both
// backends, not ErrCanceled and not the kernel's ECANCELED for the exited
// task.
func TestPort9ReadBeforeThreadExit(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		for round := 0; round < 3; round++ {
			fds := [2]int{port9Timerfd(t, 0), port9Timerfd(t, 0)}
			bufs := [2][]byte{make([]byte, 8), make([]byte, 8)}
			var qs [2]Request
			errc := make(chan error, 1)
			go func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				for i := range fds {
					var err error
					// one at offset 0, one at the current position
					off := int64(0)
					if i == 1 {
						off = -1
					}
					if qs[i], err = r.Start(Read(fds[i], bufs[i], off)); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			require.NoError(t, <-errc)
			time.Sleep(20 * time.Millisecond) // let the thread go
			for _, fd := range fds {
				port9Arm(t, fd, 10*time.Millisecond, 0)
			}
			cs := adv13Wait(t, r, "timerfd reads after thread exit", qs[:]...)
			for i, c := range cs {
				s := fmt.Sprintf("round %d read %d: %s", round, i, adv13Out(c))
				if c.Err == nil && c.N == 8 {
					s += fmt.Sprintf(" expirations=%d", binary.NativeEndian.Uint64(bufs[i]))
				}
				out = append(out, s)
			}
		}
		return out
	})
	for b, g := range got {
		for _, s := range g {
			require.Contains(t, s, ": n=8 expirations=1", "backend %v: all:\n%v", b, g)
		}
	}
	adv13Agree(t, got)
}
