package escl

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cancelio/cancelio/minidrv"
)

// Defaults of Config.
const (
	// DefaultPrefix is the path under which the handler serves eSCL: the
	// "rs" value clients find in DNS-SD, and the path they are given.
	DefaultPrefix = "/eSCL"
	// DefaultMaxBodySize bounds a request body when Config.MaxBodySize is
	// 0: 64 KiB is a hundred times a real client's scan settings.
	DefaultMaxBodySize = 64 << 10
	// DefaultJobTimeout is how long a scanned page waits for its
	// NextDocument when Config.JobTimeout is 0: a minute, which is also
	// how long a client that dies after its POST keeps others out once
	// its page is scanned. A live client asks for the page at once
	// (sane-airscan sends NextDocument as soon as the POST is answered,
	// and waits in it while the page is scanned): a minute leaves ample
	// time to one that is slow to come back.
	DefaultJobTimeout = 60 * time.Second
	// DefaultLockTimeout is how long a new job waits for the driver's lock
	// when Config.LockTimeout is 0.
	DefaultLockTimeout = 5 * time.Second
	// DefaultCancelTimeout bounds the wait for CancelPendingIO when
	// Config.CancelTimeout is 0.
	DefaultCancelTimeout = 5 * time.Second
	// DefaultJPEGQuality is the JPEG quality when Config.JPEGQuality is 0.
	DefaultJPEGQuality = 90
	// jobHistory is the number of finished jobs the handler remembers (for
	// ScannerStatus, and a late DELETE or NextDocument).
	jobHistory = 16
)

// Config configures a Handler. Driver is required; the zero value of every
// other field is a useful default.
type Config struct {
	// Driver is the scanner. It must be initialized (Initialize) before
	// NewHandler, and stay so while the handler serves; the caller owns it.
	// The handler locks it for each job and unlocks it after.
	Driver *minidrv.Driver
	// Prefix is the path the eSCL resources live under; DefaultPrefix when
	// empty. It is a plain path: it starts with a slash and does not end
	// with one, and its segments are neither empty, "." nor "..", and hold
	// only characters a URL path carries unescaped (letters, digits and
	// -._~!$&'()*+,;=:@), none of which a ServeMux pattern treats
	// specially.
	Prefix string
	// MakeAndModel, SerialNumber and UUID identify the scanner in its
	// capabilities. MakeAndModel defaults to "cancelio scanner"; UUID to a
	// random one.
	MakeAndModel string
	SerialNumber string
	UUID         string
	// MaxBodySize bounds a request body in bytes (413 beyond it);
	// DefaultMaxBodySize when 0.
	MaxBodySize int64
	// JobTimeout is how long a scanned page waits for a client to fetch
	// it; the job is then dropped (OutcomeExpired; ScannerStatus lists it
	// Aborted, JobTimedOut) and the scanner is free again. It is what
	// frees the scanner from a client that posts a job and is never
	// heard of again (no NextDocument, no DELETE, no connection to see
	// close): until then a POST gets 503 and ScannerStatus says
	// Processing, as the handler cannot tell such a client from a slow
	// one. The clock starts when the page is ready: the scan itself is
	// not limited (a device that stops sending fails it after the
	// driver's minidrv.Config.StallTimeout). JobTimeout also bounds how
	// long a client that fetches the page may go without reading any of
	// it: the send fails and the job is canceled, as when the client goes
	// away (a client whose connection closes cancels its job at once).
	// DefaultJobTimeout when 0.
	JobTimeout time.Duration
	// LockTimeout is how long a new job waits for the driver's lock (held
	// by another client of the driver, or by its recovery after a cancel)
	// before the client gets 503. DefaultLockTimeout when 0.
	LockTimeout time.Duration
	// CancelTimeout bounds the wait for CancelPendingIO (and, for a
	// DELETE, for the driver to be idle) before the cancel is reported;
	// the unwinding goes on. DefaultCancelTimeout when 0.
	CancelTimeout time.Duration
	// JPEGQuality is the quality of JPEG documents, 1..100;
	// DefaultJPEGQuality when 0.
	JPEGQuality int
	// Log receives one line per job (with its timings) and one per refused
	// request; nil discards them.
	Log *slog.Logger
	// OnJobDone, if not nil, is called once per job when it is over
	// (delivered, canceled, failed or expired) and the driver unlocked,
	// from the job's goroutine. It must not block for long. Shutdown does
	// not wait for it (so it may call Shutdown). A panic in it is
	// recovered and logged.
	OnJobDone func(JobReport)
}

