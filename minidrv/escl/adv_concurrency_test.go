package escl_test

// Adversarial concurrency: many clients at once, cancels at random
// moments, clients that go away, and jobs in every state asked for again.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// advGet is the result of a NextDocument.
type advGet struct {
	code  int
	n     int   // body bytes read
	clen  int64 // Content-Length
	err   error // the request or the body read
	whole bool  // 200 and the whole body read
}

func (r *rig) advNextDoc(ctx context.Context, loc string) advGet {
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL+loc+"/NextDocument", nil)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		return advGet{code: -1, err: err}
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	g := advGet{code: resp.StatusCode, n: int(n), clen: resp.ContentLength, err: err}
	g.whole = g.code == 200 && err == nil && resp.ContentLength == n
	return g
}

// TestAdvConcurrentPosts: many clients POST at once: exactly one gets the
// scanner (201), every other one 503 with Retry-After, as sane-airscan
// expects of a busy scanner; then the one job completes and the scanner
// takes the next.
func TestAdvConcurrentPosts(t *testing.T) {
	r := newRig(t, nil)
	body := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	for round := range 3 {
		const n = 16
		type res struct {
			code  int
			loc   string
			retry string
		}
		out := make(chan res, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				req, _ := http.NewRequest("POST", r.srv.URL+"/eSCL/ScanJobs", strings.NewReader(body))
				req.Header.Set("Content-Type", "text/xml")
				resp, err := r.srv.Client().Do(req)
				if err != nil {
					out <- res{code: -1}
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				out <- res{resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("Retry-After")}
			}()
		}
		close(start)
		wg.Wait()
		close(out)
		var locs []string
		for x := range out {
			switch x.code {
			case http.StatusCreated:
				locs = append(locs, x.loc)
			case http.StatusServiceUnavailable:
				if x.retry == "" {
					t.Errorf("round %d: 503 without Retry-After", round)
				}
			default:
				t.Errorf("round %d: status %d, want 201 or 503", round, x.code)
			}
		}
		// A POST may come after the first job ended (the page waits for
		// NextDocument, so it cannot): exactly one.
		if len(locs) != 1 {
			t.Fatalf("round %d: %d jobs created by %d concurrent POSTs, want 1", round, len(locs), n)
		}
		if g := r.advNextDoc(context.Background(), locs[0]); !g.whole {
			t.Fatalf("round %d: NextDocument: %+v", round, g)
		}
		if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
			t.Errorf("round %d: %v", round, rep.Outcome)
		}
	}
	advCheckWorks(t, r)
}

// TestAdvDeleteAtRandomMoments: a DELETE at a random moment of a job (its
// scan, its encoding, its send) while a client waits for or reads the
// page. The client and the report agree: a page received whole is
// delivered, anything else canceled; CancelPendingIO, when called, did
// not fail; the driver is idle after every job, and the next one works.
func TestAdvDeleteAtRandomMoments(t *testing.T) {
	r := newRig(t, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	delivered, canceled, called := 0, 0, 0
	for i := range 16 {
		r.dev.setBandwidth(int64(2_000_000 + rng.IntN(4_000_000)))
		loc := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 1200, 900)) // 600x450: 270 KB
		got := make(chan advGet, 1)
		go func() { got <- r.advNextDoc(context.Background(), loc) }()
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		if resp, body := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != 200 {
			t.Errorf("job %d: DELETE status %d (%s)", i, resp.StatusCode, body)
		}
		var g advGet
		select {
		case g = <-got:
		case <-time.After(15 * time.Second):
			t.Fatalf("job %d: NextDocument still runs 15 s after the DELETE", i)
		}
		rep := r.report(t)
		switch rep.Outcome {
		case escl.OutcomeDelivered:
			delivered++
			if !g.whole {
				t.Errorf("job %d: reported delivered, but the client got %+v", i, g)
			}
		case escl.OutcomeCanceled:
			canceled++
			if g.whole {
				t.Errorf("job %d: the client got the whole page, but the job is reported canceled", i)
			}
			if g.code == 200 && g.err == nil {
				t.Errorf("job %d: canceled, yet the client saw a clean 200 of %d/%d bytes", i, g.n, g.clen)
			}
			if g.code != 200 && g.code != http.StatusGone && g.code != -1 {
				t.Errorf("job %d: canceled; NextDocument status %d, want 410 (or a cut 200)", i, g.code)
			}
			if rep.CancelCalled {
				called++
				if rep.CancelErr != nil {
					t.Errorf("job %d: CancelPendingIO: %v", i, rep.CancelErr)
				}
			}
		default:
			t.Errorf("job %d: outcome %v (%v)", i, rep.Outcome, rep.Err)
		}
		r.waitState(t, minidrv.Idle)
	}
	t.Logf("%d delivered, %d canceled (%d while scanning)", delivered, canceled, called)
	r.dev.setBandwidth(0)
	advCheckWorks(t, r)
}

