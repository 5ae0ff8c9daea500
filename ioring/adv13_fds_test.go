//go:build linux

package ioring

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv13PollMasks: Poll and PollMultishot with odd event masks, on
// both backends, which must agree: 0 refused; POLLIN|POLLOUT on a
// writable socket; POLLPRI on a socket with urgent data; POLLRDHUP after
// the peer's shutdown; a mask with no poll(2) bit at all (only
// POLLERR/POLLHUP can end it); epoll-only bits above the 16 poll bits.
func TestAdv13PollMasks(t *testing.T) {
	got := adv13Both(t, 32, func(t *testing.T, r *Ring) []string {
		var out []string
		note := func(name string, c Completion) {
			res := adv13Out(c)
			if c.Err == nil {
				res = fmt.Sprintf("events=%#x", c.N)
			}
			out = append(out, name+": "+res)
		}
		for _, op := range []Op{Poll(0, 0), PollMultishot(0, 0)} {
			_, err := r.Submit(op)
			assert.ErrorIs(t, err, ErrInvalid, "%v with no events", op)
		}

		a, b := adv13TCPPair(t)
		defer unix.Close(a)
		defer unix.Close(b)
		c, err := r.Do(context.Background(), Poll(a, unix.POLLIN|unix.POLLOUT))
		require.NoError(t, err)
		note("in|out on writable", c)

		// Urgent data: POLLPRI (and POLLIN for the in-line byte? no:
		// SO_OOBINLINE is off, the urgent byte is out of band).
		// A poll for POLLPRI alone that waits when the urgent byte comes:
		// logged, not compared (io_uring, which gets the mask as is, was
		// seen to miss it on Linux 6.18; see the report).
		ppri, err := r.Start(Poll(a, unix.POLLPRI).WithDeadline(2 * time.Second))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("x"))
		require.NoError(t, err)
		require.NoError(t, unix.Sendto(b, []byte("!"), unix.MSG_OOB, nil))
		cp := adv13Wait(t, r, "pollpri", ppri)[0]
		t.Logf("%v: a waiting Poll(POLLPRI) when urgent data comes: %s events=%#x", r.Backend().Backend, adv13Out(cp), cp.N)
		c, err = r.Do(context.Background(), Poll(a, unix.POLLPRI))
		require.NoError(t, err)
		note("pri with oob", c)
		c, err = r.Do(context.Background(), Poll(a, unix.POLLPRI|unix.POLLIN))
		require.NoError(t, err)
		note("pri|in with oob and data", c)
		oob := make([]byte, 1)
		_, _, err = unix.Recvfrom(a, oob, unix.MSG_OOB)
		require.NoError(t, err)
		adv13Drain(t, a)

		// Epoll-only bits: EPOLLET and EPOLLEXCLUSIVE above a real one.
		for _, ev := range []uint32{unix.EPOLLET | unix.POLLIN, unix.EPOLLEXCLUSIVE | unix.POLLIN} {
			q, err := r.Start(Poll(a, ev))
			if err != nil {
				out = append(out, fmt.Sprintf("%#x: refused %v", ev, errors.Is(err, ErrInvalid)))
				continue
			}
			_, err = unix.Write(b, []byte("y"))
			require.NoError(t, err)
			note(fmt.Sprintf("%#x after data", ev), adv13Wait(t, r, "high bits", q)[0])
			adv13Drain(t, a)
		}

		// (A mask with no poll(2) bit, 1<<16, is accepted and answered
		// differently by the backends: io_uring completed it with no
		// event, the poll backend at the hang-up. TestAdvPollOnlyUnknownEvents
		// pins what both do with 1<<20.)
		prd, err := r.Start(Poll(a, unix.POLLRDHUP))
		require.NoError(t, err)
		ms, err := r.Submit(PollMultishot(a, unix.POLLRDHUP|unix.POLLIN).WithUser("ms"))
		require.NoError(t, err)
		require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
		note("rdhup after shutdown", adv13Wait(t, r, "rdhup", prd)[0])
		// The multishot one: its first result, then cancel it.
		dst := make([]Completion, 8)
		var first Completion
		deadline := time.Now().Add(adv13Hang)
		for first.Op == 0 {
			require.True(t, time.Now().Before(deadline), "multishot poll: no result")
			n, err := r.Reap(dst, 50*time.Millisecond)
			require.NoError(t, err)
			if n > 0 {
				first = dst[0]
			}
		}
		note(fmt.Sprintf("multishot rdhup|in first more=%v", first.More), first)
		if first.More {
			ms.Cancel()
			for {
				require.True(t, time.Now().Before(deadline), "multishot poll: no final")
				n, err := r.Reap(dst, 50*time.Millisecond)
				require.NoError(t, err)
				if n > 0 && !dst[n-1].More {
					note("multishot final", dst[n-1])
					break
				}
			}
		}
		return out
	})
	adv13Agree(t, got)
}

