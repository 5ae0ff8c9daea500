package usb

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// HotplugKind says whether a device arrived or left.
type HotplugKind uint8

// The kinds of hotplug events.
const (
	Arrived HotplugKind = 1 // the device was attached and enumerated
	Left    HotplugKind = 2 // the device was detached (or reset away)
)

// String returns "arrived" or "left".
func (k HotplugKind) String() string {
	switch k {
	case Arrived:
		return "arrived"
	case Left:
		return "left"
	}
	return fmt.Sprintf("HotplugKind(%d)", uint8(k))
}

// HotplugEvent is the arrival or removal of one USB device, as the kernel
// announces it.
type HotplugEvent struct {
	Kind         HotplugKind
	Bus, Address int // bus number and device address: Open's WithBusAddr
	VendorID     uint16
	ProductID    uint16
	// Serial is the device's serial number string, read from sysfs when
	// the watch takes its arrival from the kernel (Next, or the catch-up
	// after a loss) and remembered for its removal; empty where the device
	// has none, has left again by then (its arrival and removal both
	// carry none, and a filter on Serial passes neither), or arrived
	// before the watch began.
	Serial string
	// DevPath is the device's path under /sys (the kernel's DEVPATH).
	DevPath string
}

// String describes the event for logs, like "arrived 001.004 1209:0001".
func (e HotplugEvent) String() string {
	return fmt.Sprintf("%v %03d.%03d %04x:%04x", e.Kind, e.Bus, e.Address, e.VendorID, e.ProductID)
}

// HotplugFilter selects the events a Hotplug reports; a zero field matches
// any value.
type HotplugFilter struct {
	VendorID  uint16
	ProductID uint16
	Serial    string
}

func (f HotplugFilter) match(e HotplugEvent) bool {
	return (f.VendorID == 0 || f.VendorID == e.VendorID) &&
		(f.ProductID == 0 || f.ProductID == e.ProductID) &&
		(f.Serial == "" || f.Serial == e.Serial)
}

// parseUevent reads one kernel uevent ("ACTION@DEVPATH", then KEY=VALUE
// fields, each ended by a NUL) and returns the USB device event it
// announces, without Serial; ok is false for anything else (interfaces,
// other subsystems, bind and change events, malformed messages).
func parseUevent(msg []byte) (e HotplugEvent, ok bool) {
	head, rest, found := bytes.Cut(msg, []byte{0})
	if !found || !bytes.Contains(head, []byte{'@'}) {
		return HotplugEvent{}, false // not a kernel uevent (libudev's start otherwise)
	}
	var action, subsystem, devtype, product, busnum, devnum string
	for len(rest) > 0 {
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte{0})
		k, v, _ := strings.Cut(string(field), "=")
		switch k {
		case "ACTION":
			action = v
		case "DEVPATH":
			e.DevPath = v
		case "SUBSYSTEM":
			subsystem = v
		case "DEVTYPE":
			devtype = v
		case "PRODUCT":
			product = v
		case "BUSNUM":
			busnum = v
		case "DEVNUM":
			devnum = v
		}
	}
	switch action {
	case "add":
		e.Kind = Arrived
	case "remove":
		e.Kind = Left
	default:
		return HotplugEvent{}, false
	}
	if subsystem != "usb" || devtype != "usb_device" || e.DevPath == "" {
		return HotplugEvent{}, false
	}
	// PRODUCT is idVendor/idProduct/bcdDevice in hex without leading zeros.
	ids := strings.Split(product, "/")
	if len(ids) != 3 {
		return HotplugEvent{}, false
	}
	vid, err1 := strconv.ParseUint(ids[0], 16, 16)
	pid, err2 := strconv.ParseUint(ids[1], 16, 16)
	// BUSNUM and DEVNUM are decimal digits only: strconv.Atoi would take
	// "-1" and "+2".
	bus, err3 := strconv.ParseUint(busnum, 10, 16)
	addr, err4 := strconv.ParseUint(devnum, 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return HotplugEvent{}, false
	}
	e.VendorID, e.ProductID, e.Bus, e.Address = uint16(vid), uint16(pid), int(bus), int(addr)
	return e, true
}