// Handler serves eSCL for one minidrv.Driver: an http.Handler for
// ScannerCapabilities, ScannerStatus, ScanJobs (POST), a job's
// NextDocument (GET) and the job itself (DELETE), under Config.Prefix.
//
// One job runs at a time: from its POST until its page is delivered,
// canceled, failed or expired, a second POST gets 503. A DELETE, a client
// that drops its NextDocument connection, and Shutdown cancel a running
// job through the driver's CancelPendingIO; the waiting NextDocument ends
// at once. Its methods are safe for concurrent use.
type Handler struct {
	cfg  Config
	d    *minidrv.Driver
	bed  *minidrv.Item
	caps caps
	mux  *http.ServeMux

	capsDoc []byte // the ScannerCapabilities document, made once

	mu     sync.Mutex
	jobs   []*job // newest last, at most jobHistory finished ones; guarded by mu
	active *job   // the job that holds the scanner, or nil; guarded by mu
	closed bool   // Shutdown was called; guarded by mu
	wg     sync.WaitGroup
}

// NewHandler returns a Handler for cfg.Driver, which must be initialized:
// the capabilities are read from its flatbed item's properties now.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Driver == nil {
		return nil, errors.New("escl: Config.Driver is required")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if err := checkPrefix(cfg.Prefix); err != nil {
		return nil, err
	}
	if cfg.MakeAndModel == "" {
		cfg.MakeAndModel = "cancelio scanner"
	}
	if cfg.UUID == "" {
		cfg.UUID = newUUID()
	}
	if cfg.MaxBodySize == 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if cfg.JobTimeout == 0 {
		cfg.JobTimeout = DefaultJobTimeout
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.CancelTimeout == 0 {
		cfg.CancelTimeout = DefaultCancelTimeout
	}
	if cfg.JPEGQuality == 0 {
		cfg.JPEGQuality = DefaultJPEGQuality
	}
	if cfg.MaxBodySize < 0 || cfg.JobTimeout < 0 || cfg.LockTimeout < 0 || cfg.CancelTimeout < 0 {
		return nil, errors.New("escl: negative size or timeout in Config")
	}
	if cfg.JPEGQuality < 1 || cfg.JPEGQuality > 100 {
		return nil, fmt.Errorf("escl: JPEG quality %d outside 1..100", cfg.JPEGQuality)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, d: cfg.Driver}
	root, err := h.d.Items()
	if err != nil {
		return nil, fmt.Errorf("escl: driver: %w", err)
	}
	h.bed = root.Find("Flatbed")
	if err := h.readCaps(); err != nil {
		return nil, err
	}
	h.capsDoc = marshalDoc(h.capabilities())

	p := cfg.Prefix
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET "+p+"/ScannerCapabilities", h.serveCapabilities)
	h.mux.HandleFunc("GET "+p+"/ScannerStatus", h.serveStatus)
	h.mux.HandleFunc("POST "+p+"/ScanJobs", h.serveScanJobs)
	h.mux.HandleFunc("GET "+p+"/ScanJobs/{id}/NextDocument", h.serveNextDocument)
	h.mux.HandleFunc("DELETE "+p+"/ScanJobs/{id}", h.serveDelete)
	return h, nil
}

