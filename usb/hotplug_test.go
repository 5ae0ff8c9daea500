package usb

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// uevent builds a kernel uevent message: the header, then NUL-ended
// fields.
func uevent(head string, fields ...string) []byte {
	return []byte(head + "\x00" + strings.Join(fields, "\x00") + "\x00")
}

func TestParseUevent(t *testing.T) {
	const devpath = "/devices/platform/dummy_hcd.0/usb1/1-1"
	add := uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
		"MAJOR=189", "MINOR=1", "DEVNAME=bus/usb/001/002", "DEVTYPE=usb_device",
		"PRODUCT=1209/1/100", "TYPE=0/0/0", "BUSNUM=001", "DEVNUM=002", "SEQNUM=1234")
	e, ok := parseUevent(add)
	assert.True(t, ok)
	assert.Equal(t, HotplugEvent{Kind: Arrived, Bus: 1, Address: 2, VendorID: 0x1209, ProductID: 0x0001, DevPath: devpath}, e)
	assert.Equal(t, "arrived 001.002 1209:0001", e.String())

	e, ok = parseUevent(uevent("remove@"+devpath, "ACTION=remove", "DEVPATH="+devpath, "SUBSYSTEM=usb",
		"DEVTYPE=usb_device", "PRODUCT=abcd/ef01/0", "BUSNUM=003", "DEVNUM=127"))
	assert.True(t, ok)
	assert.Equal(t, HotplugEvent{Kind: Left, Bus: 3, Address: 127, VendorID: 0xabcd, ProductID: 0xef01, DevPath: devpath}, e)

	for name, msg := range map[string][]byte{
		"interface": uevent("add@"+devpath+"/1-1:1.0", "ACTION=add", "DEVPATH="+devpath+"/1-1:1.0", "SUBSYSTEM=usb",
			"DEVTYPE=usb_interface", "PRODUCT=1209/1/100", "INTERFACE=255/0/0"),
		"bind": uevent("bind@"+devpath, "ACTION=bind", "DEVPATH="+devpath, "SUBSYSTEM=usb",
			"DEVTYPE=usb_device", "PRODUCT=1209/1/100", "BUSNUM=001", "DEVNUM=002"),
		"other subsystem": uevent("add@/devices/virtual/net/lo", "ACTION=add", "DEVPATH=/devices/virtual/net/lo", "SUBSYSTEM=net"),
		"libudev":         []byte("libudev\x00\xfe\xed\xca\xfe"),
		"bad product": uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
			"DEVTYPE=usb_device", "PRODUCT=12345/1/100", "BUSNUM=001", "DEVNUM=002"),
		"no busnum": uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
			"DEVTYPE=usb_device", "PRODUCT=1209/1/100", "DEVNUM=002"),
		"negative busnum": uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
			"DEVTYPE=usb_device", "PRODUCT=1209/1/100", "BUSNUM=-1", "DEVNUM=002"),
		"signed devnum": uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
			"DEVTYPE=usb_device", "PRODUCT=1209/1/100", "BUSNUM=001", "DEVNUM=+2"),
		"empty": nil,
	} {
		_, ok := parseUevent(msg)
		assert.False(t, ok, name)
	}
}

func TestHotplugFilter(t *testing.T) {
	e := HotplugEvent{Kind: Arrived, VendorID: 0x1209, ProductID: 0x0001, Serial: "S1"}
	assert.True(t, HotplugFilter{}.match(e))
	assert.True(t, HotplugFilter{VendorID: 0x1209, ProductID: 0x0001, Serial: "S1"}.match(e))
	assert.False(t, HotplugFilter{VendorID: 0x1208}.match(e))
	assert.False(t, HotplugFilter{ProductID: 0x0002}.match(e))
	assert.False(t, HotplugFilter{Serial: "S2"}.match(e))
}