// TestAdv13SpecialFds: eventfd, timerfd, pidfd and inotify fds as
// request targets, each waiting first, on both backends, which agree.
func TestAdv13SpecialFds(t *testing.T) {
	got := adv13Both(t, 32, func(t *testing.T, r *Ring) []string {
		var out []string
		note := func(name string, c Completion) {
			out = append(out, name+": "+adv13Out(c))
		}
		// eventfd: a read waits for a count; a write waits for room.
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		eb := make([]byte, 8)
		qr, err := r.Start(Read(efd, eb, -1))
		require.NoError(t, err)
		wb := make([]byte, 8)
		binary.NativeEndian.PutUint64(wb, 5)
		_, err = unix.Write(efd, wb)
		require.NoError(t, err)
		note("eventfd read", adv13Wait(t, r, "eventfd read", qr)[0])
		out = append(out, fmt.Sprintf("eventfd value %d", binary.NativeEndian.Uint64(eb)))
		binary.NativeEndian.PutUint64(wb, 0xfffffffffffffffe)
		_, err = unix.Write(efd, wb)
		require.NoError(t, err)
		wb2 := make([]byte, 8)
		binary.NativeEndian.PutUint64(wb2, 7)
		qw, err := r.Start(Write(efd, wb2, -1))
		require.NoError(t, err)
		_, err = unix.Read(efd, make([]byte, 8))
		require.NoError(t, err)
		note("eventfd write after room", adv13Wait(t, r, "eventfd write", qw)[0])
		qs, err := r.Start(Read(efd, make([]byte, 4), -1))
		require.NoError(t, err)
		note("eventfd short read", adv13Wait(t, r, "eventfd short", qs)[0])

		// timerfd: a read waits for the expiry.
		tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(tfd)
		tb := make([]byte, 8)
		qt, err := r.Start(Read(tfd, tb, -1))
		require.NoError(t, err)
		require.NoError(t, unix.TimerfdSettime(tfd, 0, &unix.ItimerSpec{Value: unix.NsecToTimespec(int64(3 * time.Millisecond))}, nil))
		note("timerfd read", adv13Wait(t, r, "timerfd", qt)[0])
		out = append(out, fmt.Sprintf("timerfd expirations>=1 %v", binary.NativeEndian.Uint64(tb) >= 1))

		// pidfd: POLLIN when the child exits; a read is refused by the file.
		var pid int
		inR, inW := adv12Pipe(t, 0)
		defer unix.Close(inW)
		pid, err = syscall.ForkExec("/bin/sh", []string{"sh", "-c", "read x"}, &syscall.ProcAttr{Files: []uintptr{uintptr(inR), 1, 2}})
		unix.Close(inR)
		if err != nil {
			t.Logf("no child: %v", err)
		} else {
			pfd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				unix.Kill(pid, unix.SIGKILL)
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, 0, nil)
				t.Logf("no pidfd: %v", err)
			} else {
				qp, err := r.Start(Poll(pfd, unix.POLLIN))
				require.NoError(t, err)
				qpr, err := r.Start(Read(pfd, make([]byte, 8), -1))
				require.NoError(t, err)
				// io_uring's read of a pidfd (which has no read) waits for
				// POLLIN, then fails: the process ends first here.
				unix.Kill(pid, unix.SIGKILL)
				note("pidfd poll", adv13Wait(t, r, "pidfd poll", qp)[0])
				note("pidfd read", adv13Wait(t, r, "pidfd read", qpr)[0])
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, 0, nil)
				unix.Close(pfd)
			}
		}

		// inotify: a read waits for an event; too small a buffer is EINVAL.
		dir := t.TempDir()
		ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(ifd)
		_, err = unix.InotifyAddWatch(ifd, dir, unix.IN_CREATE)
		require.NoError(t, err)
		ib := make([]byte, 4096)
		qi, err := r.Start(Read(ifd, ib, -1))
		require.NoError(t, err)
		qi2, err := r.Start(Read(ifd, make([]byte, 4), -1))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "abcdefg"), nil, 0o600))
		ci := adv13Wait(t, r, "inotify", qi)[0]
		note("inotify read", Completion{Err: ci.Err, N: min(ci.N, 1)})
		require.NoError(t, os.WriteFile(filepath.Join(dir, "hijklmn"), nil, 0o600))
		note("inotify small read", adv13Wait(t, r, "inotify small", qi2)[0])
		return out
	})
	adv13Agree(t, got)
}

