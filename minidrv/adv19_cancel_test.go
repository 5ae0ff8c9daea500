package minidrv_test

// Adversarial pass 19: CancelPendingIO's promises at the edges of an
// acquisition, and its cost.

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/minidrv"
)

// adv19HookSink is a sink that calls hook before each Write, with the
// number of bytes written before it and the size of this write.
type adv19HookSink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	hook func(before, n int)
}

func (s *adv19HookSink) Write(b []byte) (int, error) {
	s.mu.Lock()
	before := s.buf.Len()
	s.mu.Unlock()
	if s.hook != nil {
		s.hook(before, len(b))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(b)
}

// TestAdv19CancelInLastSinkWrite: CancelPendingIO called from the sink
// while it is given the image's last chunk. CancelPendingIO's doc: it
// returns once every I/O has completed, "the driver is Locked again, and
// the acquisition returns ErrCanceled (at once, or when its progress
// callback or sink write in progress returns)"; AcquireItemData's: only "a
// cancel that comes after the last chunk was written loses the race". A
// cancel made inside the last Write comes before that chunk was written,
// so the acquisition must return ErrCanceled, as it does for the same
// cancel inside any earlier chunk's Write (checked too).
func TestAdv19CancelInLastSinkWrite(t *testing.T) {
	r := newRig(t, minidrv.Config{QueueDepth: 4})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	p := r.small(64, 64, 512) // 4096 bytes in 8 chunks of 512
	chunk := minidrv.ChunkSize(p)
	total := int(p.ImageSize())
	require.Equal(t, 0, total%chunk)
	for _, last := range []bool{false, true} {
		var cancelErr error
		var stateAfter minidrv.State
		called := false
		s := &adv19HookSink{hook: func(before, n int) {
			isLast := before+n == total
			if called || isLast != last || (!last && before != 2*chunk) {
				return
			}
			called = true
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			cancelErr = r.d.CancelPendingIO(cctx)
			stateAfter = r.d.State()
		}}
		err := r.d.AcquireItemData(ctx, r.bed, s, nil)
		require.True(t, called, "last=%v: the sink's hook never ran", last)
		require.NoError(t, cancelErr, "last=%v: CancelPendingIO from the sink", last)
		assert.Equal(t, minidrv.Locked, stateAfter, "last=%v: state when CancelPendingIO returned", last)
		assert.Equal(t, minidrv.Locked, r.d.State(), "last=%v: state after the acquisition", last)
		if !errors.Is(err, minidrv.ErrCanceled) {
			t.Errorf("last=%v: CancelPendingIO returned nil (driver %v) from inside the sink's Write of the "+
				"image's last chunk, yet AcquireItemData returned %v (HRESULT %#x), want ErrCanceled (S_FALSE): "+
				"the cancel came before that chunk was written", last, stateAfter, err, uint32(minidrv.HResult(err)))
		}
		// The next acquisition works and is exact.
		s2, err := r.acquire(ctx, nil)
		require.NoError(t, err, "last=%v: acquisition after the cancel", last)
		r.expectImage(s2)
	}
}

// TestAdv19CancelPendingIONoAllocs: "It does not allocate." With nothing
// pending (Idle, Locked, after a complete acquisition, after a canceled
// one has unwound), with a background context, a nil one, and one with a
// deadline made beforehand.
func TestAdv19CancelPendingIONoAllocs(t *testing.T) {
	r := newRig(t, minidrv.Config{})
	dctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	check := func(where string) {
		t.Helper()
		for _, c := range []struct {
			name string
			ctx  context.Context
		}{{"background", context.Background()}, {"nil", nil}, {"deadline", dctx}} {
			var err error
			n := testing.AllocsPerRun(100, func() { err = r.d.CancelPendingIO(c.ctx) })
			require.NoError(t, err, "%s, %s context", where, c.name)
			if n != 0 {
				t.Errorf("%s, %s context: CancelPendingIO allocates %.1f times per call, want 0", where, c.name, n)
			}
		}
	}
	check("Idle")
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	check("Locked")
	r.small(64, 64, 512)
	s, err := r.acquire(ctx, nil)
	require.NoError(t, err)
	r.expectImage(s)
	check("Locked after a complete acquisition")
	_, err = r.acquire(ctx, func(p minidrv.Progress) bool { return p.Bytes == 0 })
	require.ErrorIs(t, err, minidrv.ErrCanceled)
	check("Locked after a canceled acquisition")
	require.NoError(t, r.d.Unlock())
	check("Idle after Unlock")
}

// TestAdv19LastUninitializeDuringRecovery: an acquisition from a device
// that hangs is canceled (CancelPendingIO returns at once, the recovery
// runs in the background against the hung device), and the last client
// leaves at once, from Locked, while that recovery runs: Uninitialize
// returns nil within seconds, the driver is Unloaded, CancelPendingIO there
// is a no-op, and once the device answers again a new Initialize, Lock
// and acquisition give the exact image.
func TestAdv19LastUninitializeDuringRecovery(t *testing.T) {
	r := newRig(t, minidrv.Config{AbortTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, r.d.Lock(ctx))
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	took, _ := r.cancelHung(cctx)
	assert.Less(t, took, 5*time.Second, "CancelPendingIO on a hung device")
	require.Equal(t, minidrv.Locked, r.d.State())

	done := make(chan error, 1)
	go func() { done <- r.d.Uninitialize() }()
	select {
	case err := <-done:
		require.NoError(t, err, "last Uninitialize while the device recovers")
	case <-time.After(10 * time.Second):
		r.sc.Resume()
		t.Fatal("last Uninitialize during the recovery did not return within 10 s")
	}
	require.Equal(t, minidrv.Unloaded, r.d.State())
	require.NoError(t, r.d.CancelPendingIO(ctx), "CancelPendingIO in Unloaded")
	require.ErrorIs(t, r.d.Lock(ctx), minidrv.ErrNotInitialized)

	r.sc.Resume()
	ictx, icancel := context.WithTimeout(ctx, 10*time.Second)
	defer icancel()
	require.NoError(t, r.d.Initialize(ictx), "Initialize after the device answers again")
	require.NoError(t, r.d.Lock(ictx))
	r.small(80, 40, 512)
	s, err := r.acquire(ictx, nil)
	require.NoError(t, err, "acquisition after Uninitialize during recovery and Initialize")
	r.expectImage(s)
	require.NoError(t, r.d.Unlock())
}
