package usb

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// closeCountRunner is a Runner that counts its Close calls and refuses
// every call made after it.
type closeCountRunner struct {
	closes int
}

func (r *closeCountRunner) Check(EndpointDesc, []byte) error { return nil }
func (r *closeCountRunner) Run(*Transfer) (int, error)       { return 0, nil }
func (r *closeCountRunner) ClearHalt(EndpointDesc) error {
	if r.closes > 0 {
		panic("ClearHalt on a closed Runner")
	}
	return nil
}
func (r *closeCountRunner) Reset() error {
	if r.closes > 0 {
		panic("Reset on a closed Runner")
	}
	return nil
}
func (r *closeCountRunner) Close() error { r.closes++; return nil }

// TestPumpClosedOnce: a Pump used on its own (a backend's, without a
// Device) closes its Runner once, and after Close refuses what would
// reach the closed Runner with ErrClosed.
func TestPumpClosedOnce(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 8})
	require.NoError(t, err)
	defer ring.Close()
	ep := EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512}
	r := &closeCountRunner{}
	p := NewPump(ring, []EndpointDesc{ep}, r)
	require.NoError(t, p.Close())
	assert.ErrorIs(t, p.Close(), ErrClosed, "a second Close")
	assert.Equal(t, 1, r.closes, "the Runner closed once")
	assert.ErrorIs(t, p.ClearHalt(ep), ErrClosed)
	assert.ErrorIs(t, p.Reset(), ErrClosed)
	_, err = p.Submit(ep, make([]byte, 8), Xfer{}, false)
	assert.ErrorIs(t, err, ErrClosed)
}