// checkPrefix returns an error unless p is a plain path (see
// Config.Prefix): the routes are p followed by a fixed pattern, so
// anything ServeMux reads as pattern syntax ("{x}", "{$}", a space that
// ends the method, "%" escapes) would make a route NewHandler did not
// mean, or make ServeMux panic; and a path that ServeMux cleans (empty,
// "." or ".." segments) would never match a request.
func checkPrefix(p string) error {
	if p[0] != '/' || p[len(p)-1] == '/' {
		return fmt.Errorf("escl: prefix %q must start with a slash and not end with one", p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("escl: prefix %q has an empty, \".\" or \"..\" segment", p)
		}
		for _, c := range seg {
			if !isPathChar(c) {
				return fmt.Errorf("escl: prefix %q has %q: want letters, digits and -._~!$&'()*+,;=:@", p, c)
			}
		}
	}
	return nil
}

// isPathChar reports whether c is an RFC 3986 pchar other than a "%"
// escape: unreserved, sub-delims, ':' or '@'.
func isPathChar(c rune) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		strings.ContainsRune("-._~!$&'()*+,;=:@", c)
}

// readCaps derives the capabilities from the flatbed's properties: the bed
// size, and the resolutions and data types the driver validates.
func (h *Handler) readCaps() error {
	v, err := h.d.ReadItemProperties(h.bed, minidrv.PropBedWidth, minidrv.PropBedHeight)
	if err != nil {
		return fmt.Errorf("escl: read the flatbed's properties: %w", err)
	}
	c := &h.caps
	c.defaults = minidrv.DefaultProperties()
	for _, dpi := range minidrv.Resolutions() {
		err := h.d.ValidateItemProperties(h.bed,
			minidrv.PropValue{ID: minidrv.PropXResolution, Value: dpi},
			minidrv.PropValue{ID: minidrv.PropYResolution, Value: dpi})
		if err == nil {
			c.resolutions = append(c.resolutions, dpi)
		}
	}
	for _, t := range []minidrv.DataType{minidrv.DataBW, minidrv.DataGray, minidrv.DataColor} {
		if h.d.ValidateItemProperties(h.bed, minidrv.PropValue{ID: minidrv.PropDataType, Value: int(t)}) == nil {
			c.modes = append(c.modes, modeOf(t))
		}
	}
	c.formats = []string{MIMEPNG, MIMEJPEG}
	// The platen offered is the bed in 1/300 inch, rounded down to a whole
	// number of pixels at every resolution: a client then computes the
	// same image size as the driver for the whole platen (sane-airscan
	// pads or clips an image whose size differs from its own arithmetic).
	g := granule(c.resolutions)
	c.bedWidth = v[0].Value * unitsPerInch / 1000 / g * g
	c.bedHeight = v[1].Value * unitsPerInch / 1000 / g * g
	if len(c.resolutions) == 0 || len(c.modes) == 0 || c.bedWidth < 1 || c.bedHeight < 1 {
		return fmt.Errorf("escl: the driver offers no usable scan (bed %dx%d/300 in, resolutions %v, modes %v)",
			c.bedWidth, c.bedHeight, c.resolutions, c.modes)
	}
	return nil
}

// capabilities returns the ScannerCapabilities document.
func (h *Handler) capabilities() *capabilitiesDoc {
	c := &h.caps
	doc := &capabilitiesDoc{
		NSPWG: NSPWG, NSScan: NSScan, Version: "2.63",
		MakeAndModel: h.cfg.MakeAndModel, SerialNumber: h.cfg.SerialNumber, UUID: h.cfg.UUID,
	}
	ic := &doc.Platen.Caps
	// The smallest region is one pixel at the lowest resolution.
	minUnits := (unitsPerInch + c.resolutions[0] - 1) / c.resolutions[0]
	ic.MinWidth, ic.MaxWidth = minUnits, c.bedWidth
	ic.MinHeight, ic.MaxHeight = minUnits, c.bedHeight
	ic.MaxScanRegions = 1
	ic.MaxOpticalXRes = c.resolutions[len(c.resolutions)-1]
	ic.MaxOpticalYRes = ic.MaxOpticalXRes
	ic.SupportedIntents = []string{"Document", "Photo", "Preview", "TextAndGraphic"}
	ic.Profile.ColorModes = c.modes
	ic.Profile.Formats = c.formats
	ic.Profile.FormatsExt = c.formats
	for _, r := range c.resolutions {
		ic.Profile.Resolutions = append(ic.Profile.Resolutions, resolution{r, r})
	}
	return doc
}

