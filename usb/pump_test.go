package usb

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// funcRunner is a Runner whose Run is run; it counts its Close calls.
type funcRunner struct {
	run    func(t *Transfer) (int, error)
	closed atomic.Int32
}

func (r *funcRunner) Check(EndpointDesc, []byte) error { return nil }
func (r *funcRunner) Run(t *Transfer) (int, error)     { return r.run(t) }
func (r *funcRunner) ClearHalt(EndpointDesc) error     { return nil }
func (r *funcRunner) Reset() error                     { return nil }
func (r *funcRunner) Close() error                     { r.closed.Add(1); return nil }

var (
	pumpIn  = EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512}
	pumpIn2 = EndpointDesc{Address: 0x82, Type: Bulk, MaxPacketSize: 512}
	pumpCtl = EndpointDesc{Address: 0, Type: Control, MaxPacketSize: 64}
)

// newPumpRing returns a ring for a Pump's tests, closed at the end.
func newPumpRing(t *testing.T) *ioring.Ring {
	ring, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		t.Skipf("no ring on this system: %v", err)
	}
	t.Cleanup(func() { ring.Close() })
	return ring
}

// pumpWait runs one transfer of buf on ep through p and returns its
// completion.
func pumpWait(t *testing.T, p *Pump, ep EndpointDesc, buf []byte) ioring.Completion {
	t.Helper()
	q, err := p.Submit(ep, buf, Xfer{}, true)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	return c
}

// A Runner that reports a count outside the transfer's data, negative or
// past the end of the buffer, still completes its transfer, with a count
// a caller can slice its buffer with and an error that says so.
func TestPumpBadCount(t *testing.T) {
	ring := newPumpRing(t)
	var n atomic.Int64
	r := &funcRunner{run: func(*Transfer) (int, error) { return int(n.Load()), nil }}
	p := NewPump(ring, []EndpointDesc{pumpIn, pumpCtl}, r)
	defer p.Close()
	for _, tc := range []struct {
		ep        EndpointDesc
		buf, n, w int
	}{
		{pumpIn, 8, -3, 0},
		{pumpIn, 10, 110, 10},
		{pumpCtl, SetupSize + 2, 100, 2},
	} {
		n.Store(int64(tc.n))
		c := pumpWait(t, p, tc.ep, make([]byte, tc.buf))
		assert.Equal(t, tc.w, c.N, "%d bytes reported", tc.n)
		assert.ErrorContains(t, c.Err, fmt.Sprintf("reported %d bytes", tc.n))
	}
	n.Store(4)
	c := pumpWait(t, p, pumpIn, make([]byte, 8))
	assert.Equal(t, 4, c.N)
	assert.NoError(t, c.Err)
}

// A Runner's Run that panics fails its transfer with a *RunPanicError; one
// that ends its goroutine (runtime.Goexit) fails it with ErrRunExited.
// Either way the endpoint goes on with its next transfer, and Close stops
// every pump (TestMain checks that no goroutine is left).
func TestPumpRunPanicsOrExits(t *testing.T) {
	ring := newPumpRing(t)
	var calls atomic.Int32
	r := &funcRunner{run: func(*Transfer) (int, error) {
		switch calls.Add(1) {
		case 1:
			panic("run 1")
		case 2:
			runtime.Goexit()
		}
		return 1, nil
	}}
	p := NewPump(ring, []EndpointDesc{pumpIn}, r)
	c := pumpWait(t, p, pumpIn, make([]byte, 8))
	var pe *RunPanicError
	require.ErrorAs(t, c.Err, &pe)
	assert.Equal(t, "run 1", pe.Value)
	assert.NotEmpty(t, pe.Stack)
	assert.Zero(t, c.N)
	c = pumpWait(t, p, pumpIn, make([]byte, 8))
	assert.ErrorIs(t, c.Err, ErrRunExited)
	c = pumpWait(t, p, pumpIn, make([]byte, 8))
	assert.NoError(t, c.Err)
	assert.Equal(t, 1, c.N)
	require.NoError(t, p.Close())
	assert.EqualValues(t, 1, r.closed.Load())
}

// A Runner that says the device is gone with a wrapped ErrNoDevice marks
// it gone, as the plain value does: later submissions are refused.
func TestPumpWrappedNoDevice(t *testing.T) {
	ring := newPumpRing(t)
	r := &funcRunner{run: func(*Transfer) (int, error) {
		return 0, fmt.Errorf("backend: read: %w", ErrNoDevice)
	}}
	p := NewPump(ring, []EndpointDesc{pumpIn}, r)
	defer p.Close()
	c := pumpWait(t, p, pumpIn, make([]byte, 8))
	require.ErrorIs(t, c.Err, ErrNoDevice)
	_, err := p.Submit(pumpIn, make([]byte, 8), Xfer{}, true)
	assert.ErrorIs(t, err, ErrNoDevice)
}

