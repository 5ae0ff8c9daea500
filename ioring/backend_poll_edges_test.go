//go:build linux

package ioring

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Edges of the contract found on the poll backend (issue 13, items 6 and
// 7). Each testXxx holds on every backend: the conformance suite can run it
// with forEachBackend; TestPollXxx runs it on the poll backend.

// Both backends: cancel works on a terminal, Close never waits on one, and
// a request acts only on the file its fd named at submission.
func TestConformanceTTYReadCancel(t *testing.T)  { forEachBackend(t, 16, testTTYReadCancel) }
func TestConformanceTTYCloseDrains(t *testing.T) { forEachBackend(t, 16, testTTYCloseDrains) }
func TestConformanceTTYWriteCancel(t *testing.T) { forEachBackend(t, 16, testTTYWriteCancel) }
func TestConformanceFDReuseRead(t *testing.T)    { forEachBackend(t, 8, testFDReuseRead) }
func TestConformanceFDReuseWrite(t *testing.T)   { forEachBackend(t, 8, testFDReuseWrite) }

// ttyEnds returns the ends of a blocking pty (no O_NONBLOCK: terminals
// refuse RWF_NOWAIT, so the poll backend cannot try them without blocking)
// by name: "master" reads what the slave writes, and the reverse.
func ttyEnds(t *testing.T) map[string][2]int {
	master, slave := openPTY(t)
	return map[string][2]int{"master": {master, slave}, "slave": {slave, master}}
}

// startReads starts n reads of 64 bytes on fd.
func startReads(t *testing.T, r *Ring, fd, n int) []Request {
	t.Helper()
	qs := make([]Request, n)
	for i := range qs {
		var err error
		qs[i], err = r.Start(Read(fd, make([]byte, 64), -1))
		require.NoError(t, err)
	}
	return qs
}

// waiter awaits its requests (on some backends a completion is only
// reaped by a waiter): done yields each one's index as it completes.
type waiter struct {
	qs   []Request
	cs   []Completion
	done chan int
}

func await(qs []Request) *waiter {
	w := &waiter{qs: qs, cs: make([]Completion, len(qs)), done: make(chan int, len(qs))}
	for i, q := range qs {
		go func() {
			w.cs[i], _ = q.Wait(context.Background())
			w.done <- i
		}()
	}
	return w
}

// next waits (generously) for the next completion and returns its index.
func (w *waiter) next(t *testing.T, what string) int {
	t.Helper()
	select {
	case i := <-w.done:
		return i
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no completion within 10s", what)
		return -1
	}
}

// waitWithin waits for q's completion, failing after a generous bound.
func waitWithin(t *testing.T, q Request, what string) Completion {
	t.Helper()
	w := await([]Request{q})
	w.next(t, what)
	return w.cs[0]
}

// readyWithin reports whether fd becomes readable within d.
func readyWithin(t *testing.T, fd int, d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(d/time.Millisecond))
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		return n > 0
	}
}

// Reads waiting on a blocking terminal, one byte arrives: one read takes
// it, and the others, which lost, are still canceled at once (none of
// them sits in a read a cancel cannot end). The data after that goes to
// whoever reads next, not to a canceled read.
func testTTYReadCancel(t *testing.T, r *Ring) {
	ends := ttyEnds(t)
	for _, name := range []string{"master", "slave"} {
		rd, wr := ends[name][0], ends[name][1]
		w := await(startReads(t, r, rd, 4))
		time.Sleep(20 * time.Millisecond) // let them wait
		_, err := unix.Write(wr, []byte("x"))
		require.NoError(t, err)
		won := w.next(t, name+": the read that took the byte")
		require.NoError(t, w.cs[won].Err, "%s: the read that took the byte", name)
		assert.Equal(t, 1, w.cs[won].N, "%s: one byte arrived", name)
		for i, q := range w.qs {
			if i == won {
				continue
			}
			if err := q.Cancel(); err != nil {
				assert.ErrorIs(t, err, ErrNotFound, "%s: cancel %d", name, i)
			}
		}
		for range len(w.qs) - 1 {
			i := w.next(t, name+": a canceled read")
			assert.ErrorIs(t, w.cs[i].Err, ErrCanceled, "%s: read %d had no data to take", name, i)
		}
		_, err = unix.Write(wr, []byte("y"))
		require.NoError(t, err)
		require.True(t, readyWithin(t, rd, 10*time.Second), "%s: the next byte is there to read", name)
		got := make([]byte, 8)
		n, err := unix.Read(rd, got)
		require.NoError(t, err)
		assert.Equal(t, "y", string(got[:n]), "%s: no canceled read took it", name)
	}
}

