//go:build linux

package ioring

import (
	"fmt"
	"os"
	"runtime"
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
//     file description alone); on EAGAIN the request waits on its fd's
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
// Character devices without RWF_NOWAIT support (ttys, for example) are
// tried with a plain read or write when the fd itself is O_NONBLOCK;
// otherwise the request waits for readiness and then runs on a worker,
// where it cannot be interrupted any more (it may block if another reader
// took the data first).
//
// One poller goroutine waits for epoll events, parked in Go's netpoller on
// the epoll fd (no OS thread is held). Completions are delivered with
// Ring.complete by whichever goroutine finishes a request (the submitter
// for operations that finish at once, the poller, a worker, a timer), and a
// token in note wakes a goroutine blocked in reap. No goroutine is started
// per request.
//
// Locking: b.mu guards every pslot's state, the per-fd waiter lists, the
// worker queue and the fd table; it is never held across blocking I/O or
// across Ring.complete. Lock order: r.sqMu, then b.mu; Ring.complete (which
// takes token locks) is called without b.mu.
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

	mu         sync.Mutex
	fds        map[int32]*pollFD // by fd number; guarded by mu
	work       plist             // queued worker requests; guarded by mu
	workCond   sync.Cond         // signals work; L is &mu
	idle       int               // workers waiting on workCond, not yet signaled
	nworkers   int
	maxWorkers int
	closing    bool
	wg         sync.WaitGroup // workers
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
)

// pmode says how a request on a pollable fd is tried.
type pmode uint8

const (
	pmNowait   pmode = iota // preadv2/pwritev2 with RWF_NOWAIT
	pmNonblock              // the fd is O_NONBLOCK itself: plain preadv2/pwritev2
	pmBlocking              // wait for readiness, then run on a worker
	pmSock                  // a socket operation: trySock (backend_poll_ops_linux.go)
)

// pact is what start decided for a request.
type pact uint8

const (
	paDone  pact = iota // finished, res holds the result
	paWait              // wait for readiness on its fd
	paWork              // run on a worker
	paTimer             // arm the OpTimeout timer
)

// pslot is the poll backend's state of one request slot. st, canceled and
// the list links are guarded by b.mu; the other fields belong to whoever
// moved the request to its current state (submitter, poller, worker).
type pslot struct {
	key      uint64 // the submission's key: stale cancels do nothing
	st       pstate
	mode     pmode
	act      pact
	canceled bool // cancel requested while pending or running
	want     uint32
	res      int32
	dev, ino uint64 // identity of the file the request waits on
	pfd      *pollFD
	prev     int32
	next     int32
	timer    *time.Timer // OpTimeout's timer, made once per slot
	fireAt   time.Time
}

// pollFD is an fd number with requests waiting on it.
type pollFD struct {
	fd         int32
	gen        uint32 // bumped when the number is found naming another file
	dev, ino   uint64
	registered bool   // an epoll registration exists for this file
	armed      uint32 // events of the outstanding one-shot arm, 0 if none
	noEpoll    bool   // epoll refused the fd (EPERM): always ready
	waiters    plist
}

// plist is an intrusive doubly linked list of slots, through pslot.prev
// and pslot.next. A slot is on at most one list at a time.
type plist struct{ head, tail int32 }

// compl is a completion to deliver once locks are released.
type compl struct {
	idx uint32
	res int32
}

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
		fds:        make(map[int32]*pollFD),
		work:       plist{-1, -1},
		maxWorkers: maxw,
	}
	b.rtimer.Stop()
	b.workCond.L = &b.mu
	for i := range b.ps {
		b.ps[i].prev, b.ps[i].next = -1, -1
	}
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

func (b *pollBackend) deliverAll(out []compl) {
	for _, c := range out {
		b.deliver(c.idx, c.res)
	}
}

