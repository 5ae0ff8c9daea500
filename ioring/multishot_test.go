//go:build linux

package ioring

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// msRec is one multishot request of the stress test, as its completions
// arrive.
type msRec struct {
	kind   Opcode
	shots  int
	finals int
	after  int // completions after the final one
	got    bytes.Buffer
	sent   []byte
	err    error
}

// TestConformanceMultishotStress: workers keep multishot requests of the three kinds
// in flight, feed them (eventfd signals, messages, connections) and end
// them at random moments by Request.Cancel, a token, a deadline or the end
// of the stream, while one consumer, then three, reap. Every request must
// deliver exactly one final completion, every buffer exactly once (a
// second delivery would fail its Release) and all of them back, and
// nothing may leak (fds: forEachBackend; goroutines: TestMain). With one
// consumer, which sees each request's completions in the order they were
// delivered, nothing may follow a final completion and a receive must
// deliver the bytes that were sent, in order, up to where it ended.
func TestConformanceMultishotStress(t *testing.T) {
	rounds := 600
	if testing.Short() {
		rounds = 100
	}
	forEachBackend(t, 256, func(t *testing.T, r *Ring) {
		for _, consumers := range []int{1, 3} {
			t.Run(fmt.Sprintf("consumers=%d", consumers), func(t *testing.T) {
				multishotStress(t, r, rounds, consumers)
			})
		}
	})
}

func multishotStress(t *testing.T, r *Ring, rounds, consumers int) {
	br, err := r.NewBufRing(256, 32)
	require.NoError(t, err)
	var mu sync.Mutex
	recs := map[Request]*msRec{}
	done := make(chan struct{})
	var reaped sync.WaitGroup
	reaped.Add(consumers)
	for range consumers {
		go func() { // a consumer
			defer reaped.Done()
			var cs [32]Completion
			for {
				n, err := r.Reap(cs[:], 20*time.Millisecond)
				if err != nil {
					return
				}
				mu.Lock()
				for _, c := range cs[:n] {
					rec := recs[c.Req]
					if rec == nil {
						// Submit has not recorded it yet: wait for it.
						mu.Unlock()
						for rec == nil {
							time.Sleep(time.Millisecond)
							mu.Lock()
							rec = recs[c.Req]
							mu.Unlock()
						}
						mu.Lock()
					}
					if rec.finals > 0 {
						rec.after++
					}
					if c.Buffer {
						rec.got.Write(br.Bytes(c))
						if err := br.Release(c.BufID); err != nil {
							rec.err = err
						}
					}
					if rec.kind == OpAcceptMultishot && c.Err == nil && c.N > 0 {
						unix.Close(c.N)
					}
					if c.More {
						rec.shots++
					} else {
						rec.finals++
					}
				}
				mu.Unlock()
				select {
				case <-done:
					if r.InFlight() == 0 && n == 0 {
						return
					}
				default:
				}
			}
		}()
	}

	const workers = 4
	var wg sync.WaitGroup
	for w := range workers {
		l, sa := tcpListener(t, 64, 0) // here: require may not run on the workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range rounds / workers {
				kind := []Opcode{OpPollMultishot, OpAcceptMultishot, OpRecvMultishot}[rng.IntN(3)]
				tok := r.NewToken()
				var op Op
				var feed func()
				var endStream func()
				rec := &msRec{kind: kind}
				switch kind {
				case OpPollMultishot:
					efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
					if err != nil {
						t.Error(err)
						return
					}
					defer unix.Close(efd)
					op = PollMultishot(efd, unix.POLLIN)
					feed = func() { unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0}) }
				case OpAcceptMultishot:
					op = AcceptMultishot(l, unix.SOCK_NONBLOCK)
					feed = func() {
						fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
						if err == nil {
							unix.Connect(fd, sa)
							unix.Close(fd)
						}
					}
				case OpRecvMultishot:
					fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					if err != nil {
						t.Error(err)
						return
					}
					defer unix.Close(fds[0])
					defer unix.Close(fds[1])
					op = RecvMultishot(fds[0], br, 0)
					i := 0
					feed = func() {
						msg := fmt.Appendf(nil, "[%d]", i)
						i++
						if n, err := unix.Write(fds[1], msg); err == nil {
							mu.Lock()
							rec.sent = append(rec.sent, msg[:n]...)
							mu.Unlock()
						}
					}
					endStream = func() { unix.Shutdown(fds[1], unix.SHUT_WR) }
				}
				op = op.WithToken(tok)
				if rng.IntN(4) == 0 {
					op = op.WithDeadline(time.Duration(rng.IntN(3000)) * time.Microsecond)
				}
				mu.Lock()
				q, err := r.Submit(op)
				if err != nil {
					mu.Unlock()
					t.Errorf("submit %v: %v", kind, err)
					return
				}
				recs[q] = rec
				mu.Unlock()
				for range rng.IntN(6) {
					feed()
					if rng.IntN(2) == 0 {
						time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
					}
				}
				switch rng.IntN(4) {
				case 0:
					q.Cancel()
				case 1:
					tok.Cancel()
				case 2:
					if endStream != nil {
						endStream()
					} else {
						q.Cancel()
					}
				default:
					go q.Cancel() // from another goroutine, at its own moment
				}
				// Wait for its final completion before the next round
				// closes its fds.
				deadline := time.Now().Add(10 * time.Second)
				for {
					mu.Lock()
					f := rec.finals
					mu.Unlock()
					if f > 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("%v: no final completion within 10s", kind)
						return
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	reaped.Wait()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, recs, rounds/workers*workers)
	for q, rec := range recs {
		assert.Equal(t, 1, rec.finals, "%v %v: finals", rec.kind, q)
		assert.NoError(t, rec.err)
		if consumers == 1 {
			assert.Zero(t, rec.after, "%v %v: completions after the final one", rec.kind, q)
			if rec.kind == OpRecvMultishot {
				assert.True(t, bytes.HasPrefix(rec.sent, rec.got.Bytes()), "%v: received %q of sent %q", q, rec.got.Bytes(), rec.sent)
			}
		} else if rec.kind == OpRecvMultishot {
			assert.LessOrEqual(t, rec.got.Len(), len(rec.sent), "%v: no byte twice", q)
		}
	}
	assertSettled(t, r)
	assert.NoError(t, br.Close(), "every buffer is back and no request uses it")
}

