//go:build cgo && linux

package usbvm

import (
	"context"
	"testing"
	"time"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGousbRoundTrip checks that a cgo test binary (libusb, libudev and libc
// shipped into the guest by the runner) reaches the gadget through libusb,
// without a udev daemon.
func TestGousbRoundTrip(t *testing.T) {
	RequireGuest(t)
	g, dev := plugged(t, GadgetConfig{Name: "gousb", SerialNumber: "gousb"})
	in, _ := dev.Endpoint("Bulk", true)
	out, _ := dev.Endpoint("Bulk", false)

	ctx := gousb.NewContext()
	defer ctx.Close()
	d, err := ctx.OpenDeviceWithVIDPID(gousb.ID(g.Config.VendorID), gousb.ID(g.Config.ProductID))
	require.NoError(t, err)
	require.NotNil(t, d, "libusb does not list %s", dev.DevNode)
	defer d.Close()
	intf, done, err := d.DefaultInterface()
	require.NoError(t, err)
	defer done()
	epOut, err := intf.OutEndpoint(int(out.Address))
	require.NoError(t, err)
	epIn, err := intf.InEndpoint(int(in.Address & 0x7f))
	require.NoError(t, err)

	tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan ioResult, 1)
	go func() {
		buf := make([]byte, 512)
		n, err := g.BulkOut.Read(buf)
		got <- ioResult{n, buf[:max(n, 0)], err}
	}()
	n, err := epOut.WriteContext(tctx, []byte("via libusb"))
	require.NoError(t, err)
	assert.Equal(t, 10, n)
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, "via libusb", string(r.data))

	sent := make(chan error, 1)
	go func() {
		_, err := g.BulkIn.Write([]byte("to libusb"))
		sent <- err
	}()
	buf := make([]byte, 512)
	n, err = epIn.ReadContext(tctx, buf)
	require.NoError(t, err)
	assert.Equal(t, "to libusb", string(buf[:n]))
	require.NoError(t, <-sent)
}
