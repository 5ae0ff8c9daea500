package usb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// simDev is a scanner, a ring and the Device on them, all closed with the
// test, and the scanner's endpoints.
type simDev struct {
	r             *ioring.Ring
	s             *usbsim.Scanner
	d             *Device
	out, in, intr *Endpoint
}

func newSimDev(t *testing.T, cfg usbsim.Config) *simDev {
	t.Helper()
	CheckFDs(t)
	r := NewRing(t, 64)
	s, err := usbsim.NewScanner(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	d, err := usbsim.Open(r, s)
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	sd := &simDev{r: r, s: s, d: d}
	sd.out, err = d.Endpoint(usbsim.AddrBulkOut)
	require.NoError(t, err)
	sd.in, err = d.Endpoint(usbsim.AddrBulkIn)
	require.NoError(t, err)
	sd.intr, err = d.Endpoint(usbsim.AddrInterruptIn)
	require.NoError(t, err)
	return sd
}

// send is one bulk OUT transfer that must succeed.
func (sd *simDev) send(t testing.TB, payload []byte) {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := sd.out.Transfer(ctx, payload)
	require.NoError(t, err, "bulk OUT")
	require.Equal(t, len(payload), n, "bulk OUT bytes")
}

// read is one bulk IN transfer into buf that must succeed.
func (sd *simDev) read(t testing.TB, buf []byte) []byte {
	t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	n, err := sd.in.Transfer(ctx, buf)
	require.NoError(t, err, "bulk IN")
	return buf[:n]
}

// settle waits until r has k requests in flight and they stay pending for
// a while (the device is hung or idle).
func settle(t testing.TB, r *ioring.Ring, k int) {
	t.Helper()
	require.Eventually(t, func() bool { return r.InFlight() >= k }, Patience, time.Millisecond)
	time.Sleep(Quiet)
}

func testContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), Patience)
}

func TestOpenSimDesc(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 16 << 10, Serial: "T1"})
	desc := sd.d.Desc()
	assert.Equal(t, uint16(usbsim.DefaultVendorID), desc.VendorID)
	assert.Equal(t, uint16(usbsim.DefaultProductID), desc.ProductID)
	assert.Equal(t, "T1", desc.Serial)
	require.Len(t, desc.Endpoints, 3)
	assert.Equal(t, EndpointDesc{Address: 0x01, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 16 << 10}, desc.Endpoints[0])
	assert.Equal(t, EndpointDesc{Address: 0x82, Type: Bulk, MaxPacketSize: 512, MaxTransfer: 16 << 10}, desc.Endpoints[1])
	assert.Equal(t, Interrupt, desc.Endpoints[2].Type)
	assert.True(t, sd.in.Desc().IsIn())
	assert.False(t, sd.out.Desc().IsIn())
	assert.Equal(t, "0x82 bulk in", sd.in.Desc().String())
	assert.Equal(t, "interrupt", Interrupt.String())

	_, err := sd.d.Endpoint(0x05)
	assert.ErrorIs(t, err, ErrNotFound)
	assert.ErrorIs(t, sd.d.ClearHalt(0x05), ErrNotFound)

	desc.Endpoints[0].Address = 0x7f // a copy
	assert.Equal(t, uint8(0x01), sd.d.Desc().Endpoints[0].Address)
}

func TestOpenSimErrors(t *testing.T) {
	CheckFDs(t)
	r := NewRing(t, 8)
	_, err := usbsim.Open(nil, nil)
	assert.ErrorIs(t, err, ioring.ErrInvalid)

	s, err := usbsim.NewScanner(usbsim.Config{})
	require.NoError(t, err)
	require.NoError(t, s.Unplug())
	_, err = usbsim.Open(r, s)
	assert.ErrorIs(t, err, ErrNoDevice)
	assert.ErrorIs(t, err, ioring.ErrNoDevice)
	require.NoError(t, s.Close())
	_, err = usbsim.Open(r, s)
	assert.ErrorIs(t, err, usbsim.ErrClosed)
}

