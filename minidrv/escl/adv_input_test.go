package escl_test

// Adversarial input to every endpoint: malformed, hostile or odd requests
// get a clear 4xx (or are served harmlessly), nothing reaches the device
// that should not, and a normal scan works after all of it.

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
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

// advBody returns a scan:ScanSettings document with inner as its content.
func advBody(inner string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>` + "\n" +
		`<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm">` +
		inner + `</scan:ScanSettings>`
}

// advRegion returns a ScanRegions element with the given raw values.
func advRegion(x, y, w, h string) string {
	return `<pwg:ScanRegions><pwg:ScanRegion><pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits>` +
		`<pwg:XOffset>` + x + `</pwg:XOffset><pwg:YOffset>` + y + `</pwg:YOffset>` +
		`<pwg:Width>` + w + `</pwg:Width><pwg:Height>` + h + `</pwg:Height></pwg:ScanRegion></pwg:ScanRegions>`
}

// advSmall is a small, valid gray scan: fast to scan and encode.
const advSmall = `<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>75</scan:XResolution><scan:YResolution>75</scan:YResolution>`

// advFinishJob fetches loc's page if the job was created, and waits for its
// report: the scanner is free again.
func advFinishJob(t *testing.T, r *rig, loc string) {
	t.Helper()
	resp, body := r.do(t, "GET", loc+"/NextDocument", "", "")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("NextDocument of an accepted job: status %d (%.200s)", resp.StatusCode, body)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("accepted job: %v (%v), want delivered", rep.Outcome, rep.Err)
	}
}

// advCheckWorks checks that the driver is idle, no job is pending, and a
// normal scan delivers an exact page.
func advCheckWorks(t *testing.T, r *rig) {
	t.Helper()
	r.waitState(t, minidrv.Idle)
	select {
	case rep := <-r.reports:
		t.Errorf("unexpected job report: %+v", rep)
	default:
	}
	loc := r.post(t, settings("Grayscale8", 75, "image/png", 0, 0, 300, 300))
	resp, doc := r.fetch(t, loc)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("normal scan after the abuse: status %d (%.200s)", resp.StatusCode, doc)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("normal scan after the abuse: %v (%v)", rep.Outcome, rep.Err)
	}
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after a normal scan, want Idle", s)
	}
}

