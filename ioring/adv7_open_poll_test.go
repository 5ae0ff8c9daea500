//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// Attacks on the poll backend's OpenAt: write-only opens of a FIFO that
// wait for a reader on the slot's timer (openLater, psRetry), canceled in
// every way at random moments while a reader comes before, during or after
// the cancel; a directory fd closed at once; a path replaced between tries;
// and many waiting opens on few workers. The helpers of
// adv4_fifo_poll_test.go are reused.

// adv7Rand returns the test's random source, seeded by adv6Seed
// (CANCELIO_SEED repeats it), and logs the seed.
func adv7Rand(t *testing.T) *rand.Rand {
	seed := adv6Seed(t)
	t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9E3779B97F4A7C15))
}

// adv7Opened checks a successful OpenAt's fd: blocking (unless the caller
// asked for O_NONBLOCK), writable (a FIFO's reader is open, or a regular
// file), and closes it.
func adv7Opened(t *testing.T, c Completion, nonblock bool) {
	t.Helper()
	require.NoError(t, c.Err, "completion %+v", c)
	require.GreaterOrEqual(t, c.N, 0)
	defer unix.Close(c.N)
	fl, err := unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
	require.NoError(t, err)
	assert.Equal(t, nonblock, fl&unix.O_NONBLOCK != 0, "O_NONBLOCK on the returned fd (flags %#x)", fl)
	assert.Equal(t, unix.O_WRONLY, fl&unix.O_ACCMODE, "access mode (flags %#x)", fl)
	_, err = unix.Write(c.N, []byte("x"))
	assert.NoError(t, err, "write to the opened fd")
}

// adv7Close closes r and fails when that takes more than 10s.
func adv7Close(t *testing.T, r *Ring) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			assert.ErrorIs(t, err, ErrClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
}

// adv7Reap reaps completions until n arrived, or fails after 10s without
// one. It reaps on after Close too (completions stay available).
func adv7Reap(t *testing.T, r *Ring, n int) []Completion {
	t.Helper()
	var out []Completion
	cs := make([]Completion, 64)
	deadline := time.Now().Add(10 * time.Second)
	for len(out) < n {
		k, err := r.Reap(cs[:min(len(cs), n-len(out))], 100*time.Millisecond)
		if err != nil {
			require.ErrorIs(t, err, ErrClosed)
		}
		out = append(out, cs[:k]...)
		if k > 0 {
			deadline = time.Now().Add(10 * time.Second)
		}
		if len(out) < n && time.Now().After(deadline) {
			t.Fatalf("%d of %d completions within 10s of the last", len(out), n)
		}
		if k == 0 && err != nil {
			t.Fatalf("ring closed with %d of %d completions", len(out), n)
		}
	}
	return out
}

// adv7FirstTried waits until every OpenAt in flight on r's poll backend
// has had its first try (and holds its dup of the dirfd, when waiting).
func adv7FirstTried(t *testing.T, r *Ring) {
	t.Helper()
	b := pollBE(r)
	require.Eventually(t, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		for i := range b.ps {
			if p := &b.ps[i]; p.st != psIdle && p.tries == 0 {
				return false
			}
		}
		return true
	}, 10*time.Second, time.Millisecond, "every open tried once")
}

// The cancels of one random round.
const (
	adv7None     = iota
	adv7Req      // Request.Cancel
	adv7Token    // Token.Cancel
	adv7Deadline // WithDeadline
	adv7CtxCan   // Do, context canceled
	adv7CtxTime  // Do, context deadline
	adv7NKinds
)

// And the ring-wide ones.
const (
	adv7RingNone = iota
	adv7RingCancelAll
	adv7RingClose
	adv7RingNKinds
)

// Write-only opens of a FIFO without a reader, waiting in psRetry, are
// canceled every way at seeded random moments, while a reader comes before
// the opens, or at a random moment before, during or after the cancels.
// Each open completes once: a success is a blocking, writable fd; a cancel
// result only where a cancel was asked. The ring's fds (the dirfd
// duplicates) and goroutines are gone after Close, which never hangs.
func TestAdv7PollFIFOOpenCancelRandom(t *testing.T) {
	rng := adv7Rand(t)
	leaks := goleak.IgnoreCurrent()
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	for round := range rounds {
		if !adv7Round(t, rng, round) {
			return
		}
	}
	goleak.VerifyNone(t, leaks)
}

