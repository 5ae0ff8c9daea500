package escl_test

// Adversarial HTTP: huge bodies refused before they are read, one
// connection carried across a whole job (keep-alive after a page sent under
// a write deadline), HTTP/1.0, odd Host headers and prefixes, odd but valid
// XML spellings, and Shutdown with clients connected in every way.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// TestAdv3HugeBodyRefusedEarly: a client announces (or streams, chunked) a
// 100 MB ScanSettings body and keeps sending. The server answers 413 after
// reading about MaxBodySize and stops taking the body: the client's writes
// fail long before 100 MB went out, nothing is buffered in full, and the
// scanner is free after.
func TestAdv3HugeBodyRefusedEarly(t *testing.T) {
	r := newRig(t, nil)
	const total = 100 << 20
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			hdr := "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
			if chunked {
				hdr += "Transfer-Encoding: chunked\r\n\r\n"
			} else {
				hdr += fmt.Sprintf("Content-Length: %d\r\n\r\n", total)
			}
			if _, err := io.WriteString(c, hdr); err != nil {
				t.Fatal(err)
			}
			var sent atomic.Int64
			wdone := make(chan error, 1)
			go func() {
				chunk := []byte("<!--" + strings.Repeat("x", 32<<10-7) + "-->")
				var frame []byte
				if chunked {
					frame = append([]byte(fmt.Sprintf("%x\r\n", len(chunk))), chunk...)
					frame = append(frame, "\r\n"...)
				} else {
					frame = chunk
				}
				for sent.Load() < total {
					n, err := c.Write(frame)
					sent.Add(int64(n))
					if err != nil {
						wdone <- err
						return
					}
				}
				wdone <- nil
			}()
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no response to a 100 MB POST (%d bytes sent): %v", sent.Load(), err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d (%s), want 413", resp.StatusCode, strings.TrimSpace(string(body)))
			}
			// The server closes the connection: the writer fails soon.
			select {
			case err := <-wdone:
				if err == nil {
					t.Errorf("the server took all of a 100 MB body it refused")
				}
			case <-time.After(20 * time.Second):
				t.Errorf("the client could still write 20 s after its 413 (%d bytes sent)", sent.Load())
			}
			if n := sent.Load(); n > total/2 {
				t.Errorf("%d bytes of the body taken before the refusal, want it cut near %d", n, escl.DefaultMaxBodySize)
			}
			t.Logf("refused after %d bytes sent", sent.Load())
		})
	}
	advCheckWorks(t, r)
}

// adv3Conn is one client connection carrying several requests in turn.
type adv3Conn struct {
	c  net.Conn
	br *bufio.Reader
}

func adv3Dial(t *testing.T, r *rig) *adv3Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", r.srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &adv3Conn{c: c, br: bufio.NewReader(c)}
}

