package minidrv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv/scanproto"
	"github.com/cancelio/cancelio/usb"
)

// ScanParams returns the scan the device is asked for to deliver p's image.
// seed is the job's value in the start command (scanproto.ScanParams.Seed):
// the driver sends the number of acquisitions it started before, 0, 1, ...
//
// It refuses properties that Validate refuses (a resolution not in
// Resolutions, a window off the bed, a negative or zero extent, an unknown
// data type...), and any value outside what the start command carries
// (scanproto's MinDPI..MaxDPI, 1..MaxPixels), so that no value is
// truncated on its way to the device. The error wraps both the
// *PropertyError naming the property (so errors.Is(err,
// ErrInvalidProperty) holds and HResult is E_INVALIDARG) and
// ioring.ErrInvalid. The driver's own properties always pass: Write
// validates every change.
func ScanParams(p Properties, seed uint64) (scanproto.ScanParams, error) {
	if err := p.Validate(); err != nil {
		return scanproto.ScanParams{}, scanParamsErr(err)
	}
	return deviceParams(p, seed)
}

// deviceParams converts p for the start command, each value checked
// against the command's range before its conversion. Properties that
// Validate accepts are within it (at most 600 dpi, and a window on the
// bed); the check keeps a wider range of properties from wrapping.
func deviceParams(p Properties, seed uint64) (scanproto.ScanParams, error) {
	switch {
	case p.XResolution < scanproto.MinDPI || p.XResolution > scanproto.MaxDPI:
		return scanproto.ScanParams{}, scanParamsErr(propErr(PropXResolution, p.XResolution, fmt.Sprintf("%d..%d for the device", scanproto.MinDPI, scanproto.MaxDPI)))
	case p.XExtent < 1 || p.XExtent > scanproto.MaxPixels:
		return scanproto.ScanParams{}, scanParamsErr(propErr(PropXExtent, p.XExtent, fmt.Sprintf("1..%d for the device", scanproto.MaxPixels)))
	case p.YExtent < 1 || p.YExtent > scanproto.MaxPixels:
		return scanproto.ScanParams{}, scanParamsErr(propErr(PropYExtent, p.YExtent, fmt.Sprintf("1..%d for the device", scanproto.MaxPixels)))
	}
	var f scanproto.Format
	switch p.DataType {
	case DataBW:
		f = scanproto.FormatBW1
	case DataGray:
		f = scanproto.FormatGray8
	case DataColor:
		f = scanproto.FormatRGB24
	default:
		return scanproto.ScanParams{}, scanParamsErr(propErr(PropDataType, int(p.DataType), fmt.Sprintf("%d (bw), %d (gray), %d (color)", DataBW, DataGray, DataColor)))
	}
	return scanproto.ScanParams{
		DPI:    uint16(p.XResolution),
		Width:  uint32(p.XExtent),
		Height: uint32(p.YExtent),
		Format: f,
		Seed:   seed,
	}, nil
}

// scanParamsErr is ScanParams' refusal of the property error perr.
func scanParamsErr(perr error) error {
	return fmt.Errorf("minidrv: scan parameters: %w: %w", ioring.ErrInvalid, perr)
}

// ChunkSize returns the size of one transfer of an acquisition with
// properties p: p.BufferSize, or less for a small image, so that the image
// takes at least MinProgressReports chunks, but never below BufferAlign.
// Each chunk is written to the sink with one Write; only the image's last
// chunk may be shorter. It does not overflow for properties Validate would
// refuse (an ImageSize up to math.MaxInt64 included).
func ChunkSize(p Properties) int {
	size := p.ImageSize()
	// Rounded up without adding first: size may be near math.MaxInt64.
	per := size / MinProgressReports
	if size%MinProgressReports != 0 {
		per++
	}
	per = (per + BufferAlign - 1) / BufferAlign * BufferAlign // per <= MaxInt64/10+1: no overflow
	return int(max(min(int64(p.BufferSize), per), BufferAlign))
}

