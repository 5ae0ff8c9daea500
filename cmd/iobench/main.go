// Command iobench is a fio-like benchmark of cancelio's I/O engine
// (package ioring): no-ops, reads, writes or cancels at a given queue depth
// for a given time, on the io_uring or the poll backend, with a summary in
// text or JSON and an optional SVG plot of the latency distribution.
//
//	iobench --op read --qd 32 --size 4k --duration 2s
//	iobench --op cancel --qd 64 --duration 2s --plot cancel.svg
//	iobench --op nop --qd 32 --backend poll --json
//
// Each op reports the figures that mean something for it. nop, read and
// write keep --qd requests in flight and report requests per second and
// the latency of each request, from its submission until its completion is
// reaped; read and write also report bytes moved and MB/s. --op cancel
// measures cancellation: --qd reads pending on empty pipes, all covered by
// one cancel token, are canceled with one Token.Cancel; it reports cancels
// per second, reads canceled per second, and the cancel latency, from that
// call until the last read's completion has been reaped. Latencies are
// summarized as min, mean, p50, p90, p99, p99.9 and max.
//
// --plot FILE writes the latency distribution as SVG: a histogram, the
// cumulative distribution, and the tail (the fraction of samples above each
// latency, 1 - CDF, on a log axis) where p99.9 and the maximum can be read.
// The summary names the file (the "plot" line, or "plot" in JSON).
//
// --size takes the byte-size syntax that wiascan's --bandwidth takes too:
// a number with k, M or G (powers of 1024; KiB, MiB, GiB also accepted),
// at most 1G; the buffers a run keeps in flight, --qd × --size, at most
// 1 GiB (64 MiB in a 32-bit build); without --file, read and write at
// most 64M, the temporary file's size. Beyond them it is bad usage.
//
// Without --file, read and write use a temporary 64 MiB file (written, so
// that reads hit the page cache), removed at exit. With --file, read reads
// the file as it is; write writes into it at random offsets inside its
// current size or 64 MiB, whichever is larger, without truncating it.
//
// When stderr is a terminal, a progress line is updated there once a
// second. Ctrl-C ends the run early: the summary (marked "interrupted") is
// still printed, the plot still written, and the exit status is 130, as
// for wiascan; a second Ctrl-C kills iobench at once. SIGTERM and SIGHUP
// end the run the same way (status 130 too), so the temporary file and a
// plot's temporary file are removed. The exit status is 0 on success, 1
// when the run fails, 2 for bad usage, 130 when interrupted.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first Ctrl-C (or SIGTERM, from kill, timeout or a service
	// manager; or SIGHUP, the terminal gone) goes to run, which stops and
	// summarizes; the next one gets the default action (exit at once).
	raw := make(chan os.Signal, 1)
	signal.Notify(raw, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	sigs := make(chan os.Signal, 1)
	go func() {
		s := <-raw
		signal.Reset(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		sigs <- s
	}()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, sigs))
}