// ServeHTTP serves the eSCL resources under Config.Prefix; other paths get
// 404, other methods 405. A Handler not made by NewHandler answers 500.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.mux == nil { // a zero Handler: no scanner to serve
		http.Error(w, "escl: the Handler was not made by NewHandler", http.StatusInternalServerError)
		return
	}
	h.mux.ServeHTTP(w, r)
}

// Shutdown makes the handler refuse new jobs (503), cancels the running
// job, if any, through CancelPendingIO, and waits until every job is over
// and the driver unlocked, or ctx ends (then it returns ctx's error; the
// jobs still finish). A nil ctx never ends. It does not wait for
// Config.OnJobDone, which may still run when it returns, and may call it.
// It does not stop an http.Server: call it before the server's own
// Shutdown, which waits for running requests, so that a NextDocument
// waiting for the canceled page has ended.
func (h *Handler) Shutdown(ctx context.Context) error {
	if ctx == nil { // a shutdown must not fail for want of a context
		ctx = context.Background()
	}
	h.mu.Lock()
	h.closed = true
	a := h.active
	h.mu.Unlock()
	if a != nil {
		h.cancel(a, CauseShutdown)
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Handler) serveCapabilities(w http.ResponseWriter, r *http.Request) {
	writeXML(w, http.StatusOK, h.capsDoc)
}

func (h *Handler) serveStatus(w http.ResponseWriter, r *http.Request) {
	doc := statusDoc{NSPWG: NSPWG, NSScan: NSScan, Version: "2.63"}
	now := time.Now()
	h.mu.Lock()
	switch h.d.State() {
	case minidrv.Unloaded, minidrv.Removed:
		doc.State = "Down"
	case minidrv.Suspended:
		doc.State = "Stopped"
	default:
		doc.State = "Idle"
		if h.active != nil {
			switch h.active.state {
			case jobScanning, jobReady, jobSending: // a POST gets 503 busy
				doc.State = "Processing"
			}
		}
	}
	for i := len(h.jobs) - 1; i >= 0; i-- { // newest first
		doc.Jobs = append(doc.Jobs, h.jobs[i].infoLocked(h.cfg.Prefix, now))
	}
	h.mu.Unlock()
	writeXML(w, http.StatusOK, marshalDoc(&doc))
}

// serveScanJobs creates a job: it checks the settings, takes the driver's
// lock and writes the item properties, answers 201 with the job's
// Location, and starts the scan.
func (h *Handler) serveScanJobs(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "text/xml" && mt != "application/xml") {
			h.refuse(w, r, http.StatusUnsupportedMediaType, fmt.Sprintf("content type %q: want text/xml", ct))
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodySize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", tooBig.Limit))
			return
		}
		h.refuse(w, r, http.StatusBadRequest, "read the request body: "+err.Error())
		return
	}
	ss, err := parseScanSettings(body)
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, err.Error())
		return
	}
	set, err := h.caps.check(ss)
	if err != nil {
		code := http.StatusConflict
		if isMalformed(err) {
			code = http.StatusBadRequest
		}
		h.refuse(w, r, code, err.Error())
		return
	}
	// The driver checks the properties too, without touching the device.
	// It refuses a value (the request conflicts with the scanner), or
	// refuses any call in its state (not initialized): the scanner cannot
	// take a job now, as when the lock fails below.
	if err := h.d.ValidateItemProperties(h.bed, set.props()...); err != nil {
		if errors.Is(err, minidrv.ErrInvalidProperty) {
			h.refuse(w, r, http.StatusConflict, err.Error())
			return
		}
		w.Header().Set("Retry-After", "5")
		h.refuse(w, r, http.StatusServiceUnavailable, "the scanner is not available: "+err.Error())
		return
	}

	j := newJob(set)
	h.mu.Lock()
	switch {
	case h.closed:
		h.mu.Unlock()
		w.Header().Set("Retry-After", "5") // as every 503 here: a server may come back
		h.refuse(w, r, http.StatusServiceUnavailable, "the scanner is shutting down")
		return
	case h.active != nil && !h.active.state.final():
		// A job that is over (its page sent whole, say) while its run
		// winds down does not hold the scanner: ScannerStatus says Idle
		// already, and the driver's lock below waits for the rest.
		h.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		h.refuse(w, r, http.StatusServiceUnavailable, "the scanner is busy with another job")
		return
	}
	h.active = j // reserved: a second POST is refused from here on
	h.wg.Add(1)  // before Shutdown can see the job
	h.mu.Unlock()

	err = h.lockDriver(r.Context(), j)
	h.mu.Lock()
	if err == nil && (h.closed || j.cause != CauseNone) {
		// Shutdown came while the lock was awaited: the job it canceled
		// never starts.
		_ = h.d.Unlock()
		err = errShuttingDown
	}
	if err != nil {
		if h.active == j {
			h.active = nil
		}
		shutdown := errors.Is(err, errShuttingDown) || j.cause != CauseNone // j.cause under h.mu
		h.mu.Unlock()
		h.wg.Done()
		msg := "the scanner is busy: "
		switch {
		case shutdown:
			msg = "the scanner is shutting down: "
		case !errors.Is(err, minidrv.ErrBusy):
			msg = "the scanner is not available: " // offline, removed, suspended
		}
		w.Header().Set("Retry-After", "5")
		h.refuse(w, r, http.StatusServiceUnavailable, msg+err.Error())
		return
	}
	h.addJobLocked(j)
	h.mu.Unlock()
	go func() {
		// Shutdown waits for run (the job), not for OnJobDone: that
		// may call Shutdown.
		h.jobDone(h.run(j))
	}()

	w.Header().Set("Location", h.cfg.Prefix+"/ScanJobs/"+j.id)
	w.WriteHeader(http.StatusCreated)
	h.cfg.Log.Info("escl: job created", "job", j.id, "remote", r.RemoteAddr, "settings", fmt.Sprintf("%+v", set))
}

