package usb

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// TestList lists this machine's devices: ErrNoUSB where it has no USB
// subsystem (containers, kernels without CONFIG_USB), a list otherwise.
func TestList(t *testing.T) {
	descs, err := List()
	if _, statErr := os.Stat("/dev/bus/usb"); statErr != nil {
		assert.ErrorIs(t, err, ErrNoUSB, "no /dev/bus/usb here")
		assert.Empty(t, descs)
		return
	}
	if errors.Is(err, ioring.ErrNotSupported) {
		return // a build without cgo
	}
	require.NoError(t, err)
	for _, d := range descs {
		t.Logf("%v %q %q", d, d.Manufacturer, d.Product)
	}
}

// TestNoUSB points the package at a missing /dev/bus/usb.
func TestNoUSB(t *testing.T) {
	old := usbfsRoot
	usbfsRoot = filepath.Join(t.TempDir(), "no-such-dir")
	t.Cleanup(func() { usbfsRoot = old })
	_, err := List()
	assert.ErrorIs(t, err, ErrNoUSB)
	r := NewRing(t, 8)
	_, err = Open(r, 0x1209, 0x0001)
	assert.ErrorIs(t, err, ErrNoUSB)
}

func TestOpenOptions(t *testing.T) {
	r := NewRing(t, 8)
	_, err := Open(r, 0x1209, 0x0001, WithBackend("floppy"), WithConfig(1), WithInterface(0), WithAltSetting(0), WithBusAddr(1, 2))
	assert.Error(t, err)
}