// submit records slot idx; flush starts it (so that a request finishing at
// once completes after the Ring is done with its slot). r.sqMu held.
func (b *pollBackend) submit(idx uint32) error {
	s := &b.r.slots[idx]
	p := &b.ps[idx]
	b.mu.Lock()
	p.key = s.key()
	p.st = psPending
	p.canceled = false
	p.mode = pmNowait
	p.pfd = nil
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
			p.st = psIdle
			out = append(out, compl{idx, -int32(unix.ECANCELED)})
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
		p.want = s.events & pollableMask
		if res := pollNow(s.fd, p.want); res != 0 {
			p.res = res
			return
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(s.fd), &st); err != nil {
			p.res = -errnoOf(err)
			return
		}
		p.dev, p.ino = st.Dev, st.Ino
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
		p.dev, p.ino = st.Dev, st.Ino
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
	res := rw(s, unix.RWF_NOWAIT)
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

// try runs a read or write on a pollable fd without blocking and sets
// p.act and p.res: paDone, paWait (it would block) or paWork. It may
// switch p.mode when the fd does not support RWF_NOWAIT.
func (b *pollBackend) try(s *slot, p *pslot) {
	if p.mode == pmSock {
		b.trySock(s, p) // backend_poll_ops_linux.go
		return
	}
	p.act = paDone
	for {
		switch p.mode {
		case pmNowait:
			p.res = rw(s, unix.RWF_NOWAIT)
			if p.res != -int32(unix.EOPNOTSUPP) {
				break
			}
			// The file cannot do RWF_NOWAIT (a tty, an eventfd write...).
			fl, err := unix.FcntlInt(uintptr(s.fd), unix.F_GETFL, 0)
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
			fl, err := unix.FcntlInt(uintptr(s.fd), unix.F_GETFL, 0)
			if err != nil {
				p.res = -errnoOf(err)
				return
			}
			if fl&unix.O_NONBLOCK == 0 {
				p.mode = pmBlocking
				continue
			}
			p.res = rw(s, 0)
		case pmBlocking:
			if pollNow(s.fd, p.want) != 0 {
				p.act = paWork // ready: a blocking call should return soon
			} else {
				p.act = paWait
			}
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
		p.st = psIdle
		return append(out, compl{idx, -int32(unix.ECANCELED)})
	}
	switch p.act {
	case paDone:
		p.st = psIdle
		out = append(out, compl{idx, p.res})
	case paWork:
		b.queueWork(idx, p)
	case paTimer:
		p.st = psTiming
		s := &b.r.slots[idx]
		p.fireAt = time.Now().Add(s.dur)
		if p.timer == nil {
			p.timer = time.AfterFunc(s.dur, func() { b.fire(idx) })
		} else {
			p.timer.Reset(s.dur)
		}
	case paWait:
		out = b.wait(idx, p, out)
	}
	return out
}

// wait parks slot idx on its fd's waiter list and arms epoll. b.mu held.
func (b *pollBackend) wait(idx uint32, p *pslot, out []compl) []compl {
	fd := b.r.slots[idx].fd
	pfd := b.fds[fd]
	if pfd == nil {
		pfd = &pollFD{fd: fd, dev: p.dev, ino: p.ino, waiters: plist{-1, -1}}
		b.fds[fd] = pfd
	} else if pfd.dev != p.dev || pfd.ino != p.ino {
		// The number now names another file: whatever waited on the old
		// one (closed under its requests, a caller error) cannot be
		// reached through it any more.
		out = b.failWaiters(pfd, -int32(unix.EBADF), out)
		pfd.gen++
		pfd.dev, pfd.ino = p.dev, p.ino
		pfd.registered, pfd.armed, pfd.noEpoll = false, 0, false
	}
	if pfd.noEpoll && b.r.slots[idx].code != OpPoll {
		b.queueWork(idx, p)
		return out
	}
	p.st = psWaiting
	p.pfd = pfd
	b.push(&pfd.waiters, int32(idx))
	return b.arm(pfd, out)
}

// arm makes epoll report the events pfd's waiters want (one shot). b.mu held.
func (b *pollBackend) arm(pfd *pollFD, out []compl) []compl {
	if pfd.noEpoll {
		return out
	}
	var want uint32
	for i := pfd.waiters.head; i >= 0; i = b.ps[i].next {
		want |= b.ps[i].want
	}
	if want == 0 || pfd.armed&want == want {
		return out
	}
	ev := unix.EpollEvent{Events: want | unix.EPOLLONESHOT, Fd: pfd.fd, Pad: int32(pfd.gen)}
	var err error
	if pfd.registered {
		err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_MOD, int(pfd.fd), &ev)
		if err == unix.ENOENT { // the file was closed and the number reused
			err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_ADD, int(pfd.fd), &ev)
		}
	} else {
		err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_ADD, int(pfd.fd), &ev)
		if err == unix.EEXIST {
			err = unix.EpollCtl(b.epfd, unix.EPOLL_CTL_MOD, int(pfd.fd), &ev)
		}
	}
	switch err {
	case nil:
		pfd.registered = true
		pfd.armed = want
	case unix.EPERM:
		// The file has no poll support: it never blocks in poll's sense.
		// Reads and writes go to the workers; a poll for events such a
		// file never reports waits until it is canceled, as on io_uring.
		pfd.noEpoll = true
		for i := pfd.waiters.head; i >= 0; {
			next := b.ps[i].next
			if b.r.slots[i].code != OpPoll {
				b.unlink(&pfd.waiters, i)
				b.queueWork(uint32(i), &b.ps[i])
			}
			i = next
		}
	default:
		out = b.failWaiters(pfd, -errnoOf(err), out)
	}
	return out
}

