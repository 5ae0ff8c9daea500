package escl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// The device name sane-airscan gives the one manual device of saneConfig.
const (
	saneDeviceName = "Go scanner"
	saneDevice     = "airscan:e0:" + saneDeviceName
)

// scanimage returns the path of scanimage, or skips the test where it or
// sane-airscan's backend is missing (make test installs both: the Debian
// packages sane-utils and sane-airscan).
func scanimage(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("scanimage")
	if err != nil {
		tb.Skip("scanimage not found (Debian: apt-get install sane-utils sane-airscan)")
	}
	for _, dir := range []string{"/usr/lib/*/sane", "/usr/lib/sane", "/usr/lib64/sane", "/usr/local/lib/sane"} {
		if m, _ := filepath.Glob(filepath.Join(dir, "libsane-airscan.so*")); len(m) > 0 {
			return path
		}
	}
	tb.Skip("the sane-airscan backend is not installed (Debian: apt-get install sane-airscan)")
	return ""
}

// saneConfig writes a SANE configuration that loads only the airscan
// backend, with the rig's server as its one device and discovery off, and
// returns the environment that selects it. SANE_CONFIG_DIR has no
// trailing colon: libsane then reads no other directory.
func saneConfig(tb testing.TB, r *rig) []string {
	tb.Helper()
	dir := tb.TempDir()
	conf := fmt.Sprintf("[devices]\n%q = %s\n\n[options]\ndiscovery = disable\nws-discovery = off\n", saneDeviceName, r.base)
	if err := os.WriteFile(filepath.Join(dir, "dll.conf"), []byte("airscan\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "airscan.conf"), []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	return append(os.Environ(), "SANE_CONFIG_DIR="+dir)
}

// readPNG decodes the PNG file scanimage wrote at path.
func readPNG(tb testing.TB, path string) image.Image {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		tb.Fatalf("decode scanimage's PNG: %v", err)
	}
	return img
}

// scanGray runs scanimage for a 75 dpi grayscale page and checks that the
// job was delivered and the image is the device's; what names the scan in
// failures.
func (r *rig) scanGray(tb testing.TB, bin string, env []string, what string) {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "page.png")
	if msg, err := scanCmd(bin, env, out, "Gray", 75).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v\n%s", what, err, msg)
	}
	if rep := r.report(tb); rep.Outcome != escl.OutcomeDelivered {
		tb.Fatalf("%s: job %v, want delivered", what, rep.Outcome)
	}
	checkImage(tb, r.dev, readPNG(tb, out), "Grayscale8")
}

// scanCmd returns a scanimage command for one page into out. A run that
// has not ended a minute after the command was made is killed, and fails:
// sane-airscan was seen (once, under heavy load) to hang in its start-up
// before it sent any request, which would otherwise hold the package until
// go test's own timeout.
func scanCmd(bin string, env []string, out, mode string, dpi int, extra ...string) *exec.Cmd {
	args := append([]string{"-d", saneDevice, "--mode", mode, "--resolution", fmt.Sprint(dpi), "--format=png", "-o", out}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(scanTimeout, cancel)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// scanTimeout bounds one scanimage run (scanCmd); a page here takes well
// under a second.
const scanTimeout = time.Minute

func TestScanimageList(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	cmd := exec.Command(bin, "-L")
	cmd.Env = saneConfig(t, r)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scanimage -L: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "`"+saneDevice+"'") {
		t.Errorf("scanimage -L does not list %q:\n%s", saneDevice, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

func TestScanimageScan(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	dir := t.TempDir()
	for _, tc := range []struct {
		mode  string // scanimage's
		escl  string
		dpi   int
		extra []string
	}{
		{"Gray", "Grayscale8", 75, nil},
		// Regions in whole inches (mm multiples of 25.4), so that
		// scanimage's arithmetic in mm and the server's in 1/300 inch
		// agree to the pixel.
		{"Gray", "Grayscale8", 300, []string{"-l", "25.4", "-t", "50.8", "-x", "76.2", "-y", "50.8"}},
		{"Color", "RGB24", 75, nil},
		{"Color", "RGB24", 150, []string{"-l", "50.8", "-x", "101.6", "-y", "127"}},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.mode, tc.dpi), func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("%s-%d.png", tc.mode, tc.dpi))
			cmd := scanCmd(bin, env, out, tc.mode, tc.dpi, tc.extra...)
			t0 := time.Now()
			msg, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("scanimage: %v\n%s", err, msg)
			}
			took := time.Since(t0)
			rep := r.report(t)
			if rep.Outcome != escl.OutcomeDelivered {
				t.Fatalf("job %v (%v), want delivered", rep.Outcome, rep.Err)
			}
			if rep.Settings.ColorMode != tc.escl || rep.Settings.XResolution != tc.dpi || rep.Settings.Format != escl.MIMEPNG {
				t.Errorf("job settings %+v, want %s at %d dpi, PNG", rep.Settings, tc.escl, tc.dpi)
			}
			img := readPNG(t, out)
			checkImage(t, r.dev, img, tc.escl)
			t.Logf("%dx%d px in %v (scanimage run), scan %v", img.Bounds().Dx(), img.Bounds().Dy(),
				took.Round(time.Millisecond), rep.ScanEnd.Sub(rep.ScanStart).Round(time.Millisecond))
		})
	}
	waitIdle(t, r)
}