// TestAdvManyCancelsAtOnce: many DELETEs and NextDocuments of one running
// job at once, and a client that drops: each DELETE answers 200 once the
// driver is idle, every NextDocument ends, CancelPendingIO runs once.
func TestAdvManyCancelsAtOnce(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	var wg sync.WaitGroup
	codes := make(chan int, 64)
	for range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			codes <- r.advNextDoc(context.Background(), loc).code
		}()
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("DELETE", r.srv.URL+loc, nil)
			resp, err := r.srv.Client().Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				codes <- 1000 + resp.StatusCode
			}
			if s := r.dev.d.State(); s.Busy() {
				codes <- 2000 // answered before the driver unwound
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("DELETEs and NextDocuments still run 15 s after they started")
	}
	close(codes)
	for c := range codes {
		switch {
		case c == -1:
			t.Errorf("a request failed")
		case c >= 2000:
			t.Errorf("a DELETE answered while the driver was busy")
		case c >= 1000:
			t.Errorf("DELETE status %d, want 200", c-1000)
		case c != http.StatusGone:
			t.Errorf("NextDocument status %d, want 410", c)
		}
	}
	checkCanceled(t, r, escl.CauseDelete)
}

// TestAdvClientDropsAtRandomMoments: a raw client asks for the page and
// closes its connection at a random moment (during the scan, or part-way
// through the page): the job is canceled by the client's going, the
// driver is idle, and the next job works.
func TestAdvClientDropsAtRandomMoments(t *testing.T) {
	r := newRig(t, nil)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 10 {
		r.dev.setBandwidth(3_000_000)
		loc := r.post(t, settings("RGB24", 150, "image/png", 0, 0, 1200, 900)) // 810 KB raw
		c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\n\r\n", loc)
		if i%2 == 0 { // during the scan
			time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
		} else { // part-way through the page
			_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("job %d: %v", i, err)
			}
			if resp.StatusCode != 200 {
				t.Fatalf("job %d: status %d", i, resp.StatusCode)
			}
			io.CopyN(io.Discard, resp.Body, int64(rng.IntN(int(resp.ContentLength/2)+1)))
		}
		c.(*net.TCPConn).SetLinger(0) // a reset: the server's writes fail at once
		c.Close()
		rep := r.report(t)
		switch rep.Outcome {
		case escl.OutcomeCanceled:
			if rep.Cause != escl.CauseClientGone {
				t.Errorf("job %d: canceled by %v, want client gone", i, rep.Cause)
			}
			if rep.CancelCalled && rep.CancelErr != nil {
				t.Errorf("job %d: CancelPendingIO: %v", i, rep.CancelErr)
			}
		case escl.OutcomeDelivered:
			// The socket buffers took the rest of the page before the
			// reset: the send succeeded.
			if i%2 == 0 {
				t.Errorf("job %d: delivered to a client that left during the scan", i)
			}
		default:
			t.Errorf("job %d: %v (%v), want canceled", i, rep.Outcome, rep.Err)
		}
		r.waitState(t, minidrv.Idle)
	}
	r.dev.setBandwidth(0)
	advCheckWorks(t, r)
}

