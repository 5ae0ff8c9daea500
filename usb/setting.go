package usb

import (
	"fmt"
	"slices"

	"github.com/cancelio/cancelio/ioring"
)

// Configurer is implemented by a Transport that can change what is set
// up on the device after Open: the configuration, the claimed interfaces
// and their alternate settings (usbfs, libusb and the simulator do). The
// Device checks the numbers against DeviceDesc.Configs and its own record
// of the claims before it calls these, with no Submit in progress; each
// refuses with an error wrapping ioring.ErrInvalid while transfers are
// pending on the device, and with one wrapping ioring.ErrNotSupported for
// what the backend cannot do. After a method returns nil the Device
// transfers on the endpoints of the new settings (a Submit names them by
// their EndpointDesc, as before).
type Configurer interface {
	// SetConfiguration selects configuration value (SET_CONFIGURATION;
	// 0: unconfigured). No interface is claimed.
	SetConfiguration(value int) error
	// ClaimInterface claims interface iface, at alternate setting 0. With
	// detach, a kernel driver bound to it is unbound first.
	ClaimInterface(iface int, detach bool) error
	// ReleaseInterface releases interface iface. With reattach, the
	// kernel's drivers are asked to bind to it again.
	ReleaseInterface(iface int, reattach bool) error
	// SetAltSetting selects alternate setting alt of the claimed
	// interface iface (SET_INTERFACE).
	SetAltSetting(iface, alt int) error
}

