// Command iobench is a fio-like benchmark of cancelio's I/O engine
// (package ioring): no-ops, reads, writes or cancels at a given queue depth
// for a given time, on the io_uring or the poll backend, with a latency
// summary in text or JSON and an optional SVG plot of the distribution.
//
//	iobench --op read --qd 32 --size 4k --duration 2s
//	iobench --op cancel --qd 64 --duration 2s --plot cancel.svg
//	iobench --op nop --qd 32 --backend poll --json
//
// --op cancel measures cancel latency: --qd reads pending on empty pipes,
// all covered by one cancel token, are canceled with one Token.Cancel; one
// sample is the time from that call until the last read's completion has
// been reaped. The other ops keep --qd requests in flight; one sample is the
// time from a request's submission until its completion is reaped.
//
// Without --file, read and write use a temporary 64 MiB file (written, so
// that reads hit the page cache), removed at exit. With --file, read reads
// the file as it is; write writes into it at random offsets inside its
// current size or 64 MiB, whichever is larger, without truncating it.
//
// When stderr is a terminal, a progress line is updated there once a
// second. Ctrl-C ends the run early; the summary still follows. The exit
// status is 0 on success, 1 when the run fails, 2 for bad usage.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
