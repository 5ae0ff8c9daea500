//go:build linux

package ioring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ordered stream requests (offset -1) on pipes, socketpairs and ptys,
// with cancels, deadlines, tokens, contexts and CancelAll arriving at
// random moments. Whatever happens:
//   - every accepted request delivers exactly one completion;
//   - the writes' bytes the reader got are exactly the writes' reported
//     prefixes (N bytes of each), in submission order: a write that
//     reports a cancel with fewer bytes than it moved, or a write handed
//     to the kernel out of turn, shows as a mismatch;
//   - the reads' bytes, in submission order, followed by what is left in
//     the fd, are exactly the writer's stream;
//   - among requests that moved data, completions are delivered in
//     submission order.

// adv12Kind is a kind of stream fd.
type adv12Kind int

const (
	adv12KPipe adv12Kind = iota
	adv12KUnix
	adv12KPty
)

func (k adv12Kind) String() string {
	return [...]string{"pipe", "unix", "pty"}[k]
}

// adv12Stream returns a writing end and a reading end of a fresh stream
// of kind k, both blocking, with little buffer room so that writes wait.
func adv12Stream(t *testing.T, k adv12Kind) (wr, rd int) {
	switch k {
	case adv12KPipe:
		rd, wr = adv12Pipe(t, 4096)
	case adv12KUnix:
		s, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		wr, rd = s[0], s[1]
		require.NoError(t, unix.SetsockoptInt(wr, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
		require.NoError(t, unix.SetsockoptInt(rd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096))
	case adv12KPty:
		// Written on the slave, read on the master.
		rd, wr = adv12Pty(t)
	}
	return wr, rd
}

// adv12EndStream ends the writing side so that the reader sees the end.
func adv12EndStream(k adv12Kind, wr int) {
	if k == adv12KUnix {
		unix.Shutdown(wr, unix.SHUT_WR)
	}
	unix.Close(wr)
}

// adv12Cancels fires cancels at random moments at the requests it is
// given: Request.Cancel, a Ring.Cancel of several, the token, CancelAll.
type adv12Cancels struct {
	mu   sync.Mutex
	reqs []Request
}

func (c *adv12Cancels) add(q Request) {
	c.mu.Lock()
	c.reqs = append(c.reqs, q)
	c.mu.Unlock()
}

func (c *adv12Cancels) run(t *testing.T, r *Ring, rng *rand.Rand, toks []*Token, stop <-chan struct{}, allowAll bool) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(time.Duration(rng.IntN(3000)) * time.Microsecond):
		}
		c.mu.Lock()
		n := len(c.reqs)
		var pick []Request
		for range 1 + rng.IntN(3) {
			if n > 0 {
				pick = append(pick, c.reqs[rng.IntN(n)])
			}
		}
		c.mu.Unlock()
		switch x := rng.IntN(20); {
		case x < 12 && len(pick) > 0:
			if err := pick[0].Cancel(); err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("Request.Cancel: %v", err)
			}
		case x < 16 && len(pick) > 0:
			if _, err := r.Cancel(pick...); err != nil {
				t.Errorf("Ring.Cancel: %v", err)
			}
		case x < 19:
			if err := toks[rng.IntN(len(toks))].Cancel(); err != nil {
				t.Errorf("Token.Cancel: %v", err)
			}
		default:
			if allowAll {
				if err := r.CancelAll(); err != nil {
					t.Errorf("CancelAll: %v", err)
				}
			}
		}
	}
}

// adv12Op decorates op at random: a deadline, a token (one of toks), a
// context bound to a token, or nothing. It returns what it chose.
func adv12Decorate(op Op, rng *rand.Rand, toks []*Token) (Op, string) {
	switch rng.IntN(6) {
	case 0:
		return op.WithDeadline(time.Duration(200+rng.IntN(20000)) * time.Microsecond), "deadline"
	case 1, 2:
		return op.WithToken(toks[rng.IntN(len(toks))]), "token"
	default:
		return op, "plain"
	}
}

