package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"golang.org/x/sys/unix"
)

// cancelioImpl runs the workloads on cancelio's own engine, one ioring.Ring
// per runner, forced onto one backend: cancelio-uring (io_uring) or
// cancelio-poll (epoll plus workers). The loops are what a driver would
// write: SubmitBatch to hand a batch over, Reap into a reused slice of
// Completions, buffers and request slices allocated once per runner.
//
// Cancel: Arm submits one read per pipe, all covered by one Token (a
// device's I/O); CancelAndWait calls Token.Cancel and reaps until every read
// has been delivered. The runner keeps one Token for its whole life: Arm
// re-arms it with Token.Reset (every read of the last cycle has been
// delivered by then), as a driver that cancels often would, so a cycle
// allocates nothing. CancelEach: the reads have no token; CancelAndWait
// hands all their Requests to one Ring.Cancel, the batch form of
// Request.Cancel (every cancel in one system call), and reaps as above. The
// reads are on distinct pipes, so submission order (one read in the kernel
// at a time per fd) does not hold any of them back.
//
// CancelLoad: a CancelLoop goroutine Starts a read on the empty pipe on the
// same ring, cancels it with Request.Cancel and Waits for its completion,
// while the measured loop keeps reaping the ring's completion queue: the
// cancel comes from another goroutine, as a CancelPendingIO does.
type cancelioImpl struct {
	name    string
	backend ioring.Backend

	once sync.Once
	err  error // why a ring on this backend cannot be made here
}

func init() {
	Register(&cancelioImpl{name: "cancelio-uring", backend: ioring.BackendURing})
	Register(&cancelioImpl{name: "cancelio-poll", backend: ioring.BackendPoll})
}

// cancelioEntries is the ring size of every runner but the cancel workload's
// (which sizes its ring to its pending reads).
const cancelioEntries = 256

func (c *cancelioImpl) Name() string { return c.name }

// Supports reports false on every workload when a ring on c's backend cannot
// be made here: the backend says it is not supported (ErrNotSupported), or
// the kernel refuses io_uring (missing, disabled by sysctl, seccomp). Any
// other error is the constructors' to report.
func (c *cancelioImpl) Supports(w Workload) bool {
	c.once.Do(func() {
		r, err := ioring.New(ioring.Config{Entries: 2, Backend: c.backend})
		if err == nil {
			err = r.Close()
		}
		c.err = err
	})
	if c.err != nil && (errors.Is(c.err, ioring.ErrNotSupported) || errors.Is(c.err, unix.ENOSYS) ||
		errors.Is(c.err, unix.EPERM) || errors.Is(c.err, unix.EACCES) || errors.Is(c.err, unix.EOPNOTSUPP)) {
		return false
	}
	return true
}

func (c *cancelioImpl) newRing(entries int) (*ioring.Ring, error) {
	r, err := ioring.New(ioring.Config{Entries: entries, Backend: c.backend})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return r, nil
}

// ciNop completes no-ops, Batch per SubmitBatch.
type ciNop struct {
	r     *ioring.Ring
	ops   []ioring.Op
	reqs  []ioring.Request
	comps []ioring.Completion
}

func (c *cancelioImpl) NewNop(cfg NopConfig) (Runner, error) {
	if cfg.Batch < 1 || cfg.Batch > cancelioEntries {
		return nil, fmt.Errorf("%s: batch %d out of range", c.name, cfg.Batch)
	}
	r, err := c.newRing(cancelioEntries)
	if err != nil {
		return nil, err
	}
	p := &ciNop{r: r, ops: make([]ioring.Op, cfg.Batch), reqs: make([]ioring.Request, cfg.Batch),
		comps: make([]ioring.Completion, cfg.Batch)}
	for i := range p.ops {
		p.ops[i] = ioring.Nop()
	}
	return p, nil
}

