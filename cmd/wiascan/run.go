package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cancelio/cancelio/internal/units"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitCanceled = 130 // 128 + SIGINT, as shells report an interrupted command
)

// Limits of the simulated scanner's fault flags.
const maxSimBytes = 1 << 40

// options are the parsed command line.
type options struct {
	out          string
	format       outFormat
	vid, pid     uint16
	real         bool // --usb given
	dpi          int
	color        bool
	width        int // pixels, 0: the whole bed
	height       int
	hangAfter    int64
	bandwidth    int64
	queueDepth   int
	abortTimeout time.Duration
	stallTimeout time.Duration // 0: wait for ever
	progress     string        // "auto", "on", "off"
	verbose      bool
}

// usageError is bad usage: run reports it with exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// usageHead is the head of -h; the flags follow it.
const usageHead = `usage: wiascan --out FILE.{pgm,ppm,pnm,png} [flags]

Acquires one image from the scanner through the cancelio minidriver.
The extension of --out picks the format: .pgm (gray), .ppm (color), .pnm
(netpbm: gray or color, as --mode says) or .png (either); without --mode,
.ppm scans in color and the others in gray; a --mode the extension cannot
hold is refused.
Sizes (--bandwidth, --hang-after) take k, M or G (powers of 1024; KiB, MiB,
GiB also accepted). While the scanner sends nothing the progress line says
so; after --stall-timeout without data the scan fails. Ctrl-C cancels at
once. A failure is one line; -v adds the driver's detail.
Exit status: 0 done, 1 the scan failed, 2 bad usage, 130 canceled (Ctrl-C).

flags:
`

// parseArgs parses args; errors are usage errors. It returns flag.ErrHelp
// after printing the help for -h.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("wiascan", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by run, with one prefix
	fs.Usage = func() {}
	fs.StringVar(&o.out, "out", "", "output `file`: .pgm, .ppm, .pnm or .png (see above)")
	usbID := fs.String("usb", "", "open the real scanner `VID:PID` (hex) instead of the simulated one")
	fs.IntVar(&o.dpi, "dpi", 150, "resolution: "+orList(minidrv.Resolutions()))
	mode := fs.String("mode", "", "`mode`: gray or color (default: color for .ppm, else gray)")
	fs.IntVar(&o.width, "width", 0, "width in `pixels` at --dpi (0: the whole bed, 8.5 in)")
	fs.IntVar(&o.height, "height", 0, "height in `pixels` at --dpi (0: the whole bed, 11.69 in)")
	// Sizes default to "" (no fault), which -h does not print as a default.
	hangAfter := fs.String("hang-after", "", "simulated scanner: hang after sending `bytes` on bulk IN, e.g. 100k: its answers while it is opened, then the image data (1 hangs it at open; unset or 0: never)")
	bandwidth := fs.String("bandwidth", "", "simulated scanner: cap its data rate at `bytes` per second, e.g. 1M (unset or 0: no cap)")
	fs.IntVar(&o.queueDepth, "queue-depth", minidrv.DefaultQueueDepth, "bulk-IN transfers kept in flight (1.."+strconv.Itoa(minidrv.MaxQueueDepth)+")")
	fs.DurationVar(&o.abortTimeout, "abort-timeout", minidrv.DefaultAbortTimeout, "bound on the device's answer to the probe, and on the abort and flush after a cancel")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", minidrv.DefaultStallTimeout, "fail after this `duration` without data from the scanner (0: wait for ever; Ctrl-C still cancels)")
	fs.StringVar(&o.progress, "progress", "auto", "progress line on stderr: auto (if a terminal), on, off")
	fs.BoolVar(&o.verbose, "v", false, "verbose: after a failure, the driver's whole error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usageHead)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
			return nil, err
		}
		return nil, &usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	if o.out == "" {
		return nil, usagef("--out FILE is required")
	}
	var err error
	if o.format, err = formatOf(o.out); err != nil {
		return nil, err
	}
	switch *mode {
	case "":
		o.color = o.format.holds == holdsColor
	case "gray", "color":
		o.color = *mode == "color"
		if err := o.format.check(o.out, o.color); err != nil {
			return nil, err
		}
	default:
		return nil, usagef("--mode %q: want gray or color", *mode)
	}
	for _, sz := range []struct {
		name string
		s    string
		v    *int64
	}{{"--hang-after", *hangAfter, &o.hangAfter}, {"--bandwidth", *bandwidth, &o.bandwidth}} {
		if sz.s == "" {
			continue
		}
		if *sz.v, err = units.ParseBytes(sz.s, 0, maxSimBytes); err != nil {
			return nil, usagef("%s %q: %v", sz.name, sz.s, err)
		}
	}
	if *usbID != "" {
		vid, pid, err := parseUSBID(*usbID)
		if err != nil {
			return nil, err
		}
		o.vid, o.pid, o.real = vid, pid, true
		if o.hangAfter != 0 || o.bandwidth != 0 {
			return nil, usagef("--hang-after and --bandwidth apply to the simulated scanner only, not with --usb")
		}
	}
	switch {
	case o.queueDepth < 1 || o.queueDepth > minidrv.MaxQueueDepth:
		return nil, usagef("--queue-depth %d: want 1..%d", o.queueDepth, minidrv.MaxQueueDepth)
	case o.abortTimeout <= 0:
		return nil, usagef("--abort-timeout %v: must be positive", o.abortTimeout)
	case o.stallTimeout < 0:
		return nil, usagef("--stall-timeout %v: must not be negative (0 waits for ever)", o.stallTimeout)
	}
	switch o.progress {
	case "auto", "on", "off":
	default:
		return nil, usagef("--progress %q: want auto, on or off", o.progress)
	}
	// The driver's own checks, before any device is opened: the flatbed's
	// properties are fixed (minidrv's constants), so a refusal here is what
	// the scanner would say, told in terms of the flags.
	p := minidrv.DefaultProperties()
	if err := p.Write(o.properties()...); err != nil {
		return nil, o.flagError(err)
	}
	return o, nil
}

