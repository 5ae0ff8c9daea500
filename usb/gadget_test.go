//go:build cgo && linux

package usb

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/internal/usbvm"
)

// TestGadget runs the default transport (usbfs on Linux) against a real Linux USB stack: a
// FunctionFS gadget on dummy_hcd inside the usbvm guest (make test-usbvm).
// Elsewhere no such device is attached and it skips.
func TestGadget(t *testing.T) {
	usbvm.RequireGuest(t)
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{Name: "usbpkg", SerialNumber: "usbpkg"})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, g.Close()) })
	require.NoError(t, g.Plug())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = g.HostDevice(ctx)
	require.NoError(t, err)

	r := NewRing(t, 64)
	d, err := Open(r, g.Config.VendorID, g.Config.ProductID)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	desc := d.Desc()
	t.Logf("opened %v %q %q: %v", desc, desc.Manufacturer, desc.Product, desc.Endpoints)
	assert.Equal(t, "usbpkg", desc.Serial)
	var in, out *Endpoint
	for _, ed := range desc.Endpoints {
		e, err := d.Endpoint(ed.Address)
		require.NoError(t, err)
		switch {
		case ed.Type == Bulk && ed.IsIn():
			in = e
		case ed.Type == Bulk:
			out = e
		}
	}
	require.NotNil(t, in, "bulk IN")
	require.NotNil(t, out, "bulk OUT")

	// OUT, then IN.
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 512)
		n, _ := g.BulkOut.Read(buf)
		got <- string(buf[:max(n, 0)])
	}()
	n, err := out.Transfer(ctx, []byte("to the device"))
	require.NoError(t, err)
	assert.Equal(t, 13, n)
	assert.Equal(t, "to the device", <-got)
	go func() { _, _ = g.BulkIn.Write([]byte("to the host")) }()
	buf := make([]byte, 512)
	n, err = in.Transfer(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "to the host", string(buf[:n]))

	// A bulk IN the device never answers: canceled by its token.
	tok := r.NewToken()
	_, err = in.Submit(buf, Xfer{Token: tok, User: "pending"})
	require.NoError(t, err)
	time.Sleep(Quiet)
	t0 := time.Now()
	require.NoError(t, tok.Cancel())
	c := Reap(t, r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrCanceled)
	t.Logf("cancel of a pending bulk IN: %v", time.Since(t0))

	// Stall: the gadget reads its IN endpoint file.
	q, err := in.Start(buf, Xfer{})
	require.NoError(t, err)
	time.Sleep(Quiet)
	_, _ = g.BulkIn.Read(make([]byte, 1))
	c, err = q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrStall)
	require.NoError(t, d.ClearHalt(in.Desc().Address))
	go func() { _, _ = g.BulkIn.Write([]byte("after the stall")) }()
	n, err = in.Transfer(ctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "after the stall", string(buf[:n]))

	// Unplug under pending transfers.
	for i := range 4 {
		_, err := in.Submit(make([]byte, 512), Xfer{User: i})
		require.NoError(t, err)
	}
	time.Sleep(Quiet)
	require.NoError(t, g.Unplug())
	for _, c := range Reap(t, r, 4) {
		assert.True(t, errors.Is(c.Err, ErrNoDevice) || errors.Is(c.Err, ErrCanceled),
			"transfer %v after unplug: %v", c.User, c.Err)
		assert.ErrorIs(t, c.Err, ErrNoDevice, "transfer %v after unplug", c.User)
	}
}
