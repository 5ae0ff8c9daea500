package main

import (
	"bytes"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/internal/readme"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testAbortTimeout is the --abort-timeout of the tests' runs that give
// none. It bounds the driver's probe of the simulated scanner when wiascan
// opens it: a loaded 2-core machine under the race detector does not
// always answer within the default 250 ms, and the run fails with "open
// the simulated scanner: the scanner did not answer as expected". Runs
// whose scanner does not answer the probe (--hang-after 1) wait for it.
const testAbortTimeout = "2s"

// withAbortTimeout returns args with --abort-timeout testAbortTimeout in
// front, unless they set it or ask for help.
func withAbortTimeout(args []string) []string {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" ||
			strings.HasPrefix(a, "--abort-timeout") || strings.HasPrefix(a, "-abort-timeout") {
			return args
		}
	}
	return append([]string{"--abort-timeout", testAbortTimeout}, args...)
}

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(withAbortTimeout(args), &out, &errb, nil)
	return code, out.String(), errb.String()
}

// checkUsage checks a usage error: status 2, one message with one prefix
// that names the flag (want starts with it), the hint to -h, no file.
func checkUsage(t *testing.T, args []string, want string) {
	t.Helper()
	code, stdout, stderr := runArgs(t, args...)
	assert.Equal(t, exitUsage, code, "args %q: exit status", args)
	assert.True(t, strings.HasPrefix(stderr, "wiascan: "+want), "args %q: stderr starts with %q: %q", args, "wiascan: "+want, stderr)
	assert.Equal(t, 1, strings.Count(stderr, "wiascan:"), "args %q: one prefix: %q", args, stderr)
	assert.Equal(t, "Run wiascan -h for usage.\n", stderr[strings.Index(stderr, "\n")+1:], "args %q: one line, then the hint", args)
	assert.NotContains(t, stderr, "minidrv:", "args %q: no library prefix", args)
	assert.NotContains(t, stderr, "WIA_", "args %q: the flag, not the WIA property", args)
	assert.Empty(t, stdout, "args %q", args)
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.pnm")
	for _, tc := range []struct {
		args []string
		msg  string // the start of the message
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--out", out, "--dpi", "many"}, `invalid value "many" for flag -dpi`},
		{[]string{}, "--out FILE is required"},
		{[]string{"--out", filepath.Join(dir, "x.jpg")}, "--out " + filepath.Join(dir, "x.jpg") + `: unknown extension ".jpg" (want .pgm, .ppm, .pnm or .png)`},
		{[]string{"--out", out, "--mode", "sepia"}, `--mode "sepia": want gray or color`},
		{[]string{"--out", out, "--usb", "12:zz"}, `--usb "12:zz": want VID:PID in hex`},
		{[]string{"--out", out, "--usb", "1209"}, `--usb "1209": want VID:PID in hex`},
		{[]string{"--out", out, "--usb", "1209:0001", "--hang-after", "5"}, "--hang-after and --bandwidth apply to the simulated scanner only"},
		{[]string{"--out", out, "--hang-after", "-1"}, `--hang-after "-1": not a size`},
		{[]string{"--out", out, "--bandwidth", "1q"}, `--bandwidth "1q": not a size: want bytes, or a whole number with k, M or G`},
		{[]string{"--out", out, "--bandwidth", "4KB"}, `--bandwidth "4KB": not a size`},
		{[]string{"--out", out, "--bandwidth", "2T"}, `--bandwidth "2T": not a size`},
		{[]string{"--out", out, "--queue-depth", "0"}, "--queue-depth 0: want 1..256"},
		{[]string{"--out", out, "--abort-timeout", "0s"}, "--abort-timeout 0s: must be positive"},
		{[]string{"--out", out, "--stall-timeout", "-1s"}, "--stall-timeout -1s: must not be negative"},
		{[]string{"--out", out, "--progress", "maybe"}, `--progress "maybe": want auto, on or off`},
		{[]string{"--out", out, "extra"}, `unexpected argument "extra"`},
	} {
		checkUsage(t, tc.args, tc.msg)
	}
	_, err := os.Stat(out)
	assert.True(t, os.IsNotExist(err), "no output for bad usage")
}

