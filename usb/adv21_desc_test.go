package usb_test

// Adversarial round 21: the descriptors a backend hands to NewDevice, as
// the Device reports and serves them: the order of the endpoints, and
// descriptors that name one endpoint address in two claimed interfaces
// (malformed, but nothing refuses them: usbfs's parser drops duplicates
// within one setting only).

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
)

// adv21Tr is a Transport and Configurer that moves nothing and accepts
// every settings change.
type adv21Tr struct{}

func (adv21Tr) Submit(EndpointDesc, []byte, Xfer, bool) (ioring.Request, error) {
	return ioring.Request{}, ioring.ErrNotSupported
}
func (adv21Tr) CancelAll() error                 { return nil }
func (adv21Tr) ClearHalt(EndpointDesc) error     { return nil }
func (adv21Tr) Reset() error                     { return nil }
func (adv21Tr) Close() error                     { return nil }
func (adv21Tr) SetConfiguration(int) error       { return nil }
func (adv21Tr) ClaimInterface(int, bool) error   { return nil }
func (adv21Tr) ReleaseInterface(int, bool) error { return nil }
func (adv21Tr) SetAltSetting(int, int) error     { return nil }

// TestAdv21NewDeviceEndpointOrder: NewDevice's doc said the Device's
// endpoints "are those of desc, in that order", while every Device sorts
// them by address (setEndpointsLocked); the doc now says so. Given them
// out of address order, Desc reports them sorted.
func TestAdv21NewDeviceEndpointOrder(t *testing.T) {
	eps := []EndpointDesc{
		{Address: 0x83, Type: Interrupt, MaxPacketSize: 64},
		{Address: 0x01, Type: Bulk, MaxPacketSize: 512},
		{Address: 0x82, Type: Bulk, MaxPacketSize: 512},
	}
	d := NewDevice(DeviceDesc{VendorID: 0x1209, ProductID: 0x0001, Endpoints: eps}, adv21Tr{})
	defer d.Close()
	assert.Equal(t, []EndpointDesc{eps[1], eps[2], eps[0]}, d.Desc().Endpoints, "NewDevice: \"its endpoints are those of desc, sorted by address\"")
}

// TestAdv21SharedAddressStable: interfaces 0 and 1 of the configuration
// both describe an endpoint at 0x81 (bulk in one, interrupt in the other),
// and both are claimed. Device.Endpoint(0x81) must give the same
// *Endpoint each time "while the endpoint's descriptor stays the same":
// re-selecting interface 2's current setting changes nothing about
// interfaces 0 and 1. The Device rebuilds its endpoint list from a map
// of the claims (random order) and sorts it by address with an unstable
// sort, so which of the two 0x81 descriptors Endpoint finds can change
// from one settings call to the next.
func TestAdv21SharedAddressStable(t *testing.T) {
	bulk := EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512}
	intr := EndpointDesc{Address: 0x81, Type: Interrupt, MaxPacketSize: 64}
	other := EndpointDesc{Address: 0x02, Type: Bulk, MaxPacketSize: 512}
	desc := DeviceDesc{
		Configs: []ConfigDesc{{Value: 1, Interfaces: []InterfaceDesc{
			{Number: 0, Endpoints: []EndpointDesc{bulk}},
			{Number: 1, Endpoints: []EndpointDesc{intr}},
			{Number: 2, Endpoints: []EndpointDesc{other}},
		}}},
		Config: 1, Endpoints: []EndpointDesc{bulk},
	}
	d := NewDevice(desc, adv21Tr{})
	defer d.Close()
	require.NoError(t, d.ClaimInterface(1, false))
	require.NoError(t, d.ClaimInterface(2, false))
	first, err := d.Endpoint(0x81)
	require.NoError(t, err)
	seen := map[TransferType]int{}
	for range 200 {
		require.NoError(t, d.SetAltSetting(2, 0))
		e, err := d.Endpoint(0x81)
		require.NoError(t, err)
		seen[e.Desc().Type]++
		if e != first {
			break
		}
	}
	e, _ := d.Endpoint(0x81)
	assert.Same(t, first, e, "Endpoint(0x81) changed from %v to %v across SetAltSetting of another interface (types seen: %v)", first.Desc(), e.Desc(), seen)
}
