//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// advRun runs iobench in-process with a bound on how long it may take.
func advRun(t *testing.T, sigs <-chan os.Signal, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() { done <- run(args, &out, &errb, sigs) }()
	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("iobench %q still runs after 60 s", args)
	}
	return code, out.String(), errb.String()
}

// advNoCrash checks that the output has no panic or Go stack trace.
func advNoCrash(t *testing.T, args []string, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", ".go:"} {
		assert.NotContains(t, out, bad, "args %q", args)
	}
}

// TestAdvToolsUsageErrors: every bad value is a usage error (2), one
// prefixed message and the hint to -h, nothing on stdout, nothing run.
func TestAdvToolsUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--qd", "0"}, "--qd 0"},
		{[]string{"--qd", "-1"}, "--qd -1"},
		{[]string{"--qd", "3"}, "--qd 3"},
		{[]string{"--qd", "8192"}, "--qd 8192"},
		{[]string{"--qd", "99999999999999999999"}, "-qd"},
		{[]string{"--qd", ""}, "-qd"},
		{[]string{"--size", "1.5k"}, `--size "1.5k"`},
		{[]string{"--size", "k"}, `--size "k"`},
		{[]string{"--size", "-1"}, `--size "-1"`},
		{[]string{"--size", "0"}, `--size "0"`},
		{[]string{"--size", ""}, `--size ""`},
		{[]string{"--size", "４k"}, "--size"},
		{[]string{"--size", "4KB"}, `--size "4KB"`},
		{[]string{"--size", "2G"}, "at most 1G"},
		{[]string{"--size", "99999999999G"}, "larger than 1G"},
		{[]string{"--size", "99999999999999999999999"}, "larger than 1G"},
		{[]string{"--duration", "0"}, "--duration 0s"},
		{[]string{"--duration", "-1s"}, "--duration -1s"},
		{[]string{"--duration", "2"}, "-duration"},
		{[]string{"--duration", "99999999999h"}, "-duration"},
		{[]string{"--backend", "foo"}, `--backend "foo"`},
		{[]string{"--backend", ""}, `--backend ""`},
		{[]string{"--op", "READ"}, `--op "READ"`},
		{[]string{"--op", ""}, `--op ""`},
		{[]string{"--op", "nop", "--file", "x"}, "--file is for"},
		{[]string{"--op", "cancel", "--file", "x"}, "--file is for"},
		{[]string{"--json=maybe"}, "-json"},
		{[]string{"--nope"}, "-nope"},
		{[]string{"extra"}, "unexpected arguments: extra"},
		{[]string{"--op", "nop", "--", "x"}, "unexpected arguments: x"},
	} {
		// A short run, should a bad value be taken.
		code, stdout, stderr := advRun(t, nil, append([]string{"--duration", "100ms"}, tc.args...)...)
		assert.Equal(t, exitUsage, code, "args %q: %s", tc.args, stderr)
		assert.Empty(t, stdout, "args %q", tc.args)
		assert.True(t, strings.HasPrefix(stderr, "iobench: "), "args %q: %q", tc.args, stderr)
		assert.Contains(t, stderr, tc.want, "args %q", tc.args)
		assert.Contains(t, stderr, "Run iobench -h for usage.", "args %q", tc.args)
		assert.Equal(t, 1, strings.Count(stderr, "iobench:"), "args %q: one message: %q", tc.args, stderr)
		advNoCrash(t, tc.args, stderr)
	}
}

