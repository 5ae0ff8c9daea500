// Package bench holds cancelio's benchmark suites: the same workloads run on
// cancelio and on the baselines a Go driver author would otherwise pick, in
// one run, to be read with benchstat.
//
// # Impls and workloads
//
// An Impl is one way of doing I/O, the impl= key of every benchmark name:
//
//   - liburing: C liburing through cgo, the whole inner loop in C (build tag
//     liburing; needs liburing-dev). The physical limit, and the ruler for
//     cancelio's targets.
//   - goroutines: blocking system calls in goroutines. A blocked read(2)
//     cannot be canceled (closing the fd does not wake it), so each read
//     waits in ppoll(2) on its fd and a shared eventfd, which cancel writes.
//   - netpoll: *os.File on non-blocking pipes, parked on the runtime's
//     netpoller; cancel is SetReadDeadline in the past.
//   - cancelio-uring, cancelio-poll: cancelio's engine, registered by its own
//     file in this package.
//
// A new impl implements Impl in one file and calls Register from init. The
// harness owns every fd, the page-cached data file, the random offsets and
// the ping-pong echo peer, so the work is the same for each impl; an impl
// that does not support a workload gets no sub-benchmark for it.
//
// # Suites
//
//	BenchmarkNop/impl=…/batch={1,32}          no-ops, batch per submission
//	BenchmarkRead4K/impl=…/qd={1,32}          4 KiB random page-cache reads
//	BenchmarkPingPong/impl=…                  64-byte round trip through pipes
//	BenchmarkCancel/impl=…/pending={1,64}     cancel reads pending on empty pipes
//	                                          all at once (a token, cancel-any)
//	BenchmarkCancelEach/impl=…/pending=64     the same, request by request
//	                                          (CancelConfig.Each)
//	BenchmarkCancelUnderLoad/impl=…/op=…      reads or ping-pongs while another
//	                                          read is canceled 1,000 times a second
//	BenchmarkCancelPendingIO/impl=…           minidriver CancelPendingIO to Idle
//	                                          (impls implementing IdleCanceler)
//
// Every run starts with an untimed warm-up (256 ops; for the cancel suites,
// arm+cancel cycles until 512 requests have been through), so that what is
// timed, allocations included, is the steady state and not first-use costs.
// Throughput suites report ns/op, ops/s, allocs (and MB/s for reads).
// BenchmarkCancel and BenchmarkCancelEach report the mean latency of one
// cancel as ns/op, from the cancel call until the last canceled completion
// is delivered (the Arm before it is not included), and its percentiles as
// p50-ns, p99-ns and p999-ns. In BenchmarkCancelEach every read is canceled
// by its own handle through the impl's best API for that: cancelio hands the
// 64 Requests to one Ring.Cancel (one system call), liburing submits 64
// IORING_OP_ASYNC_CANCEL by user_data in one io_uring_enter, goroutines
// write each request's own eventfd, netpoll sets each file's deadline (as
// it does in BenchmarkCancel). BenchmarkCancelUnderLoad also reports
// cancels/s, the background cancel rate really achieved, and cancels-%,
// that rate as a share of the 1,000 a second requested.
//
// Run them with `make bench` (or bench/run.sh) and compare the columns with
//
//	go tool benchstat -col /impl results.txt
//
// go test without -bench runs small correctness tests of every registered
// impl on every workload it supports.
package bench
