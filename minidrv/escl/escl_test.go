package escl_test

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// capsDoc is what a client reads of ScannerCapabilities.
type capsDoc struct {
	XMLName      xml.Name `xml:"http://schemas.hp.com/imaging/escl/2011/05/03 ScannerCapabilities"`
	MakeAndModel string   `xml:"http://www.pwg.org/schemas/2010/12/sm MakeAndModel"`
	Caps         struct {
		MinWidth, MaxWidth, MinHeight, MaxHeight int
		Modes                                    []string `xml:"SettingProfiles>SettingProfile>ColorModes>ColorMode"`
		Formats                                  []string `xml:"SettingProfiles>SettingProfile>DocumentFormats>DocumentFormat"`
		FormatsExt                               []string `xml:"SettingProfiles>SettingProfile>DocumentFormats>DocumentFormatExt"`
		Resolutions                              []struct {
			X int `xml:"XResolution"`
			Y int `xml:"YResolution"`
		} `xml:"SettingProfiles>SettingProfile>SupportedResolutions>DiscreteResolutions>DiscreteResolution"`
	} `xml:"Platen>PlatenInputCaps"`
}

func TestCapabilities(t *testing.T) {
	r := newRig(t, nil)
	resp, body := r.do(t, "GET", "/eSCL/ScannerCapabilities", "", "")
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "xml") {
		t.Fatalf("status %d, content type %q; want 200, XML", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var c capsDoc
	if err := xml.Unmarshal([]byte(body), &c); err != nil {
		t.Fatalf("parse capabilities: %v\n%s", err, body)
	}
	if c.MakeAndModel != "cancelio test scanner" {
		t.Errorf("MakeAndModel %q, want the configured one", c.MakeAndModel)
	}
	// The platen is the bed in 1/300 inch, rounded down to a whole number
	// of pixels at each resolution.
	for _, d := range []struct {
		name      string
		got, bed  int
		bedPixels func(dpi int) int
	}{
		{"MaxWidth", c.Caps.MaxWidth, minidrv.BedWidth * 300 / 1000, func(dpi int) int { return minidrv.MaxPixels(minidrv.BedWidth, dpi) }},
		{"MaxHeight", c.Caps.MaxHeight, minidrv.BedHeight * 300 / 1000, func(dpi int) int { return minidrv.MaxPixels(minidrv.BedHeight, dpi) }},
	} {
		if d.got > d.bed || d.got <= d.bed-12 {
			t.Errorf("%s %d, want the bed's %d less under 12 (whole pixels at 75, 100, 150, 200 dpi)", d.name, d.got, d.bed)
		}
		for _, dpi := range minidrv.Resolutions() {
			if d.got*dpi%300 != 0 || d.got*dpi/300 > d.bedPixels(dpi) {
				t.Errorf("%s %d is %.2f pixels at %d dpi, want a whole number within the bed's %d", d.name, d.got, float64(d.got*dpi)/300, dpi, d.bedPixels(dpi))
			}
		}
	}
	if c.Caps.MinWidth < 1 || c.Caps.MinWidth >= c.Caps.MaxWidth || c.Caps.MinHeight < 1 || c.Caps.MinHeight >= c.Caps.MaxHeight {
		t.Errorf("min size %dx%d, want 1..max", c.Caps.MinWidth, c.Caps.MinHeight)
	}
	var res []int
	for _, r := range c.Caps.Resolutions {
		if r.X != r.Y {
			t.Errorf("resolution %dx%d, want square", r.X, r.Y)
		}
		res = append(res, r.X)
	}
	if !slices.Equal(res, minidrv.Resolutions()) {
		t.Errorf("resolutions %v, want the driver's %v", res, minidrv.Resolutions())
	}
	if want := []string{"BlackAndWhite1", "Grayscale8", "RGB24"}; !slices.Equal(c.Caps.Modes, want) {
		t.Errorf("colour modes %v, want %v", c.Caps.Modes, want)
	}
	want := []string{"image/png", "image/jpeg"}
	if !slices.Equal(c.Caps.Formats, want) || !slices.Equal(c.Caps.FormatsExt, want) {
		t.Errorf("formats %v and %v, want %v", c.Caps.Formats, c.Caps.FormatsExt, want)
	}
}

// fetch gets a job's next document.
func (r *rig) fetch(t *testing.T, loc string) (*http.Response, []byte) {
	t.Helper()
	resp, body := r.do(t, "GET", loc+"/NextDocument", "", "")
	return resp, []byte(body)
}

func TestScanFormats(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct {
		mode, format string
		dpi          int
		x, y, w, h   int // 1/300 in; w 0: the whole platen
	}{
		{"Grayscale8", "image/png", 75, 0, 0, 0, 0},
		{"RGB24", "image/png", 100, 30, 60, 900, 450},
		{"BlackAndWhite1", "image/png", 150, 7, 3, 601, 299},
		{"Grayscale8", "image/jpeg", 150, 0, 0, 600, 600},
		{"RGB24", "image/jpeg", 75, 300, 300, 1200, 900},
		{"Grayscale8", "image/png", 150, 1, 1, 2543, 3503}, // to the platen's far edges
	} {
		t.Run(tc.mode+"/"+tc.format, func(t *testing.T) {
			loc := r.post(t, settings(tc.mode, tc.dpi, tc.format, tc.x, tc.y, tc.w, tc.h))
			resp, doc := r.fetch(t, loc)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tc.format {
				t.Fatalf("NextDocument: status %d, type %q; want 200, %s (%s)", resp.StatusCode, resp.Header.Get("Content-Type"), tc.format, doc)
			}
			// The window: offset and length each rounded to the nearest
			// pixel (as sane-airscan predicts the size from the length),
			// the length cut at the platen's last pixel; the whole
			// platen is whole pixels (checked in TestCapabilities).
			const bedW, bedH = 2544, 3504
			w, h := tc.w, tc.h
			if w == 0 {
				w, h = bedW, bedH
			}
			round := func(u int) int { return int(math.Round(float64(u*tc.dpi) / 300)) }
			wantW, wantH := min(round(w), round(bedW)-round(tc.x)), min(round(h), round(bedH)-round(tc.y))
			p := r.dev.d.Properties()
			if p.XExtent != wantW || p.YExtent != wantH || p.XPosition != round(tc.x) || p.YPosition != round(tc.y) || p.XResolution != tc.dpi {
				t.Errorf("driver window %dx%d at (%d,%d) %d dpi, want %dx%d at (%d,%d) %d dpi",
					p.XExtent, p.YExtent, p.XPosition, p.YPosition, p.XResolution, wantW, wantH, round(tc.x), round(tc.y), tc.dpi)
			}
			if tc.format == "image/png" {
				img, err := png.Decode(bytes.NewReader(doc))
				if err != nil {
					t.Fatalf("decode PNG: %v", err)
				}
				checkImage(t, r.dev, img, tc.mode)
			} else {
				img, err := jpeg.Decode(bytes.NewReader(doc))
				if err != nil {
					t.Fatalf("decode JPEG: %v", err)
				}
				checkJPEG(t, r.dev, img, tc.mode)
			}
			// One page: then 404; a DELETE after completion is harmless.
			if resp, body := r.fetch(t, loc); resp.StatusCode != http.StatusNotFound {
				t.Errorf("second NextDocument: status %d (%s), want 404", resp.StatusCode, body)
			}
			rep := r.report(t)
			if rep.Outcome != escl.OutcomeDelivered || rep.Err != nil || rep.Bytes != len(doc) {
				t.Errorf("report: %v, err %v, %d bytes; want delivered, nil, %d", rep.Outcome, rep.Err, rep.Bytes, len(doc))
			}
			if resp, body := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != 200 {
				t.Errorf("DELETE after completion: status %d (%s), want 200", resp.StatusCode, body)
			}
			if s := r.dev.d.State(); s != minidrv.Idle {
				t.Errorf("driver %v after the job, want Idle", s)
			}
			select {
			case rep := <-r.reports:
				t.Errorf("a DELETE after completion made another report: %+v", rep)
			default:
			}
		})
	}
}

// checkJPEG compares a JPEG page with the expected image encoded by
// image/jpeg at the handler's default quality: both decode to the same
// pixels, give or take rounding.
func checkJPEG(t *testing.T, dev *simDevice, img image.Image, mode string) {
	t.Helper()
	raw, w, h := dev.lastImage()
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		t.Fatalf("image %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	var exp image.Image = &image.Gray{Pix: raw, Stride: w, Rect: image.Rect(0, 0, w, h)}
	if mode == "RGB24" {
		rgba := image.NewRGBA(image.Rect(0, 0, w, h))
		for i := range w * h {
			copy(rgba.Pix[4*i:], raw[3*i:3*i+3])
			rgba.Pix[4*i+3] = 0xff
		}
		exp = rgba
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, exp, &jpeg.Options{Quality: escl.DefaultJPEGQuality}); err != nil {
		t.Fatal(err)
	}
	want, err := jpeg.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	for y := range h {
		for x := range w {
			r1, g1, b1, _ := img.At(x, y).RGBA()
			r2, g2, b2, _ := want.At(x, y).RGBA()
			d := max(absDiff(r1, r2), absDiff(g1, g2), absDiff(b1, b2)) >> 8
			if d > 2 {
				if bad < 5 {
					t.Errorf("pixel (%d,%d) differs by %d", x, y, d)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d pixels differ", bad, w*h)
	}
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestStatus(t *testing.T) {
	r := newRig(t, nil)
	type status struct {
		State string `xml:"State"`
		Jobs  []struct {
			URI   string `xml:"JobUri"`
			State string `xml:"JobState"`
		} `xml:"Jobs>JobInfo"`
	}
	get := func() status {
		resp, body := r.do(t, "GET", "/eSCL/ScannerStatus", "", "")
		if resp.StatusCode != 200 {
			t.Fatalf("ScannerStatus: status %d", resp.StatusCode)
		}
		var s status
		if err := xml.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("parse status: %v\n%s", err, body)
		}
		return s
	}
	if s := get(); s.State != "Idle" || len(s.Jobs) != 0 {
		t.Fatalf("status before any job: %+v, want Idle, no jobs", s)
	}
	r.dev.setBandwidth(200_000)
	loc := r.post(t, settings("Grayscale8", 300, "image/png", 0, 0, 0, 0))
	r.waitState(t, minidrv.Transferring)
	if s := get(); s.State != "Processing" || len(s.Jobs) != 1 || s.Jobs[0].URI != loc || s.Jobs[0].State != "Processing" {
		t.Errorf("status while scanning: %+v, want Processing with the job", s)
	}
	r.do(t, "DELETE", loc, "", "")
	r.report(t)
	if s := get(); s.State != "Idle" || len(s.Jobs) != 1 || s.Jobs[0].State != "Canceled" {
		t.Errorf("status after the cancel: %+v, want Idle, the job Canceled", s)
	}
}

// slowJob starts a job whose scan takes seconds, and waits until the
// acquisition runs.
func slowJob(t *testing.T, r *rig) string {
	t.Helper()
	r.dev.setBandwidth(500_000) // 300 dpi gray, 8.9 MB: 18 s
	loc := r.post(t, settings("Grayscale8", 300, "image/png", 0, 0, 0, 0))
	r.waitState(t, minidrv.Transferring)
	return loc
}

// checkCanceled checks the report of a job canceled by cause while it
// scanned, and that the driver is idle and scans correctly after.
func checkCanceled(t *testing.T, r *rig, cause escl.Cause) {
	t.Helper()
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeCanceled || rep.Cause != cause {
		t.Errorf("report: %v by %v, want canceled by %v", rep.Outcome, rep.Cause, cause)
	}
	if !rep.CancelCalled || rep.CancelErr != nil {
		t.Errorf("CancelPendingIO called %v, err %v; want called, nil", rep.CancelCalled, rep.CancelErr)
	}
	if !errors.Is(rep.Err, minidrv.ErrCanceled) {
		t.Errorf("acquisition error %v, want ErrCanceled", rep.Err)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after the cancel, want Idle", s)
	}
	// The next job runs and its image is exact.
	r.dev.setBandwidth(0)
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 600, 600))
	resp, doc := r.fetch(t, loc)
	if resp.StatusCode != 200 {
		t.Fatalf("next job: status %d (%s)", resp.StatusCode, doc)
	}
	img, err := png.Decode(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("next job: decode: %v", err)
	}
	checkImage(t, r.dev, img, "Grayscale8")
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("next job: %v, want delivered", rep.Outcome)
	}
}

func TestDeleteRunningJob(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	type result struct {
		code int
		at   time.Time
	}
	got := make(chan result, 1)
	go func() {
		resp, err := r.srv.Client().Get(r.srv.URL + loc + "/NextDocument")
		if err != nil {
			got <- result{-1, time.Now()}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- result{resp.StatusCode, time.Now()}
	}()
	time.Sleep(50 * time.Millisecond) // let NextDocument wait (not needed for the outcome)
	t0 := time.Now()
	resp, body := r.do(t, "DELETE", loc, "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("DELETE: status %d (%s), want 200", resp.StatusCode, body)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v when DELETE answered, want Idle", s)
	}
	select {
	case res := <-got:
		if res.code != http.StatusGone {
			t.Errorf("waiting NextDocument: status %d, want 410", res.code)
		}
		t.Logf("NextDocument ended %v after the DELETE", res.at.Sub(t0))
	case <-time.After(5 * time.Second): // the scan alone would take 18 s
		t.Fatalf("the waiting NextDocument did not end within 5 s of the DELETE")
	}
	checkCanceled(t, r, escl.CauseDelete)
}

func TestClientGoneCancels(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", r.srv.URL+loc+"/NextDocument", nil)
	done := make(chan error, 1)
	arrived := r.expectNextDoc()
	go func() {
		resp, err := r.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitNextDoc(t, arrived)
	time.Sleep(20 * time.Millisecond) // into the handler's wait; not needed for the outcome
	cancel()                          // the client drops the connection
	if err := <-done; err == nil {
		t.Fatalf("the request succeeded; want it canceled")
	}
	checkCanceled(t, r, escl.CauseClientGone)
}

func TestBusy(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("second POST: status %d, Retry-After %q (%s); want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	r.do(t, "DELETE", loc, "", "")
	checkCanceled(t, r, escl.CauseDelete)
}

func TestHungDevice(t *testing.T) {
	r := newRig(t, nil)
	r.dev.hangAfter(100_000)
	loc := r.post(t, settings("Grayscale8", 150, "image/png", 0, 0, 0, 0))
	r.waitState(t, minidrv.Transferring)
	got := make(chan int, 1)
	go func() {
		resp, err := r.srv.Client().Get(r.srv.URL + loc + "/NextDocument")
		if err != nil {
			got <- -1
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond) // the device has hung by now
	t0 := time.Now()
	go func() {
		req, _ := http.NewRequest("DELETE", r.srv.URL+loc, nil)
		if resp, err := r.srv.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case code := <-got:
		if code != http.StatusGone {
			t.Errorf("NextDocument: status %d, want 410", code)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("NextDocument ended %v after the DELETE, want within 2 s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("NextDocument still waits 10 s after the DELETE")
	}
	r.dev.resume()
	checkCanceled(t, r, escl.CauseDelete)
}

func TestShutdownCancels(t *testing.T) {
	r := newRig(t, nil)
	slowJob(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseShutdown || !rep.CancelCalled {
		t.Errorf("report: %v by %v, CancelPendingIO %v; want canceled by shutdown, called", rep.Outcome, rep.Cause, rep.CancelCalled)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after Shutdown, want Idle", s)
	}
	resp, _ := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0))
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST after Shutdown: status %d, want 503", resp.StatusCode)
	}
}

func TestJobExpires(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.JobTimeout = 200 * time.Millisecond })
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeExpired {
		t.Errorf("unfetched job: %v, want expired", rep.Outcome)
	}
	if resp, _ := r.fetch(t, loc); resp.StatusCode != http.StatusGone {
		t.Errorf("NextDocument of an expired job: status %d, want 410", resp.StatusCode)
	}
	r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)) // the scanner is free
	r.report(t)
}

func TestBadInput(t *testing.T) {
	r := newRig(t, func(c *escl.Config) { c.MaxBodySize = 4096 })
	ok := settings("Grayscale8", 75, "image/png", 0, 0, 0, 0)
	for _, tc := range []struct {
		name, method, path, ctype, body string
		want                            int
	}{
		{"not XML", "POST", "/eSCL/ScanJobs", "text/xml", "hello", 400},
		{"truncated", "POST", "/eSCL/ScanJobs", "text/xml", ok[:len(ok)/2], 400},
		{"empty", "POST", "/eSCL/ScanJobs", "text/xml", "", 400},
		{"wrong root", "POST", "/eSCL/ScanJobs", "text/xml", strings.ReplaceAll(ok, "ScanSettings", "ScanJob"), 400},
		{"wrong namespace", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(ok, "imaging/escl/2011", "imaging/escl/2099", 1), 400},
		{"trailing element", "POST", "/eSCL/ScanJobs", "text/xml", ok + "<x/>", 400},
		{"two roots", "POST", "/eSCL/ScanJobs", "text/xml", ok + ok[strings.Index(ok, "<scan:"):], 400},
		{"bad number", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0)[:0] + strings.Replace(ok, "<scan:XResolution>75", "<scan:XResolution>seventy", 1), 400},
		{"negative offset", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(settings("Grayscale8", 75, "image/png", 10, 0, 100, 100), ">10<", ">-10<", 1), 400},
		{"huge number", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(settings("Grayscale8", 75, "image/png", 0, 0, 100, 100), "<pwg:Width>100<", "<pwg:Width>99999999999<", 1), 400}, // a string: the constant overflows int on 32-bit
		{"repeated mode", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(ok, "<scan:ColorMode>", "<scan:ColorMode>RGB24</scan:ColorMode><scan:ColorMode>", 1), 400},
		{"oversized", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(ok, "<pwg:Version>", "<!--"+strings.Repeat("x", 5000)+"--><pwg:Version>", 1), 413},
		{"content type", "POST", "/eSCL/ScanJobs", "image/png", ok, 415},
		{"region outside", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 2000, 0, 600, 600), 409},
		{"region too tall", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 10, 100, 3500), 409},
		{"under a pixel", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 1, 100), 409},
		{"resolution", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 123, "image/png", 0, 0, 0, 0), 409},
		{"colour mode", "POST", "/eSCL/ScanJobs", "text/xml", settings("RGB48", 75, "image/png", 0, 0, 0, 0), 409},
		{"format", "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "application/pdf", 0, 0, 0, 0), 409},
		{"feeder", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(ok, ">Platen<", ">Feeder<", 1), 409},
		{"units", "POST", "/eSCL/ScanJobs", "text/xml", strings.Replace(settings("Grayscale8", 75, "image/png", 0, 0, 100, 100), "escl:ThreeHundredthsOfInches", "Millimeters", 1), 409},
		{"unknown job", "GET", "/eSCL/ScanJobs/nope/NextDocument", "", "", 404},
		{"unknown job delete", "DELETE", "/eSCL/ScanJobs/nope", "", "", 404},
		{"unknown resource", "GET", "/eSCL/Nothing", "", "", 404},
		{"method", "PUT", "/eSCL/ScanJobs", "text/xml", ok, 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.do(t, tc.method, tc.path, tc.ctype, tc.body)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, strings.TrimSpace(body), tc.want)
			}
			if tc.want != 405 && tc.want != 404 && len(strings.TrimSpace(body)) == 0 {
				t.Errorf("no reason in the body")
			}
		})
	}
	// None of it reached the device, nor even the lock.
	if n := r.dev.acquisitions(); n != 0 {
		t.Errorf("%d acquisitions after bad input only, want 0", n)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v, want Idle", s)
	}
	select {
	case rep := <-r.reports:
		t.Errorf("a job was created: %+v", rep)
	default:
	}
	// And the scanner still works.
	loc := r.post(t, ok)
	if resp, _ := r.fetch(t, loc); resp.StatusCode != 200 {
		t.Errorf("good job after bad input: status %d", resp.StatusCode)
	}
	r.report(t)
}

