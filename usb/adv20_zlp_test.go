//go:build cgo && linux

package usb_test

// TestAdv20GadgetNoZeroPacket: without WithZeroPacket, a bulk OUT transfer
// of whole packets ends with its last full packet and nothing more, on
// both backends alike (the package doc: WithZeroPacket is what adds the
// zero-length packet). The gadget's scanner reads a command until a short
// packet, so such a command stays open at the device: the OUT transfer
// itself succeeds with all its bytes, no answer comes, and an explicit
// zero-length OUT transfer (Write(nil), which the doc says is a
// zero-length packet) ends it: the echo comes back once, whole. A
// command that is not a whole number of packets needs no zero-length
// packet.

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv20Quiet reads bulk IN with a deadline of Quiet*3 and reports what
// came (nil when the deadline passed with nothing).
func adv20Quiet(t *testing.T, gd *gadgetDev, in *Endpoint) []byte {
	t.Helper()
	buf := adv5Buf(gd.maxTransfer)
	q, err := in.Start(buf, Xfer{Deadline: 3 * Quiet})
	require.NoError(t, err)
	ctx, cancel := testContext()
	defer cancel()
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	if errors.Is(c.Err, ErrTimeout) {
		assert.Zero(t, c.N, "a timed-out bulk IN with bytes")
		return nil
	}
	require.NoError(t, c.Err, "bulk IN")
	return buf[:c.N]
}

func TestAdv20GadgetNoZeroPacket(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		gd.echo(t, "with WithZeroPacket")
		// Open the device again, without WithZeroPacket.
		require.NoError(t, gd.d.Close())
		d, err := Open(gd.r, gd.g.Config.VendorID, gd.g.Config.ProductID,
			WithBackend(backend), WithBusAddr(gd.host.Bus, gd.host.Dev))
		require.NoError(t, err)
		t.Cleanup(func() { _ = d.Close() })
		in, err := d.Endpoint(gd.in.Desc().Address)
		require.NoError(t, err)
		out, err := d.Endpoint(gd.out.Desc().Address)
		require.NoError(t, err)
		mps := out.Desc().MaxPacketSize
		require.Equal(t, 512, mps)
		ctx, cancel := testContext()
		defer cancel()

		// Not a whole number of packets: answered.
		short := adv5Payload(100)
		n, err := out.Write(ctx, usbsim.EchoCommand(short))
		require.NoError(t, err)
		require.Equal(t, 101, n)
		assert.Equal(t, string(short), string(adv20Quiet(t, gd, in)), "echo of a short command")

		for _, packets := range []int{1, 2, 4} {
			data := adv5Payload(packets*mps - 1)
			cmd := usbsim.EchoCommand(data)
			require.Len(t, cmd, packets*mps)
			n, err := out.Write(ctx, cmd)
			require.NoError(t, err, "OUT of %d whole packets", packets)
			require.Equal(t, len(cmd), n)
			got := adv20Quiet(t, gd, in)
			assert.Nil(t, got, "%d whole packets without WithZeroPacket: the device answered %d bytes, so a zero-length packet was sent", packets, len(got))
			// The zero-length packet that ends it.
			n, err = out.Write(ctx, nil)
			require.NoError(t, err, "zero-length OUT")
			assert.Zero(t, n)
			var stream []byte
			for range 3 {
				b := adv20Quiet(t, gd, in)
				if b == nil {
					break
				}
				stream = append(stream, b...)
			}
			assert.True(t, bytes.Equal(data, stream), "%d whole packets ended by Write(nil): echo of %d bytes, got %d", packets, len(data), len(stream))
		}
		assert.Empty(t, adv20DrainOn(t, gd, in, out), "bulk IN at the end")
		require.NoError(t, d.Close())
	})
}

// adv20DrainOn is adv5Drain on the endpoints of another Device of gd's
// gadget: a nop, then a sentinel echo, read up to the sentinel (the nop
// ends a command left open).
func adv20DrainOn(t *testing.T, gd *gadgetDev, in, out *Endpoint) []byte {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	_, err := out.Write(ctx, []byte{usbsim.CmdNop})
	require.NoError(t, err)
	sentinel := adv5Payload(40)
	_, err = out.Write(ctx, usbsim.EchoCommand(sentinel))
	require.NoError(t, err)
	var got []byte
	for range 50 {
		buf := make([]byte, gd.maxTransfer)
		n, err := in.Read(ctx, buf)
		require.NoError(t, err)
		if bytes.Equal(buf[:n], sentinel) {
			return got
		}
		got = append(got, buf[:n]...)
	}
	require.Fail(t, "drain: no sentinel")
	return nil
}