// waitIdle checks that the driver ends idle.
func waitIdle(t *testing.T, r *rig) {
	t.Helper()
	r.waitState(t, minidrv.Idle)
}

// slowScan starts scanimage on a page the scanner takes many seconds to
// send, and returns once the driver's acquisition runs and scanimage's
// NextDocument request waits for the page. stderr collects scanimage's
// messages.
func slowScan(t testing.TB, bin string, env []string, r *rig, out string, stderr *bytes.Buffer) *exec.Cmd {
	t.Helper()
	cmd := scanCmd(bin, env, out, "Gray", 300)
	cmd.Stderr = stderr
	arrived := r.expectNextDoc()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start scanimage: %v", err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	r.waitState(t, minidrv.Transferring)
	waitNextDoc(t, arrived)
	if r.dev.d.State() != minidrv.Transferring {
		t.Fatalf("no NextDocument while the scan ran (driver %v)", r.dev.d.State())
	}
	time.Sleep(20 * time.Millisecond) // the request is in the handler's wait
	return cmd
}

// interrupt sends sig to cmd and returns how long it took to exit, and
// its error; the exit must come within limit.
func interrupt(t testing.TB, cmd *exec.Cmd, sig os.Signal, limit time.Duration) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	t0 := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal scanimage: %v", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return time.Since(t0), err
	case <-time.After(limit):
		t.Fatalf("scanimage still runs %v after %v", limit, sig)
	}
	panic("unreachable")
}

// checkCanceledScan checks that the job was canceled by cause through
// CancelPendingIO, that the driver is idle, and that scanimage scans
// correctly again.
func checkCanceledScan(t *testing.T, bin string, env []string, r *rig, cause escl.Cause) {
	t.Helper()
	rep := r.report(t)
	if rep.Outcome != escl.OutcomeCanceled || rep.Cause != cause {
		t.Errorf("job %v by %v, want canceled by %v", rep.Outcome, rep.Cause, cause)
	}
	if !rep.CancelCalled || !errors.Is(rep.Err, minidrv.ErrCanceled) {
		t.Errorf("CancelPendingIO called %v, acquisition error %v; want called, ErrCanceled", rep.CancelCalled, rep.Err)
	}
	t.Logf("cancel seen %v after the job started; CancelPendingIO took %v; cancel to idle %v",
		rep.CancelAt.Sub(rep.ScanStart).Round(time.Millisecond), rep.CancelTook, rep.Idle.Sub(rep.CancelAt))
	if s := r.dev.d.State(); s != minidrv.Idle {
		t.Errorf("driver %v after the cancel, want Idle", s)
	}
	r.dev.setBandwidth(0)
	r.scanGray(t, bin, env, "next scan")
}

// checkCanceledExit checks scanimage's report of a cancel: a failure exit
// status and a message that says canceled.
func checkCanceledExit(t *testing.T, err error, stderr string) {
	t.Helper()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("scanimage exit: %v, want a failure status", err)
	}
	if !strings.Contains(strings.ToLower(stderr), "cancel") {
		t.Errorf("scanimage did not report the cancel:\n%s", stderr)
	}
}

func TestScanimageSIGINT(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	r.dev.setBandwidth(500_000) // 300 dpi gray, 8.9 MB: 18 s
	var stderr bytes.Buffer
	cmd := slowScan(t, bin, env, r, filepath.Join(t.TempDir(), "out.png"), &stderr)
	took, err := interrupt(t, cmd, os.Interrupt, 5*time.Second) // sane-airscan alone would wait 10 s
	t.Logf("scanimage exited %v after SIGINT: %v; %s", took, err, bytes.TrimSpace(stderr.Bytes()))
	checkCanceledExit(t, err, stderr.String())
	checkCanceledScan(t, bin, env, r, escl.CauseDelete)
}

func TestScanimageSIGKILL(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	r.dev.setBandwidth(500_000)
	var stderr bytes.Buffer
	cmd := slowScan(t, bin, env, r, filepath.Join(t.TempDir(), "out.png"), &stderr)
	interrupt(t, cmd, os.Kill, 5*time.Second)
	// No DELETE: the dropped NextDocument connection is the cancel.
	checkCanceledScan(t, bin, env, r, escl.CauseClientGone)
}

