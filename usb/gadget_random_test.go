//go:build cgo && linux

package usb_test

// TestGadgetRandom, the randomized test of issue 9: eight goroutines
// stream bulk IN and OUT transfers to usbsim's scanner served as a gadget
// (inside the usbvm guest) while another cancels their tokens at random
// moments and the gadget stalls, hangs and unplugs at random.
//
// What it checks, on each backend:
//
//   - Every accepted transfer completes exactly once: completions come
//     from the ring's completion queue (Submit, one reaper), counted per
//     transfer; a second one, or none within its deadline plus patience,
//     fails.
//   - Each completion is one the circumstances allow: nil; ErrTimeout (every
//     transfer has a deadline); ErrCanceled only when its token was
//     canceled; ErrStall only on an endpoint the gadget stalled; ErrNoDevice
//     only once the unplug began. N is within [0, len(buf)]; an IN transfer
//     wrote nothing past N, an OUT transfer left its buffer alone.
//   - Bytes match on both sides. Echo commands (one short packet each, so
//     the device takes all of one or none of it) carry unique ids; the
//     device sends each back as one bulk IN message, in the order it took
//     them. So the bulk IN stream the host received (every IN completion's
//     N bytes, whatever its error, in submission order: transfers on an
//     endpoint run in order) must be exactly the echoes of the OUT
//     transfers that reported their bytes moved, in OUT submission order:
//     an echo missing means bytes lost or an OUT that claimed bytes that
//     did not arrive; anything else in the stream means bytes duplicated,
//     corrupted, or an OUT that moved bytes it did not report. A round
//     that ends without an unplug drains bulk IN up to a sentinel echo, so
//     the match is exact; after an unplug the stream must be a prefix.
//     Nop commands of several packets (a data sink) make the canceled and
//     timed-out URBs report partial lengths; a nop cut after a whole
//     packet leaves the device's transfer open, so the next commands up to
//     a short packet join the nop: the echoes among them may or may not
//     come back (see optional in verify).
//   - Control transfers on endpoint 0 run among them, as ring requests
//     with tokens and deadlines: the scanner's VendorStatus (an IN data
//     stage that must parse as a status event), VendorCommand with a nop
//     of up to ControlMaxData bytes (an OUT data stage), GET_DESCRIPTOR of
//     the device (the kernel's answer: its IDs) and an unknown vendor
//     request, which must stall and is the only one that may. Their setup
//     packets stay as they were, an OUT one's data too, and an IN one
//     writes nothing past N. A hang withholds their answers; an unplug
//     ends them with ErrNoDevice.
//   - Nothing leaks: goroutines (goleak, on top of TestMain's), fds
//     (checkFDs), mappings of /dev/bus/usb and io_uring (counted in
//     /proc/self/maps; usbfs ones after every Device.Close).
//
// The test runs randRounds rounds on one ring, each with a fixed number of
// operations per goroutine; an unplug round (every other one, at a random
// moment) closes its Device, the gadget is plugged in again and the next
// round opens a new one on the device the host enumerated anew. The seed is
// logged; CANCELIO_SEED=<seed> repeats its random choices (the timing is
// the machine's).

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/cancelio/cancelio/ioring"
	. "github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

const (
	randWorkers     = 8
	randRounds      = 6
	randOps         = 24 // operations per goroutine per round (-short: a quarter)
	randMaxTransfer = 16 << 10
	randPacket      = 512 // high-speed bulk wMaxPacketSize
	randFill        = 0xEE
	echoHeader      = 6 // id uint32, command length uint16
)

// Endpoint indexes of a round; epCtl, endpoint 0, has no queue of the
// round's (its transfers are checked one by one).
const (
	epOut = 0
	epIn  = 1
	epCtl = 2
)

var epNames = [2]string{"bulk OUT", "bulk IN"}

// Control requests of the test (rxfer.kind on epCtl).
const (
	ctlStatus     = iota // usbsim.VendorStatus, IN
	ctlNop               // usbsim.VendorCommand with a nop, OUT
	ctlDescriptor        // GET_DESCRIPTOR(DEVICE), IN, answered by the device's USB stack
	ctlUnknown           // an unknown vendor request, IN: it stalls
	ctlKinds
)