// TestBadProperty: values the scanner's item properties refuse are usage
// errors that name the flag and list what it allows.
func TestBadProperty(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "x.pgm")
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--dpi", "123"}, "--dpi 123: the scanner supports 75, 100, 150, 200, 300 or 600 dpi"},
		{[]string{"--dpi", "0"}, "--dpi 0: the scanner supports 75, 100, 150, 200, 300 or 600 dpi"},
		{[]string{"--width", "5000"}, "--width 5000: at 150 dpi the bed is 1275 pixels wide: want 1..1275, or 0 for the whole width"},
		{[]string{"--width", "-1"}, "--width -1: at 150 dpi the bed is 1275 pixels wide: want 1..1275"},
		{[]string{"--dpi", "600", "--width", "5101"}, "--width 5101: at 600 dpi the bed is 5100 pixels wide: want 1..5100"},
		{[]string{"--height", "1754"}, "--height 1754: at 150 dpi the bed is 1753 pixels high: want 1..1753, or 0 for the whole height"},
		{[]string{"--mode", "color", "--out", filepath.Join(dir, "b.pgm")}, "--mode color --out " + filepath.Join(dir, "b.pgm") + ": a PGM file holds gray images only; for color write .ppm, .pnm or .png"},
		{[]string{"--mode", "gray", "--out", filepath.Join(dir, "b.PPM")}, "--mode gray --out " + filepath.Join(dir, "b.PPM") + ": a PPM file holds color images only; for gray write .pgm, .pnm or .png"},
	} {
		args := append([]string{"--out", out}, tc.args...)
		checkUsage(t, args, tc.msg)
	}
	// The largest values are accepted (a refusal here would be a wrong
	// bound in the message above).
	code, stdout, stderr := runArgs(t, "--out", out, "--dpi", "75", "--width", "637", "--height", "876")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "637x876")
	for _, name := range []string{"b.pgm", "b.PPM"} {
		_, err := os.Stat(filepath.Join(dir, name))
		assert.True(t, os.IsNotExist(err), "no output for bad usage")
	}
}

// TestFlagError: a refusal that comes from the driver at scan time (a
// scanner whose limits differ) is mapped to the flag too.
func TestFlagError(t *testing.T) {
	o := &options{out: "x.pgm", dpi: 150, width: 10, height: 3000}
	pe := func(id minidrv.PropID, v string) error {
		return fmt.Errorf("write properties: %w", &minidrv.PropertyError{Name: id.String(), Value: v, Allowed: "A"})
	}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{pe(minidrv.PropYResolution, "150"), "--dpi 150: the scanner supports"},
		{pe(minidrv.PropXExtent, "10"), "--width 10: at 150 dpi the bed is 1275 pixels wide"},
		{pe(minidrv.PropYExtent, "3000"), "--height 3000: at 150 dpi"},
		{pe(minidrv.PropDataType, "3"), "--mode: the scanner refused the data type 3 (allowed: A)"},
		{pe(minidrv.PropFormat, "1"), "--out x.pgm: the scanner refused the format 1 (allowed: A)"},
		{pe(minidrv.PropBufferSize, "7"), "the scanner refused property WIA_IPA_BUFFER_SIZE = 7 (allowed: A)"},
	} {
		err := o.flagError(tc.err)
		ue, ok := errors.AsType[*usageError](err)
		if assert.True(t, ok, "%v: a usage error", tc.err) {
			assert.True(t, strings.HasPrefix(ue.msg, tc.want), "%v: got %q, want %q...", tc.err, ue.msg, tc.want)
		}
	}
	other := errors.New("device busy")
	assert.Same(t, other, o.flagError(other), "other errors pass through")
}

