//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Multishot requests (PollMultishot, AcceptMultishot, RecvMultishot with a
// BufRing) kept armed (submitted again after each final completion) while
// producers flood them, a consumer reaps slowly and gives buffers back
// late, cancels, deadlines and tokens end them at random, the peer goes
// away, and the ring is closed at a random moment. Whatever happens:
//   - each request delivers its More completions and then exactly one
//     final completion, nothing after it;
//   - a buffer is never handed out again before it was given back;
//   - the bytes received, in delivery order, are a prefix of the sender's
//     stream (no gap, no duplicate);
//   - every accepted connection is delivered once (its fd is ours);
//   - the final errors are those the contract names.

type adv12MS struct {
	t      *testing.T
	r      *Ring
	seed   uint64
	l      *adv12Ledger
	br     *BufRing
	key    uint32
	closed atomic.Bool // the ring's Close has been called

	mu     sync.Mutex
	kind   map[int]Opcode
	nextID int
	out    map[uint16]bool // buffers handed to us and not given back
	late   []uint16        // buffers to give back later
	recvd  bytes.Buffer    // bytes received through the ring, in order
	live   map[Opcode]bool // a request of this kind is armed
	fds    []int           // accepted connections, closed at the end
	finals map[string]int  // count of final results by kind
	txDone <-chan struct{} // closed once the sender closed its end
}

func (m *adv12MS) txGone() bool {
	select {
	case <-m.txDone:
		return true
	default:
		return false
	}
}

func (m *adv12MS) submit(op Op, code Opcode, rng *rand.Rand, toks []*Token) {
	m.mu.Lock()
	id := m.nextID
	m.nextID++
	m.kind[id] = code
	m.live[code] = true
	m.mu.Unlock()
	switch rng.IntN(5) {
	case 0:
		op = op.WithDeadline(time.Duration(1+rng.IntN(30)) * time.Millisecond)
	case 1:
		op = op.WithToken(toks[rng.IntN(len(toks))])
	}
	q, err := m.r.Submit(op.WithUser(id))
	if err != nil {
		m.mu.Lock()
		m.live[code] = false
		m.mu.Unlock()
		if errors.Is(err, ErrClosed) && m.closed.Load() {
			return
		}
		m.t.Errorf("seed %d: submit %v: %v", m.seed, code, err)
		return
	}
	m.l.accept(id, q)
}

// take records one completion; it reports the kind of a request that
// has ended (0 otherwise).
func (m *adv12MS) take(c Completion) Opcode {
	id := m.l.got(c, "reap")
	m.mu.Lock()
	defer m.mu.Unlock()
	code := m.kind[id]
	if c.Op != code {
		m.t.Errorf("seed %d: request %d of %v delivered as %v", m.seed, id, code, c.Op)
	}
	if c.Buffer {
		if code != OpRecvMultishot {
			m.t.Errorf("seed %d: %v completion with a buffer: %s", m.seed, code, adv12Res(c))
		} else if m.out[c.BufID] {
			m.t.Errorf("seed %d: buffer %d handed out again before it was given back: %s", m.seed, c.BufID, adv12Res(c))
		} else {
			m.out[c.BufID] = true
			m.recvd.Write(m.br.Bytes(c))
			m.late = append(m.late, c.BufID)
		}
	}
	if code == OpAcceptMultishot && c.Err == nil && c.N > 0 {
		m.fds = append(m.fds, c.N)
	}
	if c.More {
		if c.Err != nil {
			m.t.Errorf("seed %d: More completion with an error: %s", m.seed, adv12Res(c))
		}
		return 0
	}
	m.live[code] = false
	var what string
	switch {
	case c.Err == nil:
		what = "ok"
		switch {
		case code == OpAcceptMultishot && c.N <= 0:
			m.t.Errorf("seed %d: accept's final completion with no error and no connection: %s", m.seed, adv12Res(c))
		case code == OpRecvMultishot && c.N == 0 && !m.txGone():
			m.t.Errorf("seed %d: receive ended with 0 (end of stream) while the sender's end is open: %s", m.seed, adv12Res(c))
		case code == OpPollMultishot && c.N&unix.POLLIN == 0:
			m.t.Errorf("seed %d: poll's final completion with no error and no POLLIN: %s", m.seed, adv12Res(c))
		}
	case errors.Is(c.Err, ErrOverrun):
		what = "overrun"
		if errors.Is(c.Err, ErrCanceled) {
			m.t.Errorf("seed %d: ErrOverrun matches ErrCanceled", m.seed)
		}
	case errors.Is(c.Err, ErrTimeout):
		what = "timeout"
	case errors.Is(c.Err, ErrCanceled):
		what = "canceled"
	case errors.Is(c.Err, unix.ENOBUFS) && code == OpRecvMultishot:
		what = "enobufs"
	case (errors.Is(c.Err, unix.ECONNRESET) || errors.Is(c.Err, unix.EPIPE)) && code == OpRecvMultishot:
		what = "reset"
	default:
		m.t.Errorf("seed %d: %v: unexpected final error: %s", m.seed, code, adv12Res(c))
		what = "bad"
	}
	m.finals[code.String()+":"+what]++
	return code
}

