package minidrv_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestInitializeEndedContext: an Initialize whose context has already
// ended starts nothing, as Lock and AcquireItemData do: it opens no
// device, starts no probe and counts no client, whether the driver is
// Unloaded or already initialized, and says why (ErrBusy wrapping the
// context's error).
func TestInitializeEndedContext(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 64})
	require.NoError(t, err)
	defer func() { assert.NoError(t, ring.Close()) }()
	sc, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	defer func() { assert.NoError(t, sc.Close()) }()
	var opens atomic.Int32
	open := minidrvtest.SimOpener(ring, sc)
	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: func(ctx context.Context) (*usb.Device, error) {
		opens.Add(1)
		return open(ctx)
	}})
	require.NoError(t, err)

	ended, cancel := context.WithCancel(context.Background())
	cancel()
	err = d.Initialize(ended)
	require.ErrorIs(t, err, minidrv.ErrBusy)
	require.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, opens.Load(), "an ended context opened the device")
	assert.Equal(t, minidrv.Unloaded, d.State())

	ctx := context.Background()
	require.NoError(t, d.Initialize(ctx))
	assert.EqualValues(t, 1, opens.Load())
	// Initialized: an ended context counts no second client, so one
	// Uninitialize unloads.
	require.ErrorIs(t, d.Initialize(ended), minidrv.ErrBusy)
	require.NoError(t, d.Uninitialize())
	assert.Equal(t, minidrv.Unloaded, d.State())
	assert.EqualValues(t, 1, opens.Load())
}