// TestUnwritableOutput: an --out that cannot be written is reported before
// the scan, in one line that names --out (not the temporary file).
func TestUnwritableOutput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	cases := []struct{ out, why string }{
		{filepath.Join(dir, "no", "such", "dir", "x.pnm"), "no such file or directory"},
		{filepath.Join(file, "x.pnm"), "not a directory"},
	}
	if os.Getuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		require.NoError(t, os.Mkdir(ro, 0o555))
		cases = append(cases, struct{ out, why string }{filepath.Join(ro, "x.pnm"), "permission denied"})
	}
	for _, tc := range cases {
		code, stdout, stderr := runArgs(t, "--out", tc.out)
		assert.Equal(t, exitFailed, code, tc.out)
		assert.Empty(t, stdout, tc.out)
		assert.Equal(t, "wiascan: open output: open "+tc.out+": "+tc.why+"\n", stderr)
	}
}

// dirNames returns the names in dir: a temporary file left behind shows.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestExistingOutput: an existing --out is replaced by a complete image
// only; a scan that fails or is canceled, before or during the transfer,
// leaves it as it was, and no temporary file is left behind.
func TestExistingOutput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "prev.pgm")
	const precious = "precious\n"
	untouched := func(what string) {
		t.Helper()
		b, err := os.ReadFile(out)
		require.NoError(t, err, what)
		assert.Equal(t, precious, string(b), "%s: --out untouched", what)
		assert.Equal(t, []string{"prev.pgm"}, dirNames(t, dir), "%s: no temporary file left", what)
	}
	require.NoError(t, os.WriteFile(out, []byte(precious), 0o644))

	code, _, stderr := runArgs(t, "--out", out, "--hang-after", "1")
	assert.Equal(t, exitFailed, code, stderr)
	untouched("the scanner fails to open")
	code, _, stderr = runArgs(t, "--out", out, "--hang-after", "100k", "--stall-timeout", "200ms")
	assert.Equal(t, exitFailed, code, stderr)
	untouched("the scan fails")
	code, stderr = interrupt(t, "", "--out", out, "--hang-after", "1k")
	assert.Equal(t, exitCanceled, code, stderr)
	untouched("Ctrl-C before the transfer")
	code, stderr = interrupt(t, "\r[", "--out", out, "--bandwidth", "64k", "--progress", "on")
	assert.Equal(t, exitCanceled, code, stderr)
	untouched("Ctrl-C during the transfer")

	code, stdout, stderr := runArgs(t, "--out", out, "--width", "32", "--height", "8")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "32x8")
	magic, w, h, data := readPNM(t, out)
	assert.Equal(t, "P5", magic)
	assert.Equal(t, [2]int{32, 8}, [2]int{w, h})
	assert.Len(t, data, 32*8)
	assert.Equal(t, []string{"prev.pgm"}, dirNames(t, dir), "a scan that succeeds leaves no temporary file")
}

// TestOutputMode: the image gets the mode a file created with 0644 gets
// (the umask applies), not a temporary file's 0600.
func TestOutputMode(t *testing.T) {
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	f, err := os.OpenFile(ref, os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	want, err := os.Stat(ref)
	require.NoError(t, err)
	out := filepath.Join(dir, "x.pgm")
	code, _, stderr := runArgs(t, "--out", out, "--width", "8", "--height", "8")
	require.Equal(t, exitOK, code, stderr)
	got, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, want.Mode().Perm(), got.Mode().Perm())
}

func TestRealUSBMissing(t *testing.T) {
	if _, err := os.Stat("/dev/bus/usb"); err == nil {
		t.Skip("this system has USB")
	}
	out := filepath.Join(t.TempDir(), "x.pnm")
	code, _, stderr := runArgs(t, "--out", out, "--usb", "1209:0001")
	assert.Equal(t, exitFailed, code)
	assert.True(t, strings.HasPrefix(stderr, "wiascan: open scanner 1209:0001: this system has no USB"), stderr)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	assert.NotContains(t, stderr, "usb:", "the library's words only with -v")
	code, _, stderr = runArgs(t, "--out", out, "--usb", "1209:0001", "-v")
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, stderr, "\n  detail: ", "-v adds the library's error")
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

