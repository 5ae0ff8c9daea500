//go:build linux

package ioring

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pollBackend is the fallback backend, for kernels where io_uring is missing
// or disabled. It keeps the contract of the io_uring backend with two
// mechanisms:
//
//   - Pollable fds (pipes, sockets, character devices, eventfds...): the
//     operation is tried at once without blocking (preadv2/pwritev2 with
//     RWF_NOWAIT, which leaves the caller's O_NONBLOCK flag and the shared
//     file description alone); on EAGAIN the request waits on its file's
//     waiter list for readiness reported by epoll (EPOLLONESHOT, re-armed
//     with the union of the waiters' events), then is tried again. A
//     waiting request is canceled at once, without touching the kernel.
//   - Regular files and block devices (and fds epoll refuses with EPERM):
//     a bounded pool of worker goroutines runs blocking syscalls. A request
//     still queued is canceled at once and never runs; one that has started
//     cannot be interrupted and delivers its real result. A positioned read
//     is first tried from the page cache (RWF_NOWAIT) by the submitter, as
//     io_uring does inline, and goes to a worker only when that would block.
//
// A request acts only on the file its fd named at submission, as on
// io_uring (which takes a file reference when it issues the request): one
// that cannot finish at once holds its own duplicate of the fd
// (F_DUPFD_CLOEXEC), made while the caller's fd is still valid and used for
// every later attempt and for epoll; it is closed before the request's
// completion is delivered, never later (a held pipe write end would keep
// the reader from seeing EOF). Requests waiting on one open file
// description share one duplicate and one epoll registration (a pollFD,
// found by the caller's fd number and confirmed with kcmp(KCMP_FILE)), so
// their waiter list keeps submission order. Where kcmp is not available
// (kernels without CONFIG_CHECKPOINT_RESTORE, seccomp), each waiting request
// gets a pollFD of its own, and requests waiting on one fd are then served
// in the order epoll reports them.
//
// Character devices without RWF_NOWAIT support (terminals, serial ports,
// evdev...) are tried with a plain read or write when the fd itself is
// O_NONBLOCK. Otherwise no request of theirs may sit in a blocking call
// that a cancel cannot end (Go's signal handlers use SA_RESTART, so not
// even a signal would end a terminal read). Their requests wait in epoll,
// where a cancel ends them at once, and once epoll reports the file ready
// they run on a worker one at a time per file description and direction
// (pmBlocking), in submission order:
//
//   - A read asks for no more than ioctl(FIONREAD) counts (a terminal in
//     canonical mode counts whole lines), so it returns at once; with
//     nothing counted it reads only when poll still says readable (an EOF
//     character, a hang-up), and otherwise waits again.
//   - A write (or a read of a file without FIONREAD) uses a second,
//     non-blocking description of the same terminal where there can be
//     one: a terminal that can be opened again (a pty slave, a serial
//     port; not /dev/tty, /dev/console or a pty master, where an open makes
//     a new pty or goes elsewhere; not a device that is not a terminal,
//     whose per-open state would differ) is reopened through /proc/self/fd
//     with O_NONBLOCK, and its requests then wait in epoll and are tried on
//     the reopened fd like any other; a write goes on after a part until
//     all of its buffer has moved, as a blocking write does (twinWrite).
//     The reopen lives while requests are attached to the file (its
//     close runs the terminal's last-close handling when the caller
//     closed its own fd meanwhile); it costs an
//     open and a close (about 20-40us) per busy period, so reads, which
//     need none, do not make one.
//
// What remains, for such a device that cannot be reopened (a pty master, a
// terminal opened with TIOCEXCL by an unprivileged process, a character
// device that is not a terminal, /proc not mounted): a worker can still
// block (a) in a write larger than the room the device has (a pty master
// whose slave is not read): the room cannot be queried, so the write
// blocks until the device drains; (b) in a read, when someone outside the
// ring (another process sharing the description, the caller reading the
// fd directly, or a ring request on another description of the same
// terminal) takes the data between FIONREAD or readiness and the read. A
// request blocked that way cannot be canceled, and Close waits for it; a
// caller who needs those canceled opens the fd O_NONBLOCK. Files epoll
// refuses (EPERM) run on workers unbounded, as regular files do.
//
// One poller goroutine waits for epoll events, parked in Go's netpoller on
// the epoll fd (no OS thread is held). Completions are delivered with
// Ring.complete by whichever goroutine finishes a request (the submitter
// for operations that finish at once, the poller, a worker, a timer), and a
// token in note wakes a goroutine blocked in reap. No goroutine is started
// per request.
//
// Locking: b.mu guards every pslot's state, the pollFDs, the worker queue
// and the fd table; it is never held across blocking I/O, across closing a
// duplicate or across Ring.complete. Lock order: r.sqMu, then b.mu;
// Ring.complete (which takes token locks) is called without b.mu.
type pollBackend struct {
	r  *Ring
	ps []pslot // per-slot state, indexed like r.slots

	pending []uint32 // submitted, not yet started; guarded by r.sqMu
	sqOut   []compl  // completion scratch of sqMu holders; guarded by r.sqMu

	note   chan struct{} // cap 1: something completed, or wake was called
	rtimer *time.Timer   // reap's timeout; guarded by r.reapMu

	epfd       int
	epfile     *os.File // owns epfd; parks the poller in the netpoller
	pollerDone chan struct{}
	events     []unix.EpollEvent // poller only
	batch      []int32           // poller only
	pollOut    []compl           // poller only

	pid    int  // for kcmp
	noKcmp bool // kcmp failed: every waiting request has its own pollFD; guarded by mu

	mu         sync.Mutex
	fds        map[int32]*pollFD // by the caller's fd number; guarded by mu
	pfds       []*pollFD         // by pollFD.id (epoll data); guarded by mu
	freePFDs   []int32           // ids of unused pollFDs; guarded by mu
	work       plist             // queued worker requests; guarded by mu
	workCond   sync.Cond         // signals work; L is &mu
	idle       int               // workers waiting on workCond, not yet signaled
	nworkers   int
	maxWorkers int
	closing    bool
	wg         sync.WaitGroup // workers

	fifo fifoWatches // the FIFOs waiting OpenAts watch for readers (backend_poll_fifo_linux.go)

	// testHold is a seam for tests, nil otherwise: set under mu, it runs
	// on a worker (mu not held) with each request the worker takes,
	// before the request runs, so that a test can keep every worker busy
	// for as long as it likes without depending on a system call that
	// blocks.
	testHold func(idx uint32)
}