// A Runner's interruption (Transfer.OnCancel) that ends its goroutine
// ends Close's goroutine, but not the Close: every transfer is canceled,
// the pumps stop and the Runner is closed.
func TestPumpCloseInterruptionExits(t *testing.T) {
	ring := newPumpRing(t)
	var running sync.WaitGroup
	running.Add(2)
	r := &funcRunner{run: func(t *Transfer) (int, error) {
		stopped := make(chan struct{})
		var once sync.Once
		exit := t.Endpoint().Address == pumpIn.Address
		t.OnCancel(func() {
			once.Do(func() { close(stopped) })
			if exit {
				runtime.Goexit()
			}
		})
		running.Done()
		<-stopped
		return 0, ErrCanceled
	}}
	p := NewPump(ring, []EndpointDesc{pumpIn, pumpIn2}, r)
	var qs []ioring.Request
	for _, ep := range []EndpointDesc{pumpIn, pumpIn2} {
		q, err := p.Submit(ep, make([]byte, 8), Xfer{}, false)
		require.NoError(t, err)
		qs = append(qs, q)
	}
	running.Wait()
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Close()
	}()
	<-done
	dst := make([]ioring.Completion, 2)
	got := 0
	for got < 2 {
		n, err := ring.Reap(dst[got:], Patience)
		require.NoError(t, err)
		require.NotZero(t, n, "both transfers complete")
		for _, c := range dst[got : got+n] {
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}
		got += n
	}
	require.Eventually(t, func() bool { return r.closed.Load() == 1 }, Patience, Quiet/10, "the Runner is closed")
	assert.False(t, qs[0].Pending() || qs[1].Pending())
}

// A string descriptor whose bLength is under 2 (the header alone) is
// refused as malformed, not decoded (bLength 0 made a negative length).
func TestStringDescriptorMalformed(t *testing.T) {
	ring := newPumpRing(t)
	var reply atomic.Value // []byte: the answer to a string descriptor other than 0
	r := &funcRunner{run: func(t *Transfer) (int, error) {
		s, _ := ParseSetup(t.Buf())
		b := []byte{4, 3, 0x09, 0x04} // descriptor 0: US English
		if s.Value&0xff != 0 {
			b = reply.Load().([]byte)
		}
		return copy(t.Buf()[SetupSize:], b), nil
	}}
	d := NewDevice(DeviceDesc{}, NewPump(ring, []EndpointDesc{pumpCtl}, r))
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	for _, b := range [][]byte{{0, 3}, {1, 3}, {0, 3, 'a', 0}} {
		reply.Store(b)
		_, err := d.StringDescriptor(ctx, 1)
		assert.ErrorContains(t, err, "malformed", "% x", b)
	}
	reply.Store([]byte{6, 3, 'o', 0, 'k', 0})
	s, err := d.StringDescriptor(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, "ok", s)
}

// An address is an endpoint's whole: 0x91 is not 0x81 (the index of a
// Pump's endpoints ignores bits 4 to 6, which no endpoint has set).
func TestPumpAddressWhole(t *testing.T) {
	ring := newPumpRing(t)
	r := &funcRunner{run: func(*Transfer) (int, error) { return 0, nil }}
	p := NewPump(ring, []EndpointDesc{pumpIn}, r)
	defer p.Close()
	_, err := p.Submit(EndpointDesc{Address: 0x91, Type: Bulk}, make([]byte, 8), Xfer{}, true)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.PanicsWithValue(t, "usb: NewPump: endpoint address 0x11 has reserved bits set", func() {
		NewPump(ring, []EndpointDesc{{Address: 0x01, Type: Bulk}, {Address: 0x11, Type: Bulk}}, r)
	})
}

// NewPump and NewDevice refuse what would fail later, in a pump or at the
// first transfer: a nil ring, Runner or Transport.
func TestPumpNilParts(t *testing.T) {
	ring := newPumpRing(t)
	r := &funcRunner{run: func(*Transfer) (int, error) { return 0, nil }}
	assert.PanicsWithValue(t, "usb: NewPump: nil ring or Runner", func() { NewPump(nil, []EndpointDesc{pumpIn}, r) })
	assert.PanicsWithValue(t, "usb: NewPump: nil ring or Runner", func() { NewPump(ring, []EndpointDesc{pumpIn}, nil) })
	assert.PanicsWithValue(t, "usb: NewDevice: nil Transport", func() { NewDevice(DeviceDesc{}, nil) })
}

// A Runner's interruption (Transfer.OnCancel) that panics is a cancel hook
// that panicked: Device.CancelAll and Close report it as the ring does, a
// *ioring.HookPanicError (CancelAll used to return nil), and the transfer
// is canceled all the same.
func TestCancelAllHookPanic(t *testing.T) {
	ring := newPumpRing(t)
	running := make(chan struct{}, 1)
	r := &funcRunner{run: func(t *Transfer) (int, error) {
		stopped := make(chan struct{})
		var once sync.Once
		t.OnCancel(func() {
			once.Do(func() { close(stopped) })
			panic("stop boom")
		})
		running <- struct{}{}
		<-stopped
		return 0, ErrCanceled
	}}
	d := NewDevice(DeviceDesc{Endpoints: []EndpointDesc{pumpIn}}, NewPump(ring, []EndpointDesc{pumpIn}, r))
	ep, err := d.Endpoint(pumpIn.Address)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()

	q, err := ep.Start(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	<-running
	var hp *ioring.HookPanicError
	require.ErrorAs(t, d.CancelAll(), &hp)
	assert.Equal(t, "stop boom", hp.Value)
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)

	q, err = ep.Start(make([]byte, 8), Xfer{})
	require.NoError(t, err)
	<-running
	hp = nil
	require.ErrorAs(t, d.Close(), &hp, "Close reports it, and closes")
	assert.Equal(t, "stop boom", hp.Value)
	c, err = q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.EqualValues(t, 1, r.closed.Load())
	assert.ErrorIs(t, d.CancelAll(), ErrClosed)
	AssertSettled(t, ring)
}
