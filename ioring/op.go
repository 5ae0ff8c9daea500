package ioring

import (
	"fmt"
	"math"
	"time"
)

// Opcode names an operation.
type Opcode uint8

// The operations a Ring runs.
const (
	OpNop             Opcode = iota + 1 // does nothing; completes with 0
	OpRead                              // read into one buffer
	OpWrite                             // write one buffer
	OpReadv                             // read into several buffers
	OpWritev                            // write several buffers
	OpPoll                              // wait for poll events on an fd (one shot)
	OpTimeout                           // complete after a duration
	OpFsync                             // flush a file to stable storage
	OpForeign                           // run elsewhere, completed with Ring.Complete
	OpSend                              // send one buffer on a socket
	OpRecv                              // receive into one buffer from a socket
	OpSendMsg                           // send a message (buffers, control messages, address)
	OpRecvMsg                           // receive a message (buffers, control messages, address)
	OpAccept                            // accept a connection; completes with its fd
	OpConnect                           // connect a socket to an address
	OpShutdown                          // shut down part of a full-duplex connection
	OpOpenAt                            // open a file; completes with its fd
	OpClose                             // close an fd
	OpStatx                             // get a file's status
	OpReadFixed                         // read into a registered buffer
	OpWriteFixed                        // write from a registered buffer
	OpPollMultishot                     // wait for poll events on an fd, again and again (multishot)
	OpAcceptMultishot                   // accept connections, one completion each (multishot)
	OpRecvMultishot                     // receive into buffers of a BufRing, one completion each (multishot)
)

// opArgs says which of an Op's fields an operation takes.
type opArgs uint8

const (
	argFD     opArgs = 1 << iota // an fd
	argBuf                       // one buffer, not empty
	argBufs                      // several buffers, none empty
	argOff                       // an offset, or -1 for the current position
	argEvents                    // poll events
	argDur                       // a duration
	fastOp                       // not an argument: marks Ring.fast's entries
)

// opDesc is what the ring knows about an operation on every platform: its
// name, the arguments it takes (which check validates) and its direction.
// How it runs on each backend is its opImpl (ops_unsafe.go), in an array
// indexed like this one: adding an opcode is a constant, one opDesc, one
// opImpl, and their tests.
type opDesc struct {
	name  string
	args  opArgs
	write bool // moves data from memory to the file
	// check validates what args cannot say (ops_sock.go, ops_file.go):
	// it returns why o is refused, or nil.
	check func(o Op) error
	// timerDeadline: a deadline is a Go timer that cancels the request,
	// on every backend. An io_uring linked timeout does not interrupt an
	// open blocked in io_uring's workers (a FIFO waiting for its other
	// end, kernel 6.18), where an explicit cancel does.
	timerDeadline bool
	// multi: one submission, many completions (multishot.go). Its
	// deadline is a Go timer too: io_uring does not link a timeout to a
	// multishot request.
	multi bool
}

var opDescs = [numOps]opDesc{
	OpNop:     {name: "nop"},
	OpRead:    {name: "read", args: argFD | argBuf | argOff},
	OpWrite:   {name: "write", args: argFD | argBuf | argOff, write: true},
	OpReadv:   {name: "readv", args: argFD | argBufs | argOff},
	OpWritev:  {name: "writev", args: argFD | argBufs | argOff, write: true},
	OpPoll:    {name: "poll", args: argFD | argEvents},
	OpTimeout: {name: "timeout", args: argDur},
	OpFsync:   {name: "fsync", args: argFD},
	OpForeign: {name: "foreign"},
	// Sockets (ops_sock.go) and files (ops_file.go).
	OpSend:     {name: "send", args: argFD | argBuf, write: true, check: checkMsgFlags},
	OpRecv:     {name: "recv", args: argFD | argBuf, check: checkMsgFlags},
	OpSendMsg:  {name: "sendmsg", args: argFD, write: true, check: checkMsg},
	OpRecvMsg:  {name: "recvmsg", args: argFD, check: checkMsg},
	OpAccept:   {name: "accept", args: argFD, check: checkAccept},
	OpConnect:  {name: "connect", args: argFD, check: checkConnect},
	OpShutdown: {name: "shutdown", args: argFD, check: checkShutdown},
	OpOpenAt:   {name: "openat", check: checkOpenAt, timerDeadline: true},
	OpClose:    {name: "close", args: argFD},
	OpStatx:    {name: "statx", check: checkStatx},
	// Registered buffers (fixed.go).
	OpReadFixed:  {name: "read-fixed", args: argFD | argBuf | argOff, check: checkFixed},
	OpWriteFixed: {name: "write-fixed", args: argFD | argBuf | argOff, write: true, check: checkFixed},
	// Multishot (multishot.go, multishot_linux.go).
	OpPollMultishot:   {name: "poll-multishot", args: argFD | argEvents, timerDeadline: true, multi: true},
	OpAcceptMultishot: {name: "accept-multishot", args: argFD, check: checkAccept, timerDeadline: true, multi: true},
	OpRecvMultishot:   {name: "recv-multishot", args: argFD, check: checkRecvMultishot, timerDeadline: true, multi: true},
}

