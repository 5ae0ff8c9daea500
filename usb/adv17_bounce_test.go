package usb_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdv17BounceAfterUnplug: an IN transfer shorter than the message
// leaves the rest of it in the host's bounce buffer for the next
// transfers. Once the scanner is unplugged the Device's transfers fail
// with ErrNoDevice for good (usbsim.Open's doc): the rest of a message of
// the device that went away is not delivered as if it were still there.
func TestAdv17BounceAfterUnplug(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	sd.send(t, usbsim.EchoCommand([]byte("abcdef")))
	got := sd.read(t, make([]byte, 2))
	require.Equal(t, "ab", string(got))
	require.NoError(t, sd.s.Unplug())
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, 2)
	n, err := sd.in.Transfer(ctx, buf)
	assert.ErrorIs(t, err, ErrNoDevice, "read after Unplug: %d bytes %q", n, buf[:n])
	n, err = sd.in.Transfer(ctx, buf)
	assert.ErrorIs(t, err, ErrNoDevice, "second read after Unplug: %d bytes %q", n, buf[:n])
}

// TestAdv17QueuedAfterUnplug: the same for a whole message the device
// sent before Unplug and the host had not read yet (no bounce involved).
func TestAdv17QueuedAfterUnplug(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	sd.send(t, usbsim.EchoCommand([]byte("abcdef")))
	time.Sleep(Quiet) // the echo is on the socket
	require.NoError(t, sd.s.Unplug())
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, 4096)
	n, err := sd.in.Transfer(ctx, buf)
	assert.ErrorIs(t, err, ErrNoDevice, "read after Unplug: %d bytes %q", n, buf[:n])
}
