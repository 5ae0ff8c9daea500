package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/internal/latstat"
	"github.com/cancelio/cancelio/internal/units"
	"github.com/cancelio/cancelio/ioring"
	"golang.org/x/sys/unix"
)

// Exit statuses.
const (
	exitOK          = 0
	exitFail        = 1   // the run failed
	exitUsage       = 2   // bad flags
	exitInterrupted = 130 // Ctrl-C: 128 + SIGINT, as shells report an interrupted command
)

const (
	maxQD           = 4096
	maxSize         = 1 << 30
	defaultFileSize = 64 << 20
	// maxBuffers bounds --qd × --size, the buffers a run allocates at
	// once: 1 GiB, or 64 MiB in a 32-bit address space.
	maxBuffers = 1 << (30 - 4*(64-strconv.IntSize)/32)
	numOffsets = 1 << 16 // random offsets, walked round-robin
)

// config is the parsed command line.
type config struct {
	op       string
	qd       int
	size     int
	duration time.Duration
	backend  ioring.Backend
	json     bool
	file     string
	plot     string
}

// run is the whole command: it parses args, runs the benchmark and writes
// the summary to stdout, errors and progress to stderr, and returns the exit
// status. A value on sigs (Ctrl-C) ends the run early: the summary is still
// written, and the status is exitInterrupted.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	cfg, code := parseArgs(args, stderr)
	if cfg == nil {
		return code
	}
	interrupted, err := execute(cfg, stdout, stderr, sigs)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "iobench: %v\n", err)
		return exitFail
	case interrupted:
		return exitInterrupted
	}
	return exitOK
}

// usageText is the head of -h; the flags follow it.
const usageText = `usage: iobench [flags]

A fio-like benchmark of cancelio's I/O engine. What is reported depends on --op:
  nop, read, write  requests completed per second, and the latency of each from
                    its submission until its completion is reaped; read and
                    write also report bytes and MB/s
  cancel            cancels per second and reads canceled per second, and the
                    cancel latency: from Token.Cancel on --qd pending reads
                    until the last of them is reaped
--plot writes the latency distribution as SVG (histogram, CDF, and the tail,
1 - CDF on a log axis) and the summary says where.
Sizes take k, M or G (powers of 1024; KiB, MiB, GiB also accepted).
Ctrl-C ends the run early and the summary is still printed.
Exit status: 0 done, 1 the run failed, 2 bad usage, 130 interrupted (Ctrl-C).

flags:
`

// parseArgs parses and checks the command line. On failure it reports to
// stderr and returns a nil config and the exit status.
func parseArgs(args []string, stderr io.Writer) (*config, int) {
	fs := flag.NewFlagSet("iobench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported below, with one prefix
	fs.Usage = func() {}
	op := fs.String("op", "read", "operation: nop, read, write or cancel")
	qd := fs.Int("qd", 32, "queue depth: requests in flight (cancel: reads pending per cancel); a power of two up to 4096")
	size := fs.String("size", "4k", "`bytes` of each read and write, and of each buffer of cancel's reads (not used by nop): 4096, 4k, 64KiB, 1M...; at most 1G")
	dur := fs.Duration("duration", 2*time.Second, "how long to run")
	backend := fs.String("backend", "auto", "engine backend: auto, uring or poll")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	file := fs.String("file", "", "file to read or write (default: a temporary 64 MiB file, removed at exit)")
	plot := fs.String("plot", "", "write an SVG plot of the latency distribution (histogram, CDF and tail) to this `file`")
	usage := func(format string, a ...any) (*config, int) {
		fmt.Fprintf(stderr, "iobench: "+format+"\nRun iobench -h for usage.\n", a...)
		return nil, exitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usageText)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, exitOK
		}
		return usage("%v", err)
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	cfg := &config{op: *op, qd: *qd, duration: *dur, json: *asJSON, file: *file, plot: *plot}
	switch cfg.op {
	case "nop", "read", "write", "cancel":
	default:
		return usage("unknown --op %q (want nop, read, write or cancel)", cfg.op)
	}
	if cfg.qd < 1 || cfg.qd > maxQD || cfg.qd&(cfg.qd-1) != 0 {
		return usage("--qd %d: want a power of two from 1 to %d", cfg.qd, maxQD)
	}
	n, err := units.ParseBytes(*size, 1, maxSize)
	if err != nil {
		return usage("--size %q: %v", *size, err)
	}
	cfg.size = int(n)
	if cfg.file == "" && (cfg.op == "read" || cfg.op == "write") && n > defaultFileSize {
		return usage("--size %s: more than the %s temporary file read and write use without --file",
			units.FormatBytes(n), units.FormatBytes(defaultFileSize))
	}
	if cfg.op != "nop" && int64(cfg.qd)*n > maxBuffers {
		return usage("--qd %d with --size %s: %s of buffers, more than the %s a run may take",
			cfg.qd, units.FormatBytes(n), units.FormatBytes(int64(cfg.qd)*n), units.FormatBytes(maxBuffers))
	}
	if cfg.duration <= 0 {
		return usage("--duration %v: want a positive duration such as 2s", cfg.duration)
	}
	// ParseBackend takes "" as auto (an unset CANCELIO_BACKEND); a flag
	// given empty is a mistake.
	if cfg.backend, err = ioring.ParseBackend(*backend); err != nil || *backend == "" {
		return usage("--backend %q: want auto, uring or poll", *backend)
	}
	if cfg.file != "" && cfg.op != "read" && cfg.op != "write" {
		return usage("--file is for --op read and write, not %s", cfg.op)
	}
	return cfg, exitOK
}

