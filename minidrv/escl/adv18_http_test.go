package escl_test

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"fmt"
	"image/png"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// adv18Status is the part of ScannerStatus the tests read.
type adv18Status struct {
	State string `xml:"State"`
	Jobs  []struct {
		URI     string   `xml:"JobUri"`
		State   string   `xml:"JobState"`
		Reasons []string `xml:"JobStateReasons>JobStateReason"`
		Done    int      `xml:"ImagesCompleted"`
		ToDo    int      `xml:"ImagesToTransfer"`
	} `xml:"Jobs>JobInfo"`
}

// adv18GetStatus returns ScannerStatus's state and the job loc's state and
// reasons ("" if not listed).
func adv18GetStatus(t *testing.T, r *rig, loc string) (scanner, job string, reasons []string) {
	t.Helper()
	resp, body := r.do(t, "GET", escl.DefaultPrefix+"/ScannerStatus", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var s adv18Status
	require.NoError(t, xml.Unmarshal([]byte(body), &s), body)
	for _, j := range s.Jobs {
		if j.URI == loc {
			return s.State, j.State, j.Reasons
		}
	}
	return s.State, "", nil
}

// adv18Small is a small gray scan.
var adv18Small = settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)

// adv18ReadResp reads one response from br, body included.
func adv18ReadResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	return resp, b
}

// TestAdv18PipelinedJob: a client that pipelines NextDocument, DELETE and
// ScannerStatus on one keep-alive connection (after its POST on the same
// one) gets the exact page, then 200, then a status that says Idle and
// the job Completed; the next job on the same connection works too.
func TestAdv18PipelinedJob(t *testing.T) {
	r := newRig(t, nil)
	c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
	require.NoError(t, err)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for round := range 2 {
		_, err = fmt.Fprintf(c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(adv18Small), adv18Small)
		require.NoError(t, err)
		resp, body := adv18ReadResp(t, br, "POST")
		require.Equal(t, http.StatusCreated, resp.StatusCode, "round %d: %s", round, body)
		loc := resp.Header.Get("Location")
		_, err = fmt.Fprintf(c, "GET %s/NextDocument HTTP/1.1\r\nHost: x\r\n\r\nDELETE %s HTTP/1.1\r\nHost: x\r\n\r\nGET /eSCL/ScannerStatus HTTP/1.1\r\nHost: x\r\n\r\n", loc, loc)
		require.NoError(t, err)
		resp, doc := adv18ReadResp(t, br, "GET")
		require.Equal(t, http.StatusOK, resp.StatusCode, "round %d NextDocument: %s", round, doc)
		img, err := png.Decode(bytes.NewReader(doc))
		require.NoError(t, err)
		checkImage(t, r.dev, img, "Grayscale8")
		resp, _ = adv18ReadResp(t, br, "DELETE")
		assert.Equal(t, http.StatusOK, resp.StatusCode, "round %d DELETE of a delivered job", round)
		resp, sb := adv18ReadResp(t, br, "GET")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var s adv18Status
		require.NoError(t, xml.Unmarshal(sb, &s))
		require.NotEmpty(t, s.Jobs)
		assert.Equal(t, loc, s.Jobs[0].URI, "newest job first")
		assert.Equal(t, "Completed", s.Jobs[0].State)
		assert.Equal(t, []string{"JobCompletedSuccessfully"}, s.Jobs[0].Reasons)
		assert.Equal(t, "Idle", s.State)
		rep := r.report(t)
		assert.Equal(t, escl.OutcomeDelivered, rep.Outcome)
	}
}