var ctlNames = [ctlKinds]string{"VendorStatus", "VendorCommand", "GET_DESCRIPTOR", "unknown vendor request"}

// countMaps counts this process's mappings of usbfs nodes and io_uring
// rings.
func countMaps(t testing.TB) (usbfs, uring int) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, "/dev/bus/usb"):
			usbfs++
		case strings.Contains(l, "io_uring"):
			uring++
		}
	}
	return usbfs, uring
}

// rxfer is one transfer of the test.
type rxfer struct {
	ep       int
	kind     byte   // OUT: usbsim.CmdEcho or usbsim.CmdNop
	id       uint32 // echo id
	buf      []byte
	orig     []byte // OUT: a copy of buf
	tok      *ioring.Token
	deadline time.Duration
	seq      int // submission order on its endpoint in the round

	done  chan struct{} // closed by the reaper at the first completion
	count atomic.Int32  // completions delivered
	n     int           // set before done is closed
	err   error
}

func (x *rxfer) String() string {
	what := "IN"
	switch {
	case x.ep == epCtl:
		what = "control " + ctlNames[x.kind]
	case x.ep == epOut && x.kind == usbsim.CmdEcho:
		what = fmt.Sprintf("OUT echo id %d", x.id)
	case x.ep == epOut:
		what = "OUT nop"
	}
	return fmt.Sprintf("%s #%d (%d bytes, deadline %v)", what, x.seq, len(x.buf), x.deadline)
}

// randTest is the state of one backend's run.
type randTest struct {
	t       *testing.T
	seed    uint64
	gd      *gadgetDev
	ids     atomic.Uint32
	stalled [2]atomic.Bool // the gadget was told to stall the endpoint
	usbMaps int            // mappings of usbfs nodes with no Device open
	all     []*rxfer       // every accepted transfer; test goroutine after the rounds
	allMu   sync.Mutex
}

// reap delivers the ring's completions until stop is closed and the ring
// has none left.
func (rt *randTest) reap(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var cs [32]ioring.Completion
	for {
		n, err := rt.gd.r.Reap(cs[:], 20*time.Millisecond)
		if !assert.NoError(rt.t, err, "Reap") {
			return
		}
		for _, c := range cs[:n] {
			x, ok := c.User.(*rxfer)
			if !assert.True(rt.t, ok, "a completion of something else: %+v", c) {
				continue
			}
			if k := x.count.Add(1); k > 1 {
				assert.Fail(rt.t, "duplicate completion", "%v: completion %d: N=%d err=%v (seed %d)", x, k, c.N, c.Err, rt.seed)
				continue
			}
			x.n, x.err = c.N, c.Err
			close(x.done)
		}
		if n == 0 {
			select {
			case <-stop:
				return
			default:
			}
		}
	}
}

// randRound is one round: one Device.
type randRound struct {
	*randTest
	d          *Device
	eps        [2]*Endpoint
	gates      [2]sync.RWMutex // read: a transfer pending; write: ClearHalt
	mu         [2]sync.Mutex   // orders submissions: guards xfers
	xfers      [2][]*rxfer     // accepted transfers in submission order
	toks       [randWorkers]atomic.Pointer[ioring.Token]
	stalls     chan int // endpoints a transfer saw stalled
	unplugging atomic.Bool
	gone       atomic.Bool // a submit failed with ErrNoDevice
	ops        atomic.Int64

	// statistics
	results  [8]atomic.Int64 // by result class (resultClass)
	controls atomic.Int64    // control transfers accepted
	partial  atomic.Int64    // completions with 0 < N < len(buf)
	cancels  atomic.Int64
	// IN transfers that wrote past N, and the first of them
	pastN      atomic.Int64
	pastNFirst string
	clears     atomic.Int64
	faultLog   []string // the fault goroutine's, read after it ended
}

const (
	resOK = iota
	resTimeout
	resCanceled
	resStall
	resNoDevice
	resRefused // submit failed with ErrNoDevice
)

var resNames = []string{"ok", "timeout", "canceled", "stall", "no-device", "refused"}

