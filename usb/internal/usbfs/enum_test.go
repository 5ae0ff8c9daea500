package usbfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// On a system without USB (this project's build machines: CONFIG_USB
// unset), listing says so with ErrNoUSB, and so does opening.
func TestListNoUSB(t *testing.T) {
	if _, err := os.Stat(sysfsDevices); err == nil {
		if _, err := os.Stat(devUSB); err == nil {
			t.Skipf("this system has USB (%s and %s exist); TestListFake covers the error", sysfsDevices, devUSB)
		}
	}
	devs, err := List()
	assert.Empty(t, devs)
	require.ErrorIs(t, err, ErrNoUSB)
	assert.ErrorIs(t, err, ioring.ErrNotSupported)
	t.Logf("List: %v", err)

	r, err := ioring.New(ioring.Config{Entries: 8})
	require.NoError(t, err)
	defer r.Close()
	// Where usbfs opens nothing at all (32-bit Linux: its URB layout is
	// not supported), opening says that first.
	wantOpen := ErrNoUSB
	if !opensDevices {
		wantOpen = ioring.ErrNotSupported
	}
	_, err = OpenVIDPID(0x1209, 0x0001, Config{Ring: r})
	assert.ErrorIs(t, err, wantOpen, "OpenVIDPID")
	_, err = OpenBus(1, 2, Config{Ring: r})
	assert.ErrorIs(t, err, wantOpen, "OpenBus")
}

// writeTree writes files (path: contents) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		p = filepath.Join(root, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(c), 0o644))
	}
}

// A fake sysfs and /dev/bus/usb: enumeration reads the attributes and the
// node's descriptors, skips interfaces and vanished devices, and says
// ErrNoUSB when either root is missing.
func TestListFake(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")

	_, err := list(sys, dev)
	assert.ErrorIs(t, err, ErrNoUSB, "no sysfs")
	require.NoError(t, os.MkdirAll(sys, 0o755))
	_, err = list(sys, dev)
	assert.ErrorIs(t, err, ErrNoUSB, "no /dev/bus/usb")
	require.NoError(t, os.MkdirAll(dev, 0o755))
	devs, err := list(sys, dev)
	require.NoError(t, err)
	assert.Empty(t, devs)

	desc := string(gadgetDescriptors())
	writeTree(t, sys, map[string]string{
		"1-1/busnum": "1\n", "1-1/devnum": "3\n", "1-1/idVendor": "1209\n", "1-1/idProduct": "0001\n",
		"1-1/manufacturer": "cancelio\n", "1-1/product": "usbvm gadget\n", "1-1/serial": "0001\n",
		"1-1/speed": "480\n", "1-1/bConfigurationValue": "1\n",
		"1-1:1.0/bInterfaceNumber": "00\n", // an interface: skipped
		// A root hub whose node is missing: descriptors come from sysfs.
		"usb1/busnum": "1\n", "usb1/devnum": "1\n", "usb1/idVendor": "1d6b\n", "usb1/idProduct": "0002\n",
		"usb1/descriptors": desc[:18],
		"gone/busnum":      "1\n", // unplugged half-way: skipped
		// Numbers sysfs never writes: skipped, not listed as bus -1.
		"bad/busnum": "-1\n", "bad/devnum": "+4\n", "bad/idVendor": "1209\n", "bad/idProduct": "0001\n",
	})
	writeTree(t, dev, map[string]string{"001/003": desc})

	devs, err = list(sys, dev)
	require.NoError(t, err)
	require.Len(t, devs, 2)
	hub, g := devs[0], devs[1]
	assert.Equal(t, 1, hub.Address, "ordered by address")
	assert.Equal(t, uint16(0x1d6b), hub.VendorID)
	assert.Equal(t, uint16(0x1209), hub.Descriptor.VendorID, "root hub descriptor from sysfs")
	assert.Empty(t, hub.Configs)

	assert.Equal(t, filepath.Join(dev, "001", "003"), g.DevNode)
	assert.Equal(t, filepath.Join(sys, "1-1"), g.SysfsPath)
	assert.Equal(t, [2]int{1, 3}, [2]int{g.Bus, g.Address})
	assert.Equal(t, [2]uint16{0x1209, 0x0001}, [2]uint16{g.VendorID, g.ProductID})
	assert.Equal(t, []string{"cancelio", "usbvm gadget", "0001", "480"}, []string{g.Manufacturer, g.Product, g.SerialNumber, g.Speed})
	assert.Equal(t, 1, g.ActiveConfig)
	require.Len(t, g.Configs, 1)
	c, ok := g.Config(1)
	require.True(t, ok)
	assert.Len(t, c.Interfaces[0].AltSettings[0].Endpoints, 3)
	_, ok = g.Config(2)
	assert.False(t, ok)
	assert.Equal(t, "001/003 1209:0001 cancelio usbvm gadget", g.String())

	_, err = find(sys, dev, func(d *DeviceInfo) bool { return d.VendorID == 0xdead }, "dead:beef")
	assert.True(t, errors.Is(err, fs.ErrNotExist), "no match: %v", err)
}

func TestCapabilitiesString(t *testing.T) {
	assert.Equal(t, "none", Capabilities(0).String())
	c := CapZeroPacket | CapBulkContinuation | CapSuspend
	assert.Equal(t, "zero-packet|bulk-continuation|suspend", c.String())
	assert.True(t, c.Has(CapZeroPacket|CapSuspend))
	assert.False(t, c.Has(CapMmap))
}
