package main

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// advRun runs wiascan in-process, bounded in time.
func advRun(t *testing.T, sigs <-chan os.Signal, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(withAbortTimeout(args), &out, &errb, sigs) }()
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("wiascan %q still runs after 60 s", args)
	}
	return code, out.String(), errb.String()
}

func advNoCrash(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", ".go:"} {
		assert.NotContains(t, out, bad, what)
	}
}

// advFiles lists dir's entries.
func advFiles(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestAdvToolsUsageErrors: bad values, conflicts, unknown flags and
// positional arguments are usage errors (2) with one prefixed line and
// the hint; nothing is written.
func TestAdvToolsUsageErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "s.pgm")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--out FILE is required"},
		{[]string{"--out", ""}, "--out FILE is required"},
		{[]string{"--out", filepath.Join(dir, "s.jpg")}, "unknown extension"},
		{[]string{"--out", filepath.Join(dir, "s")}, "unknown extension"},
		{[]string{"--out", dir + "/"}, "unknown extension"},
		{[]string{"--out", out, "--dpi", "0"}, "--dpi 0"},
		{[]string{"--out", out, "--dpi", "-1"}, "--dpi -1"},
		{[]string{"--out", out, "--dpi", "99999999999999999999"}, "-dpi"},
		{[]string{"--out", out, "--dpi", "１５０"}, "-dpi"},
		{[]string{"--out", out, "--width", "-1"}, "--width -1"},
		{[]string{"--out", out, "--width", "99999999999"}, "-width"}, // on 32-bit the flag package says out of range
		{[]string{"--out", out, "--height", "-5"}, "--height -5"},
		{[]string{"--out", out, "--dpi", "600", "--height", "99999"}, "--height 99999"},
		{[]string{"--out", out, "--hang-after", "1.5k"}, `--hang-after "1.5k"`},
		{[]string{"--out", out, "--hang-after", "k"}, `--hang-after "k"`},
		{[]string{"--out", out, "--hang-after", "-1"}, `--hang-after "-1"`},
		{[]string{"--out", out, "--hang-after", "99999999999G"}, "larger than 1024G"},
		{[]string{"--out", out, "--hang-after", "２k"}, "--hang-after"},
		{[]string{"--out", out, "--bandwidth", "1MB"}, `--bandwidth "1MB"`},
		{[]string{"--out", out, "--bandwidth", "99999999999999999999999"}, "--bandwidth"},
		{[]string{"--out", out, "--queue-depth", "0"}, "--queue-depth 0"},
		{[]string{"--out", out, "--queue-depth", "-3"}, "--queue-depth -3"},
		{[]string{"--out", out, "--queue-depth", "100000"}, "--queue-depth 100000"},
		{[]string{"--out", out, "--abort-timeout", "0"}, "--abort-timeout 0s"},
		{[]string{"--out", out, "--abort-timeout", "-1s"}, "--abort-timeout -1s"},
		{[]string{"--out", out, "--stall-timeout", "-1ns"}, "--stall-timeout -1ns"},
		{[]string{"--out", out, "--stall-timeout", "5"}, "-stall-timeout"},
		{[]string{"--out", out, "--progress", "yes"}, `--progress "yes"`},
		{[]string{"--out", out, "--mode", "Color"}, `--mode "Color"`},
		{[]string{"--out", out, "--mode", "color"}, "--mode color"},
		{[]string{"--out", filepath.Join(dir, "s.ppm"), "--mode", "gray"}, "--mode gray"},
		{[]string{"--out", out, "--usb", ""}, ""}, // empty --usb: the simulated scanner; not an error (see below)
		{[]string{"--out", out, "--usb", "zz"}, `--usb "zz"`},
		{[]string{"--out", out, "--usb", "12345:1"}, `--usb "12345:1"`},
		{[]string{"--out", out, "--usb", "1209:0001:2"}, `--usb "1209:0001:2"`},
		{[]string{"--out", out, "--usb", "1209:0001", "--hang-after", "1k"}, "simulated scanner only"},
		{[]string{"--out", out, "--usb", "1209:0001", "--bandwidth", "1M"}, "simulated scanner only"},
		{[]string{"--out", out, "extra"}, `unexpected argument "extra"`},
		{[]string{"--out", out, "--nope"}, "-nope"},
		{[]string{"--out", out, "-v=2"}, "-v"},
	} {
		if tc.want == "" {
			continue
		}
		code, stdout, stderr := advRun(t, nil, tc.args...)
		assert.Equal(t, exitUsage, code, "args %q: %s", tc.args, stderr)
		assert.Empty(t, stdout, "args %q", tc.args)
		assert.True(t, strings.HasPrefix(stderr, "wiascan: "), "args %q: %q", tc.args, stderr)
		assert.Contains(t, stderr, tc.want, "args %q", tc.args)
		assert.Contains(t, stderr, "Run wiascan -h for usage.", "args %q", tc.args)
		assert.Equal(t, 1, strings.Count(stderr, "wiascan:"), "args %q: %q", tc.args, stderr)
		advNoCrash(t, strings.Join(tc.args, " "), stderr)
		assert.Empty(t, advFiles(t, dir), "args %q: a usage error wrote a file", tc.args)
	}
}