// TestAdvJobStatesAskedAgain: NextDocument and DELETE on jobs in every
// state: unknown, delivered, canceled, expired, deleted twice.
func TestAdvJobStatesAskedAgain(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = 300 * time.Millisecond })
	small := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	expect := func(what, method, path string, want int) {
		t.Helper()
		if resp, body := r.do(t, method, path, "", ""); resp.StatusCode != want {
			t.Errorf("%s: %s: status %d (%s), want %d", what, method, resp.StatusCode, strings.TrimSpace(body), want)
		}
	}
	// Unknown.
	expect("unknown job", "GET", "/eSCL/ScanJobs/00000000-0000-4000-8000-000000000000/NextDocument", 404)
	expect("unknown job", "DELETE", "/eSCL/ScanJobs/00000000-0000-4000-8000-000000000000", 404)

	// Delivered: 404 for more pages, DELETE harmless, twice.
	loc := r.post(t, small)
	if g := r.advNextDoc(context.Background(), loc); !g.whole {
		t.Fatalf("NextDocument: %+v", g)
	}
	expect("delivered job", "GET", loc+"/NextDocument", 404)
	expect("delivered job", "DELETE", loc, 200)
	expect("delivered job", "DELETE", loc, 200)
	expect("delivered job", "GET", loc+"/NextDocument", 404)
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("delivered job: %v", rep.Outcome)
	}

	// Canceled before its page was fetched: 410, and DELETE again.
	loc = r.post(t, small)
	expect("canceled job", "DELETE", loc, 200)
	expect("canceled job", "DELETE", loc, 200)
	expect("canceled job", "GET", loc+"/NextDocument", 410)
	if rep := r.report(t); rep.Outcome != escl.OutcomeCanceled && rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("canceled job: %v", rep.Outcome)
	}

	// Expired.
	loc = r.post(t, small)
	if rep := r.report(t); rep.Outcome != escl.OutcomeExpired {
		t.Errorf("unfetched job: %v, want expired", rep.Outcome)
	}
	expect("expired job", "GET", loc+"/NextDocument", 410)
	expect("expired job", "DELETE", loc, 200)
	expect("expired job", "GET", loc+"/NextDocument", 410)

	// Many jobs: the history forgets the oldest, which are then unknown,
	// and never the scanner's state.
	var locs []string
	for range 20 {
		loc := r.post(t, small)
		locs = append(locs, loc)
		if g := r.advNextDoc(context.Background(), loc); !g.whole {
			t.Fatalf("NextDocument: %+v", g)
		}
		r.report(t)
	}
	expect("forgotten job", "GET", locs[0]+"/NextDocument", 404)
	expect("forgotten job", "DELETE", locs[0], 404)
	expect("remembered job", "GET", locs[19]+"/NextDocument", 404)
	advCheckWorks(t, r)
}

// TestAdvConcurrentNextDocuments: several clients ask for one job's page
// at once: one gets it whole, the others 404 (the platen has one page),
// and the job is delivered.
func TestAdvConcurrentNextDocuments(t *testing.T) {
	r := newRig(t, nil)
	r.dev.setBandwidth(2_000_000)
	loc := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 1200, 900))
	var wg sync.WaitGroup
	res := make(chan advGet, 8)
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); res <- r.advNextDoc(context.Background(), loc) }()
	}
	wg.Wait()
	close(res)
	whole := 0
	for g := range res {
		switch {
		case g.whole:
			whole++
		case g.code != http.StatusNotFound:
			t.Errorf("NextDocument: %+v, want the page or 404", g)
		}
	}
	if whole != 1 {
		t.Errorf("%d clients got the page, want 1", whole)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("job: %v", rep.Outcome)
	}
	r.dev.setBandwidth(0)
	advCheckWorks(t, r)
}

