package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb"
)

// scan acquires one image into o.out. Its errors are a *failure, a
// *usageError, or an error whose text is the whole story.
func scan(o *options, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
	// The output first: an unwritable directory is reported before the
	// scan. An existing --out is replaced only by a complete image.
	out, err := createOutput(o.out)
	if err != nil {
		return fmt.Errorf("open output: %w", err)
	}
	defer out.discard() // after a failure or a cancel

	ring, err := ioring.New(ioring.Config{Entries: 1024})
	if err != nil {
		return fmt.Errorf("I/O engine: %w", err)
	}
	defer ring.Close()
	var open func(context.Context) (*usb.Device, error)
	if o.real {
		// The usb package's default backend (usbfs on Linux, unless
		// CANCELIO_USB says otherwise), with the zero-length packet a real
		// device needs after a bulk OUT of whole packets (minidrv.Config.Open).
		open = func(context.Context) (*usb.Device, error) {
			return usb.Open(ring, o.vid, o.pid, usb.WithZeroPacket())
		}
	} else {
		var release func()
		if open, release, err = simOpener(ring, o); err != nil {
			return err
		}
		defer release()
	}
	stall := o.stallTimeout
	if stall == 0 {
		stall = -1 // the driver's "wait for ever"
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: open, QueueDepth: o.queueDepth,
		AbortTimeout: o.abortTimeout, StallTimeout: stall})
	if err != nil {
		return err
	}

	// Ctrl-C: CancelPendingIO, timed from the call until it returns; then
	// the context, which also ends a wait in Initialize or Lock and
	// cancels an acquisition that had not started yet when the
	// CancelPendingIO came.
	ctx, cancelCtx := context.WithCancel(context.Background())
	defer cancelCtx()
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-stopped // no CancelPendingIO after the ring is closed
	}()
	var took atomic.Int64 // ns CancelPendingIO took; 0: not called or not returned
	var cancelErr atomic.Pointer[error]
	go func() {
		defer close(stopped)
		select {
		case <-sigs:
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := d.CancelPendingIO(cctx); err != nil {
				cancelErr.Store(&err)
			}
			cancel()
			took.Store(int64(max(time.Since(t0), 1)))
			cancelCtx()
		case <-stop:
		}
	}()
	canceled := func(err error, at string) error {
		line := "canceled" + at
		if t := waitTook(&took); t > 0 {
			line += fmt.Sprintf("; CancelPendingIO returned in %v", t.Round(time.Microsecond))
		}
		if p := cancelErr.Load(); p != nil {
			err = errors.Join(err, fmt.Errorf("CancelPendingIO: %w", *p))
		}
		return &failure{line: line, err: err, canceled: true}
	}

	if err := d.Initialize(ctx); err != nil {
		if ctx.Err() != nil {
			return canceled(err, " while opening the scanner")
		}
		if o.real {
			if errors.Is(err, usb.ErrNoUSB) {
				return &failure{line: fmt.Sprintf("open scanner %04x:%04x: this system has no USB (no /dev/bus/usb); run without --usb for the simulated scanner", o.vid, o.pid), err: err}
			}
			return describe(err, o, fmt.Sprintf("open scanner %04x:%04x", o.vid, o.pid), false, nil)
		}
		return describe(err, o, "open the simulated scanner", false, nil)
	}
	defer d.Uninitialize()
	root, err := d.Items()
	if err != nil {
		return err
	}
	bed := root.Find("Flatbed")
	if err := d.Lock(ctx); err != nil {
		if ctx.Err() != nil {
			return canceled(err, " while locking the scanner")
		}
		return err
	}
	defer d.Unlock()
	if err := d.WriteItemProperties(bed, o.properties()...); err != nil {
		return o.flagError(err)
	}
	p := d.Properties()

	w := bufio.NewWriterSize(out.f, 1<<20)
	var raw []byte
	sink := &recordingWriter{w: w}
	if !o.format.pnm {
		raw = make([]byte, 0, p.ImageSize())
		sink.w = (*sliceWriter)(&raw)
	}
	line := newProgressLine(stderr, o.progress, o.stallTimeout)
	line.start()
	t0 := time.Now()
	err = d.AcquireItemData(ctx, bed, sink, line.update)
	elapsed := time.Since(t0)
	last, quiet := line.finish()
	at := fmt.Sprintf(" at %d%% (%.1f of %.1f MB)", last.Percent, float64(last.Bytes)/1e6, float64(last.Total)/1e6)
	if errors.Is(err, minidrv.ErrCanceled) {
		return canceled(err, at)
	}
	if err != nil {
		return describe(err, o, "scan failed"+at, stalled(o.stallTimeout, quiet), sink.err)
	}
	if !o.format.pnm {
		// A scan is large and compresses little: speed over size.
		enc := png.Encoder{CompressionLevel: png.BestSpeed}
		if err := enc.Encode(w, toImage(p, raw)); err != nil {
			return fmt.Errorf("write %s: %w", o.out, err)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := out.commit(); err != nil {
		return err
	}
	// The image is saved: a summary that cannot be printed (stdout on a
	// full disk, a closed pipe) still fails the command, saying so.
	if _, err := fmt.Fprintf(stdout, "%s: %s, %dx%d %s at %d dpi, %d bytes of image in %v (%.1f MB/s)\n", o.out, o.format.name,
		p.XExtent, p.YExtent, p.DataType, p.XResolution, p.ImageSize(), elapsed.Round(time.Millisecond),
		float64(p.ImageSize())/elapsed.Seconds()/1e6); err != nil {
		return fmt.Errorf("%s written, but its summary could not be: %w", o.out, err)
	}
	return nil
}

// waitTook returns how long CancelPendingIO took, waiting for it a little:
// the acquisition may return before the CancelPendingIO that stopped it.
func waitTook(took *atomic.Int64) time.Duration {
	deadline := time.Now().Add(5 * time.Second)
	for took.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return time.Duration(took.Load())
}

// recordingWriter passes writes on and keeps the first error, so that a
// failure of the output itself is told from the scanner's.
type recordingWriter struct {
	w   io.Writer
	err error
}

func (r *recordingWriter) Write(b []byte) (int, error) {
	n, err := r.w.Write(b)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n, err
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