// AcquireItemData is drvAcquireItemData: it scans the flatbed item with the
// properties in force when it starts and streams the image to sink, after
// the PNM header if Format is FormatPNM. The driver must be Locked (it is
// Transferring meanwhile and Locked again after). It first waits, under
// ctx, for the device to recover from the previous acquisition (see
// CancelPendingIO).
//
// The image moves in chunks of ChunkSize bytes through QueueDepth
// overlapped bulk-IN transfers kept in flight; each chunk is written to
// sink with one Write, in order. progress, if not nil, is called from the
// calling goroutine before the first transfer, after every chunk and at
// least once per ProgressInterval; Percent never decreases and reaches 100
// only on success. progress returning false cancels, as S_FALSE does in WIA.
//
// A cancel (progress, CancelPendingIO, EventCancelIO, or ctx ending) stops
// every transfer at once; once each of them has delivered its completion
// the driver is Locked again, and the acquisition returns an error for
// which errors.Is(err, ErrCanceled) holds (HResult: S_FALSE). When ctx
// ended it, the error also wraps ctx's error, and ioring.ErrTimeout for a
// deadline (ioring.ErrCanceled otherwise), as a request of the ring its
// context ends does; a ctx that has already ended starts nothing and
// fails the same way. The sink then holds whole chunks only, and no chunk
// arrives after the cancel. A cancel that comes after the last chunk was
// written loses the race: the acquisition succeeds. The device's recovery
// (abort of the job, flush of its IN pipe, reset and resynchronization if
// it does not answer) runs after the return, in the background; the next
// Lock or acquisition waits for it.
//
// Other errors: the state's refusals (ErrNotLocked, ErrBusy, ErrOffline,
// ErrNotInitialized), properties ScanParams refuses (which Write never
// lets in; nothing starts and the driver stays Locked), ErrNotRecovered
// when the device did not recover from an earlier acquisition (or ctx
// ended while it was recovering), ErrOffline when the device is removed
// or suspended meanwhile, ErrDeviceCommunication when a transfer fails or
// no data comes for StallTimeout (a halt the device raised on its IN pipe
// while idle, after a clean acquisition, fails the next one so, wrapping
// usb.ErrStall: that one's recovery clears it, and the one after runs),
// and the sink's own error. In each case
// the driver ends Locked, or Removed or Suspended after such an event. A
// nil ctx, item or sink fails with E_INVALIDARG before anything starts.
//
// A panic in the progress callback or the sink (or runtime.Goexit there)
// ends the acquisition as a failed one, as above, before it goes on up to
// the caller: the driver is not left Transferring.
func (d *Driver) AcquireItemData(ctx context.Context, item *Item, sink io.Writer, progress func(Progress) bool) (err error) {
	if !d.made() {
		return d.errNotMade()
	}
	if ctx == nil {
		return errInvalidArg.Wrap(errors.New("nil context"))
	}
	if err := checkItem(item); err != nil {
		return err
	}
	if sink == nil {
		return errInvalidArg.Wrap(errors.New("nil sink"))
	}
	if _, _, err := Transition(d.m.State(), Acquire); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		// A context that has already ended starts nothing: the watch
		// below (context.AfterFunc) runs its cancel on a goroutine of its
		// own, which this one could outrun to the start command.
		return ctxCanceled(err)
	}
	if err := d.lockDevice(ctx); err != nil {
		return err
	}
	a, err := d.newAcquisition(ctx, sink, progress)
	if err != nil {
		// Nothing started: the driver stays Locked.
		d.unlockIO()
		return err
	}
	// The cancel runs in whoever fires the transition (Machine runs it
	// outside its lock, right after).
	if err := d.m.BeginTransfer(a.machineCancel); err != nil {
		d.mu.Lock()
		d.cur = nil
		d.mu.Unlock()
		d.unlockIO()
		return err
	}
	stopCtx := context.AfterFunc(ctx, a.ctxCancel)
	// Deferred, so that a panic or runtime.Goexit in the progress callback
	// or the sink ends the acquisition too (complete is false then): the
	// driver Locked again and ioSem released, or the device handed to its
	// recovery, whatever run was doing.
	complete := false
	defer func() {
		stopCtx()
		err = a.result(complete)
		d.endAcquisition(a, complete)
	}()
	complete = a.run()
	return nil
}

