//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// runArgs runs the command in-process and returns its exit status and output.
func runArgs(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--qd", "many"}, `invalid value "many" for flag -qd`},
		{[]string{"--duration", "soon"}, `invalid value "soon" for flag -duration`},
		{[]string{"--op", "erase"}, `unknown --op "erase" (want nop, read, write or cancel)`},
		{[]string{"--qd", "0"}, "--qd 0: want a power of two from 1 to 4096"},
		{[]string{"--qd", "3"}, "--qd 3: want a power of two"},
		{[]string{"--qd", "-8"}, "--qd -8: want a power of two"},
		{[]string{"--qd", "8192"}, "--qd 8192: want a power of two from 1 to 4096"},
		{[]string{"--size", "0"}, `--size: "0" is not a size`},
		{[]string{"--size", "4q"}, `--size: "4q" is not a size`},
		{[]string{"--size", "2g"}, "larger than 1 GiB"},
		{[]string{"--duration", "0s"}, "--duration 0s: want a positive duration"},
		{[]string{"--duration", "-1s"}, "--duration -1s: want a positive duration"},
		{[]string{"--backend", "iocp"}, `--backend "iocp": want auto, uring or poll`},
		{[]string{"--op", "cancel", "--file", "/tmp/x"}, "--file is for --op read and write, not cancel"},
		{[]string{"--op", "nop", "extra"}, "unexpected arguments: extra"},
	} {
		code, stdout, stderr := runArgs(tc.args...)
		assert.Equal(t, exitUsage, code, "%v: exit status", tc.args)
		assert.Contains(t, stderr, tc.want, "%v: error message", tc.args)
		assert.Empty(t, stdout, "%v: nothing on stdout", tc.args)
	}
}

func TestHelp(t *testing.T) {
	code, stdout, stderr := runArgs("-h")
	assert.Equal(t, exitOK, code)
	assert.Empty(t, stdout)
	for _, flag := range []string{"-op", "-qd", "-size", "-duration", "-backend", "-json", "-file", "-plot"} {
		assert.Contains(t, stderr, flag, "usage lists %s", flag)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{
		"1": 1, "4096": 4096, "4k": 4096, "4K": 4096, "4KiB": 4096, "4kb": 4096,
		"64k": 64 << 10, "1m": 1 << 20, "1MiB": 1 << 20, "1g": 1 << 30, " 8k ": 8192,
	} {
		got, err := parseSize(in)
		if assert.NoError(t, err, "%q", in) {
			assert.Equal(t, want, got, "%q", in)
		}
	}
	for _, in := range []string{"", "k", "0", "-4k", "4x", "1.5k", "4kk", "1025m"} {
		_, err := parseSize(in)
		assert.Error(t, err, "%q", in)
	}
}

// TestPlotUnwritable: a --plot path that cannot be created fails at once,
// before the run, with the path in the message.
func TestPlotUnwritable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no-such-dir", "p.svg")
	start := time.Now()
	code, stdout, stderr := runArgs("--op", "nop", "--duration", "30s", "--plot", path)
	assert.Equal(t, exitFail, code)
	assert.Contains(t, stderr, "--plot")
	assert.Contains(t, stderr, path)
	assert.Contains(t, stderr, "no such file or directory")
	assert.Empty(t, stdout)
	assert.Less(t, time.Since(start), 20*time.Second, "failed before running the 30s benchmark")
}

func TestBadFile(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runArgs("--op", "read", "--duration", "30s", "--file", filepath.Join(dir, "missing"))
	assert.Equal(t, exitFail, code)
	assert.Contains(t, stderr, "--file")

	small := filepath.Join(dir, "small")
	require.NoError(t, os.WriteFile(small, make([]byte, 100), 0o600))
	code, _, stderr = runArgs("--op", "read", "--duration", "30s", "--file", small)
	assert.Equal(t, exitFail, code)
	assert.Contains(t, stderr, "smaller than one block of 4096")
}

// backends returns the backends that run here.
func backends(t *testing.T) []string {
	var out []string
	for _, b := range []ioring.Backend{ioring.BackendURing, ioring.BackendPoll} {
		r, err := ioring.New(ioring.Config{Entries: 2, Backend: b})
		if err != nil {
			t.Logf("backend %v unavailable: %v", b, err)
			continue
		}
		require.NoError(t, r.Close())
		out = append(out, b.String())
	}
	if len(out) == 0 {
		t.Skip("no backend runs here")
	}
	return out
}

