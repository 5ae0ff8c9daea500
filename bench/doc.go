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
//   - raw-go, raw-go-regfd, raw-go-plain: the floor from Go, for Nop and
//     Read4K (raw-go and raw-go-plain also for the cancels): the bare
//     io_uring ABI (bench/internal/rawuring: mmap'd rings, SQEs filled in
//     place, io_uring_enter, CQEs read in place), no engine. raw-go sets
//     the ring up as liburing does (SINGLE_ISSUER|DEFER_TASKRUN, the ring
//     fd registered, the goroutine locked to its thread), so raw-go against
//     liburing is what Go itself costs; raw-go-plain as cancelio's engine
//     does (a plain ring any thread may enter), so raw-go-plain against
//     cancelio-uring is what the engine costs. raw-go-regfd, a plain ring
//     with its fd registered (locked to its thread too), splits the
//     difference between the two setups: what the registered fd buys, and
//     what SINGLE_ISSUER|DEFER_TASKRUN do. A target that raw-go does not
//     reach in the same run is out of reach for any Go program there. In
//     the cancel suites raw-go issues liburing's SQEs (one
//     IORING_ASYNC_CANCEL_ANY for a group), raw-go-plain cancelio's (one
//     cancel per read by its user_data, IOSQE_CQE_SKIP_SUCCESS, handed over
//     without waiting), so that each still measures what it stands for;
//     between the two, the SQEs differ as well as the setup.
//   - goroutines: blocking system calls in goroutines (on sockets too:
//     write and read). A blocked read(2) cannot be canceled (closing the fd
//     does not wake it), so each read of the cancel suites waits in ppoll(2)
//     on its fd and a shared eventfd, which cancel writes.
//   - netpoll: *os.File on non-blocking pipes, parked on the runtime's
//     netpoller; cancel is SetReadDeadline in the past. Over sockets, Go's
//     net package (a net.Conn from net.FileConn).
//   - cancelio-uring, cancelio-poll: cancelio's engine, registered by its own
//     file in this package. Its Nop and Read4K loops submit and reap with
//     one Ring.SubmitAndReap per turn, as liburing's submit with
//     io_uring_submit_and_wait.
//
// A new impl implements Impl in one file and calls Register from init. The
// harness owns every fd, the page-cached data file, the random offsets and
// the ping-pong echo peer, so the work is the same for each impl; an impl
// that does not support a workload gets no sub-benchmark for it.
// WorkloadReadFixed and WorkloadSockPingPong are variants of Read and
// PingPong (ReadConfig.Fixed, PingPongConfig.Socket) that an impl supports
// only where it has registered buffers or socket calls.
//
// # Suites
//
//	BenchmarkNop/impl=…/batch={1,32}          no-ops, batch per submission
//	BenchmarkRead4K/impl=…/qd={1,32}          4 KiB random page-cache reads
//	BenchmarkRead4KFixed/impl=…/qd={1,32}     the same into registered buffers
//	                                          (READ_FIXED; impls that have them)
//	BenchmarkPingPong/impl=…/transport=pipe   64-byte round trip through pipes
//	BenchmarkPingPong/impl=…/transport=unix   the same over an AF_UNIX socketpair
//	BenchmarkPingPong/impl=…/transport=tcp    the same over TCP loopback
//	                                          (TCP_NODELAY)
//	BenchmarkCancel/impl=…/pending={1,64}     cancel reads pending on empty pipes
//	                                          all at once (a token, cancel-any)
//	BenchmarkCancelEach/impl=…/pending=64     the same, request by request
//	                                          (CancelConfig.Each)
//	BenchmarkCancelUnderLoad/impl=…/op=…      reads or ping-pongs while another
//	                                          read is canceled 1,000 times a second
//	BenchmarkScale/impl=…/layout={shared,each}/goroutines={1,2,4,8}/procs={1,2}/op={nop,read4k}
//	                                          goroutines doing one request at a
//	                                          time on one shared ring or a ring
//	                                          each, at GOMAXPROCS procs
//	                                          (impls implementing Scaler)
//
// The minidriver's CancelPendingIO is benchmarked in its own package, on
// the simulated scanner: go test -bench CancelPendingIO ./minidrv/.
//
// Every run starts with an untimed warm-up (256 ops; for the cancel suites,
// arm+cancel cycles until 512 requests have been through), so that what is
// timed, allocations included, is the steady state and not first-use costs.
// Throughput suites report ns/op, ops/s, allocs (and MB/s for reads); for
// BenchmarkPingPong, ns/op is one round trip. They and
// BenchmarkCancelUnderLoad also report where the time went: sys-ns/op and
// user-ns/op, the process's system and user CPU time per op (getrusage, all
// threads). sys-ns/op is the kernel's share, the system calls and the I/O
// itself; user-ns/op is the loop's, the engine's and Go's runtime's. When
// an impl's sys-ns/op matches liburing's, the rest of its gap is its own
// work in user space. The kernel accounts CPU time in ticks: at short
// -benchtime the figures are rough.
//
// BenchmarkRead4KFixed reads the same blocks of the same file at the same
// queue depths as BenchmarkRead4K, into QD buffers registered once when the
// runner is made (buffer i as index i): cancelio with Ring.RegisterBuffers
// and ReadFixed (the poll backend accepts them and runs plain preadv2),
// liburing with io_uring_register_buffers and read_fixed. Compare each row
// with its BenchmarkRead4K row of the same run.
//
// The socket ping-pongs talk to the same kind of echo peer as the pipe one
// (a goroutine in blocking read and write on its end): cancelio submits a
// Send and a Recv together (Recv is unordered on its stream, so one at a
// time; a short one is continued), liburing a send (MSG_NOSIGNAL, as
// cancelio's Send) and a recv SQE in one io_uring_enter, netpoll writes and
// reads a net.Conn, goroutines block in write and read. Each round trip
// includes waking the peer's thread and being woken by it, which dominates
// the time; the rows compare the impls' ways of waiting more than their
// per-request cost.
// BenchmarkCancel and BenchmarkCancelEach report the mean latency of one
// cancel as ns/op, from the cancel call until the last canceled completion
// is delivered (the Arm before it is not included), and its percentiles as
// p50-ns, p99-ns and p999-ns, and slow-%, the share of cancels that took
// more than 1.25 times the median. On a virtual machine a cancel of 64
// reads is interrupted now and then (a timer tick, the hypervisor), which
// adds 10-20 µs to about one cancel in a hundred, for every impl: where
// slow-% is at or above 1, the p99 is one of those, and a p99 ratio
// compares two impls' slow cancels, or one's slow cancel with the other's
// ordinary one. In BenchmarkCancelEach every read is canceled
// by its own handle through the impl's best API for that: cancelio hands the
// 64 Requests to one Ring.Cancel (one system call), liburing submits 64
// IORING_OP_ASYNC_CANCEL by user_data in one io_uring_enter, goroutines
// write each request's own eventfd, netpoll sets each file's deadline (as
// it does in BenchmarkCancel). BenchmarkCancelUnderLoad also reports
// cancels/s, the background cancel rate really achieved, and cancels-%,
// that rate as a share of the 1,000 a second requested. The Go impls'
// cancelling goroutine (StartCancelLoop) keeps to a schedule of absolute
// times and runs the cycles that came due while it waited to be scheduled,
// up to 8 of them; liburing checks the clock in its own loop.
//
// # Instructions per op
//
// The wall-clock rows on a small shared machine are noisy and mostly
// kernel time. bench/callgrind.sh gives the user-space side exactly: it
// runs each Nop and Read4K row of liburing, raw-go, raw-go-plain and
// cancelio under valgrind's callgrind at two op counts (GOMAXPROCS=1) and
// prints the difference of the process's instruction counts per op, the
// loop's own cost with setup and warm-up cancelled out. Against raw-go it
// tells how much of cancelio's cost is the engine's, and against liburing
// how much is Go's.
//
// BenchmarkScale reports ns/op and ops/s for all goroutines together, and
// cpu-ns/op, the process's CPU time per request. cancelio's workers call
// Ring.Do in both layouts; liburing runs layout=each only, its threads
// confined to procs CPUs.
//
// # Choosing a ring layout
//
// Measured with BenchmarkScale in the 22 runs of `make bench` kept in
// bench/results from 2026-12-05 (2 CPUs, an AMD EPYC, a quiet machine; two 150 ms
// rounds of each row per run; the layouts compared within each run, by
// their medians):
//
//   - At GOMAXPROCS 1 the layout makes no difference: one shared ring took
//     1.00-1.02x the time of a ring per goroutine (medians over the runs),
//     on both backends, from 1 to 8 goroutines.
//   - At GOMAXPROCS 2, with 2 to 8 goroutines, a ring per goroutine is
//     faster. The shared ring took 1.46-1.73x its time on io_uring (medians;
//     1.22x at the least in any run) and 1.91-2.97x on the poll backend
//     (1.54x at the least). A ring per goroutine used the second CPU: on
//     io_uring about 260 ns per NOP and 700 ns per 4 KiB read for all
//     goroutines together, against 515 and 1,390 ns with one goroutine;
//     the shared ring stayed at 390-460 and 1,160-1,300 ns.
//   - CPU time per request follows: the same for both layouts at GOMAXPROCS
//     1; at GOMAXPROCS 2 the shared ring spent more (io_uring, over 1 to 8
//     goroutines: 714 against 510 ns per NOP, 2,158 against 1,376 ns per
//     read, medians). Goroutines running at once on one ring contend for
//     its submission lock and its reaper role, and a completion reaped for
//     another goroutine reaches it through a wake-up.
//
// On the Intel Xeon machine that replaced it (2 CPUs; runs
// 20261206-164911, 20261206-170552 and 20261206-171701, compared the same
// way) the picture
// is the same, and the gap at GOMAXPROCS 2 wider:
//
//   - At GOMAXPROCS 1 the shared ring took 0.98-1.18x the time of a ring
//     per goroutine on io_uring and 0.93-1.08x on the poll backend.
//   - At GOMAXPROCS 2, with 2 to 8 goroutines, the shared ring took
//     2.47-5.25x a ring per goroutine's time on io_uring for NOPs and
//     2.55-2.76x for 4 KiB reads (the poll backend: 2.10-7.21x and
//     1.43-1.67x). A ring per goroutine went from 259-270 ns per NOP and
//     656-672 ns per read with one goroutine to 131-147 and 443-474 ns for
//     all together; the shared ring went the other way, to 328-706 and
//     1,180-1,253 ns: slower than one goroutine alone.
//
// So give each goroutine that keeps I/O going (a device's pump, a
// connection's loop) a Ring of its own; that also scopes Close and
// CancelAll to it, as CancelPendingIO wants for one device. One Ring shared
// by several goroutines costs nothing extra when they do not run at once
// (GOMAXPROCS 1 above), and it is the layout for requests that one Close
// or CancelAll must reach together. An earlier version of this advice,
// measured under heavy background load, said the opposite; runs on a quiet
// machine do not bear it out. Beyond 2 CPUs nothing was measured: re-run
// BenchmarkScale on the target machine before choosing there.
//
// Run them with `make bench` (or bench/run.sh) and compare the columns with
//
//	go tool -modfile=tools/go.mod benchstat -col /impl results.txt
//
// go test without -bench runs small correctness tests of every registered
// impl on every workload it supports.
package bench
