package main

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// adv21Scanimage returns scanimage's path, or skips the test where it or
// sane-airscan is missing.
func adv21Scanimage(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("scanimage")
	if err != nil {
		t.Skip("scanimage not found (Debian: apt-get install sane-utils sane-airscan)")
	}
	if m, _ := filepath.Glob("/usr/lib/*/sane/libsane-airscan.so*"); len(m) == 0 {
		if m, _ = filepath.Glob("/usr/lib*/sane/libsane-airscan.so*"); len(m) == 0 {
			t.Skip("the sane-airscan backend is not installed")
		}
	}
	return bin
}

// adv21Cmd is scanimage on scand's device (--sane-config's name), bounded
// to a minute.
func adv21Cmd(t *testing.T, bin string, env []string, out, mode string, dpi int) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, bin, "-d", saneDevice, "--mode", mode, "--resolution", strconv.Itoa(dpi), "--format=png", "-o", out)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// adv21Signal signals cmd and returns how long it took to exit, and how.
func adv21Signal(t *testing.T, cmd *exec.Cmd, sig os.Signal) (time.Duration, error) {
	t.Helper()
	done := make(chan error, 1)
	t0 := time.Now()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return time.Since(t0), err
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("scanimage still runs 15 s after %v", sig)
	}
	panic("unreachable")
}

// adv21Status returns scand's ScannerStatus document.
func adv21Status(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/ScannerStatus")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAdv21ScandScanimageCtrlC is the README's promise end to end: scand
// serves the simulated scanner, scanimage scans from it, and Ctrl-C
// (SIGINT) while the page is being scanned makes scanimage exit at once
// with its cancel message; scand's job line says the DELETE canceled it
// through CancelPendingIO; ScannerStatus says Idle with the job Canceled;
// and the next scanimage gets the simulator's next page, pixel for pixel.
func TestAdv21ScandScanimageCtrlC(t *testing.T) {
	bin := adv21Scanimage(t)
	scanning := watchScans(t)
	arrived := expectNextDoc(t)
	dir := filepath.Join(t.TempDir(), "sane")
	d := start(t, "--sane-config", dir, "--bandwidth", "1M") // 300 dpi gray, 8.9 MB: 9 s
	env := append(os.Environ(), "SANE_CONFIG_DIR="+dir)

	var stderr bytes.Buffer
	cmd := adv21Cmd(t, bin, env, filepath.Join(t.TempDir(), "big.png"), "Gray", 300)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the simulated scanner accepts the scan", scanning)
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("no NextDocument within 15 s")
	}
	time.Sleep(20 * time.Millisecond)
	took, err := adv21Signal(t, cmd, os.Interrupt)
	t.Logf("scanimage exited %v after SIGINT: %v: %q", took, err, strings.TrimSpace(stderr.String()))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "Operation was canceled") {
		t.Errorf("scanimage: %v, %q; want exit status 2 and \"Operation was canceled\"", err, stderr.String())
	}
	if took > 3*time.Second {
		t.Errorf("scanimage took %v to exit after SIGINT (sane-airscan waits 10 s for a NextDocument the server does not end)", took)
	}
	waitUntil(t, "the job's line", func() bool { return strings.Contains(d.log.String(), "outcome=canceled") })
	log := d.log.String()
	for _, want := range []string{"outcome=canceled", "cause=delete", "cancel_pending_io="} {
		if !strings.Contains(log, want) {
			t.Errorf("scand's log lacks %q:\n%s", want, log)
		}
	}
	waitUntil(t, "ScannerStatus Idle", func() bool { return strings.Contains(adv21Status(t, d.url), "<pwg:State>Idle</pwg:State>") })
	if st := adv21Status(t, d.url); !strings.Contains(st, "<pwg:JobState>Canceled</pwg:JobState>") {
		t.Errorf("ScannerStatus does not list the job Canceled:\n%s", st)
	}

	out := filepath.Join(t.TempDir(), "next.png")
	next := exec.Command(bin, "-d", saneDevice, "--mode", "Gray", "--resolution", "75", "--format=png", "-o", out)
	next.Env = env
	if msg, err := next.CombinedOutput(); err != nil {
		t.Fatalf("the next scanimage: %v\n%s\nscand:\n%s", err, msg, d.log.String())
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
	checkGray(t, img, expectedImage(1, 75, 636, 876, false)) // the driver's second job
}

// TestAdv21ScandScanimageHung: scand --hang-after, the simulated scanner
// stops mid-page, and Ctrl-C in scanimage still takes it back at once
// (the README: "also when the device hangs"); scand, asked to stop while
// its device is still silent, exits 0 promptly.
func TestAdv21ScandScanimageHung(t *testing.T) {
	bin := adv21Scanimage(t)
	scanning := watchScans(t)
	arrived := expectNextDoc(t)
	dir := filepath.Join(t.TempDir(), "sane")
	d := start(t, "--sane-config", dir, "--hang-after", "1M")
	env := append(os.Environ(), "SANE_CONFIG_DIR="+dir)
	var stderr bytes.Buffer
	cmd := adv21Cmd(t, bin, env, filepath.Join(t.TempDir(), "big.png"), "Gray", 300)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the simulated scanner accepts the scan", scanning)
	select {
	case <-arrived:
	case <-time.After(15 * time.Second):
		t.Fatal("no NextDocument within 15 s")
	}
	time.Sleep(200 * time.Millisecond) // hung by now
	took, err := adv21Signal(t, cmd, os.Interrupt)
	t.Logf("scanimage exited %v after SIGINT to a hung scanner: %v: %q", took, err, strings.TrimSpace(stderr.String()))
	if took > 3*time.Second {
		t.Errorf("scanimage took %v to exit after SIGINT to a hung scanner", took)
	}
	if !strings.Contains(stderr.String(), "Operation was canceled") {
		t.Errorf("scanimage did not report the cancel: %q", stderr.String())
	}
	waitUntil(t, "the job's line", func() bool { return strings.Contains(d.log.String(), "outcome=canceled") })
	if log := d.log.String(); !strings.Contains(log, "cause=delete") || !strings.Contains(log, "cancel_pending_io=") {
		t.Errorf("scand's log does not say the DELETE canceled the scan through CancelPendingIO:\n%s", log)
	}
	code, stopped := d.stop(t)
	if code != exitOK || stopped > 5*time.Second {
		t.Errorf("scand exited %d after %v with its device hung, want 0 promptly:\n%s", code, stopped, d.log.String())
	}
}