// TestFormatFromExtension: without --mode the extension picks gray or
// color; .pnm follows --mode.
func TestFormatFromExtension(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		args  []string
		magic string
	}{
		{"a.ppm", nil, "P6"},
		{"b.pgm", nil, "P5"},
		{"c.pnm", nil, "P5"},
		{"d.pnm", []string{"--mode", "color"}, "P6"},
		{"e.PGM", []string{"--mode", "gray"}, "P5"},
	} {
		out := filepath.Join(dir, tc.name)
		code, stdout, stderr := runArgs(t, append([]string{"--out", out, "--width", "32", "--height", "8"}, tc.args...)...)
		require.Equal(t, exitOK, code, "%s: %s", tc.name, stderr)
		magic, w, h, data := readPNM(t, out)
		assert.Equal(t, tc.magic, magic, tc.name)
		assert.Equal(t, [2]int{32, 8}, [2]int{w, h}, tc.name)
		bpp := map[string]int{"P5": 1, "P6": 3}[tc.magic]
		assert.Len(t, data, 32*8*bpp, tc.name)
		assert.Contains(t, stdout, strings.ToUpper(strings.TrimPrefix(filepath.Ext(tc.name), ".")), "%s: the format is named", tc.name)
	}
}

// TestSizeSyntax: --bandwidth and --hang-after take iobench's size syntax
// ("1k" was refused before).
func TestSizeSyntax(t *testing.T) {
	out := filepath.Join(t.TempDir(), "s.pgm")
	code, stdout, stderr := runArgs(t, "--out", out, "--width", "16", "--height", "16", "--bandwidth", "1k", "--hang-after", "1MiB")
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "16x16")
}

// lastLine returns the last non-empty line of s, after any carriage
// return (the progress line's redraws).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	l := lines[len(lines)-1]
	return l[strings.LastIndex(l, "\r")+1:]
}

// TestStall: a scanner that stops sending fails the scan after
// --stall-timeout; meanwhile the progress line (or, without one, a notice)
// says the scanner is not answering; the failure is one line with one
// prefix, and the driver's nested detail comes only with -v.
func TestStall(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		progress string
		verbose  bool
	}{{"on", false}, {"off", false}, {"off", true}} {
		out := filepath.Join(dir, "x.pgm")
		args := []string{"--out", out, "--hang-after", "100k", "--stall-timeout", "1500ms", "--progress", tc.progress}
		if tc.verbose {
			args = append(args, "-v")
		}
		t0 := time.Now()
		code, stdout, stderr := runArgs(t, args...)
		assert.Equal(t, exitFailed, code, "%q: %s", args, stderr)
		assert.Less(t, time.Since(t0), 20*time.Second, "%q: the stall timeout ends the wait", args)
		assert.Empty(t, stdout)
		waiting := "no answer from the scanner for "
		if tc.progress == "on" {
			assert.Contains(t, stderr, "\r[", "%q: a progress line", args)
			assert.Regexp(t, `\r\[[#.]+\] +\d+% [^\r\n]*no answer from the scanner for \d+s; giving up at 1\.5s \(--stall-timeout\)`, stderr,
				"%q: the progress line says the scanner is not answering", args)
		} else {
			assert.Contains(t, stderr, "wiascan: "+waiting, "%q: a notice says the scanner is not answering", args)
		}
		final := "wiascan: scan failed at "
		if tc.verbose {
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			require.GreaterOrEqual(t, len(lines), 2)
			detail := lines[len(lines)-1]
			assert.True(t, strings.HasPrefix(detail, "  detail: minidrv: "), "%q: -v adds the driver's error: %q", args, detail)
			assert.Contains(t, detail, "no data from the device", "%q: the driver's own words", args)
			assert.True(t, strings.HasPrefix(lines[len(lines)-2], final), "%q: then the one line: %q", args, stderr)
		} else {
			l := lastLine(stderr)
			assert.True(t, strings.HasPrefix(l, final), "%q: the last line: %q", args, l)
			assert.Equal(t, 1, strings.Count(l, "wiascan:"), "%q: one prefix: %q", args, l)
			assert.Contains(t, l, "the scanner stopped answering: no data within --stall-timeout 1.5s")
			assert.Contains(t, l, "-v for the driver's detail")
			assert.NotContains(t, stderr, "minidrv:", "%q: no nested library error without -v", args)
			assert.NotContains(t, stderr, "(then", "%q: no nested library error without -v", args)
		}
		_, err := os.Stat(out)
		assert.True(t, os.IsNotExist(err), "a failed scan leaves no file")
		assert.Empty(t, dirNames(t, dir), "no temporary file left")
	}
}