func adv7Round(t *testing.T, rng *rand.Rand, round int) bool {
	before, err := fdcheck.Take()
	require.NoError(t, err)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	r, err := New(Config{Entries: 16, Backend: BackendPoll})
	require.NoError(t, err)
	closed := false
	defer func() {
		if !closed {
			adv4Unstick(fifo)
			r.Close()
		}
	}()

	n := 1 + rng.IntN(4)
	kinds := make([]int, n)
	delays := make([]time.Duration, n)
	for i := range kinds {
		kinds[i] = rng.IntN(adv7NKinds)
		delays[i] = time.Duration(rng.IntN(60_000)) * time.Microsecond
	}
	ring := rng.IntN(adv7RingNKinds)
	ringDelay := time.Duration(rng.IntN(60_000)) * time.Microsecond
	// The reader: -1 before the opens, else its delay (up to past every
	// cancel).
	readerAt := time.Duration(rng.IntN(130_000)) * time.Microsecond
	if rng.IntN(6) == 0 {
		readerAt = -1
	}
	useDir := rng.IntN(2) == 0
	closeDir := useDir && rng.IntN(2) == 0
	extra := []int{0, unix.O_TRUNC, unix.O_CREAT}[rng.IntN(3)]
	desc := fmt.Sprintf("round %d: kinds %v delays %v ring %d at %v reader at %v dirfd %v closed %v flags %#x",
		round, kinds, delays, ring, ringDelay, readerAt, useDir, closeDir, extra)

	var rdMu sync.Mutex
	rd := -1
	openReader := func() {
		fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if assert.NoError(t, err, "reader") {
			rdMu.Lock()
			rd = fd
			rdMu.Unlock()
		}
	}
	// readerDone is closed once the reader has opened, or once its timer
	// is stopped before it did.
	readerDone := make(chan struct{})
	var readerTimer *time.Timer
	if readerAt < 0 {
		openReader()
		close(readerDone)
	}

	dfd, path := unix.AT_FDCWD, fifo
	if useDir {
		dfd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		path = "fifo"
	}

	start := time.Now()
	var wg sync.WaitGroup
	reqs := make(map[Request]int)
	doRes := make(chan Completion, n)
	ndo := 0
	for i, k := range kinds {
		op := OpenAt(dfd, path, unix.O_WRONLY|extra, 0o600).WithUser(i)
		switch k {
		case adv7Token:
			tok := r.NewToken()
			op = op.WithToken(tok)
			time.AfterFunc(delays[i], func() { tok.Cancel() })
		case adv7Deadline:
			op = op.WithDeadline(delays[i] + time.Microsecond)
		case adv7CtxCan, adv7CtxTime:
			var ctx context.Context
			var cancel context.CancelFunc
			if k == adv7CtxCan {
				ctx, cancel = context.WithCancel(context.Background())
				time.AfterFunc(delays[i], cancel)
			} else {
				ctx, cancel = context.WithTimeout(context.Background(), delays[i]+time.Microsecond)
			}
			if closeDir {
				// Do submits from its goroutine, maybe after the close.
				op = OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|extra, 0o600).WithUser(i)
			}
			ndo++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cancel()
				c, err := r.Do(ctx, op)
				if err != nil {
					// Only a ring closed under it refuses it.
					assert.ErrorIs(t, err, ErrClosed, desc)
					c = Completion{User: i, Err: err}
				}
				doRes <- c
			}()
			continue
		}
		q, err := r.Submit(op)
		require.NoError(t, err, desc)
		reqs[q] = i
		if k == adv7Req {
			time.AfterFunc(delays[i], func() { q.Cancel() })
		}
	}
	if closeDir {
		// Once every open has had its first try (closed before that, the
		// first try finds no dirfd: TestAdv7PollFIFOOpenDirfdClosedAtOnce).
		adv7FirstTried(t, r)
		require.NoError(t, unix.Close(dfd))
	}
	if readerAt >= 0 {
		readerTimer = time.AfterFunc(readerAt, func() {
			defer close(readerDone)
			openReader()
		})
	}
	closeDone := make(chan struct{})
	switch ring {
	case adv7RingCancelAll:
		time.AfterFunc(ringDelay, func() { r.CancelAll() })
		close(closeDone)
	case adv7RingClose:
		time.AfterFunc(ringDelay, func() {
			defer close(closeDone)
			done := make(chan error, 1)
			go func() { done <- r.Close() }()
			select {
			case err := <-done:
				if err != nil {
					assert.ErrorIs(t, err, ErrClosed, desc)
				}
			case <-time.After(10 * time.Second):
				assert.Fail(t, "Close hangs", desc)
			}
		})
	default:
		close(closeDone)
	}

	got := adv7Reap(t, r, len(reqs))
	wg.Wait()
	close(doRes)
	for c := range doRes {
		got = append(got, c)
	}
	<-closeDone
	elapsed := time.Since(start)

	seen := make(map[int]bool)
	for _, c := range got {
		i, ok := c.User.(int)
		require.True(t, ok, "%s: completion %+v", desc, c)
		require.False(t, seen[i], "%s: second completion of open %d: %+v", desc, i, c)
		seen[i] = true
		k := kinds[i]
		if c.Req != (Request{}) && k != adv7CtxCan && k != adv7CtxTime {
			_, mine := reqs[c.Req]
			assert.True(t, mine, "%s: completion of an unknown request %+v", desc, c)
		}
		switch {
		case c.Err == nil:
			adv7Opened(t, c, false)
		case errors.Is(c.Err, ErrClosed):
			assert.Equal(t, adv7RingClose, ring, "%s: %+v", desc, c)
		case errors.Is(c.Err, ErrTimeout):
			assert.Zero(t, c.N)
			assert.True(t, k == adv7Deadline || k == adv7CtxTime, "%s: open %d timed out: %+v", desc, i, c)
		case errors.Is(c.Err, ErrCanceled):
			assert.Zero(t, c.N)
			assert.True(t, k == adv7Req || k == adv7Token || k == adv7CtxCan || ring != adv7RingNone,
				"%s: open %d canceled, none asked: %+v", desc, i, c)
		default:
			assert.Fail(t, "unexpected result", "%s: open %d: %+v", desc, i, c)
		}
	}
	require.Len(t, seen, n, desc)
	if ring != adv7RingClose {
		if !assertNoMoreQuiet(r) {
			t.Errorf("%s: an extra completion", desc)
		}
	}
	if elapsed > 20*time.Second {
		t.Errorf("%s: took %v", desc, elapsed)
	}
	adv7Close(t, r)
	closed = true
	// A reader the round did not need yet may still be on its timer (late
	// on a loaded machine): stopped, it never opens; else it is waited for.
	if readerTimer != nil && readerTimer.Stop() {
		close(readerDone)
	}
	<-readerDone
	rdMu.Lock()
	if rd >= 0 {
		unix.Close(rd)
	}
	rdMu.Unlock()
	if useDir && !closeDir {
		unix.Close(dfd)
	}
	left, err := fdcheck.Opened(before)
	require.NoError(t, err)
	return assert.Empty(t, left, "%s: fds left open", desc)
}

