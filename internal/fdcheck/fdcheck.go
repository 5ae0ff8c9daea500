// Package fdcheck finds the file descriptors a test leaves open.
//
// It compares two snapshots of the process's open fds by what each one
// names (its /proc/self/fd link: a path, "pipe:[ino]",
// "anon_inode:[io_uring]"), not by their number. A count alone fails a
// test that ends with fewer fds than it began with, which happens when an
// fd an earlier test left behind closes meanwhile: a blocking *os.File
// closed while a system call still held it is closed only when that call
// returns, and one dropped unclosed is closed by its finalizer at some
// garbage collection. With the targets, only what the test itself opened
// and left open counts.
//
// Use Check at the start of a test, or Take and Verify (or Opened) around
// the part to check:
//
//	before, err := fdcheck.Take()
//	...
//	left, err := fdcheck.Opened(before)
//
// The Go runtime opens its netpoller's fds once for the process, at the
// first timer or pollable file: go test's -timeout alarm opens them before
// any test, but under -timeout 0 (or a test binary run without
// -test.timeout) the first test to open a pipe or a socket would find
// them among its fds. Take opens them first, with a pipe it closes.
//
// It needs /proc/self/fd (Linux); elsewhere Take returns an error.
package fdcheck

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// Set is a snapshot of the process's open fds: how many are open on each
// target.
type Set map[string]int

const fdDir = "/proc/self/fd"

// netpollOnce opens the netpoller's fds (see the package doc).
var netpollOnce sync.Once

// Take returns a snapshot of the process's open fds.
func Take() (Set, error) {
	netpollOnce.Do(func() {
		if r, w, err := os.Pipe(); err == nil {
			r.Close()
			w.Close()
		}
	})
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	s := make(Set, len(ents))
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // closed since the listing: the listing's own fd, for one
		}
		if err != nil {
			return nil, err
		}
		s[target]++
	}
	return s, nil
}

// Opened returns the fds open now beyond those of before, as their
// targets (one entry per fd, sorted): what was opened since before and is
// still open.
func Opened(before Set) ([]string, error) {
	now, err := Take()
	if err != nil {
		return nil, err
	}
	return before.Diff(now), nil
}

// Diff returns the fds of now beyond those of s, as their targets (one
// entry per fd, sorted).
func (s Set) Diff(now Set) []string {
	var extra []string
	for target, n := range now {
		for range n - s[target] {
			extra = append(extra, target)
		}
	}
	slices.Sort(extra)
	return extra
}

// Check takes a snapshot now and registers a cleanup that fails tb when
// fds opened since are still open (Verify). Call it before anything that
// registers other cleanups (they run first, last in first out), so that
// the check runs once they have closed what they own.
func Check(tb testing.TB) {
	tb.Helper()
	before, err := Take()
	if err != nil {
		tb.Fatalf("fdcheck: %v", err)
	}
	tb.Cleanup(func() { Verify(tb, before, "opened by the test") })
}

// Verify fails tb when fds opened since before are still open; what says
// which fds those are, for the message.
func Verify(tb testing.TB, before Set, what string) {
	tb.Helper()
	left, err := Opened(before)
	switch {
	case err != nil:
		tb.Errorf("fdcheck: %v", err)
	case len(left) > 0:
		tb.Errorf("fdcheck: %d fds %s are still open: %q", len(left), what, left)
	}
}
