package usbvm

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// plugged creates and plugs a gadget and waits for the host to enumerate it.
func plugged(t *testing.T, cfg GadgetConfig) (*Gadget, *HostDevice) {
	t.Helper()
	g, err := NewGadget(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, g.Close()) })
	require.NoError(t, g.Plug())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := g.HostDevice(ctx)
	require.NoError(t, err)
	return g, dev
}

type ioResult struct {
	n    int
	data []byte
	err  error
}

func TestGadgetEnumerates(t *testing.T) {
	RequireGuest(t)
	start := time.Now()
	g, dev := plugged(t, GadgetConfig{})
	t.Logf("enumerated %s (%s) in %v: %+v", dev.SysfsPath, dev.DevNode, time.Since(start), dev.Endpoints)

	assert.Equal(t, "1209", readSysfs(dev.SysfsPath, "idVendor"))
	assert.Equal(t, g.Config.Product, readSysfs(dev.SysfsPath, "product"))
	assert.Equal(t, g.Config.Interface, readSysfs(dev.SysfsPath+"/"+dev.SysfsPath[len(usbDevices)+1:]+":1.0", "interface"))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(dev.DevNode, &st))
	assert.Equal(t, uint32(unix.S_IFCHR), st.Mode&unix.S_IFMT, "%s is a character device", dev.DevNode)
	assert.Equal(t, uint32(189), unix.Major(uint64(st.Rdev)), "usb_device major number") // Rdev is uint32 on mips

	require.Len(t, dev.Endpoints, 3)
	for _, want := range []struct {
		typ       string
		in        bool
		maxPacket int
	}{{"Bulk", true, 512}, {"Bulk", false, 512}, {"Interrupt", true, 64}} {
		ep, ok := dev.Endpoint(want.typ, want.in)
		if assert.True(t, ok, "%s in=%v endpoint", want.typ, want.in) {
			assert.Equal(t, want.maxPacket, ep.MaxPacket, "high-speed wMaxPacketSize of %#02x", ep.Address)
		}
	}
}

func TestGadgetBulkRoundTrip(t *testing.T) {
	RequireGuest(t)
	g, dev := plugged(t, GadgetConfig{})
	in, _ := dev.Endpoint("Bulk", true)
	out, _ := dev.Endpoint("Bulk", false)
	intr, _ := dev.Endpoint("Interrupt", true)

	fd, err := unix.Open(dev.DevNode, unix.O_RDWR|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	require.NoError(t, USBFSUint(fd, USBDevFSClaimInterface, 0))
	defer func() { assert.NoError(t, USBFSUint(fd, USBDevFSReleaseInterface, 0)) }()

	// Host to device: a bulk OUT transfer ends in a read of the gadget's
	// OUT endpoint file.
	got := make(chan ioResult, 1)
	go func() {
		buf := make([]byte, 512)
		n, err := g.BulkOut.Read(buf)
		got <- ioResult{n, buf[:max(n, 0)], err}
	}()
	msg := []byte("host to gadget, through usbcore and dummy_hcd")
	n, err := USBFSBulk(fd, out.Address, msg, 10*time.Second)
	require.NoError(t, err, "bulk OUT to %#02x", out.Address)
	assert.Equal(t, len(msg), n)
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, msg, r.data)

	// Device to host: a write to the gadget's IN endpoint file answers a
	// bulk IN transfer, then the interrupt endpoint likewise.
	for _, c := range []struct {
		f    *os.File
		addr uint8
		msg  string
	}{{g.BulkIn, in.Address, "gadget to host, bulk"}, {g.IntrIn, intr.Address, "interrupt"}} {
		sent := make(chan ioResult, 1)
		go func() {
			n, err := c.f.Write([]byte(c.msg))
			sent <- ioResult{n: n, err: err}
		}()
		buf := make([]byte, 512)
		n, err = USBFSBulk(fd, c.addr, buf, 10*time.Second)
		require.NoError(t, err, "IN transfer from %#02x", c.addr)
		assert.Equal(t, c.msg, string(buf[:n]))
		s := <-sent
		require.NoError(t, s.err)
		assert.Equal(t, len(c.msg), s.n)
	}
}

func TestGadgetReplug(t *testing.T) {
	RequireGuest(t)
	g, dev := plugged(t, GadgetConfig{Name: "replug", SerialNumber: "replug"})
	require.NoError(t, g.Unplug())
	gone := func() bool {
		_, err := os.Stat(dev.SysfsPath)
		return errors.Is(err, os.ErrNotExist)
	}
	assert.Eventually(t, gone, 10*time.Second, 10*time.Millisecond, "%s still present after unplug", dev.SysfsPath)
	_, err := os.Stat(dev.DevNode)
	assert.ErrorIs(t, err, os.ErrNotExist, "usbfs node after unplug")

	require.NoError(t, g.Plug())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	again, err := g.HostDevice(ctx)
	require.NoError(t, err)
	assert.NotEqual(t, dev.Dev, again.Dev, "a re-plugged device gets a new address")
}
