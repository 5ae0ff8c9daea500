package usbsim

import (
	"encoding/binary"
	"unicode/utf16"

	"github.com/cancelio/cancelio/usb"
)

// Vendor requests of the scanner on endpoint 0: bmRequestType of type
// vendor (usb.RequestVendor), to the device or to interface 0. Both
// transports take them (the socketpairs on their control endpoint, the
// gadget through FunctionFS's ep0), with the same answers; any other
// vendor request, or one in the wrong direction, is refused with a STALL
// (the host sees usb.ErrStall and endpoint 0 recovers at the next setup
// packet).
const (
	// VendorCommand, host to device: the data stage (1 to ControlMaxData
	// bytes) is one command, as a bulk OUT payload carries it (scanproto:
	// StartScanCommand, AbortCommand, EchoCommand...). Its image data and
	// echoes go to bulk IN and its events to interrupt IN, as for a command
	// sent on bulk OUT; a command that fails is still accepted and reported
	// by an EventError. An echo longer than bulk IN's MaxTransfer (only one
	// sent here can be: Config.MaxTransfer under 4095) comes back in
	// several messages, each one transfer, as any longer data does. Without
	// a data stage the request is refused. The
	// device acts on it before it takes the next request on endpoint 0;
	// on the socketpair transport also before it answers this one, while
	// on a gadget USB ends the request as soon as the device has its data
	// stage (FunctionFS delays no status stage that follows data), a moment
	// before the device acts.
	VendorCommand = 0x01
	// VendorStatus, device to host: the data stage is the device's status
	// as an Event of kind EventStatus (EventSize bytes, fewer if wLength
	// asks for fewer), read at once, without queueing an event.
	VendorStatus = 0x02
	// ControlMaxData is the longest data stage the scanner takes or gives
	// on endpoint 0.
	ControlMaxData = 4096
)

// AltEventsOnly is the alternate setting of the scanner's interface that
// has its interrupt IN endpoint only (setting 0 has all three). The
// socketpair transport offers it; the gadget cannot (FunctionFS has one
// alternate setting per interface).
const AltEventsOnly = 1

// Standard requests and descriptor types the socketpair transport answers
// (USB 2.0 §9.4); on the gadget the kernel's USB stack answers them.
const (
	reqGetStatus        = 0x00
	reqGetDescriptor    = 0x06
	reqGetConfiguration = 0x08
	reqSetConfiguration = 0x09
	reqGetInterface     = 0x0a
	reqSetInterface     = 0x0b
	descDevice          = 0x01
	descString          = 0x03
	langEnUS            = 0x0409
	maxPacket0          = 64
	recipientMask       = 0x1f
	typeMask            = 0x60
)

// configs describes the scanner's one configuration (value 1) as package
// usb does: interface 0 (vendor class) at alternate setting 0 with its
// three endpoints and, with events, at AltEventsOnly with interrupt IN
// only. eps are the endpoints of setting 0.
func configs(eps []usb.EndpointDesc, events bool) []usb.ConfigDesc {
	c := usb.ConfigDesc{Value: 1, Interfaces: []usb.InterfaceDesc{{Number: 0, Class: 0xff, Endpoints: eps}}}
	if events {
		var intr []usb.EndpointDesc
		for _, e := range eps {
			if e.Type == usb.Interrupt {
				intr = append(intr, e)
			}
		}
		c.Interfaces = append(c.Interfaces, usb.InterfaceDesc{Number: 0, Alternate: AltEventsOnly, Class: 0xff, Endpoints: intr})
	}
	return []usb.ConfigDesc{c}
}

// vendorAccepts reports whether the scanner takes the vendor request s,
// before any data stage: the answer depends on the setup packet only, so
// that a transport can refuse an OUT request before it reads the data.
func vendorAccepts(s usb.Setup) bool {
	if s.RequestType&typeMask != usb.RequestVendor {
		return false
	}
	switch s.RequestType & recipientMask {
	case usb.RecipientDevice:
	case usb.RecipientInterface:
		if s.Index != 0 {
			return false
		}
	default:
		return false
	}
	switch s.Request {
	case VendorCommand:
		return !s.IsIn() && s.Length > 0 && s.Length <= ControlMaxData
	case VendorStatus:
		return s.IsIn()
	}
	return false
}

// vendorLocked runs the vendor request s, which vendorAccepts took, with
// data the OUT data stage, and returns the IN data stage.
func (s *Scanner) vendorLocked(p *plug, su usb.Setup, data []byte) []byte {
	switch su.Request {
	case VendorCommand:
		s.commandLocked(p, data)
		return nil
	case VendorStatus:
		b := s.eventOfLocked(EventStatus, 0).Marshal()
		return b[:min(len(b), int(su.Length))]
	}
	return nil
}

