package usbvm

import (
	"encoding/binary"
)

// FunctionFS blob formats, from <linux/usb/functionfs.h>.
const (
	ffsDescriptorsMagicV2 = 3
	ffsStringsMagic       = 2
	ffsHasFSDesc          = 1
	ffsHasHSDesc          = 2
	// ffsAllCtrlRecip (FUNCTIONFS_ALL_CTRL_RECIP) hands the function every
	// control request the kernel does not answer itself, vendor requests
	// to the device included, not only those to its interface and
	// endpoints.
	ffsAllCtrlRecip = 64

	usbDTInterface = 4
	usbDTEndpoint  = 5
	usbDirIn       = 0x80
	usbXferBulk    = 2
	usbXferInt     = 3
	usbClassVendor = 0xff
	langEnUS       = 0x0409
)

// Endpoint files of the gadget's one interface, in descriptor order: the
// kernel names them ep1, ep2, ep3.
const (
	epBulkIn  = 1
	epBulkOut = 2
	epIntrIn  = 3
)

// ffsDescriptors returns the descriptors blob written first to ep0, with
// FUNCTIONFS_ALL_CTRL_RECIP set: one vendor-class interface with a bulk IN, a bulk OUT and an interrupt IN
// endpoint, at full and high speed. The endpoint numbers are FunctionFS's;
// the controller assigns the addresses the host sees.
func ffsDescriptors(interruptPacket uint16) []byte {
	iface := []byte{9, usbDTInterface, 0, 0, 3, usbClassVendor, 0, 0, 1}
	ep := func(addr, attr byte, maxPacket uint16, interval byte) []byte {
		return []byte{7, usbDTEndpoint, addr, attr, byte(maxPacket), byte(maxPacket >> 8), interval}
	}
	speed := func(bulkPacket uint16, interval byte) []byte {
		var b []byte
		b = append(b, iface...)
		b = append(b, ep(epBulkIn|usbDirIn, usbXferBulk, bulkPacket, 0)...)
		b = append(b, ep(epBulkOut, usbXferBulk, bulkPacket, 0)...)
		b = append(b, ep(epIntrIn|usbDirIn, usbXferInt, interruptPacket, interval)...)
		return b
	}
	const count = 4     // descriptors per speed: the interface and 3 endpoints
	fs := speed(64, 10) // full speed: bInterval in ms
	hs := speed(512, 4) // high speed: 2^(4-1) microframes = 1 ms
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, ffsDescriptorsMagicV2)
	b = binary.LittleEndian.AppendUint32(b, 0) // length, set below
	b = binary.LittleEndian.AppendUint32(b, ffsHasFSDesc|ffsHasHSDesc|ffsAllCtrlRecip)
	b = binary.LittleEndian.AppendUint32(b, count)
	b = binary.LittleEndian.AppendUint32(b, count)
	b = append(b, fs...)
	b = append(b, hs...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	return b
}

// ffsStrings returns the strings blob written to ep0 after the descriptors:
// one US English string, the interface name (iInterface 1).
func ffsStrings(iface string) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, ffsStringsMagic)
	b = binary.LittleEndian.AppendUint32(b, 0) // length, set below
	b = binary.LittleEndian.AppendUint32(b, 1) // strings per language
	b = binary.LittleEndian.AppendUint32(b, 1) // languages
	b = binary.LittleEndian.AppendUint16(b, langEnUS)
	b = append(b, iface...)
	b = append(b, 0)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	return b
}
