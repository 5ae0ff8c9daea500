//go:build linux

package usb

// Adversarial round 21: usb.Hotplug fed real uevents. The test sends
// kernel-format uevents to the uevent netlink group itself (root may:
// CAP_NET_ADMIN), so the whole path runs as with a device plugged in: the
// ring's read of the netlink socket, parseUevent, the serial read from
// sysfs at arrival and remembered for removal, the filter, the order, and
// the socket's overflow (ENOBUFS) with the watch going on after it.
// Every injected event carries a vendor ID no real device and no other
// test's filter uses (adv21VID), and a DEVPATH that does not exist, so
// other watchers on the machine ignore them.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/usbvm"
)

const (
	adv21VID = 0xad21
	adv21PID = 0x0021
)

// adv21Sender is a netlink socket that broadcasts to the kernel's uevent
// group (1), where WatchHotplug listens.
type adv21Sender struct{ fd int }

func adv21NewSender(t *testing.T) *adv21Sender {
	t.Helper()
	if usbvm.InGuest() {
		// As with the socketpair transport's tests: the guest's time goes
		// to the real USB stack; its emulated CPU takes seconds over an
		// overflow's 6000-message burst that the host runs in a moment.
		t.Skip("injected uevents: tested by go test on the host, not in the usbvm guest")
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Skipf("no uevent socket here: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	s := &adv21Sender{fd: fd}
	// Probe: a message nobody parses as a USB device event.
	if err := s.send([]byte("adv21probe@/x\x00ACTION=probe\x00")); err != nil {
		t.Skipf("cannot send to the uevent group here (needs CAP_NET_ADMIN): %v", err)
	}
	return s
}

func (s *adv21Sender) send(msg []byte) error {
	return unix.Sendto(s.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1})
}

// adv21Dev is an injected device: its DEVPATH and its numbers.
type adv21Dev struct {
	devpath  string
	vid, pid uint16
	bus, dev int
}

func (d adv21Dev) msg(action string) []byte {
	return uevent(action+"@"+d.devpath, "ACTION="+action, "DEVPATH="+d.devpath, "SUBSYSTEM=usb",
		"DEVNAME=bus/usb/001/002", "DEVTYPE=usb_device",
		fmt.Sprintf("PRODUCT=%x/%x/100", d.vid, d.pid), "TYPE=0/0/0",
		fmt.Sprintf("BUSNUM=%03d", d.bus), fmt.Sprintf("DEVNUM=%03d", d.dev), "SEQNUM=1")
}

func (d adv21Dev) event(kind HotplugKind, serial string) HotplugEvent {
	return HotplugEvent{Kind: kind, Bus: d.bus, Address: d.dev, VendorID: d.vid, ProductID: d.pid, Serial: serial, DevPath: d.devpath}
}

// adv21Sysfs points sysfsRoot at a fresh directory for the test and
// returns it.
func adv21Sysfs(t *testing.T) string {
	root := t.TempDir()
	old := sysfsRoot
	sysfsRoot = root
	t.Cleanup(func() { sysfsRoot = old })
	return root
}

func adv21Next(t *testing.T, h *Hotplug, what string) (HotplugEvent, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Patience)
	defer cancel()
	return h.Next(ctx)
}

