//go:build cgo

package usb

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// TestTransferContextsRaceSettings: Transfers and Controls whose contexts
// end at random moments race Resets and SetAltSettings on a device that
// answers every call after a random delay. Each call ends with its result
// or its context's error (never anything else, never a hang), nothing
// stays in flight, and no goroutine outlives the test (newAdv8Dev checks:
// a waiter for the Device's lock lets it go once it gets it).
func TestTransferContextsRaceSettings(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	in, err := d.Endpoint(0x81)
	require.NoError(t, err)
	seed := RandSeed(t)
	t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)

	stop := make(chan struct{})
	answered := make(chan struct{})
	go func() { // the device: answers each call after 0-2 ms
		defer close(answered)
		rng := rand.New(rand.NewPCG(seed, 1))
		for {
			select {
			case c := <-f.calls:
				delay := time.Duration(rng.Int64N(int64(2 * time.Millisecond)))
				go func() {
					time.Sleep(delay)
					adv4Answer(c, fakeResult{n: min(len(c.buf), 4)})
				}()
			case <-stop:
				return
			}
		}
	}()

	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	note := func(what string, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			outcomes[what+" ok"]++
		case errors.Is(err, ErrCanceled) && errors.Is(err, context.Canceled):
			outcomes[what+" canceled"]++
		case errors.Is(err, ErrTimeout) && errors.Is(err, context.DeadlineExceeded):
			outcomes[what+" timed out"]++
		default:
			t.Errorf("%s: unexpected error %v", what, err)
		}
	}
	const rounds = 150
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(10+g)))
			for range rounds {
				var ctx context.Context
				var cancel context.CancelFunc
				if rng.IntN(2) == 0 {
					ctx, cancel = context.WithTimeout(context.Background(), time.Duration(rng.Int64N(int64(3*time.Millisecond))))
				} else {
					ctx, cancel = context.WithCancel(context.Background())
					after := time.Duration(rng.Int64N(int64(3 * time.Millisecond)))
					time.AfterFunc(after, cancel)
				}
				if g%2 == 0 {
					_, err := in.Transfer(ctx, make([]byte, 512))
					note("transfer", err)
				} else {
					_, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x74}, make([]byte, 4))
					note("control", err)
				}
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() { // the settings
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		for i := range 60 {
			var err error
			if rng.IntN(2) == 0 {
				err = d.Reset()
			} else {
				err = d.SetAltSetting(0, i%2)
			}
			// A setting refused while transfers are pending is fine; any
			// other error is not.
			if err != nil && !errors.Is(err, ioring.ErrInvalid) {
				t.Errorf("setting %d: %v", i, err)
			}
		}
	}()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("transfers racing settings did not all return")
	}
	require.Eventually(t, func() bool { return r.InFlight() == 0 }, Patience, time.Millisecond, "transfers left in flight")
	close(stop)
	<-answered
	AssertNoMore(t, r)
	t.Logf("outcomes: %v", outcomes)
	assert.Zero(t, f.overlaps.Load(), "endpoint 0 calls overlapped: %v", f.overlapOf)
}