// submit submits x on its endpoint, holding the endpoint's gate (read) until
// wait: ClearHalt needs no transfer pending. It reports whether x was
// accepted.
func (rd *randRound) submit(x *rxfer) bool {
	x.done = make(chan struct{})
	if x.ep == epCtl {
		return rd.submitControl(x)
	}
	if x.ep == epIn {
		for i := range x.buf {
			x.buf[i] = randFill
		}
	} else {
		x.orig = bytes.Clone(x.buf)
	}
	rd.gates[x.ep].RLock()
	ok := rd.accept(x, func() error {
		rd.mu[x.ep].Lock()
		defer rd.mu[x.ep].Unlock()
		x.seq = len(rd.xfers[x.ep])
		_, err := rd.eps[x.ep].Submit(x.buf, Xfer{Token: x.tok, Deadline: x.deadline, User: x})
		if err == nil {
			rd.xfers[x.ep] = append(rd.xfers[x.ep], x)
		}
		return err
	})
	if !ok {
		rd.gates[x.ep].RUnlock()
	}
	return ok
}

// submitControl submits control transfer x: no gate (endpoint 0 needs no
// ClearHalt), no queue of the round's.
func (rd *randRound) submitControl(x *rxfer) bool {
	su, _ := ParseSetup(x.buf)
	if su.IsIn() {
		for i := SetupSize; i < len(x.buf); i++ {
			x.buf[i] = randFill
		}
	}
	x.orig = bytes.Clone(x.buf)
	ok := rd.accept(x, func() error {
		_, err := rd.d.SubmitControl(x.buf, Xfer{Token: x.tok, Deadline: x.deadline, User: x})
		return err
	})
	if ok {
		rd.controls.Add(1)
	}
	return ok
}

// accept submits x with submit, again while the ring is full, and records
// it when accepted; a refusal after the unplug began is counted, any other
// fails the test. It reports whether x was accepted.
func (rd *randRound) accept(x *rxfer, submit func() error) bool {
	for try := 0; ; try++ {
		err := submit()
		switch {
		case err == nil:
			rd.allMu.Lock()
			rd.all = append(rd.all, x)
			rd.allMu.Unlock()
			return true
		case errors.Is(err, ioring.ErrFull) && try < 100:
			time.Sleep(time.Millisecond)
			continue
		case errors.Is(err, ErrNoDevice) && rd.unplugging.Load():
			rd.gone.Store(true)
			rd.results[resRefused].Add(1)
		default:
			assert.NoError(rd.t, err, "submit %v", x)
		}
		return false
	}
}

// wait waits for accepted x's completion and checks it. It reports whether
// the completion came.
func (rd *randRound) wait(x *rxfer) bool {
	if x.ep != epCtl {
		defer rd.gates[x.ep].RUnlock()
	}
	select {
	case <-x.done:
	case <-time.After(x.deadline + Patience):
		assert.Fail(rd.t, "lost completion", "%v: no completion %v after its deadline (seed %d)", x, Patience, rd.seed)
		return false
	}
	rd.check(x)
	return true
}

