//go:build linux

package ioring

import (
	"errors"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, odd files to wait on: ported from liburing's
// fifo-futex-poll (a FIFO open for reading and writing, whose poll takes
// two wait queues, polled through a registered file after a request that
// failed at once), sigfd-deadlock (a poll on a signalfd) and rw_merge_test
// (a read of a pipe at offset 0 that waits must not hold up reads of a
// regular file at neighbouring offsets).

// port7Fifo makes a FIFO and opens it for reading and writing (it never
// waits for a peer), closed with the test.
func port7Fifo(t *testing.T) int {
	path := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(path, 0o644))
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestPort7FifoPollFixed ports fifo-futex-poll.c: after a request that
// fails at once (a read into a registered buffer that is not there:
// EFAULT), a Poll for POLLIN on a FIFO open O_RDWR through its registered
// index, another through its fd and a PollMultishot on it all wait, and a
// write wakes each; a cancel then ends the multishot one; the data is
// still there for a Read through the index. Both backends alike.
func TestPort7FifoPollFixed(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		fd := port7Fifo(t)
		c := doOp(t, r, ReadFixed(fd, make([]byte, 8), 0, 0))
		out = append(out, "read-fixed without buffers: "+adv13Out(c))
		require.NoError(t, r.RegisterFiles([]int{fd}))

		fq, err := r.Submit(Poll(0, unix.POLLIN).FixedFile().WithUser("fixed"))
		require.NoError(t, err)
		pq, err := r.Submit(Poll(fd, unix.POLLIN).WithUser("fd"))
		require.NoError(t, err)
		mq, err := r.Submit(PollMultishot(0, unix.POLLIN).FixedFile().WithUser("multi"))
		require.NoError(t, err)
		assertNoMore(t, r)
		_, err = unix.Write(fd, []byte("FIFO test\n"))
		require.NoError(t, err)
		seen := map[string]string{}
		for len(seen) < 3 {
			c := reapOne(t, r)
			_, dup := seen[c.User.(string)]
			require.False(t, dup, "%v twice", c.User)
			require.NoError(t, c.Err, "%v", c.User)
			ev := "POLLIN"
			if c.N&unix.POLLIN == 0 {
				ev = "no POLLIN"
			}
			seen[c.User.(string)] = ev
			if c.User == "multi" {
				assert.True(t, c.More, "the multishot poll stays armed")
			}
		}
		out = append(out, "fixed "+seen["fixed"], "fd "+seen["fd"], "multi "+seen["multi"])
		assert.False(t, fq.Pending())
		assert.False(t, pq.Pending())
		require.NoError(t, mq.Cancel())
		c = reapOne(t, r)
		require.Equal(t, mq, c.Req)
		assert.False(t, c.More)
		out = append(out, "multi end "+adv13Out(c))
		buf := make([]byte, 32)
		c = doOp(t, r, Read(0, buf, -1).FixedFile())
		out = append(out, "read "+adv13Out(c)+" "+string(buf[:max(c.N, 0)]))
		assertNoMore(t, r)
		return out
	})
	adv13Agree(t, got)
	for _, s := range got {
		assert.Equal(t, []string{
			"read-fixed without buffers: EFAULT",
			"fixed POLLIN", "fd POLLIN", "multi POLLIN", "multi end canceled",
			"read n=10 FIFO test\n",
		}, s)
	}
}

// TestPort7RWMergeNoStall ports rw_merge_test.c: a Readv of an empty pipe
// at offset 0 waits (the offset is ignored on a pipe), while Readvs of a
// regular file of 4096 bytes at offset 4096 (the end: 0) and then at 2048
// (the last half: 2048) complete at once, not held behind the pipe's read;
// the pipe's read completes when data comes.
func TestPort7RWMergeNoStall(t *testing.T) {
	got := adv13Both(t, 4, func(t *testing.T, r *Ring) []string {
		var out []string
		rd, wr := pipe(t)
		file := tempFile(t, make([]byte, 4096))
		pbuf := make([]byte, 4096)
		pq, err := r.Submit(Readv(rd, [][]byte{pbuf}, 0).WithUser("pipe"))
		require.NoError(t, err)
		for _, off := range []int64{4096, 2048} {
			c := doOp(t, r, Readv(file, [][]byte{make([]byte, 4096)}, off).WithUser("file"))
			out = append(out, "file "+adv13Out(c))
		}
		assert.True(t, pq.Pending(), "the pipe's read still waits")
		_, err = unix.Write(wr, []byte("pipe data"))
		require.NoError(t, err)
		c := reapOne(t, r)
		require.Equal(t, pq, c.Req)
		out = append(out, "pipe "+adv13Out(c)+" "+string(pbuf[:max(c.N, 0)]))
		assertNoMore(t, r)
		return out
	})
	adv13Agree(t, got)
	for _, s := range got {
		assert.Equal(t, []string{"file n=0", "file n=2048", "pipe n=9 pipe data"}, s)
	}
}

