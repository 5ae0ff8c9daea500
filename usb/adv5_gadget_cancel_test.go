//go:build cgo && linux

package usb_test

// TestAdv5GadgetCancelMatrix: every kind of cancel that leaves the Device
// open (Request.Cancel, Token.Cancel, Xfer.Deadline, a context canceled, a
// context deadline, Device.CancelAll, Ring.CancelAll), at a random moment
// (seeded; CANCELIO_SEED repeats the choices), against one transfer of
// each kind (bulk IN with an echo waiting, bulk IN gathering a scan of
// several messages, bulk OUT echo, bulk OUT nop of many packets,
// interrupt IN, control IN and OUT) while the gadget answers, stalls the
// endpoint, or hangs. For each case:
//
//   - exactly one completion (and none left after it), nothing in flight,
//     and the ring's Stats agree (its Canceled and TimedOut moved by that
//     completion alone); after Device.Close nothing at all in flight;
//   - the error is the one the cancel's kind gives (ErrTimeout for a
//     deadline, ErrCanceled otherwise; a context's own error reachable)
//     and only when the cancel won: a Request.Cancel that says ErrNotFound
//     leaves the real result; a hung device leaves the cancel nothing to
//     lose to; a stalled endpoint gives ErrStall unless the cancel won;
//   - the bytes reported are the bytes that moved: an IN completion's N
//     bytes are the device's data, and what it did not report comes with
//     the next transfers (the drain: the bulk IN stream up to a sentinel
//     echo holds exactly what no completion reported, nothing stale,
//     nothing lost); an OUT echo that reported its bytes comes back, one
//     that reported none does not;
//   - no byte past N (nor past len, in the slice's capacity) is written,
//     OUT buffers and setup packets stay as they were, and no byte of the
//     buffer changes after the completion (checked after the drain).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

type adv5Target int

const (
	a5BulkIn adv5Target = iota
	a5Scan
	a5BulkOut
	a5Nop
	a5Intr
	a5CtlIn
	a5CtlOut
	a5Targets
)

var a5TargetNames = [a5Targets]string{"bulk IN echo", "bulk IN scan", "bulk OUT echo", "bulk OUT nop", "interrupt IN", "control IN", "control OUT"}

type adv5Behaviour int

const (
	a5Answer adv5Behaviour = iota
	a5Stall
	a5Hang
	a5Behaviours
)

var a5BehNames = [a5Behaviours]string{"answers", "stalls", "hangs"}

type adv5Kind int

const (
	a5Req adv5Kind = iota
	a5Tok
	a5Deadline
	a5CtxCancel
	a5CtxDeadline
	a5DevAll
	a5RingAll
	a5Kinds
)

var a5KindNames = [a5Kinds]string{"Request.Cancel", "Token.Cancel", "Xfer.Deadline", "context cancel", "context deadline", "Device.CancelAll", "Ring.CancelAll"}

func (k adv5Kind) timeout() bool { return k == a5Deadline || k == a5CtxDeadline }

// adv5Case is one case of the matrix.
type adv5Case struct {
	i      int
	target adv5Target
	beh    adv5Behaviour
	kind   adv5Kind
	delay  time.Duration
}

func (c adv5Case) String() string {
	return fmt.Sprintf("case %d: %s, device %s, %s after %v", c.i, a5TargetNames[c.target], a5BehNames[c.beh], a5KindNames[c.kind], c.delay)
}

// adv5Result is what a case's transfer ended with.
type adv5Result struct {
	c         ioring.Completion
	cancelErr error // Request.Cancel's, Token.Cancel's or CancelAll's result
}