// check checks x's completion.
func (rd *randRound) check(x *rxfer) {
	t := rd.t
	n, err := x.n, x.err
	size := len(x.buf)
	if x.ep == epCtl {
		size -= SetupSize
	}
	if !assert.True(t, n >= 0 && n <= size, "%v: N=%d outside [0, %d]", x, n, size) {
		return
	}
	if n > 0 && n < len(x.buf) && err != nil {
		rd.partial.Add(1)
	}
	switch {
	case err == nil:
		rd.results[resOK].Add(1)
	case errors.Is(err, ErrTimeout):
		rd.results[resTimeout].Add(1)
	case errors.Is(err, ErrCanceled):
		rd.results[resCanceled].Add(1)
		assert.True(t, x.tok.Canceled(), "%v: %v, its token not canceled (N=%d)", x, err, n)
	case errors.Is(err, ErrStall) && x.ep == epCtl:
		rd.results[resStall].Add(1)
		assert.Equal(t, ctlUnknown, int(x.kind), "%v: %v: the scanner takes this request", x, err)
	case errors.Is(err, ErrStall):
		rd.results[resStall].Add(1)
		assert.True(t, rd.stalled[x.ep].Load(), "%v: %v, the endpoint never stalled", x, err)
		select {
		case rd.stalls <- x.ep:
		default:
		}
	case errors.Is(err, ErrNoDevice):
		rd.results[resNoDevice].Add(1)
		assert.True(t, rd.unplugging.Load(), "%v: %v before the unplug", x, err)
	default:
		assert.Fail(t, "unexpected error", "%v: N=%d err=%v (%T)", x, n, err, err)
	}
	if x.ep == epCtl {
		rd.checkControl(x)
		return
	}
	if x.ep == epIn {
		// Reported once per round (verify): a transport that copies a
		// whole bounce buffer would fail every transfer.
		for i := n; i < len(x.buf); i++ {
			if x.buf[i] != randFill {
				if rd.pastN.Add(1) == 1 {
					rd.pastNFirst = fmt.Sprintf("%v: N=%d err=%v, byte %d is %#02x", x, n, err, i, x.buf[i])
				}
				break
			}
		}
		return
	}
	assert.True(t, bytes.Equal(x.orig, x.buf), "%v: OUT buffer changed", x)
	if x.kind == usbsim.CmdEcho {
		// One short packet: all of it moved, or none.
		assert.True(t, n == 0 || n == len(x.buf), "%v: N=%d err=%v: part of one packet", x, n, err)
	}
}

// checkControl checks what control transfer x's completion left in its
// buffer: the setup packet, an OUT data stage, an IN data stage's bytes
// past N, and a successful answer.
func (rd *randRound) checkControl(x *rxfer) {
	t := rd.t
	su, _ := ParseSetup(x.orig)
	assert.Equal(t, x.orig[:SetupSize], x.buf[:SetupSize], "%v: setup packet changed", x)
	if !su.IsIn() {
		assert.True(t, bytes.Equal(x.orig, x.buf), "%v: OUT data stage changed", x)
	} else {
		for i := SetupSize + x.n; i < len(x.buf); i++ {
			if x.buf[i] != randFill {
				if rd.pastN.Add(1) == 1 {
					rd.pastNFirst = fmt.Sprintf("%v: N=%d err=%v, byte %d of the data stage is %#02x", x, x.n, x.err, i-SetupSize, x.buf[i])
				}
				break
			}
		}
	}
	if x.err != nil {
		return
	}
	data := x.buf[SetupSize : SetupSize+x.n]
	switch x.kind {
	case ctlStatus:
		e, err := usbsim.ParseEvent(data)
		if assert.NoError(t, err, "%v", x) {
			assert.Equal(t, usbsim.EventStatus, e.Kind, "%v", x)
		}
	case ctlNop:
		assert.Equal(t, int(su.Length), x.n, "%v: data stage bytes", x)
	case ctlDescriptor:
		if assert.Equal(t, 18, x.n, "%v", x) {
			assert.Equal(t, rd.gd.g.Config.VendorID, binary.LittleEndian.Uint16(data[8:]), "%v: idVendor", x)
		}
	case ctlUnknown:
		assert.Fail(t, "an unknown request succeeded", "%v: N=%d", x, x.n)
	}
}

// randomControl returns a random control transfer.
func randomControl(rng *rand.Rand, tok *ioring.Token) *rxfer {
	x := &rxfer{ep: epCtl, kind: byte(rng.IntN(ctlKinds)), tok: tok, deadline: 300*time.Millisecond + dur(rng, 1200*time.Millisecond)}
	var s Setup
	var data []byte
	switch x.kind {
	case ctlStatus:
		s = Setup{RequestType: RequestIn | RequestVendor | RecipientInterface, Request: usbsim.VendorStatus}
		data = make([]byte, usbsim.EventSize)
	case ctlNop:
		s = Setup{RequestType: RequestOut | RequestVendor | RecipientDevice, Request: usbsim.VendorCommand}
		data = nop(1 + rng.IntN(usbsim.ControlMaxData))
	case ctlDescriptor:
		s = Setup{RequestType: RequestIn, Request: 0x06, Value: 0x01 << 8}
		data = make([]byte, 18)
	case ctlUnknown:
		s = Setup{RequestType: RequestIn | RequestVendor | RecipientDevice, Request: 0x7e}
		data = make([]byte, 1+rng.IntN(64))
	}
	s.Length = uint16(len(data))
	x.buf = make([]byte, SetupSize+len(data))
	s.Put(x.buf)
	copy(x.buf[SetupSize:], data)
	return x
}

