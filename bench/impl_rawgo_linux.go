package bench

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/cancelio/cancelio/bench/internal/rawuring"
)

// rawGoImpl is the floor from Go: the bare io_uring ABI (bench/internal/
// rawuring), no engine. The loop fills SQEs in the mapped ring, makes one
// io_uring_enter per batch and reads the CQEs in place, as liburing's loop
// does in C; no slots, tokens, locks or completion queue of cancelio's.
// Nop, Read, and the cancels of pending reads (Cancel, CancelEach: the
// same SQEs as liburing's runner) only: it is the measure of what any Go
// program can reach on this kernel, not a baseline a driver would use.
//
// Three setups, which split what the ring's setup costs:
//   - raw-go: liburing's own (SINGLE_ISSUER|DEFER_TASKRUN, the ring fd
//     registered), the goroutine locked to its thread from constructor to
//     Close, as that setup demands. Against liburing, what is left is
//     Go's own cost: its system call path, no inlined C loop.
//   - raw-go-regfd, for Nop and Read only: a plain ring with its fd
//     registered, the goroutine locked to its thread. Against raw-go, what
//     SINGLE_ISSUER|DEFER_TASKRUN buy; against raw-go-plain, what the
//     registered fd buys. Any thread may still enter the ring by its fd,
//     but the registered index is the calling thread's own: an engine
//     whose requests come from goroutines that move between threads
//     cannot use it.
//   - raw-go-plain: cancelio's engine's setup (a plain ring, SUBMIT_ALL
//     and, where the kernel has it, NO_SQARRAY; usable from any thread,
//     no registered fd), which an engine whose requests come from any
//     goroutine is bound to. Against raw-go, the
//     cost of that setup; against cancelio-uring, the engine's own.
//
// A submission that need not wait is a raw system call (no scheduler
// hand-off; NOPs and page-cache reads complete inline); only an enter that
// waits for completions goes through the scheduler.
type rawGoImpl struct {
	name    string
	setup   rawuring.Config // but Entries
	cancels bool            // runs the cancel workloads too

	once sync.Once
	err  error
}

func init() {
	const plain = rawuring.SetupSubmitAll | rawuring.SetupNoSQArray
	Register(&rawGoImpl{name: "raw-go", cancels: true,
		setup: rawuring.Config{Flags: rawuring.SetupSingleIssuer | rawuring.SetupDeferTaskrun, RegisterRingFD: true}})
	Register(&rawGoImpl{name: "raw-go-regfd", setup: rawuring.Config{Flags: plain, RegisterRingFD: true}})
	Register(&rawGoImpl{name: "raw-go-plain", cancels: true, setup: rawuring.Config{Flags: plain}})
}

const rawGoEntries = 256

func (i *rawGoImpl) Name() string { return i.name }

func (i *rawGoImpl) Supports(w Workload) bool {
	i.once.Do(func() {
		r, err := i.newRing()
		if err == nil {
			err = r.close()
		}
		i.err = err
	})
	return i.err == nil && (w == WorkloadNop || w == WorkloadRead || i.cancels && (w == WorkloadCancel || w == WorkloadCancelEach))
}

// bound reports whether the ring is usable from the creating thread only
// (in part or in whole), so that the goroutine stays locked to it.
func (i *rawGoImpl) bound() bool {
	return i.setup.RegisterRingFD || i.setup.Flags&rawuring.SetupSingleIssuer != 0
}

// rawRing is a rawuring.Ring set up as i says; for raw-go and raw-go-regfd,
// the goroutine stays locked to its thread until close.
type rawRing struct {
	*rawuring.Ring
	locked bool
}

func (i *rawGoImpl) newRing() (*rawRing, error) {
	cfg := i.setup
	cfg.Entries = rawGoEntries
	if i.bound() {
		runtime.LockOSThread()
	}
	r, err := rawuring.Setup(cfg)
	if errors.Is(err, syscall.EINVAL) && cfg.Flags&rawuring.SetupNoSQArray != 0 {
		cfg.Flags &^= rawuring.SetupNoSQArray // before 6.6, as cancelio's setup falls back
		r, err = rawuring.Setup(cfg)
	}
	if err != nil {
		if i.bound() {
			runtime.UnlockOSThread()
		}
		return nil, fmt.Errorf("%s: %w", i.name, err)
	}
	return &rawRing{Ring: r, locked: i.bound()}, nil
}

func (r *rawRing) close() error {
	err := r.Ring.Close()
	if r.locked {
		runtime.UnlockOSThread()
	}
	return err
}

func (r *rawRing) Close() error { return r.close() }