func (p *ciNop) Run(n int) error {
	var first error
	for done := 0; done < n; {
		k := min(len(p.ops), n-done)
		// Submit the batch and reap in one call (liburing's loop:
		// io_uring_submit_and_wait), then reap the rest.
		m, g, err := p.r.SubmitAndReap(p.ops[:k], p.reqs[:k], p.comps, -1)
		if m < k {
			first = err // not submitted: nothing was reaped
			err = nil
		}
		for got := 0; ; {
			if err != nil {
				return errors.Join(first, err)
			}
			comps := p.comps[:g]
			for i := range comps {
				if e := comps[i].Err; e != nil && first == nil {
					first = fmt.Errorf("nop: %w", e)
				}
			}
			if got += g; got >= m {
				break
			}
			g, err = p.r.Reap(p.comps, -1)
		}
		if first != nil {
			return first
		}
		done += k
	}
	return nil
}

func (p *ciNop) Close() error { return p.r.Close() }

// ciRead keeps QD reads in flight: every free buffer is refilled with one
// SubmitBatch, then one Reap takes what has completed. The buffer index
// travels as the request's User value (a small integer: no allocation).
// With Fixed, the QD buffers are registered with the ring (RegisterBuffers,
// buffer i as index i) and read with ReadFixed. Each buffer's read is built
// once (tmpl) and re-aimed with Op.SetOffset, as a program that reads a
// file in chunks would: building an Op per read copies the large value
// several times.
type ciRead struct {
	cfg ReadConfig
	r   *ioring.Ring
	readSlots
	batch []int       // batch[k]: the buffer of ops[k]
	tmpl  []ioring.Op // tmpl[i]: the read into buffer i, its offset set per request
	ops   []ioring.Op
	reqs  []ioring.Request
	comps []ioring.Completion
	load  *ciLoad
}

func (c *cancelioImpl) NewRead(cfg ReadConfig) (Runner, error) {
	// QD reads, plus the load's read, must fit the ring; buffer indices must
	// stay small integers, which box without allocating.
	if cfg.QD < 1 || cfg.QD > 128 || cfg.BlockSize < 1 || len(cfg.Offsets) == 0 {
		return nil, fmt.Errorf("%s: qd %d, block size %d or %d offsets out of range", c.name, cfg.QD, cfg.BlockSize, len(cfg.Offsets))
	}
	r, err := c.newRing(cancelioEntries)
	if err != nil {
		return nil, err
	}
	rd := &ciRead{cfg: cfg, r: r, readSlots: newReadSlots(cfg), batch: make([]int, cfg.QD), ops: make([]ioring.Op, cfg.QD),
		reqs: make([]ioring.Request, cfg.QD), comps: make([]ioring.Completion, cfg.QD)}
	if cfg.Fixed {
		if err := r.RegisterBuffers(rd.bufs); err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", c.name, err), r.Close())
		}
	}
	rd.tmpl = make([]ioring.Op, cfg.QD)
	for i := range rd.tmpl {
		if cfg.Fixed {
			rd.tmpl[i] = ioring.ReadFixed(cfg.FD, rd.bufs[i], 0, i).WithUser(i)
		} else {
			rd.tmpl[i] = ioring.Read(cfg.FD, rd.bufs[i], 0).WithUser(i)
		}
	}
	rd.load = startCILoad(r, cfg.Load)
	return rd, nil
}

func (rd *ciRead) Run(n int) error {
	var first error
	issued, done := 0, 0
	for {
		k := 0
		for first == nil && issued+k < n && rd.idle() {
			slot, off := rd.take()
			op := &rd.ops[k]
			*op = rd.tmpl[slot]
			op.SetOffset(off)
			rd.batch[k] = slot
			k++
		}
		// Submit what is ready and reap in one call (liburing's loop:
		// io_uring_submit_and_wait), or only reap.
		var g int
		var err error
		if k > 0 {
			var m int
			m, g, err = rd.r.SubmitAndReap(rd.ops[:k], rd.reqs[:k], rd.comps, -1)
			issued += m
			if m < k { // not submitted (nothing was reaped): the buffers are idle again
				for _, slot := range rd.batch[m:k] {
					rd.put(slot)
				}
				if first == nil {
					first = err
				}
				err = nil
			}
		} else if done < issued {
			g, err = rd.r.Reap(rd.comps, -1)
		}
		if err != nil {
			return errors.Join(first, err)
		}
		for i := range g {
			c := &rd.comps[i]
			slot := c.User.(int)
			switch {
			case first != nil:
			case c.Err != nil:
				first = fmt.Errorf("read at %d: %w", rd.off[slot], c.Err)
			case c.N != rd.cfg.BlockSize:
				first = fmt.Errorf("read at %d: short read of %d bytes", rd.off[slot], c.N)
			case rd.cfg.Verify:
				first = CheckBlock(rd.bufs[slot], rd.off[slot])
			}
			rd.put(slot)
		}
		done += g
		if done == issued && (first != nil || issued == n) {
			return first
		}
	}
}