// Configuration returns the active configuration's value
// (bConfigurationValue; 0: unconfigured).
func (d *Device) Configuration() int {
	if !d.made() {
		return 0
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.config
}

// AltSetting returns the current alternate setting of claimed interface
// iface, or an error wrapping ErrNotFound when it is not claimed.
func (d *Device) AltSetting(iface int) (int, error) {
	if !d.made() {
		return 0, errDeviceNotMade("alternate setting", d)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	c := d.claimed[iface]
	if c == nil {
		return 0, errorf("usb: %v: interface %d: %w: not claimed", d.desc, iface, ErrNotFound)
	}
	return c.alt, nil
}

// SetConfiguration selects the configuration whose bConfigurationValue is
// value (0 unconfigures the device), as SET_CONFIGURATION does. Every
// interface must be released first, and no transfer may be pending;
// afterwards none is claimed and the Device has no endpoint but endpoint
// 0 until ClaimInterface. Selecting the active configuration again
// resets the device's configuration state.
//
// Errors: one wrapping ioring.ErrInvalid for a value outside 0..255, for
// a claimed interface or for pending transfers; ErrNotFound for a
// configuration the device does not have; ioring.ErrNotSupported where
// the backend cannot (libusb cannot unconfigure); ErrClosed,
// ErrNoDevice, or the backend's.
func (d *Device) SetConfiguration(value int) error {
	what := fmt.Sprintf("usb: set configuration %d", value)
	return d.change(what, []int{value}, func() error {
		if _, ok := d.desc.config(value); !ok && value != 0 {
			return errorf("%s: %w: the device has configurations %s", what, ErrNotFound, d.configList())
		}
		if len(d.claimed) > 0 {
			return errorf("%s: %w: interfaces %v are claimed; release them first", what, ioring.ErrInvalid, d.claimedList())
		}
		return nil
	}, func(cf Configurer) error {
		if err := cf.SetConfiguration(value); err != nil {
			return err
		}
		d.config = value
		return nil
	})
}

// ClaimInterface claims interface iface of the active configuration, at
// alternate setting 0: its endpoints join the Device's (Desc, Endpoint).
// With detach, a kernel driver bound to the interface is unbound first,
// and ReleaseInterface binds the kernel's drivers again; without it,
// claiming an interface a driver holds fails (EBUSY on usbfs).
//
// Errors: one wrapping ioring.ErrInvalid for a number outside 0..255, an
// interface claimed already or pending transfers; ErrNotFound for an
// interface the configuration does not have; ErrClosed, ErrNoDevice, or
// the backend's.
func (d *Device) ClaimInterface(iface int, detach bool) error {
	what := fmt.Sprintf("usb: claim interface %d", iface)
	return d.change(what, []int{iface}, func() error {
		if _, err := d.settingLocked(what, iface, 0); err != nil {
			return err
		}
		if d.claimed[iface] != nil {
			return errorf("%s: %w: claimed already", what, ioring.ErrInvalid)
		}
		return nil
	}, func(cf Configurer) error {
		if err := cf.ClaimInterface(iface, detach); err != nil {
			return err
		}
		d.claimed[iface] = &claim{detached: detach}
		return nil
	})
}

// ReleaseInterface releases claimed interface iface: its endpoints leave
// the Device (their Endpoints fail with ErrNotFound until it is claimed
// again), and the device returns it to alternate setting 0. If
// ClaimInterface (or Open) detached a kernel driver from it, the kernel's
// drivers are asked to bind to it again. No transfer may be pending.
//
// Errors: one wrapping ioring.ErrInvalid for a number outside 0..255 or
// pending transfers; ErrNotFound for an interface that is not claimed;
// ErrClosed, ErrNoDevice, or the backend's.
func (d *Device) ReleaseInterface(iface int) error {
	what := fmt.Sprintf("usb: release interface %d", iface)
	return d.change(what, []int{iface}, func() error {
		if d.claimed[iface] == nil {
			return errorf("%s: %w: not claimed", what, ErrNotFound)
		}
		return nil
	}, func(cf Configurer) error {
		if err := cf.ReleaseInterface(iface, d.claimed[iface].detached); err != nil {
			return err
		}
		delete(d.claimed, iface)
		return nil
	})
}

// SetAltSetting selects alternate setting alt of claimed interface iface,
// as SET_INTERFACE does: the Device's endpoints become those of the new
// setting (Endpoints of the old one fail with ErrNotFound). Selecting the
// current setting again resets the interface's endpoints (their halts and
// data toggles) on both sides, where the backend sends the request: libusb
// (gousb) sends none for an interface with one setting, it only claims
// the interface again. No transfer may be pending.
//
// Errors: one wrapping ioring.ErrInvalid for numbers outside 0..255, an
// interface that is not claimed, or pending transfers; ErrNotFound for a
// setting the interface does not have, or an interface the configuration
// does not have (its text lists those it has); ErrStall where the device
// refuses; ErrClosed, ErrNoDevice, or the backend's.
func (d *Device) SetAltSetting(iface, alt int) error {
	what := fmt.Sprintf("usb: interface %d: set alternate setting %d", iface, alt)
	return d.change(what, []int{iface, alt}, func() error {
		if _, err := d.settingLocked(what, iface, alt); err != nil {
			return err
		}
		if d.claimed[iface] == nil {
			return errorf("%s: %w: the interface is not claimed", what, ioring.ErrInvalid)
		}
		return nil
	}, func(cf Configurer) error {
		if err := cf.SetAltSetting(iface, alt); err != nil {
			return err
		}
		d.claimed[iface].alt = alt
		return nil
	})
}

// change runs one of the settings calls: it refuses numbers outside
// 0..255, then, holding d.mu, a closed Device or a backend that is not a
// Configurer, then what check refuses (the Device's own record and the
// descriptors); do calls the backend and updates the record, after which
// the Device's endpoints follow the new settings.
func (d *Device) change(what string, numbers []int, check func() error, do func(Configurer) error) error {
	if !d.made() {
		return errDeviceNotMade(what[len("usb: "):], d)
	}
	for _, n := range numbers {
		if n < 0 || n > 255 {
			return errorf("%s: %w: %d is out of range 0..255", what, ioring.ErrInvalid, n)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cf, err := d.configurerLocked(what)
	if err != nil {
		return err
	}
	if err := check(); err != nil {
		return err
	}
	if err := do(cf); err != nil {
		return errorf("%s: %w", what, err)
	}
	d.refreshLocked()
	return nil
}

// configurerLocked returns the Transport's Configurer, or the error that
// says why there is none: the Device is closed, or the backend cannot
// change its settings or does not describe its configurations. d.mu held.
func (d *Device) configurerLocked(what string) (Configurer, error) {
	if d.closed {
		return nil, ErrClosed
	}
	cf, ok := d.tr.(Configurer)
	if !ok || len(d.desc.Configs) == 0 {
		return nil, errorf("%s: %w: this backend cannot change configurations or interfaces", what, ioring.ErrNotSupported)
	}
	return cf, nil
}

// settingLocked returns alternate setting alt of interface iface in the
// active configuration, or an error wrapping ErrNotFound. d.mu held.
func (d *Device) settingLocked(what string, iface, alt int) (*InterfaceDesc, error) {
	c, ok := d.desc.config(d.config)
	if !ok {
		return nil, errorf("%s: %w: the device is not configured (configuration %d)", what, ErrNotFound, d.config)
	}
	s, ok := c.setting(iface, alt)
	if !ok {
		return nil, errorf("%s: %w: configuration %d has %s", what, ErrNotFound, d.config, settingList(c))
	}
	return s, nil
}

// refreshLocked makes the Device's endpoints those of the claimed
// interfaces at their current alternate settings. d.mu held.
func (d *Device) refreshLocked() {
	var eps []EndpointDesc
	if c, ok := d.desc.config(d.config); ok {
		// In interface order (claimedList), so that where two claimed
		// interfaces describe one address (malformed descriptors,
		// which nothing refuses), the lower one's stays the one found.
		for _, n := range d.claimedList() {
			if s, ok := c.setting(n, d.claimed[n].alt); ok {
				eps = append(eps, s.Endpoints...)
			}
		}
	}
	d.setEndpointsLocked(eps)
}

// setEndpointsLocked makes eps the Device's endpoints, sorted by address:
// a descriptor seen before (at this setting, or at another one the same
// address had in between) gets its *Endpoint back, a new one a new
// *Endpoint, and the Endpoints that left fail from now on. d.mu held
// (or d not shared yet).
func (d *Device) setEndpointsLocked(eps []EndpointDesc) {
	for _, e := range d.eps {
		e.active = false
	}
	d.eps = d.eps[:0]
	for _, ed := range eps {
		e := d.byDesc[ed]
		if e == nil {
			e = &Endpoint{dev: d, desc: ed}
			d.byDesc[ed] = e
		}
		e.active = true
		d.eps = append(d.eps, e)
	}
	slices.SortStableFunc(d.eps, func(a, b *Endpoint) int { return int(a.desc.Address) - int(b.desc.Address) })
}

// configList names the device's configurations, for an error. d.mu held.
func (d *Device) configList() string {
	vs := make([]int, 0, len(d.desc.Configs))
	for _, c := range d.desc.Configs {
		vs = append(vs, c.Value)
	}
	return fmt.Sprint(vs)
}

// claimedList lists the claimed interfaces, for an error. d.mu held.
func (d *Device) claimedList() []int {
	ns := make([]int, 0, len(d.claimed))
	for n := range d.claimed {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// settingList names c's interfaces and alternate settings, for an error.
func settingList(c *ConfigDesc) string {
	s := ""
	for i, in := range c.Interfaces {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("interface %d alternate setting %d", in.Number, in.Alternate)
	}
	if s == "" {
		return "no interfaces"
	}
	return s
}

// allEndpoints lists the endpoints of every setting of every configuration
// of desc, and desc.Endpoints, once per address (the first descriptor
// seen), for a Pump that must serve whatever the Device is switched to.
func allEndpoints(desc DeviceDesc) []EndpointDesc {
	var eps []EndpointDesc
	seen := map[uint8]bool{}
	add := func(list []EndpointDesc) {
		for _, ed := range list {
			if !seen[ed.Address] {
				seen[ed.Address] = true
				eps = append(eps, ed)
			}
		}
	}
	add(desc.Endpoints)
	for _, c := range desc.Configs {
		for _, s := range c.Interfaces {
			add(s.Endpoints)
		}
	}
	return eps
}