// TestAdvToolsOutUnwritable: an --out that cannot be created fails (1)
// before the scan, with a line naming --out, and leaves nothing.
func TestAdvToolsOutUnwritable(t *testing.T) {
	dir := t.TempDir()
	for _, out := range []string{
		filepath.Join(dir, "no", "such", "s.pgm"),
		"/proc/adv-wiascan.pgm",
		filepath.Join(dir, "s.pgm", "x.pgm"), // a directory that is not there
	} {
		t0 := time.Now()
		code, stdout, stderr := advRun(t, nil, "--out", out, "--bandwidth", "100k")
		assert.Equal(t, exitFailed, code, "%s: %s", out, stderr)
		assert.Less(t, time.Since(t0), 10*time.Second, "%s: the error comes before a slow scan", out)
		assert.Empty(t, stdout)
		assert.True(t, strings.HasPrefix(stderr, "wiascan: "), stderr)
		assert.Contains(t, stderr, out)
		advNoCrash(t, out, stderr)
	}
	assert.Empty(t, advFiles(t, dir))
}

// TestAdvToolsOutIsDirectory: --out naming an existing directory should
// be refused before the scan, saying it is a directory. wiascan scans the
// whole page first (here, slowly), then fails on the rename with
// "rename .dir.pgm.XXXXXXXX.tmp dir.pgm: file exists": the temporary file's
// name, and a cause that does not tell the user what is wrong.
func TestAdvToolsOutIsDirectory(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "dir.pgm")
	require.NoError(t, os.Mkdir(out, 0o755))
	t0 := time.Now()
	code, _, stderr := advRun(t, nil, "--out", out, "--dpi", "75", "--bandwidth", "256k")
	took := time.Since(t0)
	assert.Contains(t, []int{exitFailed, exitUsage}, code, stderr)
	assert.Contains(t, stderr, "directory", "the message says --out is a directory")
	assert.NotContains(t, stderr, ".tmp", "the message names a temporary file the user never asked for")
	assert.Less(t, took, 1500*time.Millisecond, "the error comes before the scan (which takes ~2 s here)")
	assert.Equal(t, []string{"dir.pgm"}, advFiles(t, dir), "no temporary file left")
	advNoCrash(t, out, stderr)
}

// TestAdvToolsExistingKeptOnFailure: a scan that fails (stall) or is
// canceled leaves an existing --out byte for byte, and no temporary file.
func TestAdvToolsExistingKeptOnFailure(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "keep.pgm")
	old := []byte("P5\n1 1\n255\nX")
	require.NoError(t, os.WriteFile(out, old, 0o600))
	code, _, stderr := advRun(t, nil, "--out", out, "--hang-after", "64k", "--stall-timeout", "1s", "--progress", "off")
	assert.Equal(t, exitFailed, code, stderr)
	assert.Contains(t, stderr, "stall-timeout")
	advNoCrash(t, "stall", stderr)

	sigs := make(chan os.Signal, 1)
	time.AfterFunc(300*time.Millisecond, func() { sigs <- os.Interrupt })
	code, _, stderr = advRun(t, sigs, "--out", out, "--bandwidth", "200k", "--progress", "off")
	assert.Equal(t, exitCanceled, code, stderr)
	assert.Contains(t, stderr, "canceled")
	advNoCrash(t, "cancel", stderr)

	got, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, old, got)
	st, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	assert.Equal(t, []string{"keep.pgm"}, advFiles(t, dir))
}

var (
	advBinOnce sync.Once
	advBinPath string
	advBinErr  error
)

// advBinary builds wiascan once, for the tests that send real signals.
func advBinary(t *testing.T) string {
	t.Helper()
	advBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "adv-wiascan-bin")
		if err != nil {
			advBinErr = err
			return
		}
		advBinPath = filepath.Join(dir, "wiascan")
		out, err := exec.Command("go", "build", "-o", advBinPath, ".").CombinedOutput()
		if err != nil {
			advBinErr = errors.New(string(out))
		}
	})
	if advBinErr != nil {
		t.Skipf("cannot build wiascan: %v", advBinErr)
	}
	return advBinPath
}