// TestAdvToolsRuntimeErrors: what cannot be opened fails the run (1) with
// one line naming the flag and the cause.
func TestAdvToolsRuntimeErrors(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o644))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--op", "nop", "--plot", dir}, "--plot"},
		{[]string{"--op", "nop", "--plot", filepath.Join(dir, "no", "such", "p.svg")}, "--plot"},
		{[]string{"--op", "read", "--file", dir}, "not a regular file"},
		{[]string{"--op", "read", "--file", "/dev/null"}, "not a regular file"},
		{[]string{"--op", "read", "--file", filepath.Join(dir, "missing")}, "--file"},
		{[]string{"--op", "read", "--file", empty}, "smaller than one block"},
		{[]string{"--op", "write", "--file", dir}, "--file"},
	} {
		args := append([]string{"--duration", "100ms", "--backend", "poll"}, tc.args...)
		code, stdout, stderr := advRun(t, nil, args...)
		assert.Equal(t, exitFail, code, "args %q: %s", args, stderr)
		assert.Empty(t, stdout, "args %q", args)
		assert.True(t, strings.HasPrefix(stderr, "iobench: "), "args %q: %q", args, stderr)
		assert.Contains(t, stderr, tc.want, "args %q", args)
		assert.Equal(t, 1, strings.Count(strings.TrimSpace(stderr), "\n")+1, "args %q: one line: %q", args, stderr)
		advNoCrash(t, args, stderr)
	}
	// --file missing for write is created (the help says "file to read or
	// write"); a write into a missing directory fails.
	code, _, stderr := advRun(t, nil, "--op", "write", "--duration", "100ms", "--backend", "poll",
		"--file", filepath.Join(dir, "no", "f"))
	assert.Equal(t, exitFail, code, stderr)
}

// TestAdvToolsPlotKeptOnFailedRun: a run that fails before it measures
// anything must not destroy the file --plot names. iobench creates
// (truncates) the plot first and removes it on any error, so an existing
// file, e.g. last run's plot, is lost because of an unrelated mistake
// (here a --file that does not exist).
func TestAdvToolsPlotKeptOnFailedRun(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "old.svg")
	require.NoError(t, os.WriteFile(plot, []byte("<svg>last run</svg>"), 0o644))
	code, _, stderr := advRun(t, nil, "--op", "read", "--duration", "100ms", "--backend", "poll",
		"--file", filepath.Join(dir, "missing.dat"), "--plot", plot)
	assert.Equal(t, exitFail, code, stderr)
	got, err := os.ReadFile(plot)
	if assert.NoError(t, err, "the existing --plot file was removed by a failed run") {
		assert.Equal(t, "<svg>last run</svg>", string(got), "the existing --plot file was changed by a failed run")
	}
}

// TestAdvToolsPlotDeviceNotRemoved: --plot naming a device that cannot
// hold the plot (/dev/full) fails the run, but must not unlink the device
// node. Run as root, `iobench --plot /dev/full` deletes /dev/full. The
// test makes its own node (root only) rather than touch /dev.
func TestAdvToolsPlotDeviceNotRemoved(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "full")
	if err := syscall.Mknod(full, syscall.S_IFCHR|0o666, 1<<8|7); err != nil { // 1,7: /dev/full
		t.Skipf("mknod: %v (needs root)", err)
	}
	code, _, stderr := advRun(t, nil, "--op", "nop", "--duration", "100ms", "--backend", "poll", "--plot", full)
	assert.Equal(t, exitFail, code, stderr)
	assert.Contains(t, stderr, "--plot")
	_, err := os.Lstat(full)
	assert.NoError(t, err, "iobench removed the device node --plot named")
}

