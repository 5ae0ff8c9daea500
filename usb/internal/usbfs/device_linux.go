//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/ioring"
)

// From <linux/usbdevice_fs.h>.
const (
	urbShortNotOK             = 0x01 // USBDEVFS_URB_SHORT_NOT_OK
	urbBulkContinuation       = 0x04 // USBDEVFS_URB_BULK_CONTINUATION
	urbZeroPacket             = 0x40 // USBDEVFS_URB_ZERO_PACKET
	urbTypeInterrupt    uint8 = 1    // USBDEVFS_URB_TYPE_INTERRUPT
	urbTypeControl      uint8 = 2    // USBDEVFS_URB_TYPE_CONTROL
	urbTypeBulk         uint8 = 3    // USBDEVFS_URB_TYPE_BULK

	disconnectClaimExceptDriver = 0x02 // USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER
)

// Limits of usbfs (drivers/usb/core/devio.c).
const (
	// legacyURBSize is the largest URB of kernels without
	// USBDEVFS_CAP_NO_PACKET_SIZE_LIM.
	legacyURBSize = 16 << 10
	// defaultUsbfsMemory is usbcore's usbfs_memory_mb default, in bytes.
	defaultUsbfsMemory = 16 << 20
	usbfsMemoryParam   = "/sys/module/usbcore/parameters/usbfs_memory_mb"
	// defaultControlTimeout bounds a control transfer given no timeout.
	defaultControlTimeout = 5 * time.Second
)

// Config configures an open Device.
type Config struct {
	// Ring is where the device's transfers complete (required). The device's
	// reaper holds one of its request slots while the device is open.
	Ring *ioring.Ring
	// MaxURBSize caps the size of one URB, in bytes; larger bulk transfers
	// are split (see the package doc). 0 means as large as the kernel
	// allows; it is mostly for tests of the split path.
	MaxURBSize int
	// Depth caps the transfers of one endpoint handed to the kernel at
	// once; later ones wait, in order, in the Device and go to the kernel
	// as earlier ones complete. Canceling a waiting transfer costs no ioctl
	// and completes it at once, while each transfer in the kernel costs a
	// USBDEVFS_DISCARDURB that waits for the host controller (one after
	// another: see the package doc), so a small depth keeps a cancel of
	// many transfers fast; 2 keeps the bus busy between completions. 0
	// means no cap.
	Depth int
}

// Device is an open USB device: its usbfs fd, the interfaces it claimed and
// a reaper that completes its URBs through Config.Ring. All methods are safe
// for concurrent use. Close it when done: it discards every pending transfer
// and waits for each completion.
type Device struct {
	fd     int
	ring   *ioring.Ring
	info   DeviceInfo
	caps   Capabilities
	maxURB int // the largest URB, in bytes
	budget int // usbfs_memory_mb in bytes (math.MaxInt32 when unlimited)
	depth  int // Config.Depth

	eps [32]epState // per endpoint, by epIndex

	gone atomic.Bool // the device was seen disconnected (an ioctl said ENODEV)
	// unposted counts the transfers accepted whose completion has not been
	// posted yet (Pending).
	unposted atomic.Int64

	mu       sync.Mutex // guards the fields below
	closing  bool
	config   int                    // bConfigurationValue as we last set or read it
	alt      map[uint8]uint8        // alternate setting per interface, where not 0
	claimed  map[uint8]bool         // interfaces this Device claimed
	inflight map[uintptr]partRef    // URBs in the kernel, by address
	active   map[*transfer]struct{} // transfers accepted and not completed
	charged  int                    // memory the accepted transfers take from the budget
	idle     chan struct{}          // closed when active empties during Close
	stop     bool                   // the reaper must exit
	pollReq  ioring.Request         // the reaper's current poll request

	calls      sync.WaitGroup // ioctls in progress or queued outside d.mu (Close waits)
	reaperDone chan struct{}

	dmu           sync.Mutex // guards discards
	discards      []partRef  // URBs the discarder is to discard
	discardWake   chan struct{}
	discardStop   chan struct{}
	discarderDone chan struct{}
}

// partRef names one URB of a transfer.
type partRef struct {
	t *transfer
	i int
}

// OpenBus opens the device at bus and address (busnum and devnum).
func OpenBus(bus, addr int, cfg Config) (*Device, error) {
	info, err := find(sysfsDevices, devUSB, func(d *DeviceInfo) bool { return d.Bus == bus && d.Address == addr },
		fmt.Sprintf("%03d/%03d", bus, addr))
	if err != nil {
		return nil, err
	}
	return open(info, cfg)
}