// errShuttingDown is the cause of a job Shutdown refused while it waited
// for the driver.
var errShuttingDown = errors.New("shutting down")

// lockDriver locks the driver for j and writes its properties. The wait
// ends with the request, after LockTimeout, or at j's cancel (Shutdown).
func (h *Handler) lockDriver(ctx context.Context, j *job) error {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.LockTimeout)
	defer cancel()
	stop := context.AfterFunc(j.cancelCtx, cancel)
	defer stop()
	if err := h.d.Lock(ctx); err != nil {
		return err
	}
	if err := h.d.WriteItemProperties(h.bed, j.set.props()...); err != nil {
		_ = h.d.Unlock()
		return err
	}
	return nil
}

// addJobLocked records j, forgetting the oldest finished jobs beyond
// jobHistory. h.mu held.
func (h *Handler) addJobLocked(j *job) {
	h.jobs = append(h.jobs, j)
	for len(h.jobs) > jobHistory {
		i := 0
		for i < len(h.jobs) && !h.jobs[i].state.final() {
			i++
		}
		if i == len(h.jobs) {
			break
		}
		h.jobs = append(h.jobs[:i], h.jobs[i+1:]...)
	}
}

// lookup returns the job named by the request's path, or nil.
func (h *Handler) lookup(r *http.Request) *job {
	id := r.PathValue("id")
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, j := range h.jobs {
		if j.id == id {
			return j
		}
	}
	return nil
}

