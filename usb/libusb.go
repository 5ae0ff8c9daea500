//go:build cgo

package usb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/gousb"

	"github.com/cancelio/cancelio/ioring"
)

// libusbDevice is the narrow part of gousb (libusb) this package uses: the
// transfers, clear-halt and close of one opened interface. gousbDevice
// implements it; tests drive the transport with a fake.
type libusbDevice interface {
	// transfer runs one transfer on the endpoint at addr (gousb's
	// ReadContext for IN, WriteContext for OUT) and returns gousb's result.
	// ctx ending cancels it (libusb_cancel_transfer); it then returns
	// gousb.TransferCancelled with the bytes that moved.
	transfer(ctx context.Context, addr uint8, buf []byte) (int, error)
	// control runs one control transfer on endpoint 0 (gousb's Control,
	// synchronous: libusb_control_transfer, bounded by its timeout) with
	// setup s and data stage data (len(data) is s.Length), and returns the
	// data stage's bytes. Nothing interrupts it: libusbRunner gives it a
	// private copy of the data stage and runs it on a goroutine of its
	// own, which a cancel leaves behind (see libusbRunner.control).
	control(s Setup, data []byte) (int, error)
	// clearHalt sends CLEAR_FEATURE(ENDPOINT_HALT) for addr.
	clearHalt(addr uint8) error
	// reset resets the device (libusb_reset_device, which claims the
	// interfaces again and restores their alternate settings).
	reset() error
	// present reports whether the device is still attached.
	present() bool
	// close releases the interface, the device and libusb.
	close() error
}

// libusbRunner runs transfers through libusb, as the Runner of a Pump.
// gousb's calls are synchronous, so each endpoint's pump goroutine runs
// one libusb transfer at a time, in order; a cancel cancels the context of
// the bulk or interrupt call in progress, which cancels the libusb
// transfer. gousb's control call takes no context and nothing interrupts
// it, so a control transfer runs it on a goroutine of its own, on a copy
// of the data stage, and a cancel completes the transfer at once and
// leaves the call behind (see control); ep0 keeps endpoint 0's calls one
// at a time, and Close waits for the last one before it closes libusb.
type libusbRunner struct {
	dev libusbDevice
	zlp bool       // WithZeroPacket
	ep0 *libusbEP0 // not nil
}

// libusbEP0 keeps endpoint 0's libusb calls (control transfers,
// clear-halt, reset, the settings) one at a time: a call holds it until
// libusb returns, which for a control transfer a cancel left behind is
// after its transfer completed. The next call on endpoint 0 waits for it
// (a control transfer cancelably), and so does Close, so that the device
// is not closed under a call.
type libusbEP0 struct {
	sem chan struct{} // holds a token while a call is in libusb
}

func newLibusbEP0() *libusbEP0 { return &libusbEP0{sem: make(chan struct{}, 1)} }

// acquire waits for endpoint 0 to be free, or for stop to close (false).
func (e *libusbEP0) acquire(stop <-chan struct{}) bool {
	select {
	case e.sem <- struct{}{}:
		return true
	case <-stop:
		return false
	}
}

// lock waits for endpoint 0 to be free. It is bounded by libusb's
// control timeout (gousbDevice: 5 seconds) for a call left behind.
func (e *libusbEP0) lock() { e.sem <- struct{}{} }

// unlock frees endpoint 0 after a call returned.
func (e *libusbEP0) unlock() { <-e.sem }

// libusbMaxControl is the most data a control transfer's data stage may
// carry through libusb on Linux (its MAX_CTRL_BUFFER_LENGTH: a longer one
// fails at submission with LIBUSB_ERROR_INVALID_PARAM).
const libusbMaxControl = 4096

// Check refuses up front what libusb would refuse only once the transfer
// runs: a control data stage over libusbMaxControl bytes.
func (libusbRunner) Check(ep EndpointDesc, buf []byte) error {
	if ep.Type != Control {
		return nil
	}
	if s, _ := ParseSetup(buf); s.Length > libusbMaxControl { // checked by Device.SubmitControl
		return errorf("usb: control transfer: %w: a data stage of %d bytes: libusb carries at most %d (%w)",
			ioring.ErrInvalid, s.Length, libusbMaxControl, ioring.ErrNotSupported)
	}
	return nil
}

