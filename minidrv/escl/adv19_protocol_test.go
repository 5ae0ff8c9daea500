package escl_test

// Adversarial pass 19: what a request body may hold around its root
// element, and the page size sane-airscan expects for a region it asks
// for in millimetres.

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// TestAdv19MarkupOutsideRoot: the doc refuses with 400 "XML that is
// malformed, not one scan:ScanSettings element", and parseScanSettings
// promises to refuse "anything but exactly one well-formed ScanSettings
// element (comments, processing instructions and white space aside)".
// Text after the root element is refused so; the same text before it, a
// CDATA section before it, or a second XML declaration (one that is not
// at the very start: not well-formed XML) must be refused the same way,
// not turned into a job. Comments, processing instructions, white space,
// a byte order mark and a document type declaration before the root are
// well-formed, and accepted.
func TestAdv19MarkupOutsideRoot(t *testing.T) {
	r := newRig(t, nil)
	good := advBody(advSmall + advRegion("0", "0", "300", "300"))
	decl := `<?xml version="1.0" encoding="UTF-8"?>` + "\n"
	root := strings.TrimPrefix(good, decl)
	if root == good {
		t.Fatal("advBody no longer starts with its XML declaration")
	}
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		// Controls.
		{"text after the root", good + "junk", 400},
		{"comment, PI and space before the root", decl + "<!-- c --><?x y?>\n \t" + root, 201},
		{"byte order mark", "\ufeff" + good, 201},
		{"doctype before the root", decl + "<!DOCTYPE x>" + root, 201},
		// Not well-formed: text outside the root element, a declaration
		// not at the start.
		{"text before the root", "junk" + good, 400},
		{"text between declaration and root", decl + "junk" + root, 400},
		{"CDATA before the root", decl + "<![CDATA[junk]]>" + root, 400},
		{"second XML declaration", decl + decl + root, 400},
		{"XML declaration after a comment", "<!-- c -->" + good, 400},
	} {
		resp, body := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", tc.body)
		if resp.StatusCode == http.StatusCreated {
			advFinishJob(t, r, resp.Header.Get("Location"))
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d (%.200s), want %d", tc.name, resp.StatusCode, strings.TrimSpace(body), tc.want)
		}
	}
	advCheckWorks(t, r)
}

// TestAdv19ScanimageRegionSize: regions scanimage asks for in
// millimetres, not whole inches. sane-airscan sends the region's offset
// and length in 1/300 inch, each rounded (round(mm*300/25.4)), and
// predicts the page's size from the millimetres (round(mm*dpi/25.4)): it
// pads or clips the page it gets to that size. The server rounds the
// length it got (toPixels), which agrees with the prediction wherever
// the 1/300-inch length can tell (at 300 dpi always); where it cannot (13
// mm at 200 dpi: 153.5/300 in, sent as 154, is 102.7 pixels, where the
// client's own 102.4 gives 102), the two differ by one pixel, and that
// one is pinned too. The old rule (both edges rounded) gave 196 where the
// client predicts 197 (33.3 mm at 150 dpi). Where they agree, scanimage's
// PNG is the very page the scanner sent (checkImage).
func TestAdv19ScanimageRegionSize(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	dir := t.TempDir()
	for i, tc := range []struct {
		mode, escl       string
		dpi              int
		l, top, wid, hei float64 // scanimage's -l -t -x -y, mm
	}{
		{"Gray", "Grayscale8", 75, 3, 7, 33.3, 21.7},
		{"Gray", "Grayscale8", 150, 3, 7, 33.3, 21.7},
		{"Gray", "Grayscale8", 200, 1, 1, 41, 13},
		{"Color", "RGB24", 300, 10.1, 0.5, 17, 9},
	} {
		region := []string{"-l", fmt.Sprint(tc.l), "-t", fmt.Sprint(tc.top), "-x", fmt.Sprint(tc.wid), "-y", fmt.Sprint(tc.hei)}
		out := filepath.Join(dir, fmt.Sprintf("%d.png", i))
		msg, err := scanCmd(bin, env, out, tc.mode, tc.dpi, region...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s at %d dpi, region %v: scanimage: %v\n%s", tc.mode, tc.dpi, region, err, msg)
		}
		rep := r.report(t)
		if rep.Outcome != escl.OutcomeDelivered {
			t.Fatalf("%s at %d dpi, region %v: job %v (%v)", tc.mode, tc.dpi, region, rep.Outcome, rep.Err)
		}
		client := func(mm float64) int { return int(math.Round(mm * float64(tc.dpi) / 25.4)) }
		server := func(mm float64) int {
			units := math.Round(mm * 300 / 25.4) // what sane-airscan sends
			return int(math.Round(units * float64(tc.dpi) / 300))
		}
		if rep.Settings.Width != server(tc.wid) || rep.Settings.Height != server(tc.hei) {
			t.Errorf("%s at %d dpi, region %v mm: the server sent %dx%d, want %dx%d (each length rounded)",
				tc.mode, tc.dpi, region, rep.Settings.Width, rep.Settings.Height, server(tc.wid), server(tc.hei))
		}
		img := readPNG(t, out)
		if got := img.Bounds().Size(); got.X != client(tc.wid) || got.Y != client(tc.hei) {
			t.Errorf("%s at %d dpi, region %v mm: scanimage wrote %v, want %dx%d (sane-airscan's prediction)",
				tc.mode, tc.dpi, region, got, client(tc.wid), client(tc.hei))
			continue
		}
		if client(tc.wid) == server(tc.wid) && client(tc.hei) == server(tc.hei) {
			checkImage(t, r.dev, img, tc.escl)
		}
	}
	waitIdle(t, r)
}

