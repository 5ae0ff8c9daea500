package usb

import (
	"fmt"

	"github.com/cancelio/cancelio/usb/internal/base"
)

// TransferType is an endpoint's transfer type, valued as in the endpoint
// descriptor's bmAttributes bits 1..0. Its String method gives "control",
// "isochronous", "bulk" or "interrupt". It is the one transfer type of
// every layer (the usbfs backend's descriptors and the simulator's
// endpoints carry it too), defined in package usb/internal/base.
type TransferType = base.TransferType

// The USB transfer types.
const (
	Control     = base.Control
	Isochronous = base.Isochronous
	Bulk        = base.Bulk
	Interrupt   = base.Interrupt
)

// EndpointDesc describes one endpoint of an opened interface.
type EndpointDesc struct {
	Address       uint8 // bEndpointAddress: bit 7 set for IN
	Type          TransferType
	MaxPacketSize int // wMaxPacketSize
	// MaxTransfer is the largest buffer one transfer may carry, or 0 where
	// the transport sets no limit. On the simulated scanner it is
	// usbsim.Endpoint.MaxTransfer: larger OUT buffers are refused, and IN
	// buffers of at least this size never need a copy.
	MaxTransfer int
}

// IsIn reports whether the endpoint moves data from the device to the host.
func (e EndpointDesc) IsIn() bool { return e.Address&0x80 != 0 }

// String describes the endpoint for logs, like "0x82 bulk in".
func (e EndpointDesc) String() string {
	dir := "out"
	if e.IsIn() {
		dir = "in"
	}
	return fmt.Sprintf("%#02x %s %s", e.Address, e.Type, dir)
}

// DeviceDesc describes a USB device: where it is, who it is, and the
// endpoints of the interface this package opens (for List: of the first
// configuration's interfaces, alternate setting 0).
type DeviceDesc struct {
	Bus, Address int // bus number and device address; 0 for a simulated device
	VendorID     uint16
	ProductID    uint16
	Manufacturer string // string descriptors; empty where unreadable
	Product      string
	Serial       string
	Endpoints    []EndpointDesc
}

// String describes the device for logs, like "001.004 1209:0001".
func (d DeviceDesc) String() string {
	return fmt.Sprintf("%03d.%03d %04x:%04x", d.Bus, d.Address, d.VendorID, d.ProductID)
}
