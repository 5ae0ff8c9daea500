//go:build cgo

package usb

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// adv8Control returns the buffer of a vendor control request with wLength
// n, in or out, of SetupSize+n+extra bytes filled with 0xA5 after the
// setup.
func adv8Control(in bool, n, extra int) []byte {
	buf := bytes.Repeat([]byte{0xA5}, SetupSize+n+extra)
	rt := uint8(RequestOut | RequestVendor | RecipientDevice)
	if in {
		rt = RequestIn | RequestVendor | RecipientDevice
	}
	Setup{RequestType: rt, Request: 0x70, Value: uint16(n), Length: uint16(n)}.Put(buf)
	return buf
}

// TestAdv8LibusbControlLimit: libusb carries control data stages of at
// most 4096 bytes. wLength 4096 is accepted and reaches libusb with 4096
// bytes; 4097 (and more, up to 65535) is refused by SubmitControl,
// StartControl and Control with an error wrapping ErrInvalid and
// ErrNotSupported, without reaching libusb or the ring; a buffer longer
// than SetupSize+wLength with wLength ≤ 4096 is accepted, and libusb gets
// exactly wLength bytes.
func TestAdv8LibusbControlLimit(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	for _, tc := range []struct {
		n, extra int
		ok       bool
	}{
		{4096, 0, true}, {4097, 0, false}, {4096, 1, true}, {4096, 4096, true}, {10, 10000, true},
		{0, 5000, true}, {4095, 2, true}, {4097, 100, false}, {8192, 0, false}, {0xffff, 0, false},
	} {
		for _, in := range []bool{true, false} {
			what := fmt.Sprintf("wLength %d, %d bytes more, IN %v", tc.n, tc.extra, in)
			for _, start := range []bool{false, true} {
				buf := adv8Control(in, tc.n, tc.extra)
				orig := bytes.Clone(buf)
				sub := d.SubmitControl
				if start {
					sub = d.StartControl
				}
				if !tc.ok {
					// The last accepted transfer's completion may be
					// reaped a moment before its count drops (see
					// ioring.Ring.InFlight): wait for the drop first.
					require.Eventually(t, func() bool { return r.InFlight() == 0 }, Patience, time.Millisecond, "%s: a completed transfer still counted", what)
				}
				q, err := sub(buf, Xfer{User: what})
				if !tc.ok {
					assert.ErrorIs(t, err, ioring.ErrInvalid, what)
					assert.ErrorIs(t, err, ioring.ErrNotSupported, what)
					assert.Zero(t, r.InFlight(), "%s: the ring took it", what)
					assert.Equal(t, orig, buf, what)
					continue
				}
				require.NoError(t, err, what)
				c := f.next(t)
				assert.Len(t, c.buf, tc.n, "%s: data stage given to libusb", what)
				want, _ := ParseSetup(buf)
				assert.Equal(t, want, c.setup, what)
				if !in {
					assert.Equal(t, buf[SetupSize:SetupSize+tc.n], c.buf, "%s: OUT data", what)
				}
				adv4Answer(c, fakeResult{n: tc.n})
				var got ioring.Completion
				if start {
					got, err = q.Wait(context.Background())
					require.NoError(t, err, what)
				} else {
					got = Reap(t, r, 1)[0]
				}
				require.NoError(t, got.Err, what)
				assert.Equal(t, tc.n, got.N, what)
				if in {
					assert.Equal(t, bytes.Repeat([]byte{adv8DevData}, tc.n), buf[SetupSize:SetupSize+tc.n], "%s: data", what)
				}
				assert.Equal(t, orig[SetupSize+tc.n:], buf[SetupSize+tc.n:], "%s: bytes past wLength", what)
			}
		}
	}
	// Device.Control: 4096 bytes go, 4097 do not.
	for _, n := range []int{4096, 4097} {
		for _, in := range []bool{true, false} {
			rt := uint8(RequestOut | RequestVendor | RecipientDevice)
			if in {
				rt = RequestIn | RequestVendor | RecipientDevice
			}
			done := make(chan error, 1)
			go func() {
				_, err := d.Control(context.Background(), Setup{RequestType: rt, Request: 0x71}, make([]byte, n))
				done <- err
			}()
			if n > libusbMaxControl {
				select {
				case err := <-done:
					assert.ErrorIs(t, err, ioring.ErrInvalid, "Control of %d bytes", n)
					assert.ErrorIs(t, err, ioring.ErrNotSupported, "Control of %d bytes", n)
				case <-time.After(Patience):
					t.Fatalf("Control of %d bytes did not return", n)
				}
				continue
			}
			c := f.next(t)
			assert.Len(t, c.buf, n)
			adv4Answer(c, fakeResult{n: n})
			require.NoError(t, <-done)
		}
	}
	f.assertIdle(t) // nothing refused reached libusb
	AssertNoMore(t, r)
	assert.Equal(t, int32(0), f.overlaps.Load())
}

// TestAdv8LibusbCancelAllDuringReset: Device.Reset waits for the libusb
// control call a canceled transfer left behind (bounded by libusb's
// 5-second control timeout) while it holds the Device's lock; meanwhile
// Device.CancelAll, which requests and returns, must return within
// seconds. (A transfer submitted meanwhile waits for the Reset to end
// before it is accepted, its context watched only from then on: see the
// Device's doc.)
func TestAdv8LibusbCancelAllDuringReset(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	q, err := d.SubmitControl(adv4ControlIn(4), Xfer{})
	require.NoError(t, err)
	held := f.next(t)
	defer adv4Answer(held, fakeResult{n: 4})
	require.NoError(t, q.Cancel())
	assert.ErrorIs(t, Reap(t, r, 1)[0].Err, ErrCanceled)
	reset := make(chan error, 1)
	go func() { reset <- d.Reset() }()
	time.Sleep(Quiet) // Reset waits for the held call
	select {
	case err := <-reset:
		t.Fatalf("Reset returned (%v) while endpoint 0's call ran", err)
	default:
	}
	const bound = 2 * time.Second
	canceled := make(chan error, 1)
	go func() { canceled <- d.CancelAll() }()
	select {
	case err := <-canceled:
		assert.NoError(t, err)
	case <-time.After(bound):
		t.Errorf("Device.CancelAll still blocked %v into a Reset waiting for a left-behind control call", bound)
	}
	adv4Answer(held, fakeResult{n: 4})
	rc := f.next(t) // the reset
	assert.Equal(t, uint8(adv8Reset), rc.setup.Request)
	adv4Answer(rc, fakeResult{})
	require.NoError(t, <-reset)
}
