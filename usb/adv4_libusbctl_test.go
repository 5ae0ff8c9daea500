//go:build cgo

package usb

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
)

// A control transfer on libusb runs gousb's synchronous control call,
// which nothing interrupts. These tests hold that call in the fake
// (fakeLibusb.control returns only when answered) and check that a
// cancel still completes the transfer at once, with ErrCanceled, while
// the call goes on; that the caller's buffer is not written after the
// completion; that endpoint 0's next request, clear-halt and Close wait
// for the call; and that every transfer completes exactly once.

// adv4Bound bounds the wait for a completion that must come without
// libusb's call returning: generous (seconds), as everywhere here.
const adv4Bound = 5 * time.Second

// adv4Ctl is a Device on the fake libusb, and the calls the fake holds.
type adv4Ctl struct {
	r *ioring.Ring
	f *fakeLibusb
	d *Device

	mu      sync.Mutex
	pending []*fakeCall // calls taken, answered at the end if not before
}

// newAdv4Ctl opens a Device on the fake, with bulk IN 0x81 and endpoint 0.
// At the end, the calls the test left unanswered, and any that reach the
// fake afterwards, are answered before and while the Device closes (its
// Close waits for them), and no goroutine may be left.
func newAdv4Ctl(t *testing.T) *adv4Ctl {
	t.Helper()
	CheckFDs(t)
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	a := &adv4Ctl{r: NewRing(t, 32), f: newFakeLibusb()}
	desc := DeviceDesc{Bus: 1, Address: 5, VendorID: 0x1209, ProductID: 0x0002, Endpoints: []EndpointDesc{
		{Address: 0x81, Type: Bulk, MaxPacketSize: 512},
	}}
	a.d = newLibusbDevice(a.r, desc, a.f, false)
	quit, answered := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(quit); <-answered }) // after Close
	t.Cleanup(func() { _ = a.d.Close() })
	t.Cleanup(func() { // before Close
		a.mu.Lock()
		for _, c := range a.pending {
			adv4Answer(c, fakeResult{err: gousb.ErrorTimeout})
		}
		a.mu.Unlock()
		go func() {
			defer close(answered)
			for {
				select {
				case c := <-a.f.calls:
					adv4Answer(c, fakeResult{err: gousb.ErrorTimeout})
				case <-quit:
					return
				}
			}
		}()
	})
	return a
}

// adv4Answer answers c unless it was answered already.
func adv4Answer(c *fakeCall, res fakeResult) {
	select {
	case c.answer <- res:
	default:
	}
}

// take waits for the fake's next call and keeps it to answer at the end.
func (a *adv4Ctl) take(t *testing.T) *fakeCall {
	t.Helper()
	c := a.f.next(t)
	a.mu.Lock()
	a.pending = append(a.pending, c)
	a.mu.Unlock()
	return c
}

// reap waits up to adv4Bound for one completion.
func (a *adv4Ctl) reap(t *testing.T, what string) ioring.Completion {
	t.Helper()
	var cs [1]ioring.Completion
	n, err := a.r.Reap(cs[:], adv4Bound)
	require.NoError(t, err)
	require.Equal(t, 1, n, "%s: no completion within %v while libusb holds the control call", what, adv4Bound)
	return cs[0]
}

// adv4Fill is what the caller's data stage holds before the transfer.
const adv4Fill = 0xAA

// controlIn returns the buffer of a vendor IN request with n bytes of data
// stage, filled with adv4Fill.
func adv4ControlIn(n int) []byte {
	buf := bytes.Repeat([]byte{adv4Fill}, SetupSize+n)
	Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x51, Length: uint16(n)}.Put(buf)
	return buf
}

// untouched reports whether buf's data stage still holds adv4Fill only.
func adv4Untouched(buf []byte) bool {
	return bytes.Count(buf[SetupSize:], []byte{adv4Fill}) == len(buf)-SetupSize
}

