package bench

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// goroutinesImpl is the goroutine-per-request baseline: blocking system calls
// (golang.org/x/sys/unix) in goroutines, the runtime's thread hand-off doing
// the overlapping.
//
// Cancel: a read(2) blocked on a pipe cannot be canceled from outside.
// close(2) of the fd does not wake it (the read holds its own file reference;
// checked on Linux 6.18: it stays blocked), closing the write end gives
// end-of-file (not a cancel, and a driver does not own the far end of a USB
// endpoint), writing data is not a cancel, and signals would need per-thread
// delivery and SA_RESTART games. So each request blocks in ppoll(2) on
// {its fd, a shared eventfd} and reads only when its fd is readable; cancel
// writes the eventfd, which wakes every waiter at once (the shape libusb's
// event pipe has). That is the honest price of cancelable blocking I/O.
//
// CancelEach: each request waits on an eventfd of its own, and the cancel
// writes each request's eventfd, one write(2) per request.
//
// Over a socket (WorkloadSockPingPong) the ping-pong is the same blocking
// write(2) and read(2), which on a connected socket are send and recv
// without flags.
type goroutinesImpl struct{}

func init() { Register(goroutinesImpl{}) }

func (goroutinesImpl) Name() string { return "goroutines" }

func (goroutinesImpl) Supports(w Workload) bool {
	switch w {
	case WorkloadRead, WorkloadPingPong, WorkloadCancel, WorkloadCancelUnderLoad, WorkloadCancelEach, WorkloadSockPingPong:
		return true
	}
	return false
}

func (goroutinesImpl) NewNop(NopConfig) (Runner, error) { return nil, ErrUnsupported }

// grRead runs QD goroutines, each doing pread(2) of its share of the ops.
type grRead struct {
	cfg  ReadConfig
	bufs [][]byte
	errs []error
	pos  int // index into cfg.Offsets of the next op
	load *grLoad
}

func (goroutinesImpl) NewRead(cfg ReadConfig) (Runner, error) {
	if cfg.Fixed {
		return nil, ErrUnsupported
	}
	r := &grRead{cfg: cfg, bufs: make([][]byte, cfg.QD), errs: make([]error, cfg.QD)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, cfg.BlockSize)
	}
	var err error
	r.load, err = startGRLoad(cfg.Load)
	return r, err
}

func (r *grRead) Run(n int) error {
	var wg sync.WaitGroup
	qd := min(r.cfg.QD, n)
	for g := range qd {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.errs[g] = r.worker(g, qd, n)
		}()
	}
	wg.Wait()
	r.pos = (r.pos + n) % len(r.cfg.Offsets)
	return errors.Join(r.errs[:qd]...)
}