// TestAdv21HotplugInjectedOrder: arrivals and removals of several devices,
// interleaved with uevents a USB watch must skip (interfaces, bind, other
// subsystems, malformed, other vendors), are reported in the order sent,
// exactly once each, with the serial read from sysfs. A watcher filtering
// by serial, read only at the end, gets that device's arrivals and
// removals only.
func TestAdv21HotplugInjectedOrder(t *testing.T) {
	CheckFDs(t)
	root := adv21Sysfs(t)
	s := adv21NewSender(t)
	r := NewRing(t, 16)
	all, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID})
	require.NoError(t, err)
	defer all.Close()
	one, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID, Serial: "ADV21-3"})
	require.NoError(t, err)
	defer one.Close()

	devs := make([]adv21Dev, 6)
	for i := range devs {
		devs[i] = adv21Dev{devpath: fmt.Sprintf("/devices/adv21/usb9/9-%d", i+1), vid: adv21VID, pid: adv21PID + uint16(i), bus: 9, dev: 10 + i}
	}
	serial := func(i int) string {
		if i == 5 {
			return "" // a device without a serial number
		}
		return fmt.Sprintf("ADV21-%d", i)
	}
	rng := rand.New(rand.NewPCG(21, 21))
	noise := func() {
		d := devs[rng.IntN(len(devs))]
		var msg []byte
		switch rng.IntN(5) {
		case 0:
			msg = uevent("add@"+d.devpath+"/9-1:1.0", "ACTION=add", "DEVPATH="+d.devpath+"/9-1:1.0", "SUBSYSTEM=usb",
				"DEVTYPE=usb_interface", fmt.Sprintf("PRODUCT=%x/%x/100", d.vid, d.pid), "INTERFACE=255/0/0")
		case 1:
			msg = d.msg("bind")
		case 2:
			msg = uevent("add@/devices/virtual/net/adv21", "ACTION=add", "DEVPATH=/devices/virtual/net/adv21", "SUBSYSTEM=net")
		case 3:
			msg = []byte("add@" + d.devpath) // no fields, no NUL
		case 4:
			o := d
			o.vid = adv21VID + 1
			msg = o.msg("add")
		}
		require.NoError(t, s.send(msg))
	}
	var want, wantOne []HotplugEvent
	present := make([]bool, len(devs))
	for range 120 {
		i := rng.IntN(len(devs))
		d := devs[i]
		dir := filepath.Join(root, d.devpath)
		if !present[i] {
			require.NoError(t, os.MkdirAll(dir, 0o755))
			if serial(i) != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "serial"), []byte(serial(i)+"\n"), 0o644))
			}
			require.NoError(t, s.send(d.msg("add")))
			want = append(want, d.event(Arrived, serial(i)))
			if serial(i) == "ADV21-3" {
				wantOne = append(wantOne, d.event(Arrived, serial(i)))
			}
		} else {
			// The directory stays (a late reader of this watch would
			// find no serial otherwise: TestAdv21HotplugSerialLateReader).
			require.NoError(t, s.send(d.msg("remove")))
			want = append(want, d.event(Left, serial(i)))
			if serial(i) == "ADV21-3" {
				wantOne = append(wantOne, d.event(Left, serial(i)))
			}
		}
		present[i] = !present[i]
		noise()
		// Read as they come, so that the serial files are there at each
		// arrival's Next (Next reads them); the last few stay queued.
		if len(want) > 4 {
			e, err := adv21Next(t, all, "all")
			require.NoError(t, err)
			require.Equal(t, want[0], e, "event order or content")
			want = want[1:]
		}
	}
	for len(want) > 0 {
		e, err := adv21Next(t, all, "all")
		require.NoError(t, err)
		if !assert.Equal(t, want[0], e, "event order or content") {
			break
		}
		want = want[1:]
	}
	require.NotEmpty(t, wantOne, "the random walk touched device 3")
	for _, w := range wantOne {
		e, err := adv21Next(t, one, "serial filter")
		require.NoError(t, err)
		assert.Equal(t, w, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Quiet)
	e, err := one.Next(ctx)
	cancel()
	assert.ErrorIs(t, err, ErrTimeout, "the serial filter let through %v", e)
}

