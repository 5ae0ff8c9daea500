package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// netpollImpl is the standard-library baseline: *os.File, whose pollable fds
// (pipes made non-blocking) park goroutines on the runtime's netpoller, and
// SetReadDeadline with a time in the past as cancel (what Go's internal/poll
// offers instead of CancelIoEx). Regular files are not pollable: there
// os.File.ReadAt blocks a thread, as it does for every Go program.
//
// A deadline belongs to one file, so the cancel of several reads is always
// request by request, one SetReadDeadline each: Cancel and CancelEach run
// the same loop.
//
// Over a socket (WorkloadSockPingPong) it is Go's net package: a net.Conn
// made by net.FileConn from the socket, Write and io.ReadFull on it, parked
// on the same netpoller.
type netpollImpl struct{}

func init() { Register(netpollImpl{}) }

func (netpollImpl) Name() string { return "netpoll" }

func (netpollImpl) Supports(w Workload) bool {
	switch w {
	case WorkloadRead, WorkloadPingPong, WorkloadCancel, WorkloadCancelUnderLoad, WorkloadCancelEach, WorkloadSockPingPong:
		return true
	}
	return false
}

func (netpollImpl) NewNop(NopConfig) (Runner, error) { return nil, ErrUnsupported }

// pastDeadline is a deadline long gone: SetReadDeadline with it wakes a
// parked Read at once with os.ErrDeadlineExceeded.
var pastDeadline = time.Unix(1, 0)

// dupFile dups fd and wraps the copy in an *os.File; with nonblock the copy
// (and so fd: they share the open file description) is non-blocking, and the
// File uses the netpoller.
func dupFile(fd int, name string, nonblock bool) (*os.File, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup: %w", err)
	}
	if nonblock {
		if err := unix.SetNonblock(d, true); err != nil {
			unix.Close(d)
			return nil, err
		}
	}
	return os.NewFile(uintptr(d), name), nil
}

// npRead runs QD goroutines doing os.File.ReadAt.
type npRead struct {
	cfg  ReadConfig
	f    *os.File
	bufs [][]byte
	errs []error
	pos  int
	load *npLoad
}