// numOps bounds the opcodes: every valid one is below it.
const numOps = int(OpRecvMultishot) + 1 // the last opcode + 1

// desc returns o's descriptor; o must be valid (0 < o < numOps).
func (o Opcode) desc() *opDesc { return &opDescs[o] }

// valid reports whether o is a known opcode.
func (o Opcode) valid() bool { return o > 0 && int(o) < numOps }

// String returns the operation's lower-case name.
func (o Opcode) String() string {
	if o.valid() {
		return opDescs[o].name
	}
	return fmt.Sprintf("opcode(%d)", uint8(o))
}

// maxIovecs is the kernel's UIO_MAXIOV.
const maxIovecs = 1024

// Op describes one request before it is submitted. Build it with one of the
// constructors (Nop, Read, ...) and the With methods; it is a small value that
// is copied, so building one does not allocate.
//
// The buffers of an Op belong to the Ring from submission until the
// request's completion is delivered: do not read or write them in between.
type Op struct {
	// The small fields first, packed into one word.
	code      Opcode
	unordered bool
	fixedFD   bool // fd is an index into the registered files (FixedFile)
	// rare is not 0 wherever the fast check (checkedPlain) must not admit
	// the op: rareFeature where one of deadline, token, hook, bufs, arg
	// and fixedFD is set, rareArgs and rareOff where the fd, buffer or
	// offset is not one a plain request takes (settleArgs). The fast
	// check tests it alone for all of them. rareFeature may stay set
	// after a feature is cleared: the full check decides then.
	rare   rareBits
	events uint32
	// What a plain request's submission reads (Op.checkedPlain,
	// slot.fillFast) comes next, in the first 64 bytes: in a batch, that
	// is as few cache lines of the caller's ops as it can be.
	fd   int
	buf  []byte
	off  int64
	user any
	// The rest is for what Op.checkedPlain admits none of.
	bufs     [][]byte
	dur      time.Duration
	deadline time.Duration
	token    *Token
	hook     func()
	arg      any // an operation's own argument: *Msg, unix.Sockaddr, *unix.Statx_t, *BufRing
}

// rareBits are Op.rare's reasons.
type rareBits uint8

const (
	rareFeature rareBits = 1 << iota // a feature beyond a plain request
	rareArgs                         // an fd or buffer a plain request does not take
	rareOff                          // an offset a plain request does not take, or ordered on its stream
)

// settleArgs sets or clears rareArgs and rareOff after o's code, fd,
// buffer, offset or order changed: rareArgs when the fd is outside the
// kernel's or, for an operation on one buffer, that buffer is empty or
// over 2 GiB; rareOff as settleOff says. It is what Op.checkedPlain once
// tested for each submission; every constructor of an operation
// Ring.setFast may admit calls it, and so does Unordered
// (TestCheckedPlainAgreesWithCheck).
func (o *Op) settleArgs() {
	odd := uint64(o.fd) > math.MaxInt32 // negative fds too
	buf := o.code.valid() && o.code.desc().args&argBuf != 0
	if buf {
		odd = odd || uint64(len(o.buf)-1) >= 1<<31-1
	}
	if odd {
		o.rare |= rareArgs
	} else {
		o.rare &^= rareArgs
	}
	o.settleOff(buf)
}

