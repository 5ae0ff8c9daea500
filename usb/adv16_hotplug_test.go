//go:build linux

package usb_test

// Adversarial round 16: hotplug watchers at the edges. Next with a
// context that has already ended (one rule for contexts: ErrCanceled or
// ErrTimeout, the context's own error reachable, nothing left in flight);
// many watchers on one ring, each with a pending Next, closed all at once
// from other goroutines while others cancel their contexts.

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv16Ended returns a context canceled already and one whose deadline
// passed.
func adv16Ended() (canceled, expired context.Context) {
	c, cancel := context.WithCancel(context.Background())
	cancel()
	e, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	cancel2()
	return c, e
}

// TestAdv16HotplugEndedContext: usb.Hotplug.Next and usbsim's with a
// context that has already ended return at once with ErrCanceled (a
// cancel) or ErrTimeout (a deadline), the context's error reachable with
// errors.Is, and leave no request in flight; the watch goes on.
func TestAdv16HotplugEndedContext(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 8)
	h, err := WatchHotplug(r, adv11NoEvents)
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	defer h.Close()
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer s.Close()
	sh, err := s.WatchHotplug()
	require.NoError(t, err)
	defer sh.Close()
	for name, next := range map[string]func(context.Context) (HotplugEvent, error){"usb": h.Next, "usbsim": sh.Next} {
		canceled, expired := adv16Ended()
		for range 3 {
			_, err := next(canceled)
			assert.ErrorIs(t, err, ErrCanceled, "%s: Next with a canceled context", name)
			assert.NotErrorIs(t, err, ErrTimeout, "%s: Next with a canceled context", name)
			assert.ErrorIs(t, err, context.Canceled, "%s: Next with a canceled context: ctx's error", name)
			_, err = next(expired)
			assert.ErrorIs(t, err, ErrTimeout, "%s: Next with an expired context", name)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "%s: Next with an expired context: ctx's error", name)
		}
		assert.Zero(t, r.InFlight(), "%s: a request left in flight", name)
	}
	// The watches go on: a later Next waits (and its deadline ends it).
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err = h.Next(ctx)
	cancel()
	assert.ErrorIs(t, err, ErrTimeout)
	require.NoError(t, h.Close())
	AssertSettled(t, r)
}

// TestAdv16HotplugManyWatchers: 16 usb.Hotplug and 16 usbsim.Hotplug
// watchers, each with a Next waiting; half are closed from other
// goroutines, the other half have their contexts canceled, all at once,
// while the scanner is unplugged and replugged. Each Next returns once:
// ErrClosed for a closed watcher, ErrCanceled (or an event that came first
// for a usbsim one) for a canceled one. Nothing is left in flight and no
// fd is left open.
func TestAdv16HotplugManyWatchers(t *testing.T) {
	CheckFDs(t)
	const k = 16
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer s.Close()
	type watcher struct {
		next   func(context.Context) (HotplugEvent, error)
		close  func() error
		ctx    context.Context
		cancel context.CancelFunc
		done   chan error
		sim    bool
	}
	var ws []*watcher
	for i := range 2 * k {
		w := &watcher{done: make(chan error, 1), sim: i%2 == 1}
		if w.sim {
			h, err := s.WatchHotplug()
			require.NoError(t, err)
			w.next, w.close = h.Next, h.Close
		} else {
			h, err := WatchHotplug(r, adv11NoEvents)
			if err != nil {
				t.Skipf("no uevent socket here: %v", err)
			}
			w.next, w.close = h.Next, h.Close
		}
		w.ctx, w.cancel = context.WithCancel(context.Background())
		ws = append(ws, w)
	}
	for _, w := range ws {
		go func() {
			for {
				e, err := w.next(w.ctx)
				if err != nil {
					w.done <- err
					return
				}
				if !w.sim {
					w.done <- nil // a usb.Hotplug watcher filters every event out
					return
				}
				_ = e // a usbsim event: wait again
			}
		}()
	}
	require.Eventually(t, func() bool { return r.InFlight() == k }, Patience, time.Millisecond)
	var wg sync.WaitGroup
	start := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-start
		_ = s.Unplug()
		_ = s.Replug()
	}()
	for i, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if i%4 < 2 {
				assert.NoError(t, w.close())
			} else {
				w.cancel()
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, w := range ws {
		var err error
		select {
		case err = <-w.done:
		case <-time.After(Patience):
			t.Fatalf("watcher %d: Next does not return", i)
		}
		if i%4 < 2 {
			assert.ErrorIs(t, err, ErrClosed, "watcher %d (sim %v), closed", i, w.sim)
		} else {
			assert.ErrorIs(t, err, ErrCanceled, "watcher %d (sim %v), canceled", i, w.sim)
			assert.NoError(t, w.close())
		}
		assert.ErrorIs(t, w.close(), ErrClosed, "watcher %d: second Close", i)
		w.cancel()
	}
	AssertSettled(t, r)
}