// A path replaced between an open's tries: the FIFO by a regular file of
// the same name, a symlink to a FIFO by one to a regular file. The next
// try opens what is there then.
func TestAdv7PollFIFOOpenPathReplaced(t *testing.T) {
	for _, how := range []string{"fifo-to-file", "symlink-to-fifo", "symlink-retargeted", "fifo-to-socket"} {
		t.Run(how, func(t *testing.T) {
			r := newPollRing(t, 16)
			dir := t.TempDir()
			fifo := filepath.Join(dir, "fifo")
			require.NoError(t, unix.Mkfifo(fifo, 0o600))
			t.Cleanup(func() { adv4Unstick(fifo) })
			path := fifo
			if how != "fifo-to-file" && how != "fifo-to-socket" {
				path = filepath.Join(dir, "link")
				require.NoError(t, os.Symlink("fifo", path))
			}
			q, err := r.Submit(OpenAt(unix.AT_FDCWD, path, unix.O_WRONLY, 0))
			require.NoError(t, err)
			adv4Pending(t, r, "an open without a reader")
			switch how {
			case "fifo-to-file":
				require.NoError(t, os.Remove(fifo))
				require.NoError(t, os.WriteFile(fifo, nil, 0o600))
			case "symlink-to-fifo":
				rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
				require.NoError(t, err)
				defer unix.Close(rd)
			case "symlink-retargeted":
				require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
				require.NoError(t, os.Symlink("file", path+".new"))
				require.NoError(t, os.Rename(path+".new", path))
			case "fifo-to-socket":
				// A socket where the FIFO was: ENXIO, which ends the wait.
				require.NoError(t, os.Remove(fifo))
				s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				defer unix.Close(s)
				require.NoError(t, unix.Bind(s, &unix.SockaddrUnix{Name: fifo}))
				c := reapOne(t, r)
				assert.Equal(t, q, c.Req)
				assert.ErrorIs(t, c.Err, unix.ENXIO, "%+v", c)
				assert.Zero(t, c.N)
				assertNoMore(t, r)
				return
			}
			c := reapOne(t, r)
			assert.Equal(t, q, c.Req)
			adv7Opened(t, c, false)
			assertNoMore(t, r)
		})
	}
}