// newAcquisition makes the acquisition of the properties in force, which
// ctx's end cancels (ctxCancel), and makes it the current one, or returns
// ScanParams' refusal of them (which Write's validation makes unreachable)
// and changes nothing. ioSem held.
func (d *Driver) newAcquisition(ctx context.Context, sink io.Writer, progress func(Progress) bool) (*acquisition, error) {
	a := &acquisition{
		d:        d,
		tok:      d.cfg.Ring.NewToken(),
		sink:     sink,
		progress: progress,
		stopped:  make(chan struct{}),
		unwound:  make(chan struct{}),
	}
	a.ctx = ctx
	a.ctxCancel = func() { a.stop(causeCanceled, ctxCanceled(ctx.Err())) }
	d.mu.Lock()
	params, err := ScanParams(d.props, d.scans)
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	a.p, a.params = d.props, params
	a.dev, a.out, a.in, a.dirty = d.dev, d.out, d.in, d.dirty
	d.scans++
	d.cur = a
	d.mu.Unlock()
	a.total = a.p.ImageSize()
	return a, nil
}

// endAcquisition forgets the current acquisition and hands the device to
// its recovery when the transfer's end asked for one (ActionRecover) and a
// job may have started on the device; otherwise it releases ioSem.
func (d *Driver) endAcquisition(a *acquisition, complete bool) {
	d.mu.Lock()
	d.cur = nil
	recover := !complete && a.started && a.recover && d.m.State() != Removed
	d.recovering = recover
	d.mu.Unlock()
	if recover {
		go d.recoverFn()
		return
	}
	d.unlockIO()
}

// errCanceledIO is the result of a canceled acquisition, made once so that
// the cancel path does not allocate. An acquisition its context ended
// returns ctxCanceled's error instead.
var errCanceledIO = ErrCanceled.Wrap(ioring.ErrCanceled)

// ctxCanceled is the result of an acquisition that the end of its context
// canceled, or did not start, err being the context's error: ErrCanceled
// (S_FALSE) wrapping ioring.ErrTimeout for a deadline (ioring.ErrCanceled
// otherwise) and err, so that errors.Is finds each of them, as it does in
// the error of a ring request its context ends (docs/contract.md).
func ctxCanceled(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrCanceled.Wrap(fmt.Errorf("%w: %w", ioring.ErrTimeout, err))
	}
	return ErrCanceled.Wrap(fmt.Errorf("%w: %w", ioring.ErrCanceled, err))
}

// errUnexpectedData is the cause of a device that sent what was not asked
// for.
var errUnexpectedData = errors.New("unexpected data from the device")

// cause is what stopped an acquisition first.
type cause uint8

const (
	causeNone     cause = iota
	causeCanceled       // EventCancelIO, CancelPendingIO, the progress callback, ctx
	causeOffline        // removal or suspend
	causeFailed         // a transfer, the sink or the device failed
)