func TestSubmitRefusesBadInput(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 16 << 10})
	_, err := sd.in.Submit(nil, Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "empty IN buffer")
	_, err = sd.out.Submit(make([]byte, 16<<10+1), Xfer{})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "OUT buffer over MaxTransfer")
	other := NewRing(t, 8)
	_, err = sd.in.Submit(make([]byte, 10), Xfer{Token: other.NewToken()})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "token of another ring")
	_, err = sd.in.Submit(make([]byte, 10), Xfer{Deadline: -time.Second})
	assert.ErrorIs(t, err, ioring.ErrInvalid, "negative deadline")
	assert.Zero(t, sd.r.InFlight())
	AssertNoMore(t, sd.r)
	// Nothing reached the device: an echo is the next IN data.
	sd.send(t, usbsim.EchoCommand([]byte("clean")))
	assert.Equal(t, "clean", string(sd.read(t, make([]byte, 16<<10))))
}

// TestSimTransferSizes moves echoes and images of several sizes through
// IN buffers larger and smaller than MaxTransfer; a smaller buffer gets the
// rest of a message in the next transfers, nothing is lost.
func TestSimTransferSizes(t *testing.T) {
	const mt = 16 << 10
	sd := newSimDev(t, usbsim.Config{MaxTransfer: mt})
	for _, size := range []int{0, 1, 511, 512, 4096, mt - 2, mt - 1} { // an echo's payload is at most mt-1
		for _, bufSize := range []int{mt, mt + 100, 4 << 10, 1000, 1} {
			if bufSize == 1 && size > 512 {
				// A message read byte by byte: size=512 shows it; each
				// larger one costs thousands of transfers (half a minute in
				// the emulated usbvm guest, where make test-usbvm runs this).
				continue
			}
			t.Run(fmt.Sprintf("size=%d/buf=%d", size, bufSize), func(t *testing.T) {
				msg := bytes.Repeat([]byte{byte(size), byte(bufSize), 0x5a}, size/3+1)[:size]
				sd.send(t, usbsim.EchoCommand(msg))
				buf := make([]byte, bufSize)
				got := []byte{}
				for {
					b := sd.read(t, buf)
					got = append(got, b...)
					if len(b) < bufSize || len(got) == size {
						break // a short transfer ends the message
					}
				}
				assert.Equal(t, msg, got)
			})
		}
	}
	t.Run("image", func(t *testing.T) {
		p := usbsim.ScanParams{DPI: 300, Width: 1000, Height: 77, Format: usbsim.FormatRGB24, Seed: 7, Flags: usbsim.FlagZLP}
		sd.send(t, usbsim.StartScanCommand(p))
		var img []byte
		buf := make([]byte, 3000) // not a divisor of MaxTransfer
		for int64(len(img)) < p.ImageSize() {
			img = append(img, sd.read(t, buf)...)
		}
		assert.True(t, bytes.Equal(usbsim.ExpectedImage(p), img), "image differs")
		assert.Empty(t, sd.read(t, buf), "the zero-length packet after the image")
	})
}

func TestSimInterrupt(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.PressButton(3)
	ctx, cancel := testContext()
	defer cancel()
	buf := make([]byte, sd.intr.Desc().MaxTransfer)
	n, err := sd.intr.Transfer(ctx, buf)
	require.NoError(t, err)
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(t, err)
	assert.Equal(t, usbsim.EventButton, e.Kind)
	assert.Equal(t, uint8(3), e.Code)
}

