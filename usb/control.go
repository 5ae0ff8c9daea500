package usb

import (
	"context"
	"encoding/binary"
	"unicode/utf16"

	"github.com/cancelio/cancelio/ioring"
)

// SetupSize is the length of a control transfer's setup packet, which
// starts the buffer of SubmitControl.
const SetupSize = 8

// Setup is the setup packet of a control transfer (USB 2.0 §9.3,
// struct usb_ctrlrequest): what the host asks of the device on endpoint 0.
type Setup struct {
	// RequestType is bmRequestType: the direction (RequestIn or
	// RequestOut), the type (RequestStandard, RequestClass, RequestVendor)
	// and the recipient (RecipientDevice...), or-ed together.
	RequestType uint8
	Request     uint8  // bRequest
	Value       uint16 // wValue
	Index       uint16 // wIndex
	Length      uint16 // wLength: the most bytes the data stage moves
}

// The fields of Setup.RequestType.
const (
	RequestOut      = 0x00 // host to device (or no data stage)
	RequestIn       = 0x80 // device to host
	RequestStandard = 0x00
	RequestClass    = 0x20
	RequestVendor   = 0x40

	RecipientDevice    = 0x00
	RecipientInterface = 0x01
	RecipientEndpoint  = 0x02
	RecipientOther     = 0x03
)

// IsIn reports whether the request's data stage goes from the device to
// the host.
func (s Setup) IsIn() bool { return s.RequestType&RequestIn != 0 }

// Put writes s into b[:SetupSize], little-endian as on the bus. It panics
// if b is shorter.
func (s Setup) Put(b []byte) {
	_ = b[SetupSize-1]
	b[0], b[1] = s.RequestType, s.Request
	binary.LittleEndian.PutUint16(b[2:], s.Value)
	binary.LittleEndian.PutUint16(b[4:], s.Index)
	binary.LittleEndian.PutUint16(b[6:], s.Length)
}

// ParseSetup reads the setup packet at the start of b; ok is false when b
// is shorter than SetupSize.
func ParseSetup(b []byte) (s Setup, ok bool) {
	if len(b) < SetupSize {
		return Setup{}, false
	}
	return Setup{
		RequestType: b[0],
		Request:     b[1],
		Value:       binary.LittleEndian.Uint16(b[2:]),
		Index:       binary.LittleEndian.Uint16(b[4:]),
		Length:      binary.LittleEndian.Uint16(b[6:]),
	}, true
}

// controlDesc describes endpoint 0 to a Transport: a control transfer is
// a Submit on it whose buffer starts with the setup packet.
var controlDesc = EndpointDesc{Address: 0, Type: Control}

// SubmitControl starts a control transfer on endpoint 0 as a request of
// the ring, like Endpoint.Submit: buf starts with the setup packet
// (Setup.Put) and holds the data stage after it, so len(buf) must be at
// least SetupSize plus the setup's Length. An IN request's data lands in
// buf[SetupSize:]; an OUT request sends it from there. Completion.N counts
// the data stage's bytes, without the setup packet. buf belongs to the
// transfer until its completion is delivered.
//
// The transfer is canceled like any other (token, deadline,
// Request.Cancel, CancelAll, Close), at once on every backend. On usbfs it
// is an asynchronous control URB, discarded at once by a cancel. libusb's
// control call (through gousb) is synchronous and nothing interrupts it:
// it runs on a copy of the data stage, and a cancel completes the
// transfer at once with ErrCanceled and 0 bytes, leaving the call to end
// by itself (when the device answers, or libusb's 5-second control
// timeout passes). buf is not touched after that completion: an IN
// request's data is not delivered. An OUT or no-data request may still
// have reached the device and been acted on, as a usbfs URB discarded
// after its setup packet went out may have; the count says no byte is
// known to have moved, not that none did. The next request on endpoint 0
// (a control transfer, ClearHalt, Reset, a settings change) waits for
// that call (a control transfer cancelably), and so does Close before it
// releases the device. A call that returned before the cancel took
// effect keeps its real result. A usbfs URB discarded in its data stage
// leaves the device to abort that transfer at the next setup packet, as
// USB requires of it; a device that does not may answer the next request
// wrongly (the usbvm gadget rig can give the next control IN ErrBabble:
// see docs/usbvm.md). On the simulated scanner (usbsim.Open) it
// is ring I/O on the scanner's endpoint 0 socket, canceled at once like
// its other transfers; the scanner takes
// the standard requests and its vendor requests (usbsim.VendorCommand,
// usbsim.VendorStatus), with data stages of up to usbsim.ControlMaxData
// bytes.
//
// A request the device refuses ends with ErrStall (endpoint 0 recovers by
// itself at the next setup packet). Errors of SubmitControl itself are
// those of Endpoint.Submit, and one wrapping ioring.ErrInvalid for a buffer
// too short for its setup packet.
func (d *Device) SubmitControl(buf []byte, x Xfer) (ioring.Request, error) {
	return d.submitControl(context.Background(), buf, x, false)
}

