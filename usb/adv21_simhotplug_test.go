//go:build linux

package usb_test

// Adversarial round 21: usbsim's Hotplug under unplug/replug storms with
// Opens racing them, and its loss report's place among the events.

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdv21SimHotplugStorm: two goroutines unplug and replug the scanner
// at random while two others Open it and run a control transfer, and a
// watcher reads the events as they come. Every Open fails with
// ErrNoDevice (unplugged), EBUSY (the other opener holds the plug-in) or
// succeeds with a Device at the address of a plug-in the watcher saw
// arrive (or the first); its transfer succeeds or fails with ErrNoDevice;
// its Close returns. The events alternate Left, Arrived (the plug-ins are
// serialized), a Left carries the address of the Arrived before it, and
// the last event is the Arrived of the plug-in BusAddr reports.
func TestAdv21SimHotplugStorm(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(usbsim.Config{Serial: "STORM"})
	require.NoError(t, err)
	defer s.Close()
	_, first := s.BusAddr()
	h, err := s.WatchHotplug()
	require.NoError(t, err)
	defer h.Close()

	var (
		mu     sync.Mutex
		events []HotplugEvent
		lost   bool
	)
	readerDone := make(chan struct{})
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		defer close(readerDone)
		for {
			e, err := h.Next(ctx)
			if errors.Is(err, syscall.ENOBUFS) {
				mu.Lock()
				lost = true
				mu.Unlock()
				continue
			}
			if err != nil {
				return
			}
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
	}()

	const cycles = 60
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cycles {
				if (i+g)%2 == 0 {
					assert.NoError(t, s.Unplug())
				} else {
					assert.NoError(t, s.Replug())
				}
			}
		}()
	}
	opened := make(chan int, 4*cycles)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range cycles {
				d, err := usbsim.Open(r, s)
				if err != nil {
					assert.True(t, errors.Is(err, ErrNoDevice) || errors.Is(err, syscall.EBUSY), "Open: %v", err)
					continue
				}
				desc := d.Desc()
				assert.Equal(t, usbsim.SimBus, desc.Bus)
				opened <- desc.Address
				cctx, cancel := context.WithTimeout(context.Background(), Patience)
				_, err = d.GetStatus(cctx, RecipientDevice, 0)
				cancel()
				assert.True(t, err == nil || errors.Is(err, ErrNoDevice), "GET_STATUS on a storming device: %v", err)
				assert.NoError(t, d.Close())
			}
		}()
	}
	wg.Wait()
	require.NoError(t, s.Replug())
	_, last := s.BusAddr()
	// The final Arrived, if the storm ended unplugged, or the storm's last.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) > 0 && events[len(events)-1].Kind == Arrived && events[len(events)-1].Address == last
	}, Patience, 1e6, "the last event is the arrival of the plug-in at %d", last)
	stop()
	<-readerDone
	close(opened)

	mu.Lock()
	defer mu.Unlock()
	arrived := map[int]bool{first: true}
	prev := HotplugEvent{Kind: Arrived, Bus: usbsim.SimBus, Address: first}
	for i, e := range events {
		assert.Equal(t, usbsim.SimBus, e.Bus, "event %d", i)
		assert.Equal(t, "STORM", e.Serial, "event %d", i)
		if e.Kind == Arrived {
			arrived[e.Address] = true
		}
		if !lost {
			if !assert.NotEqual(t, prev.Kind, e.Kind, "event %d (%v) after %v: not alternating", i, e, prev) {
				break
			}
			if e.Kind == Left {
				assert.Equal(t, prev.Address, e.Address, "event %d: a Left for another plug-in than the last Arrived", i)
			}
		}
		prev = e
	}
	t.Logf("%d events (lost: %v)", len(events), lost)
	if !lost {
		for a := range opened {
			assert.True(t, arrived[a], "Open gave address %d, which no Arrived event announced", a)
		}
	}
	AssertSettled(t, r)
}

// TestAdv21SimHotplugLossInPlace: usbsim's Hotplug keeps 64 events for a
// reader that does not read and drops the rest, then reports the loss
// (ENOBUFS) "with the events that fitted before it". A loss report is a
// mark in the sequence: the events before it happened before the loss,
// those after it after (a driver catches up with usb.List at the mark).
// Here the queue fills, events are dropped, the reader takes one event
// (room for one more), and the scanner is unplugged again: that Left
// happened after the dropped events, yet it is queued behind the kept ones
// and delivered before the ENOBUFS, as if nothing had been lost before it.
func TestAdv21SimHotplugLossInPlace(t *testing.T) {
	CheckFDs(t)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer s.Close()
	h, err := s.WatchHotplug()
	require.NoError(t, err)
	defer h.Close()
	for range 40 { // 80 events: 64 kept, 16 dropped
		require.NoError(t, s.Unplug())
		require.NoError(t, s.Replug())
	}
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	e, err := h.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, Left, e.Kind)
	require.NoError(t, s.Unplug()) // after the loss
	var seq []string
	for i := 0; ; i++ {
		e, err := h.Next(ctx)
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOBUFS)
			seq = append(seq, "ENOBUFS")
			break
		}
		seq = append(seq, e.String())
		require.Less(t, i, 200)
	}
	// The events kept from before the loss are the 63 after the first;
	// the 64th delivered is the Left of the Unplug that came after it.
	n := len(seq) - 1
	assert.Equal(t, 63, n, "events delivered before the loss report; the last ones: %v", seq[max(0, n-2):])
}
