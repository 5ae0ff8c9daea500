package escl_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// adv21Exit bounds how long scanimage may take to exit after a signal:
// sane-airscan alone waits 10 s for a NextDocument the server does not
// end, and milliseconds for one it ends.
const adv21Exit = 3 * time.Second

// adv21Traffic counts the requests scanimage sends, by kind, through the
// rig's server (newRigServer's srvMod).
type adv21Traffic struct {
	posts, deletes, nextDocs atomic.Int32
	// throttle, when set, makes NextDocument send its page slowly (4 KiB
	// every 2 ms) through a ResponseWriter that still unwraps to the
	// connection: the handler's deadlines and cuts work as without it.
	throttle atomic.Bool
	// sending is closed at the first write of a throttled page (see
	// expectSending).
	mu      sync.Mutex
	sending chan struct{}
}

func adv21Rig(t *testing.T, mod func(*escl.Config)) (*rig, *adv21Traffic) {
	tr := &adv21Traffic{}
	r := newRigServer(t, mod, func(s *http.Server) {
		inner := s.Handler
		s.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			switch {
			case req.Method == http.MethodPost:
				tr.posts.Add(1)
			case req.Method == http.MethodDelete:
				tr.deletes.Add(1)
			case strings.HasSuffix(req.URL.Path, "/NextDocument"):
				tr.nextDocs.Add(1)
				if tr.throttle.Load() {
					w = &adv21SlowWriter{ResponseWriter: w, tr: tr}
				}
			}
			inner.ServeHTTP(w, req)
		})
	})
	return r, tr
}

// adv21SlowWriter writes a page slowly; Unwrap gives the handler's
// ResponseController the connection.
type adv21SlowWriter struct {
	http.ResponseWriter
	tr *adv21Traffic
}

// expectSending returns a channel closed at the next write of a
// throttled page.
func (tr *adv21Traffic) expectSending() <-chan struct{} {
	ch := make(chan struct{})
	tr.mu.Lock()
	tr.sending = ch
	tr.mu.Unlock()
	return ch
}

func (s *adv21SlowWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *adv21SlowWriter) Write(p []byte) (int, error) {
	s.tr.mu.Lock()
	if s.tr.sending != nil {
		close(s.tr.sending)
		s.tr.sending = nil
	}
	s.tr.mu.Unlock()
	n := 0
	for len(p) > 0 {
		k := min(len(p), 4096)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[k:]
		time.Sleep(2 * time.Millisecond)
	}
	return n, nil
}

// adv21Status returns ScannerStatus's State and the JobState of the job
// with the given id ("" if not listed).
func adv21Status(t *testing.T, r *rig, id string) (state, jobState string) {
	t.Helper()
	resp, body := r.do(t, "GET", escl.DefaultPrefix+"/ScannerStatus", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ScannerStatus: %d", resp.StatusCode)
	}
	state = adv21Between(body, "<pwg:State>", "</pwg:State>")
	if id != "" {
		if i := strings.Index(body, "<pwg:JobUuid>"+id+"</pwg:JobUuid>"); i >= 0 {
			jobState = adv21Between(body[i:], "<pwg:JobState>", "</pwg:JobState>")
		}
	}
	return state, jobState
}

func adv21Between(s, a, b string) string {
	i := strings.Index(s, a)
	if i < 0 {
		return ""
	}
	s = s[i+len(a):]
	j := strings.Index(s, b)
	if j < 0 {
		return ""
	}
	return s[:j]
}

