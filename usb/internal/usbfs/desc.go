package usbfs

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cancelio/cancelio/usb/internal/base"
)

// Descriptor types and lengths, from <linux/usb/ch9.h>.
const (
	dtDevice    = 1
	dtConfig    = 2
	dtInterface = 4
	dtEndpoint  = 5

	devDescLen   = 18
	configDesLen = 9
	ifaceDescLen = 9
	epDescLen    = 7
)

// TransferType is an endpoint's transfer type, bits 0-1 of bmAttributes:
// package usb's (usb.TransferType), defined once in package base.
type TransferType = base.TransferType

// The four USB transfer types.
const (
	Control     = base.Control
	Isochronous = base.Isochronous
	Bulk        = base.Bulk
	Interrupt   = base.Interrupt
)

// sysfsType spells t as sysfs does in an endpoint's type file ("Bulk").
func sysfsType(t TransferType) string {
	return [4]string{"Control", "Isoc", "Bulk", "Interrupt"}[t&3]
}

// SetupSize is the length of a control transfer's setup packet (struct
// usb_ctrlrequest), which starts its buffer.
const SetupSize = 8

// DeviceDescriptor is a USB device descriptor (USB 2.0 §9.6.1).
type DeviceDescriptor struct {
	USB            uint16 // bcdUSB
	Class          uint8
	SubClass       uint8
	Protocol       uint8
	MaxPacketSize0 uint8
	VendorID       uint16
	ProductID      uint16
	Device         uint16 // bcdDevice
	Manufacturer   uint8  // string index
	Product        uint8  // string index
	SerialNumber   uint8  // string index
	NumConfigs     uint8
}

// ConfigDescriptor is a configuration with its interfaces.
type ConfigDescriptor struct {
	Value      uint8 // bConfigurationValue
	Name       uint8 // iConfiguration, a string index
	Attributes uint8
	MaxPower   uint8 // in units of 2 mA (high speed) or 8 mA (SuperSpeed)
	Interfaces []Interface
}

// Interface is one interface of a configuration, with its alternate
// settings in descriptor order.
type Interface struct {
	Number      uint8
	AltSettings []InterfaceDescriptor
}

// InterfaceDescriptor is one alternate setting of an interface.
type InterfaceDescriptor struct {
	Number    uint8 // bInterfaceNumber
	Alternate uint8 // bAlternateSetting
	Class     uint8
	SubClass  uint8
	Protocol  uint8
	Name      uint8 // iInterface, a string index
	Endpoints []EndpointDescriptor
}

// EndpointDescriptor is an endpoint descriptor (USB 2.0 §9.6.6).
type EndpointDescriptor struct {
	Address       uint8 // bEndpointAddress: number, and bit 7 set for IN
	Attributes    uint8 // bmAttributes
	MaxPacketSize uint16
	Interval      uint8
}

// In reports whether the endpoint moves data from the device to the host.
func (e EndpointDescriptor) In() bool { return e.Address&0x80 != 0 }

// Number returns the endpoint number, without the direction bit.
func (e EndpointDescriptor) Number() int { return int(e.Address & 0x0f) }

// Type returns the endpoint's transfer type.
func (e EndpointDescriptor) Type() TransferType { return TransferType(e.Attributes & 3) }

// PacketSize returns the largest packet in bytes: bits 0-10 of
// wMaxPacketSize (bits 11-12 count extra high-bandwidth transactions).
func (e EndpointDescriptor) PacketSize() int { return int(e.MaxPacketSize & 0x7ff) }

// String describes the endpoint, for example "0x81 Bulk IN 512".
func (e EndpointDescriptor) String() string {
	dir := "OUT"
	if e.In() {
		dir = "IN"
	}
	return fmt.Sprintf("%#02x %s %s %d", e.Address, sysfsType(e.Type()), dir, e.PacketSize())
}

var errShort = errors.New("truncated descriptor")

