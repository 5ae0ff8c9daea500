package main

// Adversarial round 20, what a person sees: --out names the file system
// takes, the fault flags' help, and the shape of failure messages.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAdv20LongOutName: an --out whose name is long but valid (249
// bytes, under NAME_MAX 255) is refused before the scan with "open
// output: open NAME: file name too long": the temporary file beside it,
// ".NAME.XXXXXXXX.tmp" (createOutput, output.go), is 14 bytes longer than
// the name and over NAME_MAX. The README promises the image "goes to a
// temporary file beside --out, renamed over it": an implementation
// detail that should not refuse a name the file system accepts.
func TestAdv20LongOutName(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, strings.Repeat("a", 245)+".pgm")
	f, err := os.Create(out) // the name is valid
	require.NoError(t, err)
	f.Close()
	require.NoError(t, os.Remove(out))

	code, stdout, stderr := advRun(t, nil, "--out", out, "--width", "8", "--height", "8", "--progress", "off")
	assert.Equal(t, exitOK, code, "--out with a 249-byte name: %s", stderr)
	assert.Contains(t, stdout, "8x8")
	_, err = os.Stat(out)
	assert.NoError(t, err, "the image was not written")
	assert.LessOrEqual(t, len(advFiles(t, dir)), 1, "temporary file left")
}

// TestAdv20HangAfterCountsBulkIn: -h used to say --hang-after makes the
// simulated scanner "hang after sending `bytes` of image data", but
// usbsim's HangAfter counts every byte of bulk-IN payload, the answers
// while the scanner is opened included, so --hang-after 1 hangs it at
// open. The help now says that; a value past those answers hangs it
// during the image (the scan fails for the stall).
func TestAdv20HangAfterCountsBulkIn(t *testing.T) {
	_, _, help := advRun(t, nil, "-h")
	assert.Contains(t, help, "on bulk IN", "-h: %s", help)
	assert.Contains(t, help, "1 hangs it at open", "-h: %s", help)
	dir := t.TempDir()
	code, _, stderr := advRun(t, nil, "--out", filepath.Join(dir, "h.pgm"), "--hang-after", "1",
		"--stall-timeout", "1s", "--progress", "off")
	assert.Equal(t, exitFailed, code, stderr)
	assert.Contains(t, stderr, "open the simulated scanner", "--hang-after 1 hangs at open: %s", stderr)
	code, _, stderr = advRun(t, nil, "--out", filepath.Join(dir, "h.pgm"), "--hang-after", "4k",
		"--stall-timeout", "1s", "--progress", "off")
	assert.Equal(t, exitFailed, code, stderr)
	assert.Contains(t, stderr, "scan failed", "--hang-after 4k hangs during the image: %s", stderr)
	assert.Empty(t, advFiles(t, dir), "temporary file left")
}

// TestAdv20FailureShape: every kind of failure is one line "wiascan: ..."
// (with the -v hint when the driver has a detail) and, under -v, that
// line and one indented "detail:" line; no Go formatting leaks (%!,
// <nil>, a pointer) and no message says the same thing twice.
func TestAdv20FailureShape(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		args   []string
		detail bool // the driver has a detail for -v
	}{
		{"no USB device", []string{"--usb", "1209:0001"}, true},
		{"output directory missing", []string{"--out", filepath.Join(dir, "no", "x.pgm")}, false},
		{"hung at open", []string{"--hang-after", "1", "--abort-timeout", "300ms"}, true},
	} {
		for _, v := range []bool{false, true} {
			args := append([]string{"--out", filepath.Join(dir, "f.pgm"), "--progress", "off"}, tc.args...)
			if v {
				args = append(args, "-v")
			}
			code, stdout, stderr := advRun(t, nil, args...)
			what := tc.name
			if v {
				what += " -v"
			}
			assert.Equal(t, exitFailed, code, "%s: %s", what, stderr)
			assert.Empty(t, stdout, what)
			advNoCrash(t, what, stderr)
			for _, bad := range []string{"%!", "<nil>", "0xc0", "Run wiascan -h"} {
				assert.NotContains(t, stderr, bad, "%s: %q", what, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if !assert.NotEmpty(t, lines, what) {
				continue
			}
			assert.True(t, strings.HasPrefix(lines[0], "wiascan: "), "%s: %q", what, stderr)
			assert.Equal(t, 1, strings.Count(stderr, "wiascan:"), "%s: one prefix: %q", what, stderr)
			switch {
			case v && tc.detail:
				if assert.Len(t, lines, 2, "%s: the line and its detail: %q", what, stderr) {
					assert.True(t, strings.HasPrefix(lines[1], "  detail: "), "%s: %q", what, stderr)
				}
				assert.NotContains(t, lines[0], "-v for", "%s: the hint under -v: %q", what, stderr)
			case tc.detail:
				assert.Len(t, lines, 1, "%s: one line: %q", what, stderr)
				assert.True(t, strings.HasSuffix(lines[0], "(-v for the driver's detail)"), "%s: %q", what, stderr)
			default:
				assert.Len(t, lines, 1, "%s: one line: %q", what, stderr)
			}
		}
	}
	names := advFiles(t, dir)
	assert.Empty(t, names, "temporary or partial files left")
}
