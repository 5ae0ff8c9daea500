//go:build linux

package ioring

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Behaviour of the poll backend beyond the shared conformance suite.

// newPollRing returns a ring on the poll backend that closes with the test,
// and checks then that none of its fds is left open.
func newPollRing(t *testing.T, entries int) *Ring {
	t.Helper()
	before, err := fdcheck.Take()
	require.NoError(t, err)
	r, err := New(Config{Entries: entries, Backend: BackendPoll})
	require.NoError(t, err)
	require.Equal(t, BackendPoll, r.Backend().Backend)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			assert.ErrorIs(t, err, ErrClosed)
		}
		fdcheck.Verify(t, before, "the ring opened, after its Close,")
	})
	return r
}

func pollBE(r *Ring) *pollBackend { return r.be.(*pollBackend) }

// A file operation still queued for a worker is canceled at once and never
// runs; once a worker is free, file operations run again.
func TestPollQueuedFileOpNeverRuns(t *testing.T) {
	r := newPollRing(t, 16)
	b := pollBE(r)
	fd := tempFile(t, []byte("original"))

	b.mu.Lock()
	saved := b.maxWorkers
	b.maxWorkers = b.nworkers // no new worker: file work stays queued
	idle := b.idle
	b.mu.Unlock()
	require.Zero(t, idle, "no file work ran yet, so no worker exists")

	q, err := r.Submit(Write(fd, []byte("CLOBBER!"), 0).WithUser("queued"))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	assert.True(t, q.Pending(), "the write waits for a worker")
	require.NoError(t, q.Cancel())
	c := reapOne(t, r)
	assert.Equal(t, "queued", c.User)
	assert.ErrorIs(t, c.Err, ErrCanceled)

	b.mu.Lock()
	b.maxWorkers = saved
	b.mu.Unlock()
	fsync, err := r.Submit(Fsync(fd)) // starts a worker: nothing stale may run
	require.NoError(t, err)
	assert.NoError(t, reapOne(t, r).Err)
	assert.False(t, fsync.Pending())
	got := make([]byte, 8)
	_, err = unix.Pread(fd, got, 0)
	require.NoError(t, err)
	assert.Equal(t, "original", string(got), "the canceled write never ran")

	n, err := r.WriteAt(context.Background(), fd, []byte("NEW"), 0)
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	_, err = unix.Pread(fd, got, 0)
	require.NoError(t, err)
	assert.Equal(t, "NEWginal", string(got))
}

// CancelAll and Close reach queued file work too.
func TestPollCloseCancelsQueuedFileOps(t *testing.T) {
	r, err := New(Config{Entries: 16, Backend: BackendPoll})
	require.NoError(t, err)
	b := pollBE(r)
	b.mu.Lock()
	b.maxWorkers = 0
	b.mu.Unlock()
	fd := tempFile(t, []byte("12345678"))
	for i := 0; i < 8; i++ {
		_, err := r.Submit(Write(fd, []byte{'X'}, int64(i)))
		require.NoError(t, err)
	}
	require.NoError(t, r.Close())
	var c [16]Completion
	n, err := r.Reap(c[:], time.Second)
	require.NoError(t, err)
	require.Equal(t, 8, n)
	for _, cc := range c[:n] {
		assert.ErrorIs(t, cc.Err, ErrCanceled)
	}
	got := make([]byte, 8)
	_, err = unix.Pread(fd, got, 0)
	require.NoError(t, err)
	assert.Equal(t, "12345678", string(got), "no canceled write ran")
}

// A pending pipe read canceled returns ErrCanceled, and leaves later data
// in the pipe.
func TestPollPendingPipeReadCanceled(t *testing.T) {
	r := newPollRing(t, 8)
	rd, wr := pipe(t)
	buf := []byte("untouched")
	q, err := r.Start(Read(rd, buf, -1))
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond) // let it wait on epoll
	require.True(t, q.Pending())
	require.NoError(t, q.Cancel())
	c, err := q.Wait(context.Background())
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Zero(t, c.N)

	_, err = unix.Write(wr, []byte("later"))
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	assert.Equal(t, "untouched", string(buf))
	got := make([]byte, 16)
	n, err := unix.Read(rd, got)
	require.NoError(t, err)
	assert.Equal(t, "later", string(got[:n]), "the data stayed in the pipe")
}

