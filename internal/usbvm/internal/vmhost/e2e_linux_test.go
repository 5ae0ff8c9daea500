package vmhost

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

const helperEnv = "CANCELIO_USBVM_TEST_HELPER"

// TestGuestHelper is the program the end-to-end tests run in the guest (this
// very test binary): it passes, fails, hangs or crashes the kernel.
func TestGuestHelper(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" || os.Getenv(proto.GuestEnv) != "1" {
		t.Skip("runs only in a usbvm guest, started by TestExec")
	}
	t.Logf("helper: %s in %s", mode, must(os.Getwd()))
	switch mode {
	case "pass":
	case "fail":
		t.Fatal("helper: failing on purpose")
	case "hang":
		time.Sleep(time.Hour)
	case "panic":
		require.NoError(t, os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0))
		time.Sleep(time.Minute)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var (
	buildOnce sync.Once
	execPath  string
	buildErr  error
)

// usbvmExec builds cmd/usbvm-exec, statically, once per test process.
func usbvmExec(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "usbvm-exec-test-")
		if err != nil {
			buildErr = err
			return
		}
		atExit = append(atExit, func() { os.RemoveAll(dir) })
		execPath = filepath.Join(dir, "usbvm-exec")
		cmd := exec.Command("go", "build", "-o", execPath, "github.com/cancelio/cancelio/internal/usbvm/cmd/usbvm-exec")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New(string(out))
		}
	})
	require.NoError(t, buildErr, "build usbvm-exec")
	return execPath
}

// TestExec runs this test binary in the guest through usbvm-exec, as go test
// -exec does, and checks that each outcome reaches the caller: exit status 0
// for a pass, nonzero for a failure, a test timeout and a kernel panic, each
// failure with the guest console shown. About 5 s of TCG boot per case, two
// at a time.
func TestExec(t *testing.T) {
	if testing.Short() {
		t.Skip("boots QEMU guests (about 15 s); skipped with -short")
	}
	if os.Getenv(proto.GuestEnv) == "1" {
		t.Skip("already in a usbvm guest")
	}
	root, err := CacheRoot()
	require.NoError(t, err)
	if _, err := LoadKernel(root); err != nil {
		t.Skipf("%v", err)
	}
	if _, err := exec.LookPath(QEMUBinary); err != nil && os.Getenv(EnvQEMU) == "" {
		t.Skipf("%s not installed (Debian package %s)", QEMUBinary, QEMUPackage)
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build usbvm-exec")
	}
	runner := usbvmExec(t) // built once per process (-count runs TestExec again)
	self, err := os.Executable()
	require.NoError(t, err)

	for _, c := range []struct {
		mode    string
		env     []string
		args    []string
		status  int    // wanted exit status
		stdout  string // wanted in stdout
		console string // wanted in stderr (the console is shown on failure)
	}{
		{mode: "pass", status: 0, stdout: "--- PASS: TestGuestHelper"},
		{mode: "fail", status: 1, stdout: "helper: failing on purpose", console: proto.MarkerStatus + "1"},
		{mode: "hang", args: []string{"-test.timeout=3s"}, status: 2, stdout: "panic: test timed out after 3s", console: proto.MarkerStatus + "2"},
		{mode: "panic", status: 1, stdout: "helper: panic", console: "Kernel panic"},
		{mode: "boot-watchdog", env: []string{EnvBootTimeout + "=1ms"}, status: 1, console: "the guest did not boot in time, not the program: running"}, // then the second one fails
	} {
		t.Run(c.mode, func(t *testing.T) {
			t.Parallel()
			args := append([]string{self, "-test.run=^TestGuestHelper$", "-test.v"}, c.args...)
			cmd := exec.Command(runner, args...)
			cmd.Env = append(os.Environ(), helperEnv+"="+c.mode)
			cmd.Env = append(cmd.Env, c.env...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			err := cmd.Run()
			status := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				status = ee.ExitCode()
			} else {
				require.NoError(t, err)
			}
			t.Logf("%s: status %d in %v", c.mode, status, time.Since(start).Round(time.Millisecond))
			assert.Equal(t, c.status, status, "exit status\nstdout:\n%s\nstderr:\n%s", &stdout, &stderr)
			assert.Contains(t, stdout.String(), c.stdout)
			assert.NotContains(t, stdout.String(), "\r\n", "the output port is raw")
			if c.console != "" {
				assert.Contains(t, stderr.String(), "--- usbvm guest console")
				assert.Contains(t, stderr.String(), c.console)
			} else {
				assert.Empty(t, stderr.String())
			}
		})
	}
}