// O_NOFOLLOW on a symlink to a FIFO: ELOOP at once, no wait for a reader.
func TestAdv7PollFIFOOpenNoFollowSymlink(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		fifo := filepath.Join(dir, "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		t.Cleanup(func() { adv4Unstick(fifo) })
		link := filepath.Join(dir, "link")
		require.NoError(t, os.Symlink("fifo", link))
		c, err := r.Do(t.Context(), OpenAt(unix.AT_FDCWD, link, unix.O_WRONLY|unix.O_NOFOLLOW, 0))
		require.NoError(t, err)
		assert.ErrorIs(t, c.Err, unix.ELOOP, "%+v", c)
		assert.Zero(t, c.N)
	})
}

// What the caller asks for, on both backends where they agree: O_PATH
// opens a FIFO at once; O_NONBLOCK|O_WRONLY without a reader fails at once
// with ENXIO, and with a reader keeps O_NONBLOCK; O_RDWR opens a FIFO at
// once, blocking; O_WRONLY|O_CREAT makes a file that did not exist; a UNIX
// socket's path says ENXIO at once.
func TestAdv7OpenCallerFlags(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		dir := t.TempDir()
		fifo := filepath.Join(dir, "fifo")
		require.NoError(t, unix.Mkfifo(fifo, 0o600))
		t.Cleanup(func() { adv4Unstick(fifo) })
		do := func(path string, flags int) Completion {
			t.Helper()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			c, err := r.Do(ctx, OpenAt(unix.AT_FDCWD, path, flags, 0o600))
			require.NoError(t, err)
			require.False(t, errors.Is(c.Err, ErrCanceled), "%s %#x waited: %+v", path, flags, c)
			return c
		}

		c := do(fifo, unix.O_PATH|unix.O_WRONLY)
		require.NoError(t, c.Err, "O_PATH")
		fl, err := unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
		require.NoError(t, err)
		assert.NotZero(t, fl&unix.O_PATH, "O_PATH fd (flags %#x)", fl)
		unix.Close(c.N)

		c = do(fifo, unix.O_PATH|unix.O_NONBLOCK)
		require.NoError(t, c.Err, "O_PATH|O_NONBLOCK")
		unix.Close(c.N)

		c = do(fifo, unix.O_WRONLY|unix.O_NONBLOCK)
		assert.ErrorIs(t, c.Err, unix.ENXIO, "O_NONBLOCK without a reader: %+v", c)
		assert.Zero(t, c.N)

		rd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		c = do(fifo, unix.O_WRONLY|unix.O_NONBLOCK)
		adv7Opened(t, c, true)
		unix.Close(rd)

		c = do(fifo, unix.O_RDWR)
		require.NoError(t, c.Err, "O_RDWR")
		fl, err = unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
		require.NoError(t, err)
		assert.Zero(t, fl&unix.O_NONBLOCK, "O_RDWR fd left non-blocking (flags %#x)", fl)
		assert.Equal(t, unix.O_RDWR, fl&unix.O_ACCMODE)
		_, err = unix.Write(c.N, []byte("x"))
		assert.NoError(t, err)
		unix.Close(c.N)

		file := filepath.Join(dir, "new")
		c = do(file, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL)
		adv7Opened(t, c, false)
		b, err := os.ReadFile(file)
		require.NoError(t, err)
		assert.Equal(t, "x", string(b))

		sock := filepath.Join(dir, "sock")
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(s)
		require.NoError(t, unix.Bind(s, &unix.SockaddrUnix{Name: sock}))
		for _, fl := range []int{unix.O_WRONLY, unix.O_WRONLY | unix.O_CREAT, unix.O_RDONLY} {
			c = do(sock, fl)
			assert.ErrorIs(t, c.Err, unix.ENXIO, "socket %#x: %+v", fl, c)
			assert.Zero(t, c.N)
		}
	})
}

