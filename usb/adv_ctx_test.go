package usb_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// TestAdvContextErrors: a context deadline ends a transfer (bulk, control,
// typed) with ErrTimeout and a context cancel with ErrCanceled, the
// context's own error reachable with errors.Is in both cases.
func TestAdvContextErrors(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	sd.s.Hang()
	typed, err := sd.d.InEndpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	calls := map[string]func(ctx context.Context) error{
		"bulk IN":      func(ctx context.Context) error { _, err := sd.in.Read(ctx, make([]byte, 64)); return err },
		"bulk OUT":     func(ctx context.Context) error { _, err := sd.out.Write(ctx, []byte{0}); return err },
		"interrupt IN": func(ctx context.Context) error { _, err := typed.Read(ctx, make([]byte, 24)); return err },
		"control":      func(ctx context.Context) error { _, err := sd.d.GetStatus(ctx, RecipientDevice, 0); return err },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := call(ctx)
		cancel()
		assert.ErrorIs(t, err, ErrTimeout, "%s: deadline", name)
		assert.ErrorIs(t, err, context.DeadlineExceeded, "%s: deadline", name)
		ctx, cancel = context.WithCancel(context.Background())
		time.AfterFunc(20*time.Millisecond, cancel)
		err = call(ctx)
		assert.ErrorIs(t, err, ErrCanceled, "%s: cancel", name)
		assert.NotErrorIs(t, err, ErrTimeout, "%s: cancel", name)
		assert.ErrorIs(t, err, context.Canceled, "%s: cancel", name)
	}
	sd.s.Resume()
	AssertSettled(t, sd.r)
}

// TestAdvStallQueued: every transfer queued on a halted endpoint ends with
// ErrStall (bulk IN, bulk OUT, interrupt IN); ClearHalt recovers each.
func TestAdvStallQueued(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	for _, a := range []uint8{usbsim.AddrBulkIn, usbsim.AddrBulkOut, usbsim.AddrInterruptIn} {
		require.NoError(t, sd.s.Stall(a))
	}
	n := 0
	for i := range 3 {
		_, err := sd.in.Submit(make([]byte, 1+i*3000), Xfer{User: "in"})
		require.NoError(t, err)
		_, err = sd.out.Submit(usbsim.EchoCommand([]byte("stalled")), Xfer{User: "out"})
		require.NoError(t, err)
		_, err = sd.intr.Submit(make([]byte, 24), Xfer{User: "intr"})
		require.NoError(t, err)
		n += 3
	}
	for _, c := range Reap(t, sd.r, n) {
		assert.ErrorIs(t, c.Err, ErrStall, "transfer %v", c.User)
		assert.Zero(t, c.N, "transfer %v", c.User)
	}
	AssertNoMore(t, sd.r)
	for _, a := range []uint8{usbsim.AddrBulkIn, usbsim.AddrBulkOut, usbsim.AddrInterruptIn} {
		require.NoError(t, sd.d.ClearHalt(a))
		require.NoError(t, sd.d.ClearHalt(a), "a second clear does no harm")
	}
	sd.send(t, usbsim.EchoCommand([]byte("unstalled")))
	assert.Equal(t, []byte("unstalled"), sd.read(t, make([]byte, 4096)))
}
