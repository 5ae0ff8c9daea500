//go:build cgo && linux

package usb_test

// TestAdv5GadgetCancelBurst: many transfers pending at once (usbfs with
// WithDepth(8): eight URBs in the kernel per endpoint, the rest queued in
// the Device) are canceled in one burst (one token, Device.CancelAll,
// Ring.CancelAll, or every Request.Cancel at once from many goroutines),
// and the endpoints are used again at once.
//
//   - On a hung device: every transfer completes once with ErrCanceled and
//     nothing moved; the next transfer gets fresh data, not a canceled
//     URB's.
//   - On a device with echoes queued: the burst races the data. The bulk IN
//     stream (every completion's N bytes in submission order, then the
//     drain up to a sentinel) is exactly the echoes, in order: a canceled
//     URB that had data reports it, and one that did not leaves it to the
//     next transfer.
//
// TestAdv5GadgetCloseUnderIO: Device.Close and Ring.Close at a random
// moment under pending bulk IN, bulk OUT, interrupt IN and control
// transfers: Close returns, each transfer completes once (canceled unless
// it had finished), no buffer is written after, every later call says
// ErrClosed, the usbfs mappings go, and the device opened again carries
// on with nothing stale.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

const (
	burstToken = iota
	burstDevAll
	burstRingAll
	burstEach
	burstKinds
)

var burstNames = [burstKinds]string{"token", "Device.CancelAll", "Ring.CancelAll", "each Request.Cancel"}

// adv5Burst cancels qs (all covered by tok) the way kind says and returns
// how long the cancel calls took.
func adv5Burst(t *testing.T, gd *gadgetDev, kind int, tok *ioring.Token, qs []ioring.Request) time.Duration {
	t0 := time.Now()
	switch kind {
	case burstToken:
		assert.NoError(t, tok.Cancel())
	case burstDevAll:
		assert.NoError(t, gd.d.CancelAll())
	case burstRingAll:
		assert.NoError(t, gd.r.CancelAll())
	case burstEach:
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < len(qs); i += 8 {
					if err := qs[i].Cancel(); err != nil {
						assert.ErrorIs(t, err, ioring.ErrNotFound, "Request.Cancel %d", i)
					}
				}
			}()
		}
		wg.Wait()
	}
	return time.Since(t0)
}

func TestAdv5GadgetCancelBurst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		seed := RandSeed(t)
		t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
		rng := rand.New(rand.NewPCG(seed, 6))
		adv5Leaks(t)
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10}, WithDepth(8))
		const k = 24
		for round := range 6 {
			kind := burstKinds - 1 - round%burstKinds
			if round >= burstKinds {
				kind = rng.IntN(burstKinds)
			}
			hung := round%2 == 0
			what := fmt.Sprintf("round %d (%s, %s)", round, burstNames[kind], map[bool]string{true: "hung", false: "echoes queued"}[hung])
			var echoes [][]byte
			if hung {
				gd.s.Hang()
			} else {
				for range 12 {
					p := adv5Payload(8 + rng.IntN(300))
					echoes = append(echoes, p)
					gd.send(t, usbsim.EchoCommand(p))
				}
			}
			tok := gd.r.NewToken()
			bufs := make([][]byte, k)
			qs := make([]ioring.Request, k)
			for i := range k {
				ep, size := gd.in, 512
				if hung && i%6 == 5 {
					ep, size = gd.intr, gd.intr.Desc().MaxPacketSize
				}
				bufs[i] = adv5Buf(size)
				q, err := ep.Submit(bufs[i], Xfer{Token: tok, User: i})
				require.NoError(t, err, "%s: submit %d", what, i)
				qs[i] = q
			}
			if hung {
				time.Sleep(Quiet)
			} else {
				time.Sleep(time.Duration(rng.Int64N(int64(3 * time.Millisecond))))
			}
			took := adv5Burst(t, gd, kind, tok, qs)
			got := map[int]ioring.Completion{}
			for _, c := range Reap(t, gd.r, k) {
				i := c.User.(int)
				_, dup := got[i]
				assert.False(t, dup, "%s: transfer %d completed twice", what, i)
				got[i] = c
			}
			adv5NoMore(t, gd.r, what)
			canceled := 0
			var stream []byte
			for i := range k {
				c := got[i]
				assert.Equal(t, -1, adv5Untouched(bufs[i], c.N), "%s: transfer %d wrote past N=%d (err %v)", what, i, c.N, c.Err)
				if hung {
					assert.ErrorIs(t, c.Err, ErrCanceled, "%s: transfer %d", what, i)
					assert.Zero(t, c.N, "%s: transfer %d", what, i)
				} else if c.Err != nil {
					assert.ErrorIs(t, c.Err, ErrCanceled, "%s: transfer %d", what, i)
				}
				if errors.Is(c.Err, ErrCanceled) {
					canceled++
				}
				assert.False(t, qs[i].Pending(), "%s: transfer %d pending after its completion", what, i)
				stream = append(stream, bufs[i][:c.N]...)
			}
			snapshot := make([][]byte, k)
			for i := range k {
				snapshot[i] = bytes.Clone(bufs[i][:cap(bufs[i])])
			}
			if hung {
				gd.s.Resume()
			}
			// At once: fresh data, nothing a canceled URB held.
			fresh := adv5Payload(20)
			gd.send(t, usbsim.EchoCommand(fresh))
			if hung {
				assert.Equal(t, string(fresh), string(gd.read(t, gd.maxTransfer)), "%s: the first transfer after the burst", what)
				assert.Empty(t, adv5Drain(t, gd), "%s: bulk IN after the burst", what)
				gd.send(t, usbsim.StatusCommand())
				assert.Equal(t, usbsim.EventStatus, gd.nextEvent(t).Kind, "%s: interrupt IN after the burst", what)
			} else {
				stream = append(stream, adv5Drain(t, gd)...)
				want := bytes.Join(append(echoes, fresh), nil)
				assert.Equal(t, string(want), string(stream), "%s: the bulk IN stream (%d of %d canceled)", what, canceled, k)
			}
			for i := range k {
				assert.Equal(t, snapshot[i], bufs[i][:cap(bufs[i])], "%s: transfer %d's buffer written after its completion", what, i)
			}
			t.Logf("%s: %d of %d canceled, cancel calls %v", what, canceled, k, took)
			if t.Failed() {
				t.Fatalf("stopped at %s (seed %d)", what, seed)
			}
		}
	})
}