// TestAdvScanSettingsHostile posts hostile and malformed scan settings:
// each gets the documented status (400 malformed, 409 unsupported, 413
// too big, 415 wrong type) with a reason, or, where the input is odd but
// acceptable, a job that completes.
func TestAdvScanSettingsHostile(t *testing.T) {
	r := newRig(t, nil)
	laughs := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">` +
		`<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">` +
		`<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">` +
		`<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">` +
		`<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>` +
		`<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03"><scan:ColorMode>&lol9;</scan:ColorMode></scan:ScanSettings>`
	xxe := `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>` +
		`<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03"><scan:ColorMode>&xxe;</scan:ColorMode></scan:ScanSettings>`
	deep := advBody(strings.Repeat("<a>", 20000) + strings.Repeat("</a>", 20000))
	for _, tc := range []struct {
		name, ctype, body string
		want              []int // acceptable statuses; 201 jobs are completed
	}{
		{"billion laughs", "text/xml", laughs, []int{400}},
		{"external entity", "text/xml", xxe, []int{400}},
		{"undefined entity", "text/xml", advBody(`<scan:ColorMode>&nope;</scan:ColorMode>`), []int{400}},
		{"deep nesting", "text/xml", deep, []int{400, 413}},
		{"NUL byte", "text/xml", advBody("\x00"), []int{400}},
		{"invalid UTF-8", "text/xml", advBody("<scan:ColorMode>\xff\xfe</scan:ColorMode>"), []int{400}},
		{"UTF-16 declared", "text/xml", strings.Replace(advBody(advSmall), `encoding="UTF-8"`, `encoding="UTF-16"`, 1), []int{400}},
		{"no namespace", "text/xml", `<ScanSettings>` + advSmall + `</ScanSettings>`, []int{400}},
		{"only a comment", "text/xml", `<!-- nothing -->`, []int{400}},
		{"unclosed", "text/xml", strings.TrimSuffix(advBody(advSmall), "</scan:ScanSettings>"), []int{400}},
		{"huge resolution", "text/xml", advBody(`<scan:XResolution>18446744073709551617</scan:XResolution>`), []int{400}},
		{"resolution over 1e7", "text/xml", advBody(`<scan:XResolution>10000001</scan:XResolution>`), []int{400}},
		{"resolution 1e7", "text/xml", advBody(`<scan:XResolution>10000000</scan:XResolution>`), []int{409}},
		{"MaxInt64 width", "text/xml", advBody(advSmall + advRegion("0", "0", fmt.Sprint(int64(math.MaxInt64)), "300")), []int{400}},
		{"MaxUint32 width", "text/xml", advBody(advSmall + advRegion("0", "0", "4294967295", "300")), []int{400}},
		{"1e7 offset and width", "text/xml", advBody(advSmall + advRegion("10000000", "10000000", "10000000", "10000000")), []int{409}},
		{"negative width", "text/xml", advBody(advSmall + advRegion("0", "0", "-300", "300")), []int{400}},
		{"negative offset", "text/xml", advBody(advSmall + advRegion("0", "-1", "300", "300")), []int{400}},
		{"zero width", "text/xml", advBody(advSmall + advRegion("0", "0", "0", "300")), []int{409}},
		{"zero height", "text/xml", advBody(advSmall + advRegion("0", "0", "300", "0")), []int{409}},
		{"zero resolution", "text/xml", advBody(`<scan:XResolution>0</scan:XResolution>`), []int{409}},
		{"plus sign", "text/xml", advBody(`<scan:XResolution>+75</scan:XResolution>`), []int{400}},
		{"hex", "text/xml", advBody(`<scan:XResolution>0x4b</scan:XResolution>`), []int{400}},
		{"underscores", "text/xml", advBody(`<scan:XResolution>7_5</scan:XResolution>`), []int{400}},
		{"fraction", "text/xml", advBody(`<scan:XResolution>75.0</scan:XResolution>`), []int{400}},
		{"exponent", "text/xml", advBody(`<scan:XResolution>7.5e1</scan:XResolution>`), []int{400}},
		{"non-ASCII digits", "text/xml", advBody(`<scan:XResolution>٧٥</scan:XResolution>`), []int{400}},
		{"empty number", "text/xml", advBody(`<scan:XResolution></scan:XResolution>`), []int{400}},
		// A child element: not a number (encoding/xml alone would join the text around it).
		{"number with child", "text/xml", advBody(`<scan:XResolution>7<x/>5</scan:XResolution>` + advRegion("0", "0", "300", "300")), []int{400}},
		{"resolution not offered", "text/xml", advBody(`<scan:XResolution>1200</scan:XResolution><scan:YResolution>1200</scan:YResolution>`), []int{409}},
		{"region outside right", "text/xml", advBody(advSmall + advRegion("2544", "0", "12", "300")), []int{409}},
		{"region outside bottom", "text/xml", advBody(advSmall + advRegion("0", "3500", "300", "300")), []int{409}},
		{"region over everything", "text/xml", advBody(advSmall + advRegion("0", "0", "2545", "3504")), []int{409}},
		{"region under a pixel", "text/xml", advBody(advSmall + advRegion("2543", "0", "1", "300")), []int{409}},
		{"region units", "text/xml", advBody(advSmall + strings.Replace(advRegion("0", "0", "300", "300"), "escl:ThreeHundredthsOfInches", "Pixels", 1)), []int{409}},
		{"two regions", "text/xml", advBody(advSmall + strings.Replace(advRegion("0", "0", "300", "300"), "</pwg:ScanRegions>", "", 1) + `<pwg:ScanRegion/></pwg:ScanRegions>`), []int{409}},
		{"two ScanRegions", "text/xml", advBody(advSmall + advRegion("0", "0", "300", "300") + advRegion("0", "0", "300", "300")), []int{409}},
		{"duplicate width", "text/xml", advBody(advSmall + strings.Replace(advRegion("0", "0", "300", "300"), "<pwg:Width>", "<pwg:Width>300</pwg:Width><pwg:Width>", 1)), []int{400}},
		{"duplicate units", "text/xml", advBody(advSmall + strings.Replace(advRegion("0", "0", "300", "300"), "<pwg:XOffset>", "<pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits><pwg:XOffset>", 1)), []int{400}},
		{"duplicate resolution", "text/xml", advBody(advSmall + `<scan:XResolution>75</scan:XResolution>`), []int{400}},
		{"duplicate format ext", "text/xml", advBody(`<scan:DocumentFormatExt>image/png</scan:DocumentFormatExt><scan:DocumentFormatExt>image/png</scan:DocumentFormatExt>`), []int{400}},
		{"duplicate input source", "text/xml", advBody(`<pwg:InputSource>Platen</pwg:InputSource><pwg:InputSource>Platen</pwg:InputSource>`), []int{400}},
		{"unknown colour mode", "text/xml", advBody(`<scan:ColorMode>RGB48</scan:ColorMode>`), []int{409}},
		{"colour mode case", "text/xml", advBody(`<scan:ColorMode>rgb24</scan:ColorMode>`), []int{409}},
		{"empty colour mode", "text/xml", advBody(`<scan:ColorMode></scan:ColorMode>`), []int{409}},
		{"unknown format", "text/xml", advBody(`<pwg:DocumentFormat>application/pdf</pwg:DocumentFormat>`), []int{409}},
		{"format with parameter", "text/xml", advBody(`<pwg:DocumentFormat>image/png; q=1</pwg:DocumentFormat>`), []int{409}},
		{"empty format ext", "text/xml", advBody(`<scan:DocumentFormatExt></scan:DocumentFormatExt>`), []int{409}},
		{"feeder", "text/xml", advBody(`<pwg:InputSource>Feeder</pwg:InputSource>`), []int{409}},
		{"duplex", "text/xml", advBody(`<scan:Duplex>true</scan:Duplex>`), []int{409}},
		{"content type json", "application/json", advBody(advSmall), []int{415}},
		{"content type garbage", "text/xml;;;=", advBody(advSmall), []int{415}},
		{"content type multipart", "multipart/form-data; boundary=x", advBody(advSmall), []int{415}},
		{"oversized", "text/xml", advBody(advSmall + "<!--" + strings.Repeat("x", escl.DefaultMaxBodySize) + "-->"), []int{413}},
		// Odd but acceptable: the job runs.
		{"unknown intent", "text/xml", advBody(advSmall + advRegion("0", "0", "300", "300") + `<scan:Intent>Bogus</scan:Intent>`), []int{201, 409}},
		{"unknown elements", "text/xml", advBody(advSmall + advRegion("0", "0", "300", "300") + `<x:Foo xmlns:x="urn:x"><x:Bar/></x:Foo>`), []int{201}},
		{"content type with charset", "text/xml; charset=utf-8", advBody(advSmall + advRegion("0", "0", "300", "300")), []int{201}},
		{"content type upper case", "TEXT/XML", advBody(advSmall + advRegion("0", "0", "300", "300")), []int{201}},
		{"spaces around numbers", "text/xml", advBody(advSmall + advRegion(" 0 ", "\n0\t", " 300", "300 ")), []int{201}},
		{"mixed resolutions", "text/xml", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>75</scan:XResolution><scan:YResolution>150</scan:YResolution>` + advRegion("3", "5", "301", "299")), []int{201}},
		{"whole platen edge", "text/xml", advBody(advSmall + advRegion("2532", "3492", "12", "12")), []int{201}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.do(t, "POST", "/eSCL/ScanJobs", tc.ctype, tc.body)
			if !slices.Contains(tc.want, resp.StatusCode) {
				t.Errorf("status %d (%.300s), want one of %v", resp.StatusCode, strings.TrimSpace(body), tc.want)
			}
			if resp.StatusCode == http.StatusCreated {
				advFinishJob(t, r, resp.Header.Get("Location"))
				return
			}
			if resp.StatusCode >= 400 && len(strings.TrimSpace(body)) == 0 {
				t.Errorf("status %d without a reason", resp.StatusCode)
			}
			if resp.StatusCode >= 500 {
				t.Errorf("a server error for client input: %d (%s)", resp.StatusCode, body)
			}
		})
	}
	advCheckWorks(t, r)
}

// TestAdvMixedResolutionImage: a region at different X and Y resolutions
// gives the image size the client's arithmetic predicts.
func TestAdvMixedResolutionImage(t *testing.T) {
	r := newRig(t, nil)
	body := advBody(`<scan:ColorMode>RGB24</scan:ColorMode><scan:XResolution>75</scan:XResolution><scan:YResolution>200</scan:YResolution>` + advRegion("7", "11", "601", "299"))
	loc := r.post(t, body)
	resp, doc := r.fetch(t, loc)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("NextDocument: status %d", resp.StatusCode)
	}
	round := func(u, dpi int) int { return int(math.Round(float64(u*dpi) / 300)) }
	wantW, wantH := round(601, 75), round(299, 200) // each length rounded (toPixels)
	cfg, err := decodePNGConfig(doc)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if cfg.Width != wantW || cfg.Height != wantH {
		t.Errorf("image %dx%d, want %dx%d", cfg.Width, cfg.Height, wantW, wantH)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("report %v", rep.Outcome)
	}
}

// TestAdvMethodsAndPaths: other methods, HEAD on the read-only resources,
// path traversal and odd job IDs: clear statuses, no job, no device use.
func TestAdvMethodsAndPaths(t *testing.T) {
	r := newRig(t, nil)
	ok := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	type tc struct {
		method, path string
		want         []int
	}
	cases := []tc{
		{"HEAD", "/eSCL/ScannerCapabilities", []int{200}},
		{"HEAD", "/eSCL/ScannerStatus", []int{200}},
		{"HEAD", "/eSCL/ScanJobs", []int{405}},
		{"GET", "/eSCL/ScanJobs", []int{405}},
		{"DELETE", "/eSCL/ScanJobs", []int{405}},
		{"PUT", "/eSCL/ScanJobs/x", []int{405}},
		{"GET", "/eSCL/ScanJobs/x", []int{405}},
		{"POST", "/eSCL/ScanJobs/x/NextDocument", []int{405}},
		{"DELETE", "/eSCL/ScanJobs/x/NextDocument", []int{405}},
		{"OPTIONS", "/eSCL/ScannerCapabilities", []int{405}},
		{"OPTIONS", "*", []int{200, 400, 404, 405}},
		{"TRACE", "/eSCL/ScannerStatus", []int{405}},
		{"PATCH", "/eSCL/ScanJobs", []int{405}},
		{"CONNECT", "/eSCL/ScanJobs", []int{400, 404, 405}},
		{"BREW", "/eSCL/ScannerStatus", []int{405}},
		{"GET", "/eSCL/ScanJobs//NextDocument", []int{301, 307, 404}},
		{"GET", "/eSCL/ScanJobs/../../etc/passwd", []int{301, 307, 404}},
		{"GET", "/eSCL/ScanJobs/%2e%2e/NextDocument", []int{404}},
		{"GET", "/eSCL/ScanJobs/%2e%2e%2f%2e%2e%2fetc%2fpasswd/NextDocument", []int{404}},
		{"GET", "/eSCL/ScanJobs/a%00b/NextDocument", []int{400, 404}},
		{"GET", "/eSCL/ScanJobs/" + strings.Repeat("a", 4000) + "/NextDocument", []int{404, 414, 431}},
		{"DELETE", "/eSCL/ScanJobs/%2e%2e", []int{404}},
		{"DELETE", "/eSCL/ScanJobs/..", []int{301, 307, 404, 405}},
		{"GET", "/eSCL/ScanJobs/*/NextDocument", []int{404}},
		{"GET", "/eSCL/ScanJobs/{id}/NextDocument", []int{404}},
		{"GET", "/escl/ScannerStatus", []int{404}},
		{"GET", "/eSCL/ScannerStatus/", []int{404}},
		{"GET", "/eSCL", []int{404}},
		{"GET", "/", []int{404}},
	}
	// The transport cleans nothing: write raw requests.
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			code := rawStatus(t, r, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", c.method, c.path))
			if !slices.Contains(c.want, code) {
				t.Errorf("status %d, want one of %v", code, c.want)
			}
		})
	}
	// The same against a real job's ID: nothing but GET NextDocument and
	// DELETE touches it, and none of them consumes its page.
	loc := r.post(t, ok)
	id := strings.TrimPrefix(loc, "/eSCL/ScanJobs/")
	for _, c := range []tc{
		{"GET", loc, []int{405}},
		{"PUT", loc, []int{405}},
		{"POST", loc, []int{405}},
		{"POST", loc + "/NextDocument", []int{405}},
		{"PUT", loc + "/NextDocument", []int{405}},
		{"GET", "/eSCL/ScanJobs/x/../" + id + "/NextDocument", []int{301, 307}},
		{"GET", "/eSCL/ScanJobs/" + strings.ToUpper(id) + "/NextDocument", []int{404}},
		{"GET", "/eSCL/ScanJobs/" + id + "%20/NextDocument", []int{404}},
		{"GET", loc + "/NextDocument/", []int{404}},
		{"GET", loc + "/ScanImageInfo", []int{404, 405}},
	} {
		code := rawStatus(t, r, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", c.method, c.path))
		if !slices.Contains(c.want, code) {
			t.Errorf("%s %s: status %d, want one of %v", c.method, c.path, code, c.want)
		}
	}
	advFinishJob(t, r, loc)
	if n := r.dev.acquisitions(); n != 1 {
		t.Errorf("%d acquisitions, want the one job's", n)
	}
	advCheckWorks(t, r)
}

// rawStatus sends one raw request on a new connection and returns the
// response's status code.
func rawStatus(t *testing.T, r *rig, req string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response to %.60q: %v", req, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdvTruncatedBodies: POST bodies that end early (a chunked body cut
// short, a Content-Length the client does not send, a client that goes
// away) create no job and leave the scanner free.
func TestAdvTruncatedBodies(t *testing.T) {
	r := newRig(t, nil)
	ok := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	addr := r.srv.Listener.Addr().String()
	for _, tc := range []struct {
		name, req string
	}{
		{"chunked cut short", "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(ok)/2, ok[:len(ok)/2])},
		{"chunked bad size", "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + ok + "\r\n0\r\n\r\n"},
		{"chunked huge size", "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n" + ok},
		{"content length short", fmt.Sprintf("POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(ok)+100, ok)},
		{"content length huge", "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: 99999999999\r\n\r\n" + ok},
		{"content length negative", "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: -5\r\n\r\n" + ok},
		{"two content lengths", fmt.Sprintf("POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\nContent-Length: 3\r\n\r\n%s", len(ok), ok)},
		{"both framings", fmt.Sprintf("POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(ok), ok)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tc.req); err != nil {
				t.Fatal(err)
			}
			_ = c.(*net.TCPConn).CloseWrite() // the body ends here
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusCreated || resp.StatusCode >= 500 {
					t.Errorf("status %d (%s), want a 4xx or no answer", resp.StatusCode, b)
				}
			}
		})
	}
	advCheckWorks(t, r)
}

// TestAdvSlowPostDoesNotHoldScanner: a client that sends its POST's
// headers and then trickles (or never sends) the body does not hold the
// scanner: another client's job runs meanwhile.
func TestAdvSlowPostDoesNotHoldScanner(t *testing.T) {
	r := newRig(t, nil)
	ok := settings("Grayscale8", 75, "image/png", 0, 0, 300, 300)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 5 {
		c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(ok), ok[:10])
	}
	// Headers only, no request line end: the slowest kind.
	c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, c)
	io.WriteString(c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\n")
	advCheckWorks(t, r)
	// The slow ones finish their bodies now: each gets a job in turn or
	// 503; none is left waiting for ever.
	for _, c := range conns[:5] {
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		io.WriteString(c, ok[10:])
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("slow POST: %v", err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusCreated:
			advFinishJob(t, r, resp.Header.Get("Location"))
		case http.StatusServiceUnavailable:
		default:
			t.Errorf("slow POST: status %d, want 201 or 503", resp.StatusCode)
		}
	}
	advCheckWorks(t, r)
}

// decodePNGConfig returns a PNG's size.
func decodePNGConfig(doc []byte) (image.Config, error) {
	return png.DecodeConfig(bytes.NewReader(doc))
}