// advStart starts the binary on a slow simulated scan into dir/s.pgm.
func advStart(t *testing.T, dir string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	var errb bytes.Buffer
	cmd := exec.Command(advBinary(t), "--out", filepath.Join(dir, "s.pgm"), "--dpi", "150",
		"--bandwidth", "512k", "--progress", "off", "--abort-timeout", testAbortTimeout)
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	return cmd, &errb
}

// advWait waits for cmd, at most 20 s.
func advWait(t *testing.T, cmd *exec.Cmd) *os.ProcessState {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("wiascan still runs 20 s after the signal")
	}
	return cmd.ProcessState
}

// TestAdvToolsSIGINTAnyMoment: one Ctrl-C at a random moment of the run
// (startup included) ends it as canceled (130) or, when it came too late,
// done (0); never a stack trace, never a temporary file, never a partial
// --out.
func TestAdvToolsSIGINTAnyMoment(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	advBinary(t)
	for i := range 6 {
		dir := t.TempDir()
		delay := time.Duration(rand.IntN(1500)) * time.Millisecond
		if i == 0 {
			delay = 0
		}
		cmd, errb := advStart(t, dir)
		time.Sleep(delay)
		_ = cmd.Process.Signal(os.Interrupt)
		st := advWait(t, cmd)
		ws := st.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled(): // before main's signal.Notify: the default action
			assert.Equal(t, syscall.SIGINT, ws.Signal(), "after %v", delay)
		default:
			assert.Contains(t, []int{exitOK, exitCanceled}, st.ExitCode(), "after %v: %s", delay, errb)
		}
		advNoCrash(t, "SIGINT", errb.String())
		names := advFiles(t, dir)
		if st.ExitCode() == exitOK {
			assert.Equal(t, []string{"s.pgm"}, names, "after %v", delay)
		} else {
			assert.Empty(t, names, "after %v: %s", delay, errb)
		}
	}
}

// TestAdvToolsSIGINTTwice: a second Ctrl-C kills wiascan at once; it
// must exit (not hang).
func TestAdvToolsSIGINTTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	cmd, errb := advStart(t, dir)
	time.Sleep(700 * time.Millisecond)
	_ = cmd.Process.Signal(os.Interrupt)
	time.Sleep(5 * time.Millisecond)
	_ = cmd.Process.Signal(os.Interrupt)
	st := advWait(t, cmd)
	ws := st.Sys().(syscall.WaitStatus)
	assert.True(t, ws.Signaled() || st.ExitCode() == exitCanceled, "status %v: %s", st, errb)
	advNoCrash(t, "SIGINT twice", errb.String())
	assert.NotContains(t, advFiles(t, dir), "s.pgm")
}

// TestAdvToolsSIGTERM: SIGTERM (kill, timeout(1), systemd, a closing
// terminal's SIGHUP likewise) must not leave the temporary file behind:
// the doc promises that only a second Ctrl-C can. wiascan handles SIGINT
// only, so SIGTERM kills it with the default action and
// .s.pgm.XXXXXXXX.tmp stays in --out's directory.
func TestAdvToolsSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	cmd, errb := advStart(t, dir)
	time.Sleep(time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	st := advWait(t, cmd)
	advNoCrash(t, "SIGTERM", errb.String())
	assert.NotEqual(t, exitOK, st.ExitCode(), "a terminated scan does not report success")
	assert.Empty(t, advFiles(t, dir), "SIGTERM left a file: %s", errb)
}

// failWriter fails every write, as stdout on a full disk or a closed pipe.
type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestAdvToolsSummaryUnwritable: a scan whose summary line cannot be
// printed keeps its image and fails (1), saying the image was written and
// why the summary was not.
func TestAdvToolsSummaryUnwritable(t *testing.T) {
	out := filepath.Join(t.TempDir(), "scan.pgm")
	var errb bytes.Buffer
	code := run(withAbortTimeout([]string{"--out", out, "--width", "32", "--height", "8"}), failWriter{}, &errb, nil)
	assert.Equal(t, exitFailed, code, errb.String())
	assert.Contains(t, errb.String(), out+" written, but its summary could not be: no space left on device")
	_, w, h, data := readPNM(t, out)
	assert.Equal(t, [2]int{32, 8}, [2]int{w, h})
	assert.Len(t, data, 32*8)
}