// serveNextDocument waits for the job's page and sends it. The wait ends at
// once when the job is canceled (410); a client that goes away meanwhile,
// or while the page is sent, cancels the job.
func (h *Handler) serveNextDocument(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		// ServeMux routes HEAD to GET's pattern, and net/http drops a
		// HEAD's body: the page would count as delivered, never sent.
		w.Header().Set("Allow", http.MethodGet)
		h.refuse(w, r, http.StatusMethodNotAllowed, "NextDocument is fetched with GET")
		return
	}
	j := h.lookup(r)
	if j == nil {
		h.refuse(w, r, http.StatusNotFound, "no such job")
		return
	}
	rc := http.NewResponseController(w)
	select {
	case <-j.scanned:
	case <-j.cancelCtx.Done():
	case <-clientGone(r, rc):
		h.cancel(j, CauseClientGone)
		return
	}
	h.mu.Lock()
	st, doc, mt, jerr := j.state, j.doc, j.set.Format, j.err
	if j.cause != CauseNone {
		st = jobCanceled
	}
	if st == jobReady {
		j.state = jobSending
		j.sendRC = rc
		j.progress = time.Now()
	}
	h.mu.Unlock()
	switch st {
	case jobReady:
	case jobCanceled:
		h.refuse(w, r, http.StatusGone, "the job was canceled")
		return
	case jobFailed:
		h.refuse(w, r, http.StatusInternalServerError, "the scan failed: "+jerr.Error())
		return
	case jobExpired:
		h.refuse(w, r, http.StatusGone, "the job expired: its page was not fetched in time")
		return
	default: // sending or delivered: the platen has one page
		// Every client asks once more after the page: not worth a line.
		http.Error(w, "no more documents", http.StatusNotFound)
		return
	}

	// A cancel (DELETE, Shutdown) ends a write in progress at once:
	// before it returns, Handler.cancel marks the send cut (j.cut) and
	// moves the connection's write deadline to the past through
	// j.sendRC, so a DELETE that has been answered has cut the send. The
	// deadline fails a write blocked on a full socket; the mark stops one
	// that is not blocked at the next chunk (a write checks its deadline
	// only when it would block, and a client that reads on after its
	// DELETE keeps the socket from filling). The job's goroutine waits for
	// this send to end (finish) before it settles the outcome: a page
	// sent whole is delivered, even when the client's DELETE overtook the
	// end of this handler.
	defer j.finish()
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	var err error
	for off := 0; off < len(doc) && err == nil; {
		// Each chunk has JobTimeout to go out: a client that stops
		// reading would otherwise hold the scanner for as long as it
		// keeps the connection. Under h.mu, with the cut checked, so
		// that a cancel's deadline in the past is never moved on. A
		// ResponseWriter that hides the connection (a middleware's
		// wrapper) takes no deadline: the job's goroutine then watches
		// the chunks' progress itself (awaitDelivery).
		h.mu.Lock()
		if j.cut.Load() {
			err = errSendCut
		} else if rc.SetWriteDeadline(time.Now().Add(h.cfg.JobTimeout)) != nil {
			j.unbounded = true
		}
		j.progress = time.Now()
		h.mu.Unlock()
		if err != nil {
			break
		}
		var n int
		n, err = w.Write(doc[off:min(off+sendChunk, len(doc))])
		off += n
	}
	if err == nil {
		// A ResponseWriter that cannot flush (a middleware's wrapper
		// without Unwrap) is not a client gone: net/http sends what it
		// holds when the handler returns.
		if ferr := rc.Flush(); !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	h.mu.Lock()
	// Past this point no cancel touches the connection: it may serve the
	// client's next request. A cancel that came after the last write
	// lost the race, but it may have moved the deadline: clear it.
	j.sendRC = nil
	if err == nil && j.state == jobSending { // not given up on (awaitDelivery)
		j.state = jobDelivered
		j.delivered = time.Now()
		_ = rc.SetWriteDeadline(time.Time{})
	}
	h.mu.Unlock()
	if err == nil {
		return
	}
	h.cancel(j, CauseClientGone) // a no-op after a DELETE or Shutdown
	panic(http.ErrAbortHandler)  // a partial body: close the connection
}