// parseUSBID parses --usb's "VID:PID" (see usb.ParseID).
func parseUSBID(s string) (vid, pid uint16, err error) {
	if vid, pid, ok := usb.ParseID(s); ok {
		return vid, pid, nil
	}
	return 0, 0, usagef("--usb %q: want VID:PID in hex, like 1209:0001", s)
}

// properties are the scan's item properties.
func (o *options) properties() []minidrv.PropValue {
	dt := minidrv.DataGray
	if o.color {
		dt = minidrv.DataColor
	}
	w, h := o.width, o.height
	if w == 0 {
		w = minidrv.MaxPixels(minidrv.BedWidth, o.dpi)
	}
	if h == 0 {
		h = minidrv.MaxPixels(minidrv.BedHeight, o.dpi)
	}
	f := minidrv.FormatRaw
	if o.format.pnm {
		f = minidrv.FormatPNM
	}
	return []minidrv.PropValue{
		{ID: minidrv.PropXResolution, Value: o.dpi},
		{ID: minidrv.PropYResolution, Value: o.dpi},
		{ID: minidrv.PropXPosition, Value: 0},
		{ID: minidrv.PropYPosition, Value: 0},
		{ID: minidrv.PropXExtent, Value: w},
		{ID: minidrv.PropYExtent, Value: h},
		{ID: minidrv.PropDataType, Value: int(dt)},
		{ID: minidrv.PropFormat, Value: int(f)},
	}
}

