package escl_test

// The job lifecycle when the handler is served through a ResponseWriter
// that hides the connection (a middleware's wrapper): no flushing, no
// write deadlines.

import (
	"net"
	"net/http"
	"testing"

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