// plotFile is where --plot goes. A path that is not an existing file
// other than a regular one (a new file, or a regular file to replace) is
// written as a temporary file beside it, renamed over it once the plot
// is whole: a run that fails leaves what was there as it was. Anything
// else there (a device such as /dev/null, a FIFO) is written in place,
// and never removed.
type plotFile struct {
	f    *os.File
	path string
	tmp  bool // f is a temporary file, renamed to path by commit
}

func openPlot(path string) (*plotFile, error) {
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		if st.IsDir() {
			return nil, fmt.Errorf("%s is a directory", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		return &plotFile{f: f, path: path}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+tempBase(filepath.Base(path), 16)+".*.tmp")
	if err != nil {
		return nil, pathError("create", path, err)
	}
	return &plotFile{f: f, path: path, tmp: true}, nil
}

// pathError is err about path, as the user named it, not about the
// temporary file beside it.
func pathError(op, path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		err = le.Err
	}
	return &os.PathError{Op: op, Path: path, Err: err}
}

// commit closes the plot and, written to a temporary file, puts it in
// its place.
func (p *plotFile) commit() error {
	err := p.f.Close()
	if p.tmp {
		if err == nil {
			err = os.Chmod(p.f.Name(), 0o644) // CreateTemp's is 0600
		}
		if err == nil {
			err = os.Rename(p.f.Name(), p.path)
		}
		if err != nil {
			os.Remove(p.f.Name())
			err = pathError("write", p.path, err)
		}
	}
	return err
}

// abort closes the plot of a run that failed, and removes the temporary
// file, never what was at the path.
func (p *plotFile) abort() {
	p.f.Close()
	if p.tmp {
		os.Remove(p.f.Name())
	}
}

// result is what a run measured.
type result struct {
	ops         int64 // completed requests (cancel: cancels)
	bytes       int64
	canceled    int64 // cancel: reads canceled
	elapsed     time.Duration
	interrupted bool
	hist        *latstat.Histogram
	plot        string // the plot's path, once written
}

// execute runs the benchmark cfg describes and reports it. It returns
// whether sigs ended the run early.
func execute(cfg *config, stdout, stderr io.Writer, sigs <-chan os.Signal) (interrupted bool, err error) {
	// Open the plot first: an unwritable path should not cost a whole run.
	var plot *plotFile
	if cfg.plot != "" {
		if plot, err = openPlot(cfg.plot); err != nil {
			return false, fmt.Errorf("--plot: %w", err)
		}
		defer func() {
			if err != nil {
				plot.abort()
			}
		}()
	}

	entries := max(64, 2*cfg.qd)
	r, err := ioring.New(ioring.Config{Entries: entries, Backend: cfg.backend})
	if err != nil {
		return false, fmt.Errorf("backend %v: %w", cfg.backend, err)
	}
	defer func() {
		if cerr := r.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close ring: %w", cerr)
		}
	}()

	var stop atomic.Bool // set by Ctrl-C: the loops wind down and report
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-sigs:
			stop.Store(true)
		case <-watchDone:
		}
	}()

	prog := &progress{unit: opNoun(cfg.op)}
	if isTerminal(stderr) {
		prog.w = stderr
	}
	var res result
	switch cfg.op {
	case "cancel":
		res, err = runCancel(r, cfg, &stop, prog)
	default:
		var d *dataFile
		if cfg.op != "nop" {
			if d, err = openData(cfg); err != nil {
				return false, err
			}
			defer d.close()
		}
		res, err = runIO(r, cfg, d, &stop, prog)
	}
	prog.finish()
	if err != nil {
		return false, err
	}
	res.interrupted = stop.Load()

	// The plot first, so that the summary names a file that exists.
	if plot != nil {
		title := fmt.Sprintf("iobench %s, qd %d, %s backend: latency of %d requests", cfg.op, cfg.qd, r.Backend().Backend, res.hist.Count())
		if cfg.op == "cancel" {
			title = fmt.Sprintf("iobench: cancel of %d pending reads, %s backend: %d cancels", cfg.qd, r.Backend().Backend, res.hist.Count())
		}
		if err := res.hist.WriteSVG(plot.f, title); err != nil {
			return false, fmt.Errorf("--plot: %w", err)
		}
		if err := plot.commit(); err != nil {
			return false, fmt.Errorf("--plot: %w", err)
		}
		res.plot = cfg.plot
	}
	if cfg.json {
		err = writeJSON(stdout, cfg, r.Backend(), &res)
	} else {
		err = writeText(stdout, cfg, r.Backend(), &res)
	}
	if err != nil {
		return false, fmt.Errorf("write summary: %w", err)
	}
	return res.interrupted, nil
}

