//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv6Prog is one round's random program, the same on both backends.
type adv6Prog struct {
	round  int
	tcp    bool
	swap   bool // TCP: the accepted end sends
	chunks []int
	pauses []time.Duration
	total  int
	close  bool          // the peer closes its end (else SHUT_WR)
	endAt  string        // before, pending, b2b, late
	late   time.Duration // endAt late: after the last write

	modes    []string // the receiver's units: recv, read, mshot, wait (mixed when several)
	depth    int      // reads at -1 in flight at once
	rbuf     int      // a single-shot receive's buffer
	rings    [][2]int // BufRings: count, size
	release  string   // now, delay (each buffer held a random while), batch
	hold     time.Duration
	batch    int
	deadline time.Duration // every request's (0: none)
	waitTO   time.Duration // a Wait's context ends after this (0: never)
	ctx      string        // "", cancel, deadline: a context bound to the tokens
	ctxAfter time.Duration
	events   []adv6Event // cancels
	after    string      // after a cancel of the caller's: continue, stop
	private  bool        // the round closes its own ring
}

type adv6Event struct {
	kind string // req, tok, all, close
	at   time.Duration
}

func (p *adv6Prog) String() string {
	return fmt.Sprintf("round %d: tcp=%v chunks=%v pauses=%v total=%d close=%v end=%s/%v modes=%v depth=%d rbuf=%d rings=%v release=%s/%v/%d deadline=%v waitTO=%v ctx=%s/%v events=%v after=%s",
		p.round, p.tcp, p.chunks, p.pauses, p.total, p.close, p.endAt, p.late, p.modes, p.depth, p.rbuf, p.rings, p.release, p.hold, p.batch,
		p.deadline, p.waitTO, p.ctx, p.ctxAfter, p.events, p.after)
}

// canceling reports whether the program cancels anything of its own
// accord (deadlines aside, which the receiver survives).
func (p *adv6Prog) canceling() bool { return len(p.events) > 0 || p.ctx != "" }

// adv6Size picks a size from 1 to limit, log-uniform.
func adv6Size(rng *rand.Rand, limit int) int {
	bits := rng.IntN(17) // 1 .. 64 KiB
	n := 1 << bits
	n += rng.IntN(n)
	return max(1, min(n, limit))
}

func adv6Pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// adv6Gen makes round's program.
func adv6Gen(seed uint64, round int) *adv6Prog {
	rng := adv6Rand(seed, round)
	p := &adv6Prog{round: round, tcp: rng.IntN(3) == 0}
	p.swap = p.tcp && rng.IntN(2) == 0
	p.endAt = adv6Pick(rng, "before", "pending", "b2b", "late")
	limit := 1 << 20
	if p.endAt == "before" {
		limit = 96 << 10 // fits the socket's buffers: the peer need not wait
	}
	for n := 1 + rng.IntN(10); n > 0 && p.total < limit; n-- {
		c := min(adv6Size(rng, 64<<10), limit-p.total)
		p.chunks = append(p.chunks, c)
		var d time.Duration
		if p.endAt != "before" && rng.IntN(3) == 0 {
			d = time.Duration(rng.IntN(3000)) * time.Microsecond
		}
		p.pauses = append(p.pauses, d)
		p.total += c
	}
	p.close = rng.IntN(3) == 0
	if p.endAt == "late" {
		p.late = time.Duration(rng.IntN(5000)) * time.Microsecond
	}
	all := []string{"recv", "read", "mshot", "wait"}
	switch k := rng.IntN(6); {
	case k < 4:
		p.modes = []string{all[k]}
	default:
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		p.modes = all[:2+rng.IntN(3)]
	}
	p.depth = 1 + rng.IntN(4)
	p.rbuf = max(adv6Size(rng, 64<<10), p.total/4000)
	for n := 1 + rng.IntN(2); n > 0; n-- {
		count := 1 << rng.IntN(8)
		size := adv6Size(rng, 16<<10)
		size = max(size, p.total/8000) // not too many results
		p.rings = append(p.rings, [2]int{count, size})
	}
	p.release = adv6Pick(rng, "now", "delay", "batch")
	p.hold = time.Duration(rng.IntN(3000)) * time.Microsecond
	p.batch = 1 + rng.IntN(8)
	if rng.IntN(4) == 0 {
		p.deadline = time.Duration(1+rng.IntN(30)) * time.Millisecond
	}
	if rng.IntN(3) == 0 {
		p.waitTO = time.Duration(1+rng.IntN(30)) * time.Millisecond
	}
	switch rng.IntN(8) {
	case 0:
		p.ctx = "cancel"
	case 1:
		p.ctx = "deadline"
	}
	p.ctxAfter = time.Duration(rng.IntN(20000)) * time.Microsecond
	if rng.IntN(2) == 0 {
		for n := 1 + rng.IntN(3); n > 0; n-- {
			ev := adv6Event{kind: adv6Pick(rng, "req", "req", "tok", "all", "close")}
			if rng.IntN(4) > 0 {
				ev.at = time.Duration(rng.IntN(20000)) * time.Microsecond
			}
			if ev.kind == "close" {
				p.private = true
			}
			p.events = append(p.events, ev)
		}
	}
	p.after = adv6Pick(rng, "continue", "stop")
	return p
}

