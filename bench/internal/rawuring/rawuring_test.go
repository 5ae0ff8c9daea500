//go:build linux

package rawuring

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// setup makes a ring as cfg says, locking the test's goroutine to its
// thread for thread-bound setups, or skips where io_uring is unavailable.
func setup(t *testing.T, cfg Config) *Ring {
	t.Helper()
	if cfg.Flags&SetupSingleIssuer != 0 || cfg.RegisterRingFD {
		runtime.LockOSThread()
		t.Cleanup(runtime.UnlockOSThread)
	}
	r, err := Setup(cfg)
	if err != nil {
		t.Skipf("io_uring here: %v", err)
	}
	return r
}

var configs = map[string]Config{
	"plain":  {Entries: 8, Flags: SetupSubmitAll},
	"locked": {Entries: 8, Flags: SetupSingleIssuer | SetupDeferTaskrun, RegisterRingFD: true},
}

// TestNopAndRead submits NOPs and a read and reads their CQEs in place.
func TestNopAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) {
			r := setup(t, cfg)
			if r.RegisteredFD() != cfg.RegisterRingFD {
				t.Errorf("RegisteredFD %v, want %v", r.RegisteredFD(), cfg.RegisterRingFD)
			}
			for i := range 8 {
				sqe := r.NextSQE()
				sqe.FD, sqe.UserData = -1, uint64(i)
			}
			if r.NextSQE() != nil {
				t.Fatal("a ninth SQE from an SQ of 8")
			}
			if n, err := r.Enter(8); err != nil || n != 8 {
				t.Fatalf("Enter: %d, %v", n, err)
			}
			if got := r.Ready(); got != 8 {
				t.Fatalf("%d CQEs ready, want 8", got)
			}
			for i := range uint32(8) {
				if c := r.CQEAt(i); c.UserData != uint64(i) || c.Res != 0 {
					t.Errorf("CQE %d: %+v", i, *c)
				}
			}
			r.Advance(8)
			buf := make([]byte, 4)
			PrepRead(r.NextSQE(), int(f.Fd()), buf, 3)
			if _, err := r.Enter(1); err != nil {
				t.Fatal(err)
			}
			if r.Ready() != 1 || r.CQEAt(0).Res != 4 || string(buf) != "3456" {
				t.Fatalf("read: %d ready, res %d, %q", r.Ready(), r.CQEAt(0).Res, buf)
			}
			r.Advance(1)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestCloseUnregistersRingFD makes more rings in a row on one thread than
// the thread's table of registered ring fds holds (16).
func TestCloseUnregistersRingFD(t *testing.T) {
	for i := range 40 {
		r := setup(t, configs["locked"])
		if err := r.Close(); err != nil {
			t.Fatalf("ring %d: %v", i, err)
		}
	}
}
