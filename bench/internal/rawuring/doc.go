// Package rawuring is the bare io_uring ABI for the benchmarks' impl=raw-go
// rows: setup, the mmap of the rings, SQEs filled in place, io_uring_enter,
// CQEs read in place. No requests, slots, tokens or locks: the floor a Go
// program reaches on io_uring, measured in the same run as C liburing and
// cancelio.
//
// It shares the kernel's struct layouts and constants with cancelio's
// internal/uring but is its own small driver: it offers what liburing's
// setup uses and cancelio's engine cannot (a ring bound to one thread:
// IORING_SETUP_SINGLE_ISSUER, DEFER_TASKRUN and a registered ring fd), so
// that the bench can tell Go's own cost from the cost of a ring any
// goroutine may use. Linux only; elsewhere the package is empty.
package rawuring
