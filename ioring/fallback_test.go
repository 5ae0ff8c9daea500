//go:build linux

package ioring

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/fdcheck"
	"github.com/cancelio/cancelio/internal/uring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The fallback: where io_uring_setup fails (kernel.io_uring_disabled, a
// seccomp profile, an old kernel) New picks the poll backend and says why;
// forcing io_uring there is an error naming the cause, never a silent
// fallback.

// checkPollWorks runs a pending read, a cancel and a real read on r.
func checkPollWorks(t *testing.T, r *Ring) {
	t.Helper()
	rd, wr := pipe(t)
	q, err := r.Start(Read(rd, make([]byte, 4), -1))
	require.NoError(t, err)
	require.NoError(t, q.Cancel())
	c, err := q.Wait(context.Background())
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)

	_, err = unix.Write(wr, []byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	n, err := r.ReadAt(context.Background(), rd, buf, -1)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf[:n]))
}

// withURingSetupError makes io_uring_setup fail with err for the test.
func withURingSetupError(t *testing.T, err error) {
	saved := uringSetup
	uringSetup = func(sq, cq uint32) (*uring.Ring, error) { return nil, err }
	t.Cleanup(func() { uringSetup = saved })
}

func TestFallbackInProcess(t *testing.T) {
	for _, errno := range []unix.Errno{unix.EPERM, unix.ENOSYS, unix.EACCES, unix.EOPNOTSUPP, unix.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			t.Setenv("CANCELIO_BACKEND", "")
			withURingSetupError(t, errno)
			fdcheck.Check(t)

			r, err := New(Config{Entries: 8})
			require.NoError(t, err, "New falls back instead of failing")
			info := r.Backend()
			assert.Equal(t, BackendPoll, info.Backend)
			assert.Contains(t, info.Reason, "io_uring", "the reason names what is missing")
			assert.Contains(t, info.Reason, errno.Error(), "the reason names the cause")
			checkPollWorks(t, r)
			require.NoError(t, r.Close())

			// Forcing io_uring is an error naming the cause.
			_, err = New(Config{Entries: 8, Backend: BackendURing})
			require.Error(t, err, "forced io_uring where it is unavailable")
			assert.ErrorIs(t, err, errno)
			assert.Contains(t, err.Error(), "io_uring")
			assert.Contains(t, err.Error(), "Config.Backend")
		})
	}
}

func TestFallbackEnvironment(t *testing.T) {
	withURingSetupError(t, unix.EPERM)

	t.Setenv("CANCELIO_BACKEND", "uring")
	_, err := New(Config{Entries: 8})
	require.Error(t, err, "CANCELIO_BACKEND=uring where io_uring is unavailable")
	assert.ErrorIs(t, err, unix.EPERM)
	assert.Contains(t, err.Error(), "CANCELIO_BACKEND")

	t.Setenv("CANCELIO_BACKEND", "poll")
	r, err := New(Config{Entries: 8})
	require.NoError(t, err)
	assert.Equal(t, BackendInfo{BackendPoll, "forced by CANCELIO_BACKEND"}, r.Backend())
	require.NoError(t, r.Close())

	// Config.Backend wins over the environment.
	r, err = New(Config{Entries: 8, Backend: BackendPoll})
	require.NoError(t, err)
	assert.Equal(t, BackendInfo{BackendPoll, "forced by Config.Backend"}, r.Backend())
	require.NoError(t, r.Close())
}

// TestFallbackSeccomp runs itself again in a child process that installs a
// seccomp filter under which io_uring_setup fails with EPERM (as Docker's
// default profile does), and checks there that New falls back to poll and
// says why.
func TestFallbackSeccomp(t *testing.T) {
	if os.Getenv(childEnv) == "seccomp" {
		seccompChild(t)
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFallbackSeccomp$", "-test.v", "-test.count=1")
	env := []string{childEnv + "=seccomp"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CANCELIO_BACKEND=") && !strings.HasPrefix(kv, childEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if strings.Contains(string(out), "SKIP:") {
		t.Skipf("child skipped:\n%s", out)
	}
	require.NoError(t, err, "child process:\n%s", out)
	i := strings.Index(string(out), "seccomp child: poll backend")
	require.GreaterOrEqual(t, i, 0, "child output:\n%s", out)
	line, _, _ := strings.Cut(string(out[i:]), "\n")
	t.Log(line)
}

func seccompChild(t *testing.T) {
	if err := blockIOURingSetup(); err != nil {
		if errors.Is(err, ErrNotSupported) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			t.Skipf("SKIP: cannot install a seccomp filter here: %v", err)
		}
		require.NoError(t, err, "install the seccomp filter")
	}
	// The filter works: io_uring_setup itself says EPERM.
	_, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, 0, 0)
	require.Equal(t, unix.EPERM, e, "io_uring_setup under the filter")

	r, err := New(Config{Entries: 16})
	require.NoError(t, err, "New under seccomp")
	info := r.Backend()
	require.Equal(t, BackendPoll, info.Backend, "reason %q", info.Reason)
	assert.Contains(t, info.Reason, "io_uring_setup")
	assert.Contains(t, info.Reason, unix.EPERM.Error())
	checkPollWorks(t, r)
	require.NoError(t, r.Close())

	_, err = New(Config{Entries: 16, Backend: BackendURing})
	require.Error(t, err, "forced io_uring under seccomp")
	assert.ErrorIs(t, err, unix.EPERM)
	assert.Contains(t, err.Error(), "io_uring_setup")
	if !t.Failed() {
		t.Logf("seccomp child: poll backend (%s)", info.Reason)
	}
}