// adv5Transfer submits buf on ep (endpoint 0 when ep is nil) and cancels it
// as c says.
func adv5Transfer(t *testing.T, gd *gadgetDev, c adv5Case, ep *Endpoint, buf []byte) adv5Result {
	t.Helper()
	x := Xfer{User: c.i}
	var tok *ioring.Token
	switch c.kind {
	case a5Tok:
		tok = gd.r.NewToken()
		x.Token = tok
	case a5Deadline:
		x.Deadline = max(c.delay, time.Microsecond)
	}
	wait := c.kind == a5CtxCancel || c.kind == a5CtxDeadline
	var q ioring.Request
	var err error
	switch {
	case ep == nil && wait:
		q, err = gd.d.StartControl(buf, x)
	case ep == nil:
		q, err = gd.d.SubmitControl(buf, x)
	case wait:
		q, err = ep.Start(buf, x)
	default:
		q, err = ep.Submit(buf, x)
	}
	require.NoError(t, err, "%v: submit", c)
	var res adv5Result
	if wait {
		var ctx context.Context
		var cancel context.CancelFunc
		if c.kind == a5CtxCancel {
			ctx, cancel = context.WithCancel(context.Background())
			go func() {
				time.Sleep(c.delay)
				cancel()
			}()
		} else {
			ctx, cancel = context.WithTimeout(context.Background(), c.delay)
		}
		defer cancel()
		res.c, err = q.Wait(ctx)
		require.NoError(t, err, "%v: Wait", c)
		if errors.Is(res.c.Err, ErrCanceled) {
			want := context.Canceled
			if c.kind == a5CtxDeadline {
				want = context.DeadlineExceeded
			}
			assert.ErrorIs(t, res.c.Err, want, "%v: the context's own error", c)
		}
		return res
	}
	if c.delay > 0 {
		time.Sleep(c.delay)
	}
	switch c.kind {
	case a5Req:
		res.cancelErr = q.Cancel()
		if res.cancelErr != nil {
			assert.ErrorIs(t, res.cancelErr, ioring.ErrNotFound, "%v: Request.Cancel", c)
		}
	case a5Tok:
		res.cancelErr = tok.Cancel()
		assert.NoError(t, res.cancelErr, "%v: Token.Cancel", c)
	case a5DevAll:
		res.cancelErr = gd.d.CancelAll()
		assert.NoError(t, res.cancelErr, "%v: Device.CancelAll", c)
	case a5RingAll:
		res.cancelErr = gd.r.CancelAll()
		assert.NoError(t, res.cancelErr, "%v: Ring.CancelAll", c)
	}
	res.c = Reap(t, gd.r, 1)[0]
	assert.Equal(t, c.i, res.c.User, "%v: whose completion", c)
	return res
}

// adv5Matrix runs the cases of one backend.
type adv5Matrix struct {
	t    *testing.T
	gd   *gadgetDev
	rng  *rand.Rand
	seed uint64
	base int // requests the open Device keeps in flight by itself: usbfs's reaper poll
	// pollCancel is set when a Ring.CancelAll case on usbfs may have
	// canceled the reaper's poll without Stats counting it yet: Canceled
	// counts a completion when it is delivered, and the transport takes
	// the poll's when it gets to it, maybe after the case's last Stats
	// read. That one count may then land in a later case, once.
	pollCancel bool
}

// settle waits until the ring has no transfer in flight (its InFlight is
// at most the Device's own poll request).
func (m *adv5Matrix) settle(what string) {
	m.t.Helper()
	if !assert.Eventually(m.t, func() bool { return m.gd.r.InFlight() <= m.base }, Patience, time.Millisecond, "%s: transfers in flight", what) {
		m.t.Logf("InFlight: %d", m.gd.r.InFlight())
	}
}

