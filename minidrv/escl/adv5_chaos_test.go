package escl_test

// Adversarial round 5: many clients at once doing everything at seeded
// random moments (POST, NextDocument, DELETE of their own jobs and of
// others', ScannerStatus, clients that hang up mid-NextDocument), guessed
// and malformed job IDs, the device unplugged and plugged back under a
// driver that follows hotplug (ScannerStatus Down and back), JobTimeout
// expiring as the NextDocument arrives, and Shutdown racing all of it.

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv5Seed returns the test's seed (ADV5_SEED replays one), logged.
func adv5Seed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("ADV5_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ADV5_SEED: %v", err)
		}
		seed = s
	}
	t.Logf("seed %d (replay: ADV5_SEED=%d)", seed, seed)
	return seed
}

// adv5Modes are the colour modes the clients ask for.
var adv5Modes = []string{"Grayscale8", "RGB24", "BlackAndWhite1"}

// adv5Tally counts what the clients saw, under its mutex.
type adv5Tally struct {
	mu     sync.Mutex
	counts map[string]int
	locs   []string
}

func (c *adv5Tally) add(k string) {
	c.mu.Lock()
	c.counts[k]++
	c.mu.Unlock()
}

func (c *adv5Tally) pick(rng *rand.Rand) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.locs) == 0 {
		return ""
	}
	return c.locs[rng.IntN(len(c.locs))]
}

// adv5Client is one client's random walk: POST, NextDocument (whole, or
// hung up after a random delay), DELETE and ScannerStatus, on its own jobs
// and on the others'. Every answer must be one the package documents for
// that request; a page received whole must decode to the size asked for.
// stop ends the walk early.
func adv5Client(t *testing.T, r *rig, rng *rand.Rand, ops int, tally *adv5Tally, sizes *sync.Map, stop <-chan struct{}) {
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	do := func(ctx context.Context, method, path, body string) (int, http.Header, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, method, r.srv.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, nil, err
		}
		if body != "" {
			req.Header.Set("Content-Type", "text/xml")
		}
		resp, err := client.Do(req)
		if err != nil {
			return -1, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, err
	}
	for range ops {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		switch op := rng.IntN(10); {
		case op < 3: // POST
			mode := adv5Modes[rng.IntN(len(adv5Modes))]
			w, h := 150+rng.IntN(600), 150+rng.IntN(600)
			code, hdr, body, err := do(ctx, "POST", escl.DefaultPrefix+"/ScanJobs", settings(mode, 75, "image/png", 0, 0, w, h))
			switch {
			case err != nil:
				t.Errorf("POST: %v", err)
			case code == http.StatusCreated:
				loc := hdr.Get("Location")
				// The length maps to the nearest pixel at 75 dpi (offset 0).
				sizes.Store(loc, [2]int{(w*75 + 150) / 300, (h*75 + 150) / 300})
				tally.mu.Lock()
				tally.locs = append(tally.locs, loc)
				tally.counts["201"]++
				tally.mu.Unlock()
			case code == http.StatusServiceUnavailable:
				// Every 503 carries Retry-After (a busy scanner's is
				// promised; one shutting down says when to try again too).
				if hdr.Get("Retry-After") == "" {
					t.Errorf("POST 503 without Retry-After: %s", body)
				}
				if len(bytes.TrimSpace(body)) == 0 {
					t.Errorf("POST 503 without a reason")
				}
				tally.add("POST 503")
			default:
				t.Errorf("POST: status %d (%s)", code, bytes.TrimSpace(body))
			}
		case op < 6: // NextDocument, maybe hung up on
			loc := tally.pick(rng)
			if loc == "" {
				break
			}
			gctx, c2 := ctx, context.CancelFunc(func() {})
			hangUp := rng.IntN(3) == 0
			if hangUp {
				gctx, c2 = context.WithTimeout(ctx, time.Duration(rng.IntN(100000))*time.Microsecond)
			}
			code, _, body, err := do(gctx, "GET", loc+"/NextDocument", "")
			c2()
			switch {
			case err != nil && hangUp:
				tally.add("NextDocument hung up")
			case err != nil && code == http.StatusOK:
				// A send cut by another client's DELETE, or by
				// Shutdown: the connection is closed mid-page.
				tally.add("page cut")
			case err != nil:
				t.Errorf("NextDocument %s: %v", loc, err)
			case code == http.StatusOK:
				img, derr := png.Decode(bytes.NewReader(body))
				if derr != nil {
					t.Errorf("NextDocument %s: 200 with a page that does not decode: %v", loc, derr)
					break
				}
				if v, ok := sizes.Load(loc); ok {
					want := v.([2]int)
					if b := img.Bounds(); b.Dx() != want[0] || b.Dy() != want[1] {
						t.Errorf("NextDocument %s: page %dx%d, want %dx%d", loc, b.Dx(), b.Dy(), want[0], want[1])
					}
				}
				tally.add("page")
			case code == http.StatusNotFound, code == http.StatusGone:
				tally.add(fmt.Sprintf("NextDocument %d", code))
			default:
				t.Errorf("NextDocument %s: status %d (%s)", loc, code, bytes.TrimSpace(body))
			}
		case op < 8: // DELETE, of any client's job
			loc := tally.pick(rng)
			if loc == "" {
				break
			}
			code, _, body, err := do(ctx, "DELETE", loc, "")
			switch {
			case err != nil:
				t.Errorf("DELETE %s: %v", loc, err)
			case code == http.StatusNotFound:
				// A job the handler no longer keeps: its record expired,
				// or the handler was shut down (NextDocument says 404 as
				// well then).
				tally.add("DELETE 404")
			case code != http.StatusOK:
				t.Errorf("DELETE %s: status %d (%s)", loc, code, bytes.TrimSpace(body))
			default:
				tally.add("DELETE")
			}
		default: // ScannerStatus
			code, _, body, err := do(ctx, "GET", escl.DefaultPrefix+"/ScannerStatus", "")
			if err != nil || code != http.StatusOK {
				t.Errorf("ScannerStatus: %d %v", code, err)
				break
			}
			var st adv3Status
			if err := xml.Unmarshal(body, &st); err != nil {
				t.Errorf("ScannerStatus does not parse: %v", err)
				break
			}
			if st.State != "Idle" && st.State != "Processing" {
				t.Errorf("ScannerStatus State %q with the device present", st.State)
			}
			tally.add("status " + st.State)
		}
		cancel()
		time.Sleep(time.Duration(rng.IntN(5000)) * time.Microsecond)
	}
}

