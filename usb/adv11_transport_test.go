package usb_test

// Adversarial round 11, the Device's side of the seam: a Device made by
// NewDevice over a Transport that misbehaves (panics in Submit, CancelAll
// or Close; completes a transfer twice; reports more bytes than the
// buffer holds; completes from inside its own cancel hook).

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
)

// adv11Transport is a Transport whose transfers are foreign requests of
// ring, completed by complete (at once, in the caller of Submit, when
// set; else when canceled). Its panics are switched on per method.
type adv11Transport struct {
	ring     *ioring.Ring
	complete func(q ioring.Request, buf []byte) // nil: the transfer waits for its cancel
	panicIn  atomic.Value                       // string: the method that panics next
	closes   atomic.Int32

	mu      sync.Mutex
	pending map[ioring.Request]bool
}

func (f *adv11Transport) maybePanic(method string) {
	if m, _ := f.panicIn.Load().(string); m == method {
		f.panicIn.Store("")
		panic("transport " + method + " panics")
	}
}

func (f *adv11Transport) Submit(ep EndpointDesc, buf []byte, x Xfer, wait bool) (ioring.Request, error) {
	f.maybePanic("Submit")
	var q ioring.Request
	var qmu sync.Mutex
	qmu.Lock() // the hook waits until q is known
	op := ioring.Foreign(func() {
		qmu.Lock()
		q := q
		qmu.Unlock()
		f.mu.Lock()
		mine := f.pending[q]
		delete(f.pending, q)
		f.mu.Unlock()
		if mine {
			// Completed from inside its own cancel hook.
			_ = f.ring.Complete(q, 0, ErrCanceled)
		}
	}).WithToken(x.Token).WithDeadline(x.Deadline).WithUser(x.User)
	var err error
	if wait {
		q, err = f.ring.Start(op)
	} else {
		q, err = f.ring.Submit(op)
	}
	// Pending before the hook may look: a deadline or token that fires
	// right after the submission runs the hook at once, and it waits for
	// qmu; finding the request not pending yet, it would leave it in
	// flight for good (seen in the guest, a 100 us deadline).
	if err == nil && q.Pending() && f.complete == nil {
		f.mu.Lock()
		f.pending[q] = true
		f.mu.Unlock()
	}
	qmu.Unlock()
	if err != nil || !q.Pending() {
		return q, err
	}
	if f.complete != nil {
		f.complete(q, buf)
	}
	return q, nil
}

func (f *adv11Transport) CancelAll() error {
	f.maybePanic("CancelAll")
	f.mu.Lock()
	var qs []ioring.Request
	for q := range f.pending {
		qs = append(qs, q)
	}
	f.mu.Unlock()
	_, err := f.ring.Cancel(qs...)
	if errors.Is(err, ioring.ErrClosed) {
		return nil
	}
	return err
}

func (f *adv11Transport) ClearHalt(EndpointDesc) error { return nil }
func (f *adv11Transport) Reset() error                 { return nil }

func (f *adv11Transport) Close() error {
	f.closes.Add(1)
	if err := f.CancelAll(); err != nil {
		return err
	}
	f.maybePanic("Close")
	return nil
}

func adv11NewTransportDev(t *testing.T, complete func(q ioring.Request, buf []byte)) (*Device, *adv11Transport, *ioring.Ring) {
	t.Helper()
	ring := NewRing(t, 16)
	f := &adv11Transport{ring: ring, complete: complete, pending: map[ioring.Request]bool{}}
	d := NewDevice(DeviceDesc{Endpoints: []EndpointDesc{adv11In, adv11Out}}, f)
	t.Cleanup(func() { _ = d.Close() })
	return d, f, ring
}

// TestAdv11TransportPanics: a Transport whose Submit, CancelAll or Close
// panics. The panic reaches the caller (the Device recovers nothing of
// its Transport: undocumented, see the report); the Device is left
// consistent: its lock and its CancelAll count are released (a later
// Submit, CancelAll and Close do not hang), a Close whose Transport
// panicked leaves the Device closed (ErrClosed after), and every
// accepted transfer still completes once.
func TestAdv11TransportPanics(t *testing.T) {
	CheckFDs(t)
	d, f, ring := adv11NewTransportDev(t, nil)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)

	f.panicIn.Store("Submit")
	v := adv11Panics(t, "Submit", func() { _, _ = in.Submit(make([]byte, 4), Xfer{}) })
	t.Logf("a Transport's Submit that panics: %v reaches Endpoint.Submit's caller", v)
	assert.NotNil(t, v)
	q, err := in.Submit(make([]byte, 4), Xfer{User: "a"})
	require.NoError(t, err, "Submit after")

	f.panicIn.Store("CancelAll")
	v = adv11Panics(t, "CancelAll", func() { _ = d.CancelAll() })
	t.Logf("a Transport's CancelAll that panics: %v reaches Device.CancelAll's caller", v)
	assert.NotNil(t, v)
	assert.True(t, q.Pending())
	require.NoError(t, d.CancelAll(), "CancelAll after")
	c := Reap(t, ring, 1)[0]
	assert.Equal(t, "a", c.User)
	assert.ErrorIs(t, c.Err, ErrCanceled)

	_, err = in.Submit(make([]byte, 4), Xfer{User: "b"})
	require.NoError(t, err)
	f.panicIn.Store("Close")
	v = adv11Panics(t, "Close", func() { _ = d.Close() })
	t.Logf("a Transport's Close that panics: %v reaches Device.Close's caller", v)
	assert.NotNil(t, v)
	c = Reap(t, ring, 1)[0]
	assert.Equal(t, "b", c.User)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.ErrorIs(t, d.Close(), ErrClosed, "the Device is closed")
	assert.ErrorIs(t, d.CancelAll(), ErrClosed)
	_, err = in.Submit(make([]byte, 4), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
	assert.EqualValues(t, 1, f.closes.Load(), "the Transport is closed once")
	AssertNoMore(t, ring)
	AssertSettled(t, ring)
}

