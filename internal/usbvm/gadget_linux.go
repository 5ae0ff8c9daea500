package usbvm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Paths of the gadget and host stacks in sysfs and configfs.
const (
	configfsGadgets = "/sys/kernel/config/usb_gadget"
	udcClass        = "/sys/class/udc"
	usbDevices      = "/sys/bus/usb/devices"
)

// GadgetConfig describes a gadget. The zero value is a usable gadget named
// "cancelio" with the pid.codes test IDs 1209:0001, bound to the first UDC.
type GadgetConfig struct {
	Name         string // configfs directory and FunctionFS instance; default "cancelio"
	VendorID     uint16 // default 0x1209
	ProductID    uint16 // default 0x0001
	Manufacturer string // default "cancelio"
	Product      string // default "usbvm gadget"
	SerialNumber string // default "0001"
	Interface    string // interface string; default "cancelio"
	// InterruptPacket is the interrupt IN endpoint's wMaxPacketSize;
	// default 64.
	InterruptPacket uint16
	UDC             string // USB device controller; default the first in /sys/class/udc
	MountDir        string // where FunctionFS is mounted; default /dev/usb-ffs/<Name>
}

func (c *GadgetConfig) defaults() error {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.Name, "cancelio")
	def(&c.Manufacturer, "cancelio")
	def(&c.Product, "usbvm gadget")
	def(&c.SerialNumber, "0001")
	def(&c.Interface, "cancelio")
	def(&c.MountDir, filepath.Join("/dev/usb-ffs", c.Name))
	if c.VendorID == 0 {
		c.VendorID = 0x1209
	}
	if c.ProductID == 0 {
		c.ProductID = 0x0001
	}
	if c.InterruptPacket == 0 {
		c.InterruptPacket = 64
	}
	if c.UDC == "" {
		udcs, err := os.ReadDir(udcClass)
		if err != nil || len(udcs) == 0 {
			return fmt.Errorf("usbvm: no USB device controller in %s (is dummy_hcd loaded?): %v", udcClass, err)
		}
		c.UDC = udcs[0].Name()
	}
	return nil
}

// Gadget is a configfs USB gadget with one FunctionFS function: one
// vendor-class interface with a bulk IN, a bulk OUT and an interrupt IN
// endpoint. The endpoint files are plain fds: reads and writes block until
// the host has configured the device, then move one transfer each. A write
// to BulkIn or IntrIn sends to the host, a read from BulkOut receives from
// it; a read on an IN endpoint file stalls it (the host sees -EPIPE).
//
// The Gadget owns its files. Close unplugs and removes everything. Methods
// are not safe for concurrent use; the endpoint files are (as any *os.File).
type Gadget struct {
	Config GadgetConfig

	// EP0 is FunctionFS's control file. It must stay open while the
	// function lives; read it for events (bind, enable, setup, suspend)
	// as struct usb_functionfs_event, 12 bytes each.
	EP0     *os.File
	BulkIn  *os.File // ep1: device to host, bulk
	BulkOut *os.File // ep2: host to device, bulk
	IntrIn  *os.File // ep3: device to host, interrupt

	dir     string // the gadget's configfs directory
	mounted bool
	plugged bool
}

