//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv6BurstSizes returns stream sizes around the multiples of size×32
// (the kernel's MULTISHOT_MAX_RETRY: a multishot receive takes at most 32
// buffers in one go before it is queued again) and of size×count (every
// buffer of the ring), up to limit bytes.
func adv6BurstSizes(size, count, limit int) []int {
	seen := map[int]bool{}
	var out []int
	for _, unit := range []int{size * 32, size * count} {
		for k := 1; k <= 3; k++ {
			for _, d := range []int{-1, 0, 1} {
				n := unit*k + d
				if n >= 1 && n <= limit && !seen[n] {
					seen[n] = true
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// TestAdv6RecvMultishotBurstBeforeSubmit: the peer sends the whole stream
// and shuts its side down before a RecvMultishot is submitted, for sizes
// around the multiples of the buffer size × 32 and × the buffer count,
// on AF_UNIX and loopback TCP stream sockets, with buffers given back as
// they come or only once the receive has ended (ENOBUFS, then submitted
// again). Every byte arrives once and in order, then the end of the
// stream, a final completion with 0, exactly once; nothing hangs; the
// ring's own cancel at the end (eofCheck) is not counted in
// Stats.Canceled; a Request.Cancel afterwards finds nothing.
// CANCELIO_SEED=<seed> repeats the order of the cases.
func TestAdv6RecvMultishotBurstBeforeSubmit(t *testing.T) {
	seed := adv6Seed(t)
	t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
	type bcase struct {
		tcp       bool
		size, cnt int
		total     int
		hold      bool
	}
	var cases []bcase
	for _, tcp := range []bool{false, true} {
		for _, size := range []int{1, 7, 64, 1000, 4096} {
			for _, cnt := range []int{1, 4, 32, 64} {
				for _, total := range adv6BurstSizes(size, cnt, 128<<10) {
					if total/size > 4096 {
						continue // too many results for the time
					}
					cases = append(cases, bcase{tcp, size, cnt, total, false}, bcase{tcp, size, cnt, total, true})
				}
			}
		}
	}
	rng := adv6Rand(seed, 0)
	rng.Shuffle(len(cases), func(i, j int) { cases[i], cases[j] = cases[j], cases[i] })
	maps := uringMappings(t)
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		var tally adv6Tally
		start := time.Now()
		notBefore := 0
		for i, bc := range cases {
			name := fmt.Sprintf("case %d: tcp=%v %d buffers of %d, %d bytes, hold=%v", i, bc.tcp, bc.cnt, bc.size, bc.total, bc.hold)
			if !adv6Burst(t, r, name, uint32(seed)+uint32(i), bc.tcp, bc.size, bc.cnt, bc.total, bc.hold, &tally, &notBefore) {
				break
			}
		}
		t.Logf("%d cases in %v (%d written while receiving: did not fit the socket):%s",
			len(cases), time.Since(start).Round(time.Millisecond), notBefore, tally.String())
	})
	assert.Equal(t, maps, uringMappings(t), "io_uring mappings left after Close")
}

// adv6Burst runs one case; false when it failed.
func adv6Burst(t *testing.T, r *Ring, name string, key uint32, tcp bool, size, cnt, total int, hold bool, tally *adv6Tally, notBefore *int) bool {
	br, err := r.NewBufRing(cnt, size)
	if err != nil {
		require.ErrorIs(t, err, ErrNotSupported)
		t.Skipf("no provided-buffer rings: %v", err)
	}
	rx, tx := adv6Conn(t, tcp, false)
	defer unix.Close(rx)
	sent := make(chan error, 1)
	go func() {
		b := make([]byte, total)
		adv6Fill(key, 0, b)
		var err error
		for len(b) > 0 && err == nil {
			var k int
			k, err = unix.Write(tx, b)
			if err == unix.EINTR {
				err = nil
			}
			b = b[max(k, 0):]
		}
		if err == nil {
			err = unix.Shutdown(tx, unix.SHUT_WR)
		}
		sent <- err
	}()
	var werr error
	waited := false
	select {
	case werr = <-sent:
		waited = true
	case <-time.After(2 * time.Second):
		*notBefore++
	}
	defer func() {
		if !waited {
			unix.Shutdown(rx, unix.SHUT_RDWR)
			<-sent
		}
		unix.Close(tx)
	}()
	before := r.Stats()
	got, ends, subs, enobufs := 0, 0, 0, 0
	var held []uint16
	var last Request
	ok := func(cond bool, format string, args ...any) bool {
		if !cond {
			pend := last.Pending()
			inq, _ := unix.IoctlGetInt(rx, unix.SIOCINQ)
			t.Errorf("%s: %s\n  got %d of %d, %d ends, %d receives (%d ENOBUFS), last still pending %v, %d bytes in the socket, buffers held %d, stats %+v",
				name, fmt.Sprintf(format, args...), got, total, ends, subs, enobufs, pend, inq, len(held), r.Stats())
		}
		return cond
	}
	end := time.Now().Add(adv6Hang)
	var c Completion
	for ends == 0 {
		if !ok(subs < 3*total+10, "no progress") {
			break
		}
		q, err := r.Submit(RecvMultishot(rx, br, 0))
		if err != nil {
			require.ErrorIs(t, err, ErrNotSupported)
			t.Skipf("no multishot receive: %v", err)
		}
		subs++
		last = q
		for {
			var cs [1]Completion
			n, err := r.Reap(cs[:], time.Until(end))
			require.NoError(t, err)
			if !ok(n == 1, "no completion within %v", adv6Hang) {
				q.Cancel()
				for c := reapOne(t, r); c.More; c = reapOne(t, r) {
				}
				br.Close()
				return false
			}
			c = cs[0]
			if !ok(c.Req == q, "a completion of another request: %+v", c) {
				return false
			}
			if c.Buffer {
				b := br.Bytes(c)
				for i := range b {
					if b[i] != adv6Byte(key, got+i) {
						ok(false, "byte %d: the piece of %d bytes at %d is %s", got+i, len(b), got, adv6Where(key, b, total))
						br.Release(c.BufID)
						return false
					}
				}
				got += len(b)
				if hold {
					held = append(held, c.BufID)
				} else {
					require.NoError(t, br.Release(c.BufID))
				}
			}
			if !c.More {
				break
			}
			if !ok(c.Err == nil && c.Buffer && c.N > 0, "a result with More: %+v", c) {
				return false
			}
		}
		for _, id := range held {
			require.NoError(t, br.Release(id))
		}
		held = held[:0]
		switch {
		case c.Err == nil && c.N == 0 && !c.Buffer:
			ends++
		case errors.Is(c.Err, unix.ENOBUFS), errors.Is(c.Err, ErrOverrun):
			enobufs++
		case c.Err == nil:
			tally.add("final with data", 1)
		default:
			ok(false, "final completion %+v", c)
			br.Close()
			return false
		}
	}
	tally.add("receives", subs)
	tally.add("enobufs", enobufs)
	pass := ok(got == total, "the end of the stream after %d of %d bytes", got, total)
	pass = pass && ok(assert.ErrorIs(t, last.Cancel(), ErrNotFound), "a cancel after the end")
	pass = pass && ok(assertNoMoreQuiet(r), "a completion after the end")
	after := r.Stats()
	pass = pass && ok(after.Canceled == before.Canceled, "Stats.Canceled went up by %d: the ring's own cancel at the end counted", after.Canceled-before.Canceled)
	pass = pass && ok(after.TimedOut == before.TimedOut, "Stats.TimedOut went up")
	if !waited {
		werr = <-sent
		waited = true
	}
	pass = pass && ok(werr == nil, "writer: %v", werr)
	pass = pass && ok(br.Close() == nil, "BufRing.Close")
	return pass
}

// assertNoMoreQuiet reports whether no completion shows up for a moment.
func assertNoMoreQuiet(r *Ring) bool {
	var c [1]Completion
	n, err := r.Reap(c[:], 5*time.Millisecond)
	return err == nil && n == 0
}

// TestAdv6SubmitAfterCloseSaysClosed: after Ring.Close every call returns
// ErrClosed (contract rule 6), a RecvMultishot on a BufRing of the ring
// too. The BufRing was good input until Close closed it along with the
// ring, so the refusal is the ring's closing, not bad input. (Both
// backends refuse it with ErrInvalid, "closed BufRing": the op's check
// runs before the ring's closed state is looked at.)
func TestAdv6SubmitAfterCloseSaysClosed(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(2, 16)
		if err != nil {
			require.ErrorIs(t, err, ErrNotSupported)
			t.Skipf("no provided-buffer rings: %v", err)
		}
		a, _ := socketpair(t, unix.SOCK_STREAM)
		require.NoError(t, r.Close())
		_, err = r.Submit(Recv(a, make([]byte, 4), 0))
		assert.ErrorIs(t, err, ErrClosed, "Recv after Close")
		_, err = r.Submit(RecvMultishot(a, br, 0))
		assert.ErrorIs(t, err, ErrClosed, "RecvMultishot after Close, on a BufRing Close closed")
	})
}