// TestAdvShutdownUnderLoad: Shutdown while clients POST, fetch and delete
// concurrently: it returns, every job is over, the driver idle, and every
// request ends.
func TestAdvShutdownUnderLoad(t *testing.T) {
	r := newRig(t, nil)
	r.dev.setBandwidth(3_000_000)
	body := settings("Grayscale8", 150, "image/png", 0, 0, 1200, 900)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", r.srv.URL+"/eSCL/ScanJobs", strings.NewReader(body))
				req.Header.Set("Content-Type", "text/xml")
				resp, err := r.srv.Client().Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated {
					r.advNextDoc(context.Background(), resp.Header.Get("Location"))
				} else {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.h.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after Shutdown, want Idle", s)
	}
	close(stop)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatalf("clients still blocked 15 s after Shutdown")
	}
	if resp, _ := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", body); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST after Shutdown: %d, want 503", resp.StatusCode)
	}
	for {
		select {
		case rep := <-r.reports:
			if rep.Outcome == escl.OutcomeFailed {
				t.Errorf("a job failed: %v", rep.Err)
			}
			continue
		default:
		}
		break
	}
}

// TestAdvShutdownEndedContext: Shutdown with a context that has ended
// returns its error at once, yet cancels the running job, which ends with
// the driver idle; a second Shutdown then waits for nothing.
func TestAdvShutdownEndedContext(t *testing.T) {
	r := newRig(t, nil)
	slowJob(t, r)
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.h.Shutdown(ended); err == nil {
		// It may have won the race against the job's end: fine too.
		t.Logf("Shutdown with an ended context: nil")
	}
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseShutdown {
		t.Errorf("report: %v by %v, want canceled by shutdown", rep.Outcome, rep.Cause)
	}
	r.waitState(t, minidrv.Idle)
	ctx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := r.h.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
}

// TestAdvPostClientGoneWhileWaitingForLock: a POST waits for the driver's
// lock (another client of the driver holds it) and its client goes away:
// the reservation is released, and once the lock is free the next POST
// gets the scanner.
func TestAdvPostClientGoneWhileWaitingForLock(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.LockTimeout = time.Minute })
	if err := r.dev.d.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", r.srv.URL+"/eSCL/ScanJobs", strings.NewReader(settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)))
		req.Header.Set("Content-Type", "text/xml")
		resp, err := r.srv.Client().Do(req)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	// Reserved (ScannerStatus says Processing): others are told the
	// scanner is busy, at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, body := r.do(t, "GET", "/eSCL/ScannerStatus", "", ""); strings.Contains(body, "<pwg:State>Processing<") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the waiting POST did not reserve the scanner within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp, _ := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("POST while another waits for the lock: %d, want 503", resp.StatusCode)
	}
	t0 := time.Now()
	cancel()
	select {
	case code := <-done:
		if code == http.StatusCreated {
			t.Errorf("the gone client's POST got 201")
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the gone client's POST still waits")
	}
	// The handler sees the client's going and gives the reservation back
	// (if the lock came free first, the job would be created for nobody
	// and hold the scanner until JobTimeout, as for any client that dies
	// after its POST: not what this test is about).
	for {
		if _, body := r.do(t, "GET", "/eSCL/ScannerStatus", "", ""); strings.Contains(body, "<pwg:State>Idle<") {
			break
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("the reservation of a gone client's POST is still held 10 s after it left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := r.dev.d.Unlock(); err != nil {
		t.Fatal(err)
	}
	advCheckWorks(t, r)
}

// TestAdvUnplugReplug: with the scanner unplugged, POST gets 503 and
// status says Down; after the replug (EventDeviceConnected) it scans.
func TestAdvUnplugReplug(t *testing.T) {
	r := newRig(t, nil)
	if err := r.dev.unplug(); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.d.NotifyPnpEvent(minidrv.EventDeviceDisconnected); err != nil {
		t.Fatal(err)
	}
	small := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	for range 3 {
		if resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", small); resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("POST to an unplugged scanner: %d (%s), want 503", resp.StatusCode, body)
		}
	}
	if _, body := r.do(t, "GET", "/eSCL/ScannerStatus", "", ""); !strings.Contains(body, "<pwg:State>Down</pwg:State>") {
		t.Errorf("status of an unplugged scanner:\n%s", body)
	}
	if err := r.dev.sc.Replug(); err != nil {
		t.Fatal(err)
	}
	if err := r.dev.d.NotifyPnpEvent(minidrv.EventDeviceConnected); err != nil {
		t.Fatal(err)
	}
	advCheckWorks(t, r)
}