// settleOff sets or clears rareOff after o's offset or order changed: set
// when the offset is below -1 or, for an operation on one buffer (buf), at
// the current position (-1): ordered on its stream unless Unordered, and
// looked at by the io_uring backend in any case (a blocking terminal's
// requests go to its workers: backend_uring_blocking_linux.go), which the
// one-step submission of plain ops does not do. SetOffset calls it alone.
func (o *Op) settleOff(buf bool) {
	if o.off < -1 || buf && o.off == -1 {
		o.rare |= rareOff
	} else {
		o.rare &^= rareOff
	}
}

// Nop is an operation that does nothing and completes with 0.
func Nop() Op { return Op{code: OpNop} }

// Read reads into buf from fd at offset off, or at the current position when
// off is -1 (pipes, sockets and character devices). It completes with the
// number of bytes read.
func Read(fd int, buf []byte, off int64) Op {
	o := Op{code: OpRead, fd: fd, buf: buf, off: off}
	o.settleArgs()
	return o
}

// Write writes buf to fd at offset off, or at the current position when off
// is -1. It completes with the number of bytes written.
func Write(fd int, buf []byte, off int64) Op {
	o := Op{code: OpWrite, fd: fd, buf: buf, off: off}
	o.settleArgs()
	return o
}

// Readv reads into bufs in order (a scatter read), like readv(2).
func Readv(fd int, bufs [][]byte, off int64) Op {
	return Op{code: OpReadv, fd: fd, bufs: bufs, off: off, rare: rareFeature}
}

// Writev writes bufs in order (a gather write), like writev(2).
func Writev(fd int, bufs [][]byte, off int64) Op {
	return Op{code: OpWritev, fd: fd, bufs: bufs, off: off, rare: rareFeature}
}

// Poll waits until fd has one of events (unix.POLLIN, POLLOUT...) and
// completes with the events that are ready: among events, plus POLLERR and
// POLLHUP, which are reported whether asked for or not (as poll(2) does).
// events must name at least one event: 0 is refused with ErrInvalid.
func Poll(fd int, events uint32) Op {
	return Op{code: OpPoll, fd: fd, events: events}
}

// Timeout completes with 0 after d; canceled earlier, it completes with
// ErrCanceled.
func Timeout(d time.Duration) Op { return Op{code: OpTimeout, dur: d} }

// Fsync flushes fd's data and metadata to stable storage.
func Fsync(fd int) Op {
	o := Op{code: OpFsync, fd: fd}
	o.settleArgs()
	return o
}

// Foreign is an operation run outside the ring (a libusb transfer, a usbfs
// URB...) whose result is posted with Ring.Complete, so that it completes
// through the same queue, tokens and deadlines as any other request (IOCP's
// PostQueuedCompletionStatus). cancel is the cancel hook: the ring calls it
// once, outside its locks, after the request is first canceled, by any
// means, on the goroutine of the cancel that runs it. That is the first
// cancel, unless another cancel of the request comes before the first one
// got to the hook (a cancel of several runs their hooks one after another,
// and one of them may cancel the next again and wait for it to end): then
// that one runs it at once, and the first one skips it. Later cancels,
// Ring.CancelAll and Close among them, do not call it again. It must not
// block for long, and may be called after the operation already finished.
// nil means the operation cannot be interrupted.
func Foreign(cancel func()) Op { return Op{code: OpForeign, hook: cancel, rare: rareFeature} }

// WithToken returns o covered by token t: canceling t cancels it.
func (o Op) WithToken(t *Token) Op { o.token = t; o.rare |= rareFeature; return o }

// WithDeadline returns o with a deadline d after submission (an io_uring
// linked timeout); when it passes first, the request completes with
// ErrTimeout. A d of 0 means no deadline; a negative d is refused at
// submission.
func (o Op) WithDeadline(d time.Duration) Op { o.deadline = d; o.rare |= rareFeature; return o }

