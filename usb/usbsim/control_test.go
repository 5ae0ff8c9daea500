//go:build linux

package usbsim_test

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// ctrlHost speaks the socketpair transport's endpoint 0 framing with
// plain system calls, as ControlEndpoint documents it.
type ctrlHost struct {
	t  *testing.T
	fd int
}

// request writes one request message: HeaderData and payload.
func (h ctrlHost) request(payload []byte) {
	h.t.Helper()
	n, err := unix.Write(h.fd, append([]byte{usbsim.HeaderData}, payload...))
	require.NoError(h.t, err)
	require.Equal(h.t, 1+len(payload), n)
}

// setup returns the setup packet s followed by data.
func setup(s usb.Setup, data []byte) []byte {
	b := make([]byte, usbsim.SetupSize, usbsim.SetupSize+len(data))
	s.Put(b)
	return append(b, data...)
}

// reply reads one reply and returns its header, sequence number and data.
func (h ctrlHost) reply() (byte, uint32, []byte) {
	h.t.Helper()
	var b [usbsim.ReplySize + usbsim.ControlMaxData]byte
	n, err := unix.Read(h.fd, b[:])
	require.NoError(h.t, err)
	require.GreaterOrEqual(h.t, n, usbsim.ReplySize, "a reply")
	return b[0], binary.LittleEndian.Uint32(b[1:]), b[usbsim.ReplySize:n]
}

// TestControlEndpointWire: the socketpair transport's endpoint 0 framing,
// request by request: answers carry the request's sequence number and an
// IN data stage of at most wLength bytes; malformed requests (no setup
// packet, an OUT data stage shorter or longer than wLength, an IN request
// with data) are refused with a stall reply and do not run; a hung device
// answers only after Resume; after Unplug the endpoint reads end of file.
func TestControlEndpointWire(t *testing.T) {
	s := newScanner(t, usbsim.Config{})
	ep, err := s.ControlEndpoint()
	require.NoError(t, err)
	assert.Equal(t, uint8(0), ep.Address)
	assert.Equal(t, usb.Control, ep.Type)
	assert.Equal(t, usbsim.ControlMaxData, ep.MaxTransfer)
	h := ctrlHost{t, ep.FD}

	h.request(setup(usb.Setup{RequestType: usb.RequestIn, Request: 0x06, Value: 0x0100, Length: 8}, nil))
	hdr, seq, data := h.reply()
	assert.Equal(t, byte(usbsim.HeaderAck), hdr)
	assert.Equal(t, uint32(1), seq)
	assert.Equal(t, []byte{18, 1, 0x00, 0x02, 0, 0, 0, 64}, data, "the first 8 bytes of the device descriptor")

	status := usb.Setup{RequestType: usb.RequestIn | usb.RequestVendor, Request: usbsim.VendorStatus, Length: usbsim.EventSize}
	refused := [][]byte{
		{},           // no setup packet
		{0x80, 0x06}, // part of one
		setup(usb.Setup{RequestType: usb.RequestVendor, Request: usbsim.VendorCommand, Length: 4}, usbsim.EchoCommand([]byte("no"))), // 3 of 4 bytes
		setup(usb.Setup{RequestType: usb.RequestVendor, Request: usbsim.VendorCommand, Length: 2}, usbsim.EchoCommand([]byte("no"))), // 3 for 2
		setup(status, []byte{1}), // IN with data
	}
	for i, msg := range refused {
		h.request(msg)
		hdr, seq, data := h.reply()
		assert.Equal(t, byte(usbsim.HeaderStall), hdr, "malformed request %d", i)
		assert.Equal(t, uint32(2+i), seq)
		assert.Empty(t, data)
	}
	h.request(setup(status, nil))
	hdr, _, data = h.reply()
	require.Equal(t, byte(usbsim.HeaderAck), hdr)
	e, err := usbsim.ParseEvent(data)
	require.NoError(t, err)
	assert.Zero(t, e.Job, "no refused command ran")

	s.Hang()
	h.request(setup(status, nil))
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		var b [64]byte
		_, _ = unix.Read(h.fd, b[:])
	}()
	select {
	case <-answered:
		t.Fatal("a hung device answered")
	case <-time.After(100 * time.Millisecond):
	}
	s.Resume()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("no answer after Resume")
	}

	require.NoError(t, s.Unplug())
	var b [16]byte
	n, err := unix.Read(h.fd, b[:])
	assert.NoError(t, err)
	assert.Zero(t, n, "end of file after the unplug")
	_, err = s.ControlEndpoint()
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
}