// adv5DrainReports waits until n job reports have come in all (the jobs
// left behind by the clients end by expiring, JobTimeout), and returns
// them.
func adv5DrainReports(t *testing.T, r *rig, n int) []escl.JobReport {
	t.Helper()
	var reps []escl.JobReport
	for len(reps) < n {
		reps = append(reps, r.report(t))
	}
	select {
	case rep := <-r.reports:
		t.Errorf("a report more than the %d jobs created: %+v", n, rep)
	case <-time.After(100 * time.Millisecond):
	}
	return reps
}

// TestAdv5RandomClients: eight clients walk at random through POST,
// NextDocument (some hanging up mid-wait or mid-page), DELETE of any
// client's job, and ScannerStatus, on a scanner slowed to a few MB/s.
// Every answer is a documented one; every page received whole decodes to
// the size asked for; every job created gets exactly one report, whose
// outcome is one of the four; canceled jobs' CancelPendingIO returned
// within CancelTimeout; the driver is left Idle, and a normal scan after
// is exact.
func TestAdv5RandomClients(t *testing.T) {
	seed := adv5Seed(t)
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = 2 * time.Second })
	r.dev.setBandwidth(4 << 20)
	tally := &adv5Tally{counts: map[string]int{}}
	var sizes sync.Map
	var wg sync.WaitGroup
	ops := 25
	if testing.Short() {
		ops = 10
	}
	for i := range 8 {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() { adv5Client(t, r, rng, ops, tally, &sizes, nil) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("the clients did not finish within 90 s; driver %v", r.dev.d.State())
	}
	tally.mu.Lock()
	created := tally.counts["201"]
	t.Logf("%v", tally.counts)
	tally.mu.Unlock()
	reps := adv5DrainReports(t, r, created)
	outcomes := map[string]int{}
	for _, rep := range reps {
		outcomes[rep.Outcome.String()+"/"+rep.Cause.String()]++
		switch rep.Outcome {
		case escl.OutcomeDelivered, escl.OutcomeExpired:
			if rep.Err != nil {
				t.Errorf("job %s %v with error %v", rep.ID, rep.Outcome, rep.Err)
			}
		case escl.OutcomeCanceled:
			if rep.CancelCalled && rep.CancelErr != nil {
				t.Errorf("job %s: CancelPendingIO: %v (took %v)", rep.ID, rep.CancelErr, rep.CancelTook)
			}
		default:
			t.Errorf("job %s: %v (%v): no device fault was injected", rep.ID, rep.Outcome, rep.Err)
		}
	}
	t.Logf("outcomes %v", outcomes)
	advCheckWorks(t, r)
}