// adv6Tok is a token of the receiver's, and whether the canceler canceled
// it (marked before it does).
type adv6Tok struct {
	t        *Token
	canceled atomic.Bool
	stop     func() bool // its Bind to the round's context
	probed   bool        // a request was submitted after its cancel
}

// adv6Req is one request of a round.
type adv6Req struct {
	q        Request
	id       int
	kind     string // recv, read, mshot, wait, probe
	buf      []byte
	br       *BufRing
	tok      *adv6Tok
	deadline bool
	waitCtx  bool  // a Wait's context with a timeout
	allDone  int64 // CancelAlls that had returned at its submission
	results  int   // results with More set
	done     bool
	final    Completion

	// Set by the canceler under rx.mu.
	cancelTried bool
	cancelOK    bool // a Request.Cancel returned nil
}

// adv6Rx runs the receiving side of a round.
type adv6Rx struct {
	t    *testing.T
	p    *adv6Prog
	r    *Ring
	fd   int
	key  uint32
	rng  *rand.Rand
	brs  []*BufRing
	errs adv6Errs

	mu  sync.Mutex // guards cur, tok and the requests' cancel marks
	cur map[Request]*adv6Req
	tok *adv6Tok

	allStarted, allDone atomic.Int64
	closeStarted        atomic.Bool
	ctx                 context.Context
	ctxCancel           context.CancelFunc

	all        map[Request]*adv6Req
	reqs       []*adv6Req
	toks       []*adv6Tok
	nextID     int
	got        int // bytes delivered by the ring, all checked
	drained    int // bytes read directly afterwards
	eofs       int // end-of-stream reports
	eofAt      int // got at the first
	stopped    bool
	why        string // why it stopped
	failed     bool
	held       []adv6Held
	gate       chan struct{}
	gateClosed bool
	nSubmitted int
	nCanceled  int
	nTimedOut  int
	tally      map[string]int
}

type adv6Held struct {
	br *BufRing
	id uint16
	at time.Time
}

// fail reports a broken promise with the round's state, once per round
// (what follows a first failure is noise), and aborts the round.
func (x *adv6Rx) fail(format string, args ...any) {
	x.t.Helper()
	if !x.failed {
		x.t.Errorf("%s: %s\n%s", x.r.Backend().Backend, fmt.Sprintf(format, args...), x.dump())
	}
	x.failed = true
}

func (x *adv6Rx) dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %v\n  got %d (eofs %d at %d), drained %d, stopped %v (%s), submitted %d, in flight %d, stats %+v\n",
		x.p, x.got, x.eofs, x.eofAt, x.drained, x.stopped, x.why, x.nSubmitted, x.r.InFlight(), x.r.Stats())
	if n, err := unix.IoctlGetInt(x.fd, unix.SIOCINQ); err == nil {
		fmt.Fprintf(&b, "  bytes waiting in the socket: %d\n", n)
	}
	fmt.Fprintf(&b, "  cancels: all %d/%d, close %v, ctx %v\n", x.allStarted.Load(), x.allDone.Load(), x.closeStarted.Load(), x.ctx.Err())
	x.mu.Lock() // the canceler may still be marking requests
	defer x.mu.Unlock()
	for _, rq := range x.reqs {
		st := "pending"
		if rq.done {
			st = "final " + adv6Outcome(rq.final)
		}
		fmt.Fprintf(&b, "  req %d %s: %d results, %s, Pending()=%v, cancel tried %v ok %v, deadline %v\n",
			rq.id, rq.kind, rq.results, st, rq.q.Pending(), rq.cancelTried, rq.cancelOK, rq.deadline)
	}
	return b.String()
}

