package usb

import (
	"context"

	"github.com/cancelio/cancelio/ioring"
)

// InEndpoint is an IN endpoint of a Device (data from the device to the
// host): it reads, and has no way to write, so a transfer in the wrong
// direction does not compile. Device.InEndpoint returns it. All methods are
// safe for concurrent use; see Endpoint for the transfers' contract. A nil
// or zero InEndpoint is refused as a nil Endpoint is.
type InEndpoint struct{ e *Endpoint }

// OutEndpoint is an OUT endpoint of a Device (data from the host to the
// device): it writes, and has no way to read. Device.OutEndpoint returns it.
// All methods are safe for concurrent use. A nil or zero OutEndpoint is
// refused as a nil Endpoint is.
type OutEndpoint struct{ e *Endpoint }

// ep returns in's Endpoint: nil for a nil or zero InEndpoint, which
// Endpoint's methods refuse.
func (in *InEndpoint) ep() *Endpoint {
	if in == nil {
		return nil
	}
	return in.e
}

// ep returns out's Endpoint: nil for a nil or zero OutEndpoint, which
// Endpoint's methods refuse.
func (out *OutEndpoint) ep() *Endpoint {
	if out == nil {
		return nil
	}
	return out.e
}

// InEndpoint returns the IN endpoint at address addr. It returns an error
// wrapping ErrNotFound when the opened interface has no endpoint there and
// one wrapping ioring.ErrInvalid when that endpoint is an OUT endpoint.
func (d *Device) InEndpoint(addr uint8) (*InEndpoint, error) {
	e, err := d.Endpoint(addr)
	if err != nil {
		return nil, err
	}
	if !e.desc.IsIn() {
		return nil, errorf("usb: endpoint %v: %w: not an IN endpoint", e.desc, ioring.ErrInvalid)
	}
	return &InEndpoint{e}, nil
}

// OutEndpoint returns the OUT endpoint at address addr, or an error
// wrapping ErrNotFound (no such endpoint) or ioring.ErrInvalid (an IN
// endpoint).
func (d *Device) OutEndpoint(addr uint8) (*OutEndpoint, error) {
	e, err := d.Endpoint(addr)
	if err != nil {
		return nil, err
	}
	if e.desc.IsIn() {
		return nil, errorf("usb: endpoint %v: %w: not an OUT endpoint", e.desc, ioring.ErrInvalid)
	}
	return &OutEndpoint{e}, nil
}

// Desc returns the endpoint's descriptor.
func (in *InEndpoint) Desc() EndpointDesc { return in.ep().Desc() }

// Read reads one transfer from the device into buf and waits for it: see
// Endpoint.Transfer. A short read, even of 0 bytes, is a success.
func (in *InEndpoint) Read(ctx context.Context, buf []byte) (int, error) {
	return in.ep().Transfer(ctx, buf)
}

// Submit starts a read into buf as a ring request: see Endpoint.Submit.
func (in *InEndpoint) Submit(buf []byte, x Xfer) (ioring.Request, error) {
	return in.ep().Submit(buf, x)
}

// Start starts a read into buf whose completion goes to Request.Wait only:
// see Endpoint.Start.
func (in *InEndpoint) Start(buf []byte, x Xfer) (ioring.Request, error) {
	return in.ep().Start(buf, x)
}

// Desc returns the endpoint's descriptor.
func (out *OutEndpoint) Desc() EndpointDesc { return out.ep().Desc() }

// Write sends buf as one transfer and waits for it: see Endpoint.Transfer.
func (out *OutEndpoint) Write(ctx context.Context, buf []byte) (int, error) {
	return out.ep().Transfer(ctx, buf)
}

// Submit starts sending buf as a ring request: see Endpoint.Submit.
func (out *OutEndpoint) Submit(buf []byte, x Xfer) (ioring.Request, error) {
	return out.ep().Submit(buf, x)
}

// Start starts sending buf, with its completion going to Request.Wait
// only: see Endpoint.Start.
func (out *OutEndpoint) Start(buf []byte, x Xfer) (ioring.Request, error) {
	return out.ep().Start(buf, x)
}

// Read is Transfer on an IN endpoint. On an OUT endpoint it refuses with
// an error wrapping ioring.ErrInvalid before any I/O (Transfer there would
// send buf).
func (e *Endpoint) Read(ctx context.Context, buf []byte) (int, error) {
	if e == nil || e.dev == nil {
		return 0, errEndpointNotMade("read", e)
	}
	if !e.desc.IsIn() {
		return 0, errorf("usb: read of endpoint %v: %w: not an IN endpoint", e.desc, ioring.ErrInvalid)
	}
	return e.Transfer(ctx, buf)
}

// Write is Transfer on an OUT endpoint. On an IN endpoint it refuses with
// an error wrapping ioring.ErrInvalid before any I/O (Transfer there would
// overwrite buf).
func (e *Endpoint) Write(ctx context.Context, buf []byte) (int, error) {
	if e == nil || e.dev == nil {
		return 0, errEndpointNotMade("write", e)
	}
	if e.desc.IsIn() {
		return 0, errorf("usb: write of endpoint %v: %w: not an OUT endpoint", e.desc, ioring.ErrInvalid)
	}
	return e.Transfer(ctx, buf)
}