// cqeErr is the error of a failed CQE.
func cqeErr(op string, res int32) error {
	if res < 0 {
		return fmt.Errorf("%s: %w", op, syscall.Errno(-res))
	}
	return fmt.Errorf("%s: result %d", op, res)
}

type rawNop struct {
	*rawRing
	batch int
}

func (i *rawGoImpl) NewNop(cfg NopConfig) (Runner, error) {
	if cfg.Batch < 1 || cfg.Batch > rawGoEntries {
		return nil, fmt.Errorf("%s: batch %d out of range", i.name, cfg.Batch)
	}
	r, err := i.newRing()
	if err != nil {
		return nil, err
	}
	return &rawNop{rawRing: r, batch: cfg.Batch}, nil
}

func (p *rawNop) Run(n int) error {
	for done := 0; done < n; {
		k := min(p.batch, n-done)
		for range k {
			p.NextSQE().FD = -1 // zeroed: IORING_OP_NOP
		}
		if _, err := p.Enter(0); err != nil {
			return err
		}
		for got := 0; got < k; {
			ready := p.Ready()
			if ready == 0 {
				if _, err := p.Enter(uint32(k - got)); err != nil {
					return err
				}
				continue
			}
			for j := range ready {
				if res := p.CQEAt(j).Res; res != 0 {
					return cqeErr("nop", res)
				}
			}
			p.Advance(ready)
			got += int(ready)
		}
		done += k
	}
	return nil
}

// rawRead keeps QD reads in flight, the buffer's slot number as user_data.
type rawRead struct {
	*rawRing
	cfg ReadConfig
	readSlots
}

func (i *rawGoImpl) NewRead(cfg ReadConfig) (Runner, error) {
	if cfg.Fixed {
		return nil, ErrUnsupported
	}
	if cfg.QD < 1 || cfg.QD > rawGoEntries || cfg.BlockSize < 1 || len(cfg.Offsets) == 0 {
		return nil, fmt.Errorf("%s: qd %d, block size %d or %d offsets out of range", i.name, cfg.QD, cfg.BlockSize, len(cfg.Offsets))
	}
	r, err := i.newRing()
	if err != nil {
		return nil, err
	}
	return &rawRead{rawRing: r, cfg: cfg, readSlots: newReadSlots(cfg)}, nil
}

// Run ends, on an error, only once every read in flight has completed: the
// kernel must not write a buffer after Run returns.
func (rd *rawRead) Run(n int) error {
	var first error
	issued, done := 0, 0
	for done < issued || (issued < n && first == nil) {
		for first == nil && issued < n && rd.idle() {
			slot, off := rd.take()
			sqe := rd.NextSQE()
			rawuring.PrepRead(sqe, rd.cfg.FD, rd.bufs[slot], off)
			sqe.UserData = uint64(slot)
			issued++
		}
		if _, err := rd.Enter(0); err != nil {
			return errors.Join(first, err) // not submitted: nothing more in flight than before
		}
		ready := rd.Ready()
		if ready == 0 {
			if _, err := rd.Enter(1); err != nil {
				return errors.Join(first, err)
			}
			continue
		}
		for j := range ready {
			c := rd.CQEAt(j)
			slot := int(c.UserData)
			switch {
			case first != nil:
			case int(c.Res) != rd.cfg.BlockSize:
				first = fmt.Errorf("read at %d: %w", rd.off[slot], cqeErr("read", c.Res))
			case rd.cfg.Verify:
				first = CheckBlock(rd.bufs[slot], rd.off[slot])
			}
			rd.put(slot)
		}
		rd.Advance(ready)
		done += int(ready)
	}
	return first
}

func (i *rawGoImpl) NewPingPong(PingPongConfig) (Runner, error) { return nil, ErrUnsupported }

// rawCancel is the cancel workload on the bare ABI. Arm submits one read
// per pipe (user_data rawPending+i); CancelAndWait submits the cancels and
// waits until every read's CQE is reaped (the time measured), then reaps
// the cancels' own CQEs.
//
// raw-go issues liburing's runner's SQEs, so that raw-go ÷ liburing is
// Go's own cost: one IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_ANY,
// or with Each one per read by its user_data; and, as its ring has
// DEFER_TASKRUN, whose completions only an enter that waits posts, the
// enter that submits them waits.
//
// raw-go-plain issues cancelio's, so that cancelio-uring ÷ raw-go-plain is
// the engine's own cost: one cancel per read by its user_data, with
// IOSQE_CQE_SKIP_SUCCESS (where the kernel has it), for a token's cancel
// as for Each, handed over by an enter that does not wait. On a ring
// without DEFER_TASKRUN the kernel cancels the reads within that enter and
// posts their completions on its way back to user space, so they are
// there to be read without a second system call. (On this workload those
// SQEs are the faster ones: a CANCEL_ANY makes the kernel look for more
// matches, and every cancel's own completion is one more to post.)
type rawCancel struct {
	*rawRing
	fds   []int
	bufs  [][]byte
	each  bool
	keyed bool  // cancelio's SQEs, submitted without waiting (raw-go-plain)
	skip  uint8 // IOSQE_CQE_SKIP_SUCCESS, when keyed and the kernel has it
	armed int
}

