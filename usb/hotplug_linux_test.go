package usb

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/ioring"
)

// TestHotplugCancel: a pending Next is a ring read that a context, a
// deadline or Close ends at once; nothing leaks. (Events themselves need a
// USB stack: TestGadgetHotplug in the usbvm guest.)
func TestHotplugCancel(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 8)
	_, err := WatchHotplug(nil, HotplugFilter{})
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	// Only a VID no device has: no event can end the waits below.
	h, err := WatchHotplug(r, HotplugFilter{VendorID: 0xfff0, ProductID: 0xfff0})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.Next(ctx)
		done <- err
	}()
	require.Eventually(t, func() bool { return r.InFlight() == 1 }, Patience, time.Millisecond, "the read is in flight")
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrCanceled)
		assert.NotErrorIs(t, err, ErrTimeout)
	case <-time.After(Patience):
		t.Fatal("Next did not return after its context ended")
	}

	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = h.Next(ctx)
	assert.ErrorIs(t, err, ErrTimeout, "a deadline")

	go func() {
		_, err := h.Next(context.Background())
		done <- err
	}()
	require.Eventually(t, func() bool { return r.InFlight() == 1 }, Patience, time.Millisecond, "the read is in flight")
	require.NoError(t, h.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrClosed)
	case <-time.After(Patience):
		t.Fatal("Next did not return after Close")
	}
	AssertSettled(t, r)
	_, err = h.Next(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, h.Close(), ErrClosed)
	for e, err := range h.Events(context.Background()) {
		assert.ErrorIs(t, err, ErrClosed, "Events after Close")
		assert.Zero(t, e)
	}
}

// A Hotplug that WatchHotplug did not make is refused; its Close leaves
// fd 0, its zero fd, alone.
func TestHotplugZero(t *testing.T) {
	for name, h := range map[string]*Hotplug{"nil": nil, "zero": new(Hotplug)} {
		_, err := h.Next(context.Background())
		assert.ErrorIs(t, err, ioring.ErrInvalid, name)
		assert.ErrorIs(t, h.Close(), ioring.ErrInvalid, name)
	}
	_, err := unix.FcntlInt(0, unix.F_GETFD, 0)
	assert.NoError(t, err, "fd 0 is still open")
}