func TestSimCompletionQueue(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	const k = 6
	bufs := make([][]byte, k)
	for i := range bufs {
		bufs[i] = make([]byte, 4096)
		_, err := sd.in.Submit(bufs[i], Xfer{User: i})
		require.NoError(t, err)
	}
	for i := range k {
		_, err := sd.out.Submit(usbsim.EchoCommand([]byte{byte(i), 'x'}), Xfer{User: 100 + i})
		require.NoError(t, err)
	}
	cs := Reap(t, sd.r, 2*k)
	order := []int{}
	for _, c := range cs {
		require.NoError(t, c.Err, "completion %v", c.User)
		assert.Equal(t, ioring.OpForeign, c.Op)
		if i := c.User.(int); i < 100 {
			assert.Equal(t, 2, c.N)
			assert.Equal(t, []byte{byte(i), 'x'}, bufs[i][:2], "IN transfers complete in submission order")
			order = append(order, i)
		} else {
			assert.Equal(t, 3, c.N)
		}
	}
	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, order)
	AssertNoMore(t, sd.r)
}

// TestSimCancelHung cancels a bulk IN pending on a hung device, then the
// device resumes and the endpoint works.
func TestSimCancelHung(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.Hang()
	tok := sd.r.NewToken()
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	q, err := sd.in.Submit(buf, Xfer{Token: tok, User: "hung"})
	require.NoError(t, err)
	settle(t, sd.r, 1)
	assert.True(t, q.Pending())
	t0 := time.Now()
	require.NoError(t, tok.Cancel())
	c := Reap(t, sd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Zero(t, c.N)
	assert.Equal(t, "hung", c.User)
	assert.Less(t, time.Since(t0), Patience/2, "cancel of a hung transfer")
	AssertNoMore(t, sd.r)

	sd.s.Resume()
	sd.send(t, usbsim.EchoCommand([]byte("alive")))
	assert.Equal(t, "alive", string(sd.read(t, buf)))
}

// TestSimCancelHungOut cancels an OUT transfer whose message went out but
// whose reply never comes; after Resume the next transfer skips the stale
// reply.
func TestSimCancelHungOut(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.Hang()
	ctx, cancel := context.WithTimeout(context.Background(), Quiet)
	defer cancel()
	cmd := usbsim.EchoCommand([]byte("first"))
	n, err := sd.out.Transfer(ctx, cmd)
	assert.ErrorIs(t, err, ErrTimeout, "context deadline")
	assert.ErrorIs(t, err, ErrCanceled)
	assert.Equal(t, len(cmd), n, "the message was sent")

	sd.s.Resume()
	sd.send(t, usbsim.EchoCommand([]byte("second")))
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	assert.Equal(t, "first", string(sd.read(t, buf)), "the device acted on the abandoned message")
	assert.Equal(t, "second", string(sd.read(t, buf)))
}

func TestSimDeadline(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	_, err := sd.in.Submit(buf, Xfer{Deadline: 20 * time.Millisecond})
	require.NoError(t, err)
	c := Reap(t, sd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrTimeout)

	sd.send(t, usbsim.EchoCommand([]byte("after")))
	assert.Equal(t, "after", string(sd.read(t, buf)))
}

// TestSimCanceledToken: a transfer submitted with a canceled token
// completes at once and never reaches the device.
func TestSimCanceledToken(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	tok := sd.r.NewToken()
	require.NoError(t, tok.Cancel())
	sd.send(t, usbsim.EchoCommand([]byte("keep")))
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	q, err := sd.in.Submit(buf, Xfer{Token: tok})
	require.NoError(t, err)
	assert.False(t, q.Pending())
	c := Reap(t, sd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Equal(t, "keep", string(sd.read(t, buf)), "the canceled transfer took no data")
}

func TestSimStall(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkIn))
	ctx, cancel := testContext()
	defer cancel()
	_, err := sd.in.Transfer(ctx, buf)
	assert.ErrorIs(t, err, ErrStall)
	_, err = sd.in.Transfer(ctx, buf)
	assert.ErrorIs(t, err, ErrStall, "halted until cleared")

	// Not with a transfer pending.
	q, err := sd.in.Start(buf, Xfer{})
	require.NoError(t, err)
	if err := sd.d.ClearHalt(usbsim.AddrBulkIn); err != nil {
		assert.ErrorIs(t, err, ioring.ErrInvalid)
	}
	c, err := q.Wait(ctx)
	require.NoError(t, err)
	assert.ErrorIs(t, c.Err, ErrStall)

	require.NoError(t, sd.d.ClearHalt(usbsim.AddrBulkIn))
	sd.send(t, usbsim.EchoCommand([]byte("clear")))
	assert.Equal(t, "clear", string(sd.read(t, buf)))

	// Bulk OUT.
	require.NoError(t, sd.s.Stall(usbsim.AddrBulkOut))
	_, err = sd.out.Transfer(ctx, usbsim.EchoCommand([]byte("lost")))
	assert.ErrorIs(t, err, ErrStall)
	assert.ErrorIs(t, err, ErrStall)
	require.NoError(t, sd.d.ClearHalt(usbsim.AddrBulkOut))
	sd.send(t, usbsim.EchoCommand([]byte("again")))
	assert.Equal(t, "again", string(sd.read(t, buf)))
}