// pstate is a request's state inside the poll backend.
type pstate uint8

const (
	psIdle    pstate = iota // not in the backend (or finished)
	psPending               // submitted, waiting for flush
	psWaiting               // on its fd's waiter list
	psQueued                // on the worker queue
	psRunning               // being tried by the poller or run by a worker
	psTiming                // OpTimeout, timer armed
	psMulti                 // a multishot request, armed in epoll (backend_poll_multi_linux.go)
	psRetry                 // an OpenAt waiting for a FIFO's reader, or a Connect for room in a backlog, timer armed (openLater)
)

// pmode says how a request on a pollable fd is tried.
type pmode uint8

const (
	pmNowait   pmode = iota // preadv2/pwritev2 with RWF_NOWAIT
	pmNonblock              // the fd is O_NONBLOCK itself: plain preadv2/pwritev2
	pmTwin                  // plain preadv2/pwritev2 on the pollFD's non-blocking reopen
	pmBlocking              // wait for readiness, then run on a worker, one at a time
	pmSock                  // a socket operation: trySock (backend_poll_ops_linux.go)
)

// pact is what start decided for a request.
type pact uint8

const (
	paDone  pact = iota // finished, res holds the result
	paWait              // wait for readiness on its fd
	paWork              // run on a worker
	paTimer             // arm the OpTimeout timer
	paMulti             // arm a multishot request's own registration
)

// pslot is the poll backend's state of one request slot. st, canceled,
// pfd, own and the list links are guarded by b.mu; the other fields belong
// to whoever moved the request to its current state (submitter, poller,
// worker).
type pslot struct {
	key      uint64 // the submission's key: stale cancels do nothing
	st       pstate
	mode     pmode
	act      pact
	canceled bool // cancel requested while pending or running
	want     uint32
	res      int32
	fd       int32   // the fd of every attempt: the caller's at submission, then ours
	own      int32   // a duplicate of the request's own (worker-only files, multishot requests), or -1
	fidx     int32   // a FixedFile request's index, while fd is the registered file's duplicate, or -1
	pfd      *pollFD // the file it waits on, from the first wait to its completion
	prev     int32
	next     int32
	timer    *time.Timer // OpTimeout's timer, made once per slot
	fireAt   time.Time
	moved    int32         // bytes a MSG_WAITALL send or receive has moved so far (tryAll)
	tries    uint8         // times an OpenAt found no reader on its FIFO, or a Connect a full backlog (openLater); 1 once an error-queue RecvMsg waited (trySock)
	giveUp   time.Duration // a Connect waiting for room in a backlog: when its socket's SO_SNDTIMEO runs out (since epoch), or 0: never
	fwd      int32         // the inotify watch of the FIFO an OpenAt waits for, or -1 (backend_poll_fifo_linux.go)
	fseen    uint32        // with fwd: the FIFO's opens counted when the request began to watch it
}

// pollFD is an open file description with requests attached: it holds a
// duplicate of the caller's fd, registered in epoll, for as long as any
// request is attached (refs), and is then released (duplicate closed,
// registration removed) and kept for reuse. Guarded by b.mu.
type pollFD struct {
	id         int32  // index in b.pfds, the epoll event's data
	gen        uint32 // bumped at release: events of an earlier use are ignored
	fd         int32  // the caller's fd number it is filed under in b.fds, or -1
	dfd        int32  // our duplicate; every attempt and epoll use it
	twin       int32  // a non-blocking reopen of a terminal (pmTwin), or -1
	refs       int32  // requests attached
	registered bool   // dfd is registered in epoll
	armed      uint32 // events of the outstanding one-shot arm, 0 if none
	noEpoll    bool   // epoll refused the fd (EPERM): always ready
	twinTried  bool   // a reopen was decided on (twin set, or not possible)
	opener     int32  // the request deciding on the reopen (no pmBlocking runs meanwhile), or -1
	busyR      bool   // a pmBlocking read is on the worker queue or running
	busyW      bool   // a pmBlocking write is on the worker queue or running
	waiters    plist
}

// plist is an intrusive doubly linked list of slots, through pslot.prev
// and pslot.next. A slot is on at most one list at a time.
type plist struct{ head, tail int32 }

// compl is a completion to deliver once locks are released or, with idx
// closeFD, a duplicate of ours to close before any of them is delivered.
// In a multishot round's list (readyMulti) it is a result with more to
// come, cflags as io_uring's (cqeFMore, cqeFBuffer and the buffer id).
type compl struct {
	idx    uint32
	res    int32
	cflags uint32
}

const closeFD = ^uint32(0)

const (
	epollAlways  = unix.EPOLLERR | unix.EPOLLHUP // reported whether asked for or not
	pollableMask = 0xffff                        // poll(2) events are a short
)

func newPoll(r *Ring) (backend, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	// Non-blocking, so that os.NewFile parks readers in the netpoller
	// (epoll fds nest). The epoll fd is ours: its flags are ours to set.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "ioring-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	n := len(r.slots)
	maxw := 4 * runtime.GOMAXPROCS(0)
	maxw = min(max(maxw, 8), 64)
	b := &pollBackend{
		r:          r,
		ps:         make([]pslot, n),
		pending:    make([]uint32, 0, n),
		sqOut:      make([]compl, 0, n),
		note:       make(chan struct{}, 1),
		rtimer:     time.NewTimer(time.Hour),
		epfd:       epfd,
		epfile:     f,
		pollerDone: make(chan struct{}),
		events:     make([]unix.EpollEvent, 128),
		batch:      make([]int32, 0, n),
		pollOut:    make([]compl, 0, n),
		pid:        os.Getpid(),
		fds:        make(map[int32]*pollFD),
		work:       plist{-1, -1},
		maxWorkers: maxw,
	}
	b.rtimer.Stop()
	b.workCond.L = &b.mu
	for i := range b.ps {
		b.ps[i].prev, b.ps[i].next = -1, -1
		b.ps[i].fd, b.ps[i].own, b.ps[i].fidx = -1, -1, -1
		b.ps[i].fwd = -1
	}
	b.fifo.fd = -1
	go b.poller(rc)
	return b, nil
}

