//go:build linux

package main

// Adversarial round 20, what a person sees: flag values that each pass
// their own check but not together, and the file names the run uses.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAdv20QDTimesSizeNoCrash: --qd 4096 and --size 1G are each within
// the limits the help states ("a power of two up to 4096", "at most 1G"),
// so iobench takes them; the run then allocates qd*size bytes in one
// slice (runCancel, runIO: make([]byte, qd*cfg.size)): 4 TiB on amd64,
// which the Go runtime cannot allocate ("fatal error: out of memory",
// a stack trace, status 2 as if it were bad usage), and on 386 qd*size
// overflows int (a slice-bounds panic). The README promises bad usage in
// one line naming the flag, and a failed run status 1 with a message: not
// a runtime crash. The binary runs under `ulimit -v` so that the machine
// never lends it the memory.
func TestAdv20QDTimesSizeNoCrash(t *testing.T) {
	bin := adv16Binary(t)
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	// A sparse 1 GiB file, so that read gets past its one-block check.
	sparse := filepath.Join(t.TempDir(), "sparse.dat")
	require.NoError(t, os.WriteFile(sparse, nil, 0o644))
	require.NoError(t, os.Truncate(sparse, 1<<30))
	for _, op := range []string{"cancel", "read"} {
		var errb bytes.Buffer
		args := []string{"--op", op, "--qd", "4096", "--size", "1G", "--duration", "100ms", "--backend", "poll"}
		if op == "read" {
			args = append(args, "--file", sparse)
		}
		cmd := exec.Command("sh", append([]string{"-c", `ulimit -v 4000000 && exec "$@"`, "sh", bin}, args...)...)
		cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
		cmd.Stderr = &errb
		require.NoError(t, cmd.Start())
		st, ok := adv16Wait(t, cmd, 60*time.Second)
		require.True(t, ok, "--op %s --qd 4096 --size 1G still runs after 60 s", op)
		out := errb.String()
		crashed := false
		for _, bad := range []string{"fatal error", "panic:", "goroutine "} {
			crashed = crashed || strings.Contains(out, bad)
		}
		if !assert.False(t, crashed, "--op %s --qd 4096 --size 1G: iobench crashed (exit %d):\n%.400s", op, st.ExitCode(), out) {
			continue
		}
		assert.Contains(t, []int{exitFail, exitUsage}, st.ExitCode(), "--op %s: %.300s", op, out)
		assert.True(t, strings.HasPrefix(out, "iobench: "), "--op %s: one prefixed message: %.300s", op, out)
	}
}

// TestAdv20SizeBeyondTempFile: without --file, read and write use a
// temporary 64 MiB file, but --size takes up to 1G. A --size larger than
// that file used to fail the run with "--file /tmp/iobench-NNN.dat:
// 67108864 bytes, smaller than one block of ...", blaming --file, which
// the person did not give, naming a temporary file already removed, and
// (for read) only after writing the whole 64 MiB. It is bad usage of
// --size, refused before anything is written.
func TestAdv20SizeBeyondTempFile(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	for _, op := range []string{"write", "read"} {
		args := []string{"--op", op, "--size", "128M", "--qd", "1", "--duration", "100ms", "--backend", "poll"}
		code, stdout, stderr := advRun(t, nil, args...)
		assert.Equal(t, exitUsage, code, "args %q: %s", args, stderr)
		assert.Empty(t, stdout, "args %q", args)
		assert.True(t, strings.HasPrefix(stderr, "iobench: --size 128M: "), "args %q: the message names --size first: %q", args, stderr)
		assert.NotContains(t, stderr, tmp, "args %q: the message names the removed temporary file: %q", args, stderr)
		assert.Empty(t, adv16Names(t, tmp), "args %q: temporary file left", args)
	}
}

// TestAdv20PlotLongName: --plot names a file whose name is long but valid
// (254 bytes, under NAME_MAX 255). iobench writes the plot to a temporary
// file ".NAME.<random>.tmp" beside it (openPlot, iobench_linux.go), whose
// name is longer than NAME_MAX, so the run fails with "file name too
// long" about a name that the file system takes.
func TestAdv20PlotLongName(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, strings.Repeat("p", 250)+".svg")
	f, err := os.Create(plot) // the name is valid
	require.NoError(t, err)
	f.Close()
	require.NoError(t, os.Remove(plot))

	code, _, stderr := advRun(t, nil, "--op", "nop", "--qd", "1", "--duration", "100ms", "--backend", "poll", "--plot", plot)
	assert.Equal(t, exitOK, code, "--plot with a 254-byte name: %s", stderr)
	_, err = os.Stat(plot)
	assert.NoError(t, err, "the plot was not written")
	assert.LessOrEqual(t, len(adv16Names(t, dir)), 1, "temporary file left")
}