func (m *adv5Matrix) run(c adv5Case) (won bool) {
	t, gd := m.t, m.gd
	var (
		ep      *Endpoint
		buf     []byte
		orig    []byte // OUT buffers, setup packets: what must not change
		payload []byte // the echo at stake
		scan    usbsim.ScanParams
		stallAt uint8
	)
	switch c.target {
	case a5BulkIn:
		ep, buf = gd.in, adv5Buf(gd.maxTransfer)
		if c.beh == a5Answer {
			payload = adv5Payload(8 + m.rng.IntN(400))
			gd.send(t, usbsim.EchoCommand(payload))
		}
		stallAt = usbsim.AddrBulkIn
	case a5Scan:
		// 3 messages of 16 KiB and a short one: a buffer of 4 of them
		// gathers the image, and a cancel cuts it anywhere.
		scan = usbsim.ScanParams{DPI: 150, Width: 1000, Height: 50, Format: usbsim.FormatGray8, Seed: uint64(c.i)}
		gd.send(t, usbsim.StartScanCommand(scan))
		ep, buf = gd.in, adv5Buf(4*gd.maxTransfer)
	case a5BulkOut:
		payload = adv5Payload(8 + m.rng.IntN(400))
		ep, buf = gd.out, usbsim.EchoCommand(payload)
		stallAt = usbsim.AddrBulkOut
	case a5Nop:
		ep, buf = gd.out, nop(1+m.rng.IntN(40000))
		stallAt = usbsim.AddrBulkOut
	case a5Intr:
		adv5DrainEvents(t, gd, 150*time.Millisecond) // the scans' events
		ep, buf = gd.intr, adv5Buf(gd.intr.Desc().MaxPacketSize)
		if c.beh == a5Answer {
			gd.send(t, usbsim.StatusCommand())
		}
		stallAt = usbsim.AddrInterruptIn
	case a5CtlIn:
		s := Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus, Length: uint16(usbsim.EventSize + m.rng.IntN(40))}
		if c.beh == a5Stall {
			s.Request = 0x77 // unknown: the gadget stalls it
		}
		buf = adv5Buf(SetupSize + int(s.Length))
		s.Put(buf)
	case a5CtlOut:
		payload = adv5Payload(8 + m.rng.IntN(400))
		cmd := usbsim.EchoCommand(payload)
		s := Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand, Length: uint16(len(cmd))}
		if c.beh == a5Stall {
			s.Request = 0x77
		}
		buf = make([]byte, SetupSize+len(cmd))
		s.Put(buf)
		copy(buf[SetupSize:], cmd)
	}
	if ep != nil && !ep.Desc().IsIn() || c.target == a5CtlOut {
		orig = bytes.Clone(buf)
	} else if ep == nil {
		orig = bytes.Clone(buf[:SetupSize])
	}
	switch c.beh {
	case a5Stall:
		if stallAt != 0 {
			require.NoError(t, gd.s.Stall(stallAt), "%v", c)
		}
	case a5Hang:
		gd.s.Hang()
	}

	m.settle(c.String())
	st0 := gd.r.Stats()
	res := adv5Transfer(t, gd, c, ep, buf)
	if c.beh == a5Hang {
		gd.s.Resume()
	}
	n, err := res.c.N, res.c.Err
	m.settle(c.String())
	adv5NoMore(t, gd.r, c.String())
	st1 := gd.r.Stats()
	canceled := errors.Is(err, ErrCanceled)
	timedOut := errors.Is(err, ErrTimeout)
	// The usbfs reaper's poll request comes and goes (a Ring.CancelAll
	// cancels it too); the transfers are the rest.
	assert.Equal(t, st1.Submitted-st1.Completed, uint64(st1.InFlight), "%v: Stats: Submitted - Completed", c)
	assert.Equal(t, b2u(timedOut), st1.TimedOut-st0.TimedOut, "%v: Stats.TimedOut (err %v)", c, err)
	if dc, want := st1.Canceled-st0.Canceled, b2u(canceled && !timedOut); m.base > 0 && c.kind == a5RingAll {
		assert.True(t, dc == want || dc == want+1, "%v: Stats.Canceled moved by %d (err %v)", c, dc, err)
		m.pollCancel = dc == want // the poll's count, if canceled, is still to come
	} else if m.pollCancel && dc == want+1 {
		m.pollCancel = false // the reaper's poll a Ring.CancelAll case canceled, counted late
	} else {
		assert.Equal(t, want, dc, "%v: Stats.Canceled (err %v)", c, err)
	}

	// The cancel's own kind, and only when it won.
	libusbCtlRuns := gd.backend == "libusb" && ep == nil // libusb's control call cannot be interrupted
	if canceled {
		if c.kind.timeout() {
			assert.True(t, timedOut, "%v: a deadline's cancel gave %v", c, err)
		} else {
			assert.False(t, timedOut, "%v: a cancel gave %v", c, err)
		}
		if c.kind == a5Req && errors.Is(res.cancelErr, ioring.ErrNotFound) {
			assert.Fail(t, "cancel lost but won", "%v: Request.Cancel said ErrNotFound, the completion says %v (N=%d)", c, err, n)
		}
	}
	size := len(buf)
	if ep == nil {
		size -= SetupSize
	}
	require.True(t, n >= 0 && n <= size, "%v: N=%d outside [0, %d] (err %v)", c, n, size, err)
	if ep == nil || ep.Desc().IsIn() {
		from := n
		if ep == nil {
			from += SetupSize
		}
		if ep == nil && c.target == a5CtlOut {
			from = len(buf)
		}
		assert.Equal(t, -1, adv5Untouched(buf, from), "%v: byte written past N=%d (err %v)", c, n, err)
	}
	if orig != nil {
		assert.Equal(t, orig, buf[:len(orig)], "%v: OUT data or setup packet changed", c)
	}
	snapshot := bytes.Clone(buf[:cap(buf)])
	okOrCancel := func() {
		if err != nil && !canceled {
			assert.Fail(t, "unexpected error", "%v: N=%d err=%v", c, n, err)
		}
	}

	switch c.target {
	case a5BulkIn:
		var want []byte
		switch c.beh {
		case a5Answer:
			okOrCancel()
			if err == nil || n > 0 {
				assert.Equal(t, string(payload), string(buf[:n]), "%v: err %v", c, err)
			}
			if n == 0 {
				want = payload
			}
		case a5Stall:
			m.stallOrCancel(c, err, n)
			m.clearStall(c, gd.in, err)
		case a5Hang:
			m.mustCancel(c, err, n)
		}
		assert.Equal(t, string(want), string(adv5Drain(t, gd)), "%v: the bulk IN stream after the transfer (N=%d err=%v)", c, n, err)
	case a5Scan:
		okOrCancel()
		img := usbsim.ExpectedImage(scan)
		if err == nil {
			assert.Equal(t, len(img), n, "%v: the whole image in one transfer", c)
		}
		got := bytes.Clone(buf[:n])
		for len(got) < len(img) {
			b := gd.read(t, gd.maxTransfer)
			require.NotEmpty(t, b, "%v: image at %d", c, len(got))
			got = append(got, b...)
		}
		assert.True(t, bytes.Equal(img, got), "%v: the image (first part %d bytes, err %v) differs", c, n, err)
		assert.Empty(t, adv5Drain(t, gd), "%v: bulk IN after the image", c)
	case a5BulkOut, a5Nop:
		switch c.beh {
		case a5Answer, a5Hang:
			// A hung gadget may have its read of bulk OUT queued already:
			// the packet can still go.
			okOrCancel()
		case a5Stall:
			m.stallOrCancel(c, err, n)
			m.clearStall(c, gd.out, err)
		}
		if err == nil {
			assert.Equal(t, len(buf), n, "%v: bytes sent", c)
		}
		var want []byte
		if c.target == a5BulkOut {
			assert.True(t, n == 0 || n == len(buf), "%v: N=%d of one short packet", c, n)
			if n == len(buf) {
				want = payload
			}
		}
		assert.Equal(t, string(want), string(adv5Drain(t, gd)), "%v: echoes after the OUT transfer (N=%d err=%v)", c, n, err)
	case a5Intr:
		status := 0
		switch c.beh {
		case a5Answer:
			okOrCancel()
			if err == nil {
				assert.Equal(t, usbsim.EventSize, n, "%v", c)
			}
			if n > 0 {
				e, perr := usbsim.ParseEvent(buf[:n])
				if assert.NoError(t, perr, "%v", c) && e.Kind == usbsim.EventStatus {
					status++
				}
			}
			if status == 0 {
				// The event the cancel left must come with the next read.
				status += adv5DrainEvents(t, gd, 2*time.Second)
			}
		case a5Stall:
			m.stallOrCancel(c, err, n)
			m.clearStall(c, gd.intr, err)
		case a5Hang:
			m.mustCancel(c, err, n)
		}
		status += adv5DrainEvents(t, gd, 150*time.Millisecond)
		want := 0
		if c.beh == a5Answer {
			want = 1
		}
		assert.Equal(t, want, status, "%v: status events delivered (N=%d err=%v)", c, n, err)
	case a5CtlIn:
		switch c.beh {
		case a5Answer:
			okOrCancel()
			s, _ := ParseSetup(buf)
			if err == nil {
				assert.Equal(t, min(int(s.Length), usbsim.EventSize), n, "%v", c)
				e, perr := usbsim.ParseEvent(buf[SetupSize : SetupSize+n])
				if assert.NoError(t, perr, "%v", c) {
					assert.Equal(t, usbsim.EventStatus, e.Kind, "%v", c)
				}
			}
		case a5Stall:
			m.stallOrCancel(c, err, n)
		case a5Hang:
			m.mustCancel(c, err, n)
		}
	case a5CtlOut:
		if gd.backend == "libusb" {
			m.ep0Barrier(c)
		}
		drained := adv5Drain(t, gd)
		switch c.beh {
		case a5Answer:
			okOrCancel()
			if err == nil {
				assert.Equal(t, len(buf)-SetupSize, n, "%v", c)
				assert.Equal(t, string(payload), string(drained), "%v: the echo", c)
			} else {
				// Canceled: the data stage may have reached the device
				// before the cancel did.
				assert.Contains(t, []string{"", string(payload)}, string(drained), "%v: echo of a canceled VendorCommand", c)
			}
		case a5Stall:
			m.stallOrCancel(c, err, n)
			assert.Empty(t, drained, "%v: a refused request ran", c)
		case a5Hang:
			m.mustCancel(c, err, n)
			assert.Empty(t, drained, "%v: a withheld request ran after the resume", c)
		}
	}
	if !libusbCtlRuns && c.beh == a5Hang && c.target != a5BulkOut && c.target != a5Nop {
		assert.True(t, canceled, "%v: a hung device left the cancel nothing to lose to: %v", c, err)
	}
	assert.Equal(t, snapshot, buf[:cap(buf)], "%v: buffer written after its completion (N=%d err=%v)", c, n, err)
	return canceled
}

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// stallOrCancel checks the completion of a transfer on a stalled endpoint
// (or a refused control request): ErrStall, or the cancel that won.
func (m *adv5Matrix) stallOrCancel(c adv5Case, err error, n int) {
	if !errors.Is(err, ErrStall) && !errors.Is(err, ErrCanceled) {
		assert.Fail(m.t, "not a stall", "%v: N=%d err=%v (seed %d)", c, n, err, m.seed)
	}
	assert.Zero(m.t, n, "%v: bytes of a stalled transfer (err %v)", c, err)
}