// data checks a piece the ring delivered: it continues the stream where
// the last one ended.
func (x *adv6Rx) data(b []byte, what string) {
	if len(b) == 0 {
		return
	}
	if x.eofs > 0 {
		x.fail("%s: %d bytes after the end of the stream was reported", what, len(b))
		return
	}
	if x.got+len(b) > x.p.total {
		x.fail("%s: %d bytes at %d: more than the %d the peer writes (%s)", what, len(b), x.got, x.p.total, adv6Where(x.key, b, x.p.total))
		return
	}
	for i, c := range b {
		if w := adv6Byte(x.key, x.got+i); c != w {
			x.fail("%s: byte %d of the stream is %#x, want %#x: the piece of %d bytes delivered at %d is %s",
				what, x.got+i, c, w, len(b), x.got, adv6Where(x.key, b, x.p.total))
			return
		}
	}
	x.got += len(b)
}

// op makes a request of kind for the current unit.
func (x *adv6Rx) op(kind string, rq *adv6Req) Op {
	var op Op
	switch kind {
	case "recv", "wait", "probe":
		rq.buf = make([]byte, x.p.rbuf)
		op = Recv(x.fd, rq.buf, 0)
	case "read":
		rq.buf = make([]byte, x.p.rbuf)
		op = Read(x.fd, rq.buf, -1)
	case "mshot":
		rq.br = x.brs[x.rng.IntN(len(x.brs))]
		op = RecvMultishot(x.fd, rq.br, 0)
	}
	if x.p.deadline > 0 && kind != "wait" {
		op = op.WithDeadline(x.p.deadline)
		rq.deadline = true
	}
	x.mu.Lock()
	rq.tok = x.tok
	x.mu.Unlock()
	return op.WithToken(rq.tok.t).WithUser(rq.id)
}

// newReq records a request about to be submitted.
func (x *adv6Rx) newReq(kind string) *adv6Req {
	x.nextID++
	return &adv6Req{id: x.nextID, kind: kind, allDone: x.allDone.Load()}
}

// accepted records a submitted request.
func (x *adv6Rx) accepted(rq *adv6Req) {
	x.nSubmitted++
	x.all[rq.q] = rq
	x.reqs = append(x.reqs, rq)
	x.mu.Lock()
	x.cur[rq.q] = rq
	x.mu.Unlock()
}

// submitErr handles a refused submission: only a closed ring may refuse.
func (x *adv6Rx) submitErr(err error) {
	if errors.Is(err, ErrClosed) && x.closeStarted.Load() {
		x.stop("ring closed")
		return
	}
	if errors.Is(err, ErrInvalid) && strings.Contains(err.Error(), "closed BufRing") && x.closeStarted.Load() {
		// Close closed the BufRing: refused as bad input, not as
		// ErrClosed (TestAdv6SubmitAfterCloseSaysClosed holds it to the
		// contract); here it only ends the round.
		x.tally["refused after Close: closed BufRing"]++
		x.stop("ring closed")
		return
	}
	x.fail("submit: %v", err)
}

func (x *adv6Rx) stop(why string) {
	if x.stopped {
		return
	}
	x.stopped, x.why = true, why
	// What is still in flight is canceled by the caller too; its data,
	// if it wins, must still fit.
	x.mu.Lock()
	var qs []*adv6Req
	for _, rq := range x.cur {
		rq.cancelTried = true
		qs = append(qs, rq)
	}
	x.mu.Unlock()
	for _, rq := range qs {
		err := rq.q.Cancel()
		x.mu.Lock()
		rq.cancelOK = rq.cancelOK || err == nil
		x.mu.Unlock()
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
			x.fail("Request.Cancel: %v", err)
		}
	}
}

// startUnit submits the next unit of receives. wait runs whole here.
func (x *adv6Rx) startUnit() {
	kind := x.p.modes[x.rng.IntN(len(x.p.modes))]
	switch kind {
	case "read":
		ops := make([]Op, x.p.depth)
		rqs := make([]*adv6Req, x.p.depth)
		for i := range ops {
			rqs[i] = x.newReq(kind)
			ops[i] = x.op(kind, rqs[i])
		}
		qs := make([]Request, len(ops))
		n, err := x.r.SubmitBatch(ops, qs)
		for i := range n {
			rqs[i].q = qs[i]
			x.accepted(rqs[i])
		}
		if err != nil {
			x.submitErr(err)
		}
	case "wait":
		rq := x.newReq(kind)
		op := x.op(kind, rq)
		q, err := x.r.Start(op)
		if err != nil {
			x.submitErr(err)
			return
		}
		rq.q = q
		x.accepted(rq)
		ctx, cancel := adv6Ctx(x.p.waitTO)
		rq.waitCtx = x.p.waitTO > 0
		x.maybeGate()
		c, err := q.Wait(ctx)
		cancel()
		if err != nil {
			x.fail("Wait: %v", err)
			return
		}
		x.complete(c)
	default:
		rq := x.newReq(kind)
		op := x.op(kind, rq)
		q, err := x.r.Submit(op)
		if err != nil {
			if kind == "mshot" && errors.Is(err, ErrNotSupported) {
				x.t.Skipf("no multishot receive: %v", err)
			}
			x.submitErr(err)
			return
		}
		rq.q = q
		x.accepted(rq)
	}
}