// TestAdv12OrderedWritesAccounted submits bursts of ordered writes on a
// stream whose reader is slow, and cancels them at random. The reader's
// bytes must be each write's reported prefix, in submission order.
func TestAdv12OrderedWritesAccounted(t *testing.T) {
	for _, b := range backends {
		for _, k := range []adv12Kind{adv12KPipe, adv12KUnix, adv12KPty} {
			t.Run(fmt.Sprintf("backend=%v/%v", b, k), func(t *testing.T) {
				seed := adv12Seed(t)
				for round := range 3 {
					adv12OrderedWrites(t, b, k, seed+uint64(round))
					if t.Failed() {
						return
					}
				}
			})
		}
	}
}

func adv12OrderedWrites(t *testing.T, b Backend, k adv12Kind, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 12))
	crng := rand.New(rand.NewPCG(seed, 13))
	prng := rand.New(rand.NewPCG(seed, 14))
	r := adv12Ring(t, b, 128)
	wr, rd := adv12Stream(t, k)
	defer unix.Close(rd)
	l := newAdv12Ledger(t)
	toks := []*Token{r.NewToken(), r.NewToken(), r.NewToken()}
	ctxs := make([]context.CancelFunc, 0)
	defer func() {
		for _, c := range ctxs {
			c()
		}
	}()

	got := adv12ReadAll(rd, 1+prng.IntN(3000), func() time.Duration {
		if prng.IntN(4) == 0 {
			return time.Duration(prng.IntN(2000)) * time.Microsecond
		}
		return 0
	})

	const n = 60
	bufs := make([][]byte, n)
	how := make([]string, n)
	var waited sync.WaitGroup
	var cancels adv12Cancels
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() { defer cwg.Done(); cancels.run(t, r, crng, toks, stop, true) }()

	waitedRes := make(chan Completion, n)
	for i := range n {
		bufs[i] = make([]byte, 1+rng.IntN(6000))
		adv6Fill(uint32(seed)+uint32(i)*7919, 0, bufs[i])
		op, h := adv12Decorate(Write(wr, bufs[i], -1), rng, toks)
		how[i] = h
		if rng.IntN(5) == 0 {
			// A context bound to a token of its own, or Start and Wait
			// under a context.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(30000))*time.Microsecond)
			ctxs = append(ctxs, cancel)
			if rng.IntN(2) == 0 {
				tk := r.NewToken()
				stop := tk.Bind(ctx)
				ctxs = append(ctxs, func() { stop() })
				op = Write(wr, bufs[i], -1).WithToken(tk)
				how[i] = "bound"
			} else {
				q, err := r.Start(op.WithUser(i))
				require.NoError(t, err)
				l.accept(i, q)
				cancels.add(q)
				how[i] += "+wait"
				waited.Add(1)
				go func() {
					defer waited.Done()
					c, err := q.Wait(ctx)
					if err != nil {
						t.Errorf("Wait: %v", err)
						return
					}
					waitedRes <- c
				}()
				continue
			}
		}
		q, err := r.Submit(op.WithUser(i))
		require.NoError(t, err)
		l.accept(i, q)
		cancels.add(q)
		if rng.IntN(8) == 0 {
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		}
	}
	// Reap the queued ones (the waited ones arrive on waitedRes).
	deliveredOrder := []int{}
	dst := make([]Completion, 16)
	deadline := time.Now().Add(adv12Hang)
	for {
		for drained := false; !drained; {
			select {
			case c := <-waitedRes:
				l.got(c, "wait")
			default:
				drained = true
			}
		}
		if l.done() == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: only %d of %d writes completed within %v; InFlight %d", seed, l.done(), n, adv12Hang, r.InFlight())
		}
		m, err := r.Reap(dst, 20*time.Millisecond)
		require.NoError(t, err)
		for _, c := range dst[:m] {
			id := l.got(c, "reap")
			if c.N > 0 {
				deliveredOrder = append(deliveredOrder, id)
			}
		}
	}
	close(stop)
	cwg.Wait()
	waited.Wait()
	l.check()

	// Order: the queued writes that moved data were delivered in
	// submission order.
	for i := 1; i < len(deliveredOrder); i++ {
		if deliveredOrder[i] < deliveredOrder[i-1] {
			t.Errorf("seed %d: write %d (%s) delivered after write %d (%s), which was submitted after it", seed, deliveredOrder[i], how[deliveredOrder[i]], deliveredOrder[i-1], how[deliveredOrder[i-1]])
		}
	}

	// Bytes: what the reader got is each write's reported prefix.
	var want bytes.Buffer
	var lines []string
	for i := range n {
		c := l.final[i]
		switch {
		case c.Err == nil:
			if c.N != len(bufs[i]) && k != adv12KUnix && k != adv12KPipe {
				// A short write on a blocking fd is possible only when
				// interrupted; allowed, counted below.
			}
		case adv12IsCancel(c.Err):
		default:
			t.Errorf("seed %d: write %d (%s): unexpected error %v (n=%d)", seed, i, how[i], c.Err, c.N)
		}
		if c.N < 0 || c.N > len(bufs[i]) {
			t.Errorf("seed %d: write %d: N=%d of %d", seed, i, c.N, len(bufs[i]))
			continue
		}
		want.Write(bufs[i][:c.N])
		lines = append(lines, fmt.Sprintf("%d:%s:%d/%d:%v", i, how[i], c.N, len(bufs[i]), c.Err))
	}
	ncancel, npart := 0, 0
	for i := range n {
		if c := l.final[i]; c.Err != nil {
			ncancel++
			if c.N > 0 {
				npart++
			}
		} else if c.N < len(bufs[i]) {
			npart++
		}
	}
	t.Logf("seed %d: %d writes, %d canceled, %d partial", seed, n, ncancel, npart)
	adv12EndStream(k, wr)
	var stream []byte
	select {
	case stream = <-got:
	case <-time.After(adv12Hang):
		t.Fatalf("seed %d: the reader did not see the end", seed)
	}
	if !bytes.Equal(stream, want.Bytes()) {
		at := 0
		for at < len(stream) && at < want.Len() && stream[at] == want.Bytes()[at] {
			at++
		}
		// Which write's bytes are at the first difference?
		who, off := -1, 0
		for i := range n {
			if c := l.final[i]; at < off+c.N {
				who = i
				break
			} else {
				off += c.N
			}
		}
		t.Errorf("seed %d: the reader got %d bytes, the writes report %d; first difference at %d (write %d's range); writes: %v",
			seed, len(stream), want.Len(), at, who, lines)
	}
	assert.Eventually(t, func() bool { return r.InFlight() == 0 }, adv12Hang, time.Millisecond)
	require.NoError(t, r.Close())
}

