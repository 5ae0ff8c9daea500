package escl_test

// Bugs of the handler that adversarial use found, fixed since: each test
// failed before its fix, and its comment says what broke and where (the
// line numbers are of the code before the fix).

import (
	"context"
	"encoding/xml"
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

// TestAdvHeadConsumesPage: HEAD is a safe method (RFC 9110 §9.3.2),
// yet a HEAD of a job's NextDocument takes the page: net/http routes HEAD
// to the "GET .../NextDocument" pattern (escl.go:177), serveNextDocument
// moves the job to jobSending (escl.go:499), writes the page into a
// response whose body net/http discards for HEAD (the writes succeed), and
// marks it delivered (escl.go:554). The client that then GETs the page
// gets 404 "no more documents" and the job is reported delivered though
// no byte of it left the server. A HEAD (a proxy's or a monitor's probe)
// thus loses a scan. Expected: the page stays for the GET (HEAD answered
// without consuming it, or refused with 405).
func TestAdvHeadConsumesPage(t *testing.T) {
	r := newRig(t, nil)
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	resp, _ := r.do(t, "HEAD", loc+"/NextDocument", "", "")
	t.Logf("HEAD NextDocument: status %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
	resp, body := r.do(t, "GET", loc+"/NextDocument", "", "")
	if resp.StatusCode != http.StatusOK || len(body) == 0 {
		t.Errorf("GET NextDocument after a HEAD: status %d (%q), want 200 with the page: the HEAD consumed it", resp.StatusCode, strings.TrimSpace(body))
	}
	rep := r.report(t)
	t.Logf("report: %v, %d bytes", rep.Outcome, rep.Bytes)
}

// advStalledReader starts a job whose page (about 4 MB) is far larger than
// the socket buffers, and a raw client that asks for it and never reads:
// the send blocks. It returns the job's location and the connection.
func advStalledReader(t *testing.T, jobTimeout time.Duration) (*rig, string, net.Conn) {
	t.Helper()
	r := newRigServer(t, func(c *escl.Config) { c.JobTimeout = jobTimeout }, func(s *http.Server) {
		s.ConnState = func(c net.Conn, st http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
				tc.SetWriteBuffer(64 << 10)
			}
		}
	})
	loc := r.post(t, settings("Grayscale8", 200, "image/png", 0, 0, 0, 0))
	c, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\n\r\n", loc)
	// Wait until the page is being sent: the response's first bytes
	// arrive (peeked, not read on: the socket stays full).
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		t.Fatalf("no response to the stalled NextDocument: %v", err)
	}
	return r, loc, c
}

// TestAdvStalledReaderHoldsScanner: a client that asks for the page
// and then stops reading (a slowloris on the download, or a client that
// hung) holds the scanner for ever: every other client gets 503 "busy"
// long after JobTimeout, although the driver is idle. The send has no
// write deadline (escl.go:536, the write loop) and awaitDelivery waits for
// a send in progress without bound, re-arming its timer each JobTimeout
// (job.go:313, "being sent: wait for the end"). Only a DELETE of that job
// (whose ID the other clients do not know) or Shutdown frees it; cmd/scand
// sets no WriteTimeout either. Expected: a send that makes no progress is
// cut after a bound (JobTimeout or the like) and the scanner taken back.
func TestAdvStalledReaderHoldsScanner(t *testing.T) {
	const jobTimeout = 200 * time.Millisecond
	r, loc, _ := advStalledReader(t, jobTimeout)
	defer r.do(t, "DELETE", loc, "", "") // frees the scanner for the cleanup
	small := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	deadline := time.Now().Add(3 * time.Second) // 15 JobTimeouts
	for {
		resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", small)
		if resp.StatusCode == http.StatusCreated {
			r.do(t, "DELETE", resp.Header.Get("Location"), "", "")
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST %v after a client stopped reading its page (JobTimeout %v): status %d (%s), driver %v; want the scanner back",
				3*time.Second, jobTimeout, resp.StatusCode, strings.TrimSpace(body), r.dev.d.State())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAdvStatusIdleWhileBusy: while a job's page is being sent, the
// handler refuses every POST with 503 "the scanner is busy", but
// ScannerStatus says the scanner is Idle: serveStatus reports Processing
// only for jobScanning and jobReady, not jobSending (escl.go:328). A
// client that reads ScannerStatus to tell a busy scanner from an idle one
// is told Idle and then refused. Expected: Processing while a job holds
// the scanner.
func TestAdvStatusIdleWhileBusy(t *testing.T) {
	r, loc, _ := advStalledReader(t, escl.DefaultJobTimeout)
	defer r.do(t, "DELETE", loc, "", "")
	resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST while a page is sent: status %d (%s), want 503", resp.StatusCode, body)
	}
	_, doc := r.do(t, "GET", "/eSCL/ScannerStatus", "", "")
	var st struct {
		State string `xml:"State"`
	}
	if err := xml.Unmarshal([]byte(doc), &st); err != nil {
		t.Fatalf("parse status: %v", err)
	}
	if st.State != "Processing" {
		t.Errorf("ScannerStatus State %q while POST gets 503 busy, want Processing", st.State)
	}
}

// TestAdvClientGoneWithUnreadBody: a client that sends NextDocument
// with a request body (Content-Length, never sent) and goes away while
// the page is scanned is not noticed: the scan runs on to its end and
// nothing calls CancelPendingIO. serveNextDocument learns of a client's
// going only from r.Context() (escl.go:488), which net/http cancels on a
// closed connection only once the request body has been read to its end
// (its background read starts at the body's EOF); the handler never reads
// a NextDocument's body. The same client without a body cancels the job
// at once (TestClientGoneCancels). Expected: the job canceled
// (CauseClientGone) within seconds, as for any client that leaves.
func TestAdvClientGoneWithUnreadBody(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r) // 18 s of scan
	c, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	arrived := r.expectNextDoc()
	fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", loc)
	waitNextDoc(t, arrived)
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case rep := <-r.reports:
		if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseClientGone {
			t.Errorf("report: %v by %v, want canceled by client gone", rep.Outcome, rep.Cause)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the job still runs 5 s after its client left (driver %v), want it canceled", r.dev.d.State())
		// Free the scanner for the cleanup.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "DELETE", r.srv.URL+loc, nil)
		if resp, err := r.srv.Client().Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		r.report(t)
	}
	r.waitState(t, minidrv.Idle)
}