// dataFile is the file read or written.
type dataFile struct {
	f       *os.File
	size    int64
	temp    bool
	offsets []int64
}

// notIrregular reports whether path names a regular file (following
// symbolic links) or nothing that can be looked at: a missing file, which
// a write run creates, or one the open will report an error for.
func notIrregular(path string) bool {
	st, err := os.Stat(path)
	return err != nil || st.Mode().IsRegular()
}

// openData opens --file, or creates the temporary file, and picks random
// block-aligned offsets inside it.
func openData(cfg *config) (*dataFile, error) {
	d := &dataFile{}
	var err error
	switch {
	case cfg.file == "":
		d.temp = true
		if d.f, err = os.CreateTemp("", "iobench-*.dat"); err != nil {
			return nil, fmt.Errorf("temporary file: %w", err)
		}
		d.size = defaultFileSize
		if cfg.op == "read" {
			err = fillFile(d.f, d.size)
		} else {
			err = d.f.Truncate(d.size)
		}
		if err != nil {
			d.close()
			return nil, fmt.Errorf("temporary file %s: %w", d.f.Name(), err)
		}
	case !notIrregular(cfg.file):
		// Looked at before the open, which waits for ever on a FIFO
		// (for a writer, or a reader) where no Ctrl-C can end it.
		return nil, fmt.Errorf("--file %s: not a regular file", cfg.file)
	case cfg.op == "read":
		if d.f, err = os.Open(cfg.file); err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
	default:
		if d.f, err = os.OpenFile(cfg.file, os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
	}
	if !d.temp {
		st, err := d.f.Stat()
		if err != nil {
			d.close()
			return nil, fmt.Errorf("--file: %w", err)
		}
		if !st.Mode().IsRegular() {
			d.close()
			return nil, fmt.Errorf("--file %s: not a regular file", cfg.file)
		}
		d.size = st.Size()
		if cfg.op == "write" {
			d.size = max(d.size, defaultFileSize)
		}
	}
	blocks := d.size / int64(cfg.size)
	if blocks < 1 {
		d.close()
		return nil, fmt.Errorf("--file %s: %d bytes, smaller than one block of %d", d.f.Name(), d.size, cfg.size)
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x696f62656e6368)) // "iobench"
	d.offsets = make([]int64, numOffsets)
	for i := range d.offsets {
		d.offsets[i] = rng.Int64N(blocks) * int64(cfg.size)
	}
	return d, nil
}

// fillFile writes size bytes of data into f, which leaves them in the page
// cache.
func fillFile(f *os.File, size int64) error {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>8)
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk[:min(int64(len(chunk)), size-off)], off); err != nil {
			return err
		}
	}
	return nil
}

func (d *dataFile) close() {
	d.f.Close()
	if d.temp {
		os.Remove(d.f.Name())
	}
}

// ioSlot is one request buffer of runIO; a pointer to it travels as the
// request's User value (a pointer does not allocate).
type ioSlot struct {
	buf []byte
	off int64
	t   time.Duration // submission time, since the run's start
}