func (r libusbRunner) Run(t *Transfer) (int, error) {
	ep := t.Endpoint()
	if ep.Type == Control {
		return r.control(t)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if !t.OnCancel(stop) {
		return 0, ErrCanceled
	}
	n, err := r.dev.transfer(ctx, ep.Address, t.Buf())
	if err == nil && r.needsZLP(ep, len(t.Buf())) {
		// gousb has no LIBUSB_TRANSFER_ADD_ZERO_PACKET: a zero-length
		// transfer of its own, cancelable like the data's.
		_, err = r.dev.transfer(ctx, ep.Address, nil)
	}
	if r.unplugged(err) {
		return n, ErrNoDevice
	}
	return n, libusbError(err)
}

// unplugged reports whether err, an I/O error of libusb, means that the
// device went away. A transfer pending when the device goes ends with
// EPROTO or ESHUTDOWN (libusb: TRANSFER_ERROR, or LIBUSB_ERROR_IO for a
// synchronous control transfer such as clear-halt), and so may one
// submitted in the moment before usbcore notices; its usbfs node goes a
// little later (under 10 ms in the usbvm guest): wait for it briefly on
// this rare path.
func (r libusbRunner) unplugged(err error) bool {
	if !errors.Is(err, gousb.TransferError) && !errors.Is(err, gousb.ErrorIO) {
		return false
	}
	for i := 0; i < unplugPolls && r.dev.present(); i++ {
		time.Sleep(unplugPoll)
	}
	return !r.dev.present()
}

// control runs a control transfer. libusb's call cannot be interrupted,
// so it runs on a goroutine of its own, on a private copy of the data
// stage, and the transfer waits for it or for its cancel, whichever comes
// first:
//
//   - the call returns first: the real result, an IN data stage copied
//     into the transfer's buffer (a cancel that comes later loses the
//     race);
//   - the cancel comes first: the transfer completes at once with
//     ErrCanceled and 0 bytes, and its buffer is never touched again. The
//     call goes on until libusb returns (the device answers, or the
//     control timeout passes) and its result is dropped: an IN data stage
//     is not delivered, and an OUT or no-data request may still have
//     reached the device and been acted on, as a usbfs URB discarded after
//     its setup packet went out. The count is 0 because no byte is known
//     to have moved when the transfer completes.
//
// Endpoint 0 is acquired first (cancelably: a transfer canceled while
// another call holds it never reaches libusb), so that it runs one request
// at a time; the call's goroutine frees it when libusb returns.
func (r libusbRunner) control(t *Transfer) (int, error) {
	stop := make(chan struct{})
	if !t.OnCancel(func() { close(stop) }) {
		return 0, ErrCanceled
	}
	if !r.ep0.acquire(stop) {
		return 0, ErrCanceled // canceled while another call held endpoint 0
	}
	select {
	case <-stop:
		r.ep0.unlock()
		return 0, ErrCanceled
	default:
	}
	buf := t.Buf()
	s, _ := ParseSetup(buf) // checked by Device.SubmitControl
	data := buf[SetupSize : SetupSize+int(s.Length)]
	call := &libusbControl{done: make(chan struct{}), data: make([]byte, len(data))}
	if !s.IsIn() {
		copy(call.data, data)
	}
	go call.run(r.dev, s, r.ep0)
	select {
	case <-call.done:
	case <-stop:
		select {
		case <-call.done: // libusb returned first: its result stands
		default:
			return 0, ErrCanceled
		}
	}
	// gousb hands back libusb's return value, a negative error code on
	// failure (-7 for LIBUSB_ERROR_TIMEOUT), as the count.
	n, err := max(call.n, 0), call.err
	if s.IsIn() {
		copy(data, call.data[:min(n, len(data))])
	}
	if r.unplugged(err) {
		return n, ErrNoDevice
	}
	return n, libusbError(err)
}

// libusbControl is one libusb control call: its own copy of the data
// stage, and its result once done is closed.
type libusbControl struct {
	done chan struct{}
	data []byte
	n    int
	err  error
}

// run makes the call, closes done and frees endpoint 0, which its caller
// acquired.
func (c *libusbControl) run(dev libusbDevice, s Setup, ep0 *libusbEP0) {
	defer ep0.unlock()
	defer close(c.done)
	c.n, c.err = dev.control(s, c.data)
}

// libusbSettings is the part of gousb that changes the configuration,
// the claimed interfaces and their alternate settings; gousbDevice has it.
type libusbSettings interface {
	setConfig(value int) error
	claim(iface int, detach bool) error
	release(iface int, reattach bool) error
	setAlt(iface, alt int) error
}

// settings returns the device's libusbSettings, or an error wrapping
// ioring.ErrNotSupported.
func (r libusbRunner) settings() (libusbSettings, error) {
	if s, ok := r.dev.(libusbSettings); ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: this libusb device keeps its settings", ioring.ErrNotSupported)
}

func (r libusbRunner) SetConfiguration(value int) error {
	return r.setting(func(s libusbSettings) error { return s.setConfig(value) })
}

func (r libusbRunner) ClaimInterface(iface int, detach bool) error {
	return r.setting(func(s libusbSettings) error { return s.claim(iface, detach) })
}

func (r libusbRunner) ReleaseInterface(iface int, reattach bool) error {
	return r.setting(func(s libusbSettings) error { return s.release(iface, reattach) })
}

func (r libusbRunner) SetAltSetting(iface, alt int) error {
	return r.setting(func(s libusbSettings) error { return s.setAlt(iface, alt) })
}

// setting runs f on the device's settings and maps its error.
func (r libusbRunner) setting(f func(libusbSettings) error) error {
	s, err := r.settings()
	if err != nil {
		return err
	}
	r.ep0.lock() // SET_CONFIGURATION and SET_INTERFACE go on endpoint 0
	err = f(s)
	r.ep0.unlock()
	if r.unplugged(err) {
		return ErrNoDevice
	}
	return libusbError(err)
}

// needsZLP reports whether an OUT transfer of n bytes on ep ends with a
// zero-length packet (WithZeroPacket).
func (r libusbRunner) needsZLP(ep EndpointDesc, n int) bool {
	mps := ep.MaxPacketSize
	return r.zlp && !ep.IsIn() && ep.Type == Bulk && n > 0 && mps > 0 && n%mps == 0
}

// How long a transfer error waits for the device node to vanish before it
// counts as a plain error rather than an unplug.
const (
	unplugPolls = 50
	unplugPoll  = 5 * time.Millisecond
)

func (r libusbRunner) ClearHalt(ep EndpointDesc) error {
	r.ep0.lock() // CLEAR_FEATURE goes on endpoint 0
	err := r.dev.clearHalt(ep.Address)
	r.ep0.unlock()
	if r.unplugged(err) {
		return ErrNoDevice
	}
	return libusbError(err)
}

func (r libusbRunner) Reset() error {
	r.ep0.lock()
	err := r.dev.reset()
	r.ep0.unlock()
	if r.unplugged(err) {
		return ErrNoDevice
	}
	return libusbError(err)
}

// Close closes the device once endpoint 0's call in progress returned:
// one that a cancel left behind still uses it.
func (r libusbRunner) Close() error {
	r.ep0.lock()
	defer r.ep0.unlock()
	return r.dev.close()
}

// newLibusbDevice returns the Device of an opened libusb device.
func newLibusbDevice(ring *ioring.Ring, desc DeviceDesc, dev libusbDevice, zlp bool) *Device {
	eps := append(allEndpoints(desc), controlDesc) // endpoint 0 too
	return NewDevice(desc, NewPump(ring, eps, libusbRunner{dev: dev, zlp: zlp, ep0: newLibusbEP0()}))
}

// libusbError maps gousb's errors to this package's; others pass
// unchanged (gousb.Error, gousb.TransferStatus: compare with errors.Is).
func libusbError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gousb.TransferCancelled), errors.Is(err, gousb.ErrorInterrupted):
		return ErrCanceled
	case errors.Is(err, gousb.TransferTimedOut), errors.Is(err, gousb.ErrorTimeout):
		return ErrTimeout
	case errors.Is(err, gousb.TransferStall), errors.Is(err, gousb.ErrorPipe):
		return ErrStall
	case errors.Is(err, gousb.TransferNoDevice), errors.Is(err, gousb.ErrorNoDevice):
		return ErrNoDevice
	case errors.Is(err, gousb.TransferOverflow), errors.Is(err, gousb.ErrorOverflow):
		return ErrBabble
	case errors.Is(err, gousb.ErrorInvalidParam):
		return errorf("usb: %w: %w", ioring.ErrInvalid, err)
	}
	return err
}