// maybeGate lets the peer end the stream once every byte has been
// delivered and a receive waits (endAt pending).
func (x *adv6Rx) maybeGate() {
	if !x.gateClosed && x.got == x.p.total && len(x.cur) > 0 {
		x.gateClosed = true
		close(x.gate)
	}
}

// releaseDue gives back the buffers whose time has come (all of them
// when all is set).
func (x *adv6Rx) releaseDue(all bool) {
	now := time.Now()
	keep := x.held[:0]
	for i, h := range x.held {
		due := all
		switch x.p.release {
		case "now":
			due = true
		case "delay":
			due = due || !now.Before(h.at)
		case "batch":
			due = due || len(x.held)-i > x.p.batch || len(x.held) >= h.br.Count()
		}
		if !due {
			keep = append(keep, h)
			continue
		}
		if err := h.br.Release(h.id); err != nil && !(errors.Is(err, ErrClosed) && x.closeStarted.Load()) {
			x.fail("Release(%d): %v", h.id, err)
		}
	}
	x.held = keep
}

// complete takes one completion.
func (x *adv6Rx) complete(c Completion) {
	rq := x.all[c.Req]
	if rq == nil {
		x.fail("a completion of no request of the round's: %+v", c)
		return
	}
	if rq.done {
		x.fail("req %d: a completion after its final one (%s): %+v", rq.id, adv6Outcome(rq.final), c)
		return
	}
	if c.User != rq.id {
		x.fail("req %d: completion with user %v", rq.id, c.User)
	}
	what := fmt.Sprintf("req %d (%s)", rq.id, rq.kind)
	if rq.kind == "mshot" {
		if c.Buffer {
			if c.N <= 0 || c.N > rq.br.Size() {
				x.fail("%s: a buffer with %d bytes: %+v", what, c.N, c)
			}
			x.data(rq.br.Bytes(c), what)
			x.held = append(x.held, adv6Held{rq.br, c.BufID, time.Now().Add(time.Duration(x.rng.Int64N(int64(x.p.hold) + 1)))})
		} else if c.More {
			x.fail("%s: a result with More and no buffer: %+v", what, c)
		}
		if c.More {
			if c.Err != nil {
				x.fail("%s: a result with More and an error: %+v", what, c)
			}
			rq.results++
			return
		}
	} else {
		if c.More || c.Buffer {
			x.fail("%s: a single-shot completion with More or Buffer: %+v", what, c)
		}
		if c.N > 0 {
			if c.Err != nil {
				x.fail("%s: %d bytes and an error: %+v", what, c.N, c)
			}
			x.data(rq.buf[:c.N], what)
		}
	}
	rq.done, rq.final = true, c
	x.mu.Lock()
	delete(x.cur, c.Req)
	// The canceler marks cancelOK once its Cancel has returned, which
	// may be after this completion arrived: read it under x.mu.
	cancelOK := rq.cancelOK
	x.mu.Unlock()
	if c.Err != nil || c.N == 0 || rq.kind == "mshot" {
		x.tally[rq.kind+":"+adv6Outcome(c)]++
	}
	switch {
	case c.Err == nil && c.N == 0 && !c.Buffer:
		if x.eofs == 0 {
			x.eofAt = x.got
			if x.got != x.p.total {
				x.fail("%s: the end of the stream after %d of %d bytes", what, x.got, x.p.total)
			}
		}
		x.eofs++
		if rq.kind == "mshot" && cancelOK {
			x.tally["mshot canceled, the end won"]++
		}
	case c.Err == nil:
		if rq.kind == "mshot" {
			x.tally["mshot final with data"]++ // ended with a buffer: go on
		}
	case errors.Is(c.Err, ErrOverrun):
		// The ring ended it (the consumer fell behind): submit again.
	case errors.Is(c.Err, ErrTimeout):
		x.nTimedOut++
		if c.N != 0 || c.Buffer {
			x.fail("%s: a timeout with data: %+v", what, c)
		}
		if !rq.deadline && !rq.waitCtx {
			if x.p.ctx != "deadline" || !errors.Is(c.Err, context.DeadlineExceeded) {
				x.fail("%s: ErrTimeout with no deadline of its own nor the round context's: %v", what, c.Err)
			}
			x.stop("the round's context expired")
		}
		if rq.kind == "mshot" && rq.results > 0 {
			x.tally["mshot timed out after results"]++
		}
	case errors.Is(c.Err, ErrCanceled):
		x.nCanceled++
		if c.N != 0 || c.Buffer {
			x.fail("%s: a cancel with data: %+v", what, c)
		}
		if rq.kind == "mshot" && cancelOK {
			x.tally["mshot canceled, the cancel won"]++
		}
		x.canceled(rq)
	case errors.Is(c.Err, unix.ENOBUFS) && rq.kind == "mshot":
		x.releaseDue(true) // every buffer back before the next receive
	default:
		x.fail("%s: unexpected final completion %+v", what, c)
	}
}

