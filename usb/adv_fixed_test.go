package usb_test

// Bugs adversarial use found, fixed since: each test failed before its
// fix, and says what broke and where (line numbers of the code before).

import (
	"context"
	"errors"
	"strings"
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

// advRunner is a Runner (and a Configurer) whose Run is run.
type advRunner struct {
	run   func(t *Transfer) (int, error)
	runs  atomic.Int32
	armed atomic.Int32 // advBlockingRunner's Runs that armed their OnCancel
}

func (r *advRunner) Check(EndpointDesc, []byte) error { return nil }
func (r *advRunner) Run(t *Transfer) (int, error) {
	r.runs.Add(1)
	if r.run == nil {
		return len(t.Buf()), nil
	}
	return r.run(t)
}
func (r *advRunner) ClearHalt(EndpointDesc) error       { return nil }
func (r *advRunner) Reset() error                       { return nil }
func (r *advRunner) Close() error                       { return nil }
func (r *advRunner) SetConfiguration(int) error         { return nil }
func (r *advRunner) ClaimInterface(int, bool) error     { return nil }
func (r *advRunner) ReleaseInterface(int, bool) error   { return nil }
func (r *advRunner) SetAltSetting(iface, alt int) error { return nil }

var (
	advIn  = EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}
	advOut = EndpointDesc{Address: 0x02, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}
)

// TestAdvOnCancelStopOnce: Transfer.OnCancel promises that "a cancel
// of t from then on calls stop, once". A transfer canceled by
// Request.Cancel, whose I/O takes a while to end, and then by a later
// Ring.CancelAll (and Ring.Close) has stop called once. (Written when the
// ring called a foreign request's hook again on CancelAll/Close and the
// Pump's hook, Transfer.cancel, called t.stop each time: stop ran twice.
// The ring now runs each hook once, and Transfer.cancel keeps its guard.)
func TestAdvOnCancelStopOnce(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	var stops atomic.Int32
	stopped := make(chan struct{}, 4)
	release := make(chan struct{})
	r := &advRunner{run: func(tr *Transfer) (int, error) {
		if !tr.OnCancel(func() { stops.Add(1); stopped <- struct{}{} }) {
			return 0, ErrCanceled
		}
		<-stopped
		<-release // the interrupted I/O takes a moment to end
		return 0, ErrCanceled
	}}
	p := NewPump(ring, []EndpointDesc{advIn}, r)
	defer func() { require.NoError(t, p.Close()) }()
	q, err := p.Submit(advIn, make([]byte, 8), Xfer{}, true)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.runs.Load() == 1 }, Patience, time.Millisecond)
	time.Sleep(Quiet) // Run armed OnCancel
	require.NoError(t, q.Cancel())
	require.Eventually(t, func() bool { return stops.Load() == 1 }, Patience, time.Millisecond)
	require.NoError(t, ring.CancelAll()) // finds q canceled already: nothing left to do
	time.Sleep(Quiet)
	assert.EqualValues(t, 1, stops.Load(), "OnCancel's stop calls for one transfer")
	close(release)
	ctx, cancel := testContext()
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrCanceled)
}

// TestAdvTransferEndedContext: docs/contract.md ("Contexts follow one
// rule"): wherever a context is accepted, synchronous wrappers included,
// "a context that has already ended starts nothing" (ioring.Ring.Do
// checks ctx.Err() before Start, ioring/ring.go Do; minidrv was fixed for
// the same rule). Endpoint.Transfer (usb/device.go Transfer) and
// Device.Control (usb/control.go Control) Start the transfer first and
// only then Wait(ctx): the pump may run it on the device before the wait
// cancels it, so an OUT transfer under an ended context reaches the device
// and may even report success. Expected: ErrCanceled, 0 bytes, Run never
// called; actual: Run called (the data went out) for some of the calls.
func TestAdvTransferEndedContext(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	r := &advRunner{}
	d := NewDevice(DeviceDesc{Endpoints: []EndpointDesc{advOut}}, NewPump(ring, []EndpointDesc{advOut}, r))
	defer func() { require.NoError(t, d.Close()) }()
	out, err := d.Endpoint(advOut.Address)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	succeeded := 0
	for i := 0; i < 200 && r.runs.Load() == 0; i++ {
		n, err := out.Transfer(ctx, []byte("must not go out"))
		if err == nil {
			succeeded++
		} else {
			assert.ErrorIs(t, err, ErrCanceled)
			assert.Zero(t, n)
		}
		time.Sleep(time.Millisecond) // the pump goroutine back to waiting
	}
	assert.Zero(t, r.runs.Load(), "transfers run on the device under an ended context")
	assert.Zero(t, succeeded, "transfers that succeeded under an ended context")
}

// TestAdvTransferNilContext: contract rule 7: "A nil context is
// refused where nothing has started (Do)" with ErrInvalid. Endpoint.
// Transfer and Device.Control take nil and start the transfer
// (usb/device.go Transfer calls Start then q.Wait(nil), which waits
// forever: a hung device then hangs the caller with no way to cancel
// but CancelAll). Expected: an error wrapping ioring.ErrInvalid and
// nothing sent; actual: the transfer runs.
func TestAdvTransferNilContext(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	//lint:ignore SA1012 a nil context is the bad input under test
	n, err := sd.out.Transfer(nil, usbsim.EchoCommand([]byte("nil ctx"))) //nolint:staticcheck
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Transfer(nil ctx): %d bytes", n)
	//lint:ignore SA1012 a nil context is the bad input under test
	_, err = sd.d.Control(nil, Setup{RequestType: RequestIn, Request: 0x06, Value: 0x0100}, make([]byte, 18)) //nolint:staticcheck
	assert.ErrorIs(t, err, ioring.ErrInvalid, "Control(nil ctx)")
}