// echo returns a new echo command of size bytes (at most one short packet).
func (rt *randTest) echo(size int) (uint32, []byte) {
	id := rt.ids.Add(1)
	b := make([]byte, size)
	b[0] = usbsim.CmdEcho
	binary.LittleEndian.PutUint32(b[1:], id)
	binary.LittleEndian.PutUint16(b[5:], uint16(size))
	for i := 1 + echoHeader; i < size; i++ {
		b[i] = byte(uint32(i)*13 + id*101)
	}
	return id, b
}

// nop returns a nop command of size bytes. Each packet of it starts with
// CmdNop, so that a piece the device takes as a transfer of its own (after
// a hang or stall withdrew its read) is a nop too.
func nop(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		if i%randPacket != 0 {
			b[i] = byte(i*7 + size)
		}
	}
	return b
}

// randomOut returns a random OUT transfer: mostly echoes, some nops.
func (rd *randRound) randomOut(rng *rand.Rand, tok *ioring.Token, echo bool) *rxfer {
	x := &rxfer{ep: epOut, tok: tok, deadline: time.Second + dur(rng, 2*time.Second)}
	if echo {
		x.kind = usbsim.CmdEcho
		x.id, x.buf = rd.echo(1 + echoHeader + rng.IntN(randPacket-1-echoHeader))
		return x
	}
	x.kind = usbsim.CmdNop
	// Up to 2.5 times the device's MaxTransfer: the device takes a long
	// one in several reads, and a hang between them leaves the URB half
	// done.
	size := 1 + rng.IntN(randMaxTransfer*5/2)
	if rng.IntN(4) == 0 {
		size = randPacket * (1 + rng.IntN(80)) // ended by a zero-length packet
	}
	x.buf = nop(size)
	return x
}

// dur returns a random duration in [0, d).
func dur(rng *rand.Rand, d time.Duration) time.Duration {
	return time.Duration(rng.Int64N(int64(d)))
}

// randomIn returns a random bulk IN transfer.
func randomIn(rng *rand.Rand, tok *ioring.Token) *rxfer {
	return &rxfer{
		ep: epIn, tok: tok, buf: make([]byte, randPacket*(1+rng.IntN(8))),
		deadline: 300*time.Millisecond + dur(rng, 1200*time.Millisecond),
	}
}

// worker runs randOps operations on the round's endpoints, each one or two
// transfers in flight at once, under a token the canceler may cancel.
func (rd *randRound) worker(g, ops int, rng *rand.Rand) {
	var tok *ioring.Token
	for range ops {
		if rd.gone.Load() {
			return
		}
		if tok == nil || tok.Canceled() || rng.IntN(4) != 0 {
			tok = rd.gd.r.NewToken()
			rd.toks[g].Store(tok)
		}
		var xs []*rxfer
		switch p := rng.IntN(100); {
		case p < 55:
			xs = append(xs, rd.randomOut(rng, tok, true), randomIn(rng, tok))
		case p < 68:
			xs = append(xs, rd.randomOut(rng, tok, true))
		case p < 80:
			xs = append(xs, rd.randomOut(rng, tok, false))
		case p < 88:
			xs = append(xs, randomIn(rng, tok))
		case p < 94:
			xs = append(xs, randomControl(rng, tok))
		default:
			xs = append(xs, randomControl(rng, tok), randomIn(rng, tok))
		}
		accepted := xs[:0]
		for _, x := range xs {
			if !rd.submit(x) {
				break
			}
			accepted = append(accepted, x)
		}
		lost := false
		for _, x := range accepted {
			lost = !rd.wait(x) || lost
		}
		if lost {
			return
		}
		rd.ops.Add(1)
	}
}

