package escl_test

// A client that goes away: one whose NextDocument connection drops cancels
// its job at once; one that never comes back after its POST holds the
// scanner until its page has waited JobTimeout, no longer, and its job is
// then listed as Aborted (JobTimedOut). The same bounds hold when the
// handler is served through a ResponseWriter that hides the connection (a
// middleware's wrapper): no flushing, no write deadlines.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// adv4Plain is a ResponseWriter as many middlewares wrap one: Header,
// Write and WriteHeader only, no Unwrap, so http.ResponseController can
// neither flush it nor set its connection's deadlines.
type adv4Plain struct{ w http.ResponseWriter }

func (p adv4Plain) Header() http.Header         { return p.w.Header() }
func (p adv4Plain) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p adv4Plain) WriteHeader(code int)        { p.w.WriteHeader(code) }

// adv4PlainServer serves the rig's handler through adv4Plain; with small,
// its connections get a 64 KiB send buffer, so that a client that does not
// read blocks the send.
func adv4PlainServer(small bool) func(*http.Server) {
	return func(s *http.Server) {
		h := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { h.ServeHTTP(adv4Plain{w}, req) })
		if small {
			adv4SmallBuffers(s)
		}
	}
}

func adv4SmallBuffers(s *http.Server) {
	s.ConnState = func(c net.Conn, st http.ConnState) {
		if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
			tc.SetWriteBuffer(64 << 10)
		}
	}
}

// adv4JobInfo returns the JobInfo of loc in ScannerStatus.
func adv4JobInfo(t *testing.T, r *rig, loc string) (string, []string) {
	t.Helper()
	for _, j := range adv3GetStatus(t, r).Jobs {
		if j.URI == loc {
			return j.State, j.Reasons
		}
	}
	t.Fatalf("job %s not in ScannerStatus", loc)
	return "", nil
}

// TestAdv4PlainWriterDelivers: served through a ResponseWriter that
// cannot flush, a page sent whole is delivered, not counted as a client
// that went away.
func TestAdv4PlainWriterDelivers(t *testing.T) {
	r := newRigServer(t, nil, adv4PlainServer(false))
	for _, dpi := range []int{75, 200} { // a small page, and one larger than the socket buffers
		loc := r.post(t, settings("Grayscale8", dpi, "image/png", 0, 0, 0, 0))
		resp, doc := r.fetch(t, loc)
		if resp.StatusCode != http.StatusOK || int64(len(doc)) != resp.ContentLength {
			t.Fatalf("%d dpi: status %d, %d of %d bytes", dpi, resp.StatusCode, len(doc), resp.ContentLength)
		}
		if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
			t.Errorf("%d dpi: report %v (cause %v), want delivered", dpi, rep.Outcome, rep.Cause)
		}
		if state, _ := adv4JobInfo(t, r, loc); state != "Completed" {
			t.Errorf("%d dpi: job listed %s, want Completed", dpi, state)
		}
	}
}

// adv4Stall asks for loc's page (about 4 MB at 200 dpi) on a raw
// connection with a small receive buffer, waits for the first byte of the
// answer, and reads no more: the send blocks.
func adv4Stall(t *testing.T, r *rig, loc string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\n\r\n", loc)
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		t.Fatalf("no answer to the stalled NextDocument: %v", err)
	}
	return c
}

