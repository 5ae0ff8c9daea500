package minidrv_test

// Bugs of the driver that adversarial use found, fixed since: each test
// failed before its fix, and its comment says what broke and where (the
// line numbers are of the code before the fix).

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
)

// TestAdvEndedContextStartsScan: AcquireItemData with a context that
// has already ended sends the start command to the device (a scan job
// starts, and then has to be aborted and flushed by the recovery), in a
// good share of calls. The contract says "A context that has already
// ended starts nothing" (docs/contract.md, "Contexts follow one rule"),
// and minidrv keeps the contract as an ioring request does. Cause:
// AcquireItemData never looks at ctx.Err() before it starts; lockIO's
// fast path takes ioSem without looking at ctx (driver.go:271), and the
// context is watched only through context.AfterFunc (acquire.go:164),
// which runs the cancel in a goroutine of its own: the acquiring
// goroutine races it through prepare into startJob (acquire.go:175, run)
// and usually wins. Expected: ErrCanceled and no command to the device.
func TestAdvEndedContextStartsScan(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	bg := context.Background()
	require.NoError(t, r.d.Lock(bg))
	r.small(64, 64, 512)
	ended, cancel := context.WithCancel(bg)
	cancel()
	started := 0
	const tries = 100
	for range tries {
		// Unlock and Lock: the Lock waits for the device's recovery
		// from the previous try, so each try finds it clean.
		require.NoError(t, r.d.Unlock())
		require.NoError(t, r.d.Lock(bg))
		before := r.sc.LastScan()
		s, err := r.acquire(ended, nil)
		if err == nil || !errors.Is(err, minidrv.ErrCanceled) {
			t.Fatalf("AcquireItemData(ended ctx): %v, want ErrCanceled", err)
		}
		require.Zero(t, s.Len())
		if r.sc.LastScan() != before {
			started++
		}
	}
	if started > 0 {
		t.Errorf("AcquireItemData with an ended context started a scan on the device in %d of %d calls, want none", started, tries)
	}
}

// TestAdvLockEndedContext: Lock with a context that has already ended
// takes nothing, even on an idle device: ErrBusy wrapping the context's
// error, and the driver stays Idle (it took the lock before).
func TestAdvLockEndedContext(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	err := r.d.Lock(ended)
	require.ErrorIs(t, err, minidrv.ErrBusy)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, minidrv.Idle, r.d.State())
	require.NoError(t, r.d.Lock(context.Background()))
	require.NoError(t, r.d.Unlock())
}