// TestSimClearHaltDiscards: data kept from a bounced message is dropped
// with the endpoint's FIFO.
func TestSimClearHaltDiscards(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.send(t, usbsim.EchoCommand([]byte("0123456789")))
	small := make([]byte, 4)
	assert.Equal(t, "0123", string(sd.read(t, small)))
	require.NoError(t, sd.d.ClearHalt(usbsim.AddrBulkIn))
	sd.send(t, usbsim.EchoCommand([]byte("fresh")))
	assert.Equal(t, "fres", string(sd.read(t, small)))
}

// TestSimUnplugPending unplugs the device under 8 pending transfers: each
// completes exactly once with ErrNoDevice.
func TestSimUnplugPending(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	const k = 8
	for i := range k {
		ep := sd.in
		if i%4 == 3 {
			ep = sd.intr
		}
		_, err := ep.Submit(make([]byte, ep.Desc().MaxTransfer), Xfer{User: i})
		require.NoError(t, err)
	}
	settle(t, sd.r, k)
	require.NoError(t, sd.s.Unplug())
	seen := map[int]int{}
	for _, c := range Reap(t, sd.r, k) {
		assert.ErrorIs(t, c.Err, ErrNoDevice, "transfer %v", c.User)
		assert.ErrorIs(t, c.Err, ioring.ErrNoDevice)
		assert.NotErrorIs(t, c.Err, ErrCanceled)
		seen[c.User.(int)]++
	}
	AssertNoMore(t, sd.r)
	for i := range k {
		assert.Equal(t, 1, seen[i], "completions of transfer %d", i)
	}
	_, err := sd.out.Submit([]byte{usbsim.CmdNop}, Xfer{})
	assert.ErrorIs(t, err, ErrNoDevice, "submit after unplug")
	assert.ErrorIs(t, sd.d.ClearHalt(usbsim.AddrBulkIn), ErrNoDevice)
}

func TestSimUnplugOut(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.Hang()
	_, err := sd.out.Submit([]byte{usbsim.CmdNop}, Xfer{})
	require.NoError(t, err)
	settle(t, sd.r, 1)
	require.NoError(t, sd.s.Unplug())
	c := Reap(t, sd.r, 1)[0]
	assert.ErrorIs(t, c.Err, ErrNoDevice)
}

func TestSimCancelAll(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.Hang()
	const k = 8
	for i := range k {
		_, err := sd.in.Submit(make([]byte, sd.in.Desc().MaxTransfer), Xfer{User: i})
		require.NoError(t, err)
	}
	_, err := sd.out.Submit(usbsim.EchoCommand([]byte("x")), Xfer{User: k})
	require.NoError(t, err)
	settle(t, sd.r, k+1)
	require.NoError(t, sd.d.CancelAll())
	seen := map[int]int{}
	for _, c := range Reap(t, sd.r, k+1) {
		assert.ErrorIs(t, c.Err, ErrCanceled, "transfer %v", c.User)
		seen[c.User.(int)]++
	}
	assert.Len(t, seen, k+1)
	AssertNoMore(t, sd.r)

	// Later transfers run normally.
	sd.s.Resume()
	buf := make([]byte, sd.in.Desc().MaxTransfer)
	sd.send(t, usbsim.EchoCommand([]byte("y")))
	got := string(sd.read(t, buf))
	if got == "x" { // the canceled OUT message had gone out
		got = string(sd.read(t, buf))
	}
	assert.Equal(t, "y", got)
}

