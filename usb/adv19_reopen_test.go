package usb_test

// Adversarial round 19: a driver that closes its Device and opens the same
// plug-in of the simulated scanner again (as after a restart of the
// driver, or a hotplug watcher that reopens by ID). What the device had
// sent and what it still owes must survive the host's Close: the device
// holds it, not the host's Device.

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv19Reopen closes sd.d and opens the scanner's plug-in again on the
// same ring; the new Device is closed with the test.
func adv19Reopen(t *testing.T, sd *simDev) (d *Device, out, in *Endpoint) {
	t.Helper()
	require.NoError(t, sd.d.Close())
	d, err := usbsim.Open(sd.r, sd.s)
	require.NoError(t, err, "open the same plug-in again")
	t.Cleanup(func() { _ = d.Close() })
	out, err = d.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	in, err = d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	return d, out, in
}

// TestAdv19SimBounceRestAfterReopen: the package doc promises that an IN
// buffer shorter than MaxTransfer loses nothing: "the rest of a longer
// message is kept for the endpoint's next transfers, so no data is lost"
// (usbsim.Open: "as on a real bus, where the device's packets wait for the
// next IN token"). A driver reads the first 1000 bytes of a 3000-byte echo
// and closes its Device; the Device it opens next on the same plug-in must
// read the other 2000 bytes before the next echo, as it would from a real
// device, whose packets wait on the device whatever the host closes.
// Whole messages the closed Device did not read do survive (they wait in
// the socket): only the rest of a message it read in part is lost.
func TestAdv19SimBounceRestAfterReopen(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	msg := make([]byte, 3000)
	for i := range msg {
		msg[i] = byte(i*7 + 1)
	}
	sd.send(t, usbsim.EchoCommand(msg))
	sd.send(t, usbsim.EchoCommand([]byte("whole, unread")))
	first := sd.read(t, make([]byte, 1000))
	require.Equal(t, msg[:1000], first, "the first part, through the bounce buffer")

	_, out, in := adv19Reopen(t, sd)
	ctx, cancel := testContext()
	defer cancel()
	_, err := out.Transfer(ctx, usbsim.EchoCommand([]byte("next")))
	require.NoError(t, err)
	var got [][]byte
	for len(got) == 0 || string(got[len(got)-1]) != "next" {
		require.Less(t, len(got), 3, "bulk IN: %q", got)
		buf := make([]byte, 4096)
		n, err := in.Transfer(ctx, buf)
		require.NoError(t, err)
		got = append(got, buf[:n])
	}
	assert.Len(t, got, 3, "the rest of the message, the unread one, the new echo")
	assert.True(t, bytes.Equal(msg[1000:], got[0]),
		"the Device opened next reads %d bytes (%.20q) where the 2000 bytes the closed Device left of the message are due: the rest of a message read in part is lost at Close",
		len(got[0]), got[0])
	assert.Equal(t, "whole, unread", string(got[len(got)-2]), "the unread message survives the Close")
}

// TestAdv19SimReopenSkipsStaleReplies: on a hung scanner a Device's bulk
// OUT echo and its control requests (a VendorCommand echo, a VendorStatus)
// are canceled while they wait for the device's replies, and the Device is
// closed; a Device opened on the same plug-in goes on after Resume: the
// replies owed to the closed Device are skipped by their sequence numbers
// (its control IN gets its own answer, a status event, not the stale
// one), the commands that reached the device were acted on (their echoes
// come first on bulk IN, in order), and nothing is left in flight.
func TestAdv19SimReopenSkipsStaleReplies(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	sd.s.Hang()
	qOut, err := sd.out.Submit(usbsim.EchoCommand([]byte("A bulk")), Xfer{User: "bulk"})
	require.NoError(t, err)
	ctl := make([]byte, SetupSize+len(usbsim.EchoCommand([]byte("A control"))))
	Setup{RequestType: RequestOut | RequestVendor, Request: usbsim.VendorCommand, Length: uint16(len(ctl) - SetupSize)}.Put(ctl)
	copy(ctl[SetupSize:], usbsim.EchoCommand([]byte("A control")))
	qCtl, err := sd.d.SubmitControl(ctl, Xfer{User: "control out"})
	require.NoError(t, err)
	qSt, err := sd.d.SubmitControl(statusRequest(), Xfer{User: "control in"})
	require.NoError(t, err)
	settle(t, sd.r, 4) // three transfers, one of them with its read in progress
	require.NoError(t, sd.d.CancelAll())
	byUser := map[any]ioring.Completion{}
	for _, c := range Reap(t, sd.r, 3) {
		_, dup := byUser[c.User]
		require.False(t, dup, "two completions for %v", c.User)
		byUser[c.User] = c
	}
	for _, u := range []string{"bulk", "control out", "control in"} {
		assert.ErrorIs(t, byUser[u].Err, ErrCanceled, u)
	}
	_, _, _ = qOut, qCtl, qSt

	d, out, in := adv19Reopen(t, sd)
	sd.s.Resume()
	ctx, cancel := testContext()
	defer cancel()
	ev := make([]byte, usbsim.EventSize)
	n, err := d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor, Request: usbsim.VendorStatus}, ev)
	require.NoError(t, err, "the new Device's VendorStatus")
	require.Equal(t, usbsim.EventSize, n)
	e, err := usbsim.ParseEvent(ev)
	require.NoError(t, err)
	assert.Equal(t, usbsim.EventStatus, e.Kind, "its own answer")
	_, err = out.Transfer(ctx, usbsim.EchoCommand([]byte("B bulk")))
	require.NoError(t, err, "the new Device's bulk OUT")

	var got []string
	for len(got) == 0 || got[len(got)-1] != "B bulk" {
		require.Less(t, len(got), 4, "bulk IN: %q", got)
		buf := make([]byte, 4096)
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := in.Transfer(rctx, buf)
		rcancel()
		require.NoError(t, err, "bulk IN after %q", got)
		got = append(got, string(buf[:n]))
	}
	// The canceled bulk echo and control echo reached the device (their
	// messages went out before the hang withheld the replies): the device
	// acts on them, in the order it took them.
	assert.Contains(t, got, "B bulk")
	assert.Equal(t, "B bulk", got[len(got)-1])
	for _, s := range got[:len(got)-1] {
		assert.Contains(t, []string{"A bulk", "A control"}, s)
	}
	AssertSettled(t, sd.r)
}

// TestAdv19SimLongControlEcho: an echo sent as a VendorCommand on endpoint
// 0 may be longer than bulk IN's MaxTransfer (a bulk OUT command cannot
// be); it comes back in MaxTransfer-sized messages, one transfer each, in
// order, every byte once (VendorCommand's doc).
func TestAdv19SimLongControlEcho(t *testing.T) {
	const maxTransfer = 1024
	sd := newSimDev(t, usbsim.Config{MaxTransfer: maxTransfer})
	data := make([]byte, 3000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	cmd := usbsim.EchoCommand(data)
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.d.Control(ctx, Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand}, cmd)
	require.NoError(t, err)
	var got []byte
	var sizes []int
	for len(got) < len(data) {
		buf := make([]byte, 4096)
		n, err := sd.in.Transfer(ctx, buf)
		require.NoError(t, err, "after %d bytes", len(got))
		sizes = append(sizes, n)
		got = append(got, buf[:n]...)
	}
	assert.Equal(t, []int{maxTransfer, maxTransfer, len(data) - 2*maxTransfer}, sizes)
	assert.Equal(t, data, got)
}