// NewGadget creates the gadget in configfs, mounts its FunctionFS, writes
// the descriptors and strings to ep0 and opens the endpoint files. The
// gadget is not plugged in yet: call Plug. Needs root, configfs mounted on
// /sys/kernel/config and libcomposite and usb_f_fs loaded, as in the guest.
func NewGadget(cfg GadgetConfig) (g *Gadget, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	g = &Gadget{Config: cfg, dir: filepath.Join(configfsGadgets, cfg.Name)}
	defer func() {
		if err != nil {
			g.Close()
			g = nil
		}
	}()
	if _, err := os.Stat(configfsGadgets); err != nil {
		return nil, fmt.Errorf("usbvm: no configfs gadget support (libcomposite loaded, configfs mounted?): %w", err)
	}
	fn := "ffs." + cfg.Name
	steps := []struct{ path, value string }{
		{"", ""}, // mkdir
		{"idVendor", fmt.Sprintf("0x%04x", cfg.VendorID)},
		{"idProduct", fmt.Sprintf("0x%04x", cfg.ProductID)},
		{"bcdDevice", "0x0100"},
		{"bcdUSB", "0x0200"},
		{"strings/0x409/", ""},
		{"strings/0x409/manufacturer", cfg.Manufacturer},
		{"strings/0x409/product", cfg.Product},
		{"strings/0x409/serialnumber", cfg.SerialNumber},
		{"configs/c.1/", ""},
		{"configs/c.1/MaxPower", "100"},
		{"configs/c.1/strings/0x409/", ""},
		{"configs/c.1/strings/0x409/configuration", "cancelio"},
		{"functions/" + fn + "/", ""},
	}
	for _, s := range steps {
		p := filepath.Join(g.dir, s.path)
		if s.path == "" || strings.HasSuffix(s.path, "/") {
			if err := os.Mkdir(p, 0o755); err != nil {
				return nil, fmt.Errorf("usbvm: gadget: %w", err)
			}
			continue
		}
		if err := writeAttr(p, s.value); err != nil {
			return nil, err
		}
	}
	if err := os.Symlink(filepath.Join(g.dir, "functions", fn), filepath.Join(g.dir, "configs/c.1", fn)); err != nil {
		return nil, fmt.Errorf("usbvm: gadget: %w", err)
	}

	if err := os.MkdirAll(cfg.MountDir, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount(cfg.Name, cfg.MountDir, "functionfs", 0, ""); err != nil {
		return nil, fmt.Errorf("usbvm: mount functionfs %s on %s: %w", cfg.Name, cfg.MountDir, err)
	}
	g.mounted = true
	if g.EP0, err = os.OpenFile(filepath.Join(cfg.MountDir, "ep0"), os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("usbvm: %w", err)
	}
	if _, err := g.EP0.Write(ffsDescriptors(cfg.InterruptPacket)); err != nil {
		return nil, fmt.Errorf("usbvm: write FunctionFS descriptors: %w", err)
	}
	if _, err := g.EP0.Write(ffsStrings(cfg.Interface)); err != nil {
		return nil, fmt.Errorf("usbvm: write FunctionFS strings: %w", err)
	}
	for _, ep := range []struct {
		f   **os.File
		num int
	}{{&g.BulkIn, epBulkIn}, {&g.BulkOut, epBulkOut}, {&g.IntrIn, epIntrIn}} {
		if *ep.f, err = os.OpenFile(filepath.Join(cfg.MountDir, fmt.Sprintf("ep%d", ep.num)), os.O_RDWR, 0); err != nil {
			return nil, fmt.Errorf("usbvm: %w", err)
		}
	}
	return g, nil
}

func writeAttr(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0); err != nil {
		return fmt.Errorf("usbvm: write %q to %s: %w", value, path, err)
	}
	return nil
}

// Plug binds the gadget to its UDC: the host side sees a device arrive and
// enumerates it (see HostDevice).
func (g *Gadget) Plug() error {
	if err := writeAttr(filepath.Join(g.dir, "UDC"), g.Config.UDC); err != nil {
		return err
	}
	g.plugged = true
	return nil
}

// Unplug unbinds the gadget from its UDC: the host sees the device leave.
// Pending endpoint I/O on both sides fails. Plug may be called again.
func (g *Gadget) Unplug() error {
	if err := writeAttr(filepath.Join(g.dir, "UDC"), "\n"); err != nil {
		return err
	}
	g.plugged = false
	return nil
}

// Close unplugs the gadget, closes its files, unmounts FunctionFS and
// removes the gadget from configfs. It returns the first error but always
// tries every step.
func (g *Gadget) Close() error {
	var errs []error
	if g.plugged {
		errs = append(errs, g.Unplug())
	}
	for _, f := range []**os.File{&g.BulkIn, &g.BulkOut, &g.IntrIn, &g.EP0} {
		if *f != nil {
			errs = append(errs, (*f).Close())
			*f = nil
		}
	}
	if g.mounted {
		if err := unix.Unmount(g.Config.MountDir, 0); err != nil {
			errs = append(errs, fmt.Errorf("usbvm: unmount %s: %w", g.Config.MountDir, err))
		}
		g.mounted = false
	}
	fn := "ffs." + g.Config.Name
	for _, p := range []string{
		"configs/c.1/" + fn, "configs/c.1/strings/0x409", "configs/c.1",
		"functions/" + fn, "strings/0x409", "",
	} {
		if err := os.Remove(filepath.Join(g.dir, p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("usbvm: gadget: %w", err))
		}
	}
	return errors.Join(errs...)
}