// canceled decides what follows a request canceled by the caller.
func (x *adv6Rx) canceled(rq *adv6Req) {
	switch {
	case x.closeStarted.Load():
		x.stop("ring closed")
	case x.ctx.Err() != nil:
		x.stop("the round's context ended")
	case rq.kind == "probe":
	case rq.tok.canceled.Load():
		if x.p.after == "stop" {
			x.stop("token canceled")
			return
		}
		// A canceled token covers the future too: one request submitted
		// with it completes with ErrCanceled without reaching the kernel
		// (checked at the end of the round), then a new token.
		if !rq.tok.probed {
			rq.tok.probed = true
			p := x.newReq("probe")
			op := x.op("probe", p)
			p.tok = rq.tok
			q, err := x.r.Submit(op.WithToken(rq.tok.t))
			if err != nil {
				x.submitErr(err)
				return
			}
			p.q = q
			x.accepted(p)
		}
		x.newToken()
	case x.p.after == "stop":
		x.stop("request canceled")
	}
}

// newToken makes the token the next requests go with, bound to the
// round's context.
func (x *adv6Rx) newToken() {
	tk := &adv6Tok{t: x.r.NewToken()}
	if x.p.ctx != "" {
		tk.stop = tk.t.Bind(x.ctx)
	}
	x.toks = append(x.toks, tk)
	x.mu.Lock()
	x.tok = tk
	x.mu.Unlock()
}

// cancelLoop runs the program's cancels at their times, until done.
func (x *adv6Rx) cancelLoop(start time.Time, done <-chan struct{}, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 77))
	evs := append([]adv6Event(nil), x.p.events...)
	if x.p.ctx == "cancel" {
		evs = append(evs, adv6Event{kind: "ctx", at: x.p.ctxAfter})
	}
	for len(evs) > 0 {
		i := 0
		for j := range evs {
			if evs[j].at < evs[i].at {
				i = j
			}
		}
		ev := evs[i]
		evs = append(evs[:i], evs[i+1:]...)
		tm := time.NewTimer(time.Until(start.Add(ev.at)))
		select {
		case <-done:
			tm.Stop()
			return
		case <-tm.C:
		}
		switch ev.kind {
		case "req":
			x.mu.Lock()
			var pick *adv6Req
			n := 0
			for _, rq := range x.cur {
				if n++; rng.IntN(n) == 0 {
					pick = rq
				}
			}
			if pick != nil {
				pick.cancelTried = true
			}
			x.mu.Unlock()
			if pick == nil {
				continue
			}
			err := pick.q.Cancel()
			x.mu.Lock()
			pick.cancelOK = pick.cancelOK || err == nil
			x.mu.Unlock()
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
				x.errs.add("Request.Cancel: %v", err)
			}
		case "tok":
			x.mu.Lock()
			tk := x.tok
			tk.canceled.Store(true)
			x.mu.Unlock()
			if err := tk.t.Cancel(); err != nil && !errors.Is(err, ErrClosed) {
				x.errs.add("Token.Cancel: %v", err)
			}
		case "all":
			x.allStarted.Add(1)
			if err := x.r.CancelAll(); err != nil && !errors.Is(err, ErrClosed) {
				x.errs.add("CancelAll: %v", err)
			}
			x.allDone.Add(1)
		case "close":
			x.closeStarted.Store(true)
			if err := x.r.Close(); err != nil && !errors.Is(err, ErrClosed) {
				x.errs.add("Close: %v", err)
			}
		case "ctx":
			x.ctxCancel()
		}
	}
}