// Close with reads left waiting on a blocking terminal after one took the
// only byte: Close cancels them and returns, without waiting for the
// device.
func testTTYCloseDrains(t *testing.T, r *Ring) {
	ends := ttyEnds(t)
	var ws []*waiter
	for _, name := range []string{"master", "slave"} {
		rd, wr := ends[name][0], ends[name][1]
		w := await(startReads(t, r, rd, 3))
		time.Sleep(20 * time.Millisecond)
		_, err := unix.Write(wr, []byte("x"))
		require.NoError(t, err)
		won := w.next(t, name+": the read that took the byte")
		require.NoError(t, w.cs[won].Err, name)
		ws = append(ws, w)
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits after 10s")
	}
	for _, w := range ws {
		for range len(w.qs) - 1 {
			i := w.next(t, "a read left waiting")
			assert.ErrorIs(t, w.cs[i].Err, ErrCanceled, "read %d", i)
		}
	}
}

// A write waiting on a terminal whose peer reads nothing (its input is
// full) is canceled at once, and writes nothing.
func testTTYWriteCancel(t *testing.T, r *Ring) {
	master, slave := openPTY(t)
	// Fill the master's input through a non-blocking open of the slave.
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", slave))
	require.NoError(t, err)
	nb, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(nb)
	chunk := make([]byte, 4096)
	for i := range chunk {
		chunk[i] = 'f'
	}
	// The pty moves what it took into the master's line discipline a
	// little later, which makes room again: full is when a write still
	// finds no room after a pause.
	filled, pauses := 0, 0
	for pauses < 3 {
		n, err := unix.Write(nb, chunk)
		if err == unix.EAGAIN {
			pauses++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		require.NoError(t, err)
		filled += n
		pauses = 0
	}
	q, err := r.Start(Write(slave, []byte("W"), -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.True(t, q.Pending(), "the terminal takes nothing more")
	require.NoError(t, q.Cancel())
	c := waitWithin(t, q, "canceled write")
	assert.ErrorIs(t, c.Err, ErrCanceled)

	// Drain the master: only the filler comes out, no "W".
	got := 0
	buf := make([]byte, 1<<16)
	for readyWithin(t, master, 200*time.Millisecond) {
		n, err := unix.Read(master, buf)
		require.NoError(t, err)
		for _, b := range buf[:n] {
			require.Equal(t, byte('f'), b, "the canceled write wrote nothing")
		}
		got += n
	}
	assert.Equal(t, filled, got)
}

// The fd of a waiting read is closed while a dup keeps its pipe open, and
// its number is reused for another pipe: the read acts on the pipe its fd
// named at submission.
func testFDReuseRead(t *testing.T, r *Ring) {
	ard, awr := pipe(t)
	brd, bwr := pipe(t)
	keep, err := unix.Dup(ard) // keeps pipe A's read end open
	require.NoError(t, err)
	defer unix.Close(keep)
	buf := make([]byte, 8)
	q, err := r.Start(Read(ard, buf, -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	// ard now names pipe B's read end (pipe's cleanup closes it, B's own
	// number too).
	require.NoError(t, unix.Dup3(brd, ard, unix.O_CLOEXEC))
	_, err = unix.Write(bwr, []byte("B-data"))
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	assert.True(t, q.Pending(), "the read took pipe B's data")

	_, err = unix.Write(awr, []byte("A-data"))
	require.NoError(t, err)
	c := waitWithin(t, q, "read of pipe A")
	require.NoError(t, c.Err)
	assert.Equal(t, "A-data", string(buf[:c.N]))
	got := make([]byte, 8)
	n, err := unix.Read(brd, got)
	require.NoError(t, err)
	assert.Equal(t, "B-data", string(got[:n]), "pipe B's data stayed in pipe B")
}

// The same for a write waiting on a full pipe: it lands in its own pipe,
// and once it completed nothing of the ring holds that pipe's write end
// (its reader sees EOF when the caller closes its own).
func testFDReuseWrite(t *testing.T, r *Ring) {
	var a, b [2]int
	require.NoError(t, unix.Pipe2(a[:], unix.O_CLOEXEC))
	defer unix.Close(a[0])
	require.NoError(t, unix.Pipe2(b[:], unix.O_CLOEXEC))
	defer unix.Close(b[0])
	defer unix.Close(b[1])
	fillPipe(t, a[1])
	keep, err := unix.Dup(a[1]) // keeps pipe A's write end open
	require.NoError(t, err)
	q, err := r.Start(Write(a[1], []byte("W"), -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.True(t, q.Pending(), "pipe A is full")
	// a[1] now names pipe B's write end.
	require.NoError(t, unix.Dup3(b[1], a[1], unix.O_CLOEXEC))
	defer unix.Close(a[1])
	time.Sleep(50 * time.Millisecond)
	assert.True(t, q.Pending(), "the write went into pipe B")
	assert.True(t, pipeEmpty(t, b[0]), "pipe B got nothing")

	// Drain pipe A: the write completes into it.
	w := await([]Request{q})
	buf := make([]byte, 1<<16)
	var tail []byte
	deadline := time.After(10 * time.Second)
drain:
	for {
		select {
		case <-w.done:
			break drain
		case <-deadline:
			t.Fatal("the write did not complete within 10s of draining its pipe")
		default:
		}
		if readyWithin(t, a[0], 10*time.Millisecond) {
			n, err := unix.Read(a[0], buf)
			require.NoError(t, err)
			tail = append(tail[:0], buf[:n]...)
		}
	}
	c := w.cs[0]
	require.NoError(t, c.Err)
	assert.Equal(t, 1, c.N)
	for readyWithin(t, a[0], 100*time.Millisecond) {
		n, err := unix.Read(a[0], buf)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		tail = append(tail[:0], buf[:n]...)
	}
	require.NotEmpty(t, tail)
	assert.Equal(t, byte('W'), tail[len(tail)-1], "the write's byte is the last in pipe A")
	assert.True(t, pipeEmpty(t, b[0]), "pipe B got nothing")

	// The caller closes its last write end of A: its reader sees EOF.
	require.NoError(t, unix.Close(keep))
	require.True(t, readyWithin(t, a[0], 10*time.Second))
	n, err := unix.Read(a[0], buf)
	require.NoError(t, err)
	assert.Zero(t, n, "EOF: nothing else holds pipe A's write end")
}

// Without kcmp (seccomp, kernels without CONFIG_CHECKPOINT_RESTORE) every
// waiting request has a duplicate and an epoll registration of its own:
// many waiters on one fd, reuse of its number, and no fd left behind.
func TestPollNoKcmp(t *testing.T) {
	r := newPollRing(t, 32)
	b := pollBE(r)
	b.mu.Lock()
	b.noKcmp = true
	b.mu.Unlock()
	testFDReuseRead(t, r)
	testFDReuseWrite(t, r)

	rd, wr := pipe(t)
	qs := make([]Request, 16)
	for i := range qs {
		var err error
		qs[i], err = r.Submit(Read(rd, make([]byte, 1), -1))
		require.NoError(t, err)
	}
	for i := 0; i < len(qs); i += 2 {
		require.NoError(t, qs[i].Cancel())
	}
	_, err := unix.Write(wr, make([]byte, len(qs)/2))
	require.NoError(t, err)
	canceled := 0
	for range qs {
		c := reapOne(t, r)
		if c.Err != nil {
			assert.ErrorIs(t, c.Err, ErrCanceled)
			canceled++
			continue
		}
		assert.Equal(t, 1, c.N)
	}
	assert.Equal(t, len(qs)/2, canceled)
	assert.True(t, pipeEmpty(t, rd))
}

// Which terminals are reopened (a second, non-blocking description of the
// same terminal) and which are served by bounded reads instead.
func TestPollReopenTerminal(t *testing.T) {
	master, slave := openPTY(t)
	rd, _ := pipe(t)
	null, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer null.Close()
	assert.Equal(t, int32(-1), reopenTerminal(int32(master)), "a pty master: an open would make a new pty")
	assert.Equal(t, int32(-1), reopenTerminal(int32(rd)), "a pipe")
	assert.Equal(t, int32(-1), reopenTerminal(int32(null.Fd())), "a character device that is not a terminal")
	tw := reopenTerminal(int32(slave))
	require.GreaterOrEqual(t, tw, int32(0), "a pty slave")
	defer unix.Close(int(tw))
	fl, err := unix.FcntlInt(uintptr(tw), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.NotZero(t, fl&unix.O_NONBLOCK)
	fl, err = unix.FcntlInt(uintptr(slave), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.Zero(t, fl&unix.O_NONBLOCK, "the caller's description is untouched")
	// The same terminal: what the master writes, the reopened slave reads.
	_, err = unix.Write(master, []byte("z"))
	require.NoError(t, err)
	require.True(t, readyWithin(t, int(tw), 10*time.Second))
	got := make([]byte, 4)
	n, err := unix.Read(int(tw), got)
	require.NoError(t, err)
	assert.Equal(t, "z", string(got[:n]))
}

// Reads queued on a blocking terminal are served one at a time, in the
// order they were submitted, on both kinds of terminal (reopened, and
// bounded by FIONREAD); a read asks for no more than is there.
func TestPollTTYOrder(t *testing.T) {
	r := newPollRing(t, 16)
	ends := ttyEnds(t)
	for _, name := range []string{"master", "slave"} {
		rd, wr := ends[name][0], ends[name][1]
		w := await(startReads(t, r, rd, 4))
		time.Sleep(20 * time.Millisecond)
		for i, ch := range "ABCD" {
			_, err := unix.Write(wr, []byte(string(ch)))
			require.NoError(t, err)
			k := w.next(t, name)
			require.NoError(t, w.cs[k].Err)
			assert.Equal(t, i, k, "%s: byte %c went to read %d", name, ch, k)
			assert.Equal(t, 1, w.cs[k].N)
		}
	}
}

// A write larger than a blocking terminal takes, on a terminal the backend
// reopens non-blocking, moves its whole buffer as a blocking write(2)
// would: it waits for room between parts, never blocking a thread, until
// the master has read it all; canceled part-way, it reports the bytes that
// moved, exactly those the master reads. A write that finds no room waits
// where a cancel ends it.
func TestPollTTYBigWrite(t *testing.T) {
	r := newPollRing(t, 8)
	master, slave := openPTY(t)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = 'b'
	}
	drain := func(stop <-chan struct{}, quiet time.Duration) <-chan int {
		got := make(chan int, 1)
		go func() {
			n, buf := 0, make([]byte, 1<<16)
			for {
				select {
				case <-stop:
					for readyWithin(t, master, quiet) {
						k, err := unix.Read(master, buf)
						if err != nil {
							break
						}
						n += k
					}
					got <- n
					return
				default:
				}
				if !readyWithin(t, master, 10*time.Millisecond) {
					continue
				}
				k, err := unix.Read(master, buf)
				if err != nil {
					got <- n
					return
				}
				for _, c := range buf[:k] {
					if c != 'b' {
						got <- -1
						return
					}
				}
				n += k
			}
		}()
		return got
	}

	// Drained: the whole buffer, of a Write and of a Writev whose parts
	// the terminal takes across its buffers' edges.
	for _, op := range []Op{Write(slave, big, -1), Writev(slave, [][]byte{big[:1000], big[1000 : 300<<10], big[300<<10 : 300<<10+1], big[300<<10+1:]}, -1)} {
		q, err := r.Start(op)
		require.NoError(t, err)
		stop := make(chan struct{})
		got := drain(stop, 200*time.Millisecond)
		c := waitWithin(t, q, "a write bigger than the terminal takes, its reader draining")
		require.NoError(t, c.Err, op.Code())
		assert.Equal(t, len(big), c.N, "%v: the whole buffer moves", op.Code())
		close(stop)
		assert.Equal(t, c.N, <-got, "%v: the master reads what the write reports", op.Code())
	}

	// Not drained: the write waits with part of its buffer moved; a
	// cancel ends it with that part.
	q, err := r.Start(Write(slave, big, -1))
	require.NoError(t, err)
	time.Sleep(50 * time.Millisecond)
	require.True(t, q.Pending(), "the write waits for room")
	require.NoError(t, q.Cancel())
	c := waitWithin(t, q, "the canceled write")
	require.NoError(t, c.Err, "a write canceled part-way reports what moved")
	require.Positive(t, c.N)
	require.Less(t, c.N, len(big), "the master reads nothing: not all of it fits")
	written := c.N

	// Let the pty settle, then fill it until it takes nothing more.
	nb := reopenTerminal(int32(slave))
	require.GreaterOrEqual(t, nb, int32(0))
	defer unix.Close(int(nb))
	pauses := 0
	for pauses < 3 {
		n, err := unix.Write(int(nb), big[:4096])
		if err == unix.EAGAIN {
			pauses++
			time.Sleep(50 * time.Millisecond)
			continue
		}
		require.NoError(t, err)
		written += n
		pauses = 0
	}
	q, err = r.Start(Write(slave, []byte("W"), -1))
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond)
	require.True(t, q.Pending())
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, waitWithin(t, q, "canceled write").Err, ErrCanceled)

	stop := make(chan struct{})
	close(stop)
	assert.Equal(t, written, <-drain(stop, 200*time.Millisecond), "the master reads what the writes reported")
}

// The duplicates requests hold are gone once their completions are out,
// however they ended (data, cancel, worker, a terminal's reopen): the fd
// count is back where it was while the ring stays open, and a pipe whose
// canceled write held its write end gives its reader EOF.
func TestPollNoDupOutlivesItsRequest(t *testing.T) {
	r := newPollRing(t, 32)
	rd, wr := pipe(t)
	file := tempFile(t, []byte("0123456789"))
	master, slave := openPTY(t)
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	defer unix.Close(p[0])
	fillPipe(t, p[1])
	base, err := fdcheck.Take()
	require.NoError(t, err)

	var qs []Request
	start := func(op Op) Request {
		q, err := r.Start(op)
		require.NoError(t, err)
		qs = append(qs, q)
		return q
	}
	for range 4 {
		start(Read(rd, make([]byte, 1), -1))
	}
	start(Read(file, make([]byte, 4), -1))
	start(Fsync(file))
	start(Read(master, make([]byte, 8), -1))
	start(Write(slave, []byte("to the master"), -1))
	w := start(Write(p[1], []byte("x"), -1))
	time.Sleep(20 * time.Millisecond)
	_, err = unix.Write(wr, []byte("ab"))
	require.NoError(t, err)
	_, err = unix.Write(slave, []byte("s"))
	require.NoError(t, err)
	require.NoError(t, r.CancelAll())
	var wc Completion
	for i, q := range qs {
		c := waitWithin(t, q, fmt.Sprint("request ", i))
		if c.Err != nil {
			assert.ErrorIs(t, c.Err, ErrCanceled, "request %d", i)
		}
		if q == w {
			wc = c
		}
	}
	fdcheck.Verify(t, base, "opened for the requests, with every request completed,")

	// The canceled write held p[1]'s file no longer: closing the caller's
	// fd ends the pipe.
	require.NoError(t, unix.Close(p[1]))
	require.ErrorIs(t, wc.Err, ErrCanceled)
	buf := make([]byte, 1<<16)
	for {
		require.True(t, readyWithin(t, p[0], 10*time.Second))
		n, err := unix.Read(p[0], buf)
		require.NoError(t, err)
		if n == 0 {
			break // EOF
		}
	}
}