func (b *pollBackend) nativeDeadlines() bool { return false }

// reapsInline is false: the poller and the workers complete requests on
// their own goroutines.
func (b *pollBackend) reapsInline() bool { return false }

// deliver completes slot idx with res and wakes a blocked reap.
func (b *pollBackend) deliver(idx uint32, res int32) {
	b.r.complete(idx, res)
	select {
	case b.note <- struct{}{}:
	default:
	}
}

// deliverAll closes the duplicates out names, then delivers its
// completions: a request's file references are gone before its completion
// is seen. No lock held.
func (b *pollBackend) deliverAll(out []compl) {
	for _, c := range out {
		if c.idx == closeFD {
			unix.Close(int(c.res))
		}
	}
	for _, c := range out {
		if c.idx != closeFD {
			b.deliver(c.idx, c.res)
		}
	}
}

// submit records slot idx; flush starts it (so that a request finishing at
// once completes after the Ring is done with its slot). r.sqMu held.
func (b *pollBackend) submit(idx uint32, s *slot) error {
	p := &b.ps[idx]
	b.mu.Lock()
	p.key = s.key()
	p.st = psPending
	p.canceled = false
	p.mode = pmNowait
	p.moved = 0
	p.tries = 0
	p.giveUp = 0
	if s.fixedFD {
		// Every attempt, and every duplicate made for the request, acts
		// on the registered file's duplicate (files.go): made here, under
		// r.sqMu, which UnregisterFiles takes before it closes the table.
		p.fidx = s.fd
		s.fd = b.r.heldFile(s.fd)
	}
	p.fd = s.fd
	b.mu.Unlock()
	b.pending = append(b.pending, idx)
	return nil
}

// flush starts what submit recorded: each request is tried at once, then
// finished, parked on its fd, queued for a worker, or timed. r.sqMu held.
func (b *pollBackend) flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	out := b.sqOut[:0]
	b.mu.Lock()
	for _, idx := range b.pending {
		p := &b.ps[idx]
		if p.canceled {
			out = b.finish(idx, p, -int32(unix.ECANCELED), out)
			continue
		}
		p.st = psRunning
	}
	b.mu.Unlock()
	for _, idx := range b.pending {
		if b.ps[idx].st == psRunning { // written above by this goroutine
			b.start(idx)
		}
	}
	b.mu.Lock()
	for _, idx := range b.pending {
		p := &b.ps[idx]
		if p.st != psRunning {
			continue
		}
		out = b.settle(idx, p, out)
	}
	b.mu.Unlock()
	b.pending = b.pending[:0]
	b.deliverAll(out)
	b.sqOut = out[:0]
	return nil
}

// start tries slot idx's operation without blocking and records in p.act
// what is to happen next. The request is psRunning: start owns it.
func (b *pollBackend) start(idx uint32) {
	s := &b.r.slots[idx]
	p := &b.ps[idx]
	p.act, p.res = paDone, 0
	switch s.code {
	case OpNop:
	case OpTimeout:
		if s.dur <= 0 {
			p.res = -int32(unix.ETIME)
			return
		}
		p.act = paTimer
	case OpFsync:
		p.act = paWork
	case OpPoll:
		// POLLERR and POLLHUP always: a poll for events poll(2) does not
		// know still ends with them, as on io_uring.
		p.want = s.events&pollableMask | epollAlways
		if res := pollNow(s.fd, p.want); res != 0 {
			p.res = res
			return
		}
		p.act = paWait
	case OpRead, OpWrite, OpReadv, OpWritev:
		var st unix.Stat_t
		if err := unix.Fstat(int(s.fd), &st); err != nil {
			p.res = -errnoOf(err)
			return
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFBLK:
			if cachedRead(s, p, &st) {
				return
			}
			p.act = paWork // always "ready": epoll would refuse them
			return
		case unix.S_IFDIR:
			p.act = paWork
			return
		}
		p.want = unix.EPOLLIN
		if s.code == OpWrite || s.code == OpWritev {
			p.want = unix.EPOLLOUT
		}
		p.mode = pmNowait
		b.try(s, p)
	default:
		b.startOp(s, p) // sockets and files: backend_poll_ops_linux.go
	}
}

// cachedRead tries a positioned read of a regular file or block device
// from the page cache (RWF_NOWAIT), as io_uring does inline before it
// punts to its workers. It reports whether that finished the request (its
// result in p.res): a full read, a short one that ends at the end of the
// file, or an error that is not "would block". Otherwise the read goes to
// a worker, which reads it all again: a positioned read is idempotent, so
// a partial one from the cache is not reported as the whole.
func cachedRead(s *slot, p *pslot, st *unix.Stat_t) bool {
	if (s.code != OpRead && s.code != OpReadv) || s.off < 0 {
		return false
	}
	res := rw(s, s.fd, unix.RWF_NOWAIT, -1)
	switch {
	case res == -int32(unix.EAGAIN) || res == -int32(unix.EOPNOTSUPP):
		return false
	case res < 0:
	case int(res) == opBytes(s):
	case st.Mode&unix.S_IFMT == unix.S_IFREG && s.off+int64(res) >= st.Size:
	default:
		return false
	}
	p.res = res
	return true
}

// opBytes returns the number of bytes a read or write asks for.
func opBytes(s *slot) int {
	if s.code == OpRead || s.code == OpWrite {
		return len(s.buf)
	}
	n := 0
	for _, b := range s.bufs {
		n += len(b)
	}
	return n
}