// adv6Summary is what a round ended with, compared across backends.
type adv6Summary struct {
	got, drained, total int
	eof                 bool
	finals              string
}

// adv6Round runs p on a ring of backend be (r, or a ring of its own when
// the program closes it).
func adv6Round(t *testing.T, r *Ring, seed uint64, p *adv6Prog, tally *adv6Tally) adv6Summary {
	if p.private {
		var err error
		r, err = New(Config{Entries: 64, Backend: r.Backend().Backend})
		require.NoError(t, err)
		defer r.Close()
	}
	x := &adv6Rx{
		t: t, p: p, r: r, rng: adv6Rand(seed^0x5eed, p.round),
		key:   uint32(seed) ^ uint32(p.round)*0x2545F491,
		cur:   map[Request]*adv6Req{},
		all:   map[Request]*adv6Req{},
		gate:  make(chan struct{}),
		tally: map[string]int{},
	}
	if p.ctx == "deadline" {
		x.ctx, x.ctxCancel = context.WithTimeout(context.Background(), p.ctxAfter)
	} else {
		x.ctx, x.ctxCancel = context.WithCancel(context.Background())
	}
	defer x.ctxCancel()
	before := r.Stats()
	for _, cs := range p.rings {
		br, err := r.NewBufRing(cs[0], cs[1])
		if err != nil {
			require.ErrorIs(t, err, ErrNotSupported)
			t.Skipf("no provided-buffer rings: %v", err)
		}
		x.brs = append(x.brs, br)
	}
	rx, tx := adv6Conn(t, p.tcp, p.swap)
	x.fd = rx
	defer unix.Close(rx)
	peer := &adv6Peer{fd: tx, key: x.key, chunks: p.chunks, pauses: p.pauses, close: p.close,
		ended: make(chan struct{}), done: make(chan error, 1)}
	endNow := make(chan struct{})
	quit := make(chan struct{})
	go peer.run(endNow, quit)
	peerJoined := false
	defer func() {
		if !peerJoined {
			// Aborted: unblock the peer's writes and let it go.
			unix.Shutdown(rx, unix.SHUT_RDWR)
			close(quit)
			<-peer.done
		}
	}()
	// The peer ends the stream at once (before, b2b), after a while
	// (late), or once every byte is in and a receive waits (pending).
	switch p.endAt {
	case "pending":
		go func() {
			select {
			case <-x.gate:
			case <-quit:
			}
			close(endNow)
		}()
	case "late":
		go func() {
			for peer.wrote.Load() < int64(p.total) {
				select {
				case <-quit:
					close(endNow)
					return
				case <-time.After(200 * time.Microsecond):
				}
			}
			time.Sleep(p.late)
			close(endNow)
		}()
	default:
		close(endNow)
	}
	if p.endAt == "before" {
		select {
		case <-peer.ended:
		case <-time.After(3 * time.Second):
			t.Logf("round %d: the peer did not end within 3s, before the first receive (%d of %d bytes written)", p.round, peer.wrote.Load(), p.total)
		}
	}
	x.newToken()
	start := time.Now()
	cdone := make(chan struct{})
	cjoined := make(chan struct{})
	go func() {
		defer close(cjoined)
		x.cancelLoop(start, cdone, seed^uint64(p.round))
	}()

	x.receive()
	close(cdone)
	<-cjoined
	for _, e := range x.errs.take() {
		x.fail("%s", e)
	}
	if !x.gateClosed {
		x.gateClosed = true
		close(x.gate)
	}
	// The rest of the stream, read directly: it goes on where the ring
	// stopped.
	if x.eofs == 0 && !x.failed {
		rest, err := adv6Drain(rx)
		x.drained = len(rest)
		got := x.got
		x.data(rest, "drained directly")
		x.got = got
		if err != nil {
			x.fail("drain: %v", err)
		} else if got+len(rest) != p.total {
			x.fail("the ring delivered %d bytes and %d were left in the socket: %d, the peer wrote %d", got, len(rest), got+len(rest), p.total)
		}
	}
	close(quit)
	select {
	case err := <-peer.done:
		peerJoined = true
		if err != nil && !x.failed {
			x.fail("peer: %v", err)
		}
	case <-time.After(adv6Hang):
		x.fail("the peer did not finish within %v (wrote %d)", adv6Hang, peer.wrote.Load())
	}
	for _, tk := range x.toks {
		if tk.stop != nil {
			tk.stop()
		}
	}
	x.releaseDue(true)
	for _, br := range x.brs {
		if err := br.Close(); err != nil && !(errors.Is(err, ErrClosed) && p.private) {
			x.fail("BufRing.Close: %v", err)
		}
	}
	x.checkEnd(before)
	for k, n := range x.tally {
		tally.add(k, n)
	}
	var finals []string
	for _, rq := range x.reqs {
		o := "none"
		if rq.done {
			o = adv6Outcome(rq.final)
		}
		finals = append(finals, rq.kind+":"+o)
	}
	return adv6Summary{got: x.got, drained: x.drained, total: p.total, eof: x.eofs > 0, finals: strings.Join(finals, " ")}
}

