package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// advRun runs scand in-process with args (and the tests' abort timeout),
// bounded in time.
func advRun(t *testing.T, sigs chan os.Signal, ready func(string), args ...string) (int, string) {
	t.Helper()
	log := new(syncBuffer)
	done := make(chan int, 1)
	go func() { done <- run(append(withAbortTimeout(nil, args), args...), log, sigs, ready) }()
	select {
	case code := <-done:
		return code, log.String()
	case <-time.After(30 * time.Second):
		if sigs != nil {
			sigs <- syscall.SIGTERM
		}
		t.Fatalf("scand %q still runs after 30 s:\n%s", args, log.String())
	}
	panic("unreachable")
}

func advNoCrash(t *testing.T, what, out string) {
	t.Helper()
	for _, bad := range []string{"panic:", "goroutine ", ".go:"} {
		assert.NotContains(t, out, bad, what)
	}
}

// TestAdvToolsUsageErrors: bad values are usage errors (2), named by flag.
func TestAdvToolsUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--queue-depth", "-1"}, "--queue-depth -1"},
		{[]string{"--queue-depth", "99999"}, "--queue-depth 99999"},
		{[]string{"--queue-depth", "99999999999999999999"}, "-queue-depth"},
		{[]string{"--job-timeout", "0"}, "--job-timeout 0s"},
		{[]string{"--job-timeout", "-1m"}, "--job-timeout -1m0s"},
		{[]string{"--abort-timeout", "-1s"}, "--abort-timeout -1s"},
		{[]string{"--abort-timeout", "x"}, "-abort-timeout"},
		{[]string{"--bandwidth", "1.5k"}, `--bandwidth "1.5k"`},
		{[]string{"--bandwidth", "k"}, `--bandwidth "k"`},
		{[]string{"--bandwidth", "-1"}, `--bandwidth "-1"`},
		{[]string{"--bandwidth", "１k"}, "--bandwidth"},
		{[]string{"--hang-after", "99999999999G"}, "larger than 1024G"},
		{[]string{"--hang-after", "2048G"}, "at most 1024G"},
		{[]string{"--usb", "x:y"}, `--usb "x:y"`},
		{[]string{"--usb", "1209:0001", "--hang-after", "1k"}, "simulated scanner only"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--addr", "127.0.0.1:0", "extra"}, `unexpected argument "extra"`},
	} {
		code, out := advRun(t, nil, nil, tc.args...)
		assert.Equal(t, exitUsage, code, "args %q: %s", tc.args, out)
		assert.Contains(t, out, tc.want, "args %q", tc.args)
		assert.NotContains(t, out, "serving", "args %q: a usage error starts nothing", tc.args)
		advNoCrash(t, strings.Join(tc.args, " "), out)
	}
}

// TestAdvToolsUnknownFlag: an unknown flag is said once. scand prints the
// flag package's message, the whole flag list, then the message again
// with its prefix (fs.SetOutput(stderr) plus run's own line), unlike
// wiascan and iobench (one line and "Run ... -h for usage.").
func TestAdvToolsUnknownFlag(t *testing.T) {
	code, out := advRun(t, nil, nil, "--nope")
	assert.Equal(t, exitUsage, code, out)
	assert.Contains(t, out, "scand: flag provided but not defined: -nope")
	assert.Equal(t, 1, strings.Count(out, "flag provided but not defined"), "the error is said once:\n%s", out)
}

// TestAdvToolsHelp: -h exits 0 and lists every flag.
func TestAdvToolsHelp(t *testing.T) {
	code, out := advRun(t, nil, nil, "-h")
	assert.Equal(t, exitOK, code)
	for _, f := range []string{"-addr", "-usb", "-bandwidth", "-hang-after", "-queue-depth", "-abort-timeout",
		"-job-timeout", "-name", "-sane-config"} {
		assert.Contains(t, out, f)
	}
}

// TestAdvToolsBadAddr: a malformed or unusable --addr fails (1) with the
// reason, promptly, without a stack trace; an address in use says so.
func TestAdvToolsBadAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	for _, tc := range []struct{ addr, want string }{
		{"bad", "missing port"},
		{"127.0.0.1:99999", "invalid port"},
		{":-1", "invalid port"},
		{"", ""}, // "" is :0 for net.Listen; covered below
		{ln.Addr().String(), "address already in use"},
		{"192.0.2.1:0", "assign requested address"}, // TEST-NET: not ours
	} {
		if tc.addr == "" {
			continue
		}
		t0 := time.Now()
		code, out := advRun(t, nil, nil, "--addr", tc.addr)
		assert.Equal(t, exitFailed, code, "--addr %q: %s", tc.addr, out)
		assert.Contains(t, out, tc.want, "--addr %q", tc.addr)
		assert.Contains(t, out, "scand: --addr "+tc.addr+": ", "the error names the flag")
		assert.Less(t, time.Since(t0), 15*time.Second)
		advNoCrash(t, tc.addr, out)
	}
}

// TestAdvToolsSaneConfigUnwritable: a --sane-config that cannot be
// written fails the start (1), names the flag, and stops the server.
func TestAdvToolsSaneConfigUnwritable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	for _, sc := range []string{"/proc/adv-scand", filepath.Join(file, "sub"), file} {
		code, out := advRun(t, nil, nil, "--addr", "127.0.0.1:0", "--sane-config", sc)
		assert.Equal(t, exitFailed, code, "--sane-config %s: %s", sc, out)
		assert.Contains(t, out, "scand: --sane-config: ", "--sane-config %s", sc)
		advNoCrash(t, sc, out)
	}
}

// TestAdvToolsSaneConfigBeforeServing: when --sane-config cannot be
// written scand exits 1, but it has logged "scand: serving ... escl=URL"
// first: a person (or a script waiting for that line) is told it serves,
// then it exits. The configuration could be written (or its directory
// checked) before the "serving" line.
func TestAdvToolsSaneConfigBeforeServing(t *testing.T) {
	code, out := advRun(t, nil, nil, "--addr", "127.0.0.1:0", "--sane-config", "/proc/adv-scand")
	assert.Equal(t, exitFailed, code, out)
	assert.NotContains(t, out, `msg="scand: serving"`, "scand says it serves, then exits:\n%s", out)
}

// TestAdvToolsSignals: SIGTERM or SIGINT at any moment, before it
// listens, at once after, or twice, stops scand with 0 promptly.
func TestAdvToolsSignals(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early bool // signal queued before run starts
		twice bool
		sig   os.Signal
	}{
		{"SIGTERM before listening", true, false, syscall.SIGTERM},
		{"SIGINT before listening", true, false, os.Interrupt},
		{"SIGTERM once serving", false, false, syscall.SIGTERM},
		{"SIGINT twice", false, true, os.Interrupt},
	} {
		sigs := make(chan os.Signal, 1)
		if tc.early {
			sigs <- tc.sig
		}
		ready := func(string) {
			if !tc.early {
				go func() {
					sigs <- tc.sig
					if tc.twice {
						sigs <- tc.sig
					}
				}()
			}
		}
		t0 := time.Now()
		code, out := advRun(t, sigs, ready, "--addr", "127.0.0.1:0")
		assert.Equal(t, exitOK, code, "%s: %s", tc.name, out)
		assert.Less(t, time.Since(t0), 20*time.Second, tc.name)
		assert.Contains(t, out, "scand: stopped", tc.name)
		advNoCrash(t, tc.name, out)
		if tc.twice {
			select { // the second signal lands in the channel, unread
			case <-sigs:
			case <-time.After(5 * time.Second):
			}
		}
	}
}