// StartControl is SubmitControl whose completion is delivered only to
// Request.Wait.
func (d *Device) StartControl(buf []byte, x Xfer) (ioring.Request, error) {
	return d.submitControl(context.Background(), buf, x, true)
}

// submitControl is SubmitControl (wait false) or StartControl (wait true);
// ctx is Control's (Background for the others): see Endpoint.submit.
func (d *Device) submitControl(ctx context.Context, buf []byte, x Xfer, wait bool) (ioring.Request, error) {
	if !d.made() {
		return ioring.Request{}, errDeviceNotMade("control transfer", d)
	}
	s, ok := ParseSetup(buf)
	if !ok || len(buf) < SetupSize+int(s.Length) {
		return ioring.Request{}, errorf("usb: control transfer: %w: %d bytes, fewer than the setup packet and its wLength", ioring.ErrInvalid, len(buf))
	}
	if err := d.rlock(ctx, "control transfer"); err != nil {
		return ioring.Request{}, err
	}
	defer d.mu.RUnlock()
	if d.closed {
		return ioring.Request{}, ErrClosed
	}
	return d.tr.Submit(controlDesc, buf, x, wait)
}

// Control runs a control transfer on endpoint 0 and waits for it: s is its
// setup packet, whose Length is set to len(data); data is the data stage,
// read into for an IN request and sent for an OUT one (nil: none). It
// returns the data stage's bytes and the transfer's error. ctx ending
// cancels the transfer (see SubmitControl for what that does on each
// backend); Control still waits for the completion, so data is free when
// it returns. It waits for a Reset or settings call in progress before it
// submits, as Endpoint.Transfer does, until ctx ends. data may hold at most 65535 bytes (4096 on libusb, which
// carries no more on Linux: a longer one is refused).
func (d *Device) Control(ctx context.Context, s Setup, data []byte) (int, error) {
	if err := startable(ctx, "control transfer"); err != nil {
		return 0, err
	}
	if len(data) > 0xffff {
		return 0, errorf("usb: control transfer: %w: %d bytes of data, more than wLength can say", ioring.ErrInvalid, len(data))
	}
	s.Length = uint16(len(data))
	buf := make([]byte, SetupSize+len(data))
	s.Put(buf)
	if !s.IsIn() {
		copy(buf[SetupSize:], data)
	}
	q, err := d.submitControl(ctx, buf, Xfer{}, true)
	if err != nil {
		return 0, err
	}
	c, err := q.Wait(ctx)
	if err != nil {
		return 0, err
	}
	n, cerr := movedCount(0, c.N, len(data), c.Err)
	if s.IsIn() {
		copy(data, buf[SetupSize:SetupSize+n])
	}
	return n, cerr
}

// Standard requests (USB 2.0 §9.4) and descriptor types.
const (
	reqGetStatus     = 0x00
	reqGetDescriptor = 0x06
	descString       = 0x03
)

// GetStatus sends the standard GET_STATUS request to the recipient
// (RecipientDevice, RecipientInterface with index the interface number,
// RecipientEndpoint with index the endpoint address) and returns its
// 16-bit status: for the device, bit 0 self-powered and bit 1 remote
// wake-up; for an endpoint, bit 0 halted.
func (d *Device) GetStatus(ctx context.Context, recipient uint8, index uint16) (uint16, error) {
	var b [2]byte
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestStandard | recipient, Request: reqGetStatus, Index: index}, b[:])
	if err != nil {
		return 0, err
	}
	if n != 2 {
		return 0, errorf("usb: GET_STATUS: %d bytes, want 2", n)
	}
	return binary.LittleEndian.Uint16(b[:]), nil
}

// StringDescriptor reads string descriptor index in the device's first
// language (string descriptor 0 lists them) and returns it as a Go string.
// Index 0 is not a string: it fails with an error wrapping
// ioring.ErrInvalid.
func (d *Device) StringDescriptor(ctx context.Context, index uint8) (string, error) {
	if index == 0 {
		return "", errorf("usb: string descriptor 0: %w: it lists the languages", ioring.ErrInvalid)
	}
	var b [255]byte
	n, err := d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descString << 8}, b[:])
	if err != nil {
		return "", err
	}
	if n < 4 || b[1] != descString {
		return "", errorf("usb: string descriptor 0: %d bytes, no language", n)
	}
	lang := binary.LittleEndian.Uint16(b[2:])
	n, err = d.Control(ctx, Setup{RequestType: RequestIn, Request: reqGetDescriptor, Value: descString<<8 | uint16(index), Index: lang}, b[:])
	if err != nil {
		return "", err
	}
	if n < 2 || b[0] < 2 || b[1] != descString || int(b[0]) > n {
		return "", errorf("usb: string descriptor %d: malformed (%d bytes)", index, n)
	}
	u := make([]uint16, (int(b[0])-2)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2+2*i:])
	}
	return string(utf16.Decode(u)), nil
}
