package usbvm

import (
	"os"
	"path/filepath"
	"strings"
)

// EndpointFiles returns the gadget's endpoint files in descriptor order:
// bulk IN, bulk OUT, interrupt IN. The Gadget keeps owning them. With Plug,
// Unplug and BulkMaxPacket it makes *Gadget a usbsim.Gadget, so usbsim's
// scanner can be served through it (usbsim.ServeGadget).
func (g *Gadget) EndpointFiles() (bulkIn, bulkOut, intrIn *os.File) {
	return g.BulkIn, g.BulkOut, g.IntrIn
}

// ControlFile returns FunctionFS's ep0 file (EP0), for usbsim's scanner
// to answer the vendor requests that reach the function: NewGadget's
// descriptors set FUNCTIONFS_ALL_CTRL_RECIP, so those to the device come
// too. The Gadget keeps owning it.
func (g *Gadget) ControlFile() *os.File { return g.EP0 }

// BulkMaxPacket returns the bulk endpoints' wMaxPacketSize at the speed the
// gadget's controller runs at now (its current_speed in sysfs): 64 at full
// speed, 512 at high speed and above (NewGadget writes only full- and
// high-speed descriptors). It returns 512 while no host has connected.
func (g *Gadget) BulkMaxPacket() int {
	b, err := os.ReadFile(filepath.Join(udcClass, g.Config.UDC, "current_speed"))
	if err == nil && strings.TrimSpace(string(b)) == "full-speed" {
		return 64
	}
	return 512
}