// A deadline ends a pending read with ErrTimeout; so does a context's.
func TestPollDeadline(t *testing.T) {
	r := newPollRing(t, 8)
	rd, _ := pipe(t)
	start := time.Now()
	c, err := r.Do(context.Background(), Read(rd, make([]byte, 4), -1).WithDeadline(20*time.Millisecond))
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrTimeout)
	assert.GreaterOrEqual(t, time.Since(start), 20*time.Millisecond)

	// A poll and a write into a full pipe time out alike.
	_, wr := pipe(t)
	fillPipe(t, wr)
	c, err = r.Do(context.Background(), Write(wr, []byte("x"), -1).WithDeadline(20*time.Millisecond))
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrTimeout)
	c, err = r.Do(context.Background(), Poll(rd, unix.POLLIN).WithDeadline(20*time.Millisecond))
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrTimeout)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = r.ReadAt(ctx, rd, make([]byte, 4), -1)
	assert.ErrorIs(t, err, ErrTimeout)
}

// fillPipe writes into wr until the pipe is full, without changing wr's
// flags.
func fillPipe(t *testing.T, wr int) {
	t.Helper()
	chunk := make([]byte, 4096)
	for {
		_, err := unix.Pwritev2(wr, [][]byte{chunk}, -1, unix.RWF_NOWAIT)
		if err == unix.EAGAIN {
			break
		}
		require.NoError(t, err)
	}
	// A pipe takes a page at a time; a single byte may still fit.
	for {
		_, err := unix.Pwritev2(wr, [][]byte{chunk[:1]}, -1, unix.RWF_NOWAIT)
		if err == unix.EAGAIN {
			return
		}
		require.NoError(t, err)
	}
}

// Many requests wait on one fd at once: reads, polls and (on the other end)
// writes; each gets its own completion, and a cancel of some leaves the
// others waiting.
func TestPollManyWaitersOneFD(t *testing.T) {
	const readers = 48
	r := newPollRing(t, 128)
	rd, wr := pipe(t)

	reads := make([]Request, readers)
	for i := range reads {
		var err error
		reads[i], err = r.Submit(Read(rd, make([]byte, 1), -1).WithUser(fmt.Sprint("read", i)))
		require.NoError(t, err)
	}
	polls := make([]Request, 8)
	for i := range polls {
		var err error
		polls[i], err = r.Submit(Poll(rd, unix.POLLIN).WithUser(fmt.Sprint("poll", i)))
		require.NoError(t, err)
	}
	// Cancel every other read: the rest keep waiting.
	canceled := map[string]bool{}
	for i := 0; i < readers; i += 2 {
		require.NoError(t, reads[i].Cancel())
		canceled[fmt.Sprint("read", i)] = true
	}
	for range canceled {
		c := reapOne(t, r)
		assert.True(t, canceled[c.User.(string)], "%v completed (%v) before any data", c.User, c.Err)
		assert.ErrorIs(t, c.Err, ErrCanceled)
	}
	assertNoMore(t, r)

	payload := make([]byte, readers/2)
	for i := range payload {
		payload[i] = byte('A' + i)
	}
	_, err := unix.Write(wr, payload)
	require.NoError(t, err)
	for i := 0; i < readers/2+len(polls); i++ {
		c := reapOne(t, r)
		require.NoError(t, c.Err, "%v", c.User)
		if c.Op == OpPoll {
			assert.NotZero(t, c.N&unix.POLLIN)
			continue
		}
		require.Equal(t, 1, c.N)
		assert.False(t, canceled[c.User.(string)], "a canceled read completed again")
	}
	// Every byte went to exactly one read.
	for i := range reads {
		if !canceled[fmt.Sprint("read", i)] {
			assert.False(t, reads[i].Pending())
		}
	}
	assert.True(t, pipeEmpty(t, rd))

	// Writers waiting on a full pipe.
	fillPipe(t, wr)
	writes := make([]Request, 8)
	for i := range writes {
		var err error
		writes[i], err = r.Submit(Write(wr, []byte{'w'}, -1))
		require.NoError(t, err)
	}
	assertNoMore(t, r)
	drain := make([]byte, 1<<16)
	n := 0
	deadline := time.Now().Add(10 * time.Second)
	for n < len(writes) && time.Now().Before(deadline) {
		for !pipeEmpty(t, rd) {
			_, err := unix.Read(rd, drain)
			require.NoError(t, err)
		}
		var c [8]Completion
		k, err := r.Reap(c[:], 100*time.Millisecond)
		require.NoError(t, err)
		for _, cc := range c[:k] {
			assert.NoError(t, cc.Err)
			assert.Equal(t, 1, cc.N)
		}
		n += k
	}
	assert.Equal(t, len(writes), n, "every waiting write completed")
}

