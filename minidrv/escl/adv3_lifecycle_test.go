package escl_test

// Adversarial tests of a job's life as a client sees it: what the scanner
// says and does right after each answer the client gets, Shutdown reaching
// a POST that waits for the driver, and ScannerStatus at every phase.

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// adv3Small is a small, fast, valid scan.
var adv3Small = settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)

// adv3Drain reads the job reports that have come, without waiting.
func adv3Drain(r *rig) {
	for {
		select {
		case <-r.reports:
		default:
			return
		}
	}
}

// TestAdv3PostRightAfterDelete: a client cancels its running job (DELETE,
// answered 200 once the driver is unlocked and idle) and at once starts
// the next one, as a user who presses Cancel then Scan does. The package
// documents that a DELETE answers once the driver is unlocked, "ready for
// the next job": the next POST must get the scanner (201), not 503 busy.
// Repeated, because the window between the DELETE's answer and the job
// releasing the scanner is short.
func TestAdv3PostRightAfterDelete(t *testing.T) {
	r := newRig(t, nil)
	const rounds = 6
	busy := 0
	for i := range rounds {
		loc := slowJob(t, r)
		if resp, body := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != http.StatusOK {
			t.Fatalf("round %d: DELETE: status %d (%s)", i, resp.StatusCode, body)
		}
		if s := r.dev.d.State(); s != minidrv.Idle {
			t.Errorf("round %d: driver %v when the DELETE answered, want Idle", i, s)
		}
		resp, body := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", adv3Small)
		switch resp.StatusCode {
		case http.StatusCreated:
			r.report(t) // the canceled one
			advFinishJob(t, r, resp.Header.Get("Location"))
		case http.StatusServiceUnavailable:
			busy++
			t.Logf("round %d: POST right after the DELETE: 503 (%s)", i, strings.TrimSpace(body))
			r.report(t)
		default:
			t.Fatalf("round %d: POST right after the DELETE: status %d (%s)", i, resp.StatusCode, body)
		}
		r.dev.setBandwidth(0)
		r.waitState(t, minidrv.Idle)
	}
	if busy > 0 {
		t.Errorf("%d of %d POSTs sent right after a DELETE was answered got 503 busy; want the scanner free once the DELETE answers", busy, rounds)
	}
	advCheckWorks(t, r)
}

// TestAdv3PostRightAfterPage: a client fetches its page whole, then at once
// POSTs the next job (scanimage --batch on a flatbed does this): with the
// page delivered, the job is over and the scanner must take the next job,
// not answer 503 busy.
func TestAdv3PostRightAfterPage(t *testing.T) {
	r := newRig(t, nil)
	const rounds = 300
	busy := 0
	for i := range rounds {
		loc := r.post(t, adv3Small)
		if g := r.advNextDoc(context.Background(), loc); !g.whole {
			t.Fatalf("round %d: NextDocument: %+v", i, g)
		}
		resp, body := r.do(t, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", adv3Small)
		switch resp.StatusCode {
		case http.StatusCreated:
			r.report(t)
			advFinishJob(t, r, resp.Header.Get("Location"))
		case http.StatusServiceUnavailable:
			busy++
			if busy <= 3 {
				t.Logf("round %d: POST right after the page: 503 (%s)", i, strings.TrimSpace(body))
			}
			r.report(t)
		default:
			t.Fatalf("round %d: status %d (%s)", i, resp.StatusCode, body)
		}
	}
	if busy > 0 {
		t.Errorf("%d of %d POSTs sent right after a page was received whole got 503 busy; want the scanner free", busy, rounds)
	}
	advCheckWorks(t, r)
}

// adv3WaitJob waits until ScannerStatus lists the job at loc with reason.
func adv3WaitJob(t *testing.T, r *rig, loc, reason string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, j := range adv3GetStatus(t, r).Jobs {
			if j.URI == loc && len(j.Reasons) == 1 && j.Reasons[0] == reason {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not %s within 15 s", loc, reason)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAdv3ShutdownEndsLockWait: a POST has reserved the scanner and waits
// for the driver's lock, held by another client of the driver (LockTimeout
// is long). Shutdown treats that reservation as the running job and
// cancels it, yet the POST's wait does not end: it waits on the request's
// context and LockTimeout only. Expected, as documented ("refuse new jobs
// (503), cancels the running job ... and waits until every job is over"):
// Shutdown returns within seconds and the POST gets 503; no job is created
// once Shutdown has been called.
func TestAdv3ShutdownEndsLockWait(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.LockTimeout = time.Minute })
	if err := r.dev.d.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			if err := r.dev.d.Unlock(); err != nil {
				t.Errorf("Unlock: %v", err)
			}
		}
	}
	defer unlock()
	type res struct {
		code int
		body string
	}
	done := make(chan res, 1)
	go func() {
		req, _ := http.NewRequest("POST", r.srv.URL+escl.DefaultPrefix+"/ScanJobs", strings.NewReader(adv3Small))
		req.Header.Set("Content-Type", "text/xml")
		resp, err := r.srv.Client().Do(req)
		if err != nil {
			done <- res{-1, err.Error()}
			return
		}
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
		done <- res{resp.StatusCode, b.String()}
	}()
	adv3WaitStatus(t, r, "Processing") // the POST holds the reservation
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.h.Shutdown(ctx)
	if err != nil {
		t.Errorf("Shutdown with a POST waiting for the driver's lock: %v after 5 s, want nil (the wait canceled)", err)
	}
	unlock() // from here the POST can get the lock
	select {
	case got := <-done:
		if got.code != http.StatusServiceUnavailable {
			t.Errorf("POST waiting for the lock when Shutdown was called: status %d (%s), want 503", got.code, strings.TrimSpace(got.body))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the POST still waits 15 s after Shutdown and the unlock")
	}
	// Whatever happened, the handler is shut down and the driver idle.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel2()
	if err := r.h.Shutdown(ctx2); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	r.waitState(t, minidrv.Idle)
	adv3Drain(r)
}

// adv3Status is what a client reads of ScannerStatus.
type adv3Status struct {
	State string `xml:"State"`
	Jobs  []struct {
		URI     string   `xml:"JobUri"`
		UUID    string   `xml:"JobUuid"`
		State   string   `xml:"JobState"`
		Reasons []string `xml:"JobStateReasons>JobStateReason"`
		Done    int      `xml:"ImagesCompleted"`
		ToDo    int      `xml:"ImagesToTransfer"`
	} `xml:"Jobs>JobInfo"`
}

func adv3GetStatus(t *testing.T, r *rig) adv3Status {
	t.Helper()
	resp, body := r.do(t, "GET", escl.DefaultPrefix+"/ScannerStatus", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ScannerStatus: status %d", resp.StatusCode)
	}
	var st adv3Status
	if err := xml.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("parse ScannerStatus: %v\n%s", err, body)
	}
	return st
}

