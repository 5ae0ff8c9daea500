package usb

// Option configures Open.
type Option func(*options)

type options struct {
	config    int // configuration value; 0: the active one
	iface     int
	alt       int
	backend   string
	bus, addr int // 0: any
	zlp       bool
	depth     int
}

// WithConfig selects configuration n (bConfigurationValue) instead of the
// device's active one.
func WithConfig(n int) Option { return func(o *options) { o.config = n } }

// WithInterface selects interface n (bInterfaceNumber) instead of 0.
func WithInterface(n int) Option { return func(o *options) { o.iface = n } }

// WithAltSetting selects the interface's alternate setting alt instead of 0.
func WithAltSetting(alt int) Option { return func(o *options) { o.alt = alt } }

// WithBackend selects the transport: "usbfs" (native URBs through the
// ring, no cgo; Linux only) or "libusb" (gousb, needs cgo). Without it the
// environment variable CANCELIO_USB names the backend, and where that is
// unset or empty the default is usbfs on Linux, libusb elsewhere. A backend
// this build or platform lacks fails with an error wrapping
// ioring.ErrNotSupported; an unknown name with one wrapping
// ioring.ErrInvalid.
func WithBackend(name string) Option { return func(o *options) { o.backend = name } }

// WithBusAddr opens only the device at bus and address (as List reports
// them), for when several devices share a vendor and product ID.
func WithBusAddr(bus, addr int) Option { return func(o *options) { o.bus, o.addr = bus, addr } }

// WithZeroPacket ends every bulk OUT transfer whose length is a nonzero
// multiple of the endpoint's wMaxPacketSize with a zero-length packet
// (libusb's LIBUSB_TRANSFER_ADD_ZERO_PACKET, usbfs's
// USBDEVFS_URB_ZERO_PACKET), for devices whose protocol ends a transfer
// with a short packet, as usbsim's scanner served as a gadget does. Without
// it such a transfer ends with its last full packet, as most protocols
// (USB mass storage among them) want. The simulator (usbsim.Open), whose
// messages carry their length, ignores it.
func WithZeroPacket() Option { return func(o *options) { o.zlp = true } }

// WithDepth sets how many transfers of one endpoint the usbfs backend
// hands to the kernel at once (default 1); later ones wait in order in the
// Device. A cancel costs one USBDEVFS_DISCARDURB per transfer in the kernel,
// and those run one after another, each waiting for the host controller
// (about a frame), while a waiting transfer is canceled at once: a deeper
// queue trades cancel latency for throughput on small transfers (no idle
// bus between two). n < 1 means 1. The README's Depth table measures it
// in the usbvm guest: Depth 4 and 8 move 16 KiB transfers several times
// faster than 1, while at 64 KiB no depth differs significantly, so the
// default stays with the cheapest cancel. The libusb backend and
// usbsim.Open run one transfer per endpoint at a time and ignore it.
func WithDepth(n int) Option { return func(o *options) { o.depth = n } }

func collect(opts []Option) options {
	o := options{depth: 1}
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	o.depth = max(o.depth, 1)
	return o
}