// twinWrite runs write request s on p.fd, the non-blocking reopen of a
// blocking terminal (pmTwin), as a blocking write(2) on the terminal
// would: it moves what the terminal takes now, and the request waits for
// room until all of its buffer has moved (p.res -EAGAIN), an error comes,
// or a cancel or deadline ends it. p.moved counts what has moved, which
// the completion reports in each case (finish), as a blocking write
// interrupted part-way reports its count (on io_uring too, where the
// write blocks in a kernel worker). It returns p.res's next value.
func twinWrite(s *slot, p *pslot) int32 {
	total := opBytes(s)
	for {
		r := rwFrom(s, p.fd, int(p.moved))
		if r <= 0 { // EAGAIN (wait for room), another error, or nothing to move
			return r
		}
		if p.moved += r; int(p.moved) >= total {
			return 0 // finish reports p.moved
		}
	}
}

// try runs a read or write on a pollable fd (p.fd) without blocking and
// sets p.act and p.res: paDone, or paWait (it would block, or it must run
// on a worker once ready). It may switch p.mode when the fd does not
// support RWF_NOWAIT.
func (b *pollBackend) try(s *slot, p *pslot) {
	if p.mode == pmSock {
		b.trySock(s, p) // backend_poll_ops_linux.go
		return
	}
	p.act = paDone
	for {
		switch p.mode {
		case pmNowait:
			p.res = rw(s, p.fd, unix.RWF_NOWAIT, -1)
			if p.res != -int32(unix.EOPNOTSUPP) {
				break
			}
			// The file cannot do RWF_NOWAIT (a tty, an eventfd write...).
			fl, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETFL, 0)
			if err != nil {
				p.res = -errnoOf(err)
				return
			}
			if fl&unix.O_NONBLOCK != 0 {
				p.mode = pmNonblock
			} else {
				p.mode = pmBlocking
			}
			continue
		case pmNonblock:
			// The caller may have cleared O_NONBLOCK since: check again,
			// a blocking call must not stall the poller.
			fl, err := unix.FcntlInt(uintptr(p.fd), unix.F_GETFL, 0)
			if err != nil {
				p.res = -errnoOf(err)
				return
			}
			if fl&unix.O_NONBLOCK == 0 {
				p.mode = pmBlocking
				continue
			}
			p.res = rw(s, p.fd, 0, -1)
		case pmTwin:
			// Our own O_NONBLOCK description of a blocking terminal.
			if s.code.desc().write {
				p.res = twinWrite(s, p)
			} else {
				p.res = rw(s, p.fd, 0, -1)
			}
		case pmBlocking:
			// Wait for readiness (at once if ready: epoll is level
			// triggered), then a worker runs it (see runBlocking).
			p.act = paWait
			return
		}
		if p.res == -int32(unix.EAGAIN) {
			p.act = paWait
		}
		return
	}
}

// settle moves a psRunning request on according to p.act, appending to
// out what completes. b.mu held.
func (b *pollBackend) settle(idx uint32, p *pslot, out []compl) []compl {
	if p.act != paDone && p.canceled {
		return b.finish(idx, p, -int32(unix.ECANCELED), out)
	}
	switch p.act {
	case paDone:
		out = b.finish(idx, p, p.res, out)
	case paWork:
		if p.pfd == nil && p.own < 0 && holdsFile(b.r.slots[idx].code) {
			// A worker runs it later: on the file the fd names now. (The
			// file operations name no file to hold, or must act on the
			// caller's own fd: OpenAt's directory, Close.)
			fd, err := dupFD(b.r.slots[idx].fd)
			if err != nil {
				return b.finish(idx, p, -errnoOf(err), out)
			}
			p.own, p.fd = fd, fd
		}
		b.queueWork(idx, p)
	case paTimer:
		p.st = psTiming
		b.armTimer(idx, p, b.r.slots[idx].dur)
	case paWait:
		out = b.wait(idx, p, out)
	case paMulti:
		out = b.armMulti(idx, p, out) // backend_poll_multi_linux.go
	}
	return out
}

// armTimer makes fire run for slot idx after d (an OpTimeout's, or an
// OpenAt's next try). b.mu held.
func (b *pollBackend) armTimer(idx uint32, p *pslot, d time.Duration) {
	p.fireAt = time.Now().Add(d)
	if p.timer == nil {
		p.timer = time.AfterFunc(d, func() { b.fire(idx) })
	} else {
		p.timer.Reset(d)
	}
}

// holdsFile reports whether a request of op that runs later acts on a
// duplicate of its fd made at submission: every operation on an fd but
// the file operations (OpenAt, Close, Statx), which name no file to hold
// or must act on the caller's own fd.
func holdsFile(op Opcode) bool {
	return op < OpForeign || opImpls[op].poll == pkSock
}

// wait parks slot idx on its file's waiter list (attaching it to the
// file's pollFD first) and arms epoll. b.mu held.
func (b *pollBackend) wait(idx uint32, p *pslot, out []compl) []compl {
	if p.pfd == nil {
		if res := b.attach(idx, p); res != 0 {
			return b.finish(idx, p, res, out)
		}
	}
	pfd := p.pfd
	if p.mode == pmBlocking && pfd.twin >= 0 {
		p.mode, p.fd = pmTwin, pfd.twin
	}
	if pfd.noEpoll && b.r.slots[idx].code != OpPoll {
		b.queueWork(idx, p)
		return out
	}
	p.st = psWaiting
	b.push(&pfd.waiters, int32(idx))
	if pfd.registered && pfd.armed&p.want == p.want && p.mode != pmBlocking {
		// epoll is armed for these events already. Whenever a waiter
		// could add events, arm ran (wait, ready, a worker or a cancel
		// freeing the file's direction), so pfd.armed covers every other
		// waiter's: arm's walk of the list would change nothing, and
		// taking it on each of many waiters of one file is quadratic.
		return out
	}
	return b.arm(pfd, out)
}

