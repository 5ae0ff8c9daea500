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
//	BenchmarkScale/impl=…/layout={shared,each}/goroutines={1,2,4,8}/procs={1,2}/op={nop,read4k}
//	                                          goroutines doing one request at a
//	                                          time on one shared ring or a ring
//	                                          each, at GOMAXPROCS procs
//	                                          (impls implementing Scaler)
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
// BenchmarkScale reports ns/op and ops/s for all goroutines together, and
// cpu-ns/op, the process's CPU time per request. cancelio's workers call
// Ring.Do in both layouts; liburing runs layout=each only, its threads
// confined to procs CPUs.
//
// # Choosing a ring layout
//
// Measured with BenchmarkScale on a 2-CPU machine under heavy background
// load, in two runs of 5 interleaved rounds (-count 1, five times; CPU time
// in the second run only). Wall-clock rates were noisy, CPU time per
// request steady:
//
//   - CPU per request hardly depends on the layout: from 1 to 8
//     goroutines, at GOMAXPROCS 1 and 2, cancelio-uring spent 0.7-0.9 µs
//     per NOP and 2.1-2.9 µs per 4 KiB read on one shared ring and on a
//     ring each alike (cancelio-poll 0.23-0.29 µs and 2.8-3.7 µs); the
//     shared ring cost more in 2 of 32 rows only (+15% and +28%).
//   - At GOMAXPROCS 1 the layouts' throughput was within noise of each
//     other (31 of 32 comparisons over the two runs).
//   - At GOMAXPROCS 2 one shared ring was as fast or faster. Where the
//     difference was significant it was the shared ring, by 1.6x to 3.5x
//     (io_uring: 2 and 8 goroutines; poll: 4 and 8). A ring per goroutine
//     on io_uring stayed near one goroutine's rate (0.25-0.44 M NOPs/s,
//     0.10-0.12 M reads/s from 1 to 8 goroutines); the shared ring reached
//     0.6-1.1 M NOPs/s and, with 2 and 8 goroutines, 0.22-0.35 M reads/s
//     (4 goroutines reading stayed at 0.11 M in both runs).
//
// So share one Ring among the goroutines of a process, and split rings for
// isolation (Close and CancelAll act on a whole ring), not for speed. Rings
// per core were not measured beyond 2 CPUs: re-run BenchmarkScale on the
// target machine before choosing otherwise there.
//
// Run them with `make bench` (or bench/run.sh) and compare the columns with
//
//	go tool -modfile=tools/go.mod benchstat -col /impl results.txt
//
// go test without -bench runs small correctness tests of every registered
// impl on every workload it supports.
package bench