// TestAdv13ShortDeadlinesBursts: ordered reads on many pipes with
// deadlines from a nanosecond to a few milliseconds (below the poll
// backend's timer and epoll granularity), random cancels, and data in
// bursts: every request completes once, reads of a pipe deliver its
// stream in submission order with nothing lost or doubled.
func TestAdv13ShortDeadlinesBursts(t *testing.T) {
	rng := adv13Rand(t)
	seed := rng.Uint64()
	adv13Both(t, 512, func(t *testing.T, r *Ring) []string {
		rng := adv13RandFrom(seed)
		const pipes, per = 6, 40
		type pp struct{ rd, wr int }
		ps := make([]pp, pipes)
		for i := range ps {
			ps[i].rd, ps[i].wr = adv12Pipe(t, 0)
		}
		defer func() {
			for _, p := range ps {
				unix.Close(p.rd)
				unix.Close(p.wr)
			}
		}()
		led := newAdv12Ledger(t)
		bufs := map[int][]byte{}
		byPipe := make([][]int, pipes)
		id := 0
		var qs []Request
		for range per {
			for k := range pipes {
				id++
				buf := make([]byte, 1+rng.IntN(32))
				op := Read(ps[k].rd, buf, -1).WithUser(id)
				switch rng.IntN(4) {
				case 0:
				case 1:
					op = op.WithDeadline(time.Duration(1 + rng.IntN(1000)))
				case 2:
					op = op.WithDeadline(time.Duration(rng.IntN(50)) * time.Microsecond)
				default:
					op = op.WithDeadline(time.Duration(1+rng.IntN(3000)) * time.Microsecond)
				}
				if op.deadline == 0 {
					op = op.WithDeadline(time.Nanosecond)
				}
				q, err := r.Submit(op)
				require.NoError(t, err)
				led.accept(id, q)
				bufs[id] = buf
				byPipe[k] = append(byPipe[k], id)
				qs = append(qs, q)
			}
		}
		written := make([][]byte, pipes)
		done := make(chan struct{})
		wrng := adv13RandFrom(rng.Uint64())
		go func() {
			defer close(done)
			for range 60 {
				k := wrng.IntN(pipes)
				chunk := make([]byte, 1+wrng.IntN(40))
				for j := range chunk {
					chunk[j] = byte(len(written[k]) + j)
				}
				if _, err := unix.Write(ps[k].wr, chunk); err != nil {
					t.Errorf("write: %v", err)
					return
				}
				written[k] = append(written[k], chunk...)
				qs[wrng.IntN(len(qs))].Cancel()
				if wrng.IntN(8) == 0 {
					time.Sleep(time.Duration(wrng.IntN(2000)) * time.Microsecond) // bursts
				}
			}
		}()
		adv12Reap(t, r, led, "short deadlines", func() bool { return led.done() == id })
		<-done
		led.check()
		outcomes := map[string]int{}
		for k := range pipes {
			var joined []byte
			for _, i := range byPipe[k] {
				c := led.final[i]
				outcomes[adv13Out(Completion{Err: c.Err})]++
				if c.Err != nil {
					require.True(t, adv12IsCancel(c.Err), "request %d: %v", i, c.Err)
					continue
				}
				require.Positive(t, c.N, "request %d: EOF with the writer open", i)
				joined = append(joined, bufs[i][:c.N]...)
			}
			// Ordered delivery: the reads' data in submission order is a
			// prefix of the stream, the rest still in the pipe.
			rest := adv13Drain(t, ps[k].rd)
			require.Equal(t, written[k], append(joined, rest...), "pipe %d: %d bytes read + %d left", k, len(joined), len(rest))
			// Delivery order within the pipe matches submission order.
			pos := map[int]int{}
			for j, i := range led.order {
				pos[i] = j
			}
			for j := 1; j < len(byPipe[k]); j++ {
				a, b := byPipe[k][j-1], byPipe[k][j]
				if pos[a] > pos[b] && led.final[a].Err == nil && led.final[b].Err == nil {
					t.Errorf("pipe %d: request %d delivered after %d, submitted after it", k, a, b)
				}
			}
		}
		t.Logf("outcomes %v", outcomes)
		return nil
	})
}

