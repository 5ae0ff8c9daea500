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
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/readme"
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
	code = run(args, &out, &errOut, nil)
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
		{[]string{"--size", "0"}, `--size "0": size out of range: want at least 1`},
		{[]string{"--size", "4q"}, `--size "4q": not a size`},
		{[]string{"--size", "4KB"}, `--size "4KB": not a size`},
		{[]string{"--size", "2g"}, `--size "2g": size out of range: want at most 1G`},
		{[]string{"--duration", "0s"}, "--duration 0s: want a positive duration"},
		{[]string{"--duration", "-1s"}, "--duration -1s: want a positive duration"},
		{[]string{"--backend", "iocp"}, `--backend "iocp": want auto, uring or poll`},
		{[]string{"--op", "cancel", "--file", "/tmp/x"}, "--file is for --op read and write, not cancel"},
		{[]string{"--op", "nop", "extra"}, "unexpected arguments: extra"},
	} {
		code, stdout, stderr := runArgs(tc.args...)
		assert.Equal(t, exitUsage, code, "%v: exit status", tc.args)
		assert.Contains(t, stderr, tc.want, "%v: error message", tc.args)
		assert.Equal(t, 1, strings.Count(stderr, "iobench:"), "%v: one prefix, one message: %q", tc.args, stderr)
		assert.True(t, strings.HasPrefix(stderr, "iobench: "), "%v: the message comes first: %q", tc.args, stderr)
		assert.NotContains(t, stderr, "-duration duration", "%v: no usage dump after the message", tc.args)
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
	// What -h promises, the other tests check: the figures per op
	// (TestRunText), the tail plot and its path (TestPlot), Ctrl-C's
	// summary and status (TestInterrupt), the size syntax (TestSizeSyntax).
	for _, promise := range []string{"cancels per second", "reads canceled per second", "cancel latency", "MB/s",
		"tail", "summary says where", "KiB", "130 interrupted", "2 bad usage"} {
		assert.Contains(t, stderr, promise, "usage says %q", promise)
	}
}