// canceler cancels a random goroutine's current token every few
// milliseconds until stop is closed.
func (rd *randRound) canceler(rng *rand.Rand, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(dur(rng, 12*time.Millisecond)):
		}
		if tok := rd.toks[rng.IntN(randWorkers)].Load(); tok != nil {
			assert.NoError(rd.t, tok.Cancel(), "Token.Cancel")
			rd.cancels.Add(1)
		}
	}
}

// faults makes the gadget stall its bulk endpoints and hang at random
// until stop is closed, and unplug once the goroutines have done unplugAt
// operations (never if negative).
func (rd *randRound) faults(rng *rand.Rand, unplugAt int64, stop <-chan struct{}) {
	s := rd.gd.s
	defer s.Resume()
	pause := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for pause(10*time.Millisecond + dur(rng, 50*time.Millisecond)) {
		if unplugAt >= 0 && rd.ops.Load() >= unplugAt {
			if rng.IntN(2) == 0 {
				s.Hang()
				rd.faultLog = append(rd.faultLog, "hang")
			}
			rd.unplugging.Store(true)
			rd.faultLog = append(rd.faultLog, fmt.Sprintf("unplug@%d", rd.ops.Load()))
			assert.NoError(rd.t, s.Unplug(), "Unplug")
			return
		}
		switch rng.IntN(10) {
		case 0, 1:
			rd.stalled[epIn].Store(true)
			rd.faultLog = append(rd.faultLog, "stall-in")
			assert.NoError(rd.t, s.Stall(usbsim.AddrBulkIn), "Stall bulk IN")
		case 2:
			rd.stalled[epOut].Store(true)
			rd.faultLog = append(rd.faultLog, "stall-out")
			assert.NoError(rd.t, s.Stall(usbsim.AddrBulkOut), "Stall bulk OUT")
		case 3, 4:
			d := 5*time.Millisecond + dur(rng, 120*time.Millisecond)
			rd.faultLog = append(rd.faultLog, fmt.Sprintf("hang-%v", d.Round(time.Millisecond)))
			s.Hang()
			ok := pause(d)
			s.Resume()
			if !ok {
				return
			}
		}
	}
}

// doctor clears the halts the goroutines report, each once no transfer is
// pending on the endpoint, until rd.stalls is closed.
func (rd *randRound) doctor(done chan<- struct{}) {
	defer close(done)
	for ep := range rd.stalls {
		rd.clearHalt(ep)
	}
}

func (rd *randRound) clearHalt(ep int) {
	rd.gates[ep].Lock()
	err := rd.d.ClearHalt(rd.eps[ep].Desc().Address)
	rd.gates[ep].Unlock()
	rd.clears.Add(1)
	if !(errors.Is(err, ErrNoDevice) && rd.unplugging.Load()) {
		assert.NoError(rd.t, err, "ClearHalt of %s", epNames[ep])
	}
}

// run runs one round on the gadget's current Device and reports whether
// it unplugged the device.
func (rt *randTest) run(round int, unplug bool) bool {
	t := rt.t
	gd := rt.gd
	rd := &randRound{randTest: rt, d: gd.d, eps: [2]*Endpoint{gd.out, gd.in}, stalls: make(chan int, 16)}
	ops := randOps
	if testing.Short() {
		ops /= 4
	}
	rng := func(k uint64) *rand.Rand { return rand.New(rand.NewPCG(rt.seed, uint64(round)<<8|k)) }
	unplugAt := int64(-1)
	if unplug {
		total := int64(randWorkers * ops)
		unplugAt = total/8 + rng(100).Int64N(total*5/8)
	}
	t0 := time.Now()

	stop := make(chan struct{})
	doctorDone := make(chan struct{})
	go rd.doctor(doctorDone)
	var helpers sync.WaitGroup
	helpers.Add(2)
	go func() { defer helpers.Done(); rd.canceler(rng(101), stop) }()
	go func() { defer helpers.Done(); rd.faults(rng(102), unplugAt, stop) }()
	var workers sync.WaitGroup
	for g := range randWorkers {
		workers.Add(1)
		go func() { defer workers.Done(); rd.worker(g, ops, rng(uint64(g))) }()
	}
	workers.Wait()
	close(stop)
	helpers.Wait()
	close(rd.stalls)
	<-doctorDone
	rd.stalls = nil // the drain clears halts itself
	unplugged := rd.unplugging.Load()
	if !unplugged {
		rd.drain()
	}
	rd.verify(unplugged)

	var res []string
	for i, name := range resNames {
		if k := rd.results[i].Load(); k > 0 {
			res = append(res, fmt.Sprintf("%s=%d", name, k))
		}
	}
	t.Logf("round %d: %d ops in %v: %d OUT, %d IN, %d control transfers (%s; %d partial), %d cancels, %d clears; faults %v",
		round, rd.ops.Load(), time.Since(t0).Round(time.Millisecond), len(rd.xfers[epOut]), len(rd.xfers[epIn]), rd.controls.Load(),
		strings.Join(res, " "), rd.partial.Load(), rd.cancels.Load(), rd.clears.Load(), rd.faultLog)
	return unplugged
}