// Cancels racing completions: every request completes exactly once, and no
// byte is lost or duplicated (a read that won the race reports its byte; a
// canceled one left it in the pipe).
func TestPollCancelCompleteRace(t *testing.T) {
	rounds := 2000
	if testing.Short() {
		rounds = 200
	}
	r := newPollRing(t, 64)
	rd, wr := pipe(t)
	var wg sync.WaitGroup
	read, canceled := 0, 0
	for i := 0; i < rounds; i++ {
		q, err := r.Submit(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
		if i%2 == 0 {
			time.Sleep(20 * time.Microsecond) // sometimes let it reach epoll first
		}
		go1 := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-go1
			unix.Write(wr, []byte{byte(i)})
		}()
		go func() {
			defer wg.Done()
			<-go1
			if i%3 == 0 {
				runtime.Gosched()
			}
			if err := q.Cancel(); err != nil {
				assert.ErrorIs(t, err, ErrNotFound)
			}
		}()
		close(go1)
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		if c.Err == nil {
			require.Equal(t, 1, c.N)
			read++
		} else {
			require.ErrorIs(t, c.Err, ErrCanceled)
			canceled++
		}
		wg.Wait()
		// Take back the byte a canceled read left, so each round starts empty.
		if c.Err != nil {
			one := make([]byte, 1)
			n, err := unix.Read(rd, one)
			require.NoError(t, err)
			require.Equal(t, 1, n)
		}
		require.True(t, pipeEmpty(t, rd), "round %d: a byte was read twice or lost", i)
	}
	assertNoMore(t, r)
	t.Logf("%d rounds: %d reads won, %d cancels won", rounds, read, canceled)
}

// Concurrent submitters, cancelers and a writer on shared pipes, with
// tokens, deadlines and CancelAll: exactly one completion per request.
func TestPollConcurrentChurn(t *testing.T) {
	per := 500
	if testing.Short() {
		per = 50
	}
	r := newPollRing(t, 256)
	rd, wr := pipe(t)
	// The trickle never blocks: a pipe the reads fall behind on fills,
	// and a blocking write would keep the trickle from ever seeing stop
	// once the reads end. A full pipe only skips a byte.
	require.NoError(t, unix.SetNonblock(wr, true))
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Add(2)
	go func() { // a trickle of data
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			unix.Write(wr, []byte("z")) // EAGAIN when full
			time.Sleep(50 * time.Microsecond)
		}
	}()
	go func() { // an occasional cancel of everything
		defer bg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				r.CancelAll()
			}
		}
	}()
	var mu sync.Mutex
	seen := map[uint64]int{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			tok := r.NewToken()
			for i := 0; i < per; i++ {
				var op Op
				switch i % 4 {
				case 0:
					op = Read(rd, make([]byte, 2), -1)
				case 1:
					op = Poll(rd, unix.POLLIN).WithDeadline(time.Millisecond)
				case 2:
					op = Timeout(time.Duration(i%3) * time.Millisecond).WithToken(tok)
				default:
					op = Nop()
				}
				q, err := r.Start(op)
				if err != nil {
					assert.ErrorIs(t, err, ErrFull)
					continue
				}
				if i%5 == 0 {
					q.Cancel()
				}
				if i%7 == 0 {
					tok.Cancel()
					tok = r.NewToken()
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				c, err := q.Wait(ctx)
				cancel()
				if !assert.NoError(t, err) {
					return
				}
				if c.Err != nil && !assert.ErrorIs(t, c.Err, ErrCanceled) {
					return
				}
				mu.Lock()
				seen[q.ID()]++
				mu.Unlock()
			}
		}(g)
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	for id, n := range seen {
		require.Equal(t, 1, n, "request %x delivered %d times", id, n)
	}
	assertSettled(t, r)
}