// TestAdv13WorkerPoolSaturated: the poll backend's workers (blocking
// terminal reads, regular file reads and writes, FIFO opens for write
// that wait for a reader) flooded, canceled at random from several
// goroutines, and the ring closed under it all: Close drains, every
// request completes once, nothing leaks. io_uring runs the same.
func TestAdv13WorkerPoolSaturated(t *testing.T) {
	rng := adv13Rand(t)
	seed := rng.Uint64()
	adv13Both(t, 512, func(t *testing.T, r *Ring) []string {
		rng := adv13RandFrom(seed)
		master, slave := adv12Pty(t)
		defer unix.Close(master)
		defer unix.Close(slave)
		dir := t.TempDir()
		fifo := filepath.Join(dir, "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		f, err := os.CreateTemp(dir, "file")
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, f.Truncate(1<<20))
		ffd := int(f.Fd())

		led := newAdv12Ledger(t)
		var mu sync.Mutex
		var qs []Request
		id := 0
		var opened []int
		submit := func(op Op) {
			mu.Lock()
			defer mu.Unlock()
			id++
			q, err := r.Submit(op.WithUser(id))
			if err != nil {
				require.ErrorIs(t, err, ErrClosed)
				return
			}
			led.accept(id, q)
			qs = append(qs, q)
		}
		for range 150 {
			switch rng.IntN(4) {
			case 0:
				submit(Read(slave, make([]byte, 16), -1).Unordered())
			case 1:
				submit(Read(ffd, make([]byte, 4096), int64(rng.IntN(256))*4096))
			case 2:
				submit(Write(ffd, make([]byte, 4096), int64(rng.IntN(256))*4096))
			default:
				submit(OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CLOEXEC, 0))
			}
		}
		var wg sync.WaitGroup
		for g := range 3 {
			crng := adv13RandFrom(seed + uint64(g) + 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 100 {
					mu.Lock()
					q := qs[crng.IntN(len(qs))]
					mu.Unlock()
					q.Cancel()
				}
			}()
		}
		// A little terminal input for some reads.
		_, err = unix.Write(master, []byte("abc"))
		require.NoError(t, err)
		wg.Wait()
		closed := make(chan error, 1)
		go func() { closed <- r.Close() }()
		select {
		case err := <-closed:
			require.NoError(t, err)
		case <-time.After(adv13Hang):
			t.Fatalf("Close did not drain within %v; InFlight %d", adv13Hang, r.InFlight())
		}
		adv12Reap(t, r, led, "after close", func() bool { return led.done() == len(led.accepted) })
		led.check()
		outcomes := map[string]int{}
		for _, c := range led.final {
			outcomes[fmt.Sprintf("%v %s", c.Op, adv13Out(Completion{Err: c.Err}))]++
			if c.Op == OpOpenAt && c.Err == nil {
				opened = append(opened, c.N)
			}
		}
		for _, fd := range opened {
			unix.Close(fd)
		}
		t.Logf("outcomes %v", outcomes)
		return nil
	})
}