func (rd *ciRead) Cancels() int64 { return rd.load.cycles() }

func (rd *ciRead) Close() error { return errors.Join(rd.load.stop(), rd.r.Close()) }

// Ping-pong requests' User values.
const (
	ciPing = 1
	ciPong = 2
)

// ciPingPong submits the write of the ping and the read of the pong in one
// SubmitBatch and reaps both; a short read is continued with another read.
// On a socket (Socket) they are a Send and a Recv: Recv is not ordered on
// its stream, so there is one at a time, the continuation only once the
// last has completed.
type ciPingPong struct {
	cfg      PingPongConfig
	r        *ioring.Ring
	msg, buf []byte
	seq      uint64
	ops      []ioring.Op
	reqs     []ioring.Request
	comps    []ioring.Completion
	load     *ciLoad
}

func (c *cancelioImpl) NewPingPong(cfg PingPongConfig) (Runner, error) {
	if cfg.MsgSize < 1 {
		return nil, fmt.Errorf("%s: message size %d", c.name, cfg.MsgSize)
	}
	r, err := c.newRing(cancelioEntries)
	if err != nil {
		return nil, err
	}
	p := &ciPingPong{cfg: cfg, r: r, msg: make([]byte, cfg.MsgSize), buf: make([]byte, cfg.MsgSize),
		ops: make([]ioring.Op, 2), reqs: make([]ioring.Request, 2), comps: make([]ioring.Completion, 2)}
	FillMessage(p.msg, 0)
	p.load = startCILoad(r, cfg.Load)
	return p, nil
}

func (p *ciPingPong) Run(n int) error {
	size := p.cfg.MsgSize
	for range n {
		p.seq++
		if p.cfg.Verify {
			FillMessage(p.msg, p.seq)
		}
		p.ops[0] = p.send().WithUser(ciPing)
		p.ops[1] = p.recv(p.buf).WithUser(ciPong)
		m, err := p.r.SubmitBatch(p.ops, p.reqs)
		first := err
		pong := p.reqs[1]
		if m == 1 { // the ping went, the pong read did not: nothing to wait for but the ping
			pong = ioring.Request{}
		}
		pending, got := m, 0
		for pending > 0 {
			g, err := p.r.Reap(p.comps, -1)
			if err != nil {
				return errors.Join(first, err)
			}
			for i := range g {
				c := &p.comps[i]
				switch c.User.(int) {
				case ciPing:
					pending--
					if c.Err != nil || c.N != size {
						if first == nil {
							first = fmt.Errorf("write ping: %d bytes, %v", c.N, c.Err)
						}
						pong.Cancel() // no ping, no pong: do not wait for it forever
					}
				case ciPong:
					if c.Err != nil || c.N == 0 {
						pending--
						if first == nil {
							first = fmt.Errorf("read pong: %d bytes, %v", c.N, c.Err)
						}
						continue
					}
					if got += c.N; got < size && first == nil {
						q, err := p.r.Submit(p.recv(p.buf[got:]).WithUser(ciPong))
						if err == nil {
							pong = q
							continue
						}
						first = err
					}
					pending--
				}
			}
		}
		if first != nil {
			return first
		}
		if p.cfg.Verify && string(p.buf) != string(p.msg) {
			return fmt.Errorf("pong %d differs from ping", p.seq)
		}
	}
	return nil
}

// send is the ping: a Write down the pipe, or a Send on the socket.
func (p *ciPingPong) send() ioring.Op {
	if p.cfg.Socket {
		return ioring.Send(p.cfg.PingFD, p.msg, 0)
	}
	return ioring.Write(p.cfg.PingFD, p.msg, -1)
}

// recv reads (part of) the pong into buf: a Read from the pipe, or a Recv
// from the socket.
func (p *ciPingPong) recv(buf []byte) ioring.Op {
	if p.cfg.Socket {
		return ioring.Recv(p.cfg.PongFD, buf, 0)
	}
	return ioring.Read(p.cfg.PongFD, buf, -1)
}