// TestAdv19StatusFinalStatesStick: a client polls ScannerStatus without
// pause while jobs end every way a client ends them (page fetched, DELETE
// while scanning, DELETE of the waiting page, NextDocument dropped while
// scanning). A job's JobState, once final (Completed, Canceled, Aborted),
// never changes in a later answer, and its last listing agrees with its
// outcome: Completed for a page delivered, Canceled (JobCanceledByUser)
// for a canceled job. Every answer is well-formed, its State Idle or
// Processing.
func TestAdv19StatusFinalStatesStick(t *testing.T) {
	r := newRig(t, nil)
	type obs struct{ state, reason string }
	var mu sync.Mutex
	seen := map[string][]obs{} // by job UUID, in order
	stop := make(chan struct{})
	var wg sync.WaitGroup
	polls := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := r.srv.Client().Get(r.base + "/ScannerStatus")
			if err != nil {
				t.Errorf("ScannerStatus: %v", err)
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("ScannerStatus: status %d, %v", resp.StatusCode, err)
				return
			}
			var st adv3Status
			if err := xml.Unmarshal(body, &st); err != nil {
				t.Errorf("ScannerStatus: %v\n%s", err, body)
				return
			}
			if st.State != "Idle" && st.State != "Processing" {
				t.Errorf("ScannerStatus State %q", st.State)
			}
			mu.Lock()
			polls++
			for _, j := range st.Jobs {
				reason := strings.Join(j.Reasons, ",")
				h := seen[j.UUID]
				if n := len(h); n > 0 {
					last := h[n-1]
					if final := last.state == "Completed" || last.state == "Canceled" || last.state == "Aborted"; final && (last != obs{j.State, reason}) {
						t.Errorf("job %s: JobState %s (%s) after the final %s (%s)", j.UUID, j.State, reason, last.state, last.reason)
					}
					if last == (obs{j.State, reason}) {
						continue
					}
				}
				seen[j.UUID] = append(h, obs{j.State, reason})
			}
			mu.Unlock()
		}
	})
	const rounds = 12
	r.dev.setBandwidth(200 << 10) // a 75x75 gray page takes about 30 ms
	body := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	want := map[string]escl.Outcome{}
	for i := range rounds {
		loc := r.post(t, body)
		id := strings.TrimPrefix(loc, escl.DefaultPrefix+"/ScanJobs/")
		switch i % 4 {
		case 0: // fetched
			if g := r.advNextDoc(context.Background(), loc); !g.whole {
				t.Fatalf("round %d: NextDocument: %+v", i, g)
			}
		case 1: // DELETE while it scans
			time.Sleep(10 * time.Millisecond) // most often mid-scan; a page already scanned is canceled all the same
			if resp, b := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d: DELETE: %d %s", i, resp.StatusCode, b)
			}
		case 2: // DELETE of the page waiting to be fetched
			deadline := time.Now().Add(10 * time.Second)
			for r.dev.acquisitions() < i+1 || r.dev.d.State() != minidrv.Idle { // scanned, unlocked
				if time.Now().After(deadline) {
					t.Fatalf("round %d: the page was not scanned within 10 s", i)
				}
				time.Sleep(time.Millisecond)
			}
			if resp, b := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != http.StatusOK {
				t.Fatalf("round %d: DELETE: %d %s", i, resp.StatusCode, b)
			}
		case 3: // NextDocument dropped while it scans
			ctx, cancel := context.WithCancel(context.Background())
			arrived := r.expectNextDoc()
			done := make(chan advGet, 1)
			go func() { done <- r.advNextDoc(ctx, loc) }()
			waitNextDoc(t, arrived)
			time.Sleep(5 * time.Millisecond)
			cancel()
			<-done
		}
		rep := r.report(t)
		want[id] = rep.Outcome
		r.waitState(t, minidrv.Idle)
	}
	time.Sleep(20 * time.Millisecond) // a few more polls after the last job
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for id, outcome := range want {
		h := seen[id]
		if len(h) == 0 {
			t.Errorf("job %s (%v) never listed in %d polls", id, outcome, polls)
			continue
		}
		last := h[len(h)-1]
		switch outcome {
		case escl.OutcomeDelivered:
			if last.state != "Completed" {
				t.Errorf("job %s delivered, last listed %s (%s); history %v", id, last.state, last.reason, h)
			}
		case escl.OutcomeCanceled:
			if last != (obs{"Canceled", "JobCanceledByUser"}) {
				t.Errorf("job %s canceled, last listed %s (%s); history %v", id, last.state, last.reason, h)
			}
		default:
			t.Errorf("job %s: outcome %v", id, outcome)
		}
	}
	t.Logf("%d polls", polls)
	r.dev.setBandwidth(0)
	advCheckWorks(t, r)
}