// TestAdvToolsJSON: --json is one valid JSON object for every op and
// backend, with the fields the doc promises, also when interrupted.
func TestAdvToolsJSON(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir := t.TempDir()
	for _, be := range backends(t) {
		for _, tc := range []struct{ op, qd, size string }{
			{"nop", "1", "4k"}, {"read", "4", "512"}, {"write", "2", "64KiB"}, {"cancel", "8", "1"},
		} {
			plot := filepath.Join(dir, be+tc.op+".svg")
			args := []string{"--op", tc.op, "--qd", tc.qd, "--size", tc.size, "--duration", "200ms",
				"--backend", be, "--json", "--plot", plot}
			code, stdout, stderr := advRun(t, nil, args...)
			require.Equal(t, exitOK, code, "args %q: %s", args, stderr)
			advNoCrash(t, args, stderr)
			var m map[string]any
			dec := json.NewDecoder(strings.NewReader(stdout))
			require.NoError(t, dec.Decode(&m), "args %q: %s", args, stdout)
			assert.False(t, dec.More(), "args %q: more than one JSON value", args)
			assert.Equal(t, tc.op, m["op"])
			assert.Equal(t, be, m["backend"])
			assert.Equal(t, false, m["interrupted"])
			assert.Equal(t, plot, m["plot"])
			_, hasBytes := m["bytes"]
			_, hasCanceled := m["canceled"]
			_, hasSize := m["size"]
			assert.Equal(t, tc.op == "read" || tc.op == "write", hasBytes, "args %q: bytes", args)
			assert.Equal(t, tc.op == "cancel", hasCanceled, "args %q: canceled", args)
			assert.Equal(t, tc.op != "nop", hasSize, "args %q: size", args)
			lat, ok := m["latency_ns"].(map[string]any)
			if assert.True(t, ok, "args %q: latency_ns", args) {
				assert.Greater(t, lat["count"], 0.0, "args %q", args)
				assert.LessOrEqual(t, lat["min"], lat["max"], "args %q", args)
			}
			st, err := os.Stat(plot)
			if assert.NoError(t, err) {
				assert.Greater(t, st.Size(), int64(0))
			}
		}
	}
}

// TestAdvToolsInterruptAnyMoment: Ctrl-C at any moment (at once, soon,
// late) ends a long run promptly with 130, a valid summary marked
// interrupted, and the plot written.
func TestAdvToolsInterruptAnyMoment(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	dir := t.TempDir()
	for _, op := range []string{"nop", "read", "cancel"} {
		for _, after := range []time.Duration{0, 30 * time.Millisecond, 400 * time.Millisecond} {
			sigs := make(chan os.Signal, 1)
			plot := filepath.Join(dir, op+after.String()+".svg")
			args := []string{"--op", op, "--duration", "10m", "--backend", "poll", "--json", "--plot", plot}
			time.AfterFunc(after, func() { sigs <- os.Interrupt })
			t0 := time.Now()
			code, stdout, stderr := advRun(t, sigs, args...)
			took := time.Since(t0)
			assert.Less(t, took, 30*time.Second, "%s after %v", op, after)
			if code == exitFail && strings.Contains(stderr, "no latency") {
				continue // nothing measured; not what this test looks at
			}
			assert.Equal(t, exitInterrupted, code, "%s after %v: %s", op, after, stderr)
			advNoCrash(t, args, stderr)
			var m map[string]any
			if assert.NoError(t, json.Unmarshal([]byte(stdout), &m), "%s after %v: %q", op, after, stdout) {
				assert.Equal(t, true, m["interrupted"])
			}
			_, err := os.Stat(plot)
			assert.NoError(t, err, "%s after %v: plot", op, after)
		}
	}
}

// advFailWriter fails every write.
type advFailWriter struct{}

func (advFailWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestAdvToolsSummaryWriteFails: a summary that cannot be written fails
// the run (1) and says so.
func TestAdvToolsSummaryWriteFails(t *testing.T) {
	for _, asJSON := range []string{"--json=false", "--json"} {
		var errb bytes.Buffer
		code := run([]string{"--op", "nop", "--duration", "50ms", "--backend", "poll", asJSON}, advFailWriter{}, &errb, nil)
		assert.Equal(t, exitFail, code, errb.String())
		assert.Contains(t, errb.String(), "write summary")
	}
}

// TestAdvToolsHelpMatches: -h exits 0 and names every flag and op.
func TestAdvToolsHelpMatches(t *testing.T) {
	for _, h := range []string{"-h", "--help", "-help"} {
		code, stdout, stderr := advRun(t, nil, h)
		assert.Equal(t, exitOK, code)
		assert.Empty(t, stdout)
		for _, s := range []string{"-op", "-qd", "-size", "-duration", "-backend", "-json", "-file", "-plot",
			"nop", "read", "write", "cancel", "uring", "poll", "130"} {
			assert.Contains(t, stderr, s, h)
		}
	}
}
