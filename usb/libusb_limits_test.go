//go:build cgo

package usb

import (
	"context"
	"testing"

	"github.com/google/gousb"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// TestLibusbControlLimit: libusb on Linux carries at most 4096 bytes in a
// control transfer's data stage and fails a longer one only when it runs;
// the backend refuses it up front (contract: bad input is refused before
// it is accepted), with nothing reaching libusb, and takes 4096.
func TestLibusbControlLimit(t *testing.T) {
	r, f, d, _, _ := newFakeDev(t)
	for _, n := range []int{libusbMaxControl + 1, 0xffff} {
		s := Setup{RequestType: RequestIn | RequestStandard | RecipientDevice, Request: 0x06, Value: 0x0100, Length: uint16(n)}
		buf := make([]byte, SetupSize+n)
		s.Put(buf)
		_, err := d.SubmitControl(buf, Xfer{})
		require.Error(t, err, "%d bytes", n)
		assert.ErrorIs(t, err, ioring.ErrInvalid, "%d bytes", n)
		assert.ErrorIs(t, err, ioring.ErrNotSupported, "%d bytes", n)
		_, err = d.Control(context.Background(), s, make([]byte, n))
		assert.ErrorIs(t, err, ioring.ErrInvalid, "Control, %d bytes", n)
		f.assertIdle(t)
	}
	assert.Zero(t, r.InFlight())

	// A short setup's Length decides, not the buffer's spare room.
	s := Setup{RequestType: RequestIn | RequestStandard | RecipientDevice, Request: 0x06, Value: 0x0100, Length: libusbMaxControl}
	buf := make([]byte, SetupSize+2*libusbMaxControl)
	s.Put(buf)
	_, err := d.SubmitControl(buf, Xfer{})
	require.NoError(t, err)
	c := f.next(t)
	assert.Len(t, c.buf, libusbMaxControl)
	c.answer <- fakeResult{n: 18}
	got := Reap(t, r, 1)[0]
	require.NoError(t, got.Err)
	assert.Equal(t, 18, got.N)

	// What libusb refuses anyway is an invalid argument, not an unknown
	// error.
	assert.ErrorIs(t, libusbError(gousb.ErrorInvalidParam), ioring.ErrInvalid)
}
