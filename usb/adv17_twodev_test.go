package usb_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdv17SecondOpenSameScanner: usbsim.Open on a scanner whose plug-in
// a live Device already holds (interface 0 claimed) is, on real hardware,
// a second claim of the same interface, which usbfs refuses (EBUSY). The
// simulator refuses it too (two Devices would share the plug-in's sockets
// and take each other's replies: framing errors and hangs before), and
// once the first Device is closed the plug-in opens again and works.
func TestAdv17SecondOpenSameScanner(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	d1, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d1.Close() })
	_, err = usbsim.Open(r, s)
	require.ErrorIs(t, err, syscall.EBUSY, "a second Open of a claimed plug-in")

	// d1 is unaffected, and once closed (twice: the second does nothing)
	// the plug-in can be opened again.
	out1, err := d1.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = out1.Transfer(ctx, []byte{usbsim.CmdNop, 1})
	cancel()
	require.NoError(t, err)
	require.NoError(t, d1.Close())
	_ = d1.Close()
	d2, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d2.Close() })
	out2, err := d2.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := out2.Transfer(ctx, []byte{usbsim.CmdNop, 2})
		cancel()
		require.NoError(t, err)
	}
}