func TestAdv5GadgetCloseUnderIO(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		seed := RandSeed(t)
		t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
		rng := rand.New(rand.NewPCG(seed, 7))
		adv5Leaks(t)
		usbMaps, _ := countMaps(t)
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		for round := range 4 {
			ringClose := round%2 == 1
			hung := rng.IntN(2) == 0
			delay := time.Duration(rng.Int64N(int64(20 * time.Millisecond)))
			what := fmt.Sprintf("round %d (%s, hung %v, after %v)", round, map[bool]string{false: "Device.Close", true: "Ring.Close"}[ringClose], hung, delay)
			if hung {
				gd.s.Hang()
			}
			type xfer struct {
				buf, orig []byte
				in        bool
				from      int
			}
			var xs []xfer
			submit := func(q ioring.Request, err error, x xfer) {
				require.NoError(t, err, "%s: submit %d", what, len(xs))
				_ = q
				xs = append(xs, x)
			}
			for range 3 {
				b := adv5Buf(1024)
				q, err := gd.in.Submit(b, Xfer{User: len(xs)})
				submit(q, err, xfer{buf: b, in: true})
			}
			b := adv5Buf(gd.intr.Desc().MaxPacketSize)
			q, err := gd.intr.Submit(b, Xfer{User: len(xs)})
			submit(q, err, xfer{buf: b, in: true})
			payload := adv5Payload(30)
			ob := usbsim.EchoCommand(payload)
			q, err = gd.out.Submit(ob, Xfer{User: len(xs)})
			submit(q, err, xfer{buf: ob, orig: bytes.Clone(ob)})
			outIdx := len(xs) - 1
			if !(hung && backend == "libusb") { // libusb's control call would wait out its 5 s timeout
				cb := adv5Buf(SetupSize + usbsim.EventSize)
				Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus, Length: usbsim.EventSize}.Put(cb)
				q, err = gd.d.SubmitControl(cb, Xfer{User: len(xs)})
				submit(q, err, xfer{buf: cb, orig: bytes.Clone(cb[:SetupSize]), in: true, from: SetupSize})
			}
			time.Sleep(delay)
			var closeErr error
			adv5Within(t, Patience, what, func() {
				if ringClose {
					closeErr = gd.r.Close()
				} else {
					closeErr = gd.d.Close()
				}
			})
			assert.NoError(t, closeErr, "%s", what)
			var cs [16]ioring.Completion
			n, err := gd.r.Reap(cs[:], 0)
			require.NoError(t, err, "%s: Reap after Close", what)
			require.Equal(t, len(xs), n, "%s: completions after Close: %+v", what, cs[:n])
			seen := map[int]int{}
			var stream [3][]byte // what the bulk IN transfers got, by index
			for _, c := range cs[:n] {
				i := c.User.(int)
				seen[i]++
				x := xs[i]
				switch {
				case c.Err == nil:
					assert.False(t, hung && i != outIdx && i < 4, "%s: transfer %d succeeded on a hung device (N=%d)", what, i, c.N)
				case errors.Is(c.Err, ErrCanceled):
					assert.NotErrorIs(t, c.Err, ErrTimeout, "%s: transfer %d", what, i)
				default:
					assert.Fail(t, "unexpected error", "%s: transfer %d: N=%d err=%v", what, i, c.N, c.Err)
				}
				if i < 3 {
					stream[i] = x.buf[:c.N]
				}
				if x.in {
					assert.Equal(t, -1, adv5Untouched(x.buf, x.from+c.N), "%s: transfer %d wrote past N=%d", what, i, c.N)
				}
				if x.orig != nil {
					assert.Equal(t, x.orig, x.buf[:len(x.orig)], "%s: transfer %d's OUT data or setup changed", what, i)
				}
				if i == outIdx {
					assert.True(t, c.N == 0 || c.N == len(ob), "%s: OUT echo N=%d", what, c.N)
					if c.N == 0 {
						payload = nil
					}
				}
			}
			for i := range xs {
				assert.Equal(t, 1, seen[i], "%s: completions of transfer %d", what, i)
			}
			snaps := make([][]byte, len(xs))
			for i, x := range xs {
				snaps[i] = bytes.Clone(x.buf[:cap(x.buf)])
			}

			// Every later call says closed.
			if ringClose {
				_, err = gd.in.Submit(adv5Buf(8), Xfer{})
				assert.ErrorIs(t, err, ioring.ErrClosed, "%s: Submit on a closed ring", what)
				assert.NoError(t, gd.d.CancelAll(), "%s: CancelAll with the ring closed", what)
				adv5Within(t, Patience, what+": Device.Close", func() { assert.NoError(t, gd.d.Close(), "%s: Device.Close after Ring.Close", what) })
			}
			_, err = gd.in.Submit(adv5Buf(8), Xfer{})
			assert.ErrorIs(t, err, ErrClosed, "%s: Submit after Close", what)
			_, err = gd.d.SubmitControl(statusRequest(), Xfer{})
			assert.ErrorIs(t, err, ErrClosed, "%s: SubmitControl after Close", what)
			ctx, cancel := testContext()
			_, err = gd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus}, make([]byte, usbsim.EventSize))
			assert.ErrorIs(t, err, ErrClosed, "%s: Control after Close", what)
			_, err = gd.d.GetStatus(ctx, RecipientDevice, 0)
			assert.ErrorIs(t, err, ErrClosed, "%s: GetStatus after Close", what)
			cancel()
			assert.ErrorIs(t, gd.d.CancelAll(), ErrClosed, "%s", what)
			assert.ErrorIs(t, gd.d.ClearHalt(gd.in.Desc().Address), ErrClosed, "%s", what)
			assert.ErrorIs(t, gd.d.Close(), ErrClosed, "%s: a second Close", what)
			u, _ := countMaps(t)
			assert.Equal(t, usbMaps, u, "%s: usbfs mappings after Close", what)

			if hung {
				gd.s.Resume()
			}
			if ringClose {
				gd.r = NewRing(t, 64)
			} else {
				adv5Settled(t, gd.r, what)
			}
			gd.open(t)
			// The echo went to a bulk IN transfer, or waits for the device
			// opened again.
			got := append(bytes.Join(stream[:], nil), adv5Drain(t, gd)...)
			assert.Equal(t, string(payload), string(got), "%s: the bulk IN stream, before Close and on the device opened again", what)
			for i, x := range xs {
				assert.Equal(t, snaps[i], x.buf[:cap(x.buf)], "%s: transfer %d's buffer written after Close", what, i)
			}
			if t.Failed() {
				t.Fatalf("stopped at %s (seed %d)", what, seed)
			}
		}
	})
}