// TestPort7SignalfdPoll ports sigfd-deadlock.c: a Poll on a signalfd.
// Signals a signalfd reports are those pending for the thread that looks,
// so the signal here is sent to one locked thread that blocks it. With
// nothing pending, a Poll (by fd, and with a deadline) waits, and a
// cancel, the deadline and the ring's Close end each once. With the signal
// pending in the submitting thread, the Poll completes exactly once, with
// POLLIN or, as the readiness may be looked at from another thread, when
// canceled; it never hangs the ring (the regression the original test
// guards: a deadlock on the signal lock) and the signal is still there to
// read.
func TestPort7SignalfdPoll(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		type result struct {
			outs []string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			// The thread ends with this goroutine (no UnlockOSThread): its
			// mask stays with it.
			runtime.LockOSThread()
			res := result{}
			defer func() { done <- res }()
			var set unix.Sigset_t
			sig := unix.SIGUSR1
			port7SigAdd(&set, sig)
			if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
				res.err = err
				return
			}
			sfd, err := unix.Signalfd(-1, &set, unix.SFD_NONBLOCK|unix.SFD_CLOEXEC)
			if err != nil {
				res.err = err
				return
			}
			defer unix.Close(sfd)

			// Nothing pending: a cancel ends it, a deadline ends it.
			q, err := r.Submit(Poll(sfd, unix.POLLIN))
			if err != nil {
				res.err = err
				return
			}
			var cs [2]Completion
			if n, _ := r.Reap(cs[:], 30*time.Millisecond); n != 0 {
				res.err = errors.New("a poll of a signalfd with nothing pending completed: " + adv13Out(cs[0]))
				return
			}
			if err := q.Cancel(); err != nil {
				res.err = err
				return
			}
			n, err := r.Reap(cs[:1], 10*time.Second)
			if err != nil || n != 1 || cs[0].Req != q {
				res.err = errors.New("canceled poll: no single completion")
				return
			}
			res.outs = append(res.outs, "idle cancel "+adv13Out(cs[0]))
			q, err = r.Submit(Poll(sfd, unix.POLLIN).WithDeadline(50 * time.Millisecond))
			if err != nil {
				res.err = err
				return
			}
			n, err = r.Reap(cs[:1], 10*time.Second)
			if err != nil || n != 1 || cs[0].Req != q {
				res.err = errors.New("deadline poll: no single completion")
				return
			}
			res.outs = append(res.outs, "idle deadline "+adv13Out(cs[0]))

			// Pending in this thread before the poll.
			if err := unix.Tgkill(unix.Getpid(), unix.Gettid(), sig); err != nil {
				res.err = err
				return
			}
			q, err = r.Submit(Poll(sfd, unix.POLLIN))
			if err != nil {
				res.err = err
				return
			}
			n, err = r.Reap(cs[:1], 200*time.Millisecond)
			if err != nil {
				res.err = err
				return
			}
			if n == 0 {
				q.Cancel()
				n, err = r.Reap(cs[:1], 10*time.Second)
				if err != nil || n != 1 {
					res.err = errors.New("pending poll: no completion after cancel")
					return
				}
			}
			if cs[0].Req != q {
				res.err = errors.New("pending poll: another completion")
				return
			}
			switch {
			case cs[0].Err == nil && cs[0].N&unix.POLLIN != 0:
				res.outs = append(res.outs, "pending POLLIN")
			case errors.Is(cs[0].Err, ErrCanceled) && n == 1:
				res.outs = append(res.outs, "pending canceled")
			default:
				res.err = errors.New("pending poll: " + adv13Out(cs[0]))
				return
			}
			// The signal is still there for this thread.
			var info [128]byte
			if k, err := unix.Read(sfd, info[:]); err != nil || k != len(info) {
				res.err = errors.New("the signal was not there to read")
				return
			}
			if n, _ := r.Reap(cs[:], 20*time.Millisecond); n != 0 {
				res.err = errors.New("an extra completion: " + adv13Out(cs[0]))
				return
			}

			// Nothing pending again: the ring's Close drains a waiting poll.
			if _, err = r.Submit(Poll(sfd, unix.POLLIN).WithUser("at close")); err != nil {
				res.err = err
				return
			}
			if err := r.Close(); err != nil {
				res.err = err
				return
			}
			n, _ = r.Reap(cs[:], 10*time.Second)
			if n != 1 || cs[0].User != "at close" {
				res.err = errors.New("close: the poll's completion is not there once")
				return
			}
			res.outs = append(res.outs, "close "+adv13Out(cs[0]))
		}()
		select {
		case res := <-done:
			require.NoError(t, res.err)
			t.Logf("outcomes: %v", res.outs)
			require.Len(t, res.outs, 4)
			assert.Equal(t, "idle cancel canceled", res.outs[0])
			assert.Equal(t, "idle deadline timeout", res.outs[1])
			assert.Equal(t, "close canceled", res.outs[3])
		case <-time.After(30 * time.Second):
			t.Fatalf("signalfd poll hung; InFlight %d", r.InFlight())
		}
	})
}

// port7SigAdd adds sig to set (sigaddset).
func port7SigAdd(set *unix.Sigset_t, sig unix.Signal) {
	bits := uint(8 * 4)
	if runtime.GOARCH != "386" && runtime.GOARCH != "arm" {
		bits = 64
	}
	i := uint(sig - 1)
	set.Val[i/bits] |= 1 << (i % bits)
}