// TestAdv4LibusbControlCancelAtOnce: however a control transfer held in
// libusb is canceled (Request.Cancel, its token, its deadline,
// Device.CancelAll, Ring.CancelAll), the cancel returns and the transfer
// completes with ErrCanceled (ErrTimeout for the deadline) and no bytes,
// without libusb's call returning; libusb's call ran on a copy of the data
// stage, and what it writes there when it does return never reaches the
// caller's buffer; no second completion follows.
func TestAdv4LibusbControlCancelAtOnce(t *testing.T) {
	a := newAdv4Ctl(t)
	for _, how := range []string{"Request.Cancel", "token", "deadline", "Device.CancelAll", "Ring.CancelAll"} {
		buf := adv4ControlIn(4)
		x := Xfer{User: how}
		if how == "token" {
			x.Token = a.r.NewToken()
		}
		if how == "deadline" {
			x.Deadline = 3 * Quiet
		}
		q, err := a.d.SubmitControl(buf, x)
		require.NoError(t, err, how)
		c := a.take(t)
		require.Len(t, c.buf, 4, how)
		assert.NotSame(t, &buf[SetupSize], &c.buf[0], "%s: libusb got the caller's buffer", how)
		returned := make(chan error, 1)
		go func() {
			switch how {
			case "Request.Cancel":
				returned <- q.Cancel()
			case "token":
				returned <- x.Token.Cancel()
			case "deadline":
				returned <- nil
			case "Device.CancelAll":
				returned <- a.d.CancelAll()
			case "Ring.CancelAll":
				returned <- a.r.CancelAll()
			}
		}()
		select {
		case err := <-returned:
			require.NoError(t, err, how)
		case <-time.After(adv4Bound):
			t.Fatalf("%s did not return within %v", how, adv4Bound)
		}
		got := a.reap(t, how)
		assert.Equal(t, how, got.User)
		assert.ErrorIs(t, got.Err, ErrCanceled, how)
		if how == "deadline" {
			assert.ErrorIs(t, got.Err, ErrTimeout, how)
		}
		assert.Zero(t, got.N, "%s: no data delivered", how)
		assert.ErrorIs(t, q.Cancel(), ioring.ErrNotFound, "%s: nothing left to cancel", how)
		// libusb's call returns now, with data: the transfer is over, and
		// the caller's buffer stays as it was.
		copy(c.buf, "late")
		adv4Answer(c, fakeResult{n: 4})
		AssertNoMore(t, a.r)
		assert.True(t, adv4Untouched(buf), "%s: data stage written after the completion: % x", how, buf[SetupSize:])
	}
	AssertSettled(t, a.r)
}

// TestAdv4LibusbControlContext: Device.Control's context ending while
// libusb holds the call returns at once with the context's error, and the
// caller's data is not written, then or later.
func TestAdv4LibusbControlContext(t *testing.T) {
	a := newAdv4Ctl(t)
	ctx, cancel := context.WithCancel(context.Background())
	data := bytes.Repeat([]byte{adv4Fill}, 6)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := a.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x52}, data)
		done <- result{n, err}
	}()
	c := a.take(t)
	cancel()
	var res result
	select {
	case res = <-done:
	case <-time.After(adv4Bound):
		t.Fatalf("Control did not return within %v of its context's cancel", adv4Bound)
	}
	assert.ErrorIs(t, res.err, ErrCanceled)
	assert.ErrorIs(t, res.err, context.Canceled)
	assert.Zero(t, res.n)
	copy(c.buf, "late!!")
	adv4Answer(c, fakeResult{n: 6})
	// The next control transfer runs once libusb's call has returned:
	// after it, nothing can write any more.
	next := make(chan error, 1)
	go func() {
		_, err := a.d.Control(context.Background(), Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: 0x53}, nil)
		next <- err
	}()
	adv4Answer(a.take(t), fakeResult{})
	require.NoError(t, <-next)
	assert.Equal(t, bytes.Repeat([]byte{adv4Fill}, 6), data, "data written after Control returned")
}

// TestAdv4LibusbControlOut: an OUT control transfer's data stage goes to
// libusb as a copy: a cancel completes the transfer at once with
// ErrCanceled and 0 bytes (none is known to have moved; the device may
// still get the request), and the caller may reuse its buffer at once
// without changing what libusb sends.
func TestAdv4LibusbControlOut(t *testing.T) {
	a := newAdv4Ctl(t)
	buf := make([]byte, SetupSize+4)
	Setup{RequestType: RequestOut | RequestVendor | RecipientInterface, Request: 0x54, Length: 4}.Put(buf)
	copy(buf[SetupSize:], "cmd!")
	q, err := a.d.SubmitControl(buf, Xfer{})
	require.NoError(t, err)
	c := a.take(t)
	assert.Equal(t, "cmd!", string(c.buf))
	require.NoError(t, q.Cancel())
	got := a.reap(t, "control OUT")
	assert.ErrorIs(t, got.Err, ErrCanceled)
	assert.Zero(t, got.N)
	copy(buf[SetupSize:], "new!") // the caller's again
	assert.Equal(t, "cmd!", string(c.buf), "libusb's copy changed with the caller's buffer")
	adv4Answer(c, fakeResult{n: 4})
	AssertNoMore(t, a.r)
}

