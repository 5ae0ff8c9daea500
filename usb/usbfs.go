package usb

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/usbfs"
)

// usbfsTransport is the Transport of the usbfs backend: each transfer is
// one foreign request of the Device's ring that package usbfs completes
// from its reaper, with usbfs's own per-endpoint queue (Config.Depth
// transfers in the kernel at once, the others waiting in order) and its
// cancel hook, USBDEVFS_DISCARDURB. No goroutine of this package is on the
// path, and usbfs reports this package's errors (package base) itself.
type usbfsTransport struct {
	dev *usbfs.Device
	zlp bool // WithZeroPacket

	// mu guards the fields below: Submit reads eps, the settings calls
	// (no Submit in progress: the Device sees to it) change them.
	mu  sync.RWMutex
	eps map[uint8]*usbfs.Endpoint // endpoint 0, and the endpoints resolved in the current settings
	// claims are the claimed interfaces and their alternate settings,
	// restored after a reset.
	claims map[int]int
}

// endpoint returns the usbfs endpoint of ep in the current settings, or
// an error wrapping ioring.ErrNotSupported for one usbfs does not transfer
// on.
func (t *usbfsTransport) endpoint(ep EndpointDesc, what string) (*usbfs.Endpoint, error) {
	t.mu.RLock()
	e := t.eps[ep.Address]
	t.mu.RUnlock()
	if e != nil {
		return e, nil
	}
	if t.dev == nil || (ep.Type != Bulk && ep.Type != Interrupt) {
		return nil, errorf("usb: %s %v: %w: usbfs handles bulk and interrupt endpoints only", what, ep, ioring.ErrNotSupported)
	}
	e, err := t.dev.Endpoint(ep.Address)
	if err != nil {
		return nil, errorf("usb: %s %v: %w", what, ep, err)
	}
	t.mu.Lock()
	t.eps[ep.Address] = e
	t.mu.Unlock()
	return e, nil
}

func (t *usbfsTransport) Submit(ep EndpointDesc, buf []byte, x Xfer, wait bool) (ioring.Request, error) {
	e, err := t.endpoint(ep, "endpoint")
	if err != nil {
		return ioring.Request{}, err
	}
	if len(buf) > e.MaxTransfer() {
		return ioring.Request{}, errorf("usb: endpoint %#02x: %w: %d bytes; usbfs takes at most %d", ep.Address, ioring.ErrInvalid, len(buf), e.MaxTransfer())
	}
	zlp := t.zlp && !ep.IsIn() && ep.Type == Bulk && len(buf) > 0 &&
		ep.MaxPacketSize > 0 && len(buf)%ep.MaxPacketSize == 0
	return e.Submit(buf, usbfs.TransferOptions{Token: x.Token, Deadline: x.Deadline, User: x.User, Await: wait, ZeroPacket: zlp})
}

// CancelAll cancels every transfer through the ring (usbfs.Device.CancelAll),
// as Pump.CancelAll does: the ring runs each transfer's cancel hook, which
// discards its URBs, unless the transfer was canceled already, and a later
// cancel of one finds nothing left. Its hooks are package usbfs's own, so
// an error means one of them panicked.
func (t *usbfsTransport) CancelAll() error {
	if t.dev == nil {
		return nil
	}
	return t.dev.CancelAll()
}

func (t *usbfsTransport) ClearHalt(ep EndpointDesc) error {
	e, err := t.endpoint(ep, "clear halt of")
	if err != nil {
		return err
	}
	return e.ClearHalt()
}

// idle refuses what must wait until no transfer is pending on the device.
func (t *usbfsTransport) idle(what string) error {
	if t.dev == nil {
		return errorf("usb: %s: %w: no device", what, ioring.ErrNotSupported)
	}
	if n := t.dev.Pending(); n > 0 {
		return errorf("usb: %s: %w: %d transfers are pending", what, ioring.ErrInvalid, n)
	}
	return nil
}

// settingsChanged forgets the endpoints resolved in the old settings.
// t.mu held.
func (t *usbfsTransport) settingsChangedLocked() {
	for addr := range t.eps {
		if addr != 0 {
			delete(t.eps, addr)
		}
	}
}