// TestAdvEndpointBackAtItsSetting: Device.Endpoint's doc says an
// Endpoint "fails with ErrNotFound while its interface is released or at
// another alternate setting", and the same *Endpoint comes back "while the
// endpoint's descriptor stays the same". When another alternate setting
// has an endpoint at the same address with another descriptor (a larger
// wMaxPacketSize, common for isochronous/bulk alt settings), switching
// 0 -> 1 -> 0 leaves the Endpoint of setting 0 inactive for good:
// setEndpointsLocked (usb/setting.go) keeps one *Endpoint per address in
// byAddr, overwritten by setting 1's, so back at setting 0 a third
// Endpoint is made and the first one fails with ErrNotFound although its
// setting is the current one. Expected: the Endpoint of setting 0 works
// again (and Device.Endpoint returns it); actual: ErrNotFound.
func TestAdvEndpointBackAtItsSetting(t *testing.T) {
	CheckFDs(t)
	ring := NewRing(t, 16)
	small := EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 64, MaxTransfer: 4096}
	big := EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 4096}
	desc := DeviceDesc{
		Config: 1, Interface: 0, AltSetting: 0,
		Endpoints: []EndpointDesc{small},
		Configs: []ConfigDesc{{Value: 1, Interfaces: []InterfaceDesc{
			{Number: 0, Alternate: 0, Endpoints: []EndpointDesc{small}},
			{Number: 0, Alternate: 1, Endpoints: []EndpointDesc{big}},
		}}},
	}
	d := NewDevice(desc, NewPump(ring, []EndpointDesc{small}, &advRunner{}))
	defer func() { require.NoError(t, d.Close()) }()
	e0, err := d.Endpoint(0x81)
	require.NoError(t, err)
	require.NoError(t, d.SetAltSetting(0, 1))
	_, err = e0.Transfer(context.Background(), make([]byte, 8))
	require.ErrorIs(t, err, ErrNotFound, "at the other setting")
	require.NoError(t, d.SetAltSetting(0, 0))
	ctx, cancel := testContext()
	defer cancel()
	n, err := e0.Transfer(ctx, make([]byte, 8))
	assert.NoError(t, err, "the Endpoint of setting 0, back at setting 0")
	assert.Equal(t, 8, n)
	again, err := d.Endpoint(0x81)
	require.NoError(t, err)
	assert.Same(t, e0, again, "Device.Endpoint at the same setting, same descriptor")
}

// TestAdvSimHotplugNilContext: usbsim's Hotplug has "the methods and
// errors of usb.Hotplug", whose Next takes a nil context as one that never
// ends (q.Wait(nil)). usbsim's Hotplug.Next (usb/usbsim/hotplug.go, the
// select on ctx.Done()) calls a method of the nil interface and panics
// when no event is queued. Expected: Next(nil) waits, and returns
// ErrClosed once the watcher is closed; actual: a nil-pointer panic.
func TestAdvSimHotplugNilContext(t *testing.T) {
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer s.Close()
	h, err := s.WatchHotplug()
	require.NoError(t, err)
	type result struct {
		err      error
		panicked any
	}
	done := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if v := recover(); v != nil {
				done <- result{panicked: v}
			}
		}()
		//lint:ignore SA1012 a nil context is the bad input under test
		_, err := h.Next(nil) //nolint:staticcheck
		done <- result{err: err}
	}()
	time.Sleep(Quiet)
	require.NoError(t, h.Close())
	var res result
	select {
	case res = <-done:
	case <-time.After(Patience):
		t.Fatal("Next(nil) did not return after Close")
	}
	wg.Wait()
	assert.Nil(t, res.panicked, "Next(nil) panicked")
	if res.panicked == nil {
		assert.True(t, errors.Is(res.err, ErrClosed), "Next(nil) after Close: %v", res.err)
	}
}

// TestAdvSimLongSerial: a string descriptor's bLength is one byte, so
// a string holds at most 126 UTF-16 units. usbsim takes any Config.Serial
// (usb/usbsim/scanner.go newScanner does not check it) and builds its
// string descriptor with byte(2 + 2*len(u)) (usb/usbsim/control.go
// descriptor), which wraps past 126: a serial of 200 characters is
// announced as 72 (bLength 146), and Device.StringDescriptor returns a
// truncated serial with no error while Desc().Serial and the hotplug
// events carry the whole one. Expected: NewScanner refuses the serial
// (ErrInvalid), or the descriptor and Desc agree; actual: a silently
// truncated serial.
func TestAdvSimLongSerial(t *testing.T) {
	serial := strings.Repeat("S", 200)
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096, Serial: serial})
	if err != nil {
		assert.ErrorIs(t, err, ioring.ErrInvalid)
		return
	}
	defer s.Close()
	r := NewRing(t, 16)
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	defer d.Close()
	ctx, cancel := testContext()
	defer cancel()
	got, err := d.StringDescriptor(ctx, 3)
	if err == nil {
		assert.Equal(t, d.Desc().Serial, got, "the serial string descriptor against Desc().Serial (%d vs %d characters)", len(got), len(d.Desc().Serial))
	}
}