// The backend never changes the caller's fd flags: a blocking fd stays
// blocking, a non-blocking one stays non-blocking.
func TestPollKeepsFDFlags(t *testing.T) {
	r := newPollRing(t, 8)
	ctx := context.Background()
	for _, nb := range []bool{false, true} {
		rd, wr := pipe(t)
		require.NoError(t, unix.SetNonblock(rd, nb))
		before, err := unix.FcntlInt(uintptr(rd), unix.F_GETFL, 0)
		require.NoError(t, err)
		q, err := r.Submit(Read(rd, make([]byte, 4), -1))
		require.NoError(t, err)
		time.Sleep(5 * time.Millisecond)
		_, err = r.WriteAt(ctx, wr, []byte("abcd"), -1)
		require.NoError(t, err)
		c := reapOne(t, r)
		assert.Equal(t, q, c.Req)
		assert.NoError(t, c.Err)
		after, err := unix.FcntlInt(uintptr(rd), unix.F_GETFL, 0)
		require.NoError(t, err)
		assert.Equal(t, before, after, "fd flags (O_NONBLOCK %v)", nb)
	}
}

// Sockets: reads and writes through the fast path and through epoll.
func TestPollSocketPair(t *testing.T) {
	r := newPollRing(t, 8)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	ctx := context.Background()

	buf := make([]byte, 16)
	q, err := r.Start(Readv(sp[0], [][]byte{buf[:3], buf[3:]}, -1))
	require.NoError(t, err)
	n, err := r.WriteAt(ctx, sp[1], []byte("hello, socket"), -1)
	require.NoError(t, err)
	assert.Equal(t, 13, n)
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Err)
	assert.Equal(t, "hello, socket", string(buf[:c.N]))

	// The peer goes away: a waiting read sees EOF.
	q, err = r.Start(Read(sp[0], buf, -1))
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	require.NoError(t, unix.Shutdown(sp[1], unix.SHUT_WR))
	c, err = q.Wait(ctx)
	require.NoError(t, err)
	assert.NoError(t, c.Err)
	assert.Zero(t, c.N, "EOF")
}

// An eventfd reads with RWF_NOWAIT but cannot write with it: its writes
// run on a worker once the fd is writable.
func TestPollEventFD(t *testing.T) {
	r := newPollRing(t, 8)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(efd) })
	ctx := context.Background()
	val := make([]byte, 8)
	q, err := r.Start(Read(efd, val, -1))
	require.NoError(t, err)
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	n, err := r.WriteAt(ctx, efd, one, -1)
	require.NoError(t, err)
	assert.Equal(t, 8, n)
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Err)
	assert.Equal(t, 8, c.N)
	assert.Equal(t, one, val)
}