// worker does ops g, g+qd, g+2qd... < n.
func (r *grRead) worker(g, qd, n int) error {
	buf, offs := r.bufs[g], r.cfg.Offsets
	for i := g; i < n; i += qd {
		off := offs[(r.pos+i)%len(offs)]
		m, err := unix.Pread(r.cfg.FD, buf, off)
		if err == unix.EINTR {
			i -= qd
			continue
		}
		if err != nil {
			return fmt.Errorf("pread at %d: %w", off, err)
		}
		if m != len(buf) {
			return fmt.Errorf("pread at %d: short read of %d bytes", off, m)
		}
		if r.cfg.Verify {
			if err := CheckBlock(buf, off); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *grRead) Cancels() int64 { return r.load.cycles() }
func (r *grRead) Close() error   { return r.load.stop() }

// grPingPong writes and reads the pipes with blocking system calls.
type grPingPong struct {
	cfg      PingPongConfig
	msg, buf []byte
	seq      uint64
	load     *grLoad
}

func (goroutinesImpl) NewPingPong(cfg PingPongConfig) (Runner, error) {
	p := &grPingPong{cfg: cfg, msg: make([]byte, cfg.MsgSize), buf: make([]byte, cfg.MsgSize)}
	var err error
	p.load, err = startGRLoad(cfg.Load)
	return p, err
}

func (p *grPingPong) Run(n int) error {
	for range n {
		p.seq++
		if p.cfg.Verify {
			FillMessage(p.msg, p.seq)
		}
		if err := writeFull(p.cfg.PingFD, p.msg); err != nil {
			return err
		}
		for got := 0; got < len(p.buf); {
			m, err := unix.Read(p.cfg.PongFD, p.buf[got:])
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return fmt.Errorf("read pong: %w", err)
			}
			if m == 0 {
				return errors.New("read pong: unexpected end of file")
			}
			got += m
		}
		if p.cfg.Verify && string(p.buf) != string(p.msg) {
			return fmt.Errorf("pong %d differs from ping", p.seq)
		}
	}
	return nil
}

func (p *grPingPong) Cancels() int64 { return p.load.cycles() }
func (p *grPingPong) Close() error   { return p.load.stop() }

func writeFull(fd int, b []byte) error {
	for len(b) > 0 {
		m, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		b = b[m:]
	}
	return nil
}

// pollReaders are goroutines, one per fd, that on start block in ppoll(2) on
// {fd, efds[i]} and deliver one result to done. Writing efds[i] cancels
// reader i. Either all readers share one eventfd (cancelAll wakes them all
// with one write), or each has its own (cancelEach writes each).
type pollReaders struct {
	fds     []int
	efds    []int // len 1 (shared) or len(fds)
	start   []chan struct{}
	done    chan pollResult
	polling atomic.Int32 // readers started and about to enter ppoll
	exit    sync.WaitGroup
}

type pollResult struct {
	n        int
	canceled bool
	err      error
}

// newPollReaders starts a reader per fd; with each, every reader has an
// eventfd of its own.
func newPollReaders(fds []int, bufSize int, each bool) (*pollReaders, error) {
	nefd := 1
	if each {
		nefd = len(fds)
	}
	p := &pollReaders{fds: fds, done: make(chan pollResult, len(fds)), start: make([]chan struct{}, len(fds))}
	for range nefd {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			for _, fd := range p.efds {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("eventfd: %w", err)
		}
		p.efds = append(p.efds, efd)
	}
	p.exit.Add(len(fds))
	for i := range fds {
		p.start[i] = make(chan struct{}, 1)
		go p.reader(i, make([]byte, bufSize))
	}
	return p, nil
}

func (p *pollReaders) reader(i int, buf []byte) {
	defer p.exit.Done()
	pfd := []unix.PollFd{{Fd: int32(p.fds[i]), Events: unix.POLLIN}, {Fd: int32(p.efds[i%len(p.efds)]), Events: unix.POLLIN}}
	for range p.start[i] {
		p.done <- p.readOne(pfd, buf)
	}
}

func (p *pollReaders) readOne(pfd []unix.PollFd, buf []byte) pollResult {
	p.polling.Add(1)
	for {
		_, err := unix.Ppoll(pfd, nil, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return pollResult{err: fmt.Errorf("ppoll: %w", err)}
		}
		if pfd[0].Revents != 0 { // data wins a race with cancel: it is the real result
			n, err := unix.Read(int(pfd[0].Fd), buf)
			return pollResult{n: n, err: err}
		}
		if pfd[1].Revents != 0 {
			return pollResult{canceled: true}
		}
	}
}

// startAll starts every reader.
func (p *pollReaders) startAll() {
	p.polling.Store(0)
	for _, c := range p.start {
		c <- struct{}{}
	}
}

// waitBlocked returns once every reader is, as far as can be told cheaply,
// asleep in ppoll: each has counted itself in right before the system call
// (so the scheduler has run it), then a settle time of 20 µs plus 3 µs per
// reader covers the last instructions into the kernel. TestArmBlocksInPpoll
// checks in /proc that this is enough. A reader not yet asleep would only
// make the cancel look faster.
func (p *pollReaders) waitBlocked() error {
	deadline := time.Now().Add(10 * time.Second)
	for int(p.polling.Load()) < len(p.fds) {
		if time.Now().After(deadline) {
			return errors.New("readers did not start within 10s")
		}
		time.Sleep(10 * time.Microsecond)
	}
	time.Sleep(settleTime(len(p.fds)))
	return nil
}

// settleTime is how long Arm waits after the last goroutine said it is about
// to block.
func settleTime(n int) time.Duration {
	return 20*time.Microsecond + 3*time.Microsecond*time.Duration(n)
}

// eventOne is the 8-byte 1 written to an eventfd (eventfd counters are
// host-endian; amd64 and arm64 are little-endian).
var eventOne = [8]byte{1}

// cancelAll wakes every reader: one write, to the shared eventfd (or to
// each reader's, when they have their own).
func (p *pollReaders) cancelAll() error {
	var first error
	for _, efd := range p.efds {
		if _, err := unix.Write(efd, eventOne[:]); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// reset re-arms the eventfds once every reader has delivered.
func (p *pollReaders) reset() {
	var b [8]byte
	for _, efd := range p.efds {
		unix.Read(efd, b[:]) // EAGAIN if already zero
	}
}

// collect receives one result per reader and reports the first that is not
// a cancellation.
func (p *pollReaders) collect(k int) error {
	var first error
	for range k {
		r := <-p.done
		if !r.canceled && first == nil {
			if r.err != nil {
				first = fmt.Errorf("read: %w", r.err)
			} else {
				first = fmt.Errorf("read returned %d bytes instead of being canceled", r.n)
			}
		}
	}
	return first
}

func (p *pollReaders) close() error {
	for _, c := range p.start {
		close(c)
	}
	p.exit.Wait()
	var errs []error
	for _, efd := range p.efds {
		errs = append(errs, unix.Close(efd))
	}
	return errors.Join(errs...)
}

// grCancel is the cancel workload on pollReaders: one shared eventfd, or
// with Each one per reader, each written by itself.
type grCancel struct{ p *pollReaders }

func (goroutinesImpl) NewCancel(cfg CancelConfig) (CancelRunner, error) {
	p, err := newPollReaders(cfg.FDs, cfg.BufSize, cfg.Each)
	if err != nil {
		return nil, err
	}
	return &grCancel{p: p}, nil
}

func (c *grCancel) Arm() error {
	c.p.startAll()
	return c.p.waitBlocked()
}

func (c *grCancel) CancelAndWait() (time.Duration, error) {
	t0 := time.Now()
	err := c.p.cancelAll()
	if err != nil {
		return 0, fmt.Errorf("write eventfd: %w", err) // readers stay blocked; Close will end them
	}
	err = c.p.collect(len(c.p.fds))
	d := time.Since(t0)
	c.p.reset()
	return d, err
}

func (c *grCancel) Close() error {
	c.p.cancelAll() // in case a caller closes while armed
	return c.p.close()
}

// grLoad is the CancelLoad of the goroutine baseline: one pollReader on the
// empty pipe, started and canceled by a CancelLoop.
type grLoad struct {
	p    *pollReaders
	loop *CancelLoop
}

func startGRLoad(cfg CancelLoad) (*grLoad, error) {
	if cfg.Every <= 0 {
		return nil, nil
	}
	p, err := newPollReaders([]int{cfg.FD}, 64, false)
	if err != nil {
		return nil, err
	}
	l := &grLoad{p: p}
	l.loop = StartCancelLoop(cfg.Every, func() error {
		p.startAll()
		if err := p.cancelAll(); err != nil {
			return err
		}
		err := p.collect(1)
		p.reset()
		return err
	})
	return l, nil
}

func (l *grLoad) cycles() int64 {
	if l == nil {
		return 0
	}
	return l.loop.Cycles()
}

func (l *grLoad) stop() error {
	if l == nil {
		return nil
	}
	return errors.Join(l.loop.Stop(), l.p.close())
}