func (netpollImpl) NewRead(cfg ReadConfig) (Runner, error) {
	if cfg.Fixed {
		return nil, ErrUnsupported
	}
	f, err := dupFile(cfg.FD, "data", false)
	if err != nil {
		return nil, err
	}
	r := &npRead{cfg: cfg, f: f, bufs: make([][]byte, cfg.QD), errs: make([]error, cfg.QD)}
	for i := range r.bufs {
		r.bufs[i] = make([]byte, cfg.BlockSize)
	}
	if r.load, err = startNPLoad(cfg.Load); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

func (r *npRead) Run(n int) error {
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

func (r *npRead) worker(g, qd, n int) error {
	buf, offs := r.bufs[g], r.cfg.Offsets
	for i := g; i < n; i += qd {
		off := offs[(r.pos+i)%len(offs)]
		if _, err := r.f.ReadAt(buf, off); err != nil { // ReadAt reads fully or fails
			return err
		}
		if r.cfg.Verify {
			if err := CheckBlock(buf, off); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *npRead) Cancels() int64 { return r.load.cycles() }

func (r *npRead) Close() error { return errors.Join(r.load.stop(), r.f.Close()) }

// npPingPong writes and reads non-blocking pipes through os.File, or a
// socket through a net.Conn.
type npPingPong struct {
	cfg      PingPongConfig
	ping     io.Writer
	pong     io.Reader
	closers  []io.Closer
	msg, buf []byte
	seq      uint64
	load     *npLoad
}

func (netpollImpl) NewPingPong(cfg PingPongConfig) (Runner, error) {
	p := &npPingPong{cfg: cfg, msg: make([]byte, cfg.MsgSize), buf: make([]byte, cfg.MsgSize)}
	if cfg.Socket {
		c, err := sockConn(cfg.PingFD)
		if err != nil {
			return nil, err
		}
		p.ping, p.pong, p.closers = c, c, []io.Closer{c}
	} else {
		ping, err := dupFile(cfg.PingFD, "ping", true)
		if err != nil {
			return nil, err
		}
		pong, err := dupFile(cfg.PongFD, "pong", true)
		if err != nil {
			ping.Close()
			return nil, err
		}
		p.ping, p.pong, p.closers = ping, pong, []io.Closer{ping, pong}
	}
	var err error
	if p.load, err = startNPLoad(cfg.Load); err != nil {
		return nil, errors.Join(err, p.closeFiles())
	}
	return p, nil
}

// sockConn returns a net.Conn on a dup of the socket fd (net.FileConn dups
// it again, and sets the shared file description non-blocking).
func sockConn(fd int) (net.Conn, error) {
	f, err := dupFile(fd, "sock", false)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return net.FileConn(f)
}

func (p *npPingPong) closeFiles() error {
	var errs []error
	for _, c := range p.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (p *npPingPong) Run(n int) error {
	for range n {
		p.seq++
		if p.cfg.Verify {
			FillMessage(p.msg, p.seq)
		}
		if _, err := p.ping.Write(p.msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(p.pong, p.buf); err != nil {
			return err
		}
		if p.cfg.Verify && string(p.buf) != string(p.msg) {
			return fmt.Errorf("pong %d differs from ping", p.seq)
		}
	}
	return nil
}

func (p *npPingPong) Cancels() int64 { return p.load.cycles() }

func (p *npPingPong) Close() error { return errors.Join(p.load.stop(), p.closeFiles()) }

// npReaders are goroutines, one per non-blocking pipe, each doing one
// os.File.Read per start and delivering its error to done.
type npReaders struct {
	files   []*os.File
	start   []chan struct{}
	done    chan error
	reading atomic.Int32 // readers that have been started and are about to Read
	exit    sync.WaitGroup
}

func newNPReaders(fds []int, bufSize int) (*npReaders, error) {
	r := &npReaders{start: make([]chan struct{}, len(fds)), done: make(chan error, len(fds))}
	for _, fd := range fds {
		f, err := dupFile(fd, "pipe", true)
		if err != nil {
			for _, f := range r.files {
				f.Close()
			}
			return nil, err
		}
		r.files = append(r.files, f)
	}
	r.exit.Add(len(fds))
	for i := range fds {
		r.start[i] = make(chan struct{}, 1)
		go r.reader(i, make([]byte, bufSize))
	}
	return r, nil
}

func (r *npReaders) reader(i int, buf []byte) {
	defer r.exit.Done()
	f := r.files[i]
	for range r.start[i] {
		r.reading.Add(1)
		n, err := f.Read(buf)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			r.done <- nil
		case err != nil:
			r.done <- err
		default:
			r.done <- fmt.Errorf("read returned %d bytes instead of being canceled", n)
		}
	}
}

// arm clears the deadlines and starts every reader.
func (r *npReaders) arm() error {
	r.reading.Store(0)
	for i, f := range r.files {
		if err := f.SetReadDeadline(time.Time{}); err != nil {
			return err
		}
		r.start[i] <- struct{}{}
	}
	return nil
}

// cancelAll sets a past deadline on every file: the netpoller wakes each
// parked Read with os.ErrDeadlineExceeded.
func (r *npReaders) cancelAll() error {
	var first error
	for _, f := range r.files {
		if err := f.SetReadDeadline(pastDeadline); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// collect receives k results and returns the first that is not a cancellation.
func (r *npReaders) collect(k int) error {
	var first error
	for range k {
		if err := <-r.done; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (r *npReaders) close() error {
	for _, c := range r.start {
		close(c)
	}
	r.exit.Wait()
	var errs []error
	for _, f := range r.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// npCancel is the cancel workload on npReaders (Each or not: see
// netpollImpl). Arm cannot observe that a
// goroutine is parked in the netpoller; it waits until every reader has
// started its Read, then sleeps 20 µs plus 3 µs per reader, several times
// the cost of a Read reaching its park on this kind of machine. A reader
// that had not parked yet would only make cancel look faster.
type npCancel struct{ r *npReaders }

func (netpollImpl) NewCancel(cfg CancelConfig) (CancelRunner, error) {
	r, err := newNPReaders(cfg.FDs, cfg.BufSize)
	if err != nil {
		return nil, err
	}
	return &npCancel{r: r}, nil
}

func (c *npCancel) Arm() error {
	if err := c.r.arm(); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for int(c.r.reading.Load()) < len(c.r.files) {
		if time.Now().After(deadline) {
			return errors.New("readers did not start within 10s")
		}
		time.Sleep(10 * time.Microsecond)
	}
	time.Sleep(settleTime(len(c.r.files)))
	return nil
}

func (c *npCancel) CancelAndWait() (time.Duration, error) {
	t0 := time.Now()
	if err := c.r.cancelAll(); err != nil {
		return 0, err
	}
	err := c.r.collect(len(c.r.files))
	return time.Since(t0), err
}

func (c *npCancel) Close() error {
	c.r.cancelAll()
	return c.r.close()
}

// npLoad is the CancelLoad of the netpoll baseline.
type npLoad struct {
	r    *npReaders
	loop *CancelLoop
}

func startNPLoad(cfg CancelLoad) (*npLoad, error) {
	if cfg.Every <= 0 {
		return nil, nil
	}
	r, err := newNPReaders([]int{cfg.FD}, 64)
	if err != nil {
		return nil, err
	}
	l := &npLoad{r: r}
	l.loop = StartCancelLoop(cfg.Every, func() error {
		if err := r.arm(); err != nil {
			return err
		}
		if err := r.cancelAll(); err != nil {
			return err
		}
		return r.collect(1)
	})
	return l, nil
}

func (l *npLoad) cycles() int64 {
	if l == nil {
		return 0
	}
	return l.loop.Cycles()
}

func (l *npLoad) stop() error {
	if l == nil {
		return nil
	}
	return errors.Join(l.loop.Stop(), l.r.close())
}
