//go:build linux

package main

// Adversarial round 16 on the built iobench binary: SIGTERM and SIGHUP
// (kill, timeout(1), systemd, a closing terminal) during a run, and a
// --file that is a FIFO. The help promises the temporary 64 MiB file is
// "removed at exit"; wiascan and scand treat SIGTERM and SIGHUP as
// Ctrl-C, so a run ended by them must leave no temporary file (data or
// plot) and say it was interrupted.

import (
	"bytes"
	"errors"
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
	"golang.org/x/sys/unix"
)

var (
	adv16BinOnce sync.Once
	adv16BinPath string
	adv16BinErr  error
)

// adv16Binary builds iobench once for the tests that run it as a process.
func adv16Binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	adv16BinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "adv16-iobench-bin")
		if err != nil {
			adv16BinErr = err
			return
		}
		adv16BinPath = filepath.Join(dir, "iobench")
		out, err := exec.Command("go", "build", "-o", adv16BinPath, ".").CombinedOutput()
		if err != nil {
			adv16BinErr = errors.New(string(out))
		}
	})
	if adv16BinErr != nil {
		t.Skipf("cannot build iobench: %v", adv16BinErr)
	}
	return adv16BinPath
}

// adv16Wait waits for cmd, at most limit; it kills a cmd still running
// then and reports it.
func adv16Wait(t *testing.T, cmd *exec.Cmd, limit time.Duration) (*os.ProcessState, bool) {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
		return cmd.ProcessState, true
	case <-time.After(limit):
		_ = cmd.Process.Kill()
		<-done
		return cmd.ProcessState, false
	}
}

// adv16Names lists dir's entries.
func adv16Names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestAdv16SignalRemovesTemp: a read run on the default temporary file,
// with --plot, ended by SIGTERM or SIGHUP once the temporary file exists:
// iobench must exit by itself (not die of the signal) with the
// interrupted status, and leave neither the temporary data file in
// TMPDIR nor a temporary plot file.
func TestAdv16SignalRemovesTemp(t *testing.T) {
	bin := adv16Binary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP} {
		tmp, dir := t.TempDir(), t.TempDir()
		var errb bytes.Buffer
		cmd := exec.Command(bin, "--op", "read", "--duration", "10m", "--backend", "poll", "--plot", filepath.Join(dir, "p.svg"))
		cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
		cmd.Stderr = &errb
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool { return len(adv16Names(t, tmp)) > 0 }, 20*time.Second, 5*time.Millisecond, "%v: no temporary file", sig)
		time.Sleep(300 * time.Millisecond) // the run is under way
		require.NoError(t, cmd.Process.Signal(sig))
		st, ok := adv16Wait(t, cmd, 30*time.Second)
		require.True(t, ok, "%v: iobench still runs 30 s after the signal", sig)
		ws := st.Sys().(syscall.WaitStatus)
		assert.False(t, ws.Signaled(), "%v: iobench died of the signal (status %v): %s", sig, st, errb.String())
		if !ws.Signaled() {
			assert.Equal(t, exitInterrupted, st.ExitCode(), "%v: %s", sig, errb.String())
		}
		assert.Empty(t, adv16Names(t, tmp), "%v left the temporary data file in TMPDIR", sig)
		for _, n := range adv16Names(t, dir) {
			assert.False(t, strings.HasSuffix(n, ".tmp"), "%v left a temporary plot file %s", sig, n)
		}
	}
}

// TestAdv16FileFIFO: --file naming a FIFO (no writer for a read run, no
// reader for a write run) is not a regular file: iobench must say so and
// fail (1) at once, as for a directory or /dev/null, not block for ever in
// its open.
func TestAdv16FileFIFO(t *testing.T) {
	bin := adv16Binary(t)
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	for _, op := range []string{"read", "write"} {
		var errb bytes.Buffer
		cmd := exec.Command(bin, "--op", op, "--file", fifo, "--duration", "100ms", "--backend", "poll")
		cmd.Stderr = &errb
		require.NoError(t, cmd.Start())
		st, ok := adv16Wait(t, cmd, 5*time.Second)
		if !assert.True(t, ok, "--op %s --file FIFO: iobench blocks (killed after 5 s)", op) {
			continue
		}
		assert.Equal(t, exitFail, st.ExitCode(), "--op %s: %s", op, errb.String())
		assert.Contains(t, errb.String(), "not a regular file", "--op %s", op)
	}
}