// A pseudo-terminal master (a character device without RWF_NOWAIT): a
// read waits for readiness whether the fd blocks or not, and a waiting
// read is canceled at once.
func TestPollPTY(t *testing.T) {
	for _, nb := range []bool{false, true} {
		t.Run(fmt.Sprintf("nonblock=%v", nb), func(t *testing.T) {
			master, slave := openPTY(t)
			require.NoError(t, unix.SetNonblock(master, nb))
			r := newPollRing(t, 8)
			ctx := context.Background()

			q, err := r.Start(Read(master, make([]byte, 64), -1))
			require.NoError(t, err)
			time.Sleep(10 * time.Millisecond)
			require.True(t, q.Pending())
			require.NoError(t, q.Cancel())
			c, err := q.Wait(ctx)
			require.NoError(t, err)
			assert.ErrorIs(t, c.Err, ErrCanceled)

			buf := make([]byte, 64)
			q, err = r.Start(Read(master, buf, -1))
			require.NoError(t, err)
			_, err = unix.Write(slave, []byte("tty says hi\n"))
			require.NoError(t, err)
			c, err = q.Wait(ctx)
			require.NoError(t, err)
			require.NoError(t, c.Err)
			assert.Contains(t, string(buf[:c.N]), "tty says hi")
		})
	}
}

// openPTY opens a pseudo-terminal pair, or skips.
func openPTY(t *testing.T) (master, slave int) {
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { unix.Close(master) })
	require.NoError(t, unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(master, unix.TIOCGPTN)
	require.NoError(t, err)
	slave, err = unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { unix.Close(slave) })
	// Raw mode: no echo, no line editing.
	tio, err := unix.IoctlGetTermios(slave, unix.TCGETS)
	require.NoError(t, err)
	tio.Lflag &^= unix.ECHO | unix.ICANON
	require.NoError(t, unix.IoctlSetTermios(slave, unix.TCSETS, tio))
	return master, slave
}

// A file epoll refuses (EPERM, /dev/null): reads and writes run, and a poll
// for an event it never reports fails with EINVAL, as on io_uring.
func TestPollUnpollableFile(t *testing.T) {
	r := newPollRing(t, 8)
	f, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	ctx := context.Background()
	n, err := r.WriteAt(ctx, fd, []byte("into the void"), -1)
	require.NoError(t, err)
	assert.Equal(t, 13, n)
	n, err = r.ReadAt(ctx, fd, make([]byte, 4), -1)
	require.NoError(t, err)
	assert.Zero(t, n)

	c, err := r.Do(ctx, Poll(fd, unix.POLLIN))
	require.NoError(t, err)
	assert.NotZero(t, c.N&unix.POLLIN, "always readable")
	// Events such a file never reports: EINVAL at once, as on io_uring
	// (no wait queue to arm the poll on).
	_, err = r.Submit(Poll(fd, unix.POLLPRI))
	require.NoError(t, err)
	assert.ErrorIs(t, reapOne(t, r).Err, unix.EINVAL)
}

// An fd number closed under a waiting request and reused for another file:
// the waiting request still acts on its own file, as on io_uring (a pipe
// whose ends are all closed: EOF), and the new file works.
func TestPollFDReuse(t *testing.T) {
	r := newPollRing(t, 8)
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	old, err := r.Submit(Read(p[0], make([]byte, 4), -1).WithUser("old"))
	require.NoError(t, err)
	time.Sleep(5 * time.Millisecond)
	unix.Close(p[0])
	unix.Close(p[1])
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(sp[0]); unix.Close(sp[1]) })
	if sp[0] != p[0] {
		require.NoError(t, old.Cancel())
		reapOne(t, r)
		t.Skipf("fd %d was not reused (got %d)", p[0], sp[0])
	}
	buf := make([]byte, 4)
	q, err := r.Submit(Read(sp[0], buf, -1).WithUser("new"))
	require.NoError(t, err)
	c := reapOne(t, r)
	assert.Equal(t, "old", c.User)
	assert.NoError(t, c.Err)
	assert.Zero(t, c.N, "EOF of the old pipe")
	_, err = unix.Write(sp[1], []byte("new!"))
	require.NoError(t, err)
	c = reapOne(t, r)
	assert.Equal(t, q, c.Req)
	require.NoError(t, c.Err)
	assert.Equal(t, "new!", string(buf[:c.N]))
}

