package escl_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// rig is a Handler for a simulated scanner, served on 127.0.0.1.
type rig struct {
	dev     *simDevice
	h       *escl.Handler
	srv     *httptest.Server
	base    string // the eSCL root URL
	reports chan escl.JobReport

	// nextDocs are the channels expectNextDoc handed out, closed when the
	// next NextDocument request reaches the handler.
	nextDocMu sync.Mutex
	nextDocs  []chan struct{}
}

// newRig serves a new simulated scanner; mod, if not nil, changes the
// handler's Config first.
func newRig(tb testing.TB, mod func(*escl.Config)) *rig {
	tb.Helper()
	return newRigServer(tb, mod, nil)
}

// newRigServer is newRig with srvMod, if not nil, changing the HTTP server
// before it starts.
func newRigServer(tb testing.TB, mod func(*escl.Config), srvMod func(*http.Server)) *rig {
	tb.Helper()
	dev := newSimDevice(tb, simAbortTimeout)
	r := &rig{dev: dev, reports: make(chan escl.JobReport, 64)}
	cfg := escl.Config{
		Driver:       dev.d,
		MakeAndModel: "cancelio test scanner",
		OnJobDone:    func(rep escl.JobReport) { r.reports <- rep },
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := escl.NewHandler(cfg)
	if err != nil {
		tb.Fatalf("NewHandler: %v", err)
	}
	r.h = h
	r.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/NextDocument") {
			r.nextDocMu.Lock()
			for _, ch := range r.nextDocs {
				close(ch)
			}
			r.nextDocs = nil
			r.nextDocMu.Unlock()
		}
		h.ServeHTTP(w, req)
	}))
	if srvMod != nil {
		srvMod(r.srv.Config)
	}
	r.srv.Start()
	r.base = r.srv.URL + escl.DefaultPrefix
	tb.Cleanup(func() {
		r.srv.CloseClientConnections()
		r.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
	})
	return r
}

