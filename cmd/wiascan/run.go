package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// Exit statuses.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitCanceled = 130 // 128 + SIGINT, as shells report an interrupted command
)

// options are the parsed command line.
type options struct {
	out          string
	format       string // "pnm" or "png"
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
	progress     string // "auto", "on", "off"
}

// parseArgs parses args; errors are usage errors.
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("wiascan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: wiascan --out FILE.{pnm,pgm,ppm,png} [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.out, "out", "", "output `file`; its extension picks the format: .pnm, .pgm, .ppm (netpbm) or .png")
	usbID := fs.String("usb", "", "open the real scanner `VID:PID` (hex) through libusb instead of the simulated one")
	fs.IntVar(&o.dpi, "dpi", 150, "resolution: 75, 100, 150, 200, 300 or 600")
	mode := fs.String("mode", "gray", "`mode`: gray or color")
	fs.IntVar(&o.width, "width", 0, "width in `pixels` (0: the whole bed)")
	fs.IntVar(&o.height, "height", 0, "height in `pixels` (0: the whole bed)")
	fs.Int64Var(&o.hangAfter, "hang-after", 0, "simulated scanner: hang after sending `BYTES` of image data (0: never)")
	fs.Int64Var(&o.bandwidth, "bandwidth", 0, "simulated scanner: cap its data rate at `BYTES` per second (0: no cap)")
	fs.IntVar(&o.queueDepth, "queue-depth", minidrv.DefaultQueueDepth, "bulk-IN transfers kept in flight")
	fs.DurationVar(&o.abortTimeout, "abort-timeout", 250*time.Millisecond, "bound on the abort and flush after a cancel")
	fs.StringVar(&o.progress, "progress", "auto", "progress bar on stderr: auto (if a terminal), on, off")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.out == "" {
		return nil, errors.New("--out FILE is required")
	}
	switch ext := strings.ToLower(filepath.Ext(o.out)); ext {
	case ".pnm", ".pgm", ".ppm":
		o.format = "pnm"
	case ".png":
		o.format = "png"
	default:
		return nil, fmt.Errorf("--out %s: unknown extension %q (want .pnm, .pgm, .ppm or .png)", o.out, ext)
	}
	switch *mode {
	case "gray":
	case "color":
		o.color = true
	default:
		return nil, fmt.Errorf("--mode %q: want gray or color", *mode)
	}
	if *usbID != "" {
		vid, pid, err := parseUSBID(*usbID)
		if err != nil {
			return nil, err
		}
		o.vid, o.pid, o.real = vid, pid, true
		if o.hangAfter != 0 || o.bandwidth != 0 {
			return nil, errors.New("--hang-after and --bandwidth apply to the simulated scanner only, not with --usb")
		}
	}
	switch {
	case o.width < 0 || o.height < 0:
		return nil, fmt.Errorf("--width %d --height %d: must not be negative", o.width, o.height)
	case o.hangAfter < 0:
		return nil, fmt.Errorf("--hang-after %d: must not be negative", o.hangAfter)
	case o.bandwidth < 0:
		return nil, fmt.Errorf("--bandwidth %d: must not be negative", o.bandwidth)
	case o.queueDepth < 1 || o.queueDepth > minidrv.MaxQueueDepth:
		return nil, fmt.Errorf("--queue-depth %d: want 1..%d", o.queueDepth, minidrv.MaxQueueDepth)
	case o.abortTimeout <= 0:
		return nil, fmt.Errorf("--abort-timeout %v: must be positive", o.abortTimeout)
	}
	switch o.progress {
	case "auto", "on", "off":
	default:
		return nil, fmt.Errorf("--progress %q: want auto, on or off", o.progress)
	}
	return o, nil
}

// parseUSBID parses "VID:PID" in hex, like lsusb prints it.
func parseUSBID(s string) (vid, pid uint16, err error) {
	v, p, ok := strings.Cut(s, ":")
	if ok {
		var a, b uint64
		a, err = strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 16)
		if err == nil {
			b, err = strconv.ParseUint(strings.TrimPrefix(p, "0x"), 16, 16)
		}
		if err == nil {
			return uint16(a), uint16(b), nil
		}
	}
	return 0, 0, fmt.Errorf("--usb %q: want VID:PID in hex, like 1209:0001", s)
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
	if o.format == "pnm" {
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

// run is the whole command; sigs delivers Ctrl-C.
func run(args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	o, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "wiascan:", err)
		return exitUsage
	}
	if err := scan(o, stdout, stderr, sigs); err != nil {
		fmt.Fprintln(stderr, "wiascan:", err)
		if errors.Is(err, minidrv.ErrCanceled) {
			return exitCanceled
		}
		return exitFailed
	}
	return exitOK
}

