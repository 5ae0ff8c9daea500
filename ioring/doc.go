// Package ioring is an overlapped-I/O engine on Linux io_uring with
// per-request cancel tokens and a lock-free completion queue.
package ioring