// TestSimCloseDrains closes the device under pending transfers: Close
// returns after every completion was posted; later calls fail.
func TestSimCloseDrains(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	const k = 8
	for i := range k {
		_, err := sd.in.Submit(make([]byte, 100), Xfer{User: i})
		require.NoError(t, err)
	}
	settle(t, sd.r, k)
	require.NoError(t, sd.d.Close())
	var cs [2 * k]ioring.Completion
	n, err := sd.r.Reap(cs[:], 0)
	require.NoError(t, err)
	assert.Equal(t, k, n, "every completion is posted when Close returns")
	for _, c := range cs[:n] {
		assert.ErrorIs(t, c.Err, ErrCanceled)
	}
	AssertSettled(t, sd.r)
	assert.ErrorIs(t, sd.d.Close(), ErrClosed)
	assert.ErrorIs(t, sd.d.CancelAll(), ErrClosed)
	assert.ErrorIs(t, sd.d.ClearHalt(usbsim.AddrBulkIn), ErrClosed)
	_, err = sd.in.Submit(make([]byte, 100), Xfer{})
	assert.ErrorIs(t, err, ErrClosed)
}

// TestSimRingClosedFirst: closing the ring under pending transfers cancels
// them; the Device still closes cleanly.
func TestSimRingClosedFirst(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	for i := range 4 {
		_, err := sd.in.Submit(make([]byte, 100), Xfer{User: i})
		require.NoError(t, err)
	}
	settle(t, sd.r, 4)
	done := make(chan error, 1)
	go func() { done <- sd.r.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("ring Close did not return")
	}
	var cs [8]ioring.Completion
	n, _ := sd.r.Reap(cs[:], 0)
	assert.Equal(t, 4, n)
	for _, c := range cs[:n] {
		assert.ErrorIs(t, c.Err, ErrCanceled)
	}
	_, err := sd.in.Submit(make([]byte, 100), Xfer{})
	assert.ErrorIs(t, err, ioring.ErrClosed)
	require.NoError(t, sd.d.Close())
}

// TestSimCancelStress races cancels against a stream of echoes: each
// transfer completes once, and every message arrives exactly once, in
// order (a cancel that loses the race leaves the data in the completion).
func TestSimCancelStress(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{MaxTransfer: 4096})
	msgs := 300
	if testing.Short() {
		msgs = 60
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range msgs {
			sd.send(t, usbsim.EchoCommand(fmt.Appendf(nil, "m%04d", i)))
		}
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var got []string
	var free [][]byte
	for range 4 {
		free = append(free, make([]byte, 4096))
	}
	type pend struct {
		q   ioring.Request
		buf []byte
	}
	reqs := map[int]pend{}
	next, canceled := 0, 0
	deadline := time.Now().Add(4 * Patience)
	for len(got) < msgs {
		require.True(t, time.Now().Before(deadline), "stream stalled at %d of %d", len(got), msgs)
		for len(free) > 0 {
			buf := free[len(free)-1]
			free = free[:len(free)-1]
			q, err := sd.in.Submit(buf, Xfer{User: next})
			require.NoError(t, err)
			reqs[next] = pend{q, buf}
			next++
		}
		for _, p := range reqs {
			if rng.IntN(3) == 0 {
				_ = p.q.Cancel()
			}
		}
		for _, c := range Reap(t, sd.r, 1) {
			id := c.User.(int)
			p, ok := reqs[id]
			require.True(t, ok, "completion of transfer %d: twice or unknown", id)
			delete(reqs, id)
			free = append(free, p.buf)
			if errors.Is(c.Err, ErrCanceled) {
				canceled++
				continue
			}
			require.NoError(t, c.Err)
			got = append(got, string(p.buf[:c.N]))
		}
	}
	wg.Wait()
	require.NoError(t, sd.d.CancelAll())
	Reap(t, sd.r, len(reqs))
	for i, m := range got {
		require.Equal(t, fmt.Sprintf("m%04d", i), m, "message %d", i)
	}
	t.Logf("%d transfers, %d canceled", next, canceled)
}