// adv3WaitStatus waits until ScannerStatus says state.
func adv3WaitStatus(t *testing.T, r *rig, state string) adv3Status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := adv3GetStatus(t, r)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("ScannerStatus State %q, want %q within 15 s", st.State, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAdv3StatusPhases: ScannerStatus at every phase of three jobs, as a
// client polling it sees them: the scanner's State agrees with whether a
// POST would be refused, and each job's JobState, JobStateReasons and image
// counts follow scanning, transferring, completed, canceled and timed out,
// newest job first, its JobUri the Location the POST gave.
func TestAdv3StatusPhases(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = 2 * time.Second })
	type want struct {
		state, reason string
		done, todo    int
	}
	check := func(phase, scanner string, locs []string, jobs ...want) {
		t.Helper()
		st := adv3GetStatus(t, r)
		if st.State != scanner {
			t.Errorf("%s: scanner State %q, want %q", phase, st.State, scanner)
		}
		if len(st.Jobs) != len(jobs) {
			t.Fatalf("%s: %d jobs listed, want %d: %+v", phase, len(st.Jobs), len(jobs), st.Jobs)
		}
		for i, w := range jobs {
			j := st.Jobs[i]
			loc := locs[len(locs)-1-i] // newest first
			if j.URI != loc || !strings.HasSuffix(loc, "/"+j.UUID) {
				t.Errorf("%s: job %d: URI %q UUID %q, want %q", phase, i, j.URI, j.UUID, loc)
			}
			if j.State != w.state || len(j.Reasons) != 1 || j.Reasons[0] != w.reason || j.Done != w.done || j.ToDo != w.todo {
				t.Errorf("%s: job %d: %s %v, %d done %d to do; want %s [%s], %d done %d to do",
					phase, i, j.State, j.Reasons, j.Done, j.ToDo, w.state, w.reason, w.done, w.todo)
			}
		}
	}
	check("before any job", "Idle", nil)

	// A delivered job.
	r.dev.setBandwidth(1_000_000)
	loc1 := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 0, 0)) // 2.2 MB: 2 s
	r.waitState(t, minidrv.Transferring)
	locs := []string{loc1}
	check("scanning", "Processing", locs, want{"Processing", "JobScanning", 0, 1})
	r.dev.setBandwidth(0)
	adv3WaitJob(t, r, loc1, "JobTransferring")
	check("page waiting", "Processing", locs, want{"Processing", "JobTransferring", 1, 1})
	if g := r.advNextDoc(context.Background(), loc1); !g.whole {
		t.Fatalf("NextDocument: %+v", g)
	}
	r.report(t)
	check("delivered", "Idle", locs, want{"Completed", "JobCompletedSuccessfully", 1, 0})

	// A canceled job.
	loc2 := slowJob(t, r)
	locs = append(locs, loc2)
	check("second scanning", "Processing", locs, want{"Processing", "JobScanning", 0, 1}, want{"Completed", "JobCompletedSuccessfully", 1, 0})
	if resp, _ := r.do(t, "DELETE", loc2, "", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	r.report(t)
	r.dev.setBandwidth(0)
	check("canceled", "Idle", locs, want{"Canceled", "JobCanceledByUser", 0, 0}, want{"Completed", "JobCompletedSuccessfully", 1, 0})

	// A job whose page is never fetched.
	loc3 := r.post(t, adv3Small)
	locs = append(locs, loc3)
	if rep := r.report(t); rep.Outcome != escl.OutcomeExpired {
		t.Fatalf("unfetched job: %v, want expired", rep.Outcome)
	}
	check("expired", "Idle", locs, want{"Aborted", "JobTimedOut", 0, 0}, want{"Canceled", "JobCanceledByUser", 0, 0}, want{"Completed", "JobCompletedSuccessfully", 1, 0})
	advCheckWorks(t, r)
}