// drain sends a sentinel echo, after a one-byte nop that ends a transfer
// left open by a cut nop, and reads bulk IN until the sentinel comes back:
// all the round's echoes are in then. The faults have stopped; halts they
// left are cleared.
func (rd *randRound) drain() {
	t := rd.t
	tok := rd.gd.r.NewToken() // never canceled
	send := func(x *rxfer) {
		for range 4 {
			if !rd.submit(x) || !rd.wait(x) {
				return
			}
			if !errors.Is(x.err, ErrStall) {
				require.NoError(t, x.err, "drain: %v", x)
				require.Equal(t, len(x.buf), x.n, "drain: %v", x)
				return
			}
			rd.clearHalt(epOut)
			x = &rxfer{ep: x.ep, kind: x.kind, id: x.id, buf: x.buf, tok: x.tok, deadline: x.deadline}
		}
		t.Fatalf("drain: %v stalls again and again", x)
	}
	send(&rxfer{ep: epOut, kind: usbsim.CmdNop, buf: []byte{usbsim.CmdNop}, tok: tok, deadline: Patience})
	id, cmd := rd.echo(64)
	send(&rxfer{ep: epOut, kind: usbsim.CmdEcho, id: id, buf: cmd, tok: tok, deadline: Patience})
	deadline := time.Now().Add(2 * Patience)
	for time.Now().Before(deadline) {
		x := &rxfer{ep: epIn, tok: tok, buf: make([]byte, randPacket), deadline: time.Second}
		if !rd.submit(x) || !rd.wait(x) {
			return
		}
		switch {
		case errors.Is(x.err, ErrStall):
			rd.clearHalt(epIn)
		case x.err == nil && bytes.Equal(x.buf[:x.n], cmd[1:]):
			return
		}
	}
	t.Errorf("drain: sentinel echo %d did not come back within %v", id, 2*Patience)
}

// verify matches the bulk IN stream against the echoes the OUT transfers
// delivered (see the file comment). After an unplug the stream may end
// early.
func (rd *randRound) verify(unplugged bool) {
	t := rd.t
	type item struct {
		x        *rxfer
		optional bool
	}
	var want []item
	// open: the device's bulk OUT transfer has not ended: the last packet it
	// took was a whole one of a nop that stopped there (canceled, timed out,
	// or not known to have sent its zero-length packet). The commands up to
	// the next short packet join it, and so does an echo, unless a hang or
	// stall withdrew the device's read meanwhile (the rest then starts a
	// transfer of its own): such an echo may or may not come back.
	open := false
	for _, x := range rd.xfers[epOut] {
		switch {
		case x.n == 0: // no packet moved
		case x.kind == usbsim.CmdEcho:
			want = append(want, item{x, open})
			open = false
		default:
			open = x.n%randPacket == 0 && !(x.n == len(x.buf) && x.err == nil)
		}
	}
	assert.Zero(t, rd.pastN.Load(), "IN transfers that wrote into their buffer past N; the first: %s", rd.pastNFirst)
	var got []byte
	for _, x := range rd.xfers[epIn] {
		got = append(got, x.buf[:x.n]...)
	}
	pos, skipped := 0, 0
	for i, it := range want {
		data := it.x.buf[1:it.x.n]
		if bytes.HasPrefix(got[pos:], data) {
			pos += len(data)
			continue
		}
		if it.optional {
			skipped++
			continue
		}
		if unplugged {
			t.Logf("verify: the stream ends before echo %d of %d (the unplug dropped the rest)", i, len(want))
			break
		}
		assert.Fail(t, "echo missing from the bulk IN stream",
			"%v (N=%d err=%v), %d of %d echoes: at stream offset %d of %d the host has %s (seed %d)",
			it.x, it.x.n, it.x.err, i, len(want), pos, len(got), describe(got[pos:]), rd.seed)
		return
	}
	assert.Equal(t, len(got), pos, "bulk IN bytes past the echoes: %s (seed %d)", describe(got[pos:]), rd.seed)
	t.Logf("verify: %d echoes (%d optional ones missing), %d bulk IN bytes", len(want), skipped, len(got))
}

