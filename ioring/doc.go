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
// # The cancellation contract
//
//  1. Cancel is always allowed: Request.Cancel, Token.Cancel and
//     Ring.CancelAll may be called by any goroutine at any time, any number
//     of times. They request and return; they never wait for the I/O. When
//     nothing is left to cancel, Request.Cancel returns ErrNotFound and
//     changes nothing.
//  2. Exactly one completion: every accepted request completes once, with
//     its real result or ErrCanceled (which wraps ECANCELED). A cancel that
//     loses the race leaves the real result, bytes included.
//  3. Buffers live until completion: a request's buffers stay reachable and
//     pinned until its completion is delivered, even after a cancel. Reuse a
//     buffer only then.
//  4. Tokens cover the future: a request submitted with a canceled Token
//     completes with ErrCanceled without reaching the kernel.
//  5. Timeouts are cancels: a request's deadline (an io_uring linked timeout)
//     and a context both end in the cancel path; the result is ErrTimeout,
//     for which errors.Is(err, ErrCanceled) holds.
//  6. Close drains: it cancels everything, waits for every completion and
//     releases the rings; later calls return ErrClosed.
//  7. Bad input is refused up front with an error wrapping ErrInvalid, and
//     never reaches the ring.
//
// # Completions
//
// Submit sends a request's completion to the ring's completion queue, where
// any number of goroutines take batches with Reap (blocking with a timeout,
// or not at all). Start sends it to Request.Wait only, for a caller that
// awaits one request; Do and ReadAt/WriteAt are synchronous wrappers that
// take a context. A consumer that waits reaps the kernel's completion ring
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
// # Costs
//
// Requests live in a preallocated slab; the kernel's user_data is a slot
// index plus a generation, never a pointer, so a late cancel cannot hit a
// reused slot. Submitting and reaping allocate nothing in steady state.
package ioring
