package usb

// Option configures Open.
type Option func(*options)

type options struct {
	config    int // configuration value; 0: the active one
	iface     int
	alt       int
	backend   string
	bus, addr int // 0: any
}

// WithConfig selects configuration n (bConfigurationValue) instead of the
// device's active one.
func WithConfig(n int) Option { return func(o *options) { o.config = n } }

// WithInterface selects interface n (bInterfaceNumber) instead of 0.
func WithInterface(n int) Option { return func(o *options) { o.iface = n } }

// WithAltSetting selects the interface's alternate setting alt instead of 0.
func WithAltSetting(alt int) Option { return func(o *options) { o.alt = alt } }

// WithBackend selects the transport: "libusb" (gousb, needs cgo) is the
// only one so far and the default; "usbfs" (native URBs) is planned and
// returns an error wrapping ioring.ErrNotSupported.
func WithBackend(name string) Option { return func(o *options) { o.backend = name } }

// WithBusAddr opens only the device at bus and address (as List reports
// them), for when several devices share a vendor and product ID.
func WithBusAddr(bus, addr int) Option { return func(o *options) { o.bus, o.addr = bus, addr } }

func collect(opts []Option) options {
	var o options
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}