// WithUser returns o carrying v, handed back in its Completion. A pointer
// or a small integer does not allocate.
func (o Op) WithUser(v any) Op { o.user = v; return o }

// SetOffset sets, in place, the offset at which o reads or writes: what
// the off argument of Read, Write, Readv, Writev, ReadFixed or WriteFixed
// gave it (-1: the current position, and with it the stream's order). A
// loop that issues the same read or write again at new offsets, such as a
// file read in chunks into a set of buffers, can keep one Op per buffer
// and set its offset before each submission instead of building a new
// Op: an Op is a large value, which each builder call copies. A
// submission copies what it needs of the Op, so setting the offset of one
// already submitted changes only the submissions after it. An offset
// below -1 is refused at submission, as the constructors' is. An
// operation that takes no offset is left as it is.
func (o *Op) SetOffset(off int64) {
	if o.code.valid() {
		if a := o.code.desc().args; a&argOff != 0 {
			o.off = off
			o.settleOff(a&argBuf != 0)
		}
	}
}

// Unordered returns o exempt from its stream's order. Reads and writes at
// the current position (off -1) on one fd complete in the order they were
// submitted, reads among reads and writes among writes, on every backend
// (as overlapped ReadFile and WriteFile on a pipe or serial handle): the
// ring hands one of them at a time to the kernel and holds the others,
// which costs a round trip between two of them. An unordered one goes to
// the kernel at once, beside any others, and the order in which the data
// of a stream reaches several unordered requests is unspecified. Reads and
// writes at an offset are never ordered; neither are other operations.
func (o Op) Unordered() Op {
	o.unordered = true
	o.settleArgs()
	return o
}

// FixedFile returns o with its fd read as an index into the files
// registered with Ring.RegisterFiles (io_uring's IOSQE_FIXED_FILE): the
// kernel skips its per-request file lookup, and the request acts on the
// file registered at that index, whatever the caller's fd numbers name
// now. It applies to the operations on an fd (Read, Write, Readv, Writev,
// Poll, Fsync, the socket operations and the multishot ones), not to
// Close, OpenAt or Statx. An index with no file registered completes with
// EBADF; one beyond the registered table is refused with ErrInvalid.
// Order on a stream (offset -1) is kept per index: an index and an fd of
// the same file, or two indexes of it, are streams of their own, whose
// requests are not ordered among them.
func (o Op) FixedFile() Op { o.fixedFD = true; o.rare |= rareFeature; return o }

// Code returns the operation.
func (o Op) Code() Opcode { return o.code }