func (p *ciPingPong) Cancels() int64 { return p.load.cycles() }

func (p *ciPingPong) Close() error { return errors.Join(p.load.stop(), p.r.Close()) }

// ciCancel is the cancel workload: one read per empty pipe, all covered by
// one Token. Arm returns once SubmitBatch has: the io_uring backend has
// issued each read (found the pipe empty, armed its poll), the poll backend
// has tried each one and parked it on its fd.
type ciCancel struct {
	r     *ioring.Ring
	ops   []ioring.Op
	reqs  []ioring.Request
	comps []ioring.Completion
	bufs  [][]byte
	fds   []int
	tok   *ioring.Token // covers every read of a cycle; Reset by Arm; nil with each
	each  bool          // cancel request by request (Ring.Cancel), not by the token
	armed int           // reads submitted by Arm, not yet delivered
}

func (c *cancelioImpl) NewCancel(cfg CancelConfig) (CancelRunner, error) {
	n := len(cfg.FDs)
	if n < 1 || n > 4096 || cfg.BufSize < 1 {
		return nil, fmt.Errorf("%s: %d pending reads of %d bytes out of range", c.name, n, cfg.BufSize)
	}
	entries := cancelioEntries
	for entries < 2*n {
		entries *= 2
	}
	r, err := c.newRing(entries)
	if err != nil {
		return nil, err
	}
	cr := &ciCancel{r: r, ops: make([]ioring.Op, n), reqs: make([]ioring.Request, n),
		comps: make([]ioring.Completion, n), bufs: carveBuffers(n, cfg.BufSize), fds: append([]int(nil), cfg.FDs...), each: cfg.Each}
	if !cfg.Each {
		cr.tok = r.NewToken()
	}
	return cr, nil
}

func (c *ciCancel) Arm() error {
	if c.armed > 0 {
		return errors.New("cancelio: Arm on an armed runner")
	}
	if c.tok != nil && c.tok.Canceled() {
		if err := c.tok.Reset(); err != nil {
			return err
		}
	}
	for i, fd := range c.fds {
		c.ops[i] = ioring.Read(fd, c.bufs[i], -1)
		if c.tok != nil {
			c.ops[i] = c.ops[i].WithToken(c.tok)
		}
	}
	m, err := c.r.SubmitBatch(c.ops, c.reqs)
	c.armed = m
	if err != nil {
		_, derr := c.CancelAndWait()
		return errors.Join(err, derr)
	}
	return nil
}

func (c *ciCancel) CancelAndWait() (time.Duration, error) {
	t0 := time.Now()
	var first error
	if c.each {
		// Every request was in flight (none can complete on an empty
		// pipe): Cancel finds each one, or the reaping below says why not.
		_, first = c.r.Cancel(c.reqs[:c.armed]...)
	} else {
		first = c.tok.Cancel()
	}
	for c.armed > 0 {
		g, err := c.r.Reap(c.comps, -1)
		if err != nil {
			return time.Since(t0), errors.Join(first, err)
		}
		for i := range g {
			comp := &c.comps[i]
			// The sentinel itself is what a cancel by Ring.Cancel or a
			// token delivers: compared first, errors.Is only otherwise.
			if first == nil && comp.Err != ioring.ErrCanceled && !errors.Is(comp.Err, ioring.ErrCanceled) {
				if comp.Err != nil {
					first = fmt.Errorf("pending read: %w", comp.Err)
				} else {
					first = fmt.Errorf("pending read returned %d bytes instead of being canceled", comp.N)
				}
			}
		}
		c.armed -= g
	}
	return time.Since(t0), first
}

func (c *ciCancel) Close() error {
	var err error
	if c.armed > 0 {
		_, err = c.CancelAndWait()
	}
	return errors.Join(err, c.r.Close())
}

// ciLoad is the CancelLoad of the cancelio runners: a read on the empty
// load pipe, started on the runner's ring, canceled and waited for by a
// CancelLoop goroutine. Start (not Submit) keeps its completion out of the
// queue the measured loop reaps.
type ciLoad struct {
	r    *ioring.Ring
	fd   int
	buf  []byte
	loop *CancelLoop
}

