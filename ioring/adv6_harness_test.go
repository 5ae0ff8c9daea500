//go:build linux

package ioring

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The adv6 harness: seeded random programs over stream sockets (AF_UNIX
// socketpairs and loopback TCP), run on both backends. A peer writes a
// stream whose every byte depends on its offset, with pauses, then shuts
// its side down or closes it; a receiver takes it with Recv, Read at the
// current position, RecvMultishot into BufRings, or Start and Wait, while
// a canceler cancels at random moments. Whatever happens, the bytes the
// ring delivered, followed by what is left in the socket (read directly
// once the ring has let go of it), must be the peer's stream exactly: no
// gap, no duplicate, nothing out of order.

// adv6Seed returns the seed of the adv6 tests: CANCELIO_SEED when set (to
// replay a failure's random choices; the timing cannot be replayed), else
// one from the clock.
func adv6Seed(t *testing.T) uint64 { return envSeed(t, "CANCELIO_SEED") }

// adv6Hang bounds each phase of a round (receiving, draining, the peer's
// end): a round that takes longer fails with a dump of its state.
const adv6Hang = 15 * time.Second

// adv6Byte is byte i of the stream keyed key: a hash of the offset, so
// that a piece delivered twice, skipped or out of order never matches.
func adv6Byte(key uint32, i int) byte {
	x := uint32(i)*0x9E3779B1 + key
	x ^= x >> 15
	x *= 0x85EBCA6B
	x ^= x >> 13
	x *= 0xC2B2AE35
	x ^= x >> 16
	return byte(x)
}

// adv6Fill writes the stream's bytes from offset off into b.
func adv6Fill(key uint32, off int, b []byte) {
	for i := range b {
		b[i] = adv6Byte(key, off+i)
	}
}

// adv6Where says where b (a piece that did not match) occurs in the
// stream of total bytes, for the failure message: a duplicate or a gap
// shows as an offset before or after the expected one.
func adv6Where(key uint32, b []byte, total int) string {
	b = b[:min(len(b), 32)]
	if len(b) < 4 {
		return "too short to locate"
	}
	want := make([]byte, len(b))
	var at []string
	for off := 0; off+len(b) <= total && len(at) < 4; off++ {
		if adv6Byte(key, off) != b[0] {
			continue
		}
		adv6Fill(key, off, want)
		if bytes.Equal(want, b) {
			at = append(at, strconv.Itoa(off))
		}
	}
	if len(at) == 0 {
		return "nowhere in the stream"
	}
	return "at stream offset " + strings.Join(at, ", ")
}

// adv6RawTCPPair returns a connected pair of blocking loopback TCP
// sockets; the caller closes them.
func adv6RawTCPPair(t *testing.T) (a, b int) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(lfd, 1))
	sa, err := unix.Getsockname(lfd)
	require.NoError(t, err)
	cl, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	if err := unix.Connect(cl, sa); err != nil {
		unix.Close(cl)
		require.NoError(t, err, "connect")
	}
	srv, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	if err != nil {
		unix.Close(cl)
		require.NoError(t, err, "accept")
	}
	return cl, srv
}

// adv6Conn returns a receiving and a sending end of a fresh stream
// connection of the kind asked for; the caller closes both.
func adv6Conn(t *testing.T, tcp bool, swap bool) (rx, tx int) {
	if tcp {
		rx, tx = adv6RawTCPPair(t)
	} else {
		s, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		rx, tx = s[0], s[1]
	}
	if swap {
		rx, tx = tx, rx
	}
	return rx, tx
}

// adv6Peer is the writing side of a round: it writes the chunks (pausing
// before each as told), then ends the stream when told (end), by
// shutdown(SHUT_WR) or close. It owns its fd and closes it exactly once:
// at the end of the stream (close), or once quit is closed (shutdown).
type adv6Peer struct {
	fd     int
	key    uint32
	chunks []int
	pauses []time.Duration
	close  bool

	wrote atomic.Int64
	ended chan struct{} // closed once the stream has been ended
	done  chan error    // the peer's outcome, once it has closed its fd
}