// User data of the cancel workload's SQEs.
const (
	rawPending   = 1 << 61 // + index: the pending reads
	rawCancelAll = 1 << 60
	rawCancelOne = 1 << 59 // + index: the cancel of one read
)

func (i *rawGoImpl) NewCancel(cfg CancelConfig) (CancelRunner, error) {
	n := len(cfg.FDs)
	if n < 1 || 2*n > rawGoEntries || cfg.BufSize < 1 {
		return nil, fmt.Errorf("%s: %d pending reads of %d bytes out of range", i.name, n, cfg.BufSize)
	}
	r, err := i.newRing()
	if err != nil {
		return nil, err
	}
	c := &rawCancel{rawRing: r, fds: append([]int(nil), cfg.FDs...), bufs: carveBuffers(n, cfg.BufSize), each: cfg.Each,
		keyed: i.setup.Flags&rawuring.SetupDeferTaskrun == 0}
	if c.keyed && r.Features()&rawuring.FeatCQESkip != 0 {
		c.skip = rawuring.SQECQESkipSuccess
	}
	return c, nil
}

func (c *rawCancel) Arm() error {
	if c.armed > 0 {
		return errors.New("raw-go: Arm on an armed runner")
	}
	for i, fd := range c.fds {
		sqe := c.NextSQE()
		rawuring.PrepRead(sqe, fd, c.bufs[i], -1)
		sqe.UserData = rawPending + uint64(i)
	}
	n, err := c.Enter(0)
	c.armed = n
	if err == nil && n != len(c.fds) {
		err = fmt.Errorf("raw-go: %d of %d reads submitted", n, len(c.fds))
	}
	return err
}

func (c *rawCancel) CancelAndWait() (time.Duration, error) {
	t0 := time.Now()
	n := c.armed
	cancels := 1 // the cancels' own CQEs due
	if c.each || c.keyed {
		cancels = n
		if c.skip != 0 {
			cancels = 0 // posted only on failure (still reaped and checked when they come)
		}
		for i := range n {
			sqe := c.NextSQE()
			sqe.Opcode, sqe.FD, sqe.Flags = rawuring.OpAsyncCancel, -1, c.skip
			sqe.Addr = rawPending + uint64(i)
			sqe.UserData = rawCancelOne + uint64(i)
		}
	} else {
		sqe := c.NextSQE()
		sqe.Opcode, sqe.FD = rawuring.OpAsyncCancel, -1
		sqe.OpFlags = rawuring.CancelAny
		sqe.UserData = rawCancelAll
	}
	var d time.Duration
	var first error
	if c.keyed {
		if _, err := c.Enter(0); err != nil {
			return time.Since(t0), err
		}
	}
	targets, canceled := 0, 0
	for targets < n || canceled < cancels {
		if c.Ready() == 0 {
			if _, err := c.Enter(uint32(n - targets + max(cancels-canceled, 0))); err != nil {
				return time.Since(t0), errors.Join(first, err)
			}
			continue
		}
		ready := c.Ready()
		for j := range ready {
			cqe := c.CQEAt(j)
			switch ud := cqe.UserData; {
			case ud >= rawPending:
				targets++
				if cqe.Res != -int32(syscall.ECANCELED) && first == nil {
					first = fmt.Errorf("pending read: %w", cqeErr("read", cqe.Res))
				}
			case ud == rawCancelAll:
				canceled++
				if int(cqe.Res) != n && first == nil {
					first = fmt.Errorf("cancel-any: %w", cqeErr("cancel", cqe.Res))
				}
			default:
				canceled++
				if cqe.Res != 0 && cqe.Res != -int32(syscall.EALREADY) && first == nil {
					first = fmt.Errorf("cancel: %w", cqeErr("cancel", cqe.Res))
				}
			}
		}
		c.Advance(ready)
		if targets == n && d == 0 {
			d = time.Since(t0)
		}
	}
	c.armed = 0
	return d, first
}

func (c *rawCancel) Close() error {
	var err error
	if c.armed > 0 {
		_, err = c.CancelAndWait()
	}
	return errors.Join(err, c.close())
}