// 200 write-only opens waiting for readers of 50 FIFOs, on a ring of 256
// with two workers: their timers churn (1ms doubling to 20ms) and the two
// workers take every try. Readers for all come: each open completes once,
// with a blocking, writable fd. More opens then wait, and Close ends them
// at once.
func TestAdv7PollFIFOOpenManyFewWorkers(t *testing.T) {
	rng := adv7Rand(t)
	r := newPollRing(t, 256)
	b := pollBE(r)
	b.mu.Lock()
	b.maxWorkers = 2
	b.mu.Unlock()
	dir := t.TempDir()
	fifos := make([]string, 50)
	for i := range fifos {
		fifos[i] = filepath.Join(dir, fmt.Sprintf("fifo%d", i))
		require.NoError(t, unix.Mkfifo(fifos[i], 0o600))
	}
	t.Cleanup(func() {
		r.CancelAll()
		for _, f := range fifos {
			adv4Unstick(f)
		}
	})
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	reqs := make(map[Request]int)
	for i := range 200 {
		f := i % len(fifos)
		op := OpenAt(unix.AT_FDCWD, fifos[f], unix.O_WRONLY, 0)
		if rng.IntN(2) == 0 {
			op = OpenAt(dfd, filepath.Base(fifos[f]), unix.O_WRONLY, 0)
		}
		q, err := r.Submit(op.WithUser(i))
		require.NoError(t, err)
		reqs[q] = i
	}
	adv4Pending(t, r, "opens without readers")
	adv7FirstTried(t, r)
	unix.Close(dfd) // the waiting ones hold their own
	time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)

	rds := make([]int, 0, len(fifos))
	defer func() {
		for _, rd := range rds {
			unix.Close(rd)
		}
	}()
	for _, i := range rng.Perm(len(fifos)) {
		rd, err := unix.Open(fifos[i], unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		rds = append(rds, rd)
	}
	seen := make(map[Request]bool)
	for _, c := range adv7Reap(t, r, len(reqs)) {
		_, mine := reqs[c.Req]
		require.True(t, mine, "%+v", c)
		require.False(t, seen[c.Req], "second completion %+v", c)
		seen[c.Req] = true
		adv7Opened(t, c, false)
	}
	assertNoMore(t, r)
	assert.LessOrEqual(t, b.nworkers, 2, "workers")

	// Without readers again: new opens wait, and Close ends them.
	for _, rd := range rds {
		unix.Close(rd)
	}
	rds = rds[:0]
	for i := range 100 {
		_, err := r.Submit(OpenAt(unix.AT_FDCWD, fifos[i%len(fifos)], unix.O_WRONLY, 0))
		require.NoError(t, err)
	}
	time.Sleep(time.Duration(rng.IntN(50)) * time.Millisecond)
	adv7Close(t, r)
	for _, c := range adv7Reap(t, r, 100) {
		mustCancel(t, c, ErrCanceled)
	}
}