// TestAdv4LibusbControlSerialized: a control transfer submitted while a
// canceled one's libusb call still runs waits for that call (endpoint 0
// runs one request at a time), cancelably: canceled while waiting, it
// completes at once and never reaches libusb. Clear-halt (a request on
// endpoint 0 too) waits likewise. Once the call returns, the next one
// runs, with its real result.
func TestAdv4LibusbControlSerialized(t *testing.T) {
	a := newAdv4Ctl(t)
	q1, err := a.d.SubmitControl(adv4ControlIn(2), Xfer{User: 1})
	require.NoError(t, err)
	c1 := a.take(t)
	require.NoError(t, q1.Cancel())
	got := a.reap(t, "transfer 1")
	assert.Equal(t, 1, got.User)
	assert.ErrorIs(t, got.Err, ErrCanceled)

	buf2 := adv4ControlIn(3)
	_, err = a.d.SubmitControl(buf2, Xfer{User: 2})
	require.NoError(t, err)
	buf3 := adv4ControlIn(3)
	q3, err := a.d.SubmitControl(buf3, Xfer{User: 3})
	require.NoError(t, err)
	a.f.assertIdle(t) // 2 waits for 1's libusb call
	require.NoError(t, q3.Cancel())
	got = a.reap(t, "transfer 3, queued")
	assert.Equal(t, 3, got.User)
	assert.ErrorIs(t, got.Err, ErrCanceled)

	halted := make(chan error, 1)
	go func() { halted <- a.d.ClearHalt(0x81) }()
	select {
	case err := <-halted:
		t.Fatalf("ClearHalt returned (%v) while endpoint 0's call ran", err)
	case <-time.After(Quiet):
	}

	adv4Answer(c1, fakeResult{n: 2})
	c2 := a.take(t)
	s, _ := ParseSetup(buf2)
	assert.Equal(t, s, c2.setup, "transfer 2 reached libusb")
	copy(c2.buf, "abc")
	adv4Answer(c2, fakeResult{n: 3})
	got = a.reap(t, "transfer 2")
	assert.Equal(t, 2, got.User)
	require.NoError(t, got.Err)
	assert.Equal(t, 3, got.N)
	assert.Equal(t, "abc", string(buf2[SetupSize:]))
	select {
	case err := <-halted:
		require.NoError(t, err)
	case <-time.After(adv4Bound):
		t.Fatal("ClearHalt still waits")
	}
	a.f.mu.Lock()
	assert.Equal(t, []uint8{0x81}, a.f.cleared)
	a.f.mu.Unlock()
	a.f.assertIdle(t) // 3 never reached libusb
	assert.True(t, adv4Untouched(buf3))
	AssertNoMore(t, a.r)
}

// TestAdv4LibusbControlCloseWaits: Close completes a control transfer
// held in libusb at once (ErrCanceled), but closes libusb only once the
// call has returned, and leaves no goroutine behind (newAdv4Ctl checks).
func TestAdv4LibusbControlCloseWaits(t *testing.T) {
	a := newAdv4Ctl(t)
	buf := adv4ControlIn(4)
	_, err := a.d.SubmitControl(buf, Xfer{User: "held"})
	require.NoError(t, err)
	c := a.take(t)
	closed := make(chan error, 1)
	go func() { closed <- a.d.Close() }()
	got := a.reap(t, "Close")
	assert.Equal(t, "held", got.User)
	assert.ErrorIs(t, got.Err, ErrCanceled)
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while libusb's control call ran", err)
	case <-time.After(Quiet):
	}
	assert.Zero(t, a.f.closed.Load(), "libusb closed under its control call")
	copy(c.buf, "late")
	adv4Answer(c, fakeResult{n: 4})
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(adv4Bound):
		t.Fatal("Close still waits after libusb's call returned")
	}
	assert.Equal(t, int32(1), a.f.closed.Load())
	assert.True(t, adv4Untouched(buf))
	_, err = a.d.SubmitControl(adv4ControlIn(1), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
}

// TestAdv4LibusbControlRace: libusb's call returning and a cancel race,
// many times. Each transfer completes once: with the real result (libusb
// returned first: its data delivered) or with ErrCanceled, 0 bytes and its
// buffer untouched, never anything in between.
func TestAdv4LibusbControlRace(t *testing.T) {
	a := newAdv4Ctl(t)
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	var real, canceled int
	for i := range rounds {
		buf := adv4ControlIn(4)
		q, err := a.d.SubmitControl(buf, Xfer{User: i})
		require.NoError(t, err)
		c := a.take(t)
		copy(c.buf, "data")
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			adv4Answer(c, fakeResult{n: 4})
		}()
		cerr := q.Cancel()
		wg.Wait()
		got := a.reap(t, "race")
		require.Equal(t, i, got.User)
		switch {
		case got.Err == nil:
			real++
			assert.Equal(t, 4, got.N, "round %d", i)
			assert.Equal(t, "data", string(buf[SetupSize:]), "round %d", i)
		case errors.Is(got.Err, ErrCanceled):
			canceled++
			require.NoError(t, cerr, "round %d: a cancel that found nothing, yet ErrCanceled", i)
			assert.Zero(t, got.N, "round %d", i)
			assert.True(t, adv4Untouched(buf), "round %d: data stage % x after ErrCanceled", i, buf[SetupSize:])
		default:
			t.Fatalf("round %d: %v", i, got.Err)
		}
	}
	// After the last call returned (the next transfer waits for it),
	// nothing more: one completion each.
	_, err := a.d.SubmitControl(adv4ControlIn(1), Xfer{User: "last"})
	require.NoError(t, err)
	adv4Answer(a.take(t), fakeResult{n: 1})
	assert.Equal(t, "last", a.reap(t, "last").User)
	AssertNoMore(t, a.r)
	t.Logf("%d rounds: %d real results, %d canceled", rounds, real, canceled)
}