// attach gives slot idx, which is to wait, the pollFD of the file
// description its fd names now (the caller's fd is valid: this runs in its
// Submit), and makes p.fd that pollFD's duplicate. It returns 0 or -errno.
// b.mu held.
func (b *pollBackend) attach(idx uint32, p *pslot) int32 {
	fd := b.r.slots[idx].fd
	pfd := b.fds[fd]
	if pfd != nil {
		if b.sameFile(fd, pfd.dfd) {
			pfd.refs++
			p.pfd, p.fd = pfd, pfd.dfd
			return 0
		}
		// The number names another file now (the caller closed it under
		// its requests): those keep their pollFD, found only by them.
		delete(b.fds, fd)
		pfd.fd = -1
	}
	dfd, err := dupFD(fd)
	if err != nil {
		return -errnoOf(err)
	}
	pfd = b.newPFD(dfd)
	if !b.noKcmp {
		pfd.fd = fd
		b.fds[fd] = pfd
	}
	pfd.refs = 1
	p.pfd, p.fd = pfd, dfd
	return 0
}

// sameFile reports whether fd and dfd name the same open file description
// (kcmp KCMP_FILE). Where kcmp fails for want of support, it sets b.noKcmp.
// b.mu held.
func (b *pollBackend) sameFile(fd, dfd int32) bool {
	const kcmpFile = 0 // KCMP_FILE, linux/kcmp.h
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(b.pid), uintptr(b.pid), kcmpFile, uintptr(fd), uintptr(dfd), 0)
	switch e {
	case 0:
		return r == 0
	case unix.EBADF:
		return false
	}
	b.noKcmp = true // ENOSYS, EPERM...: no sharing from now on
	return false
}

// dupFD duplicates fd (close-on-exec) at a number of its own.
func dupFD(fd int32) (int32, error) {
	d, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	return int32(d), err
}

// newPFD returns an unused pollFD (reused when one is free) holding dfd.
// b.mu held.
func (b *pollBackend) newPFD(dfd int32) *pollFD {
	var pfd *pollFD
	if k := len(b.freePFDs); k > 0 {
		pfd = b.pfds[b.freePFDs[k-1]]
		b.freePFDs = b.freePFDs[:k-1]
	} else {
		pfd = &pollFD{id: int32(len(b.pfds))}
		b.pfds = append(b.pfds, pfd)
	}
	pfd.fd, pfd.dfd, pfd.twin, pfd.opener = -1, dfd, -1, -1
	pfd.waiters = plist{-1, -1}
	return pfd
}

// releasePFD removes pfd's epoll registration, puts its duplicates on out
// to be closed and keeps pfd for reuse. No request is attached. b.mu held.
func (b *pollBackend) releasePFD(pfd *pollFD, out []compl) []compl {
	if pfd.registered {
		// Before the close: a registration outlives an fd closed while
		// the file stays open elsewhere (epoll(7), Q6).
		unix.EpollCtl(b.epfd, unix.EPOLL_CTL_DEL, int(pfd.dfd), nil)
	}
	if pfd.twin >= 0 {
		out = append(out, compl{closeFD, pfd.twin, 0})
	}
	out = append(out, compl{closeFD, pfd.dfd, 0})
	if pfd.fd >= 0 && b.fds[pfd.fd] == pfd {
		delete(b.fds, pfd.fd)
	}
	*pfd = pollFD{id: pfd.id, gen: pfd.gen + 1, fd: -1, dfd: -1, twin: -1, opener: -1, waiters: plist{-1, -1}}
	b.freePFDs = append(b.freePFDs, pfd.id)
	return out
}

// finish ends slot idx with res: its file references are dropped (closed
// by deliverAll before the completion is delivered). b.mu held.
func (b *pollBackend) finish(idx uint32, p *pslot, res int32, out []compl) []compl {
	p.st = psIdle
	if p.moved > 0 {
		// A MSG_WAITALL transfer (tryAll) or a blocking terminal's write
		// (twinWrite) reports what moved, also when an error or a cancel
		// ends it, as io_uring's does.
		if res >= 0 {
			res += p.moved
		} else {
			res = p.moved
		}
		p.moved = 0
	}
	if p.own >= 0 {
		out = append(out, compl{closeFD, p.own, 0})
		p.own = -1
	}
	if p.fwd >= 0 {
		out = b.unwatchFIFO(p, out) // backend_poll_fifo_linux.go
	}
	if pfd := p.pfd; pfd != nil {
		p.pfd = nil
		if pfd.refs--; pfd.refs == 0 {
			out = b.releasePFD(pfd, out)
		}
	}
	p.fd = -1
	if p.fidx >= 0 {
		// A FixedFile request names its index again (errors report it).
		b.r.slots[idx].fd, p.fidx = p.fidx, -1
	}
	return append(out, compl{idx, res, 0})
}

// arm makes epoll report the events pfd's waiters want (one shot). b.mu held.
func (b *pollBackend) arm(pfd *pollFD, out []compl) []compl {
	if pfd.noEpoll {
		return b.failPolls(pfd, out)
	}
	var want uint32
	for i := pfd.waiters.head; i >= 0; i = b.ps[i].next {
		if p := &b.ps[i]; p.mode != pmBlocking || b.canDispatch(pfd, p) {
			want |= p.want
		}
	}
	if want == 0 || pfd.armed&want == want {
		return out
	}
	ev := unix.EpollEvent{Events: want | unix.EPOLLONESHOT, Fd: pfd.id, Pad: int32(pfd.gen)}
	var err error
	if pfd.registered {
		err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_MOD, int(pfd.dfd), &ev)
	} else {
		err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_ADD, int(pfd.dfd), &ev)
	}
	switch err {
	case nil:
		pfd.registered = true
		pfd.armed = want
	case unix.EPERM:
		// The file has no poll support: it never blocks in poll's sense.
		// Reads and writes go to the workers; a poll for events such a
		// file never reports (pollNow took those it reports) fails with
		// EINVAL, as on io_uring, which has no wait queue to arm it on.
		pfd.noEpoll = true
		for i := pfd.waiters.head; i >= 0; {
			next := b.ps[i].next
			if b.r.slots[i].code != OpPoll {
				b.unlink(&pfd.waiters, i)
				b.queueWork(uint32(i), &b.ps[i])
			}
			i = next
		}
		out = b.failPolls(pfd, out)
	default:
		out = b.failWaiters(pfd, -errnoOf(err), out)
	}
	return out
}

