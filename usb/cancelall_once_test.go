package usb_test

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestCancelAllOnce checks, on every backend of the conformance suite,
// that Device.CancelAll is a cancel of the ring's (contract rule 1: the
// first cancel of a request is the one that counts): each pending IN
// transfer, bulk or interrupt, completes exactly once with ErrCanceled,
// and a cancel made after CancelAll, before or after that completion,
// finds nothing left (Request.Cancel says ioring.ErrNotFound,
// ioring.Ring.Cancel counts none) and does not change the cause the
// completion reports.
func TestCancelAllOnce(t *testing.T) {
	for _, b := range confBackends {
		t.Run("backend="+b.name, func(t *testing.T) {
			if b.need != nil {
				b.need(t)
			}
			cd := b.open(t, usbsim.Config{MaxTransfer: 16 << 10})
			t.Run("RequestCancel", func(t *testing.T) { cancelAllThenRequestCancel(t, cd) })
			t.Run("RingCancel", func(t *testing.T) { cancelAllThenRingCancel(t, cd) })
			t.Run("Context", func(t *testing.T) { cancelAllThenContext(t, cd) })
			t.Run("Concurrent", func(t *testing.T) { cancelAllConcurrent(t, cd) })
			cd.echo(t, []byte("after CancelAll"))
		})
	}
}

// submitPendingIns submits two bulk IN transfers and an interrupt IN
// transfer (users 0, 1, 2) that the scanner leaves pending, and waits
// until they are.
func submitPendingIns(t *testing.T, cd *confDev) []ioring.Request {
	t.Helper()
	var qs []ioring.Request
	for i := range 2 {
		q, err := cd.in.Submit(cd.inBuf(), Xfer{User: i})
		require.NoError(t, err)
		qs = append(qs, q)
	}
	q, err := cd.intr.Submit(make([]byte, usbsim.InterruptMaxPacketSize), Xfer{User: 2})
	require.NoError(t, err)
	qs = append(qs, q)
	settle(t, cd.r, len(qs))
	return qs
}

// reapCanceledOnce reaps the completions of qs and checks that each
// transfer completed exactly once, with ErrCanceled from CancelAll (no
// timeout, no context's error) and no bytes.
func reapCanceledOnce(t *testing.T, cd *confDev, qs []ioring.Request) {
	t.Helper()
	seen := map[any]int{}
	for _, c := range Reap(t, cd.r, len(qs)) {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		assert.NotErrorIs(t, c.Err, ErrTimeout, "transfer %v", c.User)
		assert.NotErrorIs(t, c.Err, context.Canceled, "transfer %v", c.User)
		assert.Zero(t, c.N, "transfer %v", c.User)
		seen[c.User]++
	}
	AssertNoMore(t, cd.r)
	for i := range qs {
		assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
		assert.ErrorIs(t, qs[i].Cancel(), ioring.ErrNotFound, "cancel of transfer %d after its completion", i)
	}
}

// cancelAllThenRequestCancel: Request.Cancel right after CancelAll, before
// the completions are reaped, says ErrNotFound for every transfer.
func cancelAllThenRequestCancel(t *testing.T, cd *confDev) {
	qs := submitPendingIns(t, cd)
	require.NoError(t, cd.d.CancelAll())
	for i, q := range qs {
		assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "cancel of transfer %d after CancelAll", i)
	}
	reapCanceledOnce(t, cd, qs)
}

// cancelAllThenRingCancel: Ring.Cancel right after CancelAll counts none
// of the transfers, each given twice.
func cancelAllThenRingCancel(t *testing.T, cd *confDev) {
	qs := submitPendingIns(t, cd)
	require.NoError(t, cd.d.CancelAll())
	n, err := cd.r.Cancel(append(qs, qs...)...)
	require.NoError(t, err)
	assert.Zero(t, n, "transfers Ring.Cancel found to cancel after CancelAll")
	reapCanceledOnce(t, cd, qs)
}

// cancelAllThenContext: a started transfer canceled by CancelAll and then
// waited for under a context that has ended completes with ErrCanceled
// alone: the context's cancel came second and does not count.
func cancelAllThenContext(t *testing.T, cd *confDev) {
	q, err := cd.in.Start(cd.inBuf(), Xfer{User: "started"})
	require.NoError(t, err)
	settle(t, cd.r, 1)
	require.NoError(t, cd.d.CancelAll())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.False(t, errors.Is(c.Err, context.Canceled), "the context's cancel came after CancelAll's, yet the completion reports it: %v", c.Err)
	assert.Equal(t, "started", c.User)
	assert.Zero(t, c.N)
	assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "cancel after the completion")
	AssertNoMore(t, cd.r)
}

// cancelAllConcurrent: CancelAll racing with submissions (it may miss a
// transfer the ring has accepted and Submit has not recorded or queued
// yet, which Submit then cancels through the ring: usbfs and Pump alike):
// every transfer completes exactly once with ErrCanceled, and none is left
// to cancel.
func cancelAllConcurrent(t *testing.T, cd *confDev) {
	const n = 16
	qs := make([]ioring.Request, n)
	errs := make([]error, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			qs[i], errs[i] = cd.in.Submit(make([]byte, 512), Xfer{User: i})
			runtime.Gosched()
		}
	}()
	for submitting := true; submitting; {
		select {
		case <-done:
			submitting = false // one more CancelAll, after the last Submit
		default:
		}
		require.NoError(t, cd.d.CancelAll())
	}
	for i, err := range errs {
		require.NoError(t, err, "submit %d", i)
	}
	reapCanceledOnce(t, cd, qs)
}