// syncBuffer is a bytes.Buffer safe for a reader and a writer.
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

// interrupt runs wiascan with args and sends Ctrl-C once stderr contains
// when (at once, before the run starts, if when is empty); it returns the
// exit status and stderr.
func interrupt(t *testing.T, when string, args ...string) (int, string) {
	t.Helper()
	sigs := make(chan os.Signal, 1)
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	if when == "" {
		sigs <- syscall.SIGINT
	}
	go func() { done <- run(withAbortTimeout(args), &stdout, &stderr, sigs) }()
	if when != "" {
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(stderr.String(), when) {
			if time.Now().After(deadline) {
				t.Fatalf("wiascan %q: no %q within 15s: %q", args, when, stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		sigs <- syscall.SIGINT
	}
	select {
	case code := <-done:
		return code, stderr.String()
	case <-time.After(15 * time.Second):
		t.Fatalf("wiascan %q did not exit within 15s of SIGINT", args)
	}
	return 0, ""
}

// Ctrl-C on a hung scanner: the cancel returns control within the abort
// timeout, no file is left, the exit status says canceled.
// --stall-timeout 0 waits for ever, and the progress line says so.
func TestInterruptHungScan(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pnm")
	code, stderr := interrupt(t, "no answer from the scanner for 2s; waiting for ever (--stall-timeout 0), Ctrl-C cancels",
		"--out", out, "--hang-after", "100000", "--progress", "on", "--stall-timeout", "0")
	assert.Equal(t, exitCanceled, code, stderr)
	assert.Contains(t, stderr, "%", "a progress bar")
	l := lastLine(stderr)
	assert.Regexp(t, `^wiascan: canceled at \d+% \([\d.]+ of [\d.]+ MB\); CancelPendingIO returned in \S+$`, l)
	_, err := os.Stat(out)
	assert.True(t, os.IsNotExist(err), "no partial output")
	assert.Empty(t, dirNames(t, filepath.Dir(out)), "no temporary file left")
}

// Ctrl-C that comes before the acquisition starts still cancels it: with
// a scanner that hangs at once (--hang-after 1: the driver's probe gets no
// answer) and one that hangs during the scan.
func TestInterruptEarly(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pgm")
	for _, hang := range []string{"1", "1k"} {
		code, stderr := interrupt(t, "", "--out", out, "--hang-after", hang)
		assert.Equal(t, exitCanceled, code, "--hang-after %s: %s", hang, stderr)
		assert.True(t, strings.HasPrefix(lastLine(stderr), "wiascan: canceled"), "--hang-after %s: %s", hang, stderr)
		_, err := os.Stat(out)
		assert.True(t, os.IsNotExist(err), "no output")
	}
}

// TestHelp: -h exits 0 and says what the other tests check.
func TestHelp(t *testing.T) {
	code, stdout, stderr := runArgs(t, "-h")
	assert.Equal(t, exitOK, code)
	assert.Empty(t, stdout)
	for _, flag := range []string{"-out", "-usb", "-dpi", "-mode", "-width", "-height", "-hang-after", "-bandwidth",
		"-queue-depth", "-abort-timeout", "-stall-timeout", "-progress", "-v"} {
		assert.Regexp(t, `\n  `+flag+`\b`, stderr, "usage lists %s", flag)
	}
	for _, promise := range []string{".pgm (gray), .ppm (color)", "is refused", "KiB", "--stall-timeout", "Ctrl-C cancels",
		"-v adds", "75, 100, 150, 200, 300 or 600", "2 bad usage", "130 canceled"} {
		assert.Contains(t, stderr, promise, "usage says %q", promise)
	}
}

// mask replaces durations and numbers, the parts of an output that vary
// from run to run.
func mask(s string) string {
	s = regexp.MustCompile(`\d+(\.\d+)?(ns|µs|ms|s)\b`).ReplaceAllString(s, "D")
	return regexp.MustCompile(`\d+(\.\d+)?`).ReplaceAllString(s, "N")
}

// TestREADME runs the README's wiascan examples: usage errors must match
// to the letter, the others up to numbers and durations.
func TestREADME(t *testing.T) {
	examples, err := readme.Examples(".", "wiascan")
	require.NoError(t, err)
	require.NotEmpty(t, examples, "the README shows wiascan")
	t.Chdir(t.TempDir()) // the examples write relative paths
	for _, ex := range examples {
		usage := len(ex.Output) > 0 && ex.Output[len(ex.Output)-1] == "Run wiascan -h for usage."
		if !usage && testing.Short() {
			continue
		}
		code, stdout, stderr := runArgs(t, ex.Args...)
		got := strings.Split(strings.TrimRight(stdout+stderr, "\n"), "\n")
		if usage {
			assert.Equal(t, exitUsage, code, "wiascan %q", ex.Args)
			assert.Equal(t, ex.Output, got, "wiascan %q: the README shows what it prints", ex.Args)
			continue
		}
		want := make([]string, len(ex.Output))
		for i, l := range ex.Output {
			want[i] = mask(l)
		}
		for i, l := range got {
			got[i] = mask(l)
		}
		assert.Equal(t, want, got, "wiascan %q: the README shows what it prints, up to numbers", ex.Args)
	}
}

// TestTinyStallTimeout: the smallest timeouts work (the progress line's
// ticker has a floor).
func TestTinyStallTimeout(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pgm")
	code, _, stderr := runArgs(t, "--out", out, "--hang-after", "1k", "--stall-timeout", "1ns", "--progress", "on")
	assert.Equal(t, exitFailed, code, stderr)
	assert.Contains(t, lastLine(stderr), "wiascan: scan failed at 0% (0.0 of 2.2 MB): the scanner stopped answering: no data within --stall-timeout 1ns")
}

// TestHungAtOpen: a scanner that does not answer the driver's probe fails
// the open in one line; the detail comes with -v.
func TestHungAtOpen(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.pgm")
	for _, verbose := range []bool{false, true} {
		args := []string{"--out", out, "--hang-after", "1"}
		if verbose {
			args = append(args, "-v")
		}
		code, _, stderr := runArgs(t, args...)
		assert.Equal(t, exitFailed, code, stderr)
		lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
		assert.True(t, strings.HasPrefix(lines[0], "wiascan: open the simulated scanner: the scanner did not answer as expected"), "%q", stderr)
		if verbose {
			require.Len(t, lines, 2, "%q", stderr)
			assert.True(t, strings.HasPrefix(lines[1], "  detail: minidrv: "), "%q", stderr)
		} else {
			assert.Len(t, lines, 1, "%q", stderr)
			assert.NotContains(t, stderr, "minidrv:")
		}
	}
}
