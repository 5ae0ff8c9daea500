//go:build linux

package usb_test

// Adversarial round 11: hotplug watchers misused. usb.Hotplug (the
// kernel's uevent socket read through the ring) under Ring.CancelAll, a
// Ring closed under a pending Next, Closes racing each other and a
// pending Next, Close from inside an Events loop; usbsim's Hotplug, which
// promises "the methods and errors of usb.Hotplug", misused the same way
// and as a nil or zero value.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv11NoEvents filters for a VID no device has: no event ends a wait.
var adv11NoEvents = HotplugFilter{VendorID: 0xfff0, ProductID: 0xfff1}

// adv11NextAsync runs h.Next(ctx) on a goroutine and returns its result's
// channel.
func adv11NextAsync(ctx context.Context, next func(context.Context) (HotplugEvent, error)) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := next(ctx)
		done <- err
	}()
	return done
}

func adv11Recv(t *testing.T, done <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(Patience):
		t.Fatalf("%s: Next does not return", what)
		return nil
	}
}

// TestAdv11HotplugMisuse: usb.Hotplug. A Ring.CancelAll ends a pending
// Next with ErrCanceled and the watch goes on (the next Next waits
// again); two Closes racing a pending Next: one says nil, the other
// ErrClosed, Next says ErrClosed; a Close from inside an Events loop ends
// it; a Ring closed under a pending Next ends it with an error, Next
// fails from then on, and Close still closes the socket (CheckFDs).
func TestAdv11HotplugMisuse(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 8)
	h, err := WatchHotplug(r, adv11NoEvents)
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	done := adv11NextAsync(context.Background(), h.Next)
	require.Eventually(t, func() bool { return r.InFlight() == 1 }, Patience, time.Millisecond)
	require.NoError(t, r.CancelAll())
	err = adv11Recv(t, done, "Ring.CancelAll")
	assert.ErrorIs(t, err, ErrCanceled)
	assert.NotErrorIs(t, err, ErrClosed)

	done = adv11NextAsync(context.Background(), h.Next)
	require.Eventually(t, func() bool { return r.InFlight() == 1 }, Patience, time.Millisecond, "the watch goes on")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = h.Close() }()
	}
	wg.Wait()
	assert.ElementsMatch(t, []error{nil, ErrClosed}, []error{errs[0], errs[1]}, "two Closes")
	assert.ErrorIs(t, adv11Recv(t, done, "Close"), ErrClosed)
	AssertSettled(t, r)

	// Close from inside an Events loop, on its first (error) pair.
	h, err = WatchHotplug(r, adv11NoEvents)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	pairs := 0
	for _, err := range h.Events(ctx) {
		pairs++
		assert.ErrorIs(t, err, ErrTimeout)
		assert.NoError(t, h.Close(), "Close inside the loop")
	}
	cancel()
	assert.Equal(t, 1, pairs)
	_, err = h.Next(context.Background())
	assert.ErrorIs(t, err, ErrClosed)

	// A ring closed under a pending Next.
	r2, err := ioring.New(ioring.Config{Entries: 8})
	require.NoError(t, err)
	h, err = WatchHotplug(r2, adv11NoEvents)
	require.NoError(t, err)
	done = adv11NextAsync(context.Background(), h.Next)
	require.Eventually(t, func() bool { return r2.InFlight() == 1 }, Patience, time.Millisecond)
	require.NoError(t, r2.Close())
	err = adv11Recv(t, done, "Ring.Close")
	assert.Error(t, err)
	t.Logf("Next when its ring closes: %v", err)
	_, err = h.Next(context.Background())
	assert.Error(t, err, "Next on a closed ring")
	assert.NoError(t, h.Close(), "Close after its ring closed: the socket is closed")
	assert.ErrorIs(t, h.Close(), ErrClosed)
}

// TestAdv11SimHotplugMisuse: usbsim's Hotplug. Close twice (nil, then
// ErrClosed), Next after Close (ErrClosed), a Close ending a pending Next
// (ErrClosed), a context ending one (ErrCanceled, ErrTimeout), events
// still in order after an interrupted Next, and a watcher made after the
// scanner's Close refused. Then the values no WatchHotplug made: usb.Hotplug
// refuses a nil or zero one with an error wrapping ioring.ErrInvalid
// (TestHotplugZero); usbsim's, which promises usb.Hotplug's methods and
// errors, must not panic or hang either.
func TestAdv11SimHotplugMisuse(t *testing.T) {
	CheckFDs(t)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer s.Close()
	h, err := s.WatchHotplug()
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := adv11NextAsync(ctx, h.Next)
	time.Sleep(Quiet / 10) // let Next wait (it returns the same either way)
	cancel()
	err = adv11Recv(t, done, "ctx cancel")
	assert.ErrorIs(t, err, ErrCanceled)
	assert.ErrorIs(t, err, context.Canceled)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Millisecond)
	_, err = h.Next(ctx)
	cancel()
	assert.ErrorIs(t, err, ErrTimeout)
	require.NoError(t, s.Unplug())
	require.NoError(t, s.Replug())
	for _, want := range []HotplugKind{Left, Arrived} {
		ctx, cancel := context.WithTimeout(context.Background(), Patience)
		e, err := h.Next(ctx)
		cancel()
		require.NoError(t, err)
		assert.Equal(t, want, e.Kind)
	}
	done = adv11NextAsync(context.Background(), h.Next)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = h.Close() }()
	}
	wg.Wait()
	assert.ElementsMatch(t, []error{nil, ErrClosed}, []error{errs[0], errs[1]}, "two Closes")
	assert.ErrorIs(t, adv11Recv(t, done, "Close"), ErrClosed)
	_, err = h.Next(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
	require.NoError(t, s.Close())
	_, err = s.WatchHotplug()
	assert.ErrorIs(t, err, usbsim.ErrClosed)

	for name, h := range map[string]*usbsim.Hotplug{"nil": nil, "zero": new(usbsim.Hotplug)} {
		// A refusal comes at once; a Next that waits gets its context's
		// ErrTimeout instead (with a Background context it would wait for
		// ever).
		ctx, cancel := context.WithTimeout(context.Background(), 5*Quiet)
		v := adv11Panics(t, name+" Hotplug.Next", func() {
			_, err := h.Next(ctx)
			assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ErrClosed), "%s Hotplug.Next: %v", name, err)
		})
		cancel()
		assert.Nil(t, v, "%s usbsim.Hotplug: Next panics", name)
		v = adv11Panics(t, name+" Hotplug.Close", func() {
			err := h.Close()
			assert.True(t, errors.Is(err, ioring.ErrInvalid) || errors.Is(err, ErrClosed), "%s Hotplug.Close: %v", name, err)
		})
		assert.Nil(t, v, "%s usbsim.Hotplug: Close panics", name)
	}
}