// scan acquires one image into o.out.
func scan(o *options, stdout, stderr io.Writer, sigs <-chan os.Signal) (err error) {
	// The output first: an unwritable file is reported before the scan.
	f, err := os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("open output: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", o.out, cerr)
		}
		if err != nil {
			_ = os.Remove(o.out) // no partial image left behind
		}
	}()

	ring, err := ioring.New(ioring.Config{Entries: 1024})
	if err != nil {
		return fmt.Errorf("I/O engine: %w", err)
	}
	defer ring.Close()
	var open func(context.Context) (*usb.Device, error)
	if o.real {
		open = func(context.Context) (*usb.Device, error) { return usb.Open(ring, o.vid, o.pid) }
	} else {
		sc, err := usbsim.NewScanner(usbsim.Config{Bandwidth: o.bandwidth})
		if err != nil {
			return fmt.Errorf("simulated scanner: %w", err)
		}
		defer sc.Close()
		if o.hangAfter > 0 {
			sc.HangAfter(o.hangAfter)
			defer sc.Resume() // let Uninitialize's close drain
		}
		open = minidrvtest.SimOpener(ring, sc)
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open, QueueDepth: o.queueDepth, AbortTimeout: o.abortTimeout})
	if err != nil {
		return err
	}
	ctx := context.Background()
	if err := d.Initialize(ctx); err != nil {
		if o.real {
			if errors.Is(err, usb.ErrNoUSB) {
				return fmt.Errorf("open scanner %04x:%04x: this system has no USB (no /dev/bus/usb); run without --usb for the simulated scanner: %w", o.vid, o.pid, err)
			}
			return fmt.Errorf("open scanner %04x:%04x: %w", o.vid, o.pid, err)
		}
		return err
	}
	defer d.Uninitialize()
	root, err := d.Items()
	if err != nil {
		return err
	}
	bed := root.Find("Flatbed")
	if err := d.Lock(ctx); err != nil {
		return err
	}
	defer d.Unlock()
	if err := d.WriteItemProperties(bed, o.properties()...); err != nil {
		return err
	}
	p := d.Properties()

	// Ctrl-C: cancel, and time the cancel from the call to the unwound
	// transfer.
	stop := make(chan struct{})
	defer close(stop)
	took := make(chan time.Duration, 1)
	go func() {
		select {
		case <-sigs:
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = d.CancelPendingIO(cctx)
			cancel()
			took <- time.Since(t0)
		case <-stop:
		}
	}()

	bar := newBar(stderr, o.progress)
	w := bufio.NewWriterSize(f, 1<<20)
	var sink io.Writer = w
	var raw []byte
	if o.format == "png" {
		raw = make([]byte, 0, p.ImageSize())
		sink = (*sliceWriter)(&raw)
	}
	t0 := time.Now()
	err = d.AcquireItemData(ctx, bed, sink, bar.update)
	elapsed := time.Since(t0)
	bar.done()
	if errors.Is(err, minidrv.ErrCanceled) {
		// The acquisition returns as it finishes unwinding, just before
		// CancelPendingIO does.
		select {
		case d := <-took:
			fmt.Fprintf(stderr, "wiascan: canceled; CancelPendingIO took %v (from the call until the transfer had unwound)\n", d.Round(time.Microsecond))
		case <-time.After(5 * time.Second):
		}
		return err
	}
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if o.format == "png" {
		if err := png.Encode(w, toImage(p, raw)); err != nil {
			return fmt.Errorf("write %s: %w", o.out, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	fmt.Fprintf(stdout, "%s: %dx%d %s at %d dpi, %d bytes in %v (%.1f MB/s)\n", o.out, p.XExtent, p.YExtent,
		p.DataType, p.XResolution, p.ImageSize(), elapsed.Round(time.Millisecond),
		float64(p.ImageSize())/elapsed.Seconds()/1e6)
	return nil
}

// sliceWriter appends to a slice.
type sliceWriter []byte

func (s *sliceWriter) Write(b []byte) (int, error) {
	*s = append(*s, b...)
	return len(b), nil
}

// toImage wraps raw lines as an image for PNG.
func toImage(p minidrv.Properties, raw []byte) image.Image {
	r := image.Rect(0, 0, p.XExtent, p.YExtent)
	if p.DataType == minidrv.DataColor {
		img := image.NewRGBA(r)
		for i, j := 0, 0; i+2 < len(raw); i, j = i+3, j+4 {
			img.Pix[j], img.Pix[j+1], img.Pix[j+2], img.Pix[j+3] = raw[i], raw[i+1], raw[i+2], 0xff
		}
		return img
	}
	return &image.Gray{Pix: raw, Stride: p.BytesPerLine(), Rect: r}
}

// bar draws a progress bar on a terminal.
type bar struct {
	w    io.Writer
	on   bool
	last int
}

func newBar(w io.Writer, mode string) *bar {
	on := mode == "on"
	if mode == "auto" {
		if f, ok := w.(*os.File); ok {
			on = isTerminal(int(f.Fd()))
		}
	}
	return &bar{w: w, on: on, last: -1}
}

func (b *bar) update(p minidrv.Progress) bool {
	if !b.on || p.Percent == b.last {
		return true
	}
	b.last = p.Percent
	const width = 40
	n := p.Percent * width / 100
	fmt.Fprintf(b.w, "\r[%s%s] %3d%% %6.1f/%.1f MB", strings.Repeat("#", n), strings.Repeat(".", width-n),
		p.Percent, float64(p.Bytes)/1e6, float64(p.Total)/1e6)
	return true
}

func (b *bar) done() {
	if b.on && b.last >= 0 {
		fmt.Fprintln(b.w)
	}
}
