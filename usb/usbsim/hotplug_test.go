//go:build linux

package usbsim_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestHotplug: Unplug and Replug are reported in order as usb.Left and
// usb.Arrived events with the scanner's identity; a Left comes once the
// host's transfers fail, an Arrived once the device opens again. A
// watcher that nobody reads drops what does not fit and says so; ctx,
// a deadline and Close end a wait; Close of the scanner is its last
// removal.
func TestHotplug(t *testing.T) {
	s := newScanner(t, usbsim.Config{VendorID: 0x1234, ProductID: 0x5678, Serial: "HP1"})
	old := openHost(t, s) // before the watch: not reported
	h, err := s.WatchHotplug()
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	next := func(kind usb.HotplugKind, addr int) {
		t.Helper()
		e, err := h.Next(ctx)
		require.NoError(t, err)
		assert.Equal(t, usb.HotplugEvent{Kind: kind, Bus: usbsim.SimBus, Address: addr, VendorID: 0x1234, ProductID: 0x5678, Serial: "HP1"}, e)
	}

	// Each plug-in has an address of its own on SimBus, which its events
	// and Open's DeviceDesc carry.
	bus, addr := s.BusAddr()
	assert.Equal(t, usbsim.SimBus, bus)
	require.NoError(t, s.Unplug())
	next(usb.Left, addr)
	bus, gone := s.BusAddr()
	assert.Zero(t, bus+gone, "no place on the bus while unplugged")
	_, err = readIn(old.in.FD, old.buf)
	assert.ErrorIs(t, err, usbsim.ErrNoDevice, "the host's transfers fail before the event")
	require.NoError(t, s.Unplug()) // unplugged already: no event
	require.NoError(t, s.Replug())
	_, addr2 := s.BusAddr()
	assert.NotEqual(t, addr, addr2, "a new address at each plug-in")
	next(usb.Arrived, addr2)
	h2 := openHost(t, s)
	assert.Equal(t, usbsim.StateIdle, h2.status().State, "the device arrived works")
	require.NoError(t, s.Replug()) // plugged in already: no event

	// A second watcher sees the same events; closing it leaves the first.
	h3, err := s.WatchHotplug()
	require.NoError(t, err)
	require.NoError(t, s.Unplug())
	require.NoError(t, s.Replug())
	for _, w := range []*usbsim.Hotplug{h, h3} {
		for _, kind := range []usb.HotplugKind{usb.Left, usb.Arrived} {
			e, err := w.Next(ctx)
			require.NoError(t, err)
			assert.Equal(t, kind, e.Kind)
		}
	}
	require.NoError(t, h3.Close())
	assert.ErrorIs(t, h3.Close(), usb.ErrClosed)
	_, err = h3.Next(ctx)
	assert.ErrorIs(t, err, usb.ErrClosed)

	// Nobody reads: the first 64 events wait, the rest are dropped.
	for range 40 {
		require.NoError(t, s.Unplug())
		require.NoError(t, s.Replug())
	}
	for i := range 64 {
		e, err := h.Next(ctx)
		require.NoError(t, err, "event %d", i)
		assert.Equal(t, []usb.HotplugKind{usb.Left, usb.Arrived}[i%2], e.Kind, "event %d", i)
	}
	_, err = h.Next(ctx)
	assert.ErrorIs(t, err, syscall.ENOBUFS)
	assert.ErrorContains(t, err, "16 events dropped")

	// Waits end with the context, a deadline, Close.
	cctx, ccancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := h.Next(cctx); done <- err }()
	time.Sleep(10 * time.Millisecond)
	ccancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, usb.ErrCanceled)
		assert.ErrorIs(t, err, context.Canceled)
		assert.False(t, errors.Is(err, usb.ErrTimeout))
	case <-time.After(patience):
		t.Fatal("Next did not return when its context ended")
	}
	tctx, tcancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer tcancel()
	_, err = h.Next(tctx)
	assert.ErrorIs(t, err, usb.ErrTimeout)

	// Close of the scanner: the last Left; then nothing until Close.
	_, last := s.BusAddr()
	require.NoError(t, s.Close())
	next(usb.Left, last)
	go func() { _, err := h.Next(context.Background()); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("an event after the scanner's Close: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	require.NoError(t, h.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, usb.ErrClosed)
	case <-time.After(patience):
		t.Fatal("Next did not return after Close")
	}
	_, err = s.WatchHotplug()
	assert.ErrorIs(t, err, usbsim.ErrClosed)
}
