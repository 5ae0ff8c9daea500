//go:build !(linux && (amd64 || arm64 || riscv64 || loong64))

package usbfs

import (
	"context"
	"fmt"
	"time"

	"github.com/cancelio/cancelio/ioring"
)

// errPlatform is what every call returns where usbfs is not available.
var errPlatform = fmt.Errorf("usbfs: only on Linux amd64, arm64, riscv64 and loong64: %w", ioring.ErrNotSupported)

// Config configures an open Device.
type Config struct {
	Ring       *ioring.Ring
	MaxURBSize int
	Depth      int
	MapError   func(error) error
}

// TransferOptions qualify one transfer.
type TransferOptions struct {
	Token      *ioring.Token
	Deadline   time.Duration
	User       any
	Await      bool
	ZeroPacket bool
}

// Device is an open USB device; none can be opened on this platform.
type Device struct{}

// Endpoint is a bulk or interrupt endpoint of an open Device.
type Endpoint struct {
	Desc                 EndpointDescriptor
	Interface, Alternate int
}

// OpenBus fails on this platform.
func OpenBus(bus, addr int, cfg Config) (*Device, error) { return nil, errPlatform }

// OpenVIDPID fails on this platform.
func OpenVIDPID(vid, pid uint16, cfg Config) (*Device, error) { return nil, errPlatform }

// Info returns nothing on this platform.
func (d *Device) Info() DeviceInfo { return DeviceInfo{} }

// Capabilities returns none on this platform.
func (d *Device) Capabilities() Capabilities { return 0 }

// MaxURBSize returns 0 on this platform.
func (d *Device) MaxURBSize() int { return 0 }

// Claim fails on this platform.
func (d *Device) Claim(iface int, detach bool) error { return errPlatform }

// Release fails on this platform.
func (d *Device) Release(iface int) error { return errPlatform }

// Reattach fails on this platform.
func (d *Device) Reattach(iface int) error { return errPlatform }

// MaxTransferOf returns 0 on this platform.
func (d *Device) MaxTransferOf(e EndpointDescriptor) int { return 0 }

// Pending returns 0 on this platform.
func (d *Device) Pending() int { return 0 }

// SetConfiguration fails on this platform.
func (d *Device) SetConfiguration(value int) error { return errPlatform }

// SetAltSetting fails on this platform.
func (d *Device) SetAltSetting(iface, alt int) error { return errPlatform }

// Control fails on this platform.
func (d *Device) Control(requestType, request uint8, value, index uint16, data []byte, timeout time.Duration) (int, error) {
	return 0, errPlatform
}

// Reset fails on this platform.
func (d *Device) Reset() error { return errPlatform }

// ControlEndpoint returns an endpoint whose transfers fail on this
// platform.
func (d *Device) ControlEndpoint() *Endpoint { return &Endpoint{} }

// Endpoint fails on this platform.
func (d *Device) Endpoint(addr uint8) (*Endpoint, error) { return nil, errPlatform }

// CancelAll does nothing on this platform.
func (d *Device) CancelAll() error { return nil }

// String describes the device for logs.
func (d *Device) String() string { return "usbfs (not supported here)" }

// Close fails on this platform.
func (d *Device) Close() error { return errPlatform }

// MaxTransfer returns 0 on this platform.
func (e *Endpoint) MaxTransfer() int { return 0 }

// Submit fails on this platform.
func (e *Endpoint) Submit(buf []byte, o TransferOptions) (ioring.Request, error) {
	return ioring.Request{}, errPlatform
}

// Transfer fails on this platform.
func (e *Endpoint) Transfer(ctx context.Context, buf []byte) (int, error) { return 0, errPlatform }

// Read fails on this platform.
func (e *Endpoint) Read(ctx context.Context, buf []byte) (int, error) { return 0, errPlatform }

// Write fails on this platform.
func (e *Endpoint) Write(ctx context.Context, buf []byte) (int, error) { return 0, errPlatform }

// Pending returns 0 on this platform.
func (e *Endpoint) Pending() int { return 0 }

// String describes the endpoint.
func (e *Endpoint) String() string { return e.Desc.String() }

// ClearHalt fails on this platform.
func (e *Endpoint) ClearHalt() error { return errPlatform }
