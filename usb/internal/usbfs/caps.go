package usbfs

import "strings"

// Capabilities is the set USBDEVFS_GET_CAPABILITIES reports for an open
// device (USBDEVFS_CAP_* in <linux/usbdevice_fs.h>).
type Capabilities uint32

// The capabilities usbfs may report.
const (
	CapZeroPacket          Capabilities = 0x01  // USBDEVFS_URB_ZERO_PACKET works
	CapBulkContinuation    Capabilities = 0x02  // USBDEVFS_URB_BULK_CONTINUATION works
	CapNoPacketSizeLimit   Capabilities = 0x04  // a URB may exceed 16 KiB
	CapBulkScatterGather   Capabilities = 0x08  // the host controller does scatter-gather
	CapReapAfterDisconnect Capabilities = 0x10  // URBs can be reaped after a disconnect
	CapMmap                Capabilities = 0x20  // buffers may be mmapped
	CapDropPrivileges      Capabilities = 0x40  // USBDEVFS_DROP_PRIVILEGES works
	CapConnInfoEx          Capabilities = 0x80  // USBDEVFS_CONNINFO_EX works
	CapSuspend             Capabilities = 0x100 // suspend ioctls work
)

var capNames = []string{
	"zero-packet", "bulk-continuation", "no-packet-size-limit", "bulk-scatter-gather",
	"reap-after-disconnect", "mmap", "drop-privileges", "conninfo-ex", "suspend",
}

// Has reports whether every capability of c2 is in c.
func (c Capabilities) Has(c2 Capabilities) bool { return c&c2 == c2 }

// String lists the capabilities: "zero-packet|bulk-continuation|...".
func (c Capabilities) String() string {
	var s []string
	for i, n := range capNames {
		if c&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, "|")
}