// release gives back the buffers held longest, leaving keep of them out.
func (m *adv12MS) release(keep int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.late) > keep {
		id := m.late[0]
		m.late = m.late[1:]
		delete(m.out, id)
		if err := m.br.Release(id); err != nil && !(errors.Is(err, ErrClosed) && m.closed.Load()) {
			m.t.Errorf("seed %d: Release(%d): %v", m.seed, id, err)
		}
	}
}

func TestAdv12MultishotChaos(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			seed := adv12Seed(t)
			for round := range 4 {
				adv12MultishotRound(t, b, seed+uint64(round))
				if t.Failed() {
					return
				}
			}
		})
	}
}

func adv12MultishotRound(t *testing.T, b Backend, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 31))
	crng := rand.New(rand.NewPCG(seed, 32))
	r := adv12Ring(t, b, 16)
	m := &adv12MS{t: t, r: r, seed: seed, l: newAdv12Ledger(t), key: uint32(seed),
		kind: map[int]Opcode{}, out: map[uint16]bool{}, live: map[Opcode]bool{}, finals: map[string]int{}}
	var err error
	m.br, err = r.NewBufRing(8, 1+rng.IntN(256))
	if errors.Is(err, ErrNotSupported) {
		t.Skip(err)
	}
	require.NoError(t, err)
	toks := []*Token{r.NewToken(), r.NewToken()}

	// The producers.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	require.NoError(t, err)
	defer unix.Close(efd)
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(lfd, 64))
	sa, err := unix.Getsockname(lfd)
	require.NoError(t, err)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	rx, tx := sp[0], sp[1]
	defer unix.Close(rx)
	txClosed := make(chan struct{})
	txClosing := make(chan struct{}) // closed just before tx is
	m.txDone = txClosing
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	var sent atomic.Int64
	closeTxAt := rng.IntN(3) // 0: the sender closes its end midway
	prng := [3]*rand.Rand{rand.New(rand.NewPCG(seed, 33)), rand.New(rand.NewPCG(seed, 34)), rand.New(rand.NewPCG(seed, 35))}
	pwg.Add(3)
	go func() { // eventfd: floods of wake-ups
		defer pwg.Done()
		one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for range prng[0].IntN(200) {
				unix.Write(efd, one)
			}
			var v [8]byte
			unix.Read(efd, v[:]) // keep the counter from saturating
			time.Sleep(time.Duration(prng[0].IntN(500)) * time.Microsecond)
		}
	}()
	go func() { // connections
		defer pwg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(prng[1].IntN(2000)) * time.Microsecond):
			}
			c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				continue
			}
			// Bounded: once the ring is closed nobody accepts, the
			// backlog fills, and a blocking connect would wait for TCP's
			// SYN retries (minutes; seen on 386, where the round's
			// Close comes later and more connections pile up).
			tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
			_ = unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
			unix.Connect(c, sa)
			unix.Close(c)
		}
	}()
	go func() { // the stream
		defer pwg.Done()
		defer close(txClosed)
		defer func() { close(txClosing); unix.Close(tx) }()
		buf := make([]byte, 2048)
		off := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if closeTxAt == 0 && i == 50 {
				return
			}
			n := 1 + prng[2].IntN(len(buf))
			adv6Fill(m.key, off, buf[:n])
			var pfd = []unix.PollFd{{Fd: int32(tx), Events: unix.POLLOUT}}
			unix.Poll(pfd, 10)
			w, err := unix.SendmsgN(tx, buf[:n], nil, nil, unix.MSG_DONTWAIT)
			if w > 0 {
				off += w
				sent.Store(int64(off))
			}
			if err != nil && err != unix.EAGAIN && err != unix.EINTR {
				return
			}
			time.Sleep(time.Duration(prng[2].IntN(300)) * time.Microsecond)
		}
	}()

	arm := func() {
		m.mu.Lock()
		need := []Opcode{}
		for _, c := range []Opcode{OpPollMultishot, OpAcceptMultishot, OpRecvMultishot} {
			if !m.live[c] {
				need = append(need, c)
			}
		}
		m.mu.Unlock()
		for _, c := range need {
			if m.closed.Load() {
				return
			}
			switch c {
			case OpPollMultishot:
				m.submit(PollMultishot(efd, unix.POLLIN), c, rng, toks)
			case OpAcceptMultishot:
				m.submit(AcceptMultishot(lfd, 0), c, rng, toks)
			case OpRecvMultishot:
				m.submit(RecvMultishot(rx, m.br, 0), c, rng, toks)
			}
		}
	}

	// The canceler, and the Close at a random moment.
	cstop := make(chan struct{})
	var cwg sync.WaitGroup
	cwg.Add(2)
	go func() {
		defer cwg.Done()
		// Request.Cancel on requests found in the ledger.
		for {
			select {
			case <-cstop:
				return
			case <-time.After(time.Duration(crng.IntN(20000)) * time.Microsecond):
			}
			m.l.mu.Lock()
			var qs []Request
			for _, q := range m.l.accepted {
				qs = append(qs, q)
			}
			m.l.mu.Unlock()
			if len(qs) == 0 {
				continue
			}
			switch crng.IntN(4) {
			case 0:
				if err := toks[crng.IntN(len(toks))].Cancel(); err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("Token.Cancel: %v", err)
				}
			default:
				if err := qs[crng.IntN(len(qs))].Cancel(); err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
					t.Errorf("Cancel: %v", err)
				}
			}
		}
	}()
	closeAfter := time.Duration(50+rng.IntN(250)) * time.Millisecond
	closeErr := make(chan error, 1)
	go func() {
		defer cwg.Done()
		time.Sleep(closeAfter)
		m.closed.Store(true)
		closeErr <- r.Close()
	}()

	// The consumer: slow, gives buffers back late, rearms what ended,
	// resets canceled tokens.
	dst := make([]Completion, 1+rng.IntN(8))
	deadline := time.Now().Add(adv12Hang)
	arm()
	for {
		if time.Now().After(deadline) {
			t.Fatalf("seed %d: the consumer did not see the ring close within %v", seed, adv12Hang)
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
		}
		n, err := r.Reap(dst, time.Duration(rng.IntN(5))*time.Millisecond)
		ended := false
		for _, c := range dst[:n] {
			if m.take(c) != 0 {
				ended = true
			}
		}
		m.release(rng.IntN(8))
		if err != nil {
			require.ErrorIs(t, err, ErrClosed, "seed %d", seed)
			break
		}
		for _, tk := range toks {
			if tk.Canceled() && tk.Pending() == 0 {
				tk.Reset()
			}
		}
		if ended || rng.IntN(10) == 0 {
			arm()
		}
	}
	close(cstop)
	cwg.Wait()
	if err := <-closeErr; err != nil {
		t.Errorf("seed %d: Close: %v", seed, err)
	}
	close(stop)
	pwg.Wait()
	m.l.check()
	for _, fd := range m.fds {
		unix.Close(fd)
	}
	// Bytes: what went through the ring is the start of the stream.
	<-txClosed
	got := m.recvd.Bytes()
	want := make([]byte, len(got))
	adv6Fill(m.key, 0, want)
	if !bytes.Equal(got, want) {
		at := 0
		for at < len(got) && got[at] == want[at] {
			at++
		}
		t.Errorf("seed %d: the %d bytes received differ from the stream at %d (%s)", seed, len(got), at, adv6Where(m.key, got[at:], int(sent.Load())))
	}
	assert.LessOrEqual(t, int64(len(got)), sent.Load())
	assert.Zero(t, r.InFlight())
	st := r.Stats()
	assert.Equal(t, st.Submitted, st.Completed, "Stats after Close: %+v", st)
	t.Logf("seed %d: close after %v; %d requests; finals %v; received %d of %d bytes; %d connections", seed, closeAfter, len(m.l.accepted), m.finals, len(got), sent.Load(), len(m.fds))
}