// acquisition is one AcquireItemData call, from BeginTransfer until it
// returns.
//
// Its I/O is counted (begin, end): once it is stopped and every I/O has
// delivered its completion, whichever goroutine sees that last (the one
// that stops it, or the one that receives the last completion) ends the
// transfer in the state machine and closes unwound (see unwind). That
// never waits for the acquiring goroutine, so CancelPendingIO returns in
// the time the completions take, even when called from the progress
// callback or the sink, which the acquiring goroutine is running.
type acquisition struct {
	d         *Driver
	tok       *ioring.Token // covers every transfer of the acquisition
	sink      io.Writer
	progress  func(Progress) bool
	ctx       context.Context // the acquisition's; report looks at it after the callback
	ctxCancel func()          // stop(causeCanceled, ctxCanceled(ctx.Err())), for context.AfterFunc

	// Set before it starts, read-only after.
	p       Properties
	params  scanproto.ScanParams
	total   int64 // image bytes
	dev     *usb.Device
	out, in *usb.Endpoint
	dirty   bool // resynchronize the device before the scan

	streaming atomic.Bool   // the stream's transfers are being submitted (for tests)
	stopped   chan struct{} // closed by the first stop
	unwound   chan struct{} // closed once stopped and no I/O is pending, the transfer ended in the machine

	mu      sync.Mutex
	halted  bool   // stop was called, or the acquisition completed; guarded by mu
	pending int    // I/O started whose completion was not delivered yet; guarded by mu
	why     cause  // written with halted; read after stopped or unwound is closed
	err     error  // the error of causeOffline and causeFailed, and of ctx's cancel; as why
	recover bool   // the transition that ended the transfer was ActionRecover; written before unwound is closed
	started bool   // a job may have started on the device; the acquiring goroutine's
	pump    pump   // the acquiring goroutine's
	sent    int64  // image bytes written to the sink; the acquiring goroutine's
	carry   []byte // received, not yet a whole chunk; the acquiring goroutine's

	lastReport, lastData time.Time // the acquiring goroutine's
}

// run runs the acquisition until the image is complete or it stops, and
// reports whether the whole image went to the sink.
func (a *acquisition) run() (complete bool) {
	if !a.prepare() {
		return false
	}
	a.started = true
	if !a.startJob() {
		return false
	}
	return a.stream()
}

// prepare reports 0% (which may cancel before anything reaches the
// device), writes the image header and resynchronizes a device that may
// hold stale data. It reports whether the acquisition goes on.
func (a *acquisition) prepare() bool {
	a.report()
	if a.isStopped() {
		return false
	}
	if hdr := a.p.Header(); hdr != nil && !a.write(hdr) {
		return false
	}
	if !a.dirty {
		return true
	}
	if !a.begin() {
		return false
	}
	err := a.d.resync(a.dev, a.out, a.in, a.tok, time.Now().Add(a.d.cfg.AbortTimeout))
	a.end()
	if err != nil {
		if errors.Is(err, usb.ErrNoDevice) || (errors.Is(err, ioring.ErrCanceled) && a.isStopped()) {
			a.d.ioFailed(a, "resynchronize the device", err)
		} else {
			a.stop(causeFailed, ErrNotRecovered.Wrap(fmt.Errorf("resynchronize the device within %v: %w", a.d.cfg.AbortTimeout, err)))
		}
		return false
	}
	a.d.mu.Lock()
	a.d.dirty, a.d.recoverErr = false, nil
	a.d.mu.Unlock()
	return true
}

// startJob sends the start command. A device that does not take it within
// StallTimeout counts as stalled.
func (a *acquisition) startJob() bool {
	var deadline time.Time
	if a.d.cfg.StallTimeout > 0 {
		deadline = time.Now().Add(a.d.cfg.StallTimeout)
	}
	if !a.begin() {
		return false
	}
	a.d.cmd = scanproto.AppendStartScan(a.d.cmd[:0], a.params)
	err := a.d.command(a.dev, a.out, a.d.cmd, a.tok, deadline)
	a.end()
	if err != nil {
		a.d.ioFailed(a, "start the scan", err)
		return false
	}
	return true
}

