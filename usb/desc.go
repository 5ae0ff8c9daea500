package usb

import (
	"fmt"
	"slices"

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

// DeviceDesc describes a USB device: where it is, who it is, its
// configurations, and the endpoints this package transfers on (for List:
// those of the first configuration's interfaces at alternate setting 0;
// for Device.Desc: those of the claimed interfaces at their current
// alternate settings).
type DeviceDesc struct {
	Bus, Address int // bus number and device address; 0 for a simulated device
	VendorID     uint16
	ProductID    uint16
	Manufacturer string // string descriptors; empty where unreadable
	Product      string
	Serial       string
	Endpoints    []EndpointDesc
	// Configs describes every configuration of the device, with each
	// interface's alternate settings and their endpoints; empty where the
	// backend does not read them. Device's SetConfiguration,
	// ClaimInterface and SetAltSetting check their arguments against it.
	Configs []ConfigDesc
	// Config is the active configuration's bConfigurationValue (0:
	// unconfigured), and Interface and AltSetting the interface Open
	// claimed and its alternate setting. Device.Desc reports them as they
	// are now (Interface is then the lowest claimed interface, -1 when
	// none is claimed).
	Config, Interface, AltSetting int
}

// ConfigDesc describes one configuration of a device.
type ConfigDesc struct {
	Value int // bConfigurationValue
	// Interfaces holds every alternate setting of every interface, in
	// descriptor order.
	Interfaces []InterfaceDesc
}

// InterfaceDesc describes one alternate setting of one interface.
type InterfaceDesc struct {
	Number    int // bInterfaceNumber
	Alternate int // bAlternateSetting
	Class     uint8
	SubClass  uint8
	Protocol  uint8
	Endpoints []EndpointDesc
}

// config returns the configuration whose value is v.
func (d *DeviceDesc) config(v int) (*ConfigDesc, bool) {
	for i := range d.Configs {
		if d.Configs[i].Value == v {
			return &d.Configs[i], true
		}
	}
	return nil, false
}

// setting returns alternate setting alt of interface iface in c.
func (c *ConfigDesc) setting(iface, alt int) (*InterfaceDesc, bool) {
	for i := range c.Interfaces {
		if s := &c.Interfaces[i]; s.Number == iface && s.Alternate == alt {
			return s, true
		}
	}
	return nil, false
}

// cloneConfigs copies cs deeply, so that a caller cannot change a
// Device's descriptors.
func cloneConfigs(cs []ConfigDesc) []ConfigDesc {
	if cs == nil {
		return nil
	}
	out := make([]ConfigDesc, len(cs))
	for i, c := range cs {
		out[i] = ConfigDesc{Value: c.Value, Interfaces: make([]InterfaceDesc, len(c.Interfaces))}
		for j, s := range c.Interfaces {
			s.Endpoints = slices.Clone(s.Endpoints)
			out[i].Interfaces[j] = s
		}
	}
	return out
}

// String describes the device for logs, like "001.004 1209:0001".
func (d DeviceDesc) String() string {
	return fmt.Sprintf("%03d.%03d %04x:%04x", d.Bus, d.Address, d.VendorID, d.ProductID)
}