func (t *usbfsTransport) Reset() error {
	return t.change("reset", func() error {
		if err := t.dev.Reset(); err != nil {
			return err
		}
		// usbfs lets go of the interfaces it had claimed across a reset
		// (its driver has no post_reset): claim them again and restore
		// their alternate settings, as libusb does.
		for iface, alt := range t.claims {
			if err := t.dev.Claim(iface, false); err != nil {
				return err
			}
			if alt != 0 {
				if err := t.dev.SetAltSetting(iface, alt); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (t *usbfsTransport) SetConfiguration(value int) error {
	return t.change("set configuration", func() error { return t.dev.SetConfiguration(value) })
}

func (t *usbfsTransport) ClaimInterface(iface int, detach bool) error {
	return t.change("claim interface", func() error {
		if err := t.dev.Claim(iface, detach); err != nil {
			return err
		}
		t.claims[iface] = 0
		return nil
	})
}

func (t *usbfsTransport) ReleaseInterface(iface int, reattach bool) error {
	return t.change("release interface", func() error {
		if err := t.dev.Release(iface); err != nil {
			return err
		}
		delete(t.claims, iface)
		if reattach {
			return t.dev.Reattach(iface)
		}
		return nil
	})
}

func (t *usbfsTransport) SetAltSetting(iface, alt int) error {
	return t.change("set alternate setting", func() error {
		if err := t.dev.SetAltSetting(iface, alt); err != nil {
			return err
		}
		t.claims[iface] = alt
		return nil
	})
}

// change runs f, a change of the device's settings, once no transfer is
// pending, forgetting the endpoints resolved in the old settings.
func (t *usbfsTransport) change(what string, f func() error) error {
	if err := t.idle(what); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.settingsChangedLocked()
	return f()
}

func (t *usbfsTransport) Close() error {
	if t.dev == nil { // a transport of tests, without a device
		return nil
	}
	return t.dev.Close()
}

// openError is what Open and List say of a usbfs device that vanished
// between enumeration and open: ErrNotFound. Other errors, package
// base's among them, pass unchanged.
func openError(err error) error {
	if errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrNoDevice) {
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}

// usbfsList is List through sysfs and the usbfs nodes.
func usbfsList() ([]DeviceDesc, error) {
	infos, err := usbfs.List()
	if err != nil {
		return nil, errorf("usb: list: %w", openError(err))
	}
	descs := make([]DeviceDesc, 0, len(infos))
	for i := range infos {
		info := &infos[i]
		desc := fromUsbfs(info)
		var first *usbfs.ConfigDescriptor
		for j := range info.Configs {
			if first == nil || info.Configs[j].Value < first.Value {
				first = &info.Configs[j]
			}
		}
		if first != nil {
			for _, in := range first.Interfaces {
				for _, a := range in.AltSettings {
					if a.Alternate == 0 {
						desc.Endpoints = appendEndpoints(desc.Endpoints, a.Endpoints, nil)
					}
				}
			}
		}
		sortEndpoints(desc.Endpoints)
		descs = append(descs, desc)
	}
	return descs, nil
}

// fromUsbfs converts what sysfs says of a device, without endpoints.
func fromUsbfs(info *usbfs.DeviceInfo) DeviceDesc {
	return DeviceDesc{
		Bus: info.Bus, Address: info.Address, VendorID: info.VendorID, ProductID: info.ProductID,
		Manufacturer: info.Manufacturer, Product: info.Product, Serial: info.SerialNumber,
	}
}

// usbfsAdvertisedMax caps EndpointDesc.MaxTransfer on the usbfs backend.
const usbfsAdvertisedMax = 1 << 20

// appendEndpoints converts endpoint descriptors (usbfs's parse is the one
// source of truth for descriptors and transfer types); eps, when not nil,
// gives each endpoint's MaxTransfer.
func appendEndpoints(dst []EndpointDesc, src []usbfs.EndpointDescriptor, eps map[uint8]*usbfs.Endpoint) []EndpointDesc {
	for _, d := range src {
		ed := EndpointDesc{Address: d.Address, Type: TransferType(d.Type()), MaxPacketSize: d.PacketSize()}
		if ep := eps[d.Address]; ep != nil {
			// usbfs accepts transfers up to the whole usbfs_memory_mb
			// budget, but one that large leaves nothing for the others in
			// flight (the next submit fails with ENOMEM): advertise a size
			// that several transfers can share. Submit still takes more.
			ed.MaxTransfer = min(ep.MaxTransfer(), usbfsAdvertisedMax)
		}
		dst = append(dst, ed)
	}
	return dst
}

func sortEndpoints(eps []EndpointDesc) {
	slices.SortFunc(eps, func(a, b EndpointDesc) int { return int(a.Address) - int(b.Address) })
}

// usbfsOpen is Open through usbfs; ring and the options are checked.
func usbfsOpen(ring *ioring.Ring, vid, pid uint16, o options) (*Device, error) {
	what := fmt.Sprintf("usb: open %04x:%04x", vid, pid)
	infos, err := usbfs.List()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, openError(err))
	}
	i := slices.IndexFunc(infos, func(d usbfs.DeviceInfo) bool {
		return d.VendorID == vid && d.ProductID == pid && (o.bus == 0 || d.Bus == o.bus) && (o.addr == 0 || d.Address == o.addr)
	})
	if i < 0 {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	dev, err := usbfs.OpenBus(infos[i].Bus, infos[i].Address, usbfs.Config{Ring: ring, Depth: o.depth})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, openError(err))
	}
	tr, desc, err := usbfsSetup(dev, o)
	if err != nil {
		_ = dev.Close()
		return nil, fmt.Errorf("%s: %w", what, openError(err))
	}
	return NewDevice(desc, tr), nil
}

// usbfsSetup selects the configuration, claims the interface (detaching a
// kernel driver), selects its alternate setting and finds its endpoints.
func usbfsSetup(dev *usbfs.Device, o options) (*usbfsTransport, DeviceDesc, error) {
	info := dev.Info()
	cfg := o.config
	if cfg == 0 {
		cfg = info.ActiveConfig
	}
	if cfg == 0 { // unconfigured: take the first configuration
		cfg = 1
	}
	c, ok := info.Config(cfg)
	if !ok {
		return nil, DeviceDesc{}, fmt.Errorf("configuration %d: %w", cfg, ErrNotFound)
	}
	var alt *usbfs.InterfaceDescriptor
	for _, in := range c.Interfaces {
		for j := range in.AltSettings {
			if a := &in.AltSettings[j]; int(a.Number) == o.iface && int(a.Alternate) == o.alt {
				alt = a
			}
		}
	}
	if alt == nil {
		return nil, DeviceDesc{}, fmt.Errorf("interface %d alternate setting %d in configuration %d: %w", o.iface, o.alt, cfg, ErrNotFound)
	}
	if cfg != info.ActiveConfig {
		if err := dev.SetConfiguration(cfg); err != nil {
			return nil, DeviceDesc{}, err
		}
	}
	if err := dev.Claim(o.iface, true); err != nil {
		return nil, DeviceDesc{}, err
	}
	if o.alt != 0 {
		if err := dev.SetAltSetting(o.iface, o.alt); err != nil {
			return nil, DeviceDesc{}, err
		}
	}
	if o.zlp && !dev.Capabilities().Has(usbfs.CapZeroPacket) {
		return nil, DeviceDesc{}, fmt.Errorf("WithZeroPacket: %w: this kernel's usbfs lacks USBDEVFS_CAP_ZERO_PACKET", ioring.ErrNotSupported)
	}
	tr := &usbfsTransport{dev: dev, eps: map[uint8]*usbfs.Endpoint{0: dev.ControlEndpoint()}, zlp: o.zlp, claims: map[int]int{o.iface: o.alt}}
	eps := map[uint8]*usbfs.Endpoint{}
	for _, ed := range alt.Endpoints {
		if t := ed.Type(); t != usbfs.Bulk && t != usbfs.Interrupt {
			continue // described, but usbfs transfers on these only
		}
		ep, err := dev.Endpoint(ed.Address)
		if err != nil {
			return nil, DeviceDesc{}, err
		}
		tr.eps[ed.Address], eps[ed.Address] = ep, ep
	}
	desc := fromUsbfs(&info)
	desc.Endpoints = appendEndpoints(nil, alt.Endpoints, eps)
	sortEndpoints(desc.Endpoints)
	desc.Config, desc.Interface, desc.AltSetting = cfg, o.iface, o.alt
	desc.Configs = usbfsConfigs(dev, info.Configs)
	return tr, desc, nil
}

// usbfsConfigs converts the device's configurations, each endpoint with
// the MaxTransfer usbfs gives it (as appendEndpoints does).
func usbfsConfigs(dev *usbfs.Device, cs []usbfs.ConfigDescriptor) []ConfigDesc {
	out := make([]ConfigDesc, 0, len(cs))
	for _, c := range cs {
		cd := ConfigDesc{Value: int(c.Value)}
		for _, in := range c.Interfaces {
			for _, a := range in.AltSettings {
				sd := InterfaceDesc{Number: int(a.Number), Alternate: int(a.Alternate), Class: a.Class, SubClass: a.SubClass, Protocol: a.Protocol}
				sd.Endpoints = appendEndpoints(nil, a.Endpoints, nil)
				for i := range sd.Endpoints {
					if n := dev.MaxTransferOf(a.Endpoints[i]); n > 0 {
						sd.Endpoints[i].MaxTransfer = min(n, usbfsAdvertisedMax)
					}
				}
				sortEndpoints(sd.Endpoints)
				cd.Interfaces = append(cd.Interfaces, sd)
			}
		}
		out = append(out, cd)
	}
	slices.SortFunc(out, func(a, b ConfigDesc) int { return a.Value - b.Value })
	return out
}