// Timeouts: zero fires at once, several run side by side, a canceled one
// ends early, and a slot's reused timer never fires a later request early.
func TestPollTimeouts(t *testing.T) {
	r := newPollRing(t, 4)
	ctx := context.Background()
	c, err := r.Do(ctx, Timeout(0))
	require.NoError(t, err)
	assert.NoError(t, c.Err)
	for i := 0; i < 20; i++ {
		q, err := r.Submit(Timeout(time.Hour))
		require.NoError(t, err)
		require.NoError(t, q.Cancel())
		assert.ErrorIs(t, reapOne(t, r).Err, ErrCanceled)
		start := time.Now()
		c, err := r.Do(ctx, Timeout(2*time.Millisecond))
		require.NoError(t, err)
		assert.NoError(t, c.Err)
		assert.GreaterOrEqual(t, time.Since(start), 2*time.Millisecond, "round %d fired early", i)
	}
}

// The poll backend's hot paths allocate nothing: a read that finds data at
// once, and one that waits for epoll.
func TestPollZeroAllocs(t *testing.T) {
	r := newPollRing(t, 16)
	rd, wr := pipe(t)
	buf := make([]byte, 8)
	msg := []byte("8 bytes!")
	var c [2]Completion
	ready := testing.AllocsPerRun(200, func() {
		unix.Write(wr, msg)
		if _, err := r.Submit(Read(rd, buf, -1)); err != nil {
			t.Fatal(err)
		}
		if n, err := r.Reap(c[:], -1); n != 1 || err != nil || c[0].Err != nil {
			t.Fatal(n, err, c[0].Err)
		}
	})
	assert.Zero(t, ready, "allocations per immediate read")
	waited := testing.AllocsPerRun(200, func() {
		if _, err := r.Submit(Read(rd, buf, -1)); err != nil {
			t.Fatal(err)
		}
		unix.Write(wr, msg)
		if n, err := r.Reap(c[:], -1); n != 1 || err != nil || c[0].Err != nil {
			t.Fatal(n, err, c[0].Err)
		}
	})
	assert.Zero(t, waited, "allocations per read that waited on epoll")
}

// Regular files: positioned reads from the page cache finish inline, short
// reads at the end of the file are real results, and reads at the current
// position run on a worker and move the position.
func TestPollFileReads(t *testing.T) {
	r := newPollRing(t, 8)
	ctx := context.Background()
	fd := tempFile(t, []byte("0123456789"))
	buf := make([]byte, 8)
	n, err := r.ReadAt(ctx, fd, buf, 6)
	require.NoError(t, err)
	assert.Equal(t, "6789", string(buf[:n]), "a short read at the end of the file")
	n, err = r.ReadAt(ctx, fd, buf, 100)
	require.NoError(t, err)
	assert.Zero(t, n, "past the end")
	a, b := make([]byte, 2), make([]byte, 3)
	c, err := r.Do(ctx, Readv(fd, [][]byte{a, b}, 1))
	require.NoError(t, err)
	require.NoError(t, c.Err)
	assert.Equal(t, "12345", string(a)+string(b))

	_, err = unix.Seek(fd, 2, 0)
	require.NoError(t, err)
	for _, want := range []string{"2345", "6789", ""} {
		n, err := r.ReadAt(ctx, fd, buf[:4], -1)
		require.NoError(t, err)
		assert.Equal(t, want, string(buf[:n]))
	}
	// A directory: the kernel's answer, not a hang.
	dir, err := os.Open(t.TempDir())
	require.NoError(t, err)
	defer dir.Close()
	_, err = r.ReadAt(ctx, int(dir.Fd()), buf, 0)
	assert.ErrorIs(t, err, unix.EISDIR)
}
