package usb_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
)

// advBlockingRunner runs each transfer until its cancel: Run arms OnCancel
// with a stop that calls hook (if set) and then ends the Run. Its armed
// counts the Runs that armed it.
func advBlockingRunner(hook func(t *Transfer)) *advRunner {
	r := &advRunner{}
	r.run = func(t *Transfer) (int, error) {
		done := make(chan struct{})
		var once atomic.Bool
		if !t.OnCancel(func() {
			if !once.CompareAndSwap(false, true) {
				return
			}
			defer close(done)
			if hook != nil {
				hook(t)
			}
		}) {
			return 0, ErrCanceled
		}
		r.armed.Add(1)
		<-done
		return 0, ErrCanceled
	}
	return r
}

// TestAdvHookReenters: a Runner's interruption that calls back into the
// Device (CancelAll, a new Submit, Request.Cancel of its own and of other
// transfers) and one that panics: every transfer completes exactly once,
// nothing deadlocks, and Close drains.
func TestAdvHookReenters(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 32)
	var d *Device
	var reqs [2]atomic.Value
	var resubmitted atomic.Int32
	var panics atomic.Int32
	r := advBlockingRunner(func(tr *Transfer) {
		var pe *ioring.HookPanicError
		if err := d.CancelAll(); err != nil && !errors.Is(err, ErrClosed) && !errors.As(err, &pe) {
			t.Errorf("CancelAll from a hook: %v", err)
		}
		for i := range reqs {
			if q, ok := reqs[i].Load().(ioring.Request); ok {
				err := q.Cancel()
				assert.True(t, err == nil || errors.Is(err, ioring.ErrNotFound), "cancel from a hook: %v", err)
			}
		}
		if tr.Endpoint().Address == advIn.Address && resubmitted.Add(1) == 1 {
			e, err := d.Endpoint(advIn2.Address)
			if assert.NoError(t, err) {
				_, err = e.Submit(make([]byte, 4), Xfer{User: "from hook"})
				assert.NoError(t, err)
			}
		}
		if tr.Endpoint().Address == advIn2.Address && panics.Add(1) == 1 {
			panic("hook panics")
		}
	})
	eps := []EndpointDesc{advIn, advIn2}
	d = NewDevice(DeviceDesc{Endpoints: eps}, NewPump(ring, eps, r))
	e1, err := d.Endpoint(advIn.Address)
	require.NoError(t, err)
	e2, err := d.Endpoint(advIn2.Address)
	require.NoError(t, err)
	q1, err := e1.Submit(make([]byte, 4), Xfer{User: "1"})
	require.NoError(t, err)
	reqs[0].Store(q1)
	q2, err := e2.Submit(make([]byte, 4), Xfer{User: "2"})
	require.NoError(t, err)
	reqs[1].Store(q2)
	_, err = e1.Submit(make([]byte, 4), Xfer{User: "1 queued"})
	require.NoError(t, err)
	// Both transfers wait in their Runs, their interruptions armed: the
	// cancel below goes through the hooks.
	require.Eventually(t, func() bool { return r.armed.Load() == 2 }, Patience, time.Millisecond)
	err = q1.Cancel()
	if err != nil {
		var pe *ioring.HookPanicError
		assert.ErrorAs(t, err, &pe)
	}
	seen := map[any]int{}
	for _, c := range Reap(t, ring, 3) {
		seen[c.User]++
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	// The transfer the hook submitted runs (its endpoint's transfer was
	// canceled before it was queued), until Close cancels it.
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			var pe *ioring.HookPanicError
			assert.ErrorAs(t, err, &pe)
		}
	case <-time.After(Patience):
		t.Fatal("Close hangs")
	}
	for _, c := range Reap(t, ring, 1) {
		seen[c.User]++
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
	}
	AssertNoMore(t, ring)
	for _, u := range []any{"1", "2", "1 queued", "from hook"} {
		assert.Equal(t, 1, seen[u], "completions of %v", u)
	}
	AssertSettled(t, ring)
}

var advIn2 = EndpointDesc{Address: 0x83, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}

// TestAdvPumpRunnerMisuse: a Runner whose Run calls Transfer.Do with bad
// ops, or on a transfer canceled already, gets clear errors; the pump
// goes on.
func TestAdvPumpRunnerMisuse(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	var step atomic.Int32
	r := &advRunner{run: func(t *Transfer) (int, error) {
		switch step.Add(1) {
		case 1:
			_, err := t.Do(ioring.Op{})
			return 0, err
		case 2:
			_, err := t.Do(ioring.Read(-1, t.Buf(), -1))
			return 0, err
		}
		c, err := t.Do(ioring.Timeout(time.Millisecond))
		if err != nil {
			return 0, err
		}
		return 0, c.Err
	}}
	p := NewPump(ring, []EndpointDesc{advIn}, r)
	defer func() { assert.NoError(t, p.Close()) }()
	ctx, cancel := testContext()
	defer cancel()
	for i := range 3 {
		q, err := p.Submit(advIn, make([]byte, 8), Xfer{}, true)
		require.NoError(t, err)
		c, err := q.Wait(ctx)
		require.NoError(t, err)
		if i < 2 {
			assert.ErrorIs(t, c.Err, ioring.ErrInvalid, "step %d", i+1)
		} else {
			assert.NoError(t, c.Err)
		}
	}
	var zero Transfer
	_, err := zero.Do(ioring.Nop())
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	assert.False(t, zero.OnCancel(func() {}))
	var nilT *Transfer
	_, err = nilT.Do(ioring.Nop())
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	assert.Nil(t, nilT.Buf())
}
