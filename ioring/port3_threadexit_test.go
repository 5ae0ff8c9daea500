//go:build linux

package ioring

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ported from liburing's thread-exit and read-before-exit tests: io_uring
// ties a request to the thread that submitted it and ends it when that
// thread exits. In cancelio that must not show: a request nobody canceled
// completes once with its real result, whatever became of the threads
// that submitted (or submitted it again), for every kind of operation.

// TestPort3ThreadExitChain checks that a long-lived request survives any
// number of exiting threads (liburing's thread-exit, repeated): a
// multishot poll on an eventfd is submitted from a locked thread that
// exits, and then, round after round, the eventfd is signalled and a new
// locked goroutine reaps until it sees the poll's next event, which makes
// that goroutine's thread the one that hands the poll to the kernel
// again, and returns so that its thread exits too. Nobody cancels the
// poll, so every round must deliver an event with More set, and the
// request must still be pending after twenty such rounds (a cancel then
// ends it with ErrCanceled).
func TestPort3ThreadExitChain(t *testing.T) {
	const rounds = 20
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		qc := make(chan Request, 1)
		submitFromExitingThread(t, func() {
			q, err := r.Submit(PollMultishot(efd, unix.POLLIN))
			assert.NoError(t, err)
			qc <- q
		})
		q := <-qc
		for i := range rounds {
			signal(t, efd)
			type got struct {
				c   Completion
				err error
			}
			gc := make(chan got, 1)
			submitFromExitingThread(t, func() {
				var cs [1]Completion
				n, err := r.Reap(cs[:], 10*time.Second)
				if err == nil && n != 1 {
					err = errors.New("no completion within 10s")
				}
				gc <- got{cs[0], err}
			})
			g := <-gc
			require.NoError(t, g.err, "round %d", i)
			require.Equal(t, q, g.c.Req, "round %d", i)
			require.NoError(t, g.c.Err, "round %d: nobody canceled the poll", i)
			require.True(t, g.c.More, "round %d: the poll must go on: %+v", i, g.c)
			assert.NotZero(t, g.c.N&unix.POLLIN, "round %d: events", i)
		}
		require.True(t, q.Pending())
		require.NoError(t, q.Cancel())
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrCanceled)
				break
			}
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort3ThreadExitStreamRead is TestPort3ThreadExitChain for a plain
// read at the current position: a pipe read submitted from an exiting
// thread is woken (and so ended by the kernel) by a byte that the test
// takes back before anyone reaps, so that the read handed to the kernel
// again must wait once more, from a thread that exits in turn. After
// twenty rounds one more byte must reach the read, as its real result.
func TestPort3ThreadExitStreamRead(t *testing.T) {
	const rounds = 20
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		buf := make([]byte, 4)
		qc := make(chan Request, 1)
		submitFromExitingThread(t, func() {
			q, err := r.Submit(Read(rd, buf, -1))
			assert.NoError(t, err)
			qc <- q
		})
		q := <-qc
		var tmp [1]byte
		done := false
		for i := 0; i < rounds && !done; i++ {
			// Wake the read with a byte and take the byte back before
			// anyone reaps: on io_uring the wake-up alone ends the read
			// of a dead thread; on the poll backend the read may take the
			// byte itself, and the round's reap delivers it.
			_, err := unix.Write(wr, []byte{'x'})
			require.NoError(t, err)
			unix.SetNonblock(rd, true)
			unix.Read(rd, tmp[:])
			unix.SetNonblock(rd, false)
			type got struct {
				c Completion
				n int
			}
			gc := make(chan got, 1)
			submitFromExitingThread(t, func() {
				var cs [1]Completion
				n, err := r.Reap(cs[:], 20*time.Millisecond)
				assert.NoError(t, err)
				gc <- got{cs[0], n}
			})
			if g := <-gc; g.n == 1 {
				require.Equal(t, q, g.c.Req)
				require.NoError(t, g.c.Err, "round %d: nobody canceled the read", i)
				require.Equal(t, 1, g.c.N)
				done = true
			}
		}
		if !done {
			_, err := unix.Write(wr, []byte{'z'})
			require.NoError(t, err)
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.NoError(t, c.Err, "nobody canceled the read")
			require.Equal(t, 1, c.N)
			assert.Equal(t, byte('z'), buf[0])
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort3ThreadExitEveryOp checks that each kind of operation submitted
// from a thread that then exits completes once with its real result
// (thread-exit and read-before-exit, beyond the pipe reads the
// conformance suite covers): a poll, a receive, a send into a full
// socket, a recvmsg, an accept, a timeout, an open of a FIFO for reading
// (which completes at once on both backends: neither waits for a writer),
// a multishot accept and a multishot receive, each woken only after its
// thread is gone. (An open that waits in io_uring's worker is not among
// them: on 6.18 the exit of its thread may wait for it, out of a cancel's
// reach; TestAdv4URingOpenOutlivesThread covers it.)
func TestPort3ThreadExitEveryOp(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		ra, rb := socketpair(t, unix.SOCK_STREAM)
		sa, sb := socketpair(t, unix.SOCK_STREAM)
		fillSocket(t, sa)
		ma, mb := socketpair(t, unix.SOCK_DGRAM)
		lfd, laddr := tcpListener(t, 8, 0)
		mlfd, mladdr := tcpListener(t, 8, 0)
		xa, xb := socketpair(t, unix.SOCK_STREAM)
		fifo := filepath.Join(t.TempDir(), "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		br, err := r.NewBufRing(4, 64)
		if errors.Is(err, ErrNotSupported) {
			br = nil
		} else {
			require.NoError(t, err)
			defer br.Close()
		}

		recvBuf := make([]byte, 16)
		msgBuf := make([]byte, 16)
		m := &Msg{Buffers: [][]byte{msgBuf}}
		ops := map[string]Op{
			"poll":    Poll(efd, unix.POLLIN),
			"recv":    Recv(ra, recvBuf, 0),
			"send":    Send(sa, []byte("after the drain"), 0),
			"recvmsg": RecvMsg(ma, m, 0),
			"accept":  Accept(lfd, 0),
			"timeout": Timeout(300 * time.Millisecond),
			"openat":  OpenAt(unix.AT_FDCWD, fifo, unix.O_RDONLY, 0),
			"amulti":  AcceptMultishot(mlfd, 0),
		}
		if br != nil {
			ops["rmulti"] = RecvMultishot(xa, br, 0)
		}
		reqs := map[Request]string{}
		submitFromExitingThread(t, func() {
			for name, op := range ops {
				q, err := r.Submit(op.WithUser(name))
				if errors.Is(err, ErrNotSupported) {
					continue
				}
				if assert.NoError(t, err, name) {
					reqs[q] = name
				}
			}
		})
		for q, name := range reqs {
			if name != "timeout" && name != "openat" {
				assert.True(t, q.Pending(), "%s before its wake-up", name)
			}
		}

		// Wake each one, from the test's goroutine.
		signal(t, efd)
		_, err = unix.Write(rb, []byte("recv"))
		require.NoError(t, err)
		drain := make([]byte, 1<<20)
		for readable(t, sb) {
			_, err := unix.Read(sb, drain)
			require.NoError(t, err)
		}
		_, err = unix.Write(mb, []byte("msg"))
		require.NoError(t, err)
		dialTCP(t, laddr)
		dialTCP(t, mladdr)
		_, err = unix.Write(xb, []byte("multi"))
		require.NoError(t, err)
		wfd := make(chan int, 1)
		go func() {
			fd, err := unix.Open(fifo, unix.O_WRONLY|unix.O_CLOEXEC, 0)
			assert.NoError(t, err)
			wfd <- fd
		}()
		defer func() {
			adv4Unstick(fifo) // an open of the FIFO that failed leaves the writer waiting
			unix.Close(<-wfd)
		}()

		final := map[string]Completion{}
		var mores []Completion
		deadline := time.Now().Add(20 * time.Second)
		for len(final) < len(reqs) && time.Now().Before(deadline) {
			var cs [8]Completion
			n, err := r.Reap(cs[:], time.Second)
			require.NoError(t, err)
			for _, c := range cs[:n] {
				name := reqs[c.Req]
				require.NotEmpty(t, name, "completion of an unknown request: %+v", c)
				if c.More {
					mores = append(mores, c)
					continue
				}
				_, dup := final[name]
				require.False(t, dup, "second final completion of %s: %+v", name, c)
				final[name] = c
				if (name == "amulti" || name == "rmulti") && c.Err == nil {
					t.Errorf("%s ended unasked: %+v", name, c)
				}
			}
			// The multishot ones end only when canceled: cancel them once
			// they have delivered their wake-up.
			for q, name := range reqs {
				if (name == "amulti" || name == "rmulti") && q.Pending() && delivered(mores, q) {
					q.Cancel()
				}
			}
		}
		require.Len(t, final, len(reqs), "every request completed: %v", final)
		for name, c := range final {
			switch name {
			case "amulti", "rmulti":
				assert.ErrorIs(t, c.Err, ErrCanceled, "%s ends by its cancel", name)
				continue
			}
			require.NoError(t, c.Err, "%s: nobody canceled it", name)
			switch name {
			case "poll":
				assert.NotZero(t, c.N&unix.POLLIN, name)
			case "recv":
				assert.Equal(t, "recv", string(recvBuf[:c.N]))
			case "send":
				assert.Equal(t, len("after the drain"), c.N)
			case "recvmsg":
				assert.Equal(t, "msg", string(msgBuf[:c.N]))
			case "accept", "openat":
				assert.Positive(t, c.N, name)
				unix.Close(c.N)
			case "timeout":
				assert.Zero(t, c.N)
			}
		}
		for _, c := range mores {
			require.NoError(t, c.Err)
			switch reqs[c.Req] {
			case "amulti":
				assert.Positive(t, c.N)
				unix.Close(c.N)
			case "rmulti":
				assert.Equal(t, "multi", string(br.Bytes(c)))
				assert.NoError(t, br.Release(c.BufID))
			}
		}
		for q, name := range reqs {
			if name == "amulti" || name == "rmulti" {
				assert.True(t, delivered(mores, q), "%s delivered its wake-up", name)
			}
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// delivered reports whether cs holds a completion of q.
func delivered(cs []Completion, q Request) bool {
	for _, c := range cs {
		if c.Req == q {
			return true
		}
	}
	return false
}

// TestPort3ThreadExitStartDeadline checks that a request started (Start)
// from a thread that exits, with a deadline, keeps the rest of that
// deadline: woken after the thread is gone, before its deadline, it
// delivers its data to Wait; left alone, it times out with ErrTimeout,
// not earlier than its deadline and well before the test's limit
// (liburing's thread-exit with a linked timeout).
func TestPort3ThreadExitStartDeadline(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		buf := make([]byte, 8)
		qc := make(chan Request, 2)
		submitFromExitingThread(t, func() {
			q, err := r.Start(Read(rd, buf, -1).WithDeadline(time.Minute))
			assert.NoError(t, err)
			qc <- q
		})
		q := <-qc
		_, err := unix.Write(wr, []byte("late"))
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		require.NoError(t, c.Err, "nobody canceled it and its deadline is far")
		assert.Equal(t, "late", string(buf[:c.N]))

		const dl = 1500 * time.Millisecond
		start := time.Now()
		submitFromExitingThread(t, func() {
			q, err := r.Start(Read(rd, buf, -1).WithDeadline(dl))
			assert.NoError(t, err)
			qc <- q
		})
		q = <-qc
		// Wake it (so that io_uring drops it with its thread) and take
		// the byte back: the read that goes back to the kernel waits on.
		_, err = unix.Write(wr, []byte("w"))
		require.NoError(t, err)
		var tmp [1]byte
		unix.SetNonblock(rd, true)
		unix.Read(rd, tmp[:])
		unix.SetNonblock(rd, false)
		c, err = q.Wait(ctx)
		require.NoError(t, err)
		if c.Err == nil {
			// The poll backend (or a fast io_uring) took the byte.
			assert.Equal(t, 1, c.N)
			return
		}
		assert.ErrorIs(t, c.Err, ErrTimeout)
		assert.GreaterOrEqual(t, time.Since(start), dl-50*time.Millisecond, "the deadline is the request's, not shorter")
		assertSettled(t, r)
	})
}

// TestPort3ReadBeforeExitClose checks that a ring whose requests were all
// submitted by threads that exited, some of them waiting on a file, some
// already completed and not reaped, closes promptly and hands every
// completion out exactly once (liburing's read-before-exit: the ring's
// teardown with reads pending from a task that is gone).
func TestPort3ReadBeforeExitClose(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		rd, wr := pipe(t)
		fd := tempFile(t, []byte("0123456789"))
		const n = 16
		reqs := map[Request]int{}
		submitFromExitingThread(t, func() {
			for i := range n {
				op := Read(rd, make([]byte, 1), -1)
				if i%2 == 1 {
					op = Read(fd, make([]byte, 4), int64(i%6))
				}
				q, err := r.Submit(op.WithUser(i))
				if assert.NoError(t, err) {
					reqs[q] = i
				}
			}
		})
		require.Len(t, reqs, n)
		_, err := unix.Write(wr, []byte("ab"))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- r.Close() }()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(20 * time.Second):
			t.Fatal("Close did not return within 20s")
		}
		seen := map[int]int{}
		data := 0
		for {
			var cs [8]Completion
			k, err := r.Reap(cs[:], 0)
			if errors.Is(err, ErrClosed) {
				break
			}
			require.NoError(t, err)
			if k == 0 {
				break
			}
			for _, c := range cs[:k] {
				i := c.User.(int)
				seen[i]++
				if i%2 == 1 {
					// A file read: its real result, or canceled by Close.
					if c.Err == nil {
						assert.Equal(t, 4, c.N)
					} else {
						assert.ErrorIs(t, c.Err, ErrCanceled)
					}
					continue
				}
				if c.Err == nil {
					assert.Equal(t, 1, c.N)
					data += c.N
				} else {
					assert.ErrorIs(t, c.Err, ErrCanceled, "pipe read %d", i)
				}
			}
		}
		assert.Len(t, seen, n, "every request completed")
		for i, k := range seen {
			assert.Equal(t, 1, k, "completions of %d", i)
		}
		left := 0
		unix.SetNonblock(rd, true)
		for {
			var b [8]byte
			k, err := unix.Read(rd, b[:])
			if err != nil || k <= 0 {
				break
			}
			left += k
		}
		assert.Equal(t, 2, data+left, "no byte lost or doubled")
		assert.Zero(t, r.InFlight())
		_, err = r.Submit(Nop())
		assert.ErrorIs(t, err, ErrClosed)
	})
}