// newContext initializes libusb, or returns an error wrapping ErrNoUSB
// where there is no USB subsystem (gousb panics when libusb_init fails).
func newContext() (c *gousb.Context, err error) {
	if err := haveUSB(); err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("%w: libusb_init: %v", ErrNoUSB, r)
		}
	}()
	return gousb.NewContext(), nil
}

// libusbList is List through libusb. String descriptors are read where the
// device can be opened (permissions allow it) and left empty otherwise.
func libusbList() ([]DeviceDesc, error) {
	c, err := newContext()
	if err != nil {
		return nil, errorf("usb: list: %w", err)
	}
	defer c.Close()
	var descs []DeviceDesc
	devs, err := c.OpenDevices(func(d *gousb.DeviceDesc) bool {
		descs = append(descs, fromGousb(d, -1, 0, 0))
		return true
	})
	for _, dev := range devs {
		for i := range descs {
			if descs[i].Bus == dev.Desc.Bus && descs[i].Address == dev.Desc.Address {
				readStrings(dev, &descs[i])
			}
		}
		_ = dev.Close()
	}
	if err != nil && len(descs) == 0 {
		return nil, errorf("usb: list: %w", err)
	}
	return descs, nil
}

// fromGousb converts a device descriptor, with the endpoints of
// configuration cfg (-1: the lowest numbered), interface iface and
// alternate setting alt (all interfaces at alt 0 when cfg is -1).
func fromGousb(d *gousb.DeviceDesc, cfg, iface, alt int) DeviceDesc {
	desc := DeviceDesc{Bus: d.Bus, Address: d.Address, VendorID: uint16(d.Vendor), ProductID: uint16(d.Product),
		Interface: iface, AltSetting: alt}
	for _, c := range d.Configs {
		cd := ConfigDesc{Value: c.Number}
		for _, in := range c.Interfaces {
			for _, s := range in.AltSettings {
				sd := InterfaceDesc{Number: s.Number, Alternate: s.Alternate,
					Class: uint8(s.Class), SubClass: uint8(s.SubClass), Protocol: uint8(s.Protocol)}
				for _, ep := range s.Endpoints {
					sd.Endpoints = append(sd.Endpoints, gousbEndpoint(ep))
				}
				sortEndpoints(sd.Endpoints)
				cd.Interfaces = append(cd.Interfaces, sd)
			}
		}
		desc.Configs = append(desc.Configs, cd)
	}
	slices.SortFunc(desc.Configs, func(a, b ConfigDesc) int { return a.Value - b.Value })
	all := cfg < 0
	if all {
		for n := range d.Configs {
			if cfg < 0 || n < cfg {
				cfg = n
			}
		}
	}
	desc.Config = cfg
	c, ok := d.Configs[cfg]
	if !ok {
		return desc
	}
	for _, in := range c.Interfaces {
		if !all && in.Number != iface {
			continue
		}
		for _, s := range in.AltSettings {
			if s.Alternate != alt && !(all && s.Alternate == 0) {
				continue
			}
			for _, ep := range s.Endpoints {
				desc.Endpoints = append(desc.Endpoints, gousbEndpoint(ep))
			}
		}
	}
	sortEndpoints(desc.Endpoints)
	return desc
}

