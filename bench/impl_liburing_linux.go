//go:build liburing && cgo

package bench

/*
#cgo pkg-config: liburing
#include <liburing.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

// user_data tags: measured requests use small values (slot numbers).
#define TAG_LOAD_READ   (1ULL << 62)
#define TAG_LOAD_CANCEL (TAG_LOAD_READ + 1)
#define TAG_PENDING     (1ULL << 61) // + index: reads of the cancel workload
#define TAG_CANCEL_ALL  (1ULL << 60)
#define TAG_CANCEL_ONE  (1ULL << 59) // + index: cancel of one pending read
#define TAG_PING        1
#define TAG_PONG        2
#define TAG_PONG_CANCEL 3

typedef struct {
	struct io_uring ring;
	pid_t tid;                // the only thread that may use the ring (SINGLE_ISSUER, registered fd)
	// Background cancel load (CancelLoad), interleaved into the run loops.
	int load_fd;
	int load_inflight;        // CQEs of the current cycle not seen yet
	int64_t load_every_ns;
	int64_t load_next_ns;
	int64_t cancels;          // completed cycles
	char load_buf[64];
} bring;

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

// bring_new sets the ring up the way a single-threaded liburing program gets
// the most out of it: one issuer, task work deferred to io_uring_enter,
// the ring fd registered. Kernels without those flags get a plain ring.
static bring *bring_new(unsigned entries, int *err) {
	bring *b = calloc(1, sizeof *b);
	if (!b) { *err = -ENOMEM; return NULL; }
	int ret = io_uring_queue_init(entries, &b->ring, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
	if (ret == -EINVAL) ret = io_uring_queue_init(entries, &b->ring, 0);
	if (ret < 0) { free(b); *err = ret; return NULL; }
	io_uring_register_ring_fd(&b->ring); // an optimization: fine if it fails
	b->tid = (pid_t)syscall(SYS_gettid);
	b->load_fd = -1;
	return b;
}

// on_thread reports whether the calling thread created the ring.
static int on_thread(bring *b) { return (pid_t)syscall(SYS_gettid) == b->tid; }

static void bring_free(bring *b) {
	io_uring_queue_exit(&b->ring);
	free(b);
}

static void bring_set_load(bring *b, int fd, int64_t every_ns) {
	b->load_fd = fd;
	b->load_every_ns = every_ns;
	b->load_next_ns = now_ns() + every_ns;
}

// load_maybe queues, when due, a read on the empty load pipe and a cancel of
// that read by user_data (never cancel-any: the measured requests must not be
// hit). Both go in with the loop's next submit, the read first, so the cancel
// finds it pending.
static void load_maybe(bring *b) {
	if (b->load_every_ns <= 0 || b->load_inflight) return;
	int64_t now = now_ns();
	if (now < b->load_next_ns) return;
	if (io_uring_sq_space_left(&b->ring) < 2) return;
	b->load_next_ns += b->load_every_ns;
	if (b->load_next_ns < now) b->load_next_ns = now + b->load_every_ns;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
	io_uring_prep_read(sqe, b->load_fd, b->load_buf, sizeof b->load_buf, 0);
	sqe->user_data = TAG_LOAD_READ;
	sqe = io_uring_get_sqe(&b->ring);
	io_uring_prep_cancel64(sqe, TAG_LOAD_READ, 0);
	sqe->user_data = TAG_LOAD_CANCEL;
	b->load_inflight = 2;
}

// load_cqe consumes a CQE of the load; the cancel's own result (0, -ENOENT,
// -EALREADY) only says how the race went, the read's CQE is the truth.
static int load_cqe(bring *b, struct io_uring_cqe *cqe) {
	b->load_inflight--;
	if (cqe->user_data == TAG_LOAD_READ) {
		if (cqe->res != -ECANCELED) return cqe->res < 0 ? cqe->res : -EPROTO;
		b->cancels++;
	}
	return 0;
}

static int is_load(uint64_t ud) { return ud == TAG_LOAD_READ || ud == TAG_LOAD_CANCEL; }

// enter submits what is queued and waits for at least want CQEs.
static int enter(bring *b, unsigned want) {
	int ret;
	do {
		ret = io_uring_submit_and_wait(&b->ring, want);
	} while (ret == -EINTR);
	return ret < 0 ? ret : 0;
}

// run_nop completes n NOPs, batch SQEs per io_uring_enter.
static int run_nop(bring *b, long n, int batch) {
	if (!on_thread(b)) return -EXDEV;
	long done = 0;
	int err = 0;
	while (done < n) {
		int k = batch;
		if (n - done < k) k = (int)(n - done);
		for (int i = 0; i < k; i++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
			io_uring_prep_nop(sqe);
			sqe->user_data = 0;
		}
		int ret = enter(b, k);
		if (ret < 0) return ret;
		unsigned head, seen = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe(&b->ring, head, cqe) {
			if (cqe->res < 0 && !err) err = cqe->res;
			seen++;
		}
		io_uring_cq_advance(&b->ring, seen);
		done += seen;
		if (err) return err;
	}
	return 0;
}

typedef struct {
	int fd, qd, bs, noff, nfree, verify;
	int fixed;         // bufs registered with the ring, slot i as index i: read_fixed
	int64_t pos;
	int64_t *offs;     // noff offsets
	int64_t *slot_off; // qd: offset being read into slot i
	int *freel;        // qd: free slots
	char *bufs;        // qd * bs
} rstate;

static rstate *rstate_new(int fd, int qd, int bs, int64_t *offs, int noff, int verify) {
	rstate *r = calloc(1, sizeof *r);
	if (!r) return NULL;
	r->fd = fd; r->qd = qd; r->bs = bs; r->noff = noff; r->verify = verify;
	r->offs = malloc(sizeof(int64_t) * noff);
	r->slot_off = calloc(qd, sizeof(int64_t));
	r->freel = calloc(qd, sizeof(int));
	if (posix_memalign((void **)&r->bufs, 4096, (size_t)qd * bs)) r->bufs = NULL;
	if (!r->offs || !r->slot_off || !r->freel || !r->bufs) {
		free(r->offs); free(r->slot_off); free(r->freel); free(r->bufs); free(r);
		return NULL;
	}
	memcpy(r->offs, offs, sizeof(int64_t) * noff);
	for (int i = 0; i < qd; i++) r->freel[i] = i;
	r->nfree = qd;
	return r;
}

// rstate_register registers r's qd buffers with b's ring
// (io_uring_register_buffers), slot i as buffer index i; run_read then
// reads into them with read_fixed.
static int rstate_register(bring *b, rstate *r) {
	if (!on_thread(b)) return -EXDEV;
	struct iovec *iovs = calloc(r->qd, sizeof *iovs);
	if (!iovs) return -ENOMEM;
	for (int i = 0; i < r->qd; i++) {
		iovs[i].iov_base = r->bufs + (size_t)i * r->bs;
		iovs[i].iov_len = r->bs;
	}
	int ret = io_uring_register_buffers(&b->ring, iovs, r->qd);
	free(iovs);
	if (ret == 0) r->fixed = 1;
	return ret;
}

static void rstate_free(rstate *r) {
	free(r->offs); free(r->slot_off); free(r->freel); free(r->bufs); free(r);
}

static int check_block(const char *buf, int bs, int64_t off) {
	for (int i = 0; i + 8 <= bs; i += 8) {
		uint64_t w;
		memcpy(&w, buf + i, 8);
		if (w != (uint64_t)off + (uint64_t)i) return -EBADMSG;
	}
	return 0;
}

// run_read completes n reads of bs bytes, keeping qd in flight. On an error
// it still reaps every read in flight before returning, so the ring stays
// usable.
static int run_read(bring *b, rstate *r, long n) {
	if (!on_thread(b)) return -EXDEV;
	long issued = 0, done = 0;
	int inflight = 0, err = 0;
	while (done < issued || (issued < n && !err)) {
		while (!err && issued < n && r->nfree > 0) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
			if (!sqe) break;
			int slot = r->freel[--r->nfree];
			int64_t off = r->offs[r->pos];
			if (++r->pos == r->noff) r->pos = 0;
			r->slot_off[slot] = off;
			if (r->fixed)
				io_uring_prep_read_fixed(sqe, r->fd, r->bufs + (size_t)slot * r->bs, r->bs, off, slot);
			else
				io_uring_prep_read(sqe, r->fd, r->bufs + (size_t)slot * r->bs, r->bs, off);
			sqe->user_data = slot;
			issued++;
			inflight++;
		}
		load_maybe(b);
		int ret = enter(b, 1);
		if (ret < 0) return ret; // the kernel refused the enter itself
		unsigned head, seen = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe(&b->ring, head, cqe) {
			seen++;
			if (is_load(cqe->user_data)) {
				int e = load_cqe(b, cqe);
				if (e && !err) err = e;
				continue;
			}
			int slot = (int)cqe->user_data;
			if (cqe->res != r->bs && !err) err = cqe->res < 0 ? cqe->res : -EIO;
			if (!err && r->verify) err = check_block(r->bufs + (size_t)slot * r->bs, r->bs, r->slot_off[slot]);
			r->freel[r->nfree++] = slot;
			inflight--;
			done++;
		}
		io_uring_cq_advance(&b->ring, seen);
	}
	return err;
}

// prep_pong prepares the read of (the rest of) a pong: a read from the
// pipe, or a recv from the socket.
static void prep_pong(struct io_uring_sqe *sqe, int sock, int pong, char *buf, int len) {
	if (sock)
		io_uring_prep_recv(sqe, pong, buf, len, 0);
	else
		io_uring_prep_read(sqe, pong, buf, len, 0);
	sqe->user_data = TAG_PONG;
}

// run_pingpong does n round trips: a write to ping and a read from pong
// (with sock, a send and a recv on the socket ping == pong), submitted
// together in one io_uring_enter that waits for both.
static int run_pingpong(bring *b, int sock, int ping, int pong, long n, char *msg, char *buf, int size, int verify, uint64_t *seq) {
	if (!on_thread(b)) return -EXDEV;
	for (long op = 0; op < n; op++) {
		(*seq)++;
		if (verify && size >= 8) memcpy(msg, seq, 8);
		struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
		if (sock)
			io_uring_prep_send(sqe, ping, msg, size, MSG_NOSIGNAL);
		else
			io_uring_prep_write(sqe, ping, msg, size, 0);
		sqe->user_data = TAG_PING;
		prep_pong(io_uring_get_sqe(&b->ring), sock, pong, buf, size);
		int pending = 2, got = 0, err = 0;
		load_maybe(b);
		while (pending) {
			int ret = enter(b, pending);
			if (ret < 0) return ret;
			unsigned head, seen = 0;
			struct io_uring_cqe *cqe;
			io_uring_for_each_cqe(&b->ring, head, cqe) {
				seen++;
				uint64_t ud = cqe->user_data;
				if (is_load(ud)) {
					int e = load_cqe(b, cqe);
					if (e && !err) err = e;
				} else if (ud == TAG_PING) {
					pending--;
					if (cqe->res != size && !err) {
						err = cqe->res < 0 ? cqe->res : -EIO;
						// no ping, no pong: cancel the read rather than wait forever
						struct io_uring_sqe *s = io_uring_get_sqe(&b->ring);
						io_uring_prep_cancel64(s, TAG_PONG, 0);
						s->user_data = TAG_PONG_CANCEL;
					}
				} else if (ud == TAG_PONG) {
					if (cqe->res <= 0) {
						if (!err) err = cqe->res < 0 ? cqe->res : -EPIPE;
						pending--;
					} else if ((got += cqe->res) < size && !err) {
						prep_pong(io_uring_get_sqe(&b->ring), sock, pong, buf + got, size - got);
					} else {
						pending--;
					}
				}
			}
			io_uring_cq_advance(&b->ring, seen);
		}
		if (err) return err;
		if (verify && memcmp(msg, buf, size)) return -EBADMSG;
	}
	return 0;
}

// cancel_arm submits one read on each of n empty pipes. When it returns, each
// read has been issued and, finding no data, waits on its pipe in the kernel.
static int cancel_arm(bring *b, int *fds, int n, char *bufs, int bs) {
	if (!on_thread(b)) return -EXDEV;
	for (int i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
		if (!sqe) return -EBUSY;
		io_uring_prep_read(sqe, fds[i], bufs + (size_t)i * bs, bs, 0);
		sqe->user_data = TAG_PENDING + i;
	}
	int ret = io_uring_submit(&b->ring);
	if (ret < 0) return ret;
	return ret == n ? 0 : -EBUSY;
}

// cancel_all cancels every pending read with one IORING_OP_ASYNC_CANCEL
// (IORING_ASYNC_CANCEL_ANY) and waits until all n reads' CQEs are reaped;
// *ns is the time from before the SQE is prepared to then. The cancel's own
// CQE (its count) is reaped too, after the clock stops.
static int cancel_all(bring *b, int n, int64_t *ns) {
	if (!on_thread(b)) return -EXDEV;
	int64_t t0 = now_ns();
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
	if (!sqe) return -EBUSY;
	io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
	sqe->user_data = TAG_CANCEL_ALL;
	int targets = 0, err = 0, cancel_res = 0, have_cancel = 0;
	unsigned want = n;
	while (targets < n || !have_cancel) {
		int ret = enter(b, want);
		if (ret < 0) return ret;
		unsigned head, seen = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe(&b->ring, head, cqe) {
			seen++;
			if (cqe->user_data == TAG_CANCEL_ALL) {
				have_cancel = 1;
				cancel_res = cqe->res;
			} else if (cqe->user_data >= TAG_PENDING && cqe->user_data < TAG_PENDING + n) {
				targets++;
				if (cqe->res != -ECANCELED && !err) err = cqe->res < 0 ? cqe->res : -EPROTO;
			}
		}
		io_uring_cq_advance(&b->ring, seen);
		if (targets == n && *ns == 0) *ns = now_ns() - t0;
		want = (unsigned)(n - targets) + !have_cancel;
	}
	if (!err && cancel_res != n) err = cancel_res < 0 ? cancel_res : -EPROTO;
	return err;
}

// cancel_each cancels the n pending reads one by one: n IORING_OP_ASYNC_CANCEL
// SQEs, each matching one read by its user_data, all in one io_uring_enter,
// and waits until all n reads' CQEs are reaped; *ns is the time from before
// the first SQE is prepared to then. The cancels' own CQEs are reaped too,
// after the clock stops; each must say it found its read (0), or that the
// read was already running (-EALREADY: the read's CQE then tells).
static int cancel_each(bring *b, int n, int64_t *ns) {
	if (!on_thread(b)) return -EXDEV;
	if (io_uring_sq_space_left(&b->ring) < (unsigned)n) return -EBUSY;
	int64_t t0 = now_ns();
	for (int i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
		io_uring_prep_cancel64(sqe, TAG_PENDING + i, 0);
		sqe->user_data = TAG_CANCEL_ONE + i;
	}
	int targets = 0, cancels = 0, err = 0;
	unsigned want = n;
	while (targets < n || cancels < n) {
		int ret = enter(b, want);
		if (ret < 0) return ret;
		unsigned head, seen = 0;
		struct io_uring_cqe *cqe;
		io_uring_for_each_cqe(&b->ring, head, cqe) {
			seen++;
			uint64_t ud = cqe->user_data;
			if (ud >= TAG_CANCEL_ONE && ud < TAG_CANCEL_ONE + n) {
				cancels++;
				if (cqe->res != 0 && cqe->res != -EALREADY && !err) err = cqe->res < 0 ? cqe->res : -EPROTO;
			} else if (ud >= TAG_PENDING && ud < TAG_PENDING + n) {
				targets++;
				if (cqe->res != -ECANCELED && !err) err = cqe->res < 0 ? cqe->res : -EPROTO;
			}
		}
		io_uring_cq_advance(&b->ring, seen);
		if (targets == n && *ns == 0) *ns = now_ns() - t0;
		want = (unsigned)(2 * n - targets - cancels);
	}
	return err;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// liburingImpl is the physical limit: C liburing 2.x, one ring per runner
// set up as a single-threaded C program would (SINGLE_ISSUER, DEFER_TASKRUN,
// registered ring fd), the whole inner loop in C (one cgo call per Run).
// Fixed reads register the QD buffers with io_uring_register_buffers and
// read with io_uring_prep_read_fixed; the socket ping-pong is
// io_uring_prep_send (MSG_NOSIGNAL, as cancelio's Send) and
// io_uring_prep_recv.
//
// Cancel: IORING_OP_ASYNC_CANCEL with IORING_ASYNC_CANCEL_ANY, one SQE for
// every pending read, timed in C from before the SQE is prepared until the
// last target CQE is reaped. CancelEach: one IORING_OP_ASYNC_CANCEL by
// user_data per pending read, all of them in one io_uring_enter, timed the
// same way. CancelLoad: the run loops themselves queue, when
// due, a read on the empty pipe and a cancel of it by user_data, and count a
// cycle when the read completes with -ECANCELED.
type liburingImpl struct {
	once sync.Once
	err  error // why io_uring cannot be used here
}

func init() { Register(&liburingImpl{}) }

const liburingEntries = 256

func (*liburingImpl) Name() string { return "liburing" }

func (l *liburingImpl) Supports(w Workload) bool {
	l.once.Do(func() {
		b, err := newBring()
		if err == nil {
			b.free()
		}
		l.err = err
	})
	return l.err == nil && w != WorkloadScaleShared
}

// bring wraps a C-allocated ring, which only the OS thread that created it
// may use (IORING_SETUP_SINGLE_ISSUER, a registered ring fd): newBring locks
// the calling goroutine to its thread until free, so a runner must be
// created, run and closed by one goroutine (Impl's contract); the C side
// checks, and fails with EXDEV otherwise.
type bring struct{ p *C.bring }

func newBring() (*bring, error) {
	runtime.LockOSThread()
	var cerr C.int
	p := C.bring_new(liburingEntries, &cerr)
	if p == nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("io_uring_queue_init: %w", syscall.Errno(-cerr))
	}
	return &bring{p: p}, nil
}

func (b *bring) free() {
	C.bring_free(b.p)
	runtime.UnlockOSThread()
}

func (b *bring) setLoad(cfg CancelLoad) {
	if cfg.Every > 0 {
		C.bring_set_load(b.p, C.int(cfg.FD), C.int64_t(cfg.Every.Nanoseconds()))
	}
}

func (b *bring) Cancels() int64 { return int64(b.p.cancels) }

func errnoErr(op string, ret C.int) error {
	switch ret {
	case 0:
		return nil
	case -C.EXDEV:
		return fmt.Errorf("liburing %s: runner used from another goroutine than the one that created it", op)
	}
	return fmt.Errorf("liburing %s: %w", op, syscall.Errno(-ret))
}

type lrNop struct {
	*bring
	batch int
}

func (*liburingImpl) NewNop(cfg NopConfig) (Runner, error) {
	if cfg.Batch < 1 || cfg.Batch > liburingEntries {
		return nil, fmt.Errorf("liburing: batch %d out of range", cfg.Batch)
	}
	b, err := newBring()
	if err != nil {
		return nil, err
	}
	return &lrNop{bring: b, batch: cfg.Batch}, nil
}

func (r *lrNop) Run(n int) error {
	return errnoErr("nop", C.run_nop(r.p, C.long(n), C.int(r.batch)))
}

func (r *lrNop) Close() error { r.free(); return nil }

type lrRead struct {
	*bring
	st *C.rstate
}

func (*liburingImpl) NewRead(cfg ReadConfig) (Runner, error) {
	if cfg.QD < 1 || cfg.QD+2 > liburingEntries || len(cfg.Offsets) == 0 {
		return nil, fmt.Errorf("liburing: qd %d or %d offsets out of range", cfg.QD, len(cfg.Offsets))
	}
	b, err := newBring()
	if err != nil {
		return nil, err
	}
	verify := C.int(0)
	if cfg.Verify {
		verify = 1
	}
	st := C.rstate_new(C.int(cfg.FD), C.int(cfg.QD), C.int(cfg.BlockSize),
		(*C.int64_t)(unsafe.Pointer(&cfg.Offsets[0])), C.int(len(cfg.Offsets)), verify)
	if st == nil {
		b.free()
		return nil, errors.New("liburing: out of memory")
	}
	if cfg.Fixed {
		if err := errnoErr("register buffers", C.rstate_register(b.p, st)); err != nil {
			b.free()
			C.rstate_free(st)
			return nil, err
		}
	}
	b.setLoad(cfg.Load)
	return &lrRead{bring: b, st: st}, nil
}

func (r *lrRead) Run(n int) error { return errnoErr("read", C.run_read(r.p, r.st, C.long(n))) }

func (r *lrRead) Close() error {
	r.free() // io_uring_queue_exit cancels a load read still pending
	C.rstate_free(r.st)
	return nil
}

type lrPingPong struct {
	*bring
	cfg      PingPongConfig
	msg, buf unsafe.Pointer // C memory the kernel reads and writes
	seq      C.uint64_t
}

func (*liburingImpl) NewPingPong(cfg PingPongConfig) (Runner, error) {
	b, err := newBring()
	if err != nil {
		return nil, err
	}
	p := &lrPingPong{bring: b, cfg: cfg, msg: C.malloc(C.size_t(cfg.MsgSize)), buf: C.malloc(C.size_t(cfg.MsgSize))}
	FillMessage(unsafe.Slice((*byte)(p.msg), cfg.MsgSize), 0)
	b.setLoad(cfg.Load)
	return p, nil
}

func (p *lrPingPong) Run(n int) error {
	verify := C.int(0)
	if p.cfg.Verify {
		verify = 1
	}
	sock := C.int(0)
	if p.cfg.Socket {
		sock = 1
	}
	return errnoErr("pingpong", C.run_pingpong(p.p, sock, C.int(p.cfg.PingFD), C.int(p.cfg.PongFD), C.long(n),
		(*C.char)(p.msg), (*C.char)(p.buf), C.int(p.cfg.MsgSize), verify, &p.seq))
}

func (p *lrPingPong) Close() error {
	p.free()
	C.free(p.msg)
	C.free(p.buf)
	return nil
}

type lrCancel struct {
	*bring
	each bool // cancel_each, not cancel_all
	n    int
	fds  *C.int
	bufs unsafe.Pointer
	bs   int
	ns   C.int64_t // here, not on the stack: a pointer to it goes to C
}

func (*liburingImpl) NewCancel(cfg CancelConfig) (CancelRunner, error) {
	n := len(cfg.FDs)
	if n < 1 || n+1 > liburingEntries {
		return nil, fmt.Errorf("liburing: %d pending reads out of range", n)
	}
	b, err := newBring()
	if err != nil {
		return nil, err
	}
	c := &lrCancel{bring: b, each: cfg.Each, n: n, bs: cfg.BufSize,
		fds: (*C.int)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.int(0))))), bufs: C.malloc(C.size_t(n * cfg.BufSize))}
	copy(unsafe.Slice((*C.int)(c.fds), n), func() []C.int {
		s := make([]C.int, n)
		for i, fd := range cfg.FDs {
			s[i] = C.int(fd)
		}
		return s
	}())
	return c, nil
}

func (c *lrCancel) Arm() error {
	return errnoErr("arm", C.cancel_arm(c.p, c.fds, C.int(c.n), (*C.char)(c.bufs), C.int(c.bs)))
}

func (c *lrCancel) CancelAndWait() (time.Duration, error) {
	c.ns = 0
	if c.each {
		err := errnoErr("cancel each", C.cancel_each(c.p, C.int(c.n), &c.ns))
		return time.Duration(c.ns), err
	}
	err := errnoErr("cancel", C.cancel_all(c.p, C.int(c.n), &c.ns))
	return time.Duration(c.ns), err
}

func (c *lrCancel) Close() error {
	c.free() // io_uring_queue_exit cancels and waits for anything pending
	C.free(unsafe.Pointer(c.fds))
	C.free(c.bufs)
	return nil
}

// lrScale is BenchmarkScale's layout=each on liburing.
type lrScale struct {
	l    *liburingImpl
	cfg  ScaleConfig
	cpus unix.CPUSet // the first cfg.Procs CPUs the process may run on
}

func (l *liburingImpl) NewScale(cfg ScaleConfig) (ScaleGroup, error) {
	if cfg.Shared || (cfg.Op != WorkloadNop && cfg.Op != WorkloadRead) {
		return nil, ErrUnsupported
	}
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, fmt.Errorf("liburing: sched_getaffinity: %w", err)
	}
	s := &lrScale{l: l, cfg: cfg}
	s.cpus.Zero()
	for cpu := 0; cpu < len(all)*64 && s.cpus.Count() < cfg.Procs; cpu++ {
		if all.IsSet(cpu) {
			s.cpus.Set(cpu)
		}
	}
	return s, nil
}

// Worker makes worker i's runner, which locks the goroutine to its thread,
// then confines that thread to s.cpus until Close.
func (s *lrScale) Worker(i int) (Runner, error) {
	var r Runner
	var err error
	if s.cfg.Op == WorkloadNop {
		r, err = s.l.NewNop(NopConfig{Batch: 1})
	} else {
		r, err = s.l.NewRead(s.cfg.WorkerRead(i))
	}
	if err != nil {
		return nil, err
	}
	w := &lrScaleWorker{Runner: r}
	if err := unix.SchedGetaffinity(0, &w.old); err != nil {
		return nil, errors.Join(fmt.Errorf("liburing: sched_getaffinity: %w", err), r.Close())
	}
	if err := unix.SchedSetaffinity(0, &s.cpus); err != nil {
		return nil, errors.Join(fmt.Errorf("liburing: sched_setaffinity: %w", err), r.Close())
	}
	return w, nil
}

func (s *lrScale) Close() error { return nil }

// lrScaleWorker gives its thread its CPUs back before the runner unlocks
// it: Go threads must not stay confined.
type lrScaleWorker struct {
	Runner
	old unix.CPUSet
}

func (w *lrScaleWorker) Close() error {
	err := unix.SchedSetaffinity(0, &w.old)
	if err != nil {
		err = fmt.Errorf("liburing: restore affinity: %w", err)
	}
	return errors.Join(err, w.Runner.Close())
}