func TestDeviceUnplugged(t *testing.T) {
	r := newRig(t, nil)
	loc := slowJob(t, r)
	if err := r.dev.unplug(); err != nil {
		t.Fatal(err)
	}
	resp, body := r.fetch(t, loc)
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "scan failed") {
		t.Errorf("NextDocument: status %d (%s), want 500 with the reason", resp.StatusCode, body)
	}
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeFailed || !errors.Is(rep.Err, minidrv.ErrOffline) {
		t.Errorf("report: %v (%v), want failed with ErrOffline", rep.Outcome, rep.Err)
	}
	if _, body := r.do(t, "GET", "/eSCL/ScannerStatus", "", ""); !strings.Contains(body, "<pwg:State>Down</pwg:State>") {
		t.Errorf("status of an unplugged scanner:\n%s\nwant State Down", body)
	}
	resp, body2 := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", settings("Grayscale8", 75, "image/png", 0, 0, 0, 0))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body2, "not available") {
		t.Errorf("POST to an unplugged scanner: status %d (%s), want 503, not available", resp.StatusCode, body2)
	}
}

// TestDeleteWhileSending cancels a job whose page is being sent to a client
// that reads slowly: the send ends at once, cut short, and the job is
// canceled.
func TestDeleteWhileSending(t *testing.T) {
	// Small socket buffers on both ends: they cannot hold the page.
	r := newRigServer(t, nil, func(s *http.Server) {
		s.ConnState = func(c net.Conn, st http.ConnState) {
			if tc, ok := c.(*net.TCPConn); ok && st == http.StateNew {
				tc.SetWriteBuffer(256 << 10)
			}
		}
	})
	loc := r.post(t, settings("Grayscale8", 200, "image/png", 0, 0, 0, 0)) // 4 MB of noise
	slow := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(64 << 10)
		}
		return c, err
	}}}
	defer slow.CloseIdleConnections()
	resp, err := slow.Get(r.srv.URL + loc + "/NextDocument")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("NextDocument: status %d", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatalf("read the start of the page: %v", err)
	}
	// The server is blocked writing the rest (more than the socket
	// buffers hold) when the DELETE comes.
	if resp, body := r.do(t, "DELETE", loc, "", ""); resp.StatusCode != 200 {
		t.Fatalf("DELETE: status %d (%s)", resp.StatusCode, body)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil {
		t.Errorf("the page arrived whole (%d more bytes) after the DELETE; want it cut short", n)
	}
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseDelete || rep.CancelCalled {
		t.Errorf("report: %v by %v, CancelPendingIO %v; want canceled by delete, not called (the scan was over)", rep.Outcome, rep.Cause, rep.CancelCalled)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v, want Idle", s)
	}
}