// TestAdv5GuessedJobIDs: while a real job runs, NextDocument and DELETE
// on job IDs that are guessed, malformed, encoded, huge, or the real one
// spelled differently get 404 (or a redirect, 400 or 405 for paths
// net/http itself refuses or cleans), never 200 and never a cancel of the
// real job, whose page is then delivered whole.
func TestAdv5GuessedJobIDs(t *testing.T) {
	r := newRig(t, nil)
	r.dev.setBandwidth(2 << 20)
	loc := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 1200, 1200))
	id := strings.TrimPrefix(loc, escl.DefaultPrefix+"/ScanJobs/")
	ids := []string{
		"x", "0", "-1", strings.ToUpper(id), id + "x", id[:len(id)-1], " " + id, id + " ", id + "%20",
		url.PathEscape(id) + "%2F", "%2e%2e", "..%2FScannerStatus", "%00", id + "%00", "%ff%fe",
		strings.Repeat("a", 8000), "日本語", "00000000-0000-4000-8000-000000000000", "*", "{id}",
		"%7Bid%7D", id + ";x=1",
	}
	paths := []string{}
	for _, g := range ids {
		paths = append(paths, escl.DefaultPrefix+"/ScanJobs/"+g)
	}
	paths = append(paths, escl.DefaultPrefix+"/ScanJobs/", escl.DefaultPrefix+"/ScanJobs//NextDocument",
		escl.DefaultPrefix+"/ScanJobs/"+id+"/NextDocument/x", escl.DefaultPrefix+"/ScanJobs/"+id+"/../"+id)
	for _, p := range paths {
		for _, m := range []string{"GET", "DELETE"} {
			path := p
			if m == "GET" && !strings.HasSuffix(p, "/NextDocument") && !strings.HasSuffix(p, "/x") {
				path = p + "/NextDocument"
			}
			if path == loc+"/NextDocument" || (m == "DELETE" && path == loc) {
				continue
			}
			req, err := http.NewRequest(m, r.srv.URL+path, nil)
			if err != nil {
				continue // not a URL a client can send
			}
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Do(req)
			if err != nil {
				t.Errorf("%s %.80s: %v", m, path, err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed,
				http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			default:
				t.Errorf("%s %.80s: status %d", m, path, resp.StatusCode)
			}
		}
	}
	if st, _ := adv4JobInfo(t, r, loc); st != "Processing" {
		t.Errorf("the real job is %s after the guesses", st)
	}
	resp, doc := r.fetch(t, loc)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the real job: status %d", resp.StatusCode)
	}
	img, err := png.Decode(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("the real job: %v", err)
	}
	checkImage(t, r.dev, img, "Grayscale8")
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("the real job: %v (%v)", rep.Outcome, rep.Err)
	}
}