// flagError turns the driver's refusal of a property into a usage error
// that names the flag the property came from and lists what the flag
// allows. Any other error is returned as it is.
func (o *options) flagError(err error) error {
	pe, ok := errors.AsType[*minidrv.PropertyError](err)
	if !ok {
		return err
	}
	// PropertyError names the property only by its WIA name.
	switch pe.Name {
	case minidrv.PropXResolution.String(), minidrv.PropYResolution.String():
		return usagef("--dpi %d: the scanner supports %s dpi", o.dpi, orList(minidrv.Resolutions()))
	case minidrv.PropXExtent.String():
		return extentError("--width", o.width, "wide", "width", minidrv.BedWidth, o.dpi)
	case minidrv.PropYExtent.String():
		return extentError("--height", o.height, "high", "height", minidrv.BedHeight, o.dpi)
	case minidrv.PropDataType.String():
		return usagef("--mode: the scanner refused the data type %s (allowed: %s)", pe.Value, pe.Allowed)
	case minidrv.PropFormat.String():
		return usagef("--out %s: the scanner refused the format %s (allowed: %s)", o.out, pe.Value, pe.Allowed)
	}
	return usagef("the scanner refused property %s = %s (allowed: %s)", pe.Name, pe.Value, pe.Allowed)
}

// extentError is the usage error of --width or --height v outside the bed.
func extentError(flagName string, v int, adj, noun string, bed, dpi int) error {
	n := minidrv.MaxPixels(bed, dpi)
	return usagef("%s %d: at %d dpi the bed is %d pixels %s: want 1..%d, or 0 for the whole %s",
		flagName, v, dpi, n, adj, n, noun)
}

// orList formats 75, 100, 150 as "75, 100 or 150".
func orList(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// outFormat is the file format --out's extension picks.
type outFormat struct {
	name  string // "PGM", "PPM", "PNM", "PNG"
	pnm   bool   // netpbm: the driver writes the header (minidrv.FormatPNM)
	holds int    // holdsGray, holdsColor or holdsEither
}

const (
	holdsEither = iota
	holdsGray
	holdsColor
)

// formatOf returns the format of file name's extension.
func formatOf(name string) (outFormat, error) {
	switch ext := strings.ToLower(filepath.Ext(name)); ext {
	case ".pgm":
		return outFormat{"PGM", true, holdsGray}, nil
	case ".ppm":
		return outFormat{"PPM", true, holdsColor}, nil
	case ".pnm":
		return outFormat{"PNM", true, holdsEither}, nil
	case ".png":
		return outFormat{"PNG", false, holdsEither}, nil
	default:
		return outFormat{}, usagef("--out %s: unknown extension %q (want .pgm, .ppm, .pnm or .png)", name, ext)
	}
}

// check refuses a mode the format cannot hold.
func (f outFormat) check(name string, color bool) error {
	switch {
	case color && f.holds == holdsGray:
		return usagef("--mode color --out %s: a %s file holds gray images only; for color write .ppm, .pnm or .png", name, f.name)
	case !color && f.holds == holdsColor:
		return usagef("--mode gray --out %s: a %s file holds color images only; for gray write .pgm, .pnm or .png", name, f.name)
	}
	return nil
}

// run is the whole command; sigs delivers Ctrl-C.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		err = scan(o, stdout, stderr, sigs)
	}
	if err == nil {
		return exitOK
	}
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(stderr, "wiascan: %s\nRun wiascan -h for usage.\n", ue.msg)
		return exitUsage
	}
	f, ok := errors.AsType[*failure](err)
	if !ok {
		f = &failure{line: err.Error()} // the text is the whole story
	}
	switch {
	case f.err != nil && o != nil && o.verbose:
		fmt.Fprintf(stderr, "wiascan: %s\n  detail: %v\n", f.line, f.err)
	case f.err != nil && !f.canceled:
		fmt.Fprintf(stderr, "wiascan: %s (-v for the driver's detail)\n", f.line)
	default:
		fmt.Fprintf(stderr, "wiascan: %s\n", f.line)
	}
	if f.canceled {
		return exitCanceled
	}
	return exitFailed
}