func TestScanimageHungDevice(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	r.dev.hangAfter(1 << 20) // of 8.9 MB: the device stops answering
	var stderr bytes.Buffer
	cmd := slowScan(t, bin, env, r, filepath.Join(t.TempDir(), "out.png"), &stderr)
	time.Sleep(300 * time.Millisecond) // hung by now: 1 MiB takes milliseconds
	took, err := interrupt(t, cmd, os.Interrupt, 2*time.Second)
	t.Logf("scanimage exited %v after SIGINT to a hung device: %v", took, err)
	checkCanceledExit(t, err, stderr.String())
	r.dev.resume()
	checkCanceledScan(t, bin, env, r, escl.CauseDelete)
}

// TestScanimageMalformedRequests sends what no client should, through a
// plain HTTP client and a raw TCP connection, between two scanimage scans:
// each gets a clear HTTP error, nothing reaches the device, and scanimage
// scans correctly after.
func TestScanimageMalformedRequests(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	r.scanGray(t, bin, env, "scanimage")
	before := r.dev.acquisitions()

	big := strings.Repeat("<a>", escl.DefaultMaxBodySize)
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"garbage", "POST", "/eSCL/ScanJobs", "\x00\x01\x02 not xml", 400},
		{"entity bomb", "POST", "/eSCL/ScanJobs", `<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03"><scan:ColorMode>&b;</scan:ColorMode></scan:ScanSettings>`, 400},
		{"oversized", "POST", "/eSCL/ScanJobs", big, 413},
		{"deep nesting", "POST", "/eSCL/ScanJobs", strings.Repeat("<a>", 20000), 400},
		{"outside the platen", "POST", "/eSCL/ScanJobs", settings("Grayscale8", 75, "image/png", 1000, 1000, 2000, 2000), 409},
		{"resolution", "POST", "/eSCL/ScanJobs", settings("Grayscale8", 1200, "image/png", 0, 0, 0, 0), 409},
		{"colour mode", "POST", "/eSCL/ScanJobs", settings("CMYK32", 75, "image/png", 0, 0, 0, 0), 409},
		{"unknown job", "GET", "/eSCL/ScanJobs/00000000-0000-4000-8000-000000000000/NextDocument", "", 404},
		{"unknown job delete", "DELETE", "/eSCL/ScanJobs/nope", "", 404},
		{"path traversal", "DELETE", "/eSCL/ScanJobs/../ScannerStatus", "", 405}, // cleaned to ScannerStatus
	} {
		resp, body := r.do(t, tc.method, tc.path, "text/xml", tc.body)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, resp.StatusCode, strings.TrimSpace(body), tc.want)
		}
	}
	// Not HTTP at all: net/http answers 400 and closes.
	conn, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "\x16\x03\x01garbage\r\n\r\n")
	reply, _ := io.ReadAll(conn)
	conn.Close()
	if !strings.HasPrefix(string(reply), "HTTP/1.1 400") {
		t.Errorf("raw garbage: reply %q, want HTTP/1.1 400", reply)
	}

	if n := r.dev.acquisitions(); n != before {
		t.Errorf("%d acquisitions after the bad requests, want %d", n, before)
	}
	select {
	case rep := <-r.reports:
		t.Errorf("a bad request made a job: %+v", rep)
	default:
	}
	r.scanGray(t, bin, env, "scanimage after the bad requests")
}

// TestScanimageBusy runs a second scanimage while a scan runs: it gets the
// scanner's busy answer (503, then ScannerStatus Processing) and says so,
// and the first scan is not disturbed.
func TestScanimageBusy(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	r.dev.setBandwidth(500_000)
	var stderr bytes.Buffer
	first := slowScan(t, bin, env, r, filepath.Join(t.TempDir(), "first.png"), &stderr)
	t0 := time.Now()
	msg, err := scanCmd(bin, env, filepath.Join(t.TempDir(), "second.png"), "Gray", 75).CombinedOutput()
	t.Logf("second scanimage: %v after %v: %s", err, time.Since(t0).Round(time.Millisecond), bytes.TrimSpace(msg))
	if err == nil || !strings.Contains(strings.ToLower(string(msg)), "busy") {
		t.Errorf("second scanimage: %v, want a failure saying busy:\n%s", err, msg)
	}
	if s := r.dev.d.State(); s != minidrv.Transferring {
		t.Errorf("driver %v during the first scan, want Transferring", s)
	}
	interrupt(t, first, os.Interrupt, 5*time.Second)
	if rep := r.report(t); rep.Outcome != escl.OutcomeCanceled {
		t.Errorf("first job %v, want canceled", rep.Outcome)
	}
}