// adv5HotRig is a rig whose driver follows the simulated scanner's hotplug
// events (minidrvtest.SimHotplug), as scand's does the kernel's.
func adv5HotRig(t *testing.T, mod func(*escl.Config)) *rig {
	t.Helper()
	ring, err := ioring.New(ioring.Config{Entries: 256})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := usbsim.NewScanner(usbsim.Config{Serial: "ADV5ESCL"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc),
		Hotplug: minidrvtest.SimHotplug(sc), AbortTimeout: simAbortTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	r := &rig{dev: &simDevice{d: d, sc: sc}, reports: make(chan escl.JobReport, 64)}
	cfg := escl.Config{Driver: d, OnJobDone: func(rep escl.JobReport) { r.reports <- rep }}
	if mod != nil {
		mod(&cfg)
	}
	h, err := escl.NewHandler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.h = h
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/NextDocument") { // as newRigServer: expectNextDoc
			r.nextDocMu.Lock()
			for _, ch := range r.nextDocs {
				close(ch)
			}
			r.nextDocs = nil
			r.nextDocMu.Unlock()
		}
		h.ServeHTTP(w, req)
	}))
	r.base = r.srv.URL + escl.DefaultPrefix
	t.Cleanup(func() {
		r.srv.CloseClientConnections()
		r.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		sc.Resume()
		_ = sc.Replug()
		if err := d.Uninitialize(); err != nil {
			t.Errorf("Uninitialize: %v", err)
		}
		sc.Close()
		ring.Close()
	})
	return r
}

// TestAdv5StatusAcrossHotplug: with a driver that follows hotplug, the
// scanner is unplugged while idle, then while a job scans (its client
// waiting in NextDocument), then unplugged and plugged back in a flurry
// mid-job. ScannerStatus says Down while the device is away and Idle once
// it is back, by itself; a POST meanwhile gets 503 with Retry-After and a
// reason; the waiting NextDocument ends promptly with the scan's failure
// (500) or 410, the job is reported failed with ErrOffline, and the next
// job after the replug delivers an exact page.
func TestAdv5StatusAcrossHotplug(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 7))
	r := adv5HotRig(t, nil)
	down := func(what string) {
		t.Helper()
		adv3WaitStatus(t, r, "Down")
		resp, body := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", adv3Small)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || strings.TrimSpace(body) == "" {
			t.Errorf("%s: POST while Down: %d, Retry-After %q, %q", what, resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	back := func(what string) {
		t.Helper()
		if err := r.dev.sc.Replug(); err != nil {
			t.Fatal(err)
		}
		adv3WaitStatus(t, r, "Idle")
		r.waitState(t, minidrv.Idle)
		adv2NextJobExact(t, r)
	}

	// Idle.
	if err := r.dev.unplug(); err != nil {
		t.Fatal(err)
	}
	down("idle")
	back("idle")

	// Mid-job, the client waiting for the page; and a flurry.
	for round := range 6 {
		flurry := round%2 == 1
		what := fmt.Sprintf("round %d (flurry %v)", round, flurry)
		r.dev.setBandwidth(1 << 20)
		loc := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 1200, 1200))
		arrived := r.expectNextDoc()
		got := make(chan advGet, 1)
		go func() { got <- r.advNextDoc(context.Background(), loc) }()
		waitNextDoc(t, arrived)
		time.Sleep(time.Duration(rng.IntN(100000)) * time.Microsecond) // a random moment of the scan
		if err := r.dev.unplug(); err != nil {
			t.Fatal(err)
		}
		if flurry {
			for range 1 + rng.IntN(3) {
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				_ = r.dev.sc.Replug()
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
				_ = r.dev.unplug()
			}
		}
		t0 := time.Now()
		var g advGet
		select {
		case g = <-got:
		case <-time.After(simAbortTimeout + 10*time.Second):
			t.Fatalf("%s: NextDocument did not end after the unplug", what)
		}
		t.Logf("%s: NextDocument %d after %v", what, g.code, time.Since(t0))
		rep := r.report(t)
		switch {
		case g.whole: // the page was complete before the unplug
			if rep.Outcome != escl.OutcomeDelivered {
				t.Errorf("%s: page received whole, job %v", what, rep.Outcome)
			}
		case g.code == http.StatusInternalServerError:
			if rep.Outcome != escl.OutcomeFailed || !errors.Is(rep.Err, minidrv.ErrOffline) {
				t.Errorf("%s: job %v (%v), want failed with ErrOffline", what, rep.Outcome, rep.Err)
			}
		default:
			t.Errorf("%s: NextDocument %d (%v), job %v (%v)", what, g.code, g.err, rep.Outcome, rep.Err)
		}
		if r.dev.d.State() != minidrv.Idle {
			down(what)
		}
		back(what)
	}
}

