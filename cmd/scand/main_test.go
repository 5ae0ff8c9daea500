package main

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is scand running in this process.
type daemon struct {
	url  string // the eSCL root
	sigs chan os.Signal
	log  *syncBuffer
	exit chan int
}

// testAbortTimeout is the --abort-timeout of the daemons the tests start,
// unless they give one. It bounds the driver's probe of the simulated
// scanner at start: the default, 250 ms, is not always met on a loaded
// 2-core machine under the race detector (wiascan's tests, with the same
// default, failed that way), and scand would exit before it serves.
const testAbortTimeout = "2s"

// withAbortTimeout returns pre with --abort-timeout testAbortTimeout
// appended, unless args set it.
func withAbortTimeout(pre, args []string) []string {
	for _, a := range args {
		if strings.HasPrefix(a, "--abort-timeout") || strings.HasPrefix(a, "-abort-timeout") {
			return pre
		}
	}
	return append(pre, "--abort-timeout", testAbortTimeout)
}

// start runs scand with args (and --addr 127.0.0.1:0) until the test ends.
func start(t *testing.T, args ...string) *daemon {
	t.Helper()
	d := &daemon{sigs: make(chan os.Signal, 1), log: new(syncBuffer), exit: make(chan int, 1)}
	addr := make(chan string, 1)
	go func() {
		d.exit <- run(append(withAbortTimeout([]string{"--addr", "127.0.0.1:0"}, args), args...), d.log, d.sigs, func(a string) { addr <- a })
	}()
	select {
	case a := <-addr:
		d.url = "http://" + a + "/eSCL"
	case code := <-d.exit:
		t.Fatalf("scand exited with %d:\n%s", code, d.log.String())
	case <-time.After(15 * time.Second):
		t.Fatalf("scand does not listen after 15 s:\n%s", d.log.String())
	}
	t.Cleanup(func() {
		select {
		case d.sigs <- syscall.SIGTERM:
		default:
		}
		select {
		case <-d.exit:
		case <-time.After(15 * time.Second):
			t.Errorf("scand did not stop")
		}
	})
	return d
}

// stop sends SIGTERM and returns the exit status and how long it took.
func (d *daemon) stop(t *testing.T) (int, time.Duration) {
	t.Helper()
	t0 := time.Now()
	d.sigs <- syscall.SIGTERM
	select {
	case code := <-d.exit:
		d.exit <- code // for the cleanup
		return code, time.Since(t0)
	case <-time.After(15 * time.Second):
		t.Fatalf("scand still runs 15 s after SIGTERM:\n%s", d.log.String())
	}
	panic("unreachable")
}

const settingsXML = `<?xml version="1.0" encoding="UTF-8"?>
<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm">
<pwg:InputSource>Platen</pwg:InputSource><scan:ColorMode>%s</scan:ColorMode>
<pwg:DocumentFormat>image/png</pwg:DocumentFormat>
<scan:XResolution>%d</scan:XResolution><scan:YResolution>%d</scan:YResolution>
</scan:ScanSettings>`