// clearStall clears the halt of ep after a transfer to it that c stalled.
// When the cancel won (err), the stall may not have reached the bus yet:
// the gadget halts the endpoint from its own loop a moment after
// Scanner.Stall, on a loaded machine after the cancel, and a ClearHalt
// before it would leave the endpoint halted for what follows. So the
// endpoint is probed until it stalls (IN: reads, which find no data to
// take in these cases; OUT: one-byte nops, which the device ignores),
// then cleared.
func (m *adv5Matrix) clearStall(c adv5Case, ep *Endpoint, err error) {
	t := m.t
	t.Helper()
	if errors.Is(err, ErrCanceled) {
		deadline := time.Now().Add(Patience)
		for {
			buf := []byte{usbsim.CmdNop}
			if ep.Desc().IsIn() {
				buf = make([]byte, ep.Desc().MaxPacketSize)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_, perr := ep.Transfer(ctx, buf)
			cancel()
			if errors.Is(perr, ErrStall) {
				break
			}
			require.True(t, perr == nil || errors.Is(perr, ErrTimeout), "%v: probing for the stall: %v", c, perr)
			require.True(t, time.Now().Before(deadline), "%v: the stall never reached endpoint %#02x", c, ep.Desc().Address)
		}
	}
	require.NoError(t, m.gd.d.ClearHalt(ep.Desc().Address), "%v", c)
}

// ep0Barrier returns once the device has acted on every request that
// reached its endpoint 0 before, with a VendorStatus (which changes
// nothing): endpoint 0 runs one request at a time on both sides, and the
// device acts on a VendorCommand before it takes the next request. The
// drain that follows a control OUT case on libusb needs it: there a
// canceled request's call goes on after its completion
// (Device.SubmitControl) until the device answers it, and its echo must
// be on bulk IN before the drain's sentinel, not after it, where the next
// case would find it; the next request waits for the call. (On usbfs a
// VendorStatus right after a control OUT that Device.CancelAll discarded
// at once was seen to end with ErrBabble: the gadget rig's, which served
// the gadget's read for the abandoned data stage as the VendorStatus's;
// see TestAdv10GadgetCtlDiscard and usbsim.ErrShortDataStage. Not this
// barrier's to hide.)
func (m *adv5Matrix) ep0Barrier(c adv5Case) {
	m.t.Helper()
	ctx, cancel := testContext()
	defer cancel()
	var b [usbsim.EventSize]byte
	_, err := m.gd.d.Control(ctx, Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: usbsim.VendorStatus}, b[:])
	require.NoError(m.t, err, "%v: VendorStatus after the case", c)
}