// run writes, waits for endNow, ends the stream, and closes its fd once
// quit is closed (at once for a close). A write that fails because the
// receiver aborted the round (EPIPE, ECONNRESET) ends it quietly.
func (p *adv6Peer) run(endNow <-chan struct{}, quit <-chan struct{}) {
	var err error
	defer func() {
		if p.close {
			select {
			case <-p.ended:
			default:
				unix.Close(p.fd) // aborted before its end
			}
		} else {
			<-quit
			unix.Close(p.fd)
		}
		p.done <- err
	}()
	buf := make([]byte, 64<<10)
	off := 0
	for i, n := range p.chunks {
		if d := p.pauses[i]; d > 0 {
			time.Sleep(d)
		}
		b := buf[:n]
		adv6Fill(p.key, off, b)
		for len(b) > 0 {
			k, werr := unix.Write(p.fd, b)
			if werr == unix.EINTR {
				continue
			}
			if werr != nil {
				if werr == unix.EPIPE || werr == unix.ECONNRESET {
					return // the receiver gave up on the round
				}
				err = fmt.Errorf("write at %d: %w", off, werr)
				return
			}
			b = b[k:]
			off += k
			p.wrote.Store(int64(off))
		}
	}
	select {
	case <-endNow:
	case <-quit:
		err = errors.New("the round ended before the stream did")
		return
	}
	if p.close {
		err = unix.Close(p.fd)
	} else {
		err = unix.Shutdown(p.fd, unix.SHUT_WR)
	}
	close(p.ended)
}

// adv6Drain reads what is left of the stream from fd directly (the ring
// no longer holds a request on it) until its end, within adv6Hang, and
// returns it.
func adv6Drain(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64<<10)
	end := time.Now().Add(adv6Hang)
	for {
		left := time.Until(end)
		if left <= 0 {
			return out, fmt.Errorf("no end of stream within %v (%d bytes drained)", adv6Hang, len(out))
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(min(left, time.Second)/time.Millisecond)+1)
		if err == unix.EINTR || err == nil && n == 0 {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("poll: %w", err)
		}
		k, err := unix.Read(fd, buf)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read: %w", err)
		}
		if k == 0 {
			return out, nil
		}
		out = append(out, buf[:k]...)
	}
}

// adv6Errs collects errors of goroutines that must not stop the test.
type adv6Errs struct {
	mu   sync.Mutex
	errs []string
}

func (e *adv6Errs) add(format string, args ...any) {
	e.mu.Lock()
	e.errs = append(e.errs, fmt.Sprintf(format, args...))
	e.mu.Unlock()
}

func (e *adv6Errs) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.errs
	e.errs = nil
	return s
}

// adv6Outcome names a final completion for the logs.
func adv6Outcome(c Completion) string {
	switch {
	case c.Err == nil && c.N == 0 && !c.Buffer:
		return "end"
	case c.Err == nil:
		return fmt.Sprintf("n=%d", c.N)
	case errors.Is(c.Err, ErrOverrun):
		return "overrun"
	case errors.Is(c.Err, ErrTimeout):
		return "timeout"
	case errors.Is(c.Err, ErrCanceled):
		return "canceled"
	case errors.Is(c.Err, unix.ENOBUFS):
		return "enobufs"
	}
	return "error(" + c.Err.Error() + ")"
}

// adv6Tally counts outcomes across rounds for the log.
type adv6Tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (a *adv6Tally) add(k string, n int) {
	if n == 0 {
		return
	}
	a.mu.Lock()
	if a.m == nil {
		a.m = map[string]int{}
	}
	a.m[k] += n
	a.mu.Unlock()
}

func (a *adv6Tally) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.m))
	for k := range a.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, a.m[k])
	}
	return b.String()
}

// adv6Rand returns the random source of one round of a test seeded seed.
func adv6Rand(seed uint64, round int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, uint64(round)*0x9E3779B97F4A7C15+1))
}

// adv6Ctx returns a context that ends after d (never when d is 0) and its
// cancel.
func adv6Ctx(d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(context.Background(), d)
	}
	return context.WithCancel(context.Background())
}