// clientGone returns a channel closed once r's client has gone away.
// net/http cancels r.Context() on a closed connection only once it has
// read the request's body to its end, so a body (a NextDocument has no
// use for one; a client may announce one and never send it) is read, and
// dropped, aside: its read failing is the client gone too. rc lets that
// read go on while the handler writes its response.
func clientGone(r *http.Request, rc *http.ResponseController) <-chan struct{} {
	if r.Body == nil || r.Body == http.NoBody {
		return r.Context().Done()
	}
	_ = rc.EnableFullDuplex()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			<-r.Context().Done() // read whole: net/http watches the connection now
		}
		// The read also fails once the handler has returned (net/http
		// closes the body): nobody waits on gone then.
	}()
	return gone
}

// serveDelete cancels a job: a running one through CancelPendingIO, then it
// waits (within CancelTimeout) until the driver is unlocked. A job that is
// over is left as it is: a client deletes every job it ran, canceled or
// not.
func (h *Handler) serveDelete(w http.ResponseWriter, r *http.Request) {
	j := h.lookup(r)
	if j == nil {
		h.refuse(w, r, http.StatusNotFound, "no such job")
		return
	}
	h.cancel(j, CauseDelete)
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.CancelTimeout)
	defer cancel()
	select {
	case <-j.idle:
	case <-ctx.Done():
	}
	w.WriteHeader(http.StatusOK)
}

// cancel cancels j for cause unless it is over: it marks it canceled (the
// waiting NextDocument ends at once), then, while its acquisition runs,
// calls CancelPendingIO. Any goroutine, any number of times.
func (h *Handler) cancel(j *job, cause Cause) {
	h.mu.Lock()
	if j.state.final() || j.cause != CauseNone {
		h.mu.Unlock()
		return
	}
	j.cause = cause
	j.cancelAt = time.Now()
	select {
	case <-j.idle:
		// Past its acquisition (its page waits, or is being sent): the
		// scanner is free for the next job once this returns, as after
		// a canceled acquisition (run).
		if h.active == j {
			h.active = nil
		}
	default:
	}
	// Only this job's own acquisition is canceled: the driver may have
	// other clients. One that starts after this point sees the cancel in
	// its first progress report, before it touches the device.
	acquiring := j.acquiring
	j.cancelFn()
	if j.sendRC != nil {
		// Cut the send in progress now, not from another goroutine
		// later: the caller answers a DELETE once this returns, and the
		// client may read on. The deadline fails a blocked write, the
		// mark the next chunk of one that is not blocked.
		j.cut.Store(true)
		_ = j.sendRC.SetWriteDeadline(time.Now())
	}
	h.mu.Unlock()
	if acquiring {
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.CancelTimeout)
		t0 := time.Now()
		err := h.d.CancelPendingIO(ctx)
		took := time.Since(t0)
		cancel()
		h.mu.Lock()
		j.cancelCalled, j.cancelTook, j.cancelErr = t0, took, err
		h.mu.Unlock()
	}
	close(j.cancelDone)
}

// refuse answers a request the handler will not serve, and logs it.
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, code int, msg string) {
	h.cfg.Log.Info("escl: refused", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "status", code, "reason", msg)
	http.Error(w, msg, code)
}

func writeXML(w http.ResponseWriter, code int, doc []byte) {
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(code)
	_, _ = w.Write(doc)
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
