package usb_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// An error says "usb: " once, whatever layers of this package it went
// through, and still matches its sentinel.
func TestMessagesOnePrefix(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	_, err := sd.d.Endpoint(0x7f)
	require.ErrorIs(t, err, ErrNotFound)
	msg := err.Error()
	assert.Equal(t, 1, strings.Count(msg, "usb: "), "one prefix in %q", msg)
	assert.True(t, strings.HasPrefix(msg, "usb: "), "%q", msg)
	// The endpoints that exist are named.
	for _, addr := range []uint8{usbsim.AddrBulkOut, usbsim.AddrBulkIn, usbsim.AddrInterruptIn} {
		assert.Contains(t, msg, fmt.Sprintf("%#02x", addr), "%q lists the endpoints", msg)
	}

	// A sentinel wrapped by a lower call of the package, then by Open.
	_, err = Open(nil, 0x1209, 0x0001)
	require.Error(t, err)
	assert.Equal(t, 1, strings.Count(err.Error(), "usb: "), "one prefix in %q", err.Error())
}

func TestParseID(t *testing.T) {
	for s, want := range map[string][2]uint16{
		"1209:0001": {0x1209, 1}, "0x04a9:0x2206": {0x04a9, 0x2206},
		"0X04A9:0X2206": {0x04a9, 0x2206}, "0x04a9:0X2206": {0x04a9, 0x2206},
	} {
		vid, pid, ok := ParseID(s)
		assert.True(t, ok, s)
		assert.Equal(t, want, [2]uint16{vid, pid}, s)
	}
	for _, s := range []string{"1209", "12:zz", "10000:1", ":1", "", "0x:1", "0X:1", "0x0x12:1"} {
		_, _, ok := ParseID(s)
		assert.False(t, ok, "%q", s)
	}
}