// A consumer that falls more than maxUndelivered completions behind ends
// its multishot request with ErrOverrun, which is not ErrCanceled.
func TestConformanceMultishotOverrun(t *testing.T) {
	saved := maxUndelivered
	maxUndelivered = 8
	t.Cleanup(func() { maxUndelivered = saved })
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		efd := eventFD(t)
		q, err := r.Submit(PollMultishot(efd, unix.POLLIN))
		require.NoError(t, err)
		// Wake-ups nobody reaps: on io_uring they wait in the kernel's
		// completion ring, and the first reap takes them all in.
		wake := func() {
			for range 24 {
				signal(t, efd)
				time.Sleep(300 * time.Microsecond)
			}
		}
		wake()
		shots, rounds := 0, 1
		for {
			var cs [1]Completion
			n, err := r.Reap(cs[:], 50*time.Millisecond)
			require.NoError(t, err)
			if n == 0 {
				// Wake-ups that come while the last one is not yet taken
				// in (the poller, or the kernel's task work, ran late on
				// a loaded machine) make one shot between them, as on
				// io_uring: fewer than the bound may be waiting. Wake it
				// more, still without reaping, until they are not.
				require.Less(t, rounds, 40, "no overrun after %d wake-ups", 24*rounds)
				wake()
				rounds++
				continue
			}
			c := cs[0]
			require.Equal(t, q, c.Req)
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrOverrun)
				assert.NotErrorIs(t, c.Err, ErrCanceled)
				assert.ErrorIs(t, c.Err, unix.ECANCELED)
				break
			}
			shots++
		}
		assert.Greater(t, shots, 8, "more than the bound waited")
		assertNoMore(t, r)
		st := r.Stats()
		assert.Zero(t, st.Canceled, "an overrun is not a cancel")
		assert.Zero(t, st.TimedOut)
	})
}

// mapped reports whether addr lies in one of the process's mappings.
func mapped(t *testing.T, addr uintptr) bool {
	maps, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	for line := range strings.Lines(string(maps)) {
		var lo, hi uintptr
		if _, err := fmt.Sscanf(line, "%x-%x", &lo, &hi); err == nil && addr >= lo && addr < hi {
			return true
		}
	}
	return false
}