// OpenVIDPID opens the first device (in bus and address order) with the
// vendor and product IDs.
func OpenVIDPID(vid, pid uint16, cfg Config) (*Device, error) {
	info, err := find(sysfsDevices, devUSB, func(d *DeviceInfo) bool { return d.VendorID == vid && d.ProductID == pid },
		fmt.Sprintf("%04x:%04x", vid, pid))
	if err != nil {
		return nil, err
	}
	return open(info, cfg)
}

func open(info DeviceInfo, cfg Config) (*Device, error) {
	op := "open " + info.DevNode
	if cfg.Ring == nil {
		return nil, invalid(op, "Config.Ring is nil")
	}
	if cfg.MaxURBSize < 0 {
		return nil, invalid(op, "Config.MaxURBSize %d is negative", cfg.MaxURBSize)
	}
	if cfg.Depth < 0 {
		return nil, invalid(op, "Config.Depth %d is negative", cfg.Depth)
	}
	fd, err := unix.Open(info.DevNode, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENODEV || err == unix.ENOENT {
			err = fmt.Errorf("%w (%v)", ErrNoDevice, err)
		}
		return nil, &OpError{Op: op, Err: err}
	}
	d := &Device{
		fd: fd, ring: cfg.Ring, info: info, config: info.ActiveConfig, depth: cfg.Depth,
		alt: map[uint8]uint8{}, claimed: map[uint8]bool{},
		inflight: map[uintptr]partRef{}, active: map[*transfer]struct{}{},
		reaperDone:  make(chan struct{}),
		discardWake: make(chan struct{}, 1), discardStop: make(chan struct{}), discarderDone: make(chan struct{}),
	}
	// The node is the authority on descriptors; sysfs was read first.
	if raw, err := readNode(fd); err == nil {
		if dd, cs, err := ParseDescriptors(raw); err == nil {
			d.info.Descriptor, d.info.Configs = dd, cs
		}
	}
	caps, err := getCapabilities(fd)
	if err != nil {
		unix.Close(fd)
		return nil, &OpError{Op: op + ": get capabilities", Err: noDevice(err)}
	}
	d.caps = Capabilities(caps)
	d.budget = usbfsBudget()
	d.maxURB = legacyURBSize
	if d.caps.Has(CapNoPacketSizeLimit) {
		// Leave half of the shared budget to other transfers; a larger
		// transfer is split.
		d.maxURB = min(d.budget/2, math.MaxInt32)
	}
	if cfg.MaxURBSize > 0 {
		d.maxURB = min(d.maxURB, cfg.MaxURBSize)
	}
	if d.config == 0 && len(d.info.Configs) == 1 {
		d.config = int(d.info.Configs[0].Value)
	}
	go d.reaper()
	go d.discarder()
	return d, nil
}

// readNode reads the descriptors a usbfs node holds.
func readNode(fd int) ([]byte, error) {
	var raw []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Pread(fd, buf, int64(len(raw)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return raw, nil
		}
		raw = append(raw, buf[:n]...)
	}
}

// usbfsBudget returns usbcore's usbfs_memory_mb in bytes: the memory all
// usbfs URBs in flight may take together (math.MaxInt32 when 0: unlimited).
func usbfsBudget() int {
	b, err := os.ReadFile(usbfsMemoryParam)
	if err != nil {
		return defaultUsbfsMemory
	}
	mb, err := strconv.Atoi(strings.TrimSpace(string(b)))
	switch {
	case err != nil:
		return defaultUsbfsMemory
	case mb == 0 || mb >= math.MaxInt32>>20:
		return math.MaxInt32
	}
	return mb << 20
}

// noDevice maps ENODEV (the device is gone) to an error wrapping
// ErrNoDevice.
func noDevice(err error) error {
	if err == unix.ENODEV {
		return fmt.Errorf("%w (%v)", ErrNoDevice, err)
	}
	return err
}

// Info returns what sysfs and the usbfs node said about the device when it
// was opened.
func (d *Device) Info() DeviceInfo { return d.info }

// Capabilities returns what usbfs reported for the device at open.
func (d *Device) Capabilities() Capabilities { return d.caps }

// MaxURBSize returns the largest URB this Device submits, in bytes.
func (d *Device) MaxURBSize() int { return d.maxURB }

// use registers a call that runs an ioctl outside d.mu; it fails once
// Close has begun. The caller calls d.calls.Done.
func (d *Device) use(op string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return &OpError{Op: op, Err: ErrClosed}
	}
	d.calls.Add(1)
	return nil
}