// failWaiters completes every waiter of pfd with res. b.mu held.
func (b *pollBackend) failWaiters(pfd *pollFD, res int32, out []compl) []compl {
	for i := pfd.waiters.head; i >= 0; {
		next := b.ps[i].next
		b.unlink(&pfd.waiters, i)
		b.ps[i].st = psIdle
		out = append(out, compl{uint32(i), res})
		i = next
	}
	return out
}

// queueWork puts slot idx on the worker queue, starting a worker when none
// is idle and the pool is not full. b.mu held.
func (b *pollBackend) queueWork(idx uint32, p *pslot) {
	b.r.stats.noteFallback(b.r.slots[idx].code) // stats.go
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
		idx := b.pop(&b.work)
		p := &b.ps[idx]
		p.st = psRunning
		b.mu.Unlock()

		s := &b.r.slots[idx]
		var res int32
		switch {
		case s.code == OpFsync:
			res = 0
			if err := fsync(int(s.fd)); err != nil {
				res = -errnoOf(err)
			}
		case s.code > OpForeign:
			res = runBlocking(s) // sockets and files: backend_poll_ops_linux.go
		default:
			res = rw(s, 0)
		}

		b.mu.Lock()
		p.st = psIdle
		b.mu.Unlock()
		// A cancel that arrived while it ran lost the race: the real
		// result stands.
		b.deliver(uint32(idx), res)
		b.mu.Lock()
	}
}

func fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}

// fire ends an OpTimeout whose timer ran out. A callback of the slot's
// previous use that runs late finds the request not yet due and does nothing.
func (b *pollBackend) fire(idx uint32) {
	p := &b.ps[idx]
	b.mu.Lock()
	if p.st != psTiming || time.Now().Before(p.fireAt) {
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
// (outside b.mu), then finished or parked again, and the fd re-armed.
func (b *pollBackend) ready(ev unix.EpollEvent) {
	got := ev.Events
	b.mu.Lock()
	pfd := b.fds[ev.Fd]
	if pfd == nil || uint32(ev.Pad) != pfd.gen {
		b.mu.Unlock()
		return // a registration of a file that is gone
	}
	pfd.armed = 0
	batch := b.batch[:0]
	for i := pfd.waiters.head; i >= 0; {
		p := &b.ps[i]
		next := p.next
		if p.want&got != 0 || got&epollAlways != 0 {
			b.unlink(&pfd.waiters, i)
			if p.mode == pmBlocking {
				b.queueWork(uint32(i), p)
			} else {
				p.st = psRunning
				batch = append(batch, i)
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
	if pfd.waiters.head >= 0 {
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
	case psTiming:
		p.timer.Stop()
	default:
		return out
	}
	p.st = psIdle
	return append(out, compl{idx, -int32(unix.ECANCELED)})
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

// pop removes and returns the first slot of l (l not empty). b.mu held.
func (b *pollBackend) pop(l *plist) int32 {
	i := l.head
	b.unlink(l, i)
	return i
}