// TestAdv11TransportCompletesTwice: a Transport that completes a transfer
// twice (the second call is refused by the ring with ErrNotFound): the
// caller sees exactly one completion, the first.
func TestAdv11TransportCompletesTwice(t *testing.T) {
	CheckFDs(t)
	var second atomic.Value
	var ring *ioring.Ring
	d, _, ring := adv11NewTransportDev(t, func(q ioring.Request, buf []byte) {
		_ = ring.Complete(q, 1, nil)
		second.Store(ring.Complete(q, 2, nil))
	})
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	for i := range 3 {
		_, err := in.Submit(make([]byte, 4), Xfer{User: i})
		require.NoError(t, err)
		err, _ = second.Load().(error)
		assert.ErrorIs(t, err, ioring.ErrNotFound, "the second Complete")
	}
	for i, c := range Reap(t, ring, 3) {
		assert.Equal(t, i, c.User)
		assert.Equal(t, 1, c.N)
		assert.NoError(t, c.Err)
	}
	AssertNoMore(t, ring)
}

// TestAdv11TransportOvercount: a Transport that reports more bytes than
// the buffer holds. The Pump clamps such a count (a caller slicing its
// buffer with it would panic) and fails the transfer; a Device over a
// Transport of its own passes the count through to Endpoint.Transfer,
// Read and the completion: the caller's buf[:n] then panics. This test
// records what the Device does (see the report: a Transport is trusted,
// which the docs do not say).
func TestAdv11TransportOvercount(t *testing.T) {
	CheckFDs(t)
	var ring *ioring.Ring
	d, _, ring := adv11NewTransportDev(t, func(q ioring.Request, buf []byte) {
		_ = ring.Complete(q, len(buf)+100, nil)
	})
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	buf := make([]byte, 4)
	n, err := in.Read(ctx, buf)
	t.Logf("a Transport reporting %d bytes for a %d-byte buffer: Endpoint.Read returns n=%d, err=%v", len(buf)+100, len(buf), n, err)
	if n > len(buf) {
		assert.Error(t, err, "a count past the buffer is reported as a success: the caller's buf[:n] panics")
	}
	// Control clamps what it copies (no panic), whatever the count.
	v := adv11Panics(t, "Control", func() {
		_, _ = d.Control(ctx, Setup{RequestType: RequestIn}, make([]byte, 2))
	})
	assert.Nil(t, v, "Device.Control with an overcounting Transport")
}

// TestAdv11TransportDeadlineToken: a Transport whose cancel hook
// completes the transfer from inside the hook, canceled by every path at
// once (its deadline, its token, Request.Cancel, Device.CancelAll,
// Ring.CancelAll) from several goroutines: each transfer completes once,
// with the first cause (ErrTimeout for the deadline, ErrCanceled
// otherwise).
func TestAdv11TransportDeadlineToken(t *testing.T) {
	CheckFDs(t)
	d, _, ring := adv11NewTransportDev(t, nil)
	in, err := d.Endpoint(adv11In.Address)
	require.NoError(t, err)
	for round := range 20 {
		tok := ring.NewToken()
		var qs []ioring.Request
		for i := range 6 {
			q, err := in.Submit(make([]byte, 4), Xfer{User: i, Token: tok, Deadline: time.Duration(i%3) * 100 * time.Microsecond})
			require.NoError(t, err)
			qs = append(qs, q)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch g {
				case 0:
					assert.NoError(t, tok.Cancel())
				case 1:
					assert.NoError(t, d.CancelAll())
				case 2:
					assert.NoError(t, ring.CancelAll())
				case 3:
					for _, q := range qs {
						if err := q.Cancel(); err != nil {
							assert.ErrorIs(t, err, ioring.ErrNotFound)
						}
					}
				}
			}()
		}
		wg.Wait()
		seen := map[any]int{}
		for _, c := range Reap(t, ring, len(qs)) {
			seen[c.User]++
			assert.ErrorIs(t, c.Err, ErrCanceled, "round %d transfer %v", round, c.User)
		}
		for i := range qs {
			assert.Equal(t, 1, seen[i], "round %d transfer %d", round, i)
		}
	}
	AssertNoMore(t, ring)
	AssertSettled(t, ring)
}