// failPolls completes the polls waiting on pfd, a file epoll refuses
// (noEpoll), with EINVAL. b.mu held.
func (b *pollBackend) failPolls(pfd *pollFD, out []compl) []compl {
	for i := pfd.waiters.head; i >= 0; {
		next := b.ps[i].next
		if b.r.slots[i].code == OpPoll {
			b.unlink(&pfd.waiters, i)
			out = b.finish(uint32(i), &b.ps[i], -int32(unix.EINVAL), out)
		}
		i = next
	}
	return out
}

// failWaiters completes every waiter of pfd with res. b.mu held.
func (b *pollBackend) failWaiters(pfd *pollFD, res int32, out []compl) []compl {
	for i := pfd.waiters.head; i >= 0; {
		next := b.ps[i].next
		b.unlink(&pfd.waiters, i)
		out = b.finish(uint32(i), &b.ps[i], res, out)
		i = next
	}
	return out
}

// canDispatch reports whether pmBlocking request p may go to a worker now:
// one read and one write of a file at a time, and none while a request
// decides on the file's reopen. b.mu held.
func (b *pollBackend) canDispatch(pfd *pollFD, p *pslot) bool {
	if pfd.opener >= 0 {
		return false
	}
	if p.want&unix.EPOLLOUT != 0 {
		return !pfd.busyW
	}
	return !pfd.busyR
}

// dispatch hands pmBlocking request idx, ready, to a worker and marks its
// direction of the file busy. The first write of a file decides on its
// reopen (reads need none: FIONREAD bounds them). b.mu held; canDispatch
// said yes.
func (b *pollBackend) dispatch(pfd *pollFD, idx uint32, p *pslot) {
	if p.want&unix.EPOLLOUT != 0 {
		pfd.busyW = true
		if !pfd.twinTried {
			pfd.twinTried, pfd.opener = true, int32(idx)
		}
	} else {
		pfd.busyR = true
	}
	b.queueWork(idx, p)
}

// queueWork puts slot idx on the worker queue, starting a worker when none
// is idle and the pool is not full. b.mu held.
func (b *pollBackend) queueWork(idx uint32, p *pslot) {
	b.r.stats.noteFallback(b.r.slots[idx].code) // stats.go
	b.enqueueWork(idx, p)
}

// enqueueWork is queueWork without the count: an OpenAt's next try
// (openLater) is the same request. b.mu held.
func (b *pollBackend) enqueueWork(idx uint32, p *pslot) {
	p.st = psQueued
	b.push(&b.work, int32(idx))
	if b.idle > 0 {
		b.idle--
		b.workCond.Signal()
	} else if b.nworkers < b.maxWorkers {
		b.nworkers++
		b.wg.Add(1)
		go b.worker()
	}
}

// worker runs queued requests with blocking syscalls until close.
func (b *pollBackend) worker() {
	defer b.wg.Done()
	var out []compl
	b.mu.Lock()
	for {
		for b.work.head < 0 {
			if b.closing {
				b.mu.Unlock()
				return
			}
			b.idle++
			b.workCond.Wait()
		}
		idx := uint32(b.pop(&b.work))
		p := &b.ps[idx]
		p.st = psRunning
		fd, pfd := p.fd, p.pfd
		blocking := p.mode == pmBlocking && pfd != nil && !pfd.noEpoll
		reopen := blocking && pfd.opener == int32(idx)
		hold := b.testHold
		b.mu.Unlock()
		if hold != nil {
			hold(idx)
		}

		s := &b.r.slots[idx]
		var res int32
		again := false
		switch {
		case s.code == OpFsync:
			if err := fsync(int(fd)); err != nil {
				res = -errnoOf(err)
			}
		case s.code == OpOpenAt:
			res, again = b.openFile(s, p, fd) // backend_poll_ops_linux.go
		case s.code == OpConnect:
			res, again = connectAgain(s, p, fd) // backend_poll_ops_linux.go
		case s.code == OpAccept && blocking:
			// Ready, but the connection may be another's by now: accept4
			// without waiting, or wait for readiness again.
			res = acceptNonblock(s, fd) // backend_poll_multi_linux.go
			again = res == -int32(unix.EAGAIN)
		case s.code > OpForeign:
			res = runBlocking(s, fd) // sockets and files: backend_poll_ops_linux.go
		case blocking:
			res, again = b.runBlocking(idx, s, p, pfd, reopen)
		default:
			res = rw(s, fd, 0, -1)
		}

		out = out[:0]
		b.mu.Lock()
		if !blocking {
			switch {
			case again && !p.canceled:
				// An OpenAt waiting for a FIFO's reader, a Connect for
				// room in a backlog: tried again later, on a timer a
				// cancel stops.
				out = b.openLater(idx, p, out)
			case again:
				out = b.finish(idx, p, -int32(unix.ECANCELED), out)
			default:
				// A cancel that arrived while it ran lost the race: the
				// real result stands.
				out = b.finish(idx, p, res, out)
			}
		} else {
			if p.want&unix.EPOLLOUT != 0 {
				pfd.busyW = false
			} else {
				pfd.busyR = false
			}
			switch {
			case again && !p.canceled:
				// Not ready after all: first in line again.
				p.st = psWaiting
				b.pushFront(&pfd.waiters, int32(idx))
			case again:
				out = b.finish(idx, p, -int32(unix.ECANCELED), out)
			default:
				out = b.finish(idx, p, res, out)
			}
			if pfd.refs > 0 {
				out = b.arm(pfd, out) // the next one of this file may run
			}
		}
		b.mu.Unlock()
		b.deliverAll(out)
		b.mu.Lock()
	}
}