// TestSizeSyntax: --size takes units' syntax; the summary shows the size.
func TestSizeSyntax(t *testing.T) {
	for in, want := range map[string]int{"512": 512, "8k": 8192, "16KiB": 16384, "1M": 1 << 20} {
		code, stdout, stderr := runArgs("--op", "cancel", "--qd", "1", "--size", in, "--duration", "50ms", "--json")
		require.Equal(t, exitOK, code, "--size %s: %s", in, stderr)
		var s jsonSummary
		require.NoError(t, json.Unmarshal([]byte(stdout), &s))
		assert.Equal(t, want, s.Size, "--size %s", in)
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

// TestRunText runs every op shortly and checks that the text summary has
// the figures that mean something for the op, and not the others.
func TestRunText(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir()) // the temporary data file goes here
	common := []string{"backend ", "min ", "mean ", "p50 ", "p90 ", "p99 ", "p99.9 ", "max "}
	for _, tc := range []struct {
		op        string
		want, not []string
	}{
		{"nop", []string{"iobench: nop, qd 8,", "nops:", "/s\n", "latency: ", "from submission until the completion is reaped"},
			[]string{"MB/s", "size", "data:", "cancel"}},
		{"read", []string{"iobench: read, qd 8, size 4k,", "reads:", "data:", " bytes, ", " MB/s", "latency: "},
			[]string{"cancel"}},
		{"write", []string{"iobench: write, qd 8, size 4k,", "writes:", "data:", " MB/s", "latency: "},
			[]string{"cancel"}},
		{"cancel", []string{"iobench: cancel of 8 pending reads (4k buffers) by one token", "cancels:", "reads canceled:",
			"cancel latency: ", "from Token.Cancel until the last of the 8 reads is reaped"},
			[]string{"MB/s", "data:", "ops"}},
	} {
		code, stdout, stderr := runArgs("--op", tc.op, "--qd", "8", "--duration", "200ms")
		require.Equal(t, exitOK, code, "%s: stderr %s", tc.op, stderr)
		assert.Empty(t, stderr, "%s: no progress line when stderr is not a terminal", tc.op)
		for _, want := range append(tc.want, common...) {
			assert.Contains(t, stdout, want, "%s summary", tc.op)
		}
		for _, not := range tc.not {
			assert.NotContains(t, stdout, not, "%s summary: nothing that does not apply", tc.op)
		}
		assert.NotContains(t, stdout, "plot:", "%s: no plot asked for", tc.op)
		assert.NotContains(t, stdout, "interrupted", tc.op)
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
			if op == "nop" {
				assert.Zero(t, s.Size, "nop has no size")
			} else {
				assert.Equal(t, 512, s.Size)
			}
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
				if assert.NotNil(t, s.Bytes) && assert.NotNil(t, s.MBPerSec) {
					assert.Equal(t, s.Ops*512, *s.Bytes, "%s/%s: every op moved a block", backend, op)
					assert.InEpsilon(t, float64(*s.Bytes)/(float64(s.DurationNS)/1e9)/1e6, *s.MBPerSec, 1e-6, "MB/s is bytes over the duration")
				}
				assert.Nil(t, s.Canceled, "%s/%s: no reads canceled field", backend, op)
			case "nop":
				assert.Nil(t, s.Bytes, "%s/%s: nop moves no data", backend, op)
				assert.Nil(t, s.MBPerSec)
				assert.Nil(t, s.Canceled)
			case "cancel":
				if assert.NotNil(t, s.Canceled) && assert.NotNil(t, s.CanceledPerSec) {
					assert.Equal(t, s.Ops*4, *s.Canceled, "%s/%s: each cancel canceled qd reads", backend, op)
					assert.InEpsilon(t, 4*s.OpsPerSec, *s.CanceledPerSec, 1e-6, "%s/%s: reads canceled per second", backend, op)
				}
				assert.Nil(t, s.Bytes, "%s/%s: cancel moves no data", backend, op)
				assert.Nil(t, s.MBPerSec)
			}
			assert.Empty(t, s.Plot)
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

// TestPlot writes the plot of a cancel run, checks it is an SVG document
// with the tail panel, and that the summary says where it went.
func TestPlot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.svg")
	code, stdout, stderr := runArgs("--op", "cancel", "--qd", "64", "--duration", "200ms", "--plot", path)
	require.Equal(t, exitOK, code, stderr)
	assert.Contains(t, stdout, "p99")
	assert.Contains(t, stdout, "\n  plot:           "+path+"\n", "the summary names the plot")
	checkSVG(t, path)

	path = filepath.Join(t.TempDir(), "n.svg")
	code, stdout, stderr = runArgs("--op", "nop", "--duration", "100ms", "--plot", path, "--json")
	require.Equal(t, exitOK, code, stderr)
	var s jsonSummary
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	assert.Equal(t, path, s.Plot, "the JSON summary names the plot")
	checkSVG(t, path)
}

// checkSVG checks that path holds an SVG document with the three panels.
func checkSVG(t *testing.T, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, class := range []string{"histogram", "cdf", "tail"} {
		assert.Contains(t, string(raw), `class="`+class+`"`, "the %s panel", class)
	}
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

// TestInterrupt: Ctrl-C ends a long run early; the summary (marked
// interrupted) and the plot are still written, and the status is 130.
func TestInterrupt(t *testing.T) {
	for _, args := range [][]string{{"--op", "cancel", "--qd", "4"}, {"--op", "nop", "--json"}} {
		plot := filepath.Join(t.TempDir(), "i.svg")
		sigs := make(chan os.Signal, 1)
		var stdout, stderr bytes.Buffer
		done := make(chan int, 1)
		go func() {
			done <- run(append(args, "--duration", "60s", "--plot", plot), &stdout, &stderr, sigs)
		}()
		time.Sleep(300 * time.Millisecond)
		sigs <- os.Interrupt
		select {
		case code := <-done:
			assert.Equal(t, exitInterrupted, code, "%v: stderr %s", args, stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("%v: iobench did not stop within 30s of Ctrl-C", args)
		}
		assert.Empty(t, stderr.String(), args)
		if args[len(args)-1] == "--json" {
			var s jsonSummary
			require.NoError(t, json.Unmarshal(stdout.Bytes(), &s), "%v: %q", args, stdout.String())
			assert.True(t, s.Interrupted)
			// No count of ops is asserted: on a loaded machine the Ctrl-C
			// may come before the first request.
			assert.Less(t, s.DurationNS, int64(30*time.Second), "ended early")
		} else {
			assert.Contains(t, stdout.String(), "interrupted by Ctrl-C", args)
			assert.Contains(t, stdout.String(), "cancel latency: ", args)
		}
		checkSVG(t, plot)
	}
}

// mask replaces durations and numbers, the parts of an output that vary
// from run to run.
func mask(s string) string {
	s = regexp.MustCompile(`\d+(\.\d+)?(ns|µs|ms|s)\b`).ReplaceAllString(s, "D")
	return regexp.MustCompile(`\d+(\.\d+)?`).ReplaceAllString(s, "N")
}

// TestREADME runs the README's iobench examples, shorter and with the plot
// in a temporary directory, and checks they print what the README shows,
// up to numbers and durations (and the backend, which depends on the
// machine).
func TestREADME(t *testing.T) {
	examples, err := readme.Examples(".", "iobench")
	require.NoError(t, err)
	require.NotEmpty(t, examples, "the README shows iobench")
	dir := t.TempDir()
	backend := regexp.MustCompile(`backend \w+ \([^)]*\)`)
	for _, ex := range examples {
		args := slices.Clone(ex.Args)
		var plot string
		for i := 0; i+1 < len(args); i++ {
			switch args[i] {
			case "--duration":
				args[i+1] = "200ms"
			case "--plot":
				plot = args[i+1]
				args[i+1] = filepath.Join(dir, plot)
			}
		}
		code, stdout, stderr := runArgs(args...)
		require.Equal(t, exitOK, code, "iobench %q: %s", args, stderr)
		if plot != "" {
			stdout = strings.ReplaceAll(stdout, filepath.Join(dir, plot), plot)
		}
		got := strings.Split(strings.TrimRight(stdout, "\n"), "\n")
		want := slices.Clone(ex.Output)
		for i := range got {
			got[i] = mask(backend.ReplaceAllString(got[i], "backend B"))
		}
		for i := range want {
			want[i] = mask(backend.ReplaceAllString(want[i], "backend B"))
		}
		assert.Equal(t, want, got, "iobench %q: the README shows what it prints, up to numbers", ex.Args)
	}
}