// receive runs the receiver until it has seen the end of the stream, or
// stopped, and every request it submitted has completed.
func (x *adv6Rx) receive() {
	end := time.Now().Add(adv6Hang)
	var cs [8]Completion
	for !x.failed {
		if x.p.ctx != "" && x.ctx.Err() != nil {
			x.stop("the round's context ended")
		}
		if x.nSubmitted > 100000 {
			x.fail("runaway round: %d requests", x.nSubmitted)
			break
		}
		if !x.stopped && x.eofs == 0 && len(x.cur) == 0 && !x.closeStarted.Load() {
			x.startUnit()
			continue
		}
		x.mu.Lock()
		n := len(x.cur)
		x.mu.Unlock()
		if n == 0 {
			if x.eofs > 0 || x.stopped || x.closeStarted.Load() {
				return
			}
			continue
		}
		x.maybeGate()
		wait := 20 * time.Millisecond
		if len(x.held) > 0 {
			wait = 200 * time.Microsecond
		}
		k, err := x.r.Reap(cs[:], wait)
		if err != nil {
			if errors.Is(err, ErrClosed) && x.closeStarted.Load() {
				x.fail("Reap says ErrClosed while %d requests have not completed: Close drains", n)
				return
			}
			x.fail("Reap: %v", err)
			return
		}
		for _, c := range cs[:k] {
			x.complete(c)
		}
		x.releaseDue(false)
		if x.ctx.Err() != nil && x.p.ctx != "" {
			x.stop("the round's context ended")
		}
		if time.Now().After(end) {
			x.fail("round still running after %v", adv6Hang)
			x.abort()
			return
		}
	}
	x.abort()
}

// abort ends a failed round: everything canceled and reaped (within
// adv6Hang), so that the fds can be closed under no request.
func (x *adv6Rx) abort() {
	x.r.CancelAll()
	var cs [8]Completion
	end := time.Now().Add(adv6Hang)
	for x.r.InFlight() > 0 && time.Now().Before(end) {
		k, err := x.r.Reap(cs[:], 100*time.Millisecond)
		if err != nil {
			break
		}
		for _, c := range cs[:k] {
			if rq := x.all[c.Req]; rq != nil && c.Buffer {
				rq.br.Release(c.BufID)
			}
		}
	}
	if n := x.r.InFlight(); n > 0 {
		x.t.Errorf("aborted round: %d requests still in flight %v after CancelAll", n, adv6Hang)
	}
}

// checkEnd checks the round's requests and the ring's counters.
func (x *adv6Rx) checkEnd(before Stats) {
	if x.failed {
		return
	}
	closed := x.closeStarted.Load()
	for _, rq := range x.reqs {
		if !rq.done {
			x.fail("req %d (%s): no final completion", rq.id, rq.kind)
			continue
		}
		err := rq.final.Err
		if rq.kind == "probe" {
			if !errors.Is(err, ErrCanceled) || rq.final.N != 0 {
				x.fail("req %d: submitted with a canceled token, it completed with %+v, not ErrCanceled", rq.id, rq.final)
			}
			continue
		}
		switch {
		case errors.Is(err, ErrTimeout):
			if rq.cancelOK {
				x.fail("req %d (%s): ErrTimeout although a Request.Cancel came first (it returned nil)", rq.id, rq.kind)
			}
		case errors.Is(err, ErrOverrun):
		case errors.Is(err, ErrCanceled):
			by := rq.cancelOK || rq.tok.canceled.Load() || closed || x.p.ctx != "" && x.ctx.Err() != nil || x.allStarted.Load() > rq.allDone
			if !by {
				x.fail("req %d (%s): ErrCanceled that no cancel of the caller's explains (Request.Cancel tried %v, ok %v)",
					rq.id, rq.kind, rq.cancelTried, rq.cancelOK)
			}
		}
	}
	if !assert.Eventually(x.t, func() bool { return x.r.InFlight() == 0 }, adv6Hang, time.Millisecond) {
		x.fail("requests in flight at the end of the round")
	}
	after := x.r.Stats()
	if d := after.Canceled - before.Canceled; d != uint64(x.nCanceled) {
		x.fail("Stats.Canceled went up by %d; %d completions carried ErrCanceled (the ring's own cancels must not count)", d, x.nCanceled)
	}
	if d := after.TimedOut - before.TimedOut; d != uint64(x.nTimedOut) {
		x.fail("Stats.TimedOut went up by %d; %d completions carried ErrTimeout", d, x.nTimedOut)
	}
	if d := after.Submitted - before.Submitted; d != uint64(x.nSubmitted) {
		x.fail("Stats.Submitted went up by %d; %d requests were accepted", d, x.nSubmitted)
	}
}