// runBlocking runs pmBlocking request idx (on a worker, the only one of
// its file and direction) so that it cannot block: a read asks for no more
// than FIONREAD counts; a write, or a read of a file without FIONREAD, uses
// a non-blocking reopen of the terminal where there is one (with reopen,
// it decides on that first). It reports again when the request is to wait
// for readiness once more.
func (b *pollBackend) runBlocking(idx uint32, s *slot, p *pslot, pfd *pollFD, reopen bool) (res int32, again bool) {
	fd := p.fd
	limit := -1
	if s.code == OpRead || s.code == OpReadv {
		n, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
		switch {
		case err != nil:
			// No FIONREAD: a reopen, if the file has one, or readiness
			// is all there is.
			b.mu.Lock()
			if !pfd.twinTried {
				pfd.twinTried, pfd.opener, reopen = true, int32(idx), true
			}
			b.mu.Unlock()
		case n > 0:
			limit = n
		case pollNow(fd, unix.POLLIN) == 0:
			return 0, true // someone else took the data
		default:
			// Readable with nothing counted: end of file (a terminal's
			// EOF character, a hang-up); the read returns at once.
		}
	}
	if reopen {
		// About 20-40us for the open and the close (a pty slave, 2
		// cores): paid once per busy period of the file, as the reopen
		// lives as long as requests are attached.
		tw := reopenTerminal(fd)
		b.mu.Lock()
		pfd.opener = -1
		if tw >= 0 {
			pfd.twin = tw
			for i := pfd.waiters.head; i >= 0; i = b.ps[i].next {
				if q := &b.ps[i]; q.mode == pmBlocking {
					q.mode, q.fd = pmTwin, tw
				}
			}
			p.mode, p.fd = pmTwin, tw
		}
		b.mu.Unlock()
		if tw >= 0 {
			if s.code.desc().write {
				res = twinWrite(s, p)
			} else {
				res = rw(s, tw, 0, -1)
			}
			return res, res == -int32(unix.EAGAIN)
		}
	}
	return rw(s, fd, 0, limit), false
}

// reopenTerminal opens the terminal fd names again, non-blocking, where
// that gives a second description of the same terminal: not /dev/tty,
// /dev/console, /dev/ptmx or a BSD pty master (majors 5 and 2, where an
// open redirects or makes a new pty), not a device that is not a terminal
// (its per-open state would differ: evdev, hidraw). It returns the new fd,
// or -1.
func reopenTerminal(fd int32) int32 {
	var st unix.Stat_t
	if unix.Fstat(int(fd), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return -1
	}
	if m := unix.Major(uint64(st.Rdev)); m == 2 || m == 5 { // Rdev is a uint32 on mips
		return -1
	}
	if _, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err != nil {
		return -1
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return -1
	}
	flags := fl&unix.O_ACCMODE | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	tw, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(fd)), flags, 0)
	if err != nil {
		return -1 // no /proc, TIOCEXCL (EBUSY), no permission...
	}
	var tst unix.Stat_t
	if unix.Fstat(tw, &tst) != nil || tst.Mode&unix.S_IFMT != unix.S_IFCHR || tst.Rdev != st.Rdev {
		unix.Close(tw)
		return -1
	}
	return int32(tw)
}

func fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// fire ends an OpTimeout whose timer ran out, or queues the next try of an
// OpenAt waiting for a FIFO's reader or a Connect waiting for room in a
// backlog (openLater). A callback of the slot's
// previous use that runs late finds the request not yet due and does nothing.
func (b *pollBackend) fire(idx uint32) {
	p := &b.ps[idx]
	b.mu.Lock()
	if (p.st != psTiming && p.st != psRetry) || time.Now().Before(p.fireAt) {
		b.mu.Unlock()
		return
	}
	if p.st == psRetry {
		b.enqueueWork(idx, p)
		b.mu.Unlock()
		return
	}
	p.st = psIdle
	b.mu.Unlock()
	b.deliver(idx, -int32(unix.ETIME))
}

// poller waits for epoll events, parked in Go's netpoller, and handles them.
func (b *pollBackend) poller(rc syscall.RawConn) {
	defer close(b.pollerDone)
	n := 0
	wait := func(fd uintptr) bool {
		for {
			k, err := unix.EpollWait(int(fd), b.events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				n = -1
				return true
			}
			n = k
			return k > 0
		}
	}
	for {
		if err := rc.Read(wait); err != nil || n < 0 {
			return // the epoll file was closed
		}
		for i := range b.events[:n] {
			b.ready(b.events[i])
		}
	}
}

// ready handles one epoll event: the waiters it concerns are tried again
// (outside b.mu), then finished or parked again, and the file re-armed.
func (b *pollBackend) ready(ev unix.EpollEvent) {
	got := ev.Events
	if ev.Fd < 0 {
		b.readyMulti(ev) // a multishot request's own registration
		return
	}
	b.mu.Lock()
	if int(ev.Fd) >= len(b.pfds) {
		b.mu.Unlock()
		return
	}
	pfd := b.pfds[ev.Fd]
	if uint32(ev.Pad) != pfd.gen || pfd.refs == 0 {
		b.mu.Unlock()
		return // an event of an earlier use of this pollFD
	}
	pfd.armed = 0
	batch := b.batch[:0]
	for i := pfd.waiters.head; i >= 0; {
		p := &b.ps[i]
		next := p.next
		if p.want&got != 0 || got&epollAlways != 0 {
			switch {
			case p.mode != pmBlocking:
				b.unlink(&pfd.waiters, i)
				p.st = psRunning
				batch = append(batch, i)
			case b.canDispatch(pfd, p):
				b.unlink(&pfd.waiters, i)
				b.dispatch(pfd, uint32(i), p)
			}
		}
		i = next
	}
	b.mu.Unlock()

	for _, i := range batch {
		s := &b.r.slots[i]
		p := &b.ps[i]
		if s.code == OpPoll {
			p.act, p.res = paDone, int32(got&(p.want|epollAlways))
			continue
		}
		b.try(s, p)
	}

	out := b.pollOut[:0]
	b.mu.Lock()
	for _, i := range batch {
		p := &b.ps[i]
		if p.act == paWait && !p.canceled && p.pfd == pfd {
			// Still not ready: back on the list (re-armed below).
			p.st = psWaiting
			b.push(&pfd.waiters, i)
			continue
		}
		out = b.settle(uint32(i), p, out)
	}
	if pfd.refs > 0 && pfd.waiters.head >= 0 {
		out = b.arm(pfd, out)
	}
	b.mu.Unlock()
	b.batch = batch[:0]
	b.deliverAll(out)
	b.pollOut = out[:0]
}