// TestAdv21HotplugOverflow: nobody reads while a burst larger than the
// socket's receive buffer arrives. Next reports the loss with an error
// wrapping ENOBUFS (the documented signal to catch up with List), that
// error is not a cancel, a closed watch or ErrNoDevice, and the watch goes
// on: the events that were kept come in order (increasing sequence), and
// an event sent after the catch-up arrives too.
func TestAdv21HotplugOverflow(t *testing.T) {
	CheckFDs(t)
	adv21Sysfs(t)
	s := adv21NewSender(t)
	r := NewRing(t, 8)
	h, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID})
	require.NoError(t, err)
	defer h.Close()
	const burst = 6000 // more than ueventRcvBuf holds (about 2500 of these)
	sent := 0
	for i := range burst {
		d := adv21Dev{devpath: fmt.Sprintf("/devices/adv21/ovf/%d", i), vid: adv21VID, pid: adv21PID, bus: 9, dev: 1 + i%127}
		if err := s.send(d.msg("add")); err != nil {
			require.ErrorIs(t, err, syscall.ENOBUFS, "send %d", i)
			continue
		}
		sent++
	}
	var sawNoBufs bool
	last := -1
	got := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), Quiet)
		e, err := h.Next(ctx)
		cancel()
		if errors.Is(err, ErrTimeout) {
			break
		}
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOBUFS, "the only error an overflow may give")
			assert.NotErrorIs(t, err, ErrCanceled)
			assert.NotErrorIs(t, err, ErrClosed)
			assert.NotErrorIs(t, err, ErrNoDevice)
			require.False(t, sawNoBufs, "ENOBUFS reported twice for one overflow")
			sawNoBufs = true
			t.Logf("ENOBUFS after %d events", got)
			continue
		}
		var i int
		_, perr := fmt.Sscanf(e.DevPath, "/devices/adv21/ovf/%d", &i)
		require.NoError(t, perr, "event %v", e)
		require.Greater(t, i, last, "events out of order")
		last = i
		got++
	}
	t.Logf("sent %d, got %d events, ENOBUFS: %v", sent, got, sawNoBufs)
	require.True(t, sawNoBufs || got == sent, "events were lost (%d of %d) without ENOBUFS", got, sent)
	// The watch goes on.
	after := adv21Dev{devpath: "/devices/adv21/after", vid: adv21VID, pid: adv21PID, bus: 9, dev: 1}
	require.NoError(t, s.send(after.msg("add")))
	e, err := adv21Next(t, h, "after")
	require.NoError(t, err)
	assert.Equal(t, after.event(Arrived, ""), e)
	require.NoError(t, h.Close())
	AssertSettled(t, r)
}

// TestAdv21HotplugSerialRemembered: the serial read at a device's arrival
// is the removal's Serial, although the device's sysfs directory is gone
// when the removal comes (as the kernel removes it before the uevent), and
// a watcher filtering by that serial gets both.
func TestAdv21HotplugSerialRemembered(t *testing.T) {
	CheckFDs(t)
	root := adv21Sysfs(t)
	s := adv21NewSender(t)
	r := NewRing(t, 8)
	h, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID, Serial: "ADV21-R"})
	require.NoError(t, err)
	defer h.Close()
	d := adv21Dev{devpath: "/devices/adv21/usb9/9-7", vid: adv21VID, pid: adv21PID, bus: 9, dev: 7}
	dir := filepath.Join(root, d.devpath)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "serial"), []byte("ADV21-R\n"), 0o644))
	require.NoError(t, s.send(d.msg("add")))
	e, err := adv21Next(t, h, "arrival")
	require.NoError(t, err)
	assert.Equal(t, d.event(Arrived, "ADV21-R"), e)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, s.send(d.msg("remove")))
	e, err = adv21Next(t, h, "removal")
	require.NoError(t, err)
	assert.Equal(t, d.event(Left, "ADV21-R"), e)
}