// round sends one raw request and reads its response whole.
func (ac *adv3Conn) round(t *testing.T, req string) (*http.Response, []byte) {
	t.Helper()
	_ = ac.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(ac.c, req); err != nil {
		t.Fatalf("write %.40q: %v", req, err)
	}
	resp, err := http.ReadResponse(ac.br, nil)
	if err != nil {
		t.Fatalf("response to %.40q: %v", req, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("body of the response to %.40q: %v", req, err)
	}
	return resp, b
}

// TestAdv3KeepAliveAcrossJob: one HTTP/1.1 connection (Host an IPv6
// literal with a port, the handler under a two-segment prefix) carries a
// job from POST to DELETE and more after: the Location is the job's path
// under the prefix and the job's JobUri in ScannerStatus, and the
// connection that received the page (sent under per-chunk write
// deadlines of JobTimeout) still serves requests after JobTimeout has
// passed. An HTTP/1.0 client then fetches a page too.
func TestAdv3KeepAliveAcrossJob(t *testing.T) {
	const prefix = "/scan/eSCL"
	const jobTimeout = 300 * time.Millisecond
	r := newRig(t, func(c *escl.Config) { c.Prefix = prefix; c.JobTimeout = jobTimeout })
	ac := adv3Dial(t, r)
	body := adv3Small
	host := "Host: [fe80::1%25eth0]:8080\r\n"
	resp, msg := ac.round(t, "POST "+prefix+"/ScanJobs HTTP/1.1\r\n"+host+"Content-Type: text/xml\r\n"+
		fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: status %d (%s)", resp.StatusCode, msg)
	}
	loc := resp.Header.Get("Location")
	id, ok := strings.CutPrefix(loc, prefix+"/ScanJobs/")
	if !ok || id == "" || strings.Contains(id, "/") {
		t.Fatalf("Location %q, want %s/ScanJobs/ID", loc, prefix)
	}
	resp, msg = ac.round(t, "GET "+prefix+"/ScannerStatus HTTP/1.1\r\n"+host+"\r\n")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(msg), "<pwg:JobUri>"+loc+"</pwg:JobUri>") ||
		!strings.Contains(string(msg), "<pwg:JobUuid>"+id+"</pwg:JobUuid>") {
		t.Errorf("ScannerStatus: status %d, want the job's URI %s and UUID:\n%s", resp.StatusCode, loc, msg)
	}
	resp, doc := ac.round(t, "GET "+loc+"/NextDocument HTTP/1.1\r\n"+host+"\r\n")
	if resp.StatusCode != http.StatusOK || int64(len(doc)) != resp.ContentLength || len(doc) == 0 {
		t.Fatalf("NextDocument: status %d, %d of %d bytes", resp.StatusCode, len(doc), resp.ContentLength)
	}
	if _, err := decodePNGConfig(doc); err != nil {
		t.Errorf("page: %v", err)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("job: %v", rep.Outcome)
	}
	time.Sleep(3 * jobTimeout) // past any write deadline the send set
	for _, req := range []struct {
		line string
		want int
	}{
		{"GET " + loc + "/NextDocument", http.StatusNotFound},
		{"DELETE " + loc, http.StatusOK},
		{"GET " + prefix + "/ScannerCapabilities", http.StatusOK},
		{"GET /eSCL/ScannerStatus", http.StatusNotFound}, // the default prefix is not served
	} {
		resp, msg := ac.round(t, req.line+" HTTP/1.1\r\n"+host+"\r\n")
		if resp.StatusCode != req.want {
			t.Errorf("%s on the kept-alive connection: status %d (%.100s), want %d", req.line, resp.StatusCode, msg, req.want)
		}
	}

	// HTTP/1.0, no Host: the page comes whole, the connection closes.
	resp, smsg := r.do(t, "POST", prefix+"/ScanJobs", "text/xml", strings.Replace(adv3Small, "Grayscale8", "RGB24", 1))
	loc = resp.Header.Get("Location")
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(loc, prefix+"/ScanJobs/") {
		t.Fatalf("POST: status %d (%s), Location %q", resp.StatusCode, smsg, loc)
	}
	old := adv3Dial(t, r)
	resp, doc = old.round(t, "GET "+loc+"/NextDocument HTTP/1.0\r\n\r\n")
	if resp.StatusCode != http.StatusOK || int64(len(doc)) != resp.ContentLength || !resp.Close {
		t.Errorf("HTTP/1.0 NextDocument: status %d, %d of %d bytes, close %v", resp.StatusCode, len(doc), resp.ContentLength, resp.Close)
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeDelivered {
		t.Errorf("HTTP/1.0 job: %v", rep.Outcome)
	}
	r.waitState(t, minidrv.Idle)
}

// TestAdv3ShutdownWithClientsConnected: Shutdown while an idle kept-alive
// client, a POST trickling its body, a client waiting in NextDocument for a
// scan, and a client that sent half a request line are all connected. It
// returns promptly with the driver idle; the waiting NextDocument ends with
// 410; the trickling POST, finished after, gets 503 (no job after
// Shutdown); the idle connection still answers ScannerStatus.
func TestAdv3ShutdownWithClientsConnected(t *testing.T) {
	r := newRig(t, nil)
	idle := adv3Dial(t, r)
	if resp, _ := idle.round(t, "GET /eSCL/ScannerStatus HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Fatalf("status: %d", resp.StatusCode)
	}
	slow := adv3Dial(t, r)
	body := adv3Small
	fmt.Fprintf(slow.c, "POST /eSCL/ScanJobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:20])
	half := adv3Dial(t, r)
	io.WriteString(half.c, "GET /eSCL/Scann")

	loc := slowJob(t, r)
	got := make(chan advGet, 1)
	arrived := r.expectNextDoc()
	go func() { got <- r.advNextDoc(context.Background(), loc) }()
	waitNextDoc(t, arrived)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := r.h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("Shutdown took %v", time.Since(t0))
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after Shutdown, want Idle", s)
	}
	select {
	case g := <-got:
		if g.code != http.StatusGone {
			t.Errorf("waiting NextDocument: %+v, want 410", g)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the waiting NextDocument still runs 10 s after Shutdown")
	}
	if rep := r.report(t); rep.Outcome != escl.OutcomeCanceled || rep.Cause != escl.CauseShutdown {
		t.Errorf("report: %v by %v, want canceled by shutdown", rep.Outcome, rep.Cause)
	}
	resp, msg := slow.round(t, body[20:])
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("POST finished after Shutdown: status %d (%s), want 503", resp.StatusCode, msg)
	}
	if resp, _ := idle.round(t, "GET /eSCL/ScannerStatus HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != http.StatusOK {
		t.Errorf("status after Shutdown on the idle connection: %d", resp.StatusCode)
	}
	resp, _ = half.round(t, "erStatus HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status finished after Shutdown: %d", resp.StatusCode)
	}
	// The slow job's own acquisition may or may not have begun when
	// Shutdown canceled it; the trickling POST must add none.
	if n := r.dev.acquisitions(); n > 1 {
		t.Errorf("%d acquisitions, want at most the slow job's one", n)
	}
}

