package usb

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
)

// countRunner is a Runner whose every transfer reports n bytes.
type countRunner struct{ n int }

func (r countRunner) Check(EndpointDesc, []byte) error { return nil }
func (r countRunner) Run(*Transfer) (int, error)       { return r.n, nil }
func (r countRunner) ClearHalt(EndpointDesc) error     { return nil }
func (r countRunner) Reset() error                     { return nil }
func (r countRunner) Close() error                     { return nil }

// A Runner that reports a negative count still completes its transfer
// (the ring refuses a negative count), with an error that says so.
func TestPumpNegativeCount(t *testing.T) {
	ring, err := ioring.New(ioring.Config{Entries: 4})
	if err != nil {
		t.Skipf("no ring on this system: %v", err)
	}
	defer ring.Close()
	ep := EndpointDesc{Address: 0x81, Type: Bulk, MaxPacketSize: 512}
	p := NewPump(ring, []EndpointDesc{ep}, countRunner{n: -3})
	defer p.Close()
	q, err := p.Submit(ep, make([]byte, 8), Xfer{}, true)
	require.NoError(t, err)
	c, err := q.Wait(context.Background())
	require.NoError(t, err)
	assert.Zero(t, c.N)
	assert.ErrorContains(t, c.Err, "-3 bytes")
}