// TestAdv12OrderedReadsAccounted submits ordered reads on a stream that a
// writer feeds in pieces, and cancels them at random. The reads' bytes in
// submission order, followed by what is left in the fd, must be the
// writer's stream; reads that got data are delivered in submission order.
func TestAdv12OrderedReadsAccounted(t *testing.T) {
	for _, b := range backends {
		for _, k := range []adv12Kind{adv12KPipe, adv12KUnix, adv12KPty} {
			t.Run(fmt.Sprintf("backend=%v/%v", b, k), func(t *testing.T) {
				seed := adv12Seed(t)
				for round := range 3 {
					adv12OrderedReads(t, b, k, seed+uint64(round))
					if t.Failed() {
						return
					}
				}
			})
		}
	}
}

func adv12OrderedReads(t *testing.T, b Backend, k adv12Kind, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 22))
	crng := rand.New(rand.NewPCG(seed, 23))
	wrng := rand.New(rand.NewPCG(seed, 24))
	r := adv12Ring(t, b, 128)
	wr, rd := adv12Stream(t, k)
	defer unix.Close(rd)
	wrClosed := false
	defer func() {
		if !wrClosed {
			unix.Close(wr)
		}
	}()
	l := newAdv12Ledger(t)
	toks := []*Token{r.NewToken(), r.NewToken()}
	key := uint32(seed)

	const n = 60
	bufs := make([][]byte, n)
	how := make([]string, n)
	total := 0
	for i := range n {
		bufs[i] = make([]byte, 1+rng.IntN(3000))
		total += len(bufs[i])
	}
	total = total * 3 / 4
	// The writer feeds the stream in pieces.
	wdone := make(chan error, 1)
	go func() {
		buf := make([]byte, 5000)
		off := 0
		for off < total {
			if wrng.IntN(3) == 0 {
				time.Sleep(time.Duration(wrng.IntN(1500)) * time.Microsecond)
			}
			m := min(1+wrng.IntN(len(buf)), total-off)
			adv6Fill(key, off, buf[:m])
			w, err := unix.Write(wr, buf[:m])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				wdone <- fmt.Errorf("write at %d: %w", off, err)
				return
			}
			off += w
		}
		wdone <- nil
	}()

	var cancels adv12Cancels
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() { defer cwg.Done(); cancels.run(t, r, crng, toks, stop, true) }()
	for i := range n {
		op, h := adv12Decorate(Read(rd, bufs[i], -1), rng, toks)
		how[i] = h
		q, err := r.Submit(op.WithUser(i))
		require.NoError(t, err)
		l.accept(i, q)
		cancels.add(q)
		if rng.IntN(6) == 0 {
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
		}
	}
	// Reap; the reader side drains what the reads leave once they are
	// all done. Reads waiting for data the writer never sends are
	// canceled once it has written everything.
	var deliveredOrder []int
	dst := make([]Completion, 16)
	deadline := time.Now().Add(adv12Hang)
	writerDone := false
	var lastAll time.Time
	for l.done() < n {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: only %d of %d reads completed within %v; InFlight %d", seed, l.done(), n, adv12Hang, r.InFlight())
		}
		if !writerDone {
			select {
			case err := <-wdone:
				require.NoError(t, err)
				writerDone = true
			default:
			}
		}
		if writerDone && time.Since(lastAll) > 100*time.Millisecond {
			lastAll = time.Now()
			require.NoError(t, r.CancelAll())
		}
		m, err := r.Reap(dst, 20*time.Millisecond)
		require.NoError(t, err)
		for _, c := range dst[:m] {
			id := l.got(c, "reap")
			if c.N > 0 {
				deliveredOrder = append(deliveredOrder, id)
			}
		}
	}
	close(stop)
	cwg.Wait()
	l.check()
	// The ring has let go of rd: drain it directly, which lets a writer
	// blocked on a full stream finish, then end the stream.
	rest := adv12ReadAll(rd, 4096, func() time.Duration { return 0 })
	if !writerDone {
		select {
		case err := <-wdone:
			require.NoError(t, err)
		case <-time.After(adv12Hang):
			t.Fatalf("seed %d: the writer did not finish", seed)
		}
	}
	adv12EndStream(k, wr)
	wrClosed = true
	for i := 1; i < len(deliveredOrder); i++ {
		if deliveredOrder[i] < deliveredOrder[i-1] {
			t.Errorf("seed %d: read %d (%s) delivered after read %d (%s), which was submitted after it", seed, deliveredOrder[i], how[deliveredOrder[i]], deliveredOrder[i-1], how[deliveredOrder[i-1]])
		}
	}
	var got bytes.Buffer
	var lines []string
	ncancel := 0
	for i := range n {
		c := l.final[i]
		if c.Err != nil {
			ncancel++
			if !adv12IsCancel(c.Err) {
				t.Errorf("seed %d: read %d (%s): unexpected error %v", seed, i, how[i], c.Err)
			}
		}
		if c.N < 0 || c.N > len(bufs[i]) {
			t.Errorf("seed %d: read %d: N=%d of %d", seed, i, c.N, len(bufs[i]))
			continue
		}
		got.Write(bufs[i][:c.N])
		lines = append(lines, fmt.Sprintf("%d:%s:%d/%d:%v", i, how[i], c.N, len(bufs[i]), c.Err))
	}
	fromRing := got.Len()
	select {
	case b := <-rest:
		got.Write(b)
	case <-time.After(adv12Hang):
		t.Fatalf("seed %d: draining the rest did not end", seed)
	}
	want := make([]byte, total)
	adv6Fill(key, 0, want)
	t.Logf("seed %d: %d reads, %d canceled, %d bytes through the ring, %d left", seed, n, ncancel, fromRing, got.Len()-fromRing)
	if !bytes.Equal(got.Bytes(), want) {
		at := 0
		for at < got.Len() && at < len(want) && got.Bytes()[at] == want[at] {
			at++
		}
		t.Errorf("seed %d: got %d bytes (%d through the ring), the writer wrote %d; first difference at %d (%s); reads: %v",
			seed, got.Len(), fromRing, len(want), at, adv6Where(key, got.Bytes()[at:], total), lines)
	}
	assert.Eventually(t, func() bool { return r.InFlight() == 0 }, adv12Hang, time.Millisecond)
	require.NoError(t, r.Close())
}
