//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The adv12 harness: an exactly-once ledger keyed by the Completion's User
// value, seeds that can be replayed (CANCELIO_SEED; the timing cannot be),
// and a bound on every wait.

// adv12Hang bounds every wait of an adv12 test.
const adv12Hang = 20 * time.Second

// adv12Seed returns the seed of a round, logged so that a failure's
// random choices can be replayed.
func adv12Seed(t *testing.T) uint64 {
	s := envSeed(t, "CANCELIO_SEED")
	t.Logf("seed %d (CANCELIO_SEED=%d replays the choices)", s, s)
	return s
}

// adv12Ledger records which requests were accepted and what each
// delivered: exactly one final completion per accepted request, nothing
// for a request that was not accepted, nothing after a final one.
type adv12Ledger struct {
	mu       sync.Mutex
	t        testing.TB
	accepted map[int]Request
	final    map[int]Completion
	more     map[int][]Completion
	order    []int // ids in the order of their final completions
	bad      int
}

func newAdv12Ledger(t testing.TB) *adv12Ledger {
	return &adv12Ledger{t: t, accepted: map[int]Request{}, final: map[int]Completion{}, more: map[int][]Completion{}}
}

func (l *adv12Ledger) errorf(format string, args ...any) {
	l.bad++
	if l.bad <= 20 {
		l.t.Errorf(format, args...)
	}
}

func (l *adv12Ledger) accept(id int, q Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.accepted[id]; ok {
		l.errorf("ledger: id %d accepted twice", id)
	}
	l.accepted[id] = q
}

// got records a delivered completion; it returns the request's id.
func (l *adv12Ledger) got(c Completion, who string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	id, ok := c.User.(int)
	if !ok {
		l.errorf("%s: completion with no id of ours: %+v", who, c)
		return -1
	}
	q, ok := l.accepted[id]
	if !ok {
		l.errorf("%s: completion of request %d, which was never accepted: %+v", who, id, c)
		return id
	}
	if c.Req != q {
		l.errorf("%s: completion of request %d names %v, accepted as %v", who, id, c.Req, q)
	}
	if f, done := l.final[id]; done {
		l.errorf("%s: request %d delivered again after its final completion %s: %s", who, id, adv12Res(f), adv12Res(c))
		return id
	}
	if c.More {
		l.more[id] = append(l.more[id], c)
		return id
	}
	l.final[id] = c
	l.order = append(l.order, id)
	return id
}

// done reports how many accepted requests have delivered their final
// completion.
func (l *adv12Ledger) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.final)
}

// check verifies that every accepted request delivered its final
// completion.
func (l *adv12Ledger) check() {
	l.mu.Lock()
	defer l.mu.Unlock()
	var missing []int
	for id := range l.accepted {
		if _, ok := l.final[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		l.errorf("ledger: %d of %d accepted requests never delivered a final completion: %v", len(missing), len(l.accepted), missing[:min(len(missing), 20)])
	}
}

// adv12Res describes a completion briefly.
func adv12Res(c Completion) string {
	s := fmt.Sprintf("%v n=%d err=%v", c.Op, c.N, c.Err)
	if c.More {
		s += " more"
	}
	if c.Buffer {
		s += fmt.Sprintf(" buf=%d", c.BufID)
	}
	return s
}

// adv12Reap reaps until cond holds (checked after each batch), within
// adv12Hang, recording every completion in l.
func adv12Reap(t testing.TB, r *Ring, l *adv12Ledger, what string, cond func() bool) {
	t.Helper()
	dst := make([]Completion, 64)
	deadline := time.Now().Add(adv12Hang)
	for !cond() {
		if time.Now().After(deadline) {
			l.mu.Lock()
			t.Fatalf("%s: not done within %v: %d accepted, %d final; InFlight %d; Stats %+v", what, adv12Hang, len(l.accepted), len(l.final), r.InFlight(), r.Stats())
			l.mu.Unlock()
		}
		n, err := r.Reap(dst, 50*time.Millisecond)
		require.NoError(t, err, what)
		for i := range dst[:n] {
			l.got(dst[i], what)
			dst[i] = Completion{}
		}
	}
}

var adv12NetpollOnce sync.Once

// adv12Ring returns a fresh ring on backend b, closed with the test, and
// checks the fds around the test.
func adv12Ring(t *testing.T, b Backend, entries int) *Ring {
	// The runtime's netpoller opens its epoll fd and eventfd for good at
	// the first os.File that can poll (the ring's eventfd may be the
	// first): open them before the fds are counted.
	adv12NetpollOnce.Do(func() {
		if pr, pw, err := os.Pipe(); err == nil {
			pr.Close()
			pw.Close()
		}
	})
	fdcheck.Check(t)
	r, err := New(Config{Entries: entries, Backend: b})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// adv12IsCancel reports whether err is a cancel of any cause.
func adv12IsCancel(err error) bool {
	return errors.Is(err, ErrCanceled)
}

// adv12Pipe returns a pipe of capacity size (rounded up by the kernel to a
// page); the caller closes both ends.
func adv12Pipe(t testing.TB, size int) (rd, wr int) {
	var p [2]int
	require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
	if size > 0 {
		_, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size)
		require.NoError(t, err)
	}
	return p[0], p[1]
}

// adv12Pty returns the master and slave of a new pseudo-terminal in raw
// mode (no echo, no line discipline), both blocking; the caller closes
// them.
func adv12Pty(t testing.TB) (master, slave int) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		unix.Close(m)
		t.Fatalf("ptsname: %v", err)
	}
	s, err := unix.Open(fmt.Sprintf("/dev/pts/%d", n), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(m)
		t.Skipf("open pty slave: %v", err)
	}
	for _, fd := range []int{m, s} {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
		require.NoError(t, err)
		// cfmakeraw
		tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		tio.Oflag &^= unix.OPOST
		tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		tio.Cflag &^= unix.CSIZE | unix.PARENB
		tio.Cflag |= unix.CS8
		tio.Cc[unix.VMIN] = 1
		tio.Cc[unix.VTIME] = 0
		require.NoError(t, unix.IoctlSetTermios(fd, unix.TCSETS, tio))
	}
	return m, s
}

// adv12ReadAll reads fd directly until EOF (or EIO, a pty master whose
// slave closed), pausing as pause says before each read, and sends what
// it read on the returned channel.
func adv12ReadAll(fd int, chunk int, pause func() time.Duration) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		var got []byte
		buf := make([]byte, chunk)
		for {
			if d := pause(); d > 0 {
				time.Sleep(d)
			}
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if n <= 0 {
				break
			}
			got = append(got, buf[:n]...)
		}
		out <- got
	}()
	return out
}