// runIO keeps cfg.qd nops, reads or writes in flight until the duration has
// passed, and records each request's latency from submission to reap.
func runIO(r *ioring.Ring, cfg *config, d *dataFile, stop *atomic.Bool, prog *progress) (result, error) {
	qd := cfg.qd
	res := result{hist: latstat.New()}
	slots := make([]ioSlot, qd)
	free := make([]*ioSlot, 0, qd)
	batch := make([]*ioSlot, qd)
	var mem []byte
	if d != nil {
		mem = make([]byte, qd*cfg.size)
		for i := range mem {
			mem[i] = byte(i * 13)
		}
	}
	for i := range slots {
		if d != nil {
			slots[i].buf = mem[i*cfg.size : (i+1)*cfg.size : (i+1)*cfg.size]
		}
		free = append(free, &slots[qd-1-i])
	}
	ops := make([]ioring.Op, qd)
	reqs := make([]ioring.Request, qd)
	comps := make([]ioring.Completion, qd)
	var fd int
	var offs []int64
	if d != nil {
		fd, offs = int(d.f.Fd()), d.offsets
	}
	code := ioring.OpNop
	switch cfg.op {
	case "read":
		code = ioring.OpRead
	case "write":
		code = ioring.OpWrite
	}
	pos := 0
	var first error
	stopping := false
	inflight := 0
	start := time.Now()
	for {
		now := time.Since(start)
		if !stopping && (now >= cfg.duration || stop.Load()) {
			stopping = true
		}
		k := 0
		for !stopping && len(free) > 0 {
			s := free[len(free)-1]
			free = free[:len(free)-1]
			switch code {
			case ioring.OpNop:
				ops[k] = ioring.Nop()
			case ioring.OpRead, ioring.OpWrite:
				s.off = offs[pos]
				if pos++; pos == len(offs) {
					pos = 0
				}
				if code == ioring.OpRead {
					ops[k] = ioring.Read(fd, s.buf, s.off)
				} else {
					ops[k] = ioring.Write(fd, s.buf, s.off)
				}
			}
			ops[k] = ops[k].WithUser(s)
			s.t = now
			batch[k] = s
			k++
		}
		// Submit what is ready and reap in one call, or only reap.
		g := 0
		var err error
		switch {
		case k > 0:
			var m int
			m, g, err = r.SubmitAndReap(ops[:k], reqs[:k], comps, -1)
			free = append(free, batch[m:k]...)
			inflight += m
			if m < k { // the submission failed, and nothing was reaped
				first, stopping, err = err, true, nil
			}
		case inflight > 0:
			g, err = r.Reap(comps, -1)
		}
		if err != nil {
			return res, errors.Join(first, fmt.Errorf("reap: %w", err))
		}
		if g == 0 && inflight == 0 {
			if stopping {
				break
			}
			continue
		}
		now = time.Since(start)
		for i := range g {
			c := &comps[i]
			s := c.User.(*ioSlot)
			switch {
			case c.Err != nil:
				if first == nil {
					first = fmt.Errorf("%s at offset %d: %w", cfg.op, s.off, c.Err)
				}
				stopping = true
			case d != nil && c.N != cfg.size:
				if first == nil {
					first = fmt.Errorf("%s at offset %d: %d bytes instead of %d", cfg.op, s.off, c.N, cfg.size)
				}
				stopping = true
			}
			res.hist.Record(now - s.t)
			res.bytes += int64(c.N)
			free = append(free, s)
			comps[i] = ioring.Completion{}
		}
		res.ops += int64(g)
		inflight -= g
		prog.tick(now, res.ops, res.hist)
	}
	res.elapsed = time.Since(start)
	return res, first
}