// stream keeps QueueDepth transfers in flight and delivers what they bring
// to the sink, reports progress and watches for a stall, until the image is
// complete or the acquisition stops and its transfers have all completed.
// It reports whether the whole image went to the sink.
func (a *acquisition) stream() bool {
	a.pump.start(a, ChunkSize(a.p))
	defer func() {
		// Transfers still in flight: the progress callback or the sink
		// panicked (or called runtime.Goexit); the loop returns only once
		// every transfer has completed. Cancel them, or the waiter would
		// wait for their completions for as long as the device takes.
		if a.pump.queued > 0 {
			a.stop(causeFailed, nil)
		}
		a.pump.stop()
	}()
	stall := a.d.cfg.StallTimeout
	period := ProgressInterval
	if stall > 0 {
		period = min(period, stall)
	}
	tick := time.NewTimer(period)
	defer tick.Stop()
	a.lastData = time.Now()
	stopped := a.stopped
	a.submit()
	a.streaming.Store(true)
	for {
		if a.pump.queued == 0 {
			return a.sent == a.total
		}
		select {
		case r := <-a.pump.results:
			a.receive(r)
		case <-stopped:
			stopped = nil // the drain goes on in the results case
		case <-tick.C:
			if time.Since(a.lastReport) >= ProgressInterval {
				a.report()
			}
			if stall > 0 && time.Since(a.lastData) >= stall {
				a.stop(causeFailed, ErrDeviceCommunication.Wrap(fmt.Errorf("no data from the device for %v", stall)))
			}
			tick.Reset(period)
		}
		a.submit()
	}
}

// submit starts transfers until QueueDepth are in flight or the whole
// image is asked for; none once the acquisition is stopped.
func (a *acquisition) submit() {
	pp := &a.pump
	for pp.queued < len(pp.bufs) && pp.requested < a.total {
		if !a.begin() {
			return
		}
		i := (pp.head + pp.queued) % len(pp.bufs)
		buf := pp.bufs[i][:min(int64(pp.chunk), a.total-pp.requested)]
		q, err := a.in.Start(buf, usb.Xfer{Token: a.tok})
		if err != nil {
			a.end()
			if errors.Is(err, ioring.ErrFull) && pp.queued > 0 {
				return // the shared ring is full: submit when one completes
			}
			a.d.ioFailed(a, "submit a transfer", err)
			return
		}
		pp.reqs <- q
		pp.sizes[i] = len(buf)
		pp.queued++
		pp.requested += int64(len(buf))
	}
}

// receive takes the oldest transfer's result: its data goes to the sink,
// unless the acquisition is stopped (then it is dropped).
func (a *acquisition) receive(r result) {
	pp := &a.pump
	i := pp.head
	pp.head = (pp.head + 1) % len(pp.bufs)
	pp.queued--
	pp.requested -= int64(pp.sizes[i] - r.n) // a short transfer asks for the rest again
	if a.isStopped() {
		return
	}
	if r.err != nil {
		a.d.ioFailed(a, "read image data", r.err)
		return
	}
	received := a.sent + int64(len(a.carry))
	if r.n == 0 && received == 0 {
		// On USB a device ends a transfer of whole packets shorter than it
		// meant to send with a zero-length packet; one the previous
		// transfer did not need to read (the last of an image, or of the
		// stale data an abort flushed) comes first. It carries nothing:
		// ask again.
		return
	}
	a.lastData = time.Now()
	if r.n == 0 || received+int64(r.n) > a.total {
		// Only a flush marker (or an echo) is empty: stale data.
		a.d.ioFailed(a, "read image data", fmt.Errorf("%w: %d bytes at offset %d of %d", errUnexpectedData, r.n, received, a.total))
		return
	}
	a.deliver(pp.bufs[i][:r.n])
}

// deliver writes received data to the sink in whole chunks, each followed
// by a progress report. A short transfer (the device cut a message) is
// carried over until its chunk is complete; aligned transfers go straight
// through.
func (a *acquisition) deliver(data []byte) {
	chunk := a.pump.chunk
	if len(a.carry) == 0 && (len(data) == chunk || a.sent+int64(len(data)) == a.total) {
		if a.write(data) {
			a.sent += int64(len(data))
			a.report()
		}
		return
	}
	a.carry = append(a.carry, data...)
	for len(a.carry) >= chunk || (len(a.carry) > 0 && a.sent+int64(len(a.carry)) == a.total) {
		k := min(len(a.carry), chunk)
		if !a.write(a.carry[:k]) {
			return
		}
		a.sent += int64(k)
		a.carry = a.carry[:copy(a.carry, a.carry[k:])]
		a.report()
	}
}