// mustCancel checks the completion of a transfer to a hung device: the
// cancel, with nothing moved.
func (m *adv5Matrix) mustCancel(c adv5Case, err error, n int) {
	assert.ErrorIs(m.t, err, ErrCanceled, "%v: on a hung device (seed %d)", c, m.seed)
	assert.Zero(m.t, n, "%v: bytes from a hung device (err %v)", c, err)
}

// adv5Cases is how many cases each backend runs.
const adv5Cases = 84

func TestAdv5GadgetCancelMatrix(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		seed := RandSeed(t)
		t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
		adv5Leaks(t)
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: 16 << 10})
		m := &adv5Matrix{t: t, gd: gd, rng: rand.New(rand.NewPCG(seed, 5)), seed: seed}
		if backend == "usbfs" {
			m.base = 1
		}
		t0 := time.Now()
		counts := map[string]int{}
		for i := range adv5Cases {
			c := adv5Case{i: i, target: adv5Target(i % int(a5Targets)), beh: adv5Behaviour(m.rng.IntN(int(a5Behaviours))), kind: adv5Kind(m.rng.IntN(int(a5Kinds)))}
			switch m.rng.IntN(3) {
			case 0: // at once
			case 1:
				c.delay = time.Duration(m.rng.Int64N(int64(2 * time.Millisecond)))
			default:
				c.delay = time.Duration(m.rng.Int64N(int64(20 * time.Millisecond)))
			}
			if c.target == a5Scan {
				c.beh = a5Answer
			}
			if backend == "libusb" && c.beh == a5Hang && (c.target == a5CtlIn || c.target == a5CtlOut) {
				c.beh = a5Answer // a 5-second control timeout; TestGadgetControlWithheld has it
			}
			if m.run(c) {
				counts["cancel won"]++
			} else {
				counts["cancel lost"]++
			}
			if t.Failed() {
				t.Fatalf("stopped at %v (seed %d)", c, seed)
			}
			counts[a5KindNames[c.kind]]++
		}
		gd.echo(t, "after the matrix")
		m.settle("after the matrix")
		require.NoError(t, gd.d.Close())
		adv5Settled(t, gd.r, "after Device.Close")
		t.Logf("%s: %d cases in %v: %v", backend, adv5Cases, time.Since(t0).Round(time.Millisecond), counts)
	})
}