// ioctlErr wraps err for op; ENODEV marks the device gone.
func (d *Device) ioctlErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if err == unix.ENODEV {
		d.gone.Store(true)
	}
	return &OpError{Op: op, Err: noDevice(err)}
}

// Claim claims interface iface for this process, as every transfer on its
// endpoints needs. With detach, a kernel driver bound to it is unbound first
// (USBDEVFS_DISCONNECT_CLAIM; on kernels older than 3.8, USBDEVFS_DISCONNECT
// then USBDEVFS_CLAIMINTERFACE). Claiming an interface another driver holds
// without detach fails with EBUSY, and the error names the driver.
func (d *Device) Claim(iface int, detach bool) error {
	op := fmt.Sprintf("claim interface %d", iface)
	if iface < 0 || iface > 255 {
		return invalid(op, "interface number out of range")
	}
	if err := d.use(op); err != nil {
		return err
	}
	defer d.calls.Done()
	var err error
	if detach {
		err = disconnectAndClaim(d.fd, uint32(iface))
		if err == unix.ENOTTY {
			if err = disconnectDriver(d.fd, uint32(iface)); err == nil || err == unix.ENODATA {
				err = ioctlU32(d.fd, ioctlClaimInterface, uint32(iface))
			}
		}
	} else {
		err = ioctlU32(d.fd, ioctlClaimInterface, uint32(iface))
	}
	if err == unix.EBUSY {
		if drv, e := driverName(d.fd, uint32(iface)); e == nil {
			return &OpError{Op: op, Err: fmt.Errorf("bound to kernel driver %q (claim with detach): %w", drv, err)}
		}
	}
	if err != nil {
		return d.ioctlErr(op, err)
	}
	d.mu.Lock()
	d.claimed[uint8(iface)] = true
	d.mu.Unlock()
	return nil
}

// Release releases an interface claimed with Claim. A kernel driver that
// Claim detached is not rebound: Reattach asks for that.
func (d *Device) Release(iface int) error {
	op := fmt.Sprintf("release interface %d", iface)
	if iface < 0 || iface > 255 {
		return invalid(op, "interface number out of range")
	}
	if err := d.use(op); err != nil {
		return err
	}
	defer d.calls.Done()
	if err := ioctlU32(d.fd, ioctlReleaseInterface, uint32(iface)); err != nil {
		return d.ioctlErr(op, err)
	}
	d.mu.Lock()
	delete(d.claimed, uint8(iface))
	delete(d.alt, uint8(iface))
	d.mu.Unlock()
	return nil
}

// Reattach asks the kernel to bind its drivers to interface iface again
// (USBDEVFS_IOCTL with USBDEVFS_CONNECT), after Release of an interface
// that Claim detached a driver from. The interface must not be claimed.
// Where no driver wants it, nothing binds and Reattach succeeds.
func (d *Device) Reattach(iface int) error {
	op := fmt.Sprintf("reattach interface %d", iface)
	if iface < 0 || iface > 255 {
		return invalid(op, "interface number out of range")
	}
	if err := d.use(op); err != nil {
		return err
	}
	defer d.calls.Done()
	return d.ioctlErr(op, connectDriver(d.fd, uint32(iface)))
}

// SetConfiguration selects the configuration whose bConfigurationValue is
// value (0: unconfigured). usbfs refuses it (EBUSY) while an interface is
// claimed, by this or another process.
func (d *Device) SetConfiguration(value int) error {
	op := fmt.Sprintf("set configuration %d", value)
	if value < 0 || value > 255 {
		return invalid(op, "out of range")
	}
	if _, ok := d.info.Config(value); !ok && value != 0 {
		return invalid(op, "the device has no such configuration")
	}
	if err := d.use(op); err != nil {
		return err
	}
	defer d.calls.Done()
	if err := ioctlU32(d.fd, ioctlSetConfiguration, uint32(value)); err != nil {
		return d.ioctlErr(op, err)
	}
	d.mu.Lock()
	d.config = value
	clear(d.alt)
	d.mu.Unlock()
	return nil
}