// TestSimCloseRacesSubmit closes a hung device while goroutines submit:
// Close returns, and every accepted transfer completes exactly once.
func TestSimCloseRacesSubmit(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.s.Hang()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ep := []*Endpoint{sd.in, sd.out, sd.intr}[g]
			for {
				buf := make([]byte, 64)
				_, err := ep.Submit(buf, Xfer{})
				if errors.Is(err, ErrClosed) {
					return
				}
				if errors.Is(err, ioring.ErrFull) {
					time.Sleep(time.Millisecond)
					continue
				}
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				accepted++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(Quiet)
	closed := make(chan error, 1)
	go func() { closed <- sd.d.Close() }()
	select {
	case err := <-closed:
		require.NoError(t, err)
	case <-time.After(Patience):
		t.Fatal("Close did not return")
	}
	wg.Wait()
	var cs [64]ioring.Completion
	got := 0
	for {
		n, err := sd.r.Reap(cs[:], 0)
		require.NoError(t, err)
		if n == 0 {
			break
		}
		for _, c := range cs[:n] {
			assert.ErrorIs(t, c.Err, ErrCanceled)
		}
		got += n
	}
	assert.Equal(t, accepted, got, "completions of accepted transfers")
	AssertSettled(t, sd.r)
}

// TestOpenSimSamePlug: a Device opened on a plug-in that an earlier Device
// used goes on counting its OUT messages, also past a reply the earlier one
// abandoned; after a replug counting starts again.
func TestOpenSimSamePlug(t *testing.T) {
	sd := newSimDev(t, usbsim.Config{})
	sd.send(t, usbsim.StatusCommand())
	sd.s.Hang()
	ctx, cancel := context.WithTimeout(context.Background(), Quiet)
	_, err := sd.out.Transfer(ctx, usbsim.EchoCommand([]byte("abandoned")))
	cancel()
	require.ErrorIs(t, err, ErrCanceled, "an OUT transfer whose reply never came")
	require.NoError(t, sd.d.Close())
	sd.s.Resume()

	reopen := func() *simDev {
		d, err := usbsim.Open(sd.r, sd.s)
		require.NoError(t, err)
		t.Cleanup(func() { _ = d.Close() })
		next := &simDev{r: sd.r, s: sd.s, d: d}
		next.out, err = d.Endpoint(usbsim.AddrBulkOut)
		require.NoError(t, err)
		next.in, err = d.Endpoint(usbsim.AddrBulkIn)
		require.NoError(t, err)
		return next
	}
	sd2 := reopen()
	sd2.send(t, usbsim.EchoCommand([]byte("second")))
	buf := make([]byte, sd2.in.Desc().MaxTransfer)
	assert.Equal(t, "abandoned", string(sd2.read(t, buf)), "the device acted on the abandoned message")
	assert.Equal(t, "second", string(sd2.read(t, buf)))
	require.NoError(t, sd2.d.Close())

	require.NoError(t, sd.s.Unplug())
	require.NoError(t, sd.s.Replug())
	sd3 := reopen()
	sd3.send(t, usbsim.EchoCommand([]byte("replugged")))
	assert.Equal(t, "replugged", string(sd3.read(t, buf)))
}