// TestAdv21ScanimageSIGINTAnyMoment sends SIGINT to scanimage at moments
// spread over its whole run (start-up, POST, the scan while NextDocument
// waits, the end): scanimage must exit well before sane-airscan's own 10 s
// wait, every job it made must end (canceled, or delivered when the page
// came first), the driver must be Idle, ScannerStatus must say Idle and
// list the job in a final state, and the next scan must be exact.
func TestAdv21ScanimageSIGINTAnyMoment(t *testing.T) {
	bin := scanimage(t)
	r, tr := adv21Rig(t, nil)
	env := saneConfig(t, r)
	r.dev.setBandwidth(1_500_000) // 75 dpi gray, 557 kB: about 0.4 s
	dir := t.TempDir()
	delays := []time.Duration{0, 15 * time.Millisecond, 60 * time.Millisecond, 200 * time.Millisecond, 450 * time.Millisecond}
	for i, d := range delays {
		d += time.Duration(rand.Int64N(int64(20 * time.Millisecond)))
		posts := tr.posts.Load()
		var stderr bytes.Buffer
		cmd := scanCmd(bin, env, filepath.Join(dir, "p.png"), "Gray", 75)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(d)
		took, err := interrupt(t, cmd, os.Interrupt, 10*time.Second)
		if took > adv21Exit {
			t.Errorf("SIGINT %d after %v: scanimage took %v to exit (sane-airscan's 10 s wait for a NextDocument not ended?)", i, d, took)
		}
		if tr.posts.Load() == posts {
			t.Logf("SIGINT %d after %v: no job; scanimage %v in %v", i, d, err, took)
			continue
		}
		rep := r.report(t)
		t.Logf("SIGINT %d after %v: job %v (%v), CancelPendingIO %v; scanimage %v in %v: %q",
			i, d, rep.Outcome, rep.Cause, rep.CancelCalled, err, took.Round(time.Millisecond), strings.TrimSpace(stderr.String()))
		switch rep.Outcome {
		case escl.OutcomeCanceled:
			if rep.CancelCalled && !errors.Is(rep.Err, minidrv.ErrCanceled) {
				t.Errorf("SIGINT %d: CancelPendingIO called but the acquisition ended with %v", i, rep.Err)
			}
		case escl.OutcomeDelivered:
		default:
			t.Errorf("SIGINT %d after %v: job %v (%v), want canceled or delivered", i, d, rep.Outcome, rep.Err)
		}
		r.waitState(t, minidrv.Idle)
		if st, js := adv21Status(t, r, rep.ID); st != "Idle" || (js != "Canceled" && js != "Completed") {
			t.Errorf("SIGINT %d: ScannerStatus %q, job %q; want Idle, and the job Canceled or Completed", i, st, js)
		}
	}
	r.dev.setBandwidth(0)
	r.scanGray(t, bin, env, "scan after the interrupted ones")
}

// TestAdv21ScanimageSIGINTMidDownload interrupts scanimage while the page
// is being sent (the scan is over: no CancelPendingIO): sane-airscan has
// not got the image, so it sends DELETE, which cuts the send; scanimage
// exits at once, the job is canceled by the DELETE, and the next scan is
// exact. SIGKILL there sends no DELETE: the connection's end cancels the
// job the same way.
func TestAdv21ScanimageSIGINTMidDownload(t *testing.T) {
	bin := scanimage(t)
	r, tr := adv21Rig(t, nil)
	env := saneConfig(t, r)
	for _, sig := range []os.Signal{os.Interrupt, os.Kill} {
		func() {
			tr.throttle.Store(true)
			sending := tr.expectSending()
			var stderr bytes.Buffer
			cmd := scanCmd(bin, env, filepath.Join(t.TempDir(), "p.png"), "Color", 75) // about 1.6 MB PNG: 0.8 s throttled
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-sending:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatal("the page was not being sent within 10 s")
			}
			time.Sleep(30 * time.Millisecond)
			took, err := interrupt(t, cmd, sig, 10*time.Second)
			if took > adv21Exit {
				t.Errorf("scanimage took %v to exit after %v mid-download", took, sig)
			}
			rep := r.report(t)
			t.Logf("%v mid-download: scanimage %v in %v (%q); job %v by %v, %d bytes, DELETEs %d, end %v after the cancel",
				sig, err, took.Round(time.Millisecond), strings.TrimSpace(stderr.String()), rep.Outcome, rep.Cause, rep.Bytes,
				tr.deletes.Load(), rep.End.Sub(rep.CancelAt).Round(time.Millisecond))
			want := escl.CauseDelete
			if sig == os.Kill {
				want = escl.CauseClientGone
			}
			if rep.Outcome != escl.OutcomeCanceled || rep.Cause != want {
				t.Errorf("%v: job %v by %v, want canceled by %v", sig, rep.Outcome, rep.Cause, want)
			}
			if rep.CancelCalled {
				t.Errorf("%v: CancelPendingIO called for a job whose scan was over", sig)
			}
			if d := rep.End.Sub(rep.CancelAt); d > time.Second {
				t.Errorf("%v: the job ended %v after the cancel, want at once", sig, d)
			}
			if sig == os.Interrupt {
				checkCanceledExit(t, err, stderr.String())
			}
			if st, js := adv21Status(t, r, rep.ID); st != "Idle" || js != "Canceled" {
				t.Errorf("%v: ScannerStatus %q, job %q; want Idle, Canceled", sig, st, js)
			}
			tr.throttle.Store(false)
			r.scanGray(t, bin, env, "scan after the cut download")
		}()
	}
}