// HostDevice is the host side's view of a USB device: its sysfs directory
// and usbfs node.
type HostDevice struct {
	SysfsPath string // /sys/bus/usb/devices/<bus>-<port>
	Bus, Dev  int    // busnum, devnum
	// DevNode is the usbfs node, /dev/bus/usb/BBB/DDD (devtmpfs makes it).
	DevNode   string
	Endpoints []HostEndpoint // of interface 0, configuration 1
}

// HostEndpoint is an endpoint as the host sees it in sysfs.
type HostEndpoint struct {
	Address   uint8  // bEndpointAddress, direction bit included
	Type      string // "Bulk", "Interrupt", "Isoc", "Control"
	MaxPacket int    // wMaxPacketSize
}

// Endpoint returns the first endpoint of the given type ("Bulk",
// "Interrupt") and direction (in: true), or false.
func (d *HostDevice) Endpoint(typ string, in bool) (HostEndpoint, bool) {
	for _, e := range d.Endpoints {
		if e.Type == typ && (e.Address&usbDirIn != 0) == in {
			return e, true
		}
	}
	return HostEndpoint{}, false
}

// HostDevice waits until the host has enumerated the plugged gadget (its
// interface is configured and its usbfs node exists) and returns it. It fails
// when ctx ends first.
func (g *Gadget) HostDevice(ctx context.Context) (*HostDevice, error) {
	return FindHostDevice(ctx, g.Config.VendorID, g.Config.ProductID, g.Config.SerialNumber)
}

// FindHostDevice waits until a device with the IDs and serial number is
// enumerated on the host side, configured, with its usbfs node present.
func FindHostDevice(ctx context.Context, vendor, product uint16, serial string) (*HostDevice, error) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		d, err := findHostDevice(vendor, product, serial)
		if err == nil {
			return d, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("usbvm: device %04x:%04x not on the host side: %w (%v)", vendor, product, context.Cause(ctx), last)
		case <-tick.C:
		}
	}
}

func readSysfs(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

func findHostDevice(vendor, product uint16, serial string) (*HostDevice, error) {
	entries, err := os.ReadDir(usbDevices)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		dir := filepath.Join(usbDevices, n)
		if strings.Contains(n, ":") || readSysfs(dir, "idVendor") != fmt.Sprintf("%04x", vendor) ||
			readSysfs(dir, "idProduct") != fmt.Sprintf("%04x", product) ||
			(serial != "" && readSysfs(dir, "serial") != serial) {
			continue
		}
		d := &HostDevice{SysfsPath: dir}
		if d.Bus, err = strconv.Atoi(readSysfs(dir, "busnum")); err != nil {
			return nil, fmt.Errorf("%s: busnum: %w", dir, err)
		}
		if d.Dev, err = strconv.Atoi(readSysfs(dir, "devnum")); err != nil {
			return nil, fmt.Errorf("%s: devnum: %w", dir, err)
		}
		d.DevNode = fmt.Sprintf("/dev/bus/usb/%03d/%03d", d.Bus, d.Dev)
		if _, err := os.Stat(d.DevNode); err != nil {
			return nil, err
		}
		// The kernel makes the interface's directory, then an ep_XX
		// directory for each endpoint, one by one: wait for as many as
		// the interface's descriptor has (a list read in between missed
		// an endpoint once).
		iface := filepath.Join(dir, n+":1.0")
		want, err := strconv.ParseUint(readSysfs(iface, "bNumEndpoints"), 16, 8)
		if err != nil {
			return nil, fmt.Errorf("%s: interface not configured yet (bNumEndpoints: %v)", dir, err)
		}
		eps, _ := filepath.Glob(filepath.Join(iface, "ep_*"))
		if len(eps) == 0 || len(eps) != int(want) {
			return nil, fmt.Errorf("%s: interface not configured yet (%d of its %d endpoints)", dir, len(eps), want)
		}
		for _, ep := range eps {
			addr, err1 := strconv.ParseUint(readSysfs(ep, "bEndpointAddress"), 16, 8)
			mps, err2 := strconv.ParseUint(readSysfs(ep, "wMaxPacketSize"), 16, 16)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("%s: %w", ep, err)
			}
			d.Endpoints = append(d.Endpoints, HostEndpoint{Address: uint8(addr), Type: readSysfs(ep, "type"), MaxPacket: int(mps)})
		}
		return d, nil
	}
	return nil, fmt.Errorf("no %04x:%04x in %s", vendor, product, usbDevices)
}