// runCancel arms cfg.qd reads on as many empty pipes under one token,
// cancels the token and reaps every read, until the duration has passed;
// one sample is the time from Token.Cancel until the last read is reaped.
func runCancel(r *ioring.Ring, cfg *config, stop *atomic.Bool, prog *progress) (res result, err error) {
	qd := cfg.qd
	res.hist = latstat.New()
	rfds := make([]int, 0, qd)
	defer func() {
		for _, fd := range rfds {
			unix.Close(fd)
		}
	}()
	wfds := make([]int, 0, qd)
	defer func() {
		for _, fd := range wfds {
			unix.Close(fd)
		}
	}()
	for range qd {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return res, fmt.Errorf("pipe2 (%d pipes for --qd %d): %w", len(rfds), qd, err)
		}
		rfds, wfds = append(rfds, p[0]), append(wfds, p[1])
	}
	mem := make([]byte, qd*cfg.size)
	ops := make([]ioring.Op, qd)
	reqs := make([]ioring.Request, qd)
	comps := make([]ioring.Completion, qd)
	start := time.Now()
	for {
		now := time.Since(start)
		if now >= cfg.duration || stop.Load() {
			break
		}
		tok := r.NewToken()
		for i, fd := range rfds {
			ops[i] = ioring.Read(fd, mem[i*cfg.size:(i+1)*cfg.size:(i+1)*cfg.size], -1).WithToken(tok)
		}
		m, serr := r.SubmitBatch(ops, reqs)
		t0 := time.Now()
		first := tok.Cancel()
		for got := 0; got < m; {
			g, err := r.Reap(comps, -1)
			if err != nil {
				return res, errors.Join(serr, first, fmt.Errorf("reap: %w", err))
			}
			for i := range g {
				c := &comps[i]
				if first == nil && !errors.Is(c.Err, ioring.ErrCanceled) {
					if c.Err != nil {
						first = fmt.Errorf("pending read: %w", c.Err)
					} else {
						first = fmt.Errorf("pending read returned %d bytes instead of being canceled", c.N)
					}
				}
			}
			got += g
		}
		lat := time.Since(t0)
		if err := errors.Join(serr, first); err != nil {
			return res, err
		}
		res.hist.Record(lat)
		res.ops++
		res.canceled += int64(m)
		prog.tick(time.Since(start), res.ops, res.hist)
	}
	res.elapsed = time.Since(start)
	return res, nil
}

// progress writes a live progress line, once a second, to a terminal.
type progress struct {
	w       io.Writer // nil: no progress line
	unit    string    // what is counted: "reads", "cancels"...
	next    time.Duration
	lastT   time.Duration
	lastOps int64
	shown   bool
}

func (p *progress) tick(now time.Duration, ops int64, h *latstat.Histogram) {
	if p.w == nil || now < p.next {
		return
	}
	if p.next == 0 { // the first call starts the clock
		p.next = now + time.Second
		p.lastT, p.lastOps = now, ops
		return
	}
	rate := float64(ops-p.lastOps) / (now - p.lastT).Seconds()
	p.next = now + time.Second
	p.lastT, p.lastOps = now, ops
	fmt.Fprintf(p.w, "\r%5.1fs  %d %s  %s/s  p50 %s  p99 %s  (Ctrl-C: stop and summarize)\x1b[K",
		now.Seconds(), ops, p.unit, fmtRate(rate), fmtDur(h.Quantile(0.5)), fmtDur(h.Quantile(0.99)))
	p.shown = true
}