// settings returns a scan:ScanSettings document; w or h 0 leaves out the
// region (the whole platen).
func settings(mode string, dpi int, format string, x, y, w, h int) string {
	region := ""
	if w > 0 && h > 0 {
		region = fmt.Sprintf(`<pwg:ScanRegions><pwg:ScanRegion>
<pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits>
<pwg:XOffset>%d</pwg:XOffset><pwg:YOffset>%d</pwg:YOffset><pwg:Width>%d</pwg:Width><pwg:Height>%d</pwg:Height>
</pwg:ScanRegion></pwg:ScanRegions>`, x, y, w, h)
	}
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm">
<pwg:Version>2.0</pwg:Version>%s
<pwg:InputSource>Platen</pwg:InputSource>
<scan:ColorMode>%s</scan:ColorMode>
<pwg:DocumentFormat>%s</pwg:DocumentFormat>
<scan:DocumentFormatExt>%s</scan:DocumentFormatExt>
<scan:XResolution>%d</scan:XResolution>
<scan:YResolution>%d</scan:YResolution>
</scan:ScanSettings>`, region, mode, format, format, dpi, dpi)
}

// do sends a request and returns the response with its body read.
func (r *rig) do(tb testing.TB, method, path, ctype, body string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(method, r.srv.URL+path, strings.NewReader(body))
	if err != nil {
		tb.Fatalf("NewRequest: %v", err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, string(b)
}

// post creates a job and returns its Location (a path).
func (r *rig) post(tb testing.TB, body string) string {
	tb.Helper()
	resp, msg := r.do(tb, "POST", escl.DefaultPrefix+"/ScanJobs", "text/xml", body)
	if resp.StatusCode != http.StatusCreated {
		tb.Fatalf("POST ScanJobs: status %d (%s), want 201", resp.StatusCode, strings.TrimSpace(msg))
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, escl.DefaultPrefix+"/ScanJobs/") {
		tb.Fatalf("POST ScanJobs: Location %q, want %s/ScanJobs/ID", loc, escl.DefaultPrefix)
	}
	return loc
}

// report waits for the next job report.
func (r *rig) report(tb testing.TB) escl.JobReport {
	tb.Helper()
	select {
	case rep := <-r.reports:
		return rep
	case <-time.After(15 * time.Second):
		tb.Fatalf("no job report within 15 s")
	}
	panic("unreachable")
}

// expectNextDoc returns a channel closed when the next NextDocument
// request reaches the handler: call it before that request is sent. A
// request that arrives before the test waits for it is not missed.
func (r *rig) expectNextDoc() <-chan struct{} {
	ch := make(chan struct{})
	r.nextDocMu.Lock()
	r.nextDocs = append(r.nextDocs, ch)
	r.nextDocMu.Unlock()
	return ch
}

// waitNextDoc waits until arrived, a channel from expectNextDoc, is
// closed: the NextDocument request has reached the handler.
func waitNextDoc(tb testing.TB, arrived <-chan struct{}) {
	tb.Helper()
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		tb.Fatalf("no NextDocument request within 15 s")
	}
}

// waitState waits until the driver is in state s.
func (r *rig) waitState(tb testing.TB, s minidrv.State) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, changed := r.dev.d.Watch()
		if st == s {
			return
		}
		select {
		case <-changed:
		case <-time.After(time.Until(deadline)):
			tb.Fatalf("driver state %v, want %v within 15 s", st, s)
		}
	}
}

// checkImage compares img pixel for pixel with the raw image the scanner
// sent for the driver's latest acquisition, in colour mode mode.
func checkImage(tb testing.TB, dev *simDevice, img image.Image, mode string) {
	tb.Helper()
	raw, w, h := dev.lastImage()
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h {
		tb.Fatalf("image %dx%d, want %dx%d", b.Dx(), b.Dy(), w, h)
	}
	bpl := w
	switch mode {
	case "RGB24":
		bpl = 3 * w
	case "BlackAndWhite1":
		bpl = (w + 7) / 8
	}
	if len(raw) != bpl*h {
		tb.Fatalf("expected image has %d bytes, want %d", len(raw), bpl*h)
	}
	// The decoders' usual types: compare rows of bytes.
	switch m := img.(type) {
	case *image.Gray:
		if mode == "Grayscale8" {
			for y := range h {
				row := m.Pix[y*m.Stride : y*m.Stride+w]
				if !bytes.Equal(row, raw[y*bpl:(y+1)*bpl]) {
					tb.Fatalf("row %d differs from the scanner's image", y)
				}
			}
			return
		}
	case *image.RGBA, *image.NRGBA:
		if mode == "RGB24" {
			pix, stride := pixOf(m)
			for y := range h {
				row := pix[y*stride : y*stride+4*w]
				for x := range w {
					if !bytes.Equal(row[4*x:4*x+3], raw[y*bpl+3*x:y*bpl+3*x+3]) || row[4*x+3] != 0xff {
						tb.Fatalf("pixel (%d,%d) = %v, want %v", x, y, row[4*x:4*x+4], raw[y*bpl+3*x:y*bpl+3*x+3])
					}
				}
			}
			return
		}
	}
	min := img.Bounds().Min
	bad := 0
	for y := range h {
		for x := range w {
			c := img.At(min.X+x, min.Y+y)
			var got, want [3]uint8
			switch mode {
			case "RGB24":
				n := color.NRGBAModel.Convert(c).(color.NRGBA)
				got = [3]uint8{n.R, n.G, n.B}
				o := y*bpl + 3*x
				want = [3]uint8{raw[o], raw[o+1], raw[o+2]}
			case "BlackAndWhite1":
				g := color.GrayModel.Convert(c).(color.Gray).Y
				got[0] = g
				want[0] = 0xff
				if raw[y*bpl+x/8]&(0x80>>(x%8)) != 0 {
					want[0] = 0 // 1 is black
				}
			default:
				got[0] = color.GrayModel.Convert(c).(color.Gray).Y
				want[0] = raw[y*bpl+x]
			}
			if got != want {
				if bad < 5 {
					tb.Errorf("pixel (%d,%d) = %v, want %v", x, y, got, want)
				}
				bad++
			}
		}
	}
	if bad > 0 {
		tb.Fatalf("%d of %d pixels differ", bad, w*h)
	}
}

func pixOf(img image.Image) ([]byte, int) {
	switch m := img.(type) {
	case *image.RGBA:
		return m.Pix, m.Stride
	case *image.NRGBA:
		return m.Pix, m.Stride
	}
	panic("pixOf: not RGBA")
}
