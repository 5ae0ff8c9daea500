//go:build linux

package fdcheck

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// warmNetpoll has the runtime open its netpoller's fds, once for the
// process, before a test takes its snapshot: otherwise the first pollable
// file a test opens brings them in (go test's -timeout alarm opens them
// first, -timeout 0 does not).
func warmNetpoll(t *testing.T) {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.NoError(t, w.Close())
}

func TestOpenedFindsWhatStaysOpen(t *testing.T) {
	warmNetpoll(t)
	before, err := Take()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	f, err := os.Open(os.DevNull)
	require.NoError(t, err)

	left, err := Opened(before)
	require.NoError(t, err)
	assert.Len(t, left, 3, "two pipe ends and %s: %q", os.DevNull, left)
	assert.Contains(t, left, os.DevNull)

	require.NoError(t, r.Close())
	require.NoError(t, f.Close())
	left, err = Opened(before)
	require.NoError(t, err)
	require.Len(t, left, 1, "the pipe's write end: %q", left)
	assert.Regexp(t, `^pipe:\[\d+\]$`, left[0])

	require.NoError(t, w.Close())
	left, err = Opened(before)
	require.NoError(t, err)
	assert.Empty(t, left)
}

// An fd open before and closed since does not hide one opened since: the
// count is the same, the targets are not.
func TestOpenedIsNotACount(t *testing.T) {
	warmNetpoll(t)
	old, err := os.Open(os.DevNull)
	require.NoError(t, err)
	before, err := Take()
	require.NoError(t, err)
	require.NoError(t, old.Close())
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()

	left, err := Opened(before)
	require.NoError(t, err)
	assert.Len(t, left, 2, "the pipe's ends, though one fd fewer than two more: %q", left)

	require.NoError(t, r.Close())
	require.NoError(t, w.Close())
	left, err = Opened(before)
	require.NoError(t, err)
	assert.Empty(t, left, "fewer fds than before is no leak")
}

func TestDiffCountsEachFD(t *testing.T) {
	s := Set{"a": 1, "b": 2}
	assert.Equal(t, []string{"a", "c", "c"}, s.Diff(Set{"a": 2, "b": 1, "c": 2}))
	assert.Empty(t, s.Diff(Set{}))
}

// Check fails a test that leaves an fd open, and passes one that does not.
func TestCheck(t *testing.T) {
	warmNetpoll(t)
	var leaked *os.File
	leaky := &recorder{T: t}
	func() {
		defer leaky.runCleanups()
		Check(leaky)
		var err error
		leaked, err = os.Open(os.DevNull)
		require.NoError(t, err)
	}()
	assert.True(t, leaky.failed, "a test that leaves an fd open fails")
	require.NoError(t, leaked.Close())

	clean := &recorder{T: t}
	func() {
		defer clean.runCleanups()
		Check(clean)
		f, err := os.Open(os.DevNull)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}()
	assert.False(t, clean.failed, "a test that closes what it opened passes")
}

// recorder is a testing.TB whose failures and cleanups are its own.
type recorder struct {
	*testing.T
	failed   bool
	cleanups []func()
}

func (r *recorder) Errorf(string, ...any) { r.failed = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func (r *recorder) Helper()               {}
func (r *recorder) Cleanup(f func())      { r.cleanups = append(r.cleanups, f) }
func (r *recorder) runCleanups() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}