func startCILoad(r *ioring.Ring, cfg CancelLoad) *ciLoad {
	if cfg.Every <= 0 {
		return nil
	}
	l := &ciLoad{r: r, fd: cfg.FD, buf: make([]byte, 64)}
	l.loop = StartCancelLoop(cfg.Every, l.cycle)
	return l
}

func (l *ciLoad) cycle() error {
	q, err := l.r.Start(ioring.Read(l.fd, l.buf, -1))
	if err != nil {
		return fmt.Errorf("load read: %w", err)
	}
	cerr := q.Cancel()
	c, err := q.Wait(context.Background())
	switch {
	case err != nil:
		return fmt.Errorf("load wait: %w", err)
	case !errors.Is(c.Err, ioring.ErrCanceled):
		return fmt.Errorf("load read not canceled (cancel: %v): %d bytes, %v", cerr, c.N, c.Err)
	}
	return nil
}

func (l *ciLoad) cycles() int64 {
	if l == nil {
		return 0
	}
	return l.loop.Cycles()
}

func (l *ciLoad) stop() error {
	if l == nil {
		return nil
	}
	return l.loop.Stop()
}

// ciScale is BenchmarkScale's engine: one Ring shared by every worker
// (layout=shared), or a Ring per worker (layout=each). Either way a worker
// does what a goroutine of a driver or server does with a ring: Ring.Do,
// one request at a time, waiting for its completion; with a shared ring the
// ring's reaper delivers each completion to its waiter. Both layouts use
// the same call, so the rows differ by layout only.
type ciScale struct {
	c      *cancelioImpl
	cfg    ScaleConfig
	shared *ioring.Ring // layout=shared; nil with one ring each
}

func (c *cancelioImpl) NewScale(cfg ScaleConfig) (ScaleGroup, error) {
	if cfg.Op != WorkloadNop && cfg.Op != WorkloadRead {
		return nil, fmt.Errorf("%s: scale op %v: %w", c.name, cfg.Op, ErrUnsupported)
	}
	s := &ciScale{c: c, cfg: cfg}
	if cfg.Shared {
		r, err := c.newRing(cancelioEntries)
		if err != nil {
			return nil, err
		}
		s.shared = r
	}
	return s, nil
}

func (s *ciScale) Worker(i int) (Runner, error) {
	w := &ciScaleWorker{r: s.shared, op: s.cfg.Op}
	if w.r == nil {
		r, err := s.c.newRing(cancelioEntries)
		if err != nil {
			return nil, err
		}
		w.r, w.own = r, true
	}
	if s.cfg.Op == WorkloadRead {
		w.rd = s.cfg.WorkerRead(i)
		w.buf = make([]byte, w.rd.BlockSize)
	}
	return w, nil
}

func (s *ciScale) Close() error {
	if s.shared != nil {
		return s.shared.Close()
	}
	return nil
}

// ciScaleWorker is one worker of ciScale.
type ciScaleWorker struct {
	r   *ioring.Ring
	own bool // r is this worker's alone: Close closes it
	op  Workload
	rd  ReadConfig // WorkloadRead: this worker's file and offsets
	buf []byte
	pos int // next index into rd.Offsets
}

func (w *ciScaleWorker) Run(n int) error {
	ctx := context.Background()
	for range n {
		op := ioring.Nop()
		var off int64
		if w.op == WorkloadRead {
			off = w.rd.Offsets[w.pos]
			if w.pos++; w.pos == len(w.rd.Offsets) {
				w.pos = 0
			}
			op = ioring.Read(w.rd.FD, w.buf, off)
		}
		c, err := w.r.Do(ctx, op)
		switch {
		case err != nil:
			return err
		case c.Err != nil:
			return fmt.Errorf("%v: %w", op.Code(), c.Err)
		case w.op == WorkloadRead && c.N != len(w.buf):
			return fmt.Errorf("read at %d: short read of %d bytes", off, c.N)
		case w.op == WorkloadRead && w.rd.Verify:
			if err := CheckBlock(w.buf, off); err != nil {
				return err
			}
		}
	}
	return nil
}

func (w *ciScaleWorker) Close() error {
	if w.own {
		return w.r.Close()
	}
	return nil
}