// report calls the progress callback, unless the acquisition is stopped;
// false from it cancels.
func (a *acquisition) report() {
	if a.progress == nil || a.isStopped() {
		return
	}
	ok := a.progress(Progress{Percent: int(a.sent * 100 / a.total), Bytes: a.sent, Total: a.total})
	a.lastReport = time.Now()
	switch err := a.ctx.Err(); {
	case !ok:
		a.stop(causeCanceled, nil)
	case err != nil:
		// The callback ended the context (or it ended meanwhile): stop
		// now, not when context.AfterFunc's goroutine gets to it, which
		// the rest of a short acquisition could outrun.
		a.stop(causeCanceled, ctxCanceled(err))
	}
}

// write writes b to the sink and reports whether the acquisition goes
// on: a failure stops it, and a cancel made while the sink wrote (from
// the sink itself, say) wins over this chunk: it does not count towards
// the image, so that a cancel during the last chunk's write is not taken
// for one that came after it.
func (a *acquisition) write(b []byte) bool {
	n, err := a.sink.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		a.stop(causeFailed, fmt.Errorf("minidrv: write to sink: %w", err))
		return false
	}
	return !a.isStopped()
}

// result ends the transfer and returns the acquisition's result. A
// complete acquisition ends it itself (TransferDone); any other waits for
// its unwinding (every I/O's completion in, the transfer ended by unwind).
func (a *acquisition) result(complete bool) error {
	if complete {
		a.mu.Lock()
		late := a.halted // a cancel lost the race: its unwinding ends the transfer
		a.halted = true
		a.mu.Unlock()
		if late {
			<-a.unwound
			return nil
		}
		_, _ = a.d.m.Fire(TransferDone)
		close(a.unwound)
		return nil
	}
	a.stop(causeFailed, nil) // no-op unless the stream ended without a cause
	<-a.unwound
	switch {
	case a.why == causeCanceled && a.err == nil: // not the context's cancel
		return errCanceledIO
	case a.err != nil:
		return a.err
	}
	return ErrDeviceCommunication.Wrap(errors.New("transfer ended early"))
}

// machineCancel is the transfer's cancel function for the state machine
// (BeginTransfer): the state it moved to tells a cancel from a removal or
// a suspend. A removal is the device gone, as a transfer that found it
// gone reports (usb.ErrNoDevice), whichever of the two comes first.
func (a *acquisition) machineCancel() {
	switch s := a.d.m.State(); s {
	case Removed:
		a.stop(causeOffline, ErrOffline.Wrap(fmt.Errorf("device removed during the transfer: %w", usb.ErrNoDevice)))
		return
	case Suspended:
		a.stop(causeOffline, ErrOffline.Wrap(fmt.Errorf("device %v during the transfer", s)))
		return
	}
	a.stop(causeCanceled, nil)
}

// stop ends the acquisition's I/O: the first call records why, closes
// stopped and fires the token (every transfer in flight is canceled, later
// ones never start); with no I/O pending it unwinds at once. Any goroutine,
// any number of times; it never waits for the I/O.
func (a *acquisition) stop(why cause, err error) {
	a.mu.Lock()
	if a.halted {
		a.mu.Unlock()
		return
	}
	a.halted = true
	a.why, a.err = why, err
	idle := a.pending == 0
	a.mu.Unlock()
	// stopped first: a transfer that the token cancels then finds the
	// acquisition stopped, and its ErrCanceled is not taken for a failure.
	close(a.stopped)
	_ = a.tok.Cancel()
	if idle {
		a.unwind()
	}
}

// isStopped reports whether stop was called.
func (a *acquisition) isStopped() bool {
	select {
	case <-a.stopped:
		return true
	default:
		return false
	}
}

// begin counts one more I/O about to start, and reports whether it may:
// none starts once the acquisition is stopped.
func (a *acquisition) begin() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.halted {
		return false
	}
	a.pending++
	return true
}

// end counts the delivered completion of an I/O that begin counted; the
// last one of a stopped acquisition unwinds it.
func (a *acquisition) end() {
	a.mu.Lock()
	a.pending--
	last := a.halted && a.pending == 0
	a.mu.Unlock()
	if last {
		a.unwind()
	}
}