// finish erases the progress line.
func (p *progress) finish() {
	if p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// fmtDur formats a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

// fmtRate formats a rate with a k or M suffix.
func fmtRate(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.1fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

// opNoun is what one sample of op counts, in the plural.
func opNoun(op string) string {
	switch op {
	case "nop":
		return "nops"
	case "cancel":
		return "cancels"
	}
	return op + "s" // reads, writes
}

// perSec returns n per second of the run.
func (res *result) perSec(n int64) float64 {
	if s := res.elapsed.Seconds(); s > 0 {
		return float64(n) / s
	}
	return 0
}

// moves reports whether op moves data, so that bytes and MB/s mean
// something.
func moves(op string) bool { return op == "read" || op == "write" }

// writeText writes the summary for people: for each op the figures that
// mean something for it (see usageText).
func writeText(w io.Writer, cfg *config, be ioring.BackendInfo, res *result) error {
	s := res.hist.Summary()
	var b strings.Builder
	switch cfg.op {
	case "cancel":
		fmt.Fprintf(&b, "iobench: cancel of %d pending reads (%s buffers) by one token", cfg.qd, units.FormatBytes(int64(cfg.size)))
	case "nop":
		fmt.Fprintf(&b, "iobench: nop, qd %d", cfg.qd)
	default:
		fmt.Fprintf(&b, "iobench: %s, qd %d, size %s", cfg.op, cfg.qd, units.FormatBytes(int64(cfg.size)))
	}
	fmt.Fprintf(&b, ", backend %s (%s), %.3fs", be.Backend, be.Reason, res.elapsed.Seconds())
	if res.interrupted {
		b.WriteString(", interrupted by Ctrl-C")
	}
	b.WriteString("\n")
	lat := fmt.Sprintf("min %s, mean %s, p50 %s, p90 %s, p99 %s, p99.9 %s, max %s",
		fmtDur(s.Min), fmtDur(s.Mean), fmtDur(s.P50), fmtDur(s.P90), fmtDur(s.P99), fmtDur(s.P999), fmtDur(s.Max))
	if cfg.op == "cancel" {
		fmt.Fprintf(&b, "  cancels:        %d, %.1f/s\n", res.ops, res.perSec(res.ops))
		fmt.Fprintf(&b, "  reads canceled: %d, %.1f/s\n", res.canceled, res.perSec(res.canceled))
		fmt.Fprintf(&b, "  cancel latency: %s\n", lat)
		fmt.Fprintf(&b, "                  (from Token.Cancel until the last of the %d reads is reaped)\n", cfg.qd)
		if res.plot != "" {
			fmt.Fprintf(&b, "  plot:           %s\n", res.plot)
		}
	} else {
		noun := opNoun(cfg.op) + ":"
		fmt.Fprintf(&b, "  %-9s%d, %.1f/s\n", noun, res.ops, res.perSec(res.ops))
		if moves(cfg.op) {
			fmt.Fprintf(&b, "  data:    %d bytes, %.1f MB/s\n", res.bytes, res.perSec(res.bytes)/1e6)
		}
		fmt.Fprintf(&b, "  latency: %s\n", lat)
		fmt.Fprintf(&b, "           (from submission until the completion is reaped)\n")
		if res.plot != "" {
			fmt.Fprintf(&b, "  plot:    %s\n", res.plot)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// jsonSummary is the --json output. Fields that mean nothing for an op are
// left out: size for nop, bytes and MB/s but for read and write, the reads
// canceled but for cancel.
type jsonSummary struct {
	Op            string `json:"op"`
	QD            int    `json:"qd"`
	Size          int    `json:"size,omitempty"`
	Backend       string `json:"backend"`
	BackendReason string `json:"backend_reason"`
	DurationNS    int64  `json:"duration_ns"`
	Interrupted   bool   `json:"interrupted"`
	// Ops counts the requests completed, or for cancel the cancels.
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// Bytes and MBPerSec: read and write only.
	Bytes    *int64   `json:"bytes,omitempty"`
	MBPerSec *float64 `json:"mb_per_sec,omitempty"`
	// Canceled and CanceledPerSec count the reads canceled: cancel only.
	Canceled       *int64   `json:"canceled,omitempty"`
	CanceledPerSec *float64 `json:"canceled_per_sec,omitempty"`
	// Latency: per request from submission to reap; for cancel, per
	// cancel from Token.Cancel until the last read is reaped.
	Latency jsonLatency `json:"latency_ns"`
	// Plot is the path of the SVG plot, when --plot wrote one.
	Plot string `json:"plot,omitempty"`
}

type jsonLatency struct {
	Count int   `json:"count"`
	Min   int64 `json:"min"`
	Mean  int64 `json:"mean"`
	P50   int64 `json:"p50"`
	P90   int64 `json:"p90"`
	P99   int64 `json:"p99"`
	P999  int64 `json:"p999"`
	Max   int64 `json:"max"`
}

// writeJSON writes the summary as one JSON object.
func writeJSON(w io.Writer, cfg *config, be ioring.BackendInfo, res *result) error {
	s := res.hist.Summary()
	j := jsonSummary{
		Op: cfg.op, QD: cfg.qd, Size: cfg.size,
		Backend: be.Backend.String(), BackendReason: be.Reason,
		DurationNS: res.elapsed.Nanoseconds(), Interrupted: res.interrupted,
		Ops: res.ops, OpsPerSec: res.perSec(res.ops),
		Latency: jsonLatency{Count: s.Count, Min: int64(s.Min), Mean: int64(s.Mean), P50: int64(s.P50),
			P90: int64(s.P90), P99: int64(s.P99), P999: int64(s.P999), Max: int64(s.Max)},
		Plot: res.plot,
	}
	switch {
	case cfg.op == "nop":
		j.Size = 0
	case cfg.op == "cancel":
		perSec := res.perSec(res.canceled)
		j.Canceled, j.CanceledPerSec = &res.canceled, &perSec
	case moves(cfg.op):
		mb := res.perSec(res.bytes) / 1e6
		j.Bytes, j.MBPerSec = &res.bytes, &mb
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(j)
}

// tempBase returns base, or as much of it as leaves room for extra more
// bytes in a file name (NAME_MAX, 255 bytes): the name of a temporary
// file beside base, which adds extra bytes to it, must fit where base
// does.
func tempBase(base string, extra int) string {
	return base[:min(len(base), 255-extra)]
}