// TestAdv5JobTimeoutRacesNextDocument: a page waits for its NextDocument
// for about JobTimeout, and the NextDocument comes at a random moment
// around the expiry. The client gets the whole page and the job is
// delivered, or 410 and the job is expired: never both, never neither,
// never a page cut short; the scanner takes the next job either way.
func TestAdv5JobTimeoutRacesNextDocument(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 8))
	const jt = 300 * time.Millisecond
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = jt })
	counts := map[string]int{}
	for round := range 16 {
		loc := r.post(t, adv3Small)
		// The page is ready once the job says it is transferring.
		deadline := time.Now().Add(15 * time.Second)
		for {
			st, reasons := adv4JobInfo(t, r, loc)
			if st != "Processing" || (len(reasons) > 0 && reasons[0] == "JobTransferring") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the page was not ready within 15 s", round)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(jt - 60*time.Millisecond + time.Duration(rng.IntN(120000))*time.Microsecond)
		g := r.advNextDoc(context.Background(), loc)
		rep := r.report(t)
		switch {
		case g.whole && rep.Outcome == escl.OutcomeDelivered:
			counts["delivered"]++
		case g.code == http.StatusGone && rep.Outcome == escl.OutcomeExpired:
			counts["expired"]++
		default:
			t.Errorf("round %d: NextDocument %d (%d of %d bytes, %v), job %v", round, g.code, g.n, g.clen, g.err, rep.Outcome)
		}
		r.waitState(t, minidrv.Idle)
	}
	t.Logf("%v", counts)
	advCheckWorks(t, r)
}

// TestAdv5ShutdownRacesClients: Shutdown at a random moment while eight
// clients walk at random (see adv5Client). Shutdown returns within
// CancelTimeout + slack, after which the driver is already unlocked
// (Idle: "waits until every job is over and the driver unlocked"), every
// POST gets 503, and every client's request in progress ends.
func TestAdv5ShutdownRacesClients(t *testing.T) {
	seed := adv5Seed(t)
	rng := rand.New(rand.NewPCG(seed, 9))
	for round := range 4 {
		r := newRig(t, func(c *escl.Config) { c.JobTimeout = 2 * time.Second })
		r.dev.setBandwidth(4 << 20)
		tally := &adv5Tally{counts: map[string]int{}}
		var sizes sync.Map
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 8 {
			crng := rand.New(rand.NewPCG(seed, uint64(100*round+i)))
			wg.Go(func() { adv5ShutdownClient(t, r, crng, tally, &sizes, stop) })
		}
		time.Sleep(time.Duration(rng.IntN(400000)) * time.Microsecond) // a random moment
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t0 := time.Now()
		err := r.h.Shutdown(ctx)
		took := time.Since(t0)
		cancel()
		st := r.dev.d.State()
		if err != nil {
			t.Fatalf("round %d: Shutdown: %v", round, err)
		}
		if took > escl.DefaultCancelTimeout+5*time.Second {
			t.Errorf("round %d: Shutdown took %v", round, took)
		}
		if st != minidrv.Idle {
			t.Errorf("round %d: driver %v when Shutdown returned, want Idle (unlocked)", round, st)
		}
		resp, _ := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", adv3Small)
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("round %d: POST after Shutdown: %d, Retry-After %q", round, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		close(stop)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: clients still waiting 30 s after Shutdown", round)
		}
		tally.mu.Lock()
		t.Logf("round %d: Shutdown %v; %v", round, took, tally.counts)
		tally.mu.Unlock()
	}
}

// adv5ShutdownClient walks as adv5Client does until stop, tolerating the
// 503s and 410s of a handler shut down under it.
func adv5ShutdownClient(t *testing.T, r *rig, rng *rand.Rand, tally *adv5Tally, sizes *sync.Map, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		adv5Client(t, r, rng, 1, tally, sizes, stop)
	}
}