// TestRunText runs every op shortly and checks the text summary.
func TestRunText(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the temporary data file goes here
	for _, op := range []string{"nop", "read", "write", "cancel"} {
		code, stdout, stderr := runArgs("--op", op, "--qd", "8", "--duration", "200ms")
		require.Equal(t, exitOK, code, "%s: stderr %s", op, stderr)
		assert.Empty(t, stderr, "%s: no progress line when stderr is not a terminal", op)
		assert.True(t, strings.HasPrefix(stdout, "iobench: "+op), "%s: summary starts with the op: %q", op, stdout)
		for _, want := range []string{"qd 8", "backend ", "ops:", "ops/s:", "MB/s:", "latency: min ", "mean ", "p50 ", "p90 ", "p99 ", "p99.9 ", "max "} {
			if op == "cancel" && want == "qd 8" {
				want = "cancel of 8 pending reads"
			}
			assert.Contains(t, stdout, want, "%s summary", op)
		}
		if op == "cancel" {
			assert.Contains(t, stdout, "reads canceled")
		}
	}
	left, err := os.ReadDir(os.Getenv("TMPDIR"))
	require.NoError(t, err)
	assert.Empty(t, left, "temporary data files are removed")
}

// TestRunJSON runs every op on every backend and checks the JSON summary.
func TestRunJSON(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	for _, backend := range backends(t) {
		for _, op := range []string{"nop", "read", "write", "cancel"} {
			code, stdout, stderr := runArgs("--op", op, "--qd", "4", "--size", "512", "--backend", backend, "--duration", "200ms", "--json")
			require.Equal(t, exitOK, code, "%s/%s: stderr %s", backend, op, stderr)
			var s jsonSummary
			require.NoError(t, json.Unmarshal([]byte(stdout), &s), "%s/%s: JSON %q", backend, op, stdout)
			assert.Equal(t, op, s.Op)
			assert.Equal(t, 4, s.QD)
			assert.Equal(t, 512, s.Size)
			assert.Equal(t, backend, s.Backend)
			assert.NotEmpty(t, s.BackendReason)
			assert.GreaterOrEqual(t, s.DurationNS, int64(200*time.Millisecond), "%s/%s: ran the duration", backend, op)
			require.Positive(t, s.Ops, "%s/%s: did some work", backend, op)
			assert.InEpsilon(t, float64(s.Ops)/(float64(s.DurationNS)/1e9), s.OpsPerSec, 1e-6, "ops/s is ops over the duration")
			assert.Equal(t, int(s.Ops), s.Latency.Count, "%s/%s: one latency sample per op", backend, op)
			l := s.Latency
			assert.True(t, 0 < l.Min && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max,
				"%s/%s: latency statistics in order: %+v", backend, op, l)
			assert.True(t, l.Min <= l.Mean && l.Mean <= l.Max, "%s/%s: mean within min..max: %+v", backend, op, l)
			switch op {
			case "read", "write":
				assert.Equal(t, s.Ops*512, s.Bytes, "%s/%s: every op moved a block", backend, op)
				assert.Positive(t, s.MBPerSec)
				assert.Zero(t, s.Canceled)
			case "nop":
				assert.Zero(t, s.Bytes)
			case "cancel":
				assert.Equal(t, s.Ops*4, s.Canceled, "%s/%s: each cancel canceled qd reads", backend, op)
				assert.Zero(t, s.Bytes)
			}
		}
	}
}

// TestRunFile reads and writes a given file; write does not truncate it.
func TestRunFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	require.NoError(t, os.WriteFile(path, bytes.Repeat([]byte{1}, 1<<20), 0o600))
	code, stdout, stderr := runArgs("--op", "read", "--file", path, "--duration", "100ms", "--json")
	require.Equal(t, exitOK, code, stderr)
	var s jsonSummary
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	assert.Positive(t, s.Ops)

	code, _, stderr = runArgs("--op", "write", "--file", path, "--duration", "100ms")
	require.Equal(t, exitOK, code, stderr)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, st.Size(), int64(1<<20), "write keeps the file's content")
}

// TestPlot writes the plot of a cancel run and checks it is an SVG document.
func TestPlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	code, stdout, stderr := runArgs("--op", "cancel", "--qd", "64", "--duration", "200ms", "--plot", path)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "p99")
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	dec := xml.NewDecoder(f)
	var root string
	elems := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the plot is well-formed XML")
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				assert.Equal(t, "http://www.w3.org/2000/svg", se.Name.Space)
			}
			elems++
		}
	}
	assert.Equal(t, "svg", root)
	assert.Greater(t, elems, 10, "the plot has content")
}

func TestIsTerminal(t *testing.T) {
	assert.False(t, isTerminal(&bytes.Buffer{}))
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	assert.False(t, isTerminal(w), "a pipe is not a terminal")
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		999:                      "999ns",
		1500:                     "1.5µs",
		33_812:                   "33.8µs",
		438_000:                  "438µs",
		4_600_000:                "4.6ms",
		2_500 * time.Millisecond: "2.5s",
	} {
		assert.Equal(t, want, fmtDur(d))
	}
}
