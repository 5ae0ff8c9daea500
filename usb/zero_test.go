package usb

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// refusedAs returns a check that err refuses a value its constructor did
// not make: it wraps ioring.ErrInvalid and says where such values come
// from.
func refusedAs(t *testing.T, how string) func(what string, err error) {
	return func(what string, err error) {
		t.Helper()
		require.ErrorIs(t, err, ioring.ErrInvalid, what)
		assert.Contains(t, err.Error(), how, what)
	}
}

// A Device that Open or NewDevice did not make, nil or zero, is refused by
// every method with an error wrapping ioring.ErrInvalid: never a panic,
// and never an answer that pretends (ErrNotFound, ErrNotSupported). Desc
// and Configuration return zero values.
func TestZeroDevice(t *testing.T) {
	for name, d := range map[string]*Device{"nil": nil, "zero": new(Device)} {
		t.Run(name, func(t *testing.T) {
			refused := refusedAs(t, "make devices with Open or NewDevice")
			ctx, cancel := context.WithTimeout(context.Background(), Patience)
			defer cancel()
			_, err := d.Endpoint(0x81)
			refused("Endpoint", err)
			_, err = d.InEndpoint(0x81)
			refused("InEndpoint", err)
			_, err = d.OutEndpoint(0x01)
			refused("OutEndpoint", err)
			refused("ClearHalt", d.ClearHalt(0x81))
			refused("Reset", d.Reset())
			refused("CancelAll", d.CancelAll())
			_, err = d.SubmitControl(make([]byte, SetupSize), Xfer{})
			refused("SubmitControl", err)
			_, err = d.StartControl(make([]byte, SetupSize), Xfer{})
			refused("StartControl", err)
			_, err = d.Control(ctx, Setup{RequestType: RequestIn}, make([]byte, 2))
			refused("Control", err)
			_, err = d.GetStatus(ctx, RecipientDevice, 0)
			refused("GetStatus", err)
			_, err = d.StringDescriptor(ctx, 1)
			refused("StringDescriptor", err)
			_, err = d.AltSetting(0)
			refused("AltSetting", err)
			refused("SetConfiguration", d.SetConfiguration(1))
			refused("ClaimInterface", d.ClaimInterface(0, false))
			refused("ReleaseInterface", d.ReleaseInterface(0))
			refused("SetAltSetting", d.SetAltSetting(0, 0))
			refused("Close", d.Close())
			refused("Close again", d.Close())
			assert.Zero(t, d.Desc())
			assert.Zero(t, d.Configuration())
		})
	}
}

// An Endpoint that Device.Endpoint did not return, nil or zero, is refused
// by every method (a zero Endpoint's transfer used to panic on its nil
// Device), and so are nil and zero InEndpoints and OutEndpoints.
func TestZeroEndpoint(t *testing.T) {
	refused := refusedAs(t, "get endpoints from Device.Endpoint")
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	buf := make([]byte, 8)
	for name, e := range map[string]*Endpoint{"nil": nil, "zero": new(Endpoint)} {
		_, err := e.Submit(buf, Xfer{})
		refused(name+" Submit", err)
		_, err = e.Start(buf, Xfer{})
		refused(name+" Start", err)
		_, err = e.Transfer(ctx, buf)
		refused(name+" Transfer", err)
		_, err = e.Read(ctx, buf)
		refused(name+" Read", err)
		_, err = e.Write(ctx, buf)
		refused(name+" Write", err)
		assert.Zero(t, e.Desc(), name)
	}
	for name, in := range map[string]*InEndpoint{"nil": nil, "zero": new(InEndpoint)} {
		_, err := in.Read(ctx, buf)
		refused(name+" InEndpoint.Read", err)
		_, err = in.Submit(buf, Xfer{})
		refused(name+" InEndpoint.Submit", err)
		_, err = in.Start(buf, Xfer{})
		refused(name+" InEndpoint.Start", err)
		assert.Zero(t, in.Desc(), name)
	}
	for name, out := range map[string]*OutEndpoint{"nil": nil, "zero": new(OutEndpoint)} {
		_, err := out.Write(ctx, buf)
		refused(name+" OutEndpoint.Write", err)
		_, err = out.Submit(buf, Xfer{})
		refused(name+" OutEndpoint.Submit", err)
		_, err = out.Start(buf, Xfer{})
		refused(name+" OutEndpoint.Start", err)
		assert.Zero(t, out.Desc(), name)
	}
}

// A Pump that NewPump did not make, and a Transfer that no Pump made, are
// refused: a zero Pump's Reset and Close used to call a nil Runner, a zero
// Transfer's Do to lock a nil endpoint.
func TestZeroPump(t *testing.T) {
	refused := refusedAs(t, "make pumps with NewPump")
	for name, p := range map[string]*Pump{"nil": nil, "zero": new(Pump)} {
		_, err := p.Submit(pumpIn, make([]byte, 8), Xfer{}, true)
		refused(name+" Submit", err)
		refused(name+" CancelAll", p.CancelAll())
		refused(name+" ClearHalt", p.ClearHalt(pumpIn))
		refused(name+" Reset", p.Reset())
		refused(name+" SetConfiguration", p.SetConfiguration(1))
		refused(name+" ClaimInterface", p.ClaimInterface(0, false))
		refused(name+" ReleaseInterface", p.ReleaseInterface(0, false))
		refused(name+" SetAltSetting", p.SetAltSetting(0, 0))
		refused(name+" Close", p.Close())
	}

	refused = refusedAs(t, "a Pump makes transfers")
	for name, tr := range map[string]*Transfer{"nil": nil, "zero": new(Transfer)} {
		assert.Zero(t, tr.Endpoint(), name)
		assert.Nil(t, tr.Buf(), name)
		assert.False(t, tr.OnCancel(func() {}), "%s: no I/O may start", name)
		_, err := tr.Do(ioring.Nop())
		refused(name+" Do", err)
	}
}
