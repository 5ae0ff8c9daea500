package usbvmtest

import "github.com/cancelio/cancelio/usb/internal/usbvm"

// Gadget is a configfs USB gadget with one FunctionFS function (bulk IN,
// bulk OUT, interrupt IN) on the guest's device controller: see
// usbvm.Gadget. It implements usbsim.Gadget.
type Gadget = usbvm.Gadget

// GadgetConfig describes a Gadget; its zero value is usable. Give each
// gadget of a test process its own Name.
type GadgetConfig = usbvm.GadgetConfig

// HostDevice is the host side's view of a plugged-in gadget: its sysfs
// directory, bus and device numbers, usbfs node and endpoints.
type HostDevice = usbvm.HostDevice

// NewGadget creates a gadget, not yet plugged in (usbsim.ServeGadget plugs
// it in). The caller closes it. It needs the guest: call RequireGuest
// first.
func NewGadget(cfg GadgetConfig) (*Gadget, error) { return usbvm.NewGadget(cfg) }