// gousbEndpoint converts an endpoint descriptor of gousb.
func gousbEndpoint(ep gousb.EndpointDesc) EndpointDesc {
	return EndpointDesc{Address: uint8(ep.Address), Type: TransferType(ep.TransferType), MaxPacketSize: ep.MaxPacketSize}
}

func readStrings(dev *gousb.Device, desc *DeviceDesc) {
	desc.Manufacturer, _ = dev.Manufacturer()
	desc.Product, _ = dev.Product()
	desc.Serial, _ = dev.SerialNumber()
}

// haveLibusb says whether this build has the libusb backend (cgo).
const haveLibusb = true

// libusbOpen is Open through libusb (libusb's errors pass through:
// permissions are gousb.ErrorAccess). libusb transfers are run one at a
// time per endpoint, in order: queued transfers wait in the Device, each
// cancelable. ring and the options are checked by Open.
func libusbOpen(ring *ioring.Ring, vid, pid uint16, o options) (*Device, error) {
	c, err := newContext()
	if err != nil {
		return nil, errorf("usb: open %04x:%04x: %w", vid, pid, err)
	}
	found := false
	devs, err := c.OpenDevices(func(d *gousb.DeviceDesc) bool {
		if found || uint16(d.Vendor) != vid || uint16(d.Product) != pid ||
			(o.bus != 0 && d.Bus != o.bus) || (o.addr != 0 && d.Address != o.addr) {
			return false
		}
		found = true
		return true
	})
	if len(devs) == 0 {
		_ = c.Close()
		if err != nil {
			return nil, errorf("usb: open %04x:%04x: %w", vid, pid, libusbError(err))
		}
		return nil, errorf("usb: open %04x:%04x: %w", vid, pid, ErrNotFound)
	}
	g := &gousbDevice{
		ctx:     c,
		dev:     devs[0],
		intfs:   map[int]*gousb.Interface{},
		in:      map[uint8]*gousb.InEndpoint{},
		out:     map[uint8]*gousb.OutEndpoint{},
		scratch: map[uint8]*[]byte{},
		node:    fmt.Sprintf("%s/%03d/%03d", usbfsRoot, devs[0].Desc.Bus, devs[0].Desc.Address),
	}
	desc, err := g.open(o)
	if err != nil {
		_ = g.close()
		return nil, errorf("usb: open %04x:%04x: %w", vid, pid, libusbError(err))
	}
	return newLibusbDevice(ring, desc, g, o.zlp), nil
}