// The provided-buffer rings' mappings go with BufRing.Close, and those
// left open go with Ring.Close; buffers handed out stay readable.
func TestBufRingMappings(t *testing.T) {
	r, err := New(Config{Entries: 8, Backend: BackendURing})
	require.NoError(t, err)
	a, err := r.NewBufRing(64, 128)
	require.NoError(t, err)
	b, err := r.NewBufRing(1, 1)
	require.NoError(t, err)
	addrOf := func(br *BufRing) uintptr {
		return uintptr(br.k.(uringBufRing).p.Addr())
	}
	aa, ba := addrOf(a), addrOf(b)
	require.True(t, mapped(t, aa))
	require.True(t, mapped(t, ba))
	require.NoError(t, a.Close())
	assert.False(t, mapped(t, aa), "unmapped by BufRing.Close")
	assert.ErrorIs(t, a.Close(), ErrClosed)
	c, err := r.NewBufRing(2, 8) // takes a's group again
	require.NoError(t, err)
	assert.Equal(t, a.group, c.group)
	require.NoError(t, r.Close())
	assert.False(t, mapped(t, ba), "unmapped by Ring.Close")
	assert.ErrorIs(t, b.Release(0), ErrClosed)
	assert.Len(t, b.Buf(0), 1, "the memory stays the caller's")
	_, err = r.NewBufRing(2, 8)
	assert.ErrorIs(t, err, ErrClosed)
}

// NewBufRing refuses bad sizes.
func TestBufRingInvalid(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		for _, cs := range [][2]int{{0, 8}, {3, 8}, {65536, 8}, {4, 0}, {4, -1}, {1024, 1 << 21}} {
			_, err := r.NewBufRing(cs[0], cs[1])
			assert.ErrorIs(t, err, ErrInvalid, "count %d size %d", cs[0], cs[1])
		}
		br, err := r.NewBufRing(2, 8)
		require.NoError(t, err)
		assert.ErrorIs(t, br.Release(0), ErrInvalid, "never handed out")
		assert.ErrorIs(t, br.Release(9), ErrInvalid, "out of range")
		assert.Nil(t, br.Buf(2))
		assert.Nil(t, br.Bytes(Completion{N: 3}))
	})
}

// Close ends multishot requests like any other (clause 6): their results
// and their final completion stay for Reap, the buffers they carry stay
// readable, and the BufRing is closed with the ring.
func TestConformanceMultishotCloseDrains(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(4, 16)
		require.NoError(t, err)
		a, b := socketpair(t, unix.SOCK_STREAM)
		q, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		efd := eventFD(t)
		p, err := r.Submit(PollMultishot(efd, unix.POLLIN))
		require.NoError(t, err)
		unix.Write(b, []byte("kept"))
		signal(t, efd)
		// Both results are in before Close: on io_uring once a reap took
		// them from the kernel.
		seen := map[Request][]Completion{}
		var cs [8]Completion
		require.Eventually(t, func() bool {
			if n, _ := r.Reap(cs[:1], 0); n == 1 { // takes in, delivers one
				seen[cs[0].Req] = append(seen[cs[0].Req], cs[0])
			}
			return !readable(t, a)
		}, 10*time.Second, time.Millisecond)
		require.NoError(t, r.Close())
		for {
			n, err := r.Reap(cs[:], time.Second)
			if err != nil {
				require.ErrorIs(t, err, ErrClosed)
				break
			}
			for _, c := range cs[:n] {
				seen[c.Req] = append(seen[c.Req], c)
			}
		}
		for _, req := range []Request{q, p} {
			got := seen[req]
			if assert.NotEmpty(t, got) {
				last := got[len(got)-1]
				assert.False(t, last.More, "the final completion comes last")
				assert.ErrorIs(t, last.Err, ErrCanceled)
				for _, c := range got[:len(got)-1] {
					assert.True(t, c.More)
				}
			}
		}
		var data []byte
		for _, c := range seen[q] {
			if c.Buffer {
				data = append(data, br.Bytes(c)...) // readable after Close
				assert.ErrorIs(t, br.Release(c.BufID), ErrClosed)
			}
		}
		assert.Equal(t, "kept", string(data))
		assert.Zero(t, r.InFlight())
	})
}

// A regular file is always ready and has nothing to stay armed on: a
// multishot poll on it ends at once, its final completion carrying the
// ready events, on both backends (io_uring's behaviour, which the poll
// backend, whose epoll refuses such files, copies).
func TestConformanceMultishotPollRegularFile(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("x"))
		q, err := r.Submit(PollMultishot(fd, unix.POLLIN))
		require.NoError(t, err)
		c := reapFinal(t, r, q)
		require.NoError(t, c.Err)
		assert.NotZero(t, c.N&unix.POLLIN)
		assertNoMore(t, r)
		assert.ErrorIs(t, q.Cancel(), ErrNotFound)
	})
}

