package usb_test

// Adversarial round 11: Device.Close, Ring.Close, or both at once,
// racing every public method of a Device on the simulated scanner.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv11CallOK reports whether err is a result a call racing a Close may
// give: success or a clear error, never anything else.
func adv11CallOK(err error) bool {
	for _, e := range []error{ErrClosed, ioring.ErrClosed, ErrCanceled, ErrTimeout, ErrNotFound, ioring.ErrInvalid, ioring.ErrNotSupported, ErrStall, ioring.ErrFull} {
		if errors.Is(err, e) {
			return true
		}
	}
	return err == nil
}

// TestAdv11CloseRacesEveryMethod: goroutines call every public method of a
// Device (Submit, Start and Wait, Transfer, Read, Write, typed endpoints,
// SubmitControl, StartControl, Control, GetStatus, StringDescriptor,
// ClearHalt, Reset, SetAltSetting, Release/ClaimInterface,
// SetConfiguration, CancelAll, Desc, Configuration, AltSetting, Endpoint,
// Request.Cancel, a token's Cancel, Ring.CancelAll) on a live or hung
// scanner while, at a random moment, Device.Close, Ring.Close, or both at
// once run. Both Closes return; every call returns within Patience with
// success or a clear error; every transfer accepted through Submit
// completes exactly once (nil or ErrCanceled); afterwards every call
// refuses promptly; nothing leaks.
func TestAdv11CloseRacesEveryMethod(t *testing.T) {
	seed := adv11Seed(t)
	for round := range 12 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, uint64(round)))
			CheckFDs(t)
			r, err := ioring.New(ioring.Config{Entries: 128})
			require.NoError(t, err)
			ringClosed := false
			defer func() {
				if !ringClosed {
					_ = r.Close()
				}
			}()
			s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
			require.NoError(t, err)
			defer s.Close()
			defer s.Resume()
			d, err := usbsim.Open(r, s)
			require.NoError(t, err)
			in, err := d.Endpoint(usbsim.AddrBulkIn)
			require.NoError(t, err)
			out, err := d.Endpoint(usbsim.AddrBulkOut)
			require.NoError(t, err)
			intr, err := d.InEndpoint(usbsim.AddrInterruptIn)
			require.NoError(t, err)
			tout, err := d.OutEndpoint(usbsim.AddrBulkOut)
			require.NoError(t, err)
			hung := rng.IntN(2) == 0
			if hung {
				s.Hang()
			} else {
				s.SetLatency(time.Duration(rng.IntN(300)) * time.Microsecond)
			}
			which := rng.IntN(3) // 0: Device.Close, 1: Ring.Close, 2: both
			t.Logf("hung %v, close %d", hung, which)

			var mu sync.Mutex
			accepted := map[int64]int{} // Submit's transfers: completions seen
			var ids atomic.Int64
			tok := r.NewToken()
			var last atomic.Value // an ioring.Request to cancel
			calls := []func(ctx context.Context, lr *rand.Rand) error{
				func(ctx context.Context, lr *rand.Rand) error {
					id := ids.Add(1)
					mu.Lock()
					defer mu.Unlock()
					var q ioring.Request
					var err error
					switch lr.IntN(4) {
					case 0:
						q, err = in.Submit(make([]byte, 1+lr.IntN(5000)), Xfer{User: id, Token: tok})
					case 1:
						q, err = out.Submit(usbsim.EchoCommand([]byte("e")), Xfer{User: id})
					case 2:
						q, err = intr.Submit(make([]byte, 64), Xfer{User: id, Deadline: time.Duration(lr.IntN(3)) * time.Millisecond})
					case 3:
						q, err = d.SubmitControl(statusRequest(), Xfer{User: id})
					}
					if err == nil {
						accepted[id] = 0
						last.Store(q)
					}
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					q, err := in.Start(make([]byte, 64), Xfer{})
					if err != nil {
						return err
					}
					c, err := q.Wait(ctx)
					if err != nil {
						return err
					}
					return c.Err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					q, err := d.StartControl(statusRequest(), Xfer{})
					if err != nil {
						return err
					}
					c, err := q.Wait(ctx)
					if err != nil {
						return err
					}
					return c.Err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					_, err := in.Transfer(ctx, make([]byte, 64))
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error { _, err := intr.Read(ctx, make([]byte, 64)); return err },
				func(ctx context.Context, lr *rand.Rand) error {
					_, err := tout.Write(ctx, usbsim.EchoCommand([]byte("w")))
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					_, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus}, make([]byte, usbsim.EventSize))
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					_, err := d.GetStatus(ctx, RecipientDevice, 0)
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					_, err := d.StringDescriptor(ctx, uint8(1+lr.IntN(3)))
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error { return d.ClearHalt(usbsim.AddrBulkIn) },
				func(ctx context.Context, lr *rand.Rand) error { return d.Reset() },
				func(ctx context.Context, lr *rand.Rand) error {
					if err := d.SetAltSetting(0, usbsim.AltEventsOnly); err != nil {
						return err
					}
					return d.SetAltSetting(0, 0)
				},
				func(ctx context.Context, lr *rand.Rand) error {
					if err := d.ReleaseInterface(0); err != nil {
						return err
					}
					return d.ClaimInterface(0, false)
				},
				func(ctx context.Context, lr *rand.Rand) error { return d.SetConfiguration(1) },
				func(ctx context.Context, lr *rand.Rand) error { return d.CancelAll() },
				func(ctx context.Context, lr *rand.Rand) error { return r.CancelAll() },
				func(ctx context.Context, lr *rand.Rand) error {
					_ = d.Desc()
					_ = d.Configuration()
					_, _ = d.AltSetting(0)
					_, err := d.Endpoint(usbsim.AddrBulkIn)
					return err
				},
				func(ctx context.Context, lr *rand.Rand) error {
					if q, ok := last.Load().(ioring.Request); ok {
						if err := q.Cancel(); err != nil && !errors.Is(err, ioring.ErrNotFound) {
							return err
						}
					}
					if lr.IntN(8) == 0 {
						return tok.Cancel()
					}
					return nil
				},
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lr := rand.New(rand.NewPCG(seed, uint64(round*100+g)))
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						k := lr.IntN(len(calls))
						ctx, cancel := context.WithTimeout(context.Background(), time.Duration(1+lr.IntN(20))*time.Millisecond)
						start := time.Now()
						err := calls[k](ctx, lr)
						cancel()
						if el := time.Since(start); el > Patience {
							t.Errorf("goroutine %d call %d (kind %d) took %v", g, i, k, el)
						}
						if !adv11CallOK(err) && !errors.Is(err, ErrNoDevice) {
							t.Errorf("goroutine %d call %d (kind %d): %v", g, i, k, err)
						}
					}
				}()
			}
			// A reaper, so that the ring does not fill up.
			var reapWG sync.WaitGroup
			reapStop := make(chan struct{})
			reapWG.Add(1)
			go func() {
				defer reapWG.Done()
				buf := make([]ioring.Completion, 32)
				for {
					n, err := r.Reap(buf, 5*time.Millisecond)
					if err != nil {
						assert.ErrorIs(t, err, ioring.ErrClosed)
					}
					mu.Lock()
					for _, c := range buf[:n] {
						id := c.User.(int64)
						accepted[id]++
						assert.True(t, c.Err == nil || errors.Is(c.Err, ErrCanceled), "transfer %d: %v", id, c.Err)
					}
					mu.Unlock()
					if n == 0 {
						select {
						case <-reapStop:
							return
						default:
						}
					}
				}
			}()
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
			var closers sync.WaitGroup
			closeErr := make(chan error, 2)
			if which != 1 {
				closers.Add(1)
				go func() { defer closers.Done(); closeErr <- d.Close() }()
			}
			if which != 0 {
				ringClosed = true
				closers.Add(1)
				go func() { defer closers.Done(); closeErr <- r.Close() }()
			}
			waited := make(chan struct{})
			go func() { closers.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-time.After(Patience):
				t.Fatal("Close hangs")
			}
			close(closeErr)
			for err := range closeErr {
				assert.NoError(t, err, "Close")
			}
			// The calls go on a little against the closed Device or ring.
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
			close(stop)
			wg.Wait()
			if which == 1 {
				done := make(chan error, 1)
				go func() { done <- d.Close() }()
				select {
				case err := <-done:
					assert.NoError(t, err, "Device.Close after Ring.Close")
				case <-time.After(Patience):
					t.Fatal("Device.Close after Ring.Close hangs")
				}
			}
			require.Eventually(t, func() bool {
				mu.Lock()
				defer mu.Unlock()
				for _, n := range accepted {
					if n == 0 {
						return false
					}
				}
				return true
			}, Patience, time.Millisecond, "every accepted transfer completes")
			close(reapStop)
			reapWG.Wait()
			mu.Lock()
			for id, n := range accepted {
				assert.Equal(t, 1, n, "transfer %d completions", id)
			}
			t.Logf("%d transfers accepted", len(accepted))
			mu.Unlock()
			// Everything refuses now, at once.
			ctx, cancel := context.WithTimeout(context.Background(), Patience)
			defer cancel()
			for k, call := range calls {
				err := call(ctx, rng)
				assert.True(t, adv11CallOK(err), "after Close, kind %d: %v", k, err)
			}
			_, err = in.Submit(make([]byte, 8), Xfer{})
			assert.True(t, errors.Is(err, ErrClosed) || errors.Is(err, ioring.ErrClosed), "Submit after Close: %v", err)
			assert.ErrorIs(t, d.Close(), ErrClosed)
			if ringClosed {
				assert.Zero(t, r.InFlight())
			} else {
				AssertSettled(t, r)
			}
		})
	}
}
