//go:build cgo && linux

package usb_test

// TestAdv5GadgetUnplugRace: the gadget unbinds from its controller while
// one goroutine cancels some of the pending transfers (Request.Cancel,
// their token, or Device.CancelAll) and another keeps submitting bulk IN,
// all at random moments (seeded). Each accepted transfer completes once:
// ErrNoDevice when no cancel was asked for it (never ErrCanceled), else
// ErrCanceled or ErrNoDevice, whichever ended it; ErrNoDevice is never a
// cancel. Submits fail with ErrNoDevice once the device is known gone. Every
// cancel call, during and after the unplug, returns promptly; a cancel of a
// transfer already ended by the unplug says ErrNotFound; Device.Close
// after the unplug returns and releases the usbfs mapping; no buffer is
// written past N or after its completion. Then the gadget plugs in again
// for the next round.

import (
	"bytes"
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

// adv5Prompt bounds a cancel call: it requests and returns.
const adv5Prompt = 3 * time.Second

type adv5UXfer struct {
	q        ioring.Request
	buf      []byte
	ctl      bool
	out      bool
	tok      *ioring.Token
	canceled atomic.Bool // a cancel was asked for it (Request.Cancel or its token)
}

func TestAdv5GadgetUnplugRace(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		seed := RandSeed(t)
		t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
		rng := rand.New(rand.NewPCG(seed, 8))
		adv5Leaks(t)
		usbMaps, _ := countMaps(t)
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		for round := range 3 {
			if round > 0 {
				gd.replug(t)
				gd.echo(t, "replugged")
			}
			hung := rng.IntN(2) == 0
			devAll := rng.IntN(3) == 0
			unplugAfter := time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
			cancelAfter := time.Duration(rng.Int64N(int64(10 * time.Millisecond)))
			what := fmt.Sprintf("round %d (hung %v, unplug after %v, cancels after %v, Device.CancelAll %v)", round, hung, unplugAfter, cancelAfter, devAll)
			if hung {
				gd.s.Hang()
			}
			var mu sync.Mutex
			var xs []*adv5UXfer
			add := func(x *adv5UXfer) {
				mu.Lock()
				xs = append(xs, x)
				mu.Unlock()
			}
			tok := gd.r.NewToken()
			for i := range 10 {
				x := &adv5UXfer{buf: adv5Buf(512)}
				var err error
				switch {
				case i < 6:
					if i%2 == 0 {
						x.tok = tok
					}
					x.q, err = gd.in.Submit(x.buf, Xfer{Token: x.tok, User: x})
				case i < 8:
					x.buf = adv5Buf(gd.intr.Desc().MaxPacketSize)
					x.q, err = gd.intr.Submit(x.buf, Xfer{User: x})
				case i == 8 && hung:
					x.buf, x.out = usbsim.EchoCommand([]byte("never taken")), true
					x.q, err = gd.out.Submit(x.buf, Xfer{User: x})
				default:
					if hung && backend == "libusb" {
						continue // a 5-second control timeout
					}
					// A control IN the hung gadget withholds (or, not hung,
					// that may finish first).
					x.buf, x.ctl = adv5Buf(SetupSize+usbsim.EventSize), true
					Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus, Length: usbsim.EventSize}.Put(x.buf)
					x.q, err = gd.d.SubmitControl(x.buf, Xfer{User: x})
				}
				require.NoError(t, err, "%s: submit %d", what, i)
				add(x)
			}
			time.Sleep(Quiet / 2)

			var unplugged atomic.Bool
			var wg sync.WaitGroup
			start := make(chan struct{})
			wg.Add(3)
			go func() { // the unplug
				defer wg.Done()
				<-start
				time.Sleep(unplugAfter)
				assert.NoError(t, gd.s.Unplug(), "%s: Unplug", what)
				unplugged.Store(true)
			}()
			go func() { // the cancels
				defer wg.Done()
				<-start
				time.Sleep(cancelAfter)
				mu.Lock()
				some := append([]*adv5UXfer(nil), xs[:6]...)
				mu.Unlock()
				t0 := time.Now()
				if devAll {
					for _, x := range some {
						x.canceled.Store(true) // it covers every transfer so far
					}
					assert.NoError(t, gd.d.CancelAll(), "%s: Device.CancelAll", what)
				} else {
					for _, x := range some {
						if x.tok != nil {
							x.canceled.Store(true)
						}
					}
					assert.NoError(t, tok.Cancel(), "%s: Token.Cancel", what)
					for _, x := range some[1:3] {
						x.canceled.Store(true)
						if err := x.q.Cancel(); err != nil {
							assert.ErrorIs(t, err, ioring.ErrNotFound, "%s: Request.Cancel", what)
						}
					}
				}
				assert.Less(t, time.Since(t0), adv5Prompt, "%s: cancels", what)
			}()
			var refused atomic.Int32
			go func() { // the submissions
				defer wg.Done()
				<-start
				for range 20 {
					x := &adv5UXfer{buf: adv5Buf(512)}
					var err error
					x.q, err = gd.in.Submit(x.buf, Xfer{User: x})
					if err != nil {
						assert.ErrorIs(t, err, ErrNoDevice, "%s: a Submit racing the unplug", what)
						refused.Add(1)
						return
					}
					add(x)
					time.Sleep(time.Millisecond)
				}
			}()
			close(start)
			wg.Wait()
			if devAll {
				// Transfers submitted before CancelAll returned may have
				// been canceled by it: all of them, to be safe, are.
				mu.Lock()
				for _, x := range xs {
					x.canceled.Store(true)
				}
				mu.Unlock()
			}

			// Cancels after the unplug return at once, whatever they find:
			// the interrupt IN transfers', which may have ended already.
			t0 := time.Now()
			for _, x := range xs[6:8] {
				x.canceled.Store(true)
				if err := x.q.Cancel(); err != nil {
					assert.ErrorIs(t, err, ioring.ErrNotFound, "%s: Request.Cancel after the unplug", what)
				}
			}
			assert.Less(t, time.Since(t0), adv5Prompt, "%s: Request.Cancel after the unplug", what)

			seen := map[*adv5UXfer]int{}
			results := map[string]int{}
			for _, c := range Reap(t, gd.r, len(xs)) {
				x := c.User.(*adv5UXfer)
				seen[x]++
				switch {
				case errors.Is(c.Err, ErrNoDevice):
					results["no-device"]++
					assert.NotErrorIs(t, c.Err, ErrCanceled, "%s: ErrNoDevice is not a cancel", what)
				case errors.Is(c.Err, ErrCanceled):
					results["canceled"]++
					assert.True(t, x.canceled.Load(), "%s: canceled, though no cancel was asked (N=%d)", what, c.N)
				case c.Err == nil:
					results["ok"]++
					assert.True(t, x.ctl && !hung, "%s: a transfer succeeded on an idle or hung device (N=%d ctl %v)", what, c.N, x.ctl)
				default:
					assert.Fail(t, "unexpected error", "%s: N=%d err=%v", what, c.N, c.Err)
				}
				from := c.N
				if x.ctl {
					from += SetupSize
				}
				if !x.out {
					assert.Equal(t, -1, adv5Untouched(x.buf, from), "%s: written past N=%d (err %v)", what, c.N, c.Err)
				}
			}
			adv5NoMore(t, gd.r, what)
			for _, x := range xs {
				assert.Equal(t, 1, seen[x], "%s: completions of a transfer", what)
			}
			snaps := make([][]byte, len(xs))
			for i, x := range xs {
				snaps[i] = bytes.Clone(x.buf[:cap(x.buf)])
			}

			// Everything has ended: each cancel finds nothing, at once.
			t0 = time.Now()
			for _, x := range xs {
				assert.ErrorIs(t, x.q.Cancel(), ioring.ErrNotFound, "%s: Request.Cancel of an ended transfer", what)
			}
			assert.NoError(t, tok.Cancel(), "%s: Token.Cancel after the unplug", what)
			assert.NoError(t, gd.r.CancelAll(), "%s: Ring.CancelAll after the unplug", what)
			assert.Less(t, time.Since(t0), adv5Prompt, "%s: cancels after the unplug", what)
			_, err := gd.in.Submit(adv5Buf(512), Xfer{})
			assert.ErrorIs(t, err, ErrNoDevice, "%s: Submit after the unplug", what)
			_, err = gd.d.SubmitControl(statusRequest(), Xfer{})
			assert.ErrorIs(t, err, ErrNoDevice, "%s: SubmitControl after the unplug", what)

			var closeErr error
			adv5Within(t, Patience, what+": Device.Close after the unplug", func() { closeErr = gd.d.Close() })
			if closeErr != nil {
				assert.ErrorIs(t, closeErr, ErrNoDevice, "%s: Device.Close after the unplug", what)
			}
			u, _ := countMaps(t)
			assert.Equal(t, usbMaps, u, "%s: usbfs mappings after Close", what)
			assert.ErrorIs(t, gd.d.CancelAll(), ErrClosed, "%s", what)
			for i, x := range xs {
				assert.Equal(t, snaps[i], x.buf[:cap(x.buf)], "%s: buffer %d written after its completion", what, i)
			}
			if hung {
				gd.s.Resume()
			}
			t.Logf("%s: %d transfers (%d submits refused): %v", what, len(xs), refused.Load(), results)
			if t.Failed() {
				t.Fatalf("stopped at %s (seed %d)", what, seed)
			}
		}
		adv5Settled(t, gd.r, "after the rounds")
	})
}
