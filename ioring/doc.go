// Package ioring is an overlapped-I/O engine for Go on Linux: requests run
// without blocking their submitter, each one can be canceled at any moment
// from any goroutine, and every accepted request completes exactly once
// into a lock-free completion queue. It is the machinery a driver needs to
// honour Windows Image Acquisition's CancelPendingIO: cancel all current
// I/O at once and return to idle.
//
// # Backends
//
// A Ring runs on Linux io_uring (raw system calls, no cgo), or on a fallback
// with the same contract where io_uring is missing or disabled: epoll for
// pollable fds and a bounded worker pool for regular files. New picks one
// (Config.Backend, or CANCELIO_BACKEND=uring|poll), and Ring.Backend says
// which and why.
//
// # Operations
//
// Nop, Read, Write, Readv, Writev, Poll, Timeout, Fsync and Foreign; on
// sockets Send, Recv, SendMsg and RecvMsg (with a Msg: control messages and
// addresses, for netlink, CAN and UDP), Accept, Connect and Shutdown; on
// files OpenAt, Close and Statx; ReadFixed and WriteFixed on buffers
// registered once with Ring.RegisterBuffers; Op.FixedFile on files
// registered once with Ring.RegisterFiles. Multishot operations deliver
// many completions from one submission: PollMultishot (an fd that fires
// again and again), AcceptMultishot (a connection each) and RecvMultishot
// (a message each, into buffers of a BufRing that the kernel picks from
// and the caller gives back). Each io_uring opcode, and each multishot
// flag, is probed alone: one the kernel lacks makes that operation, and
// only it, ErrNotSupported. File
// wraps an fd and a Ring as an io.Reader and io.Writer with deadlines,
// contexts and a Close that cancels; Ring.Stats returns counters for
// metrics.
//
// # The cancellation contract
//
//  1. Cancel is always allowed: Request.Cancel, Token.Cancel and
//     Ring.CancelAll may be called by any goroutine at any time, any number
//     of times. They request and return; they never wait for the I/O. When
//     nothing is left to cancel, Request.Cancel returns ErrNotFound and
//     changes nothing.
//  2. Exactly one completion: every accepted request completes once, with
//     its real result or ErrCanceled (which wraps ECANCELED). A cancel that
//     loses the race leaves the real result, bytes included. A multishot
//     request delivers any number of completions with Completion.More set,
//     then exactly one final completion without it, whatever ends it.
//  3. Buffers live until completion: a request's buffers stay reachable
//     from the ring until its completion is delivered, even after a cancel.
//     Reuse a buffer only then. Their addresses stay valid for the kernel
//     all that time: Go's collector does not move heap objects, and a
//     buffer given to the ring lives on the heap (it escapes into the ring),
//     so no runtime.Pinner is needed (pinning each buffer cost a third of a
//     4 KiB read's instructions).
//  4. Tokens cover the future: a request submitted with a canceled Token
//     completes with ErrCanceled without reaching the kernel.
//  5. Timeouts are cancels: a request's deadline (an io_uring linked timeout)
//     and a context both end in the cancel path; the result is ErrTimeout,
//     for which errors.Is(err, ErrCanceled) holds.
//  6. Close drains: it cancels everything, waits for every completion and
//     releases the rings; later calls return ErrClosed.
//  7. Bad input is refused up front with an error wrapping ErrInvalid, and
//     never reaches the ring (an fd above MaxInt32 too: it is never
//     truncated into another fd; a zero Token too).
//
// And at the edges:
//
//   - Contexts: one rule everywhere (Do, ReadAt, WriteAt, Request.Wait,
//     Token.Bind). A context that ends cancels; a context deadline gives
//     ErrTimeout, a context cancel ErrCanceled, and in both cases the
//     context's own error is reachable too: errors.Is(err,
//     context.DeadlineExceeded) or errors.Is(err, context.Canceled). A
//     context that has already ended starts nothing: Do returns the cancel
//     in its Completion without submitting, and Bind cancels the token
//     before it returns.
//   - Threads do not matter: a request's result never depends on which OS
//     thread submitted it or on whether that thread still exists. io_uring
//     cancels the requests of a thread that exits (a goroutine that called
//     runtime.LockOSThread and returned); such a request, which nobody
//     canceled, is handed to the kernel again from a live thread, with the
//     rest of its deadline, and completes with its real result. The new
//     submission names the file by its fd number again (the kernel let go
//     of the file it held), as the poll backend does for each try and a
//     request held on a stream (see Order) does when its turn comes: keep
//     a request's fd open until its completion. Only a
//     request the ring canceled completes with ErrCanceled: an ECANCELED
//     that a file reports by itself (a timerfd set with
//     TFD_TIMER_CANCEL_ON_SET) is retried a few times, then delivered as
//     the errno.
//   - Order: reads at the current position (off -1) on one fd complete in
//     the order they were submitted, and so do writes, on both backends, as
//     overlapped ReadFile and WriteFile do on a pipe or serial handle: the
//     ring hands the first to the kernel and holds the rest, which a cancel
//     ends at once. The order follows the fd number: closing an fd under
//     pending requests and reusing its number puts the new file's requests
//     behind them. Op.Unordered opts out: unordered requests go to the
//     kernel at once, and which of several gets which part of a stream is
//     unspecified. Requests at an offset, and other operations, are not
//     ordered. BenchmarkStreamOrder shows the cost.
//   - User hooks: a foreign request's cancel hook may panic or re-enter.
//     A panic is recovered; every other request's cancel still happens, and
//     Close still drains and releases everything. The panic comes back as a
//     *HookPanicError: the error of the call that ran the hook
//     (Request.Cancel, Token.Cancel, Ring.CancelAll, Ring.Close), and in
//     the request's completion when the transport posts it after the hook
//     returned (a hook run by a deadline's timer has no caller). A hook is
//     never run again while it runs: a cancel from inside it (of its own
//     request, its token or the ring) or from another goroutine at the same
//     time skips it, so re-entry is bounded.
//
// # Completions
//
// Submit sends a request's completion to the ring's completion queue, where
// any number of goroutines take batches with Reap (blocking with a timeout,
// or not at all); SubmitAndReap submits and reaps in one call, for a loop
// that keeps requests in flight. Start sends it to Request.Wait only, for a
// caller that awaits one request; Do and ReadAt/WriteAt are synchronous
// wrappers that take a context. A multishot request's completions go to Reap only (Start
// and Do refuse it), in order, the final one last; one that falls more
// than MaxUndelivered behind its consumer (or, on io_uring, fills the
// kernel's completion ring) ends with ErrOverrun. A consumer
// that waits reaps the kernel's completion ring
// itself when no other goroutine does, so the common path has no goroutine
// hand-off. Foreign operations (a libusb transfer, a usbfs URB) complete
// through the same queue with Ring.Complete and get the same tokens and
// deadlines.
//
// # Threads and task work
//
// io_uring finishes some requests (a read that waited on a pipe, say) as task
// work of the thread that submitted them, and wakes that thread with a
// notification much like a signal. Go runs goroutines on any thread, so any
// thread of the process may receive one. System calls restart transparently,
// except on the few files whose drivers return EINTR after moving part of
// the data (FunctionFS endpoint files are one): do blocking I/O on those
// from a thread that never submits to a Ring (runtime.LockOSThread before
// the first submission), or through the Ring itself. Kernel-side
// alternatives (IORING_SETUP_COOP_TASKRUN, DEFER_TASKRUN) would delay
// completions until the submitting thread enters the kernel again, which a
// parked Go thread may never do, so they are not used.
//
// Terminals (ttys, ptys, serial ports) opened without O_NONBLOCK ignore
// io_uring's request not to wait: the kernel tries a read or write at the
// current position that way, inline in the submitting system call or in
// the submitting thread's task work, and the terminal would wait there,
// on a Go thread holding the ring's lock in the kernel. So the io_uring
// backend looks at the file of each read and write at the current
// position (offset -1; an fstat each, and an fcntl for a character
// device; registered files once, at RegisterFiles) and hands those on a
// blocking character device to the kernel's workers (IOSQE_ASYNC), where
// waiting is allowed. A cancel interrupts a worker with a notification
// that the worker can miss; once a cancel found such a request running
// (or not at all), and while the request stays canceled and not complete,
// the ring sends its cancel again every 5 ms (nothing runs while nobody
// cancels), and its deadline is kept by a timer of the ring (the kernel's
// linked timeout did not fire for a terminal's write waiting in a
// worker). With O_NONBLOCK the
// terminal says EAGAIN, the kernel waits in poll, and none of this is
// needed. BackendPoll runs blocking terminals in its workers, through a
// non-blocking reopen of the terminal where it can; a write there moves
// its whole buffer as a blocking write(2) does, waiting for room between
// parts, and one that a cancel or deadline ends part-way reports the
// bytes that moved, on both backends.
//
// # Costs
//
// Requests live in a preallocated slab; the kernel's user_data is a slot
// index plus a generation, never a pointer, so a late cancel cannot hit a
// reused slot. Submitting and reaping allocate nothing in steady state,
// and neither do Do and Request.Wait, unless they have to block under a
// context that can end: only then is the context watched
// (context.AfterFunc allocates).
package ioring