// describe says what starts b: an echo's header and the first bytes.
func describe(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	s := fmt.Sprintf("% x", b[:min(len(b), 16)])
	if len(b) >= echoHeader {
		s = fmt.Sprintf("id %d len %d: %s", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]), s)
	}
	return fmt.Sprintf("%d bytes, %s", len(b), s)
}

// closeDevice closes d, which must finish within patience; then no usbfs
// mapping may be left.
func (rt *randTest) closeDevice(d *Device, unplugged bool) {
	t := rt.t
	done := make(chan error, 1)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		if !(unplugged && errors.Is(err, ErrNoDevice)) {
			assert.NoError(t, err, "Device.Close")
		}
	case <-time.After(Patience):
		t.Fatalf("Device.Close did not return within %v (seed %d)", Patience, rt.seed)
	}
	usbMaps, _ := countMaps(t)
	assert.Equal(t, rt.usbMaps, usbMaps, "mappings of usbfs nodes after Device.Close")
}

func TestGadgetRandom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, backend string) {
		seed := RandSeed(t)
		t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
		ignore := goleak.IgnoreCurrent()
		usbMaps, uringMaps := countMaps(t)
		t.Cleanup(func() {
			// Runs last: the gadget, scanner, ring and Devices are closed.
			goleak.VerifyNone(t, ignore)
			u, r := countMaps(t)
			assert.Equal(t, usbMaps, u, "mappings of usbfs nodes before and after")
			assert.Equal(t, uringMaps, r, "mappings of io_uring rings before and after")
		})
		t0 := time.Now()
		gd := newGadgetDev(t, backend, usbsim.Config{MaxTransfer: randMaxTransfer})
		require.Equal(t, randPacket, gd.in.Desc().MaxPacketSize, "bulk IN wMaxPacketSize")
		require.Equal(t, randPacket, gd.out.Desc().MaxPacketSize, "bulk OUT wMaxPacketSize")
		rt := &randTest{t: t, seed: seed, gd: gd, usbMaps: usbMaps}

		stopReap, reaped := make(chan struct{}), make(chan struct{})
		go rt.reap(stopReap, reaped)
		defer func() { // also when a require fails: no goroutine left behind
			select {
			case <-stopReap:
			default:
				close(stopReap)
			}
			<-reaped
		}()

		unplugs, plugged := 0, true
		for round := range randRounds {
			if !plugged {
				gd.replug(t)
				gd.echo(t, "replugged")
				plugged = true
			}
			if rt.run(round, round%2 == 1) {
				unplugs++
				plugged = false
				rt.closeDevice(gd.d, true)
			}
		}
		if plugged {
			rt.closeDevice(gd.d, false)
		}
		close(stopReap)
		<-reaped
		AssertSettled(t, gd.r, "ring requests in flight after Device.Close")
		var cs [4]ioring.Completion
		n, err := gd.r.Reap(cs[:], Quiet)
		require.NoError(t, err)
		assert.Zero(t, n, "completions after the last: %v", cs[:n])
		for _, x := range rt.all {
			assert.EqualValues(t, 1, x.count.Load(), "completions of %v", x)
		}
		t.Logf("%s: %d transfers, %d unplugs, %v", backend, len(rt.all), unplugs, time.Since(t0).Round(time.Millisecond))
	})
}
