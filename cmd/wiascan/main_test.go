package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb, nil)
	return code, out.String(), errb.String()
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.pnm")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--bogus"}, "flag provided but not defined"},
		{[]string{}, "--out FILE is required"},
		{[]string{"--out", filepath.Join(dir, "x.jpg")}, `unknown extension ".jpg"`},
		{[]string{"--out", out, "--mode", "sepia"}, `--mode "sepia"`},
		{[]string{"--out", out, "--usb", "12:zz"}, "want VID:PID in hex"},
		{[]string{"--out", out, "--usb", "1209"}, "want VID:PID in hex"},
		{[]string{"--out", out, "--usb", "1209:0001", "--hang-after", "5"}, "simulated scanner only"},
		{[]string{"--out", out, "--hang-after", "-1"}, "must not be negative"},
		{[]string{"--out", out, "--queue-depth", "0"}, "--queue-depth 0"},
		{[]string{"--out", out, "--abort-timeout", "0s"}, "must be positive"},
		{[]string{"--out", out, "--progress", "maybe"}, `--progress "maybe"`},
		{[]string{"--out", out, "extra"}, `unexpected argument "extra"`},
	} {
		code, _, stderr := runArgs(t, tc.args...)
		assert.Equal(t, exitUsage, code, "args %q", tc.args)
		assert.Contains(t, stderr, tc.msg, "args %q", tc.args)
	}
	_, err := os.Stat(out)
	assert.True(t, os.IsNotExist(err), "no output for bad usage")
}

func TestBadProperty(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pnm")
	code, _, stderr := runArgs(t, "--out", out, "--dpi", "123")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, stderr, "WIA_IPS_XRES = 123 refused (allowed: 75, 100, 150, 200, 300, 600)")
	_, err := os.Stat(out)
	assert.True(t, os.IsNotExist(err), "a failed scan leaves no file")
}

func TestUnwritableOutput(t *testing.T) {
	code, _, stderr := runArgs(t, "--out", filepath.Join(t.TempDir(), "no", "such", "dir", "x.pnm"))
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, stderr, "open output:")
	assert.Contains(t, stderr, "no such file or directory")
}

func TestRealUSBMissing(t *testing.T) {
	if _, err := os.Stat("/dev/bus/usb"); err == nil {
		t.Skip("this system has USB")
	}
	out := filepath.Join(t.TempDir(), "x.pnm")
	code, _, stderr := runArgs(t, "--out", out, "--usb", "1209:0001")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, stderr, "open scanner 1209:0001")
	assert.Contains(t, stderr, "no USB")
}

// readPNM parses a binary netpbm header and returns magic, size and data.
func readPNM(t *testing.T, path string) (magic string, w, h int, data []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	br := bytes.NewReader(raw) // a RuneScanner: Fscan reads no further than it parses
	var maxv int
	_, err = fmt.Fscan(br, &magic, &w, &h, &maxv)
	require.NoError(t, err)
	_, err = br.ReadByte() // the one whitespace before the data
	require.NoError(t, err)
	data = raw[len(raw)-br.Len():]
	require.Equal(t, 255, maxv)
	return magic, w, h, data
}

func TestWritePNM(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, mode, magic string
		bpp               int
	}{{"gray.pgm", "gray", "P5", 1}, {"color.ppm", "color", "P6", 3}} {
		out := filepath.Join(dir, tc.name)
		code, stdout, stderr := runArgs(t, "--out", out, "--mode", tc.mode, "--width", "120", "--height", "80")
		require.Equal(t, exitOK, code, stderr)
		assert.Contains(t, stdout, "120x80")
		magic, w, h, data := readPNM(t, out)
		assert.Equal(t, tc.magic, magic)
		assert.Equal(t, 120, w)
		assert.Equal(t, 80, h)
		require.Len(t, data, 120*80*tc.bpp)
		f := usbsim.FormatGray8
		if tc.bpp == 3 {
			f = usbsim.FormatRGB24
		}
		want := usbsim.ExpectedImage(usbsim.ScanParams{DPI: 150, Width: 120, Height: 80, Format: f})
		assert.Equal(t, want, data, "the simulated scanner's image")
	}
}

func TestWritePNG(t *testing.T) {
	out := filepath.Join(t.TempDir(), "scan.png")
	code, _, stderr := runArgs(t, "--out", out, "--mode", "color", "--width", "64", "--height", "32", "--dpi", "300")
	require.Equal(t, exitOK, code, stderr)
	f, err := os.Open(out)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Equal(t, 64, img.Bounds().Dx())
	assert.Equal(t, 32, img.Bounds().Dy())
	want := usbsim.ExpectedImage(usbsim.ScanParams{DPI: 300, Width: 64, Height: 32, Format: usbsim.FormatRGB24})
	r, g, b, _ := img.At(1, 0).RGBA()
	assert.Equal(t, [3]uint32{uint32(want[3]), uint32(want[4]), uint32(want[5])}, [3]uint32{r >> 8, g >> 8, b >> 8})
}

// Ctrl-C on a hung scanner: the cancel returns control within the abort
// timeout, the partial file is removed, the exit status says canceled.
func TestInterruptHungScan(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pnm")
	sigs := make(chan os.Signal, 1)
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--out", out, "--hang-after", "100000", "--progress", "on"}, &stdout, &stderr, sigs)
	}()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	sigs <- syscall.SIGINT
	select {
	case code := <-done:
		assert.Equal(t, exitCanceled, code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("wiascan did not exit within 10s of SIGINT")
	}
	assert.Less(t, time.Since(t0), 5*time.Second)
	assert.Contains(t, stderr.String(), "CancelPendingIO took")
	assert.Contains(t, stderr.String(), "%", "a progress bar")
	assert.True(t, strings.Contains(stderr.String(), "canceled"))
	_, err := os.Stat(out)
	assert.True(t, os.IsNotExist(err), "the partial output is removed")
}
