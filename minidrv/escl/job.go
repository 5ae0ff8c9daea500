package escl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/minidrv"
)

// Outcome is how a job ended.
type Outcome uint8

// The outcomes of a job.
const (
	// OutcomeDelivered: the page was scanned and sent whole.
	OutcomeDelivered Outcome = iota + 1
	// OutcomeCanceled: a DELETE, a dropped connection or Shutdown canceled
	// the job (see Cause).
	OutcomeCanceled
	// OutcomeFailed: the scan failed (the driver's error is in Err).
	OutcomeFailed
	// OutcomeExpired: the page was scanned but not fetched within
	// Config.JobTimeout.
	OutcomeExpired
)

// String returns "delivered", "canceled", "failed", "expired", or
// "Outcome(n)".
func (o Outcome) String() string {
	switch o {
	case OutcomeDelivered:
		return "delivered"
	case OutcomeCanceled:
		return "canceled"
	case OutcomeFailed:
		return "failed"
	case OutcomeExpired:
		return "expired"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Cause is what canceled a job.
type Cause uint8

// The causes of a cancel.
const (
	// CauseNone: the job was not canceled.
	CauseNone Cause = iota
	// CauseDelete: the client sent DELETE for the running job.
	CauseDelete
	// CauseClientGone: the client dropped its NextDocument connection.
	CauseClientGone
	// CauseShutdown: Handler.Shutdown.
	CauseShutdown
)

// String returns "none", "delete", "client gone", "shutdown", or
// "Cause(n)".
func (c Cause) String() string {
	switch c {
	case CauseNone:
		return "none"
	case CauseDelete:
		return "delete"
	case CauseClientGone:
		return "client gone"
	case CauseShutdown:
		return "shutdown"
	}
	return fmt.Sprintf("Cause(%d)", uint8(c))
}

// JobReport describes a job that is over: its settings, its outcome and
// its timings. Times a job did not reach are zero.
type JobReport struct {
	ID       string
	Settings Settings
	Outcome  Outcome
	Cause    Cause // CauseNone unless Outcome is OutcomeCanceled
	// Err is the acquisition's error: nil when delivered, one for which
	// errors.Is(err, minidrv.ErrCanceled) holds when the cancel stopped a
	// running acquisition, the failure otherwise.
	Err   error
	Bytes int // the encoded document's size, 0 if none was made

	Created   time.Time // the POST
	ScanStart time.Time // AcquireItemData called
	ScanEnd   time.Time // AcquireItemData returned
	Idle      time.Time // the driver unlocked (idle) after the scan
	Encoded   time.Time // the document was ready to send
	Delivered time.Time // the document was sent whole
	End       time.Time // the job was over

	// CancelAt is when the cancel arrived (the DELETE, the dropped
	// connection seen, Shutdown called).
	CancelAt time.Time
	// CancelCalled reports whether CancelPendingIO was called (the cancel
	// came while the scan ran); CancelTook is how long it took, and
	// CancelErr what it returned.
	CancelCalled bool
	CancelTook   time.Duration
	CancelErr    error
}

// jobState is where a job is.
type jobState uint8

const (
	jobScanning  jobState = iota // the acquisition runs
	jobReady                     // the document waits for NextDocument
	jobSending                   // NextDocument is sending it
	jobDelivered                 // sent whole (final)
	jobCanceled                  // final
	jobFailed                    // final
	jobExpired                   // final
)

// final reports whether the job is over.
func (s jobState) final() bool { return s >= jobDelivered }

// job is one scan job, from its POST until it is over.
type job struct {
	id      string
	set     Settings
	created time.Time

	cancelCtx  context.Context    // done at the job's cancel
	cancelFn   context.CancelFunc // called once, under Handler.mu, by Handler.cancel
	cancelDone chan struct{}      // closed when Handler.cancel has returned from CancelPendingIO
	scanned    chan struct{}      // closed when the scan (and encoding) ended, whatever the outcome
	idle       chan struct{}      // closed when the driver was unlocked after the scan
	overOnce   sync.Once
	over       chan struct{} // closed by finish: a send of the document ended

	// Guarded by Handler.mu:
	state        jobState
	acquiring    bool // AcquireItemData runs (or is about to)
	cause        Cause
	doc          []byte
	docSize      int
	err          error
	scanStart    time.Time
	scanEnd      time.Time
	idleAt       time.Time
	encoded      time.Time
	delivered    time.Time
	end          time.Time
	cancelAt     time.Time
	cancelCalled time.Time
	cancelTook   time.Duration
	cancelErr    error
	// sendRC is the connection of the NextDocument that sends the
	// document, while it does (jobSending): Handler.cancel cuts the
	// send through it, and marks it cut (cut), which the sender checks
	// between chunks.
	sendRC *http.ResponseController
	cut    atomic.Bool
	// progress is when the send of the document last began a chunk;
	// unbounded, that its connection takes no write deadline (the
	// ResponseWriter hides it), so that neither JobTimeout nor a cancel
	// can end a write stuck on a client that does not read.
	progress  time.Time
	unbounded bool
}

// sendChunk is how much of the document NextDocument writes between two
// looks at job.cut.
const sendChunk = 64 << 10

// errSendCut ends a send that a cancel cut between two chunks.
var errSendCut = errors.New("escl: the send was cut by a cancel")

func newJob(set Settings) *job {
	ctx, cancel := context.WithCancel(context.Background())
	return &job{
		id: newUUID(), set: set, created: time.Now(),
		cancelCtx: ctx, cancelFn: cancel,
		cancelDone: make(chan struct{}),
		scanned:    make(chan struct{}),
		idle:       make(chan struct{}),
		over:       make(chan struct{}),
	}
}

// finish tells the job's goroutine that a send of its document ended
// (delivered, or failed and the job canceled).
func (j *job) finish() { j.overOnce.Do(func() { close(j.over) }) }

// run is the job: it scans (the driver is locked already), unlocks the
// driver, encodes the document, waits for it to be fetched, logs the job
// and returns its report.
func (h *Handler) run(j *job) JobReport {
	defer h.wg.Done()
	p := h.d.Properties()
	raw := make(sliceWriter, 0, p.ImageSize())
	h.mu.Lock()
	j.scanStart = time.Now()
	j.acquiring = true
	h.mu.Unlock()
	// The progress callback sees a cancel that came before the acquisition
	// started, when CancelPendingIO had nothing to cancel yet.
	err := h.d.AcquireItemData(context.Background(), h.bed, &raw, func(minidrv.Progress) bool {
		return j.cancelCtx.Err() == nil
	})
	scanEnd := time.Now()
	h.mu.Lock()
	j.acquiring = false
	h.mu.Unlock()
	if j.cancelCtx.Err() != nil {
		// A cancel that found this job acquiring calls CancelPendingIO
		// after it let go of h.mu, bounded by CancelTimeout: it must land
		// while this job still holds the driver's lock, where it finds
		// nothing to cancel, and not on the next job's acquisition (a
		// POST may lock the driver as soon as this job unlocks it).
		<-j.cancelDone
	}
	uerr := h.d.Unlock()
	idleAt := time.Now()
	h.mu.Lock()
	if j.cause != CauseNone && h.active == j {
		// Canceled: nothing left of it needs the scanner (no document to
		// encode or deliver), and a DELETE answers at idle: a POST that
		// comes once it answered must get the scanner, not 503 busy.
		h.active = nil
	}
	h.mu.Unlock()
	close(j.idle)
	if err == nil && uerr != nil {
		err = fmt.Errorf("unlock the driver: %w", uerr)
	}

	var doc []byte
	var encoded time.Time
	if err == nil && j.cancelCtx.Err() == nil {
		var b bytes.Buffer
		b.Grow(len(raw) / 2)
		if eerr := h.encode(cancelWriter{&b, j.cancelCtx}, j.set, p, raw); eerr != nil && j.cancelCtx.Err() == nil {
			err = fmt.Errorf("encode %s: %w", j.set.Format, eerr)
		}
		doc, encoded = b.Bytes(), time.Now()
	}
	raw = nil

	h.mu.Lock()
	j.scanEnd, j.idleAt, j.err = scanEnd, idleAt, err
	switch {
	case j.cause != CauseNone:
		j.state = jobCanceled
	case err != nil:
		j.state = jobFailed
	default:
		j.state, j.doc, j.docSize, j.encoded = jobReady, doc, len(doc), encoded
	}
	ready := j.state == jobReady
	close(j.scanned)
	h.mu.Unlock()

	if ready {
		h.awaitDelivery(j)
	}
	if j.cancelCtx.Err() != nil {
		<-j.cancelDone // the cancel's CancelPendingIO is bounded by CancelTimeout
	}

	h.mu.Lock()
	if j.cause != CauseNone && (j.state == jobReady || j.state == jobSending || j.state == jobCanceled) {
		j.state = jobCanceled
	}
	j.doc = nil
	j.end = time.Now()
	if h.active == j {
		h.active = nil
	}
	rep := j.reportLocked()
	j.cancelFn() // release the context's resources
	h.mu.Unlock()

	h.logJob(rep)
	return rep
}

// jobDone calls Config.OnJobDone, if any, with rep. The job is over and
// the handler consistent already: a panic in the callback is logged, not
// allowed to end the process from a goroutine the caller did not start.
func (h *Handler) jobDone(rep JobReport) {
	if h.cfg.OnJobDone == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			h.cfg.Log.Error("escl: OnJobDone panicked", "job", rep.ID, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	h.cfg.OnJobDone(rep)
}

// awaitDelivery waits until j's document is delivered, the job canceled,
// or the document waited JobTimeout without being fetched (expired). A
// send in progress is waited for: it decides the outcome. Its connection's
// write deadline (JobTimeout per chunk) bounds it, and a cancel cuts it at
// once. Without deadlines (a ResponseWriter that hides the connection), a
// write stuck on a client that does not read could last for ever: such a
// send is given up after JobTimeout without a new chunk (the job is
// canceled, as for a client gone), or CancelTimeout after a cancel, and
// the scanner taken back; the stuck write ends when the connection does.
func (h *Handler) awaitDelivery(j *job) {
	t := time.NewTimer(h.cfg.JobTimeout)
	defer t.Stop()
	canceled := j.cancelCtx.Done()
	for {
		select {
		case <-j.over:
			return
		case <-canceled:
			h.mu.Lock()
			sending, unbounded := j.state == jobSending, j.unbounded
			h.mu.Unlock()
			switch {
			case !sending:
				return
			case !unbounded:
				<-j.over // the cancel ends the write at once
				return
			}
			// The cut stops the send before its next chunk: wait
			// that long, within CancelTimeout.
			canceled = nil
			t.Reset(h.cfg.CancelTimeout)
		case <-t.C:
			if canceled == nil {
				return // canceled, and the send is stuck in a write: give it up
			}
			h.mu.Lock()
			switch {
			case j.state == jobReady: // not being sent: drop it
				j.state = jobExpired
				h.mu.Unlock()
				return
			case j.state == jobSending && j.unbounded:
				if left := h.cfg.JobTimeout - time.Since(j.progress); left > 0 {
					h.mu.Unlock()
					t.Reset(left)
					continue
				}
				h.mu.Unlock()
				h.cancel(j, CauseClientGone) // stuck for JobTimeout: give it up
				return
			}
			h.mu.Unlock()
			t.Reset(h.cfg.JobTimeout) // being sent: wait for the end
		}
	}
}

// reportLocked returns j's report. Handler.mu held.
func (j *job) reportLocked() JobReport {
	r := JobReport{
		ID: j.id, Settings: j.set, Cause: j.cause, Err: j.err, Bytes: j.docSize,
		Created: j.created, ScanStart: j.scanStart, ScanEnd: j.scanEnd, Idle: j.idleAt,
		Encoded: j.encoded, Delivered: j.delivered, End: j.end, CancelAt: j.cancelAt,
		CancelCalled: !j.cancelCalled.IsZero(), CancelTook: j.cancelTook, CancelErr: j.cancelErr,
	}
	switch j.state {
	case jobDelivered:
		r.Outcome = OutcomeDelivered
	case jobCanceled:
		r.Outcome = OutcomeCanceled
	case jobExpired:
		r.Outcome = OutcomeExpired
	default:
		r.Outcome = OutcomeFailed
	}
	if r.Outcome != OutcomeCanceled {
		r.Cause = CauseNone
	}
	return r
}

// infoLocked returns j's entry in ScannerStatus. Handler.mu held.
func (j *job) infoLocked(prefix string, now time.Time) jobInfo {
	ji := jobInfo{
		URI: prefix + "/ScanJobs/" + j.id, UUID: j.id,
		Age: int(now.Sub(j.created) / time.Second), ImagesToTransfer: 1,
	}
	switch {
	case j.state == jobDelivered:
		ji.State, ji.Reasons = "Completed", []string{"JobCompletedSuccessfully"}
		ji.ImagesCompleted, ji.ImagesToTransfer = 1, 0
	case j.state == jobCanceled:
		ji.State, ji.Reasons, ji.ImagesToTransfer = "Canceled", []string{"JobCanceledByUser"}, 0
	case j.state == jobFailed:
		ji.State, ji.Reasons, ji.ImagesToTransfer = "Aborted", []string{"AbortedBySystem"}, 0
	case j.state == jobExpired:
		ji.State, ji.Reasons, ji.ImagesToTransfer = "Aborted", []string{"JobTimedOut"}, 0
	case j.cause != CauseNone:
		ji.State, ji.Reasons = "Processing", []string{"ProcessingToStopPoint"}
	case j.state == jobScanning:
		ji.State, ji.Reasons = "Processing", []string{"JobScanning"}
	default:
		ji.State, ji.Reasons, ji.ImagesCompleted = "Processing", []string{"JobTransferring"}, 1
	}
	return ji
}

// logJob writes the job's line with its timings.
func (h *Handler) logJob(r JobReport) {
	ms := func(from, to time.Time) string {
		if from.IsZero() || to.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.2fms", float64(to.Sub(from))/1e6)
	}
	args := []any{
		"job", r.ID, "outcome", r.Outcome.String(),
		"settings", fmt.Sprintf("%s %dx%d px at %dx%d dpi, %s", r.Settings.ColorMode, r.Settings.Width, r.Settings.Height,
			r.Settings.XResolution, r.Settings.YResolution, r.Settings.Format),
		"bytes", r.Bytes,
		"scan", ms(r.ScanStart, r.ScanEnd), "encode", ms(r.ScanEnd, r.Encoded),
		"deliver", ms(r.Encoded, r.Delivered), "total", ms(r.Created, r.End),
	}
	if r.Outcome == OutcomeCanceled {
		args = append(args, "cause", r.Cause.String())
		if r.CancelCalled { // canceled while scanning
			args = append(args, "cancel_to_idle", ms(r.CancelAt, r.Idle),
				"cancel_pending_io", fmt.Sprintf("%.3fms", float64(r.CancelTook)/1e6))
		}
	}
	if r.Err != nil && !errors.Is(r.Err, minidrv.ErrCanceled) {
		args = append(args, "err", r.Err.Error())
	}
	h.cfg.Log.Info("escl: job", args...)
}

// encode writes the raw image as set.Format.
func (h *Handler) encode(w io.Writer, set Settings, p minidrv.Properties, raw []byte) error {
	img := toImage(p, raw)
	if set.Format == MIMEJPEG {
		return jpeg.Encode(w, img, &jpeg.Options{Quality: h.cfg.JPEGQuality})
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return enc.Encode(w, img)
}

// toImage wraps (gray) or converts (colour, black and white) the driver's
// raw lines as an image. Black and white has 1 bit per pixel, most
// significant first, 1 for black (as in netpbm's P4, the driver's PNM).
func toImage(p minidrv.Properties, raw []byte) image.Image {
	w, h, bpl := p.XExtent, p.YExtent, p.BytesPerLine()
	r := image.Rect(0, 0, w, h)
	switch p.DataType {
	case minidrv.DataColor:
		img := image.NewNRGBA(r)
		for y := range h {
			src := raw[y*bpl : y*bpl+3*w]
			dst := img.Pix[y*img.Stride : y*img.Stride+4*w]
			for x := range w {
				dst[4*x], dst[4*x+1], dst[4*x+2], dst[4*x+3] = src[3*x], src[3*x+1], src[3*x+2], 0xff
			}
		}
		return img
	case minidrv.DataBW:
		img := image.NewGray(r)
		for y := range h {
			src := raw[y*bpl : (y+1)*bpl]
			dst := img.Pix[y*img.Stride : y*img.Stride+w]
			for x := range w {
				if src[x/8]&(0x80>>(x%8)) == 0 {
					dst[x] = 0xff
				}
			}
		}
		return img
	}
	return &image.Gray{Pix: raw[:bpl*h], Stride: bpl, Rect: r}
}

// sliceWriter appends to a slice.
type sliceWriter []byte

func (s *sliceWriter) Write(b []byte) (int, error) {
	*s = append(*s, b...)
	return len(b), nil
}

// cancelWriter fails once ctx is done, so a canceled job stops encoding.
type cancelWriter struct {
	w   io.Writer
	ctx context.Context
}

func (c cancelWriter) Write(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(b)
}