// unwind ends the transfer in the state machine once the acquisition is
// stopped and every I/O has delivered its completion (its buffers are
// free): a cancel goes through Canceling to Locked (Unwound), a failure to
// Locked (TransferFailed); after a removal or a suspend both are no-ops.
// The row's action says whether the device must be recovered. It runs
// exactly once, in the goroutine that saw the last of the two, and then
// closes unwound. It does not allocate.
func (a *acquisition) unwind() {
	m := &a.d.m
	var act Action
	if a.why == causeCanceled {
		_, _ = m.Fire(CancelIO) // from Transferring; its cancel (stop) is a no-op now
		act, _ = m.Fire(Unwound)
	} else {
		act, _ = m.Fire(TransferFailed)
	}
	a.recover = act == ActionRecover
	close(a.unwound)
}

// result is the outcome of one bulk-IN transfer of the stream.
type result struct {
	n   int
	err error
}

// pump is the stream's transfers in flight: bufs[head..head+queued) in ring
// order. A waiter goroutine waits for them oldest first (they complete in
// order on one endpoint), counts each completion (end) and hands the
// results over, so that completions are delivered whatever the acquiring
// goroutine does (it may be in the progress callback, or writing to the
// sink), and the acquiring goroutine stays free to report progress and
// watch for a stall.
type pump struct {
	bufs      [][]byte // the driver's buffers, QueueDepth of them
	chunk     int
	sizes     []int // the size of each slot's transfer in flight
	head      int
	queued    int
	requested int64 // bytes asked for: sent plus the sizes in flight

	reqs       chan ioring.Request
	results    chan result
	waiterDone chan struct{}
}

func (pp *pump) start(a *acquisition, chunk int) {
	pp.bufs = a.d.buffers(chunk)
	pp.chunk = chunk
	qd := len(pp.bufs)
	pp.sizes = make([]int, qd)
	pp.reqs = make(chan ioring.Request, qd)
	pp.results = make(chan result, qd)
	pp.waiterDone = make(chan struct{})
	go pp.wait(a)
}

func (pp *pump) wait(a *acquisition) {
	defer close(pp.waiterDone)
	for q := range pp.reqs {
		c, err := q.Wait(context.Background())
		if err == nil {
			err = c.Err
		}
		// The result first, then the count: the last end of a stopped
		// acquisition wakes the caller of CancelPendingIO (unwind), and a
		// goroutine woken last runs first on this P once the waiter
		// parks; woken before the acquiring goroutine, it would queue
		// behind it and the recovery that goroutine starts.
		pp.results <- result{c.N, err}
		a.end()
	}
}

// stop ends the waiter; every transfer has completed.
func (pp *pump) stop() {
	close(pp.reqs)
	<-pp.waiterDone
}

// buffers returns QueueDepth buffers of chunk bytes, reused between
// acquisitions. ioSem held; every transfer on them has completed.
func (d *Driver) buffers(chunk int) [][]byte {
	if d.chunk < chunk || len(d.bufs) != d.cfg.QueueDepth {
		d.bufs = make([][]byte, d.cfg.QueueDepth)
		for i := range d.bufs {
			d.bufs[i] = make([]byte, chunk)
		}
		d.chunk = chunk
	}
	return d.bufs
}

// ioFailed stops the acquisition after a failed transfer or command. A
// device that went away moves the driver to Removed.
func (d *Driver) ioFailed(a *acquisition, what string, err error) {
	switch {
	case errors.Is(err, usb.ErrNoDevice):
		a.stop(causeOffline, ErrOffline.Wrap(fmt.Errorf("%s: %w", what, err)))
		_, _ = d.m.Fire(DeviceDisconnected)
	case errors.Is(err, ioring.ErrCanceled) && a.isStopped():
		// The acquisition's own cancel: its cause is recorded already.
	default:
		a.stop(causeFailed, ErrDeviceCommunication.Wrap(fmt.Errorf("%s: %w", what, err)))
	}
}