func post(t *testing.T, url, mode string, dpi int) string {
	t.Helper()
	resp, err := http.Post(url+"/ScanJobs", "text/xml", strings.NewReader(fmt.Sprintf(settingsXML, mode, dpi, dpi)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST ScanJobs: status %d, want 201", resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

func TestServeScanAndStop(t *testing.T) {
	d := start(t)
	loc := post(t, d.url, "Grayscale8", 75)
	resp, err := http.Get(strings.TrimSuffix(d.url, "/eSCL") + loc + "/NextDocument")
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("decode the page: %v", err)
	}
	checkGray(t, img, expectedImage(0, 75, 636, 876, false))
	code, took := d.stop(t)
	if code != exitOK {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped in %v", took)
	if log := d.log.String(); !strings.Contains(log, "outcome=delivered") || !strings.Contains(log, "scan=") {
		t.Errorf("no job line with timings in the log:\n%s", log)
	}
}

func checkGray(t *testing.T, img image.Image, want []byte) {
	t.Helper()
	g, ok := img.(*image.Gray)
	if !ok {
		t.Fatalf("page is %T, want a gray PNG", img)
	}
	w, h := g.Rect.Dx(), g.Rect.Dy()
	if w*h != len(want) {
		t.Fatalf("page %dx%d, want %d pixels", w, h, len(want))
	}
	for y := range h {
		if !bytes.Equal(g.Pix[y*g.Stride:y*g.Stride+w], want[y*w:(y+1)*w]) {
			t.Fatalf("line %d differs from the simulator's image", y)
		}
	}
}

// expectNextDoc returns a channel closed when a NextDocument request
// reaches the eSCL handler of the daemon the test starts next (call it
// before start): it is being served then, not on its way, and waits for
// its job.
func expectNextDoc(t *testing.T) <-chan struct{} {
	t.Helper()
	arrived := make(chan struct{})
	var once sync.Once
	testRequest = func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/NextDocument") {
			once.Do(func() { close(arrived) })
		}
	}
	t.Cleanup(func() { testRequest = nil }) // after start's cleanup: the daemon ended
	return arrived
}

// waitUntil polls cond until it holds, 15 s at most.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSIGTERMCancelsRunningJob: SIGTERM while a job's scan runs (the
// simulated scanner accepted it; at its bandwidth the page takes 45 s) and
// a client waits in NextDocument for it: the scan is canceled through
// CancelPendingIO (the job's log line says so), the waiting NextDocument
// ends with 410, and scand exits 0 well before the scan would have ended.
func TestSIGTERMCancelsRunningJob(t *testing.T) {
	scanning := watchScans(t)
	arrived := expectNextDoc(t)
	d := start(t, "--bandwidth", "200000") // 300 dpi gray: 45 s
	loc := post(t, d.url, "Grayscale8", 300)
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(strings.TrimSuffix(d.url, "/eSCL") + loc + "/NextDocument")
		if err != nil {
			got <- -1
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	// The scan runs (the device accepted it), and NextDocument waits for
	// it.
	waitUntil(t, "the simulated scanner accepts the scan", scanning)
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatalf("no NextDocument request within 15 s")
	}
	code, took := d.stop(t)
	if code != exitOK {
		t.Errorf("exit status %d, want 0:\n%s", code, d.log.String())
	}
	if took > 5*time.Second {
		t.Errorf("shutdown took %v, want well under the scan's 45 s", took)
	}
	select {
	case status := <-got:
		if status != http.StatusGone {
			t.Errorf("the waiting NextDocument got %d, want 410", status)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the waiting NextDocument did not end")
	}
	log := d.log.String()
	for _, want := range []string{"outcome=canceled", `cause=shutdown`, "cancel_pending_io="} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--usb", "nope"},
		{"--usb", "1209:0001", "--hang-after", "10"},
		{"--usb", "1209:0001", "--bandwidth", "1k"},
		{"--queue-depth", "0"},
		{"--hang-after", "-1"},
		{"--bandwidth", "1q"},
		{"extra"},
	} {
		var out bytes.Buffer
		if code := run(args, &out, nil, nil); code != exitUsage {
			t.Errorf("scand %q: exit %d, want %d (%s)", args, code, exitUsage, out.String())
		}
	}
	var out bytes.Buffer
	if code := run([]string{"--addr", "256.0.0.1:bad"}, &out, nil, nil); code != exitFailed {
		t.Errorf("bad address: exit %d, want %d (%s)", code, exitFailed, out.String())
	}
}

// TestScanimageScand is the README's two commands: scand serves the
// simulated scanner, scanimage lists it and scans a page from it.
func TestScanimageScand(t *testing.T) {
	bin, err := exec.LookPath("scanimage")
	if err != nil {
		t.Skip("scanimage not found (Debian: apt-get install sane-utils sane-airscan)")
	}
	if m, _ := filepath.Glob("/usr/lib/*/sane/libsane-airscan.so*"); len(m) == 0 {
		if m, _ = filepath.Glob("/usr/lib*/sane/libsane-airscan.so*"); len(m) == 0 {
			t.Skip("the sane-airscan backend is not installed")
		}
	}
	dir := filepath.Join(t.TempDir(), "sane")
	d := start(t, "--sane-config", dir)
	env := append(os.Environ(), "SANE_CONFIG_DIR="+dir)
	list := exec.Command(bin, "-L")
	list.Env = env
	if msg, err := list.CombinedOutput(); err != nil || !strings.Contains(string(msg), saneDevice) {
		t.Fatalf("scanimage -L: %v\n%s", err, msg)
	}
	out := filepath.Join(t.TempDir(), "page.png")
	cmd := exec.Command(bin, "-d", saneDevice, "--mode", "Gray", "--resolution", "75", "--format=png", "-o", out)
	cmd.Env = env
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scanimage: %v\n%s\nscand:\n%s", err, msg, d.log.String())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	checkGray(t, img, expectedImage(0, 75, 636, 876, false))
}

// TestSizeSyntax: --bandwidth and --hang-after take the size syntax of
// iobench and wiascan (package units); "1M" was refused before.
func TestSizeSyntax(t *testing.T) {
	for _, tc := range []struct {
		args                 []string
		bandwidth, hangAfter int64
	}{
		{nil, 0, 0},
		{[]string{"--bandwidth", "1M", "--hang-after", "64k"}, 1 << 20, 64 << 10},
		{[]string{"--bandwidth", "200000", "--hang-after", "1MiB"}, 200000, 1 << 20},
		{[]string{"--bandwidth", "0", "--hang-after", "2G"}, 0, 2 << 30},
	} {
		o, err := parseArgs(tc.args, io.Discard)
		if err != nil {
			t.Errorf("scand %q: %v", tc.args, err)
			continue
		}
		if o.bandwidth != tc.bandwidth || o.hangAfter != tc.hangAfter {
			t.Errorf("scand %q: bandwidth %d, hang-after %d; want %d, %d", tc.args, o.bandwidth, o.hangAfter, tc.bandwidth, tc.hangAfter)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bandwidth", "1q"}, `scand: --bandwidth "1q": not a size: want bytes, or a whole number with k, M or G`},
		{[]string{"--bandwidth", "4KB"}, `scand: --bandwidth "4KB": not a size`},
		{[]string{"--hang-after", "-1"}, `scand: --hang-after "-1": not a size`},
		{[]string{"--hang-after", "2T"}, `scand: --hang-after "2T": not a size`},
		{[]string{"--bandwidth", "2048G"}, `scand: --bandwidth "2048G": size out of range: want at most 1024G`},
	} {
		var out bytes.Buffer
		if code := run(tc.args, &out, nil, nil); code != exitUsage {
			t.Errorf("scand %q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if !strings.HasPrefix(out.String(), tc.want) || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("scand %q: got %q, want one line starting %q", tc.args, out.String(), tc.want)
		}
	}
	var help bytes.Buffer
	if code := run([]string{"-h"}, &help, nil, nil); code != exitOK {
		t.Errorf("scand -h: exit %d", code)
	}
	if !strings.Contains(help.String(), "take k, M or G") || !strings.Contains(help.String(), "e.g. 1M") {
		t.Errorf("scand -h does not describe the size syntax:\n%s", help.String())
	}
	// A daemon started with sizes serves (the simulator takes them).
	d := start(t, "--bandwidth", "1M", "--hang-after", "1G")
	if code, _ := d.stop(t); code != exitOK {
		t.Errorf("exit status %d after SIGTERM, want 0:\n%s", code, d.log.String())
	}
}