// gousbDevice is a device opened with gousb, its active configuration
// and its claimed interfaces.
type gousbDevice struct {
	ctx  *gousb.Context
	dev  *gousb.Device
	node string // the usbfs node, to tell an unplug from other errors

	// mu guards the fields below: the pumps read the endpoint maps, the
	// settings calls (no transfer running: the Pump sees to it) and reset
	// replace them.
	mu    sync.RWMutex
	cfg   *gousb.Config
	intfs map[int]*gousb.Interface // claimed interfaces, at their alternate settings
	in    map[uint8]*gousb.InEndpoint
	out   map[uint8]*gousb.OutEndpoint
	// scratch is each IN endpoint's landing buffer. gousb copies libusb's
	// whole buffer into the caller's, bytes past the transfer's length
	// included (uninitialised C memory); reading into scratch and copying
	// the n bytes that arrived leaves the rest of the caller's buffer as
	// it was, as usbfs does. Only the endpoint's pump uses its scratch.
	scratch map[uint8]*[]byte
}

func (g *gousbDevice) open(o options) (DeviceDesc, error) {
	g.dev.ControlTimeout = 5 * time.Second
	cfg := o.config
	if cfg == 0 {
		n, err := g.dev.ActiveConfigNum()
		if err != nil {
			return DeviceDesc{}, err
		}
		cfg = n
		if cfg == 0 { // unconfigured: take the first configuration
			cfg = 1
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.setConfigLocked(cfg, true); err != nil {
		return DeviceDesc{}, err
	}
	if err := g.claimLocked(o.iface, o.alt, true); err != nil {
		return DeviceDesc{}, err
	}
	desc := fromGousb(g.dev.Desc, cfg, o.iface, o.alt)
	readStrings(g.dev, &desc)
	return desc, nil
}

// setConfigLocked closes the claimed interfaces and the configuration and
// selects configuration value; with detach, kernel drivers of its
// interfaces are unbound (gousb does that for every interface at once).
func (g *gousbDevice) setConfigLocked(value int, detach bool) error {
	if err := g.closeLocked(); err != nil {
		return err
	}
	if err := g.dev.SetAutoDetach(detach); err != nil {
		return err
	}
	var err error
	g.cfg, err = g.dev.Config(value)
	return err
}

// claimLocked claims interface iface at alternate setting alt and makes
// its endpoints transferable. With detach, libusb unbinds a kernel driver
// first, and binds the kernel's drivers again at release.
func (g *gousbDevice) claimLocked(iface, alt int, detach bool) error {
	if g.cfg == nil {
		return fmt.Errorf("claim interface %d: %w: no configuration", iface, ioring.ErrInvalid)
	}
	if err := g.dev.SetAutoDetach(detach); err != nil {
		return err
	}
	intf, err := g.cfg.Interface(iface, alt)
	if err != nil {
		return err
	}
	g.intfs[iface] = intf
	return g.endpointsLocked()
}

// endpointsLocked rebuilds the endpoint maps from the claimed interfaces.
func (g *gousbDevice) endpointsLocked() error {
	clear(g.in)
	clear(g.out)
	for _, intf := range g.intfs {
		for _, ep := range intf.Setting.Endpoints {
			addr, num := uint8(ep.Address), ep.Number
			var err error
			if addr&0x80 != 0 {
				if g.in[addr], err = intf.InEndpoint(num); err != nil {
					return err
				}
				if g.scratch[addr] == nil {
					g.scratch[addr] = new([]byte)
				}
			} else if g.out[addr], err = intf.OutEndpoint(num); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *gousbDevice) setConfig(value int) error {
	if value == 0 {
		return fmt.Errorf("%w: gousb cannot unconfigure a device", ioring.ErrNotSupported)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.setConfigLocked(value, false)
}

func (g *gousbDevice) claim(iface int, detach bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.claimLocked(iface, 0, detach)
}

// release releases iface; libusb binds the kernel's drivers again when
// auto-detach is on at release, which reattach sets.
func (g *gousbDevice) release(iface int, reattach bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	intf := g.intfs[iface]
	if intf == nil {
		return fmt.Errorf("release interface %d: %w: not claimed", iface, ErrNotFound)
	}
	if err := g.dev.SetAutoDetach(reattach); err != nil {
		return err
	}
	intf.Close()
	delete(g.intfs, iface)
	return g.endpointsLocked()
}

// setAlt selects alternate setting alt of claimed interface iface: gousb
// ties an alternate setting to its Interface, so the interface is closed
// (released) and claimed again at alt, which sends SET_INTERFACE.
func (g *gousbDevice) setAlt(iface, alt int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	intf := g.intfs[iface]
	if intf == nil {
		return fmt.Errorf("interface %d: %w: not claimed", iface, ErrNotFound)
	}
	intf.Close()
	delete(g.intfs, iface)
	intf, err := g.cfg.Interface(iface, alt)
	if err == nil {
		g.intfs[iface] = intf
	}
	return errors.Join(err, g.endpointsLocked())
}

func (g *gousbDevice) transfer(ctx context.Context, addr uint8, buf []byte) (int, error) {
	g.mu.RLock()
	in, out, s := g.in[addr], g.out[addr], g.scratch[addr]
	g.mu.RUnlock()
	if addr&0x80 != 0 {
		if in == nil {
			return 0, fmt.Errorf("endpoint %#02x: %w", addr, ErrNotFound)
		}
		if cap(*s) < len(buf) {
			*s = make([]byte, len(buf))
		}
		n, err := in.ReadContext(ctx, (*s)[:len(buf)])
		copy(buf, (*s)[:min(max(n, 0), len(buf))])
		return n, err
	}
	if out == nil {
		return 0, fmt.Errorf("endpoint %#02x: %w", addr, ErrNotFound)
	}
	return out.WriteContext(ctx, buf)
}

func (g *gousbDevice) control(s Setup, data []byte) (int, error) {
	return g.dev.Control(s.RequestType, s.Request, s.Value, s.Index, data)
}

// clearHalt sends the standard request; gousb has no libusb_clear_halt.
func (g *gousbDevice) clearHalt(addr uint8) error {
	const (
		recipEndpoint   = 0x02 // host to device, standard, endpoint
		reqClearFeature = 0x01
		featEndpointHlt = 0x00
	)
	_, err := g.dev.Control(recipEndpoint, reqClearFeature, featEndpointHlt, uint16(addr), nil)
	return err
}

// reset resets the device: gousb refuses while a configuration is open,
// so it closes the interfaces and the configuration, resets, and sets
// them up again as they were (the endpoints are new: no transfer runs
// meanwhile).
func (g *gousbDevice) reset() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	alts := map[int]int{}
	for n, intf := range g.intfs {
		alts[n] = intf.Setting.Alternate
	}
	value := 0
	if g.cfg != nil {
		value = g.cfg.Desc.Number
	}
	if err := g.closeLocked(); err != nil {
		return err
	}
	if err := g.dev.Reset(); err != nil {
		return err
	}
	if value == 0 {
		return nil
	}
	if err := g.setConfigLocked(value, true); err != nil {
		return err
	}
	for n, alt := range alts {
		if err := g.claimLocked(n, alt, true); err != nil {
			return err
		}
	}
	return nil
}

// closeLocked closes the claimed interfaces (releasing them) and the
// configuration.
func (g *gousbDevice) closeLocked() error {
	for n, intf := range g.intfs {
		intf.Close()
		delete(g.intfs, n)
	}
	clear(g.in)
	clear(g.out)
	if g.cfg == nil {
		return nil
	}
	err := g.cfg.Close()
	g.cfg = nil
	return err
}

func (g *gousbDevice) present() bool {
	_, err := os.Stat(g.node)
	return err == nil
}

func (g *gousbDevice) close() error {
	g.mu.Lock()
	err := g.closeLocked()
	g.mu.Unlock()
	return errors.Join(err, g.dev.Close(), g.ctx.Close())
}