// adv4AwaitFree posts small jobs until one is created, for up to limit,
// and returns how long that took; the job is fetched and its report read.
func adv4AwaitFree(t *testing.T, r *rig, limit time.Duration, what string) time.Duration {
	t.Helper()
	small := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	t0 := time.Now()
	for {
		resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", small)
		if resp.StatusCode == http.StatusCreated {
			advFinishJob(t, r, resp.Header.Get("Location"))
			return time.Since(t0)
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s: POST: status %d (%s), want 503 or 201", what, resp.StatusCode, strings.TrimSpace(body))
		}
		if time.Since(t0) > limit {
			t.Fatalf("%s: the scanner is still busy %v later (%s), driver %v", what, limit, strings.TrimSpace(body), r.dev.d.State())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAdv4PlainWriterStalledReader: served through a ResponseWriter that
// hides the connection's write deadline, a client that stops reading its
// page holds the scanner about JobTimeout without progress, not for ever;
// the job is canceled as by a client that went away.
func TestAdv4PlainWriterStalledReader(t *testing.T) {
	const jobTimeout = time.Second
	r := newRigServer(t, func(c *escl.Config) { c.JobTimeout = jobTimeout }, adv4PlainServer(true))
	loc := r.post(t, settings("Grayscale8", 200, "image/png", 0, 0, 0, 0))
	adv4Stall(t, r, loc)
	select {
	case rep := <-r.reports:
		if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseClientGone {
			t.Errorf("report: %v by %v, want canceled by client gone", rep.Outcome, rep.Cause)
		}
	case <-time.After(15 * time.Second):
		r.do(t, "DELETE", loc, "", "") // may not free it either
		t.Fatalf("the job of a client that stopped reading still holds the scanner 15 s later (JobTimeout %v)", jobTimeout)
	}
	if state, reasons := adv4JobInfo(t, r, loc); state != "Canceled" {
		t.Errorf("job listed %s %v, want Canceled", state, reasons)
	}
	adv4AwaitFree(t, r, 10*time.Second, "after the stalled reader")
}

// TestAdv4PlainWriterDeleteStalled: the DELETE of a job whose page a
// stalled client holds, through a ResponseWriter that cannot cut the
// send, frees the scanner within CancelTimeout, long before JobTimeout.
func TestAdv4PlainWriterDeleteStalled(t *testing.T) {
	r := newRigServer(t, func(c *escl.Config) { c.JobTimeout = time.Hour; c.CancelTimeout = time.Second },
		adv4PlainServer(true))
	loc := r.post(t, settings("Grayscale8", 200, "image/png", 0, 0, 0, 0))
	adv4Stall(t, r, loc)
	// Let the send fill the socket buffers and block in a write (a
	// DELETE before that is seen between two chunks, and ends the send).
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "DELETE", r.srv.URL+loc, nil)
	if resp, err := r.srv.Client().Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	select {
	case rep := <-r.reports:
		if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseDelete {
			t.Errorf("report: %v by %v, want canceled by delete", rep.Outcome, rep.Cause)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the deleted job still holds the scanner 15 s later (CancelTimeout 1 s, JobTimeout an hour)")
	}
	adv4AwaitFree(t, r, 10*time.Second, "after the DELETE")
}

// TestAdv4VanishedClientHoldsUntilJobTimeout: a client that posts a job
// and never comes back (no NextDocument, no DELETE) holds the scanner
// while its page waits, JobTimeout and no longer: meanwhile POST gets 503
// and ScannerStatus says Processing; after, a POST is created, the old job
// is listed Aborted (JobTimedOut), and its late NextDocument gets 410.
func TestAdv4VanishedClientHoldsUntilJobTimeout(t *testing.T) {
	const jobTimeout = 3 * time.Second
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = jobTimeout })
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	adv3WaitJob(t, r, loc, "JobTransferring") // scanned: the page waits
	ready := time.Now()
	resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	if time.Since(ready) < jobTimeout/2 { // a loaded machine may be slow: judge only an early answer
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("POST while the page waits: status %d (%s), Retry-After %q; want 503 with Retry-After",
				resp.StatusCode, strings.TrimSpace(body), resp.Header.Get("Retry-After"))
		}
		if st := adv3GetStatus(t, r); st.State != "Processing" {
			t.Errorf("ScannerStatus while the page waits: %s, want Processing", st.State)
		}
	}
	if resp.StatusCode == http.StatusCreated { // keep the rig consistent
		advFinishJob(t, r, resp.Header.Get("Location"))
	}
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeExpired || rep.Cause != escl.CauseNone {
		t.Errorf("unfetched job: %v (cause %v), want expired", rep.Outcome, rep.Cause)
	}
	if d := rep.End.Sub(rep.Encoded); d < jobTimeout {
		t.Errorf("the page waited %v, want JobTimeout (%v)", d, jobTimeout)
	}
	if state, reasons := adv4JobInfo(t, r, loc); state != "Aborted" || len(reasons) != 1 || reasons[0] != "JobTimedOut" {
		t.Errorf("expired job listed %s %v, want Aborted [JobTimedOut]", state, reasons)
	}
	if st := adv3GetStatus(t, r); st.State != "Idle" {
		t.Errorf("ScannerStatus after the job expired: %s, want Idle", st.State)
	}
	adv4AwaitFree(t, r, 10*time.Second, "after JobTimeout")
	if resp, _ := r.do(t, "GET", loc+"/NextDocument", "", ""); resp.StatusCode != http.StatusGone {
		t.Errorf("NextDocument of the expired job: %d, want 410", resp.StatusCode)
	}
	if resp, _ := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("DELETE of the expired job: %d, want 200", resp.StatusCode)
	}
}

// TestAdv4DroppedDownloadCancels: a client that drops its connection part
// way through the page (more than the socket buffers hold is left)
// cancels the job at once: the report says canceled by the client's
// going, and the scanner is free long before JobTimeout (an hour here).
func TestAdv4DroppedDownloadCancels(t *testing.T) {
	r := newRigServer(t, func(c *escl.Config) { c.JobTimeout = time.Hour }, adv4SmallBuffers)
	loc := r.post(t, settings("Grayscale8", 200, "image/png", 0, 0, 0, 0)) // about 4 MB
	c, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\n\r\n", loc)
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ContentLength < 1<<20 {
		t.Fatalf("NextDocument: status %d, %d bytes; want 200 and a page over 1 MiB", resp.StatusCode, resp.ContentLength)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 100<<10); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetLinger(0) // a reset, as when the client is killed
	c.Close()
	select {
	case rep := <-r.reports:
		if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseClientGone {
			t.Errorf("report: %v by %v, want canceled by client gone", rep.Outcome, rep.Cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no report 10 s after the client dropped its download (JobTimeout an hour)")
	}
	if state, reasons := adv4JobInfo(t, r, loc); state != "Canceled" {
		t.Errorf("job listed %s %v, want Canceled", state, reasons)
	}
	r.waitState(t, minidrv.Idle)
	adv4AwaitFree(t, r, 10*time.Second, "after the dropped download")
}