// TestAdv18DeleteReadyPage: a page scanned but not fetched, then deleted:
// the DELETE answers, ScannerStatus says Idle and the job Canceled, a
// NextDocument after it gets 410 (not the page, not 404), a second DELETE
// is harmless, and the next job runs.
func TestAdv18DeleteReadyPage(t *testing.T) {
	r := newRig(t, nil)
	loc := r.post(t, adv18Small)
	// Wait for the page to be ready: the job says JobTransferring.
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, js, reasons := adv18GetStatus(t, r, loc)
		if js == "Processing" && len(reasons) == 1 && reasons[0] == "JobTransferring" {
			assert.Equal(t, "Processing", st, "scanner state while a page waits")
			break
		}
		require.True(t, time.Now().Before(deadline), "page not ready within 15 s: %s %v", js, reasons)
		time.Sleep(5 * time.Millisecond)
	}
	resp, _ := r.do(t, "DELETE", loc, "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	rep := r.report(t)
	assert.Equal(t, escl.OutcomeCanceled, rep.Outcome)
	assert.Equal(t, escl.CauseDelete, rep.Cause)
	assert.False(t, rep.CancelCalled, "no CancelPendingIO for a scanned page")
	st, js, reasons := adv18GetStatus(t, r, loc)
	assert.Equal(t, "Idle", st)
	assert.Equal(t, "Canceled", js)
	assert.Equal(t, []string{"JobCanceledByUser"}, reasons)
	resp, body := r.do(t, "GET", loc+"/NextDocument", "", "")
	assert.Equal(t, http.StatusGone, resp.StatusCode, body)
	resp, _ = r.do(t, "DELETE", loc, "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, js, _ = adv18GetStatus(t, r, loc)
	assert.Equal(t, "Canceled", js, "a second DELETE changes nothing")
	advCheckWorks(t, r)
}

// TestAdv18ExpiredPage: a page never fetched expires: Aborted/JobTimedOut
// in ScannerStatus with the scanner Idle, NextDocument 410 after it, a
// DELETE leaves it Aborted, and the scanner takes the next job.
func TestAdv18ExpiredPage(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = 300 * time.Millisecond })
	loc := r.post(t, adv18Small)
	rep := r.report(t)
	require.Equal(t, escl.OutcomeExpired, rep.Outcome)
	st, js, reasons := adv18GetStatus(t, r, loc)
	assert.Equal(t, "Idle", st)
	assert.Equal(t, "Aborted", js)
	assert.Equal(t, []string{"JobTimedOut"}, reasons)
	resp, body := r.do(t, "GET", loc+"/NextDocument", "", "")
	assert.Equal(t, http.StatusGone, resp.StatusCode, body)
	resp, _ = r.do(t, "DELETE", loc, "", "")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	_, js, reasons = adv18GetStatus(t, r, loc)
	assert.Equal(t, "Aborted", js)
	assert.Equal(t, []string{"JobTimedOut"}, reasons)
	r.waitState(t, minidrv.Idle)
	advCheckWorks(t, r)
}

// TestAdv18Expect100Continue: a POST that waits for 100 Continue before
// its body gets it, then 201; while that job holds the scanner, another
// such POST gets 503 with Retry-After (whether or not it was asked for
// its body), and nothing hangs.
func TestAdv18Expect100Continue(t *testing.T) {
	r := newRig(t, nil)
	post := func() *http.Response {
		c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		_, err = fmt.Fprintf(c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(adv18Small))
		require.NoError(t, err)
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if strings.Contains(line, " 100 ") {
			_, err = br.ReadString('\n') // the blank line
			require.NoError(t, err)
			_, err = io.WriteString(c, adv18Small)
			require.NoError(t, err)
			resp, _ := adv18ReadResp(t, br, "POST")
			return resp
		}
		// A final answer without 100: the body is not wanted.
		resp, _ := adv18ReadResp(t, bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), "POST")
		return resp
	}
	first := post()
	require.Equal(t, http.StatusCreated, first.StatusCode)
	second := post()
	assert.Equal(t, http.StatusServiceUnavailable, second.StatusCode)
	assert.NotEmpty(t, second.Header.Get("Retry-After"))
	advFinishJob(t, r, first.Header.Get("Location"))
	advCheckWorks(t, r)
}