// TestAdv3SettingsOddButValid: spellings of a valid ScanSettings that a
// conforming XML parser reads as the same document (a byte order mark, a
// default namespace, other prefixes for the eSCL namespaces, CDATA and
// comments in values, character references) each get a job; and spellings
// that only look alike (the eSCL names in another namespace for the root)
// get 400.
func TestAdv3SettingsOddButValid(t *testing.T) {
	r := newRig(t, nil)
	region := advRegion("0", "0", "300", "300")
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"byte order mark", "\xef\xbb\xbf" + advBody(advSmall+region), 201},
		{"default namespace", `<?xml version="1.0"?><ScanSettings xmlns="http://schemas.hp.com/imaging/escl/2011/05/03">` +
			`<ColorMode>Grayscale8</ColorMode><XResolution>75</XResolution><YResolution>75</YResolution>` +
			`<ScanRegions><ScanRegion><ContentRegionUnits>escl:ThreeHundredthsOfInches</ContentRegionUnits>` +
			`<XOffset>0</XOffset><YOffset>0</YOffset><Width>300</Width><Height>300</Height></ScanRegion></ScanRegions></ScanSettings>`, 201},
		{"other prefixes", strings.NewReplacer("scan:", "s:", "xmlns:scan", "xmlns:s", "pwg:", "p:", "xmlns:pwg", "xmlns:p").Replace(advBody(advSmall + region)), 201},
		{"CDATA", advBody(strings.Replace(advSmall, ">75<", "><![CDATA[75]]><", 1) + region), 201},
		{"comment in a number", advBody(strings.Replace(advSmall, ">75<", ">7<!-- five -->5<", 1) + region), 201},
		{"character references", advBody(strings.Replace(advSmall, ">75<", ">&#55;&#x35;<", 1) + region), 201},
		{"no declaration", strings.TrimPrefix(advBody(advSmall+region), `<?xml version="1.0" encoding="UTF-8"?>`+"\n"), 201},
		{"root in the pwg namespace", strings.Replace(strings.Replace(advBody(advSmall), "<scan:ScanSettings", "<pwg:ScanSettings", 1), "</scan:ScanSettings>", "</pwg:ScanSettings>", 1), 400},
		{"undeclared prefix", strings.Replace(advBody(advSmall), `xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" `, "", 1), 400},
		{"two roots", advBody(advSmall) + advBody(advSmall), 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, msg := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", tc.body)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%.200s), want %d", resp.StatusCode, strings.TrimSpace(msg), tc.want)
			}
			if resp.StatusCode == http.StatusCreated {
				advFinishJob(t, r, resp.Header.Get("Location"))
			}
		})
	}
	advCheckWorks(t, r)
}