// check validates o and returns an error wrapping ErrInvalid (or
// ErrNotSupported, for an operation r's backend lacks), or nil.
func (o *Op) check(r *Ring) error {
	if !o.code.valid() {
		return &OpError{Op: "submit", Err: fmt.Errorf("%w: unknown opcode %d (use the Op constructors)", ErrInvalid, uint8(o.code))}
	}
	d := o.code.desc()
	if d.args == 0 && d.check == nil && o.deadline == 0 && o.token == nil && !o.fixedFD {
		return r.checkSupported(o.code) // Nop, Foreign: the fast path
	}
	if d.args&argFD != 0 {
		if o.fd < 0 {
			return badOp(d, "negative fd %d", o.fd)
		}
		if o.fd > math.MaxInt32 {
			// The kernel's fds are C ints: a larger one would be truncated
			// into another fd.
			return badOp(d, "fd %d larger than %d", o.fd, math.MaxInt32)
		}
	}
	if d.args&argBuf != 0 {
		if len(o.buf) == 0 {
			return badOp(d, "nil or empty buffer")
		}
		if len(o.buf) > 1<<31-1 {
			return badOp(d, "buffer of %d bytes is larger than 2 GiB", len(o.buf))
		}
	}
	if d.args&argBufs != 0 {
		if len(o.bufs) == 0 {
			return badOp(d, "no buffers")
		}
		if len(o.bufs) > maxIovecs {
			return badOp(d, "%d buffers, more than %d", len(o.bufs), maxIovecs)
		}
		// The sum in 64 bits: two buffers of 1 GiB overflow a 32-bit int.
		total, empty := int64(0), -1
		for i, b := range o.bufs {
			if len(b) == 0 && empty < 0 {
				empty = i
			}
			total += int64(len(b))
		}
		if total == 0 {
			return badOp(d, "all buffers are empty")
		}
		if empty >= 0 {
			return badOp(d, "buffer %d is nil or empty (as Read refuses one)", empty)
		}
		if total > 1<<31-1 {
			return badOp(d, "buffers of %d bytes in all, larger than 2 GiB", total)
		}
	}
	if d.args&argOff != 0 && o.off < -1 {
		return badOp(d, "offset %d (want >= 0, or -1 for the current position)", o.off)
	}
	if d.args&argEvents != 0 && o.events == 0 {
		return badOp(d, "no poll events")
	}
	if d.args&argDur != 0 && o.dur < 0 {
		return badOp(d, "negative duration %v", o.dur)
	}
	if o.deadline < 0 {
		return badOp(d, "negative deadline %v", o.deadline)
	}
	if r.closed.Load() {
		// What follows looks at the ring's state (its registered files,
		// its BufRings), which Close takes down: after Close the answer
		// is ErrClosed, as Submit's own look under the lock gives, not a
		// complaint about an input that was good until then.
		return &OpError{Op: d.name, Err: ErrClosed}
	}
	if d.check != nil {
		if err := d.check(*o); err != nil {
			return badOp(d, "%v", err)
		}
	}
	if !o.fixedFD && o.arg == nil {
		// Nothing of the ring's own state to look at (checkHeld).
	} else if err := r.checkHeld(o, d); err != nil {
		if r.closed.Load() {
			// A Close that began after the look above may have taken down
			// what the op names (Close unregisters the files and closes
			// the BufRings last): its answer, not the input's fault.
			return &OpError{Op: d.name, Err: ErrClosed}
		}
		return err
	}
	if o.token != nil && o.token.r == nil {
		return badOp(d, "zero Token (make tokens with Ring.NewToken)")
	}
	if o.token != nil && o.token.r != r {
		return badOp(d, "token belongs to another ring")
	}
	return r.checkSupported(o.code)
}

// checkHeld checks what o names of the ring's own state: a registered
// file's index, a BufRing (Op.check).
func (r *Ring) checkHeld(o *Op, d *opDesc) error {
	if o.fixedFD {
		if err := r.checkFixedFile(o, d); err != nil {
			return err
		}
	}
	if br, ok := o.arg.(*BufRing); ok && br != nil {
		if br.r != r {
			return badOp(d, "BufRing belongs to another ring")
		}
		if br.isClosed() {
			return badOp(d, "closed BufRing")
		}
	}
	return nil
}

// recheck repeats, r.sqMu held, the part of check that another goroutine
// can undo between check and the lock: a BufRing's Close (which takes
// r.sqMu). Without it a receive could go in flight on a BufRing that was
// closed meanwhile, whose buffer group the next NewBufRing reuses. It
// then claims o's Msg, if any, for the request about to be filled
// (claimArg): a caller that does not fill o after all gives the claim back
// (unclaimArg). Only o.arg's ops need it: the callers skip the others.
func (o *Op) recheck() error {
	if br, ok := o.arg.(*BufRing); ok && br != nil && br.isClosed() {
		return badOp(o.code.desc(), "closed BufRing")
	}
	if !claimArg(o) {
		return badOp(o.code.desc(), "Msg in use by a request in flight (a Msg serves one request at a time)")
	}
	return nil
}

// badOp returns the error of bad input to operation d.
func badOp(d *opDesc, format string, args ...any) error {
	return &OpError{Op: d.name, Err: fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)}
}

// checkSupported returns an error wrapping ErrNotSupported when r's backend
// lacks op (an older kernel without its io_uring opcode), nil otherwise.
func (r *Ring) checkSupported(op Opcode) error {
	if r.lacks[op] {
		return r.notSupported(op)
	}
	return nil
}

func (r *Ring) notSupported(op Opcode) error {
	return &OpError{Op: op.String(), Err: fmt.Errorf("%w: %s on the %v backend of this kernel", ErrNotSupported, op, r.info.Backend)}
}