// ParseDescriptors parses what a usbfs node (or sysfs's descriptors file)
// holds: a device descriptor followed by each configuration's descriptors,
// wTotalLength bytes each. Class-specific and unknown descriptors are
// skipped. It never panics on malformed input.
func ParseDescriptors(b []byte) (DeviceDescriptor, []ConfigDescriptor, error) {
	var d DeviceDescriptor
	if len(b) < devDescLen || b[1] != dtDevice || int(b[0]) < devDescLen || int(b[0]) > len(b) {
		return d, nil, fmt.Errorf("usbfs: device descriptor: %w", errShort)
	}
	le := binary.LittleEndian
	d = DeviceDescriptor{
		USB: le.Uint16(b[2:]), Class: b[4], SubClass: b[5], Protocol: b[6], MaxPacketSize0: b[7],
		VendorID: le.Uint16(b[8:]), ProductID: le.Uint16(b[10:]), Device: le.Uint16(b[12:]),
		Manufacturer: b[14], Product: b[15], SerialNumber: b[16], NumConfigs: b[17],
	}
	b = b[b[0]:]
	var configs []ConfigDescriptor
	for len(b) > 0 {
		if len(b) < configDesLen || b[1] != dtConfig || b[0] < configDesLen {
			return d, configs, fmt.Errorf("usbfs: configuration %d: %w", len(configs)+1, errShort)
		}
		total := int(le.Uint16(b[2:]))
		if total < int(b[0]) || total > len(b) {
			return d, configs, fmt.Errorf("usbfs: configuration %d: wTotalLength %d of %d bytes: %w", len(configs)+1, total, len(b), errShort)
		}
		c, err := parseConfig(b[:total])
		if err != nil {
			return d, configs, fmt.Errorf("usbfs: configuration %d: %w", len(configs)+1, err)
		}
		configs = append(configs, c)
		b = b[total:]
	}
	return d, configs, nil
}

func parseConfig(b []byte) (ConfigDescriptor, error) {
	c := ConfigDescriptor{Value: b[5], Name: b[6], Attributes: b[7], MaxPower: b[8]}
	var alt *InterfaceDescriptor
	// A setting or an endpoint described twice is kept as first
	// described, as the kernel does ("duplicate descriptor ... skipping"):
	// every lookup above then finds the one the kernel uses.
	flush := func() {
		if alt == nil {
			return
		}
		for i := range c.Interfaces {
			if c.Interfaces[i].Number == alt.Number {
				for _, have := range c.Interfaces[i].AltSettings {
					if have.Alternate == alt.Alternate {
						return
					}
				}
				c.Interfaces[i].AltSettings = append(c.Interfaces[i].AltSettings, *alt)
				return
			}
		}
		c.Interfaces = append(c.Interfaces, Interface{Number: alt.Number, AltSettings: []InterfaceDescriptor{*alt}})
	}
	for b = b[b[0]:]; len(b) > 0; {
		n := int(b[0])
		if n < 2 || n > len(b) {
			return c, fmt.Errorf("descriptor of %d bytes in %d: %w", n, len(b), errShort)
		}
		switch b[1] {
		case dtInterface:
			if n < ifaceDescLen {
				return c, fmt.Errorf("interface: %w", errShort)
			}
			flush()
			alt = &InterfaceDescriptor{Number: b[2], Alternate: b[3], Class: b[5], SubClass: b[6], Protocol: b[7], Name: b[8]}
		case dtEndpoint:
			if n < epDescLen {
				return c, fmt.Errorf("endpoint: %w", errShort)
			}
			if alt != nil && !hasEndpoint(alt.Endpoints, b[2]) {
				alt.Endpoints = append(alt.Endpoints, EndpointDescriptor{
					Address: b[2], Attributes: b[3], MaxPacketSize: binary.LittleEndian.Uint16(b[4:]), Interval: b[6],
				})
			}
		}
		b = b[n:]
	}
	flush()
	return c, nil
}

// hasEndpoint reports whether eps has an endpoint at address addr.
func hasEndpoint(eps []EndpointDescriptor, addr uint8) bool {
	for _, e := range eps {
		if e.Address == addr {
			return true
		}
	}
	return false
}
