package usbfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Where Linux shows USB devices.
const (
	sysfsDevices = "/sys/bus/usb/devices"
	devUSB       = "/dev/bus/usb"
)

// DeviceInfo describes one USB device as sysfs and its usbfs node show it.
type DeviceInfo struct {
	SysfsPath string // /sys/bus/usb/devices/<bus>-<port> (usb<bus> for a root hub)
	DevNode   string // /dev/bus/usb/BBB/DDD

	Bus     int // busnum
	Address int // devnum

	VendorID, ProductID uint16
	// Strings the kernel read at enumeration; empty when the device has
	// none.
	Manufacturer, Product, SerialNumber string
	Speed                               string // link speed in Mbit/s, as sysfs says: "480"
	// ActiveConfig is bConfigurationValue: 0 when unconfigured.
	ActiveConfig int

	Descriptor DeviceDescriptor
	// Configs holds every configuration, parsed from the usbfs node (or
	// from sysfs's descriptors file where the node is not readable).
	Configs []ConfigDescriptor
}

// Config returns the configuration whose bConfigurationValue is value.
func (d *DeviceInfo) Config(value int) (*ConfigDescriptor, bool) {
	for i := range d.Configs {
		if int(d.Configs[i].Value) == value {
			return &d.Configs[i], true
		}
	}
	return nil, false
}

// String describes the device for logs: "001/002 1209:0001 cancelio usbvm gadget".
func (d *DeviceInfo) String() string {
	return strings.TrimSpace(fmt.Sprintf("%03d/%03d %04x:%04x %s %s", d.Bus, d.Address, d.VendorID, d.ProductID, d.Manufacturer, d.Product))
}

// List returns every USB device the kernel knows, root hubs included,
// ordered by bus and address. It returns an error wrapping ErrNoUSB where
// the system has no USB host support (this is the normal answer on machines
// and containers without USB); a device that vanishes while it is being
// read is left out.
func List() ([]DeviceInfo, error) { return list(sysfsDevices, devUSB) }

// list is List with the two roots as parameters, for tests.
func list(sysfs, dev string) ([]DeviceInfo, error) {
	for _, dir := range []string{sysfs, dev} {
		if _, err := os.Stat(dir); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("%w (%s is missing)", ErrNoUSB, dir)
			}
			return nil, &OpError{Op: "list", Err: err}
		}
	}
	entries, err := os.ReadDir(sysfs)
	if err != nil {
		return nil, &OpError{Op: "list", Err: err}
	}
	var devs []DeviceInfo
	for _, e := range entries {
		// Interfaces are <bus>-<port>:<config>.<interface>; devices have
		// no colon.
		if strings.Contains(e.Name(), ":") {
			continue
		}
		d, err := readDevice(filepath.Join(sysfs, e.Name()), dev)
		if err != nil {
			continue // unplugged while we looked, or not a device
		}
		devs = append(devs, d)
	}
	sort.Slice(devs, func(i, j int) bool {
		if devs[i].Bus != devs[j].Bus {
			return devs[i].Bus < devs[j].Bus
		}
		return devs[i].Address < devs[j].Address
	})
	return devs, nil
}

// sysfsNum parses a bus or device number as sysfs writes it: decimal
// digits only (strconv.Atoi would take "-1" and "+2"), at most 65535.
func sysfsNum(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	return int(n), err
}

func sysfsAttr(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b))
}

// readDevice reads one device's sysfs directory and its descriptors.
func readDevice(dir, devRoot string) (DeviceInfo, error) {
	d := DeviceInfo{SysfsPath: dir}
	var err error
	if d.Bus, err = sysfsNum(sysfsAttr(dir, "busnum")); err != nil {
		return d, fmt.Errorf("%s: busnum: %w", dir, err)
	}
	if d.Address, err = sysfsNum(sysfsAttr(dir, "devnum")); err != nil {
		return d, fmt.Errorf("%s: devnum: %w", dir, err)
	}
	vid, err1 := strconv.ParseUint(sysfsAttr(dir, "idVendor"), 16, 16)
	pid, err2 := strconv.ParseUint(sysfsAttr(dir, "idProduct"), 16, 16)
	if err := errors.Join(err1, err2); err != nil {
		return d, fmt.Errorf("%s: %w", dir, err)
	}
	d.VendorID, d.ProductID = uint16(vid), uint16(pid)
	d.Manufacturer = sysfsAttr(dir, "manufacturer")
	d.Product = sysfsAttr(dir, "product")
	d.SerialNumber = sysfsAttr(dir, "serial")
	d.Speed = sysfsAttr(dir, "speed")
	d.ActiveConfig, _ = strconv.Atoi(sysfsAttr(dir, "bConfigurationValue"))
	d.DevNode = filepath.Join(devRoot, fmt.Sprintf("%03d", d.Bus), fmt.Sprintf("%03d", d.Address))

	raw, err := readAll(d.DevNode)
	if err != nil {
		// The node may be root's only; sysfs's copy is world-readable.
		raw, err = os.ReadFile(filepath.Join(dir, "descriptors"))
	}
	if err == nil {
		d.Descriptor, d.Configs, err = ParseDescriptors(raw)
	}
	if err != nil {
		// Keep what sysfs said; the descriptors are optional here.
		d.Descriptor = DeviceDescriptor{VendorID: d.VendorID, ProductID: d.ProductID}
		d.Configs = nil
	}
	return d, nil
}

func readAll(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// find returns the device at bus/addr, or at vid:pid (the first), from List.
func find(sysfs, dev string, match func(*DeviceInfo) bool, what string) (DeviceInfo, error) {
	devs, err := list(sysfs, dev)
	if err != nil {
		return DeviceInfo{}, err
	}
	for i := range devs {
		if match(&devs[i]) {
			return devs[i], nil
		}
	}
	return DeviceInfo{}, &OpError{Op: "open " + what, Err: fs.ErrNotExist}
}

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
