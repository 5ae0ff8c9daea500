package escl_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// logLines is an io.Writer for a slog handler: one record per Write, sent
// on the channel (dropped when it is full).
type logLines chan string

func (l logLines) Write(b []byte) (int, error) {
	select {
	case l <- string(b):
	default:
	}
	return len(b), nil
}

// waitLog waits for a log record that contains s.
func waitLog(tb testing.TB, l logLines, s string) string {
	tb.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case line := <-l:
			if strings.Contains(line, s) {
				return line
			}
		case <-deadline:
			tb.Fatalf("no log record with %q within 15 s", s)
		}
	}
}

// TestOnJobDonePanics: a panic in OnJobDone is logged, and neither ends the
// process nor leaves the handler or the driver busy.
func TestOnJobDonePanics(t *testing.T) {
	logs := make(logLines, 256)
	r := newRig(t, func(c *escl.Config) {
		c.Log = slog.New(slog.NewTextHandler(logs, nil))
		c.OnJobDone = func(rep escl.JobReport) { panic("boom in " + rep.ID) }
	})
	good := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	loc := r.post(t, good)
	if resp, _ := r.fetch(t, loc); resp.StatusCode != http.StatusOK {
		t.Fatalf("NextDocument: status %d", resp.StatusCode)
	}
	line := waitLog(t, logs, "OnJobDone panicked")
	id := strings.TrimPrefix(loc, "/eSCL/ScanJobs/")
	if !strings.Contains(line, "boom in "+id) || !strings.Contains(line, "level=ERROR") {
		t.Errorf("log record %q: want an error naming the panic", line)
	}
	// The handler took the next job: the panicking one is over.
	r.waitState(t, minidrv.Idle)
	loc = r.post(t, good)
	if resp, _ := r.fetch(t, loc); resp.StatusCode != http.StatusOK {
		t.Errorf("NextDocument of the next job: status %d", resp.StatusCode)
	}
	waitLog(t, logs, "OnJobDone panicked")
}

// TestShutdownFromOnJobDone: OnJobDone may call Shutdown, which does not
// wait for the job that calls it.
func TestShutdownFromOnJobDone(t *testing.T) {
	var h *escl.Handler
	done := make(chan error, 1)
	r := newRig(t, func(c *escl.Config) {
		c.OnJobDone = func(escl.JobReport) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done <- h.Shutdown(ctx)
		}
	})
	h = r.h
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	if resp, _ := r.fetch(t, loc); resp.StatusCode != http.StatusOK {
		t.Fatalf("NextDocument: status %d", resp.StatusCode)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown from OnJobDone: %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("Shutdown from OnJobDone did not return within 15 s")
	}
	if resp, _ := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST after Shutdown: status %d, want 503", resp.StatusCode)
	}
}

// TestPrefixSyntax: NewHandler refuses a prefix that is not a plain path
// (one ServeMux would read as a pattern, or would never route to) with an
// error, and serves one that is.
func TestPrefixSyntax(t *testing.T) {
	dev := newSimDevice(t, simAbortTimeout)
	newHandler := func(prefix string) (h *escl.Handler, err error) {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("panic: %v", v)
				t.Errorf("NewHandler(Prefix %q) panicked: %v", prefix, v)
			}
		}()
		return escl.NewHandler(escl.Config{Driver: dev.d, Prefix: prefix})
	}
	for _, p := range []string{
		"eSCL", "/", "/eSCL/", "/x{$}", "/{id}", "/a b/{x}", "/a{b}c", "/a}", "/a%2Fb",
		"/a//b", "/a/./b", "/a/..", "/a\tb", "/\u00e9", "/a?b", "/a#b", "/a\\b",
	} {
		if _, err := newHandler(p); err == nil {
			t.Errorf("NewHandler(Prefix %q): no error, want one", p)
		} else if !strings.HasPrefix(err.Error(), "escl: prefix ") {
			t.Errorf("NewHandler(Prefix %q): %v, want an escl: prefix error", p, err)
		}
	}
	for _, p := range []string{"/eSCL", "/scanner/eSCL", "/a-b_c.d~e", "/x!$&'()*+,;=:@"} {
		h, err := newHandler(p)
		if err != nil {
			t.Errorf("NewHandler(Prefix %q): %v", p, err)
			continue
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", p+"/ScannerCapabilities", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("Prefix %q: GET ScannerCapabilities: status %d, want 200", p, rec.Code)
		}
	}
}

// TestUninitializedDriver: a POST to a handler whose driver is not
// initialized gets 503 (the scanner cannot take jobs now), not 409 (the
// request conflicts with the scanner); the job runs once it is again.
func TestUninitializedDriver(t *testing.T) {
	r := newRig(t, nil)
	if err := r.dev.d.Uninitialize(); err != nil {
		t.Fatalf("Uninitialize: %v", err)
	}
	good := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", good)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "not available") {
		t.Errorf("POST to an uninitialized driver: status %d (%s), want 503, not available", resp.StatusCode, strings.TrimSpace(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.dev.d.Initialize(ctx); err != nil {
		t.Fatalf("Initialize: %v", err)
	}
	loc := r.post(t, good)
	if resp, _ := r.fetch(t, loc); resp.StatusCode != http.StatusOK {
		t.Errorf("NextDocument after Initialize: status %d", resp.StatusCode)
	}
	r.report(t)
}

// TestShutdownNilContext: Shutdown(nil) shuts down, as with a context that
// never ends.
func TestShutdownNilContext(t *testing.T) {
	r := newRig(t, nil)
	var ctx context.Context // nil: what the test is about
	err := func() (err error) {
		defer func() {
			if v := recover(); v != nil {
				err = fmt.Errorf("panic: %v", v)
			}
		}()
		return r.h.Shutdown(ctx)
	}()
	if err != nil {
		t.Errorf("Shutdown(nil): %v", err)
	}
	if resp, _ := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST after Shutdown(nil): status %d, want 503", resp.StatusCode)
	}
}

// TestZeroHandler: a Handler not made by NewHandler answers 500 with the
// reason instead of panicking.
func TestZeroHandler(t *testing.T) {
	var h escl.Handler
	rec := httptest.NewRecorder()
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("ServeHTTP of a zero Handler panicked: %v", v)
			}
		}()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/eSCL/ScannerStatus", nil))
	}()
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "NewHandler") {
		t.Errorf("zero Handler: status %d (%s), want 500 naming NewHandler", rec.Code, strings.TrimSpace(rec.Body.String()))
	}
	if err := h.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of a zero Handler: %v", err)
	}
}
