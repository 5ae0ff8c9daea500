//go:build cgo

package usb

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
)

// The libusb backend against a fake libusb device (fakeLibusb,
// instrumented by adv8Fake), which records endpoint 0 calls that overlap
// in libusb and a close under a call.

// adv8DevData is what the fake's control and bulk IN calls write into the
// buffer they were given, once answered.
const adv8DevData = 0x5A

// adv8Fake is a fakeLibusb whose endpoint 0 requests (control, clear-halt,
// reset, the settings) all block in the fake until answered (as calls on
// f.calls; those that are not control transfers carry a made-up setup),
// and which counts the calls in progress: more than one on endpoint 0 at
// a time, or any at all when close is called, is recorded.
type adv8Fake struct {
	*fakeLibusb
	ep0       atomic.Int32 // endpoint 0 calls in progress
	bulk      atomic.Int32 // bulk calls in progress
	overlaps  atomic.Int32 // endpoint 0 calls begun while another ran
	closeBusy atomic.Int32 // close called while a call ran
	ep0Calls  atomic.Int32
	overlapMu sync.Mutex
	overlapOf []string // what overlapped; guarded by overlapMu
	running   []string // the endpoint 0 calls in progress; guarded by overlapMu
}

// adv8Kinds of the made-up setups of endpoint 0 requests that are not
// control transfers (RequestType 0xFF marks them).
const (
	adv8ClearHalt = iota + 1
	adv8Reset
	adv8SetConfig
	adv8Claim
	adv8Release
	adv8SetAlt
)

var adv8KindNames = map[uint8]string{adv8ClearHalt: "clear-halt", adv8Reset: "reset", adv8SetConfig: "set-config",
	adv8Claim: "claim", adv8Release: "release", adv8SetAlt: "set-alt"}

func (f *adv8Fake) enter(what string) {
	f.ep0Calls.Add(1)
	f.overlapMu.Lock()
	defer f.overlapMu.Unlock()
	if f.ep0.Add(1) > 1 && f.overlaps.Add(1) <= 10 {
		f.overlapOf = append(f.overlapOf, what+" while "+joinStrings(f.running))
	}
	f.running = append(f.running, what)
}

func (f *adv8Fake) exit(what string) {
	f.overlapMu.Lock()
	defer f.overlapMu.Unlock()
	f.ep0.Add(-1)
	for i, w := range f.running {
		if w == what {
			f.running = append(f.running[:i], f.running[i+1:]...)
			break
		}
	}
}

func joinStrings(s []string) string {
	var b bytes.Buffer
	for i, x := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(x)
	}
	return b.String()
}

// request is one endpoint 0 request that is not a control transfer.
func (f *adv8Fake) request(kind uint8, v uint16) error {
	what := adv8KindNames[kind]
	f.enter(what)
	defer f.exit(what)
	c := &fakeCall{ctx: context.Background(), setup: Setup{RequestType: 0xFF, Request: kind, Value: v}, answer: make(chan fakeResult, 1)}
	f.calls <- c
	return (<-c.answer).err
}

func (f *adv8Fake) control(s Setup, data []byte) (int, error) {
	f.enter("control")
	defer f.exit("control")
	n, err := f.fakeLibusb.control(s, data)
	if err == nil && s.IsIn() {
		// The device's data lands in the buffer libusb was given, maybe
		// long after the transfer completed.
		for i := range data[:min(max(n, 0), len(data))] {
			data[i] = adv8DevData
		}
	}
	return n, err
}

func (f *adv8Fake) transfer(ctx context.Context, addr uint8, buf []byte) (int, error) {
	f.bulk.Add(1)
	defer f.bulk.Add(-1)
	n, err := f.fakeLibusb.transfer(ctx, addr, buf)
	if err == nil && addr&0x80 != 0 {
		for i := range buf[:min(max(n, 0), len(buf))] {
			buf[i] = adv8DevData
		}
	}
	return n, err
}

func (f *adv8Fake) clearHalt(addr uint8) error { return f.request(adv8ClearHalt, uint16(addr)) }
func (f *adv8Fake) reset() error               { return f.request(adv8Reset, 0) }
func (f *adv8Fake) setConfig(value int) error  { return f.request(adv8SetConfig, uint16(value)) }
func (f *adv8Fake) claim(iface int, _ bool) error {
	return f.request(adv8Claim, uint16(iface))
}
func (f *adv8Fake) release(iface int, _ bool) error {
	return f.request(adv8Release, uint16(iface))
}
func (f *adv8Fake) setAlt(iface, alt int) error { return f.request(adv8SetAlt, uint16(iface<<8|alt)) }