// TestAdv21HotplugSerialLateReader: HotplugEvent.Serial is read from
// sysfs when the watch takes the arrival from the kernel. A device with a
// serial number that arrives and leaves while the watcher is not in Next
// (its two uevents wait in the socket) is gone from sysfs by then: both
// events carry Serial "", and a watcher filtering by its serial reports
// neither (the doc says so; it used to promise the serial "read at its
// arrival"). A device still there when Next takes its arrival gets its
// serial, and its removal carries it too.
func TestAdv21HotplugSerialLateReader(t *testing.T) {
	CheckFDs(t)
	root := adv21Sysfs(t)
	s := adv21NewSender(t)
	r := NewRing(t, 8)
	bySerial, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID, Serial: "ADV21-L"})
	require.NoError(t, err)
	defer bySerial.Close()
	byID, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID})
	require.NoError(t, err)
	defer byID.Close()
	d := adv21Dev{devpath: "/devices/adv21/usb9/9-8", vid: adv21VID, pid: adv21PID, bus: 9, dev: 8}
	dir := filepath.Join(root, d.devpath)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "serial"), []byte("ADV21-L\n"), 0o644))
	require.NoError(t, s.send(d.msg("add")))
	time.Sleep(Quiet) // the device stays a moment, nobody in Next
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, s.send(d.msg("remove")))

	for _, kind := range []HotplugKind{Arrived, Left} {
		e, err := adv21Next(t, byID, "by ID")
		require.NoError(t, err)
		assert.Equal(t, d.event(kind, ""), e, "watcher without a serial filter: the %v event's Serial (gone from sysfs when Next took it)", kind)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*Quiet)
	_, err = bySerial.Next(ctx)
	cancel()
	assert.ErrorIs(t, err, ErrTimeout, "watcher filtering by the serial: neither event passes")

	// Still there when Next takes it: the serial, on both events.
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "serial"), []byte("ADV21-L\n"), 0o644))
	require.NoError(t, s.send(d.msg("add")))
	e, err := adv21Next(t, bySerial, "by serial")
	require.NoError(t, err)
	assert.Equal(t, d.event(Arrived, "ADV21-L"), e)
	require.NoError(t, os.RemoveAll(dir))
	require.NoError(t, s.send(d.msg("remove")))
	e, err = adv21Next(t, bySerial, "by serial")
	require.NoError(t, err)
	assert.Equal(t, d.event(Left, "ADV21-L"), e)
}

// TestAdv21HotplugOverflowStale: Next's doc says an error wrapping ENOBUFS
// "means the kernel dropped events while nobody read (the watch goes on;
// compare with List to catch up)". A driver that does so takes a List
// right after the ENOBUFS; the events Next returns after that must then be
// news, not events from before the loss, which that List already covers
// (applied after it, an old arrival would bring back a device that has
// left since). usbsim's Hotplug, which promises usb.Hotplug's methods and
// errors, reports the loss after the events it kept, never before them.
// Here an arrival is queued, a burst overflows the socket, the reader
// gets ENOBUFS and catches up, then a new arrival is sent: the next event
// must be that new one. The kernel reports the socket's error at the next
// read, before the datagrams still queued, and Next passes it on as it
// comes: the events queued before the overflow (the first arrival, then
// the part of the burst that fitted) follow the ENOBUFS.
func TestAdv21HotplugOverflowStale(t *testing.T) {
	CheckFDs(t)
	adv21Sysfs(t)
	s := adv21NewSender(t)
	r := NewRing(t, 8)
	h, err := WatchHotplug(r, HotplugFilter{VendorID: adv21VID})
	require.NoError(t, err)
	defer h.Close()
	pre := adv21Dev{devpath: "/devices/adv21/stale/pre", vid: adv21VID, pid: adv21PID, bus: 9, dev: 1}
	require.NoError(t, s.send(pre.msg("add")))
	for i := range 6000 {
		d := adv21Dev{devpath: fmt.Sprintf("/devices/adv21/stale/%d", i), vid: adv21VID, pid: adv21PID, bus: 9, dev: 2}
		_ = s.send(d.msg("add"))
	}
	var before []string
	for {
		e, err := adv21Next(t, h, "until ENOBUFS")
		if err != nil {
			require.ErrorIs(t, err, syscall.ENOBUFS)
			break
		}
		before = append(before, e.DevPath)
	}
	t.Logf("%d events before the ENOBUFS", len(before))
	// Caught up (List) here. Now something new happens.
	post := adv21Dev{devpath: "/devices/adv21/stale/post", vid: adv21VID, pid: adv21PID, bus: 9, dev: 3}
	require.NoError(t, s.send(post.msg("add")))
	e, err := adv21Next(t, h, "after ENOBUFS")
	require.NoError(t, err)
	assert.Equal(t, post.devpath, e.DevPath,
		"after ENOBUFS Next returned %v, an event from before the overflow (the driver caught up with List at the ENOBUFS already)", e.DevPath)
}