// An accept or a receive on an fd that is no socket ends at once with
// ENOTSOCK, its only completion, on both backends.
func TestConformanceMultishotNotSocket(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(2, 8)
		require.NoError(t, err)
		rd, _ := pipe(t)
		for _, op := range []Op{AcceptMultishot(rd, 0), RecvMultishot(rd, br, 0)} {
			q, err := r.Submit(op)
			require.NoError(t, err)
			c := reapFinal(t, r, q)
			assert.ErrorIs(t, c.Err, unix.ENOTSOCK, "%v", op.Code())
			var ioe *IOError
			if assert.ErrorAs(t, c.Err, &ioe) {
				assert.Equal(t, rd, ioe.FD)
			}
		}
		assertNoMore(t, r)
	})
}

// A multishot request's results cost no allocation once it runs: on
// io_uring, each of them from the CQE to Reap; on the poll backend the
// count is logged (its poller and timers are Go's).
func TestConformanceMultishotZeroAllocs(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(8, 64)
		require.NoError(t, err)
		a, b := socketpair(t, unix.SOCK_STREAM)
		efd := eventFD(t)
		pq, err := r.Submit(PollMultishot(efd, unix.POLLIN))
		require.NoError(t, err)
		rq, err := r.Submit(RecvMultishot(a, br, 0))
		require.NoError(t, err)
		msg, one := []byte("frame"), []byte{1, 0, 0, 0, 0, 0, 0, 0}
		var c [1]Completion
		for name, fire := range map[string]func(){
			"poll-multishot": func() { unix.Write(efd, one) },
			"recv-multishot": func() { unix.Write(b, msg) },
		} {
			allocs := testing.AllocsPerRun(300, func() {
				fire()
				if n, err := r.Reap(c[:], -1); n != 1 || err != nil || !c[0].More {
					t.Fatal(n, err, c[0])
				}
				if c[0].Buffer {
					br.Release(c[0].BufID)
				}
			})
			if r.Backend().Backend == BackendURing {
				assert.Zero(t, allocs, "%s: allocations per result", name)
			} else {
				t.Logf("%s: %.1f allocations per result", name, allocs)
			}
		}
		_, err = r.Cancel(pq, rq)
		require.NoError(t, err)
		for finals := 0; finals < 2; { // results that came twice first
			c := reapOne(t, r)
			if !c.More {
				finals++
			}
		}
		assertNoMore(t, r)
	})
}

// Close while multishot requests are busy (a feeder keeps them firing):
// each still ends with exactly one final completion, after its others.
func TestConformanceMultishotCloseBusy(t *testing.T) {
	for range 5 {
		forEachBackend(t, 32, func(t *testing.T, r *Ring) {
			br, err := r.NewBufRing(64, 16)
			require.NoError(t, err)
			a, b := socketpair(t, unix.SOCK_STREAM)
			efd := eventFD(t)
			l, sa := tcpListener(t, 64, 0)
			reqs := map[Request]int{}
			for _, op := range []Op{RecvMultishot(a, br, 0), PollMultishot(efd, unix.POLLIN), AcceptMultishot(l, 0)} {
				q, err := r.Submit(op)
				require.NoError(t, err)
				reqs[q] = 0
			}
			stop := make(chan struct{})
			var fed sync.WaitGroup
			fed.Add(1)
			go func() {
				defer fed.Done()
				one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
				for {
					select {
					case <-stop:
						return
					default:
					}
					unix.SendmsgN(b, []byte("data"), nil, nil, unix.MSG_DONTWAIT) // never blocks the feeder
					unix.Write(efd, one)
					if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err == nil {
						unix.Connect(fd, sa)
						unix.Close(fd)
					}
				}
			}()
			time.Sleep(5 * time.Millisecond)
			var cs [64]Completion
			done := make(chan struct{})
			go func() { // a consumer racing with Close
				defer close(done)
				for {
					n, err := r.Reap(cs[:], time.Second)
					if err != nil {
						return
					}
					for _, c := range cs[:n] {
						if _, ok := reqs[c.Req]; !ok || reqs[c.Req] > 0 {
							t.Errorf("completion %+v after the final one, or of no request", c)
						}
						if !c.More {
							reqs[c.Req]++
						}
						if c.Op == OpAcceptMultishot && c.Err == nil && c.N > 0 {
							unix.Close(c.N)
						}
					}
				}
			}()
			require.NoError(t, r.Close())
			close(stop)
			fed.Wait()
			<-done
			for q, finals := range reqs {
				assert.Equal(t, 1, finals, "%v", q)
			}
		})
	}
}