// TestAdv6StreamRandom runs seeded random programs (CANCELIO_SEED=<seed>
// repeats the choices; CANCELIO_ADV6_ROUND=<n> runs round n alone) over
// AF_UNIX and loopback TCP stream sockets on both backends: a peer writes
// random chunks (1 byte to 64 KiB) with random pauses and shuts down or
// closes, before the first receive, while one waits, right after its last
// write or a little later; the receiver uses Recv, Read at -1 (several in
// flight), RecvMultishot into BufRings of random sizes and counts (buffers
// given back at once, after random delays or in batches, so that ENOBUFS
// ends receives, which are then submitted again), Start and Wait with a
// context, and mixes of them; cancels come at random moments
// (Request.Cancel, Token.Cancel, deadlines, contexts, CancelAll, Close).
// Checked: the bytes delivered plus what is left in the socket are the
// stream exactly; the end of the stream is reported once (0) and nothing
// after it; every request completes once, a canceled multishot receive
// with one final completion; every ErrCanceled and ErrTimeout is the
// caller's doing; Stats counts exactly the caller's cancels; nothing hangs
// (adv6Hang) or leaks (fds, goroutines, io_uring mappings). Rounds that
// cancel nothing must end alike on both backends: every byte, then the
// end.
func TestAdv6StreamRandom(t *testing.T) {
	seed := adv6Seed(t)
	t.Logf("seed %d (CANCELIO_SEED=%d repeats its choices)", seed, seed)
	rounds := 1500
	if testing.Short() {
		rounds = 200
	}
	if s := os.Getenv("CANCELIO_ADV6_ROUNDS"); s != "" {
		v, err := strconv.Atoi(s)
		require.NoError(t, err, "CANCELIO_ADV6_ROUNDS")
		rounds = v
	}
	only := -1
	if s := os.Getenv("CANCELIO_ADV6_ROUND"); s != "" {
		v, err := strconv.Atoi(s)
		require.NoError(t, err, "CANCELIO_ADV6_ROUND")
		only = v
	}
	progs := make([]*adv6Prog, rounds)
	for i := range progs {
		progs[i] = adv6Gen(seed, i)
	}
	if only >= 0 {
		p := adv6Gen(seed, only)
		progs = []*adv6Prog{p}
		t.Logf("%v", p)
	}
	sums := map[Backend][]adv6Summary{}
	maps := uringMappings(t)
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		be := r.Backend().Backend
		var tally adv6Tally
		start := time.Now()
		for _, p := range progs {
			rs := time.Now()
			sums[be] = append(sums[be], adv6Round(t, r, seed, p, &tally))
			if d := time.Since(rs); d > time.Second {
				t.Logf("round %d took %v", p.round, d)
			}
			if t.Failed() {
				t.Logf("stopping after round %d (seed %d; CANCELIO_SEED=%d CANCELIO_ADV6_ROUND=%d repeats it)", p.round, seed, seed, p.round)
				break
			}
		}
		t.Logf("%d rounds in %v:%s", len(sums[be]), time.Since(start).Round(time.Millisecond), tally.String())
	})
	assert.Equal(t, maps, uringMappings(t), "io_uring mappings left after Close")
	u, pl := sums[BackendURing], sums[BackendPoll]
	for i := range min(len(u), len(pl)) {
		p := progs[i]
		if p.canceling() {
			continue
		}
		if u[i].got != p.total || !u[i].eof || pl[i].got != p.total || !pl[i].eof {
			t.Errorf("round %d cancels nothing: uring got %d (end %v), poll got %d (end %v), of %d\n  %v\n  uring: %s\n  poll:  %s",
				p.round, u[i].got, u[i].eof, pl[i].got, pl[i].eof, p.total, p, u[i].finals, pl[i].finals)
		}
	}
}