// cancel cancels slot idx if key still names its submission: at once when
// it waits (on an fd, in the worker queue, on a timer), or by marking it
// when it is being tried or run (its runner then decides). r.sqMu held.
func (b *pollBackend) cancel(idx uint32, key uint64) {
	out := b.sqOut[:0]
	b.mu.Lock()
	out = b.cancelLocked(idx, key, out)
	b.mu.Unlock()
	b.deliverAll(out)
	b.sqOut = out[:0]
}

func (b *pollBackend) cancelLocked(idx uint32, key uint64, out []compl) []compl {
	p := &b.ps[idx]
	if p.key != key {
		return out
	}
	switch p.st {
	case psPending, psRunning:
		p.canceled = true
		return out
	case psWaiting:
		b.unlink(&p.pfd.waiters, int32(idx))
	case psQueued:
		b.unlink(&b.work, int32(idx))
		if pfd := p.pfd; pfd != nil && p.mode == pmBlocking && !pfd.noEpoll {
			// It held its direction of the file (see dispatch).
			if p.want&unix.EPOLLOUT != 0 {
				pfd.busyW = false
			} else {
				pfd.busyR = false
			}
			if pfd.opener == int32(idx) {
				pfd.opener, pfd.twinTried = -1, false
			}
			out = b.arm(pfd, out)
		}
	case psTiming, psRetry:
		p.timer.Stop()
	case psMulti:
		b.disarmMulti(p)
	default:
		return out
	}
	return b.finish(idx, p, -int32(unix.ECANCELED), out)
}

// cancelAll cancels every request of the backend. r.sqMu held.
func (b *pollBackend) cancelAll() {
	out := b.sqOut[:0]
	b.mu.Lock()
	for i := range b.ps {
		if b.ps[i].st != psIdle {
			out = b.cancelLocked(uint32(i), b.ps[i].key, out)
		}
	}
	b.mu.Unlock()
	b.deliverAll(out)
	b.sqOut = out[:0]
}

// reap has nothing to move: completions are delivered as they happen. With
// wait it blocks until a completion (or wake) since the last reap that
// consumed the note, or until timeout. r.reapMu held.
func (b *pollBackend) reap(wait bool, timeout time.Duration) error {
	if !wait || timeout == 0 {
		return nil
	}
	if timeout < 0 {
		<-b.note
		return nil
	}
	b.rtimer.Reset(timeout)
	select {
	case <-b.note:
	case <-b.rtimer.C:
	}
	b.rtimer.Stop()
	return nil
}

func (b *pollBackend) wake() {
	select {
	case b.note <- struct{}{}:
	default:
	}
}

// close stops the workers and the poller and closes the epoll fd. Every
// request has completed.
func (b *pollBackend) close() error {
	b.mu.Lock()
	b.closing = true
	b.idle = 0
	b.workCond.Broadcast()
	b.mu.Unlock()
	b.wg.Wait()
	err := b.epfile.Close() // wakes the poller; returns once the fd is closed
	<-b.pollerDone
	b.mu.Lock()
	for i := range b.ps {
		if t := b.ps[i].timer; t != nil {
			t.Stop()
		}
	}
	b.mu.Unlock()
	b.fifo.mu.Lock()
	b.fifo.closeLocked()
	b.fifo.mu.Unlock()
	return err
}

// pollNow polls fd for events without waiting: the ready events among
// events|POLLERR|POLLHUP, -EBADF for a closed fd, or 0.
func pollNow(fd int32, events uint32) int32 {
	fds := [1]unix.PollFd{{Fd: fd, Events: int16(events & pollableMask)}}
	for {
		n, err := unix.Poll(fds[:], 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -errnoOf(err)
		}
		if n == 0 {
			return 0
		}
		rev := uint32(uint16(fds[0].Revents))
		if rev&unix.POLLNVAL != 0 {
			return -int32(unix.EBADF)
		}
		return int32(rev & (events | epollAlways))
	}
}

// errnoOf returns err's errno (EIO when it has none).
func errnoOf(err error) int32 {
	if e, ok := err.(unix.Errno); ok {
		return int32(e)
	}
	return int32(unix.EIO)
}

// push appends slot i to l. b.mu held.
func (b *pollBackend) push(l *plist, i int32) {
	p := &b.ps[i]
	p.prev, p.next = l.tail, -1
	if l.tail >= 0 {
		b.ps[l.tail].next = i
	} else {
		l.head = i
	}
	l.tail = i
}

// unlink removes slot i from l. b.mu held.
func (b *pollBackend) unlink(l *plist, i int32) {
	p := &b.ps[i]
	if p.prev >= 0 {
		b.ps[p.prev].next = p.next
	} else {
		l.head = p.next
	}
	if p.next >= 0 {
		b.ps[p.next].prev = p.prev
	} else {
		l.tail = p.prev
	}
	p.prev, p.next = -1, -1
}

// pushFront puts slot i first on l. b.mu held.
func (b *pollBackend) pushFront(l *plist, i int32) {
	p := &b.ps[i]
	p.prev, p.next = -1, l.head
	if l.head >= 0 {
		b.ps[l.head].prev = i
	} else {
		l.tail = i
	}
	l.head = i
}

// pop removes and returns the first slot of l (l not empty). b.mu held.
func (b *pollBackend) pop(l *plist) int32 {
	i := l.head
	b.unlink(l, i)
	return i
}