// SetAltSetting selects alternate setting alt of interface iface, which
// must be claimed (usbfs claims it implicitly otherwise). Pending transfers
// on the interface's endpoints end.
func (d *Device) SetAltSetting(iface, alt int) error {
	op := fmt.Sprintf("set interface %d alternate setting %d", iface, alt)
	if iface < 0 || iface > 255 || alt < 0 || alt > 255 {
		return invalid(op, "out of range")
	}
	d.mu.Lock()
	_, ok := d.findAltLocked(uint8(iface), uint8(alt))
	d.mu.Unlock()
	if !ok {
		return invalid(op, "no such interface or alternate setting in configuration %d", d.config)
	}
	if err := d.use(op); err != nil {
		return err
	}
	defer d.calls.Done()
	if err := doSetInterface(d.fd, uint32(iface), uint32(alt)); err != nil {
		return d.ioctlErr(op, err)
	}
	d.mu.Lock()
	if alt == 0 {
		delete(d.alt, uint8(iface))
	} else {
		d.alt[uint8(iface)] = uint8(alt)
	}
	d.mu.Unlock()
	return nil
}

// findAltLocked returns alternate setting alt of interface iface in the
// active configuration.
func (d *Device) findAltLocked(iface, alt uint8) (*InterfaceDescriptor, bool) {
	c, ok := d.info.Config(d.config)
	if !ok {
		return nil, false
	}
	for i := range c.Interfaces {
		if c.Interfaces[i].Number != iface {
			continue
		}
		for j := range c.Interfaces[i].AltSettings {
			if a := &c.Interfaces[i].AltSettings[j]; a.Alternate == alt {
				return a, true
			}
		}
	}
	return nil, false
}

// Control runs one control transfer on endpoint 0 (USBDEVFS_CONTROL) and
// returns the bytes moved: data is sent when bit 7 of requestType is clear
// and filled when it is set. usbfs runs it synchronously: it blocks the
// calling goroutine (and its thread) until the device answers or timeout
// (0: 5 s) passes, and cannot be canceled otherwise. A STALL answer (a
// request the device does not support) is ErrStall; a timeout is ETIMEDOUT.
func (d *Device) Control(requestType, request uint8, value, index uint16, data []byte, timeout time.Duration) (int, error) {
	op := fmt.Sprintf("control %#02x/%#02x", requestType, request)
	if len(data) > unix.Getpagesize() || len(data) > math.MaxUint16 {
		return 0, invalid(op, "%d bytes of data; usbfs allows at most %d", len(data), min(unix.Getpagesize(), math.MaxUint16))
	}
	if timeout < 0 {
		return 0, invalid(op, "negative timeout %v", timeout)
	}
	if timeout == 0 {
		timeout = defaultControlTimeout
	}
	ms := uint32(min(max(timeout.Milliseconds(), 1), math.MaxUint32))
	if err := d.use(op); err != nil {
		return 0, err
	}
	defer d.calls.Done()
	n, err := control(d.fd, requestType, request, value, index, data, ms)
	if err == unix.EPIPE {
		return n, &OpError{Op: op, Err: ErrStall}
	}
	return n, d.controlErr(op, err)
}

// Reset resets the device (USBDEVFS_RESET): a USB port reset, after which
// the kernel restores the configuration and alternate settings. Pending
// transfers end. Interfaces may lose their claims across a reset (usbfs
// rebinds them): claim again after it.
func (d *Device) Reset() error {
	if err := d.use("reset"); err != nil {
		return err
	}
	defer d.calls.Done()
	return d.ioctlErr("reset", ioctl(d.fd, ioctlReset, 0))
}

// ControlEndpoint returns endpoint 0, the default control pipe, for
// asynchronous control transfers through the ring: its transfers' buffers
// start with the setup packet (SetupSize bytes, wLength little-endian at
// bytes 6-7), followed by the data stage, and their completions count the
// data stage's bytes. usbfs checks the request against the claimed
// interfaces (a request to an interface or an endpoint needs its
// interface claimed). A cancel discards the URB like any other.
func (d *Device) ControlEndpoint() *Endpoint {
	const maxControl = SetupSize + 0xffff // wLength is 16 bits
	return &Endpoint{
		d: d, es: &d.eps[epIndex(0)],
		Desc:   EndpointDescriptor{Address: 0, Attributes: uint8(Control), MaxPacketSize: uint16(d.info.Descriptor.MaxPacketSize0)},
		maxURB: maxControl, maxTransfer: maxControl,
	}
}