// standardLocked answers the standard requests of the socketpair
// transport (a gadget's are the kernel's): GET_DESCRIPTOR of the device
// and of its strings, GET_STATUS, GET and SET_CONFIGURATION, GET and
// SET_INTERFACE. ok false refuses (STALL). The last two reset the
// endpoints' halts (resetHaltsLocked), whose channels cleared holds.
func (s *Scanner) standardLocked(p *plug, su usb.Setup) (in []byte, ok bool, cleared []chan struct{}) {
	if su.RequestType&typeMask != usb.RequestStandard {
		return nil, false, nil
	}
	recip := su.RequestType & recipientMask
	switch {
	case su.Request == reqGetDescriptor && su.IsIn() && recip == usb.RecipientDevice:
		in, ok = s.descriptor(uint8(su.Value>>8), uint8(su.Value), su.Index)
	case su.Request == reqGetStatus && su.IsIn():
		in, ok = s.statusLocked(p, recip, su.Index)
	case su.Request == reqGetConfiguration && su.IsIn() && recip == usb.RecipientDevice:
		in, ok = []byte{byte(s.config)}, true
	case su.Request == reqSetConfiguration && !su.IsIn() && recip == usb.RecipientDevice:
		if ok = s.setConfigLocked(int(su.Value)); ok {
			cleared = resetHaltsLocked(p)
		}
	case su.Request == reqGetInterface && su.IsIn() && recip == usb.RecipientInterface && su.Index == 0 && s.config == 1:
		in, ok = []byte{byte(s.alt)}, true
	case su.Request == reqSetInterface && !su.IsIn() && recip == usb.RecipientInterface:
		if ok = s.setInterfaceLocked(int(su.Index), int(su.Value)); ok {
			cleared = resetHaltsLocked(p)
		}
	}
	if len(in) > int(su.Length) {
		in = in[:su.Length]
	}
	return in, ok, cleared
}

// descriptor returns descriptor typ, index idx, of the device (device and
// string descriptors).
func (s *Scanner) descriptor(typ, idx uint8, lang uint16) ([]byte, bool) {
	switch typ {
	case descDevice:
		b := []byte{18, descDevice, 0x00, 0x02, 0, 0, 0, maxPacket0, 0, 0, 0, 0, 0x00, 0x01, 1, 2, 3, 1}
		binary.LittleEndian.PutUint16(b[8:], s.info.VendorID)
		binary.LittleEndian.PutUint16(b[10:], s.info.ProductID)
		return b, true
	case descString:
		if idx == 0 {
			return []byte{4, descString, byte(langEnUS & 0xff), byte(langEnUS >> 8)}, true
		}
		strs := [...]string{s.info.Manufacturer, s.info.Product, s.info.Serial}
		if lang != langEnUS || int(idx) > len(strs) {
			return nil, false
		}
		u := utf16.Encode([]rune(strs[idx-1]))
		b := []byte{byte(2 + 2*len(u)), descString}
		for _, c := range u {
			b = binary.LittleEndian.AppendUint16(b, c)
		}
		return b, true
	}
	return nil, false
}

// statusLocked answers GET_STATUS: 0 for the device and interface 0, bit
// 0 set for a halted endpoint.
func (s *Scanner) statusLocked(p *plug, recip uint8, index uint16) ([]byte, bool) {
	switch recip {
	case usb.RecipientDevice:
		return []byte{0, 0}, true
	case usb.RecipientInterface:
		return []byte{0, 0}, index == 0 && s.config == 1
	case usb.RecipientEndpoint:
		if index == 0 {
			return []byte{0, 0}, true
		}
		for _, ep := range p.endpoints() {
			if uint16(ep.info.Address) == index {
				if ep.halted {
					return []byte{1, 0}, true
				}
				return []byte{0, 0}, true
			}
		}
	}
	return nil, false
}

// setConfigLocked selects configuration value (0 or 1), which puts the
// interface back to alternate setting 0.
func (s *Scanner) setConfigLocked(value int) bool {
	if value != 0 && value != 1 {
		return false
	}
	s.config, s.alt = value, 0
	return true
}

// setInterfaceLocked selects alternate setting alt of interface iface.
// Only the socketpair transport has AltEventsOnly.
func (s *Scanner) setInterfaceLocked(iface, alt int) bool {
	if s.config != 1 || iface != 0 || alt < 0 || alt > AltEventsOnly || (alt != 0 && s.gadget != nil) {
		return false
	}
	s.alt = alt
	return true
}

// controlLocked runs one control request of the socketpair transport:
// standard or vendor. data is an OUT request's data stage. ok false
// refuses it (STALL); cleared is standardLocked's.
func (s *Scanner) controlLocked(p *plug, su usb.Setup, data []byte) (in []byte, ok bool, cleared []chan struct{}) {
	if vendorAccepts(su) {
		return s.vendorLocked(p, su, data), true, nil
	}
	return s.standardLocked(p, su)
}