func (f *adv8Fake) close() error {
	if f.ep0.Load() != 0 || f.bulk.Load() != 0 {
		f.closeBusy.Add(1)
	}
	return f.fakeLibusb.close()
}

var _ libusbSettings = (*adv8Fake)(nil)

// adv8Desc: configuration 1, interface 0 with alternate settings 0 and 1
// (the same bulk endpoints 0x02 OUT and 0x81 IN), claimed at 0.
func adv8Desc() DeviceDesc {
	eps := []EndpointDesc{{Address: 0x02, Type: Bulk, MaxPacketSize: 512}, {Address: 0x81, Type: Bulk, MaxPacketSize: 512}}
	return DeviceDesc{Bus: 1, Address: 8, VendorID: 0x1209, ProductID: 0x0008, Config: 1, Interface: 0, AltSetting: 0,
		Endpoints: eps, Configs: []ConfigDesc{{Value: 1, Interfaces: []InterfaceDesc{
			{Number: 0, Alternate: 0, Endpoints: eps}, {Number: 0, Alternate: 1, Endpoints: eps},
		}}}}
}

// newAdv8Dev opens a Device on an adv8Fake whose calls the test answers;
// at the end those left are answered, before and while the Device closes.
func newAdv8Dev(t *testing.T) (*ioring.Ring, *adv8Fake, *Device) {
	t.Helper()
	CheckFDs(t)
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })
	r := NewRing(t, 32)
	f := &adv8Fake{fakeLibusb: newFakeLibusb()}
	d := newLibusbDevice(r, adv8Desc(), f, false)
	quit, answered := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(quit); <-answered })
	t.Cleanup(func() { _ = d.Close() })
	t.Cleanup(func() {
		go func() {
			defer close(answered)
			for {
				select {
				case c := <-f.calls:
					adv4Answer(c, fakeResult{err: gousb.ErrorTimeout})
				case <-quit:
					return
				}
			}
		}()
	})
	return r, f, d
}

// TestAdv8LibusbClearHaltThenControl: a control transfer submitted while
// ClearHalt's CLEAR_FEATURE request is in libusb must wait for it
// (endpoint 0 runs one request at a time, see Device.SubmitControl), as
// ClearHalt waits for a control call. Device.ClearHalt holds the Device's
// lock only for reading and Pump.ClearHalt pauses only the halted
// endpoint, so endpoint 0's pump runs the control transfer at once.
func TestAdv8LibusbClearHaltThenControl(t *testing.T) {
	r, f, d := newAdv8Dev(t)
	halted := make(chan error, 1)
	go func() { halted <- d.ClearHalt(0x81) }()
	ch := f.next(t)
	require.Equal(t, Setup{RequestType: 0xFF, Request: adv8ClearHalt, Value: 0x81}, ch.setup)
	_, err := d.SubmitControl(adv4ControlIn(2), Xfer{User: "ctl"})
	require.NoError(t, err)
	select {
	case c := <-f.calls:
		t.Errorf("a control transfer (setup %+v) reached libusb while its clear-halt ran", c.setup)
		adv4Answer(c, fakeResult{n: 2})
	case <-time.After(Quiet):
	}
	adv4Answer(ch, fakeResult{})
	require.NoError(t, <-halted)
	select {
	case c := <-f.calls: // after the clear-halt, as it should be
		adv4Answer(c, fakeResult{n: 2})
	case <-time.After(Quiet):
	}
	got := Reap(t, r, 1)[0]
	assert.Equal(t, "ctl", got.User)

	// Two ClearHalts of different endpoints: each a request on endpoint 0.
	go func() { halted <- d.ClearHalt(0x81) }()
	ch = f.next(t)
	halted2 := make(chan error, 1)
	go func() { halted2 <- d.ClearHalt(0x02) }()
	select {
	case c := <-f.calls:
		t.Errorf("a second clear-halt (setup %+v) reached libusb while the first ran", c.setup)
		adv4Answer(c, fakeResult{})
	case <-time.After(Quiet):
	}
	adv4Answer(ch, fakeResult{})
	require.NoError(t, <-halted)
	select {
	case c := <-f.calls:
		adv4Answer(c, fakeResult{})
	case <-time.After(Quiet):
	}
	require.NoError(t, <-halted2)
	assert.Zero(t, f.overlaps.Load(), "endpoint 0 calls overlapping in libusb")
}