// Endpoint returns the endpoint with address addr (direction bit included:
// 0x81 is IN endpoint 1) in the active configuration, at each interface's
// current alternate setting. Only bulk and interrupt endpoints can transfer
// here; others are refused with ioring.ErrNotSupported.
func (d *Device) Endpoint(addr uint8) (*Endpoint, error) {
	op := fmt.Sprintf("endpoint %#02x", addr)
	d.mu.Lock()
	closing := d.closing
	cfg, ok := d.info.Config(d.config)
	var found *Endpoint
	if ok {
		for _, in := range cfg.Interfaces {
			alt := d.alt[in.Number]
			for _, a := range in.AltSettings {
				if a.Alternate != alt {
					continue
				}
				for _, e := range a.Endpoints {
					if e.Address == addr {
						found = &Endpoint{d: d, es: &d.eps[epIndex(addr)], Desc: e, Interface: int(in.Number), Alternate: int(alt)}
					}
				}
			}
		}
	}
	config := d.config
	d.mu.Unlock()
	switch {
	case closing:
		return nil, &OpError{Op: op, Err: ErrClosed}
	case found == nil:
		return nil, invalid(op, "not in configuration %d at the current alternate settings", config)
	case found.Desc.Type() != Bulk && found.Desc.Type() != Interrupt:
		return nil, &OpError{Op: op, Err: fmt.Errorf("%v endpoint: %w", found.Desc.Type(), ioring.ErrNotSupported)}
	case found.Desc.PacketSize() == 0:
		return nil, invalid(op, "wMaxPacketSize is 0")
	}
	found.maxURB, found.maxTransfer = d.limits(found.Desc)
	return found, nil
}

// limits returns the largest URB and the largest transfer of a bulk or
// interrupt endpoint described by e, whose wMaxPacketSize is not 0.
func (d *Device) limits(e EndpointDescriptor) (maxURB, maxTransfer int) {
	maxURB = d.maxURB
	if e.Type() == Bulk {
		// Parts of a split IN transfer but the last must end on a packet
		// boundary, or a short packet would land mid-transfer.
		ps := e.PacketSize()
		maxURB = max(d.maxURB/ps*ps, ps)
	}
	maxTransfer = maxURB
	if e.Type() == Bulk && d.caps.Has(CapBulkContinuation) {
		maxTransfer = d.budget
	}
	return maxURB, maxTransfer
}

// MaxTransferOf returns the largest transfer Endpoint.Submit takes on an
// endpoint described by e, in whichever setting: 0 for one this package
// does not transfer on (neither bulk nor interrupt, or wMaxPacketSize 0).
func (d *Device) MaxTransferOf(e EndpointDescriptor) int {
	if (e.Type() != Bulk && e.Type() != Interrupt) || e.PacketSize() == 0 {
		return 0
	}
	_, n := d.limits(e)
	return n
}

// Pending returns the number of transfers accepted on the device's
// endpoints whose completion has not been posted yet: once a caller has
// seen every completion, it is 0.
func (d *Device) Pending() int { return int(d.unposted.Load()) }

// Close discards every pending transfer, waits until each has been reaped
// and its completion posted, stops the reaper, releases the claimed
// interfaces and closes the usbfs fd. Later calls fail with ErrClosed. It
// returns ErrClosed when already closed.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closing {
		d.mu.Unlock()
		return &OpError{Op: "close", Err: ErrClosed}
	}
	d.closing = true
	var idle chan struct{}
	if len(d.active) > 0 {
		idle = make(chan struct{})
		d.idle = idle
	}
	d.mu.Unlock()

	// Through the ring, as CancelAll: no transfer begins once closing is
	// set, and each pending one is canceled once, by its first cause.
	cerr := d.cancelActive()
	if idle != nil {
		<-idle
	}
	d.calls.Wait() // ioctls in flight, queued discards included
	close(d.discardStop)
	<-d.discarderDone

	d.mu.Lock()
	d.stop = true
	pr := d.pollReq
	d.mu.Unlock()
	pr.Cancel() // ErrNotFound when the reaper is between polls or gone
	<-d.reaperDone

	var errs []error
	if cerr != nil {
		errs = append(errs, &OpError{Op: "close", Err: cerr})
	}
	for iface := range d.claimed {
		if err := ioctlU32(d.fd, ioctlReleaseInterface, uint32(iface)); err != nil && err != unix.ENODEV {
			errs = append(errs, &OpError{Op: fmt.Sprintf("close: release interface %d", iface), Err: err})
		}
	}
	clear(d.claimed)
	if err := unix.Close(d.fd); err != nil {
		errs = append(errs, &OpError{Op: "close", Err: err})
	}
	return errors.Join(errs...)
}

// String describes the device for logs.
func (d *Device) String() string {
	return fmt.Sprintf("usbfs %s (%s)", d.info.String(), filepath.Base(d.info.SysfsPath))
}
