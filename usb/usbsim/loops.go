package usbsim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cancelio/cancelio/minidrv/scanproto"
	"github.com/cancelio/cancelio/usb"
)

// The device side: one goroutine per endpoint. outLoop reads bulk OUT
// messages, answers each with a reply and runs the commands; inLoop sends
// an IN endpoint's queue (image data, echoes and flush markers on bulk IN,
// events on interrupt IN), or stall messages while the endpoint is halted.
// Both re-evaluate the shared state whenever Scanner.changed is closed; an
// IN write waiting for room on a full socket is cut short by kick.

// inLoop serves the IN endpoint ep of plug-in p until p is unplugged.
func (s *Scanner) inLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	buf := make([]byte, HeaderSize+ep.info.MaxTransfer)
	stall := []byte{HeaderStall}
	rc, err := ep.dev.SyscallConn()
	if err != nil {
		return
	}
	stallMode := false // stall messages may be queued on the socket
	var t0 time.Time   // when the message being planned became due to start
	// The message being sent and how its send went, for send, which is
	// made once: a closure made per message would allocate per message.
	var (
		m            msgPlan
		msg          []byte
		sent, failed bool
	)
	send := func(fd uintptr) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.stillDueLocked(p, ep, m) {
			return true // stale plan
		}
		again, err := sendNow(int(fd), msg)
		if again {
			return false // wait until the host reads
		}
		if err != nil {
			failed = true
			return true
		}
		s.sentLocked(p, ep, m.it, m.off, m.n)
		sent = true
		return true
	}
	for {
		_ = ep.dev.SetWriteDeadline(time.Time{}) // undo a kick; later kicks win
		s.mu.Lock()
		if s.plug != p {
			s.mu.Unlock()
			return
		}
		if done := ep.clearDone; done != nil {
			s.mu.Unlock()
			if stallMode {
				setConnSendBuffer(ep.dev, ep.sndbuf)
				drainFD(ep.info.FD)
				stallMode = false
			}
			s.mu.Lock()
			if ep.clearDone == done {
				close(done)
				ep.clearDone = nil
			}
			s.mu.Unlock()
			continue
		}
		changed := s.changed
		if s.hung {
			s.mu.Unlock()
			wait(changed, p.gone)
			continue
		}
		if ep.halted {
			s.mu.Unlock()
			if !stallMode {
				// A small send buffer keeps only a few stall messages
				// queued; the netpoller wakes this write as the host
				// reads them, so each host read finds one.
				setConnSendBuffer(ep.dev, 1)
				stallMode = true
			}
			if _, err := ep.dev.Write(stall); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			continue
		}
		var due bool
		m, due = s.awaitMessageLocked(p, ep, &t0, changed)
		if !due {
			continue // something changed: plan again
		}
		buf[0] = HeaderData
		m.fill(buf[HeaderSize:])
		// Send and account under the lock, so the state never lags the
		// socket: a host that has read the message sees its effects (a job
		// done, a hang begun), and nothing planned before an abort, stall
		// or hang goes out after it.
		msg = buf[:HeaderSize+m.n]
		sent, failed = false, false
		err := rc.Write(send)
		if failed || (err != nil && !errors.Is(err, os.ErrDeadlineExceeded)) {
			return // closed by Unplug or Close
		}
		if sent {
			t0 = time.Time{}
		}
	}
}

// awaitMessageLocked is the fault policy of an IN endpoint's next
// message, the same on both transports: called with s.mu held and no
// hang, halt or unplug in the way, it unlocks s.mu and, when ep's queue
// is empty, waits for a change (and forgets *t0); otherwise it plans the
// message and waits until the latency and the bandwidth cap let the
// device send it, counted from *t0 (set to now if zero: when the message
// became due to start). It reports whether the message is due; false
// means the state changed meanwhile: plan again.
func (s *Scanner) awaitMessageLocked(p *plug, ep *endpoint, t0 *time.Time, changed <-chan struct{}) (msgPlan, bool) {
	if len(ep.queue) == 0 {
		s.mu.Unlock()
		*t0 = time.Time{}
		wait(changed, p.gone)
		return msgPlan{}, false
	}
	m := s.planLocked(p, ep)
	if t0.IsZero() {
		*t0 = time.Now()
	}
	due := t0.Add(s.latency + xferTime(m.n, s.bandwidth))
	s.mu.Unlock()
	return m, sleep(due, changed, p.gone)
}

// awaitActLocked is the fault policy of bulk OUT, the same on both
// transports: it waits until the device may act on an OUT transfer of n
// payload bytes that arrived at t0, once the latency and the bandwidth cap
// allow and never while the device hangs. It returns true with s.mu held,
// or false without it once p is unplugged.
func (s *Scanner) awaitActLocked(p *plug, t0 time.Time, n int) bool {
	for {
		s.mu.Lock()
		if s.plug != p {
			s.mu.Unlock()
			return false
		}
		changed, hung := s.changed, s.hung
		due := t0.Add(s.latency + xferTime(n, s.bandwidth))
		if !hung && !time.Now().Before(due) {
			return true
		}
		s.mu.Unlock()
		if hung {
			wait(changed, p.gone)
		} else {
			sleep(due, changed, p.gone)
		}
	}
}

// msgPlan is an IN endpoint's next message: n bytes of it from offset off.
// Both transports plan, re-check and account their messages with
// planLocked, stillDueLocked and sentLocked.
type msgPlan struct {
	it  *inItem
	off int64
	n   int
}

// planLocked plans ep's next message from the head of its queue, which must
// not be empty: at most MaxTransfer bytes, cut at a pending HangAfter.
func (s *Scanner) planLocked(p *plug, ep *endpoint) msgPlan {
	it := ep.queue[0]
	m := msgPlan{it: it, off: it.off}
	m.n = int(min(it.size()-m.off, int64(ep.info.MaxTransfer)))
	if ep == p.in && s.hangAfter > 0 {
		m.n = int(min(int64(m.n), s.hangAfter))
	}
	return m
}

// stillDueLocked reports whether m is still ep's next message and the device
// may send it now: no unplug, hang, halt, abort or HangAfter came since it
// was planned.
func (s *Scanner) stillDueLocked(p *plug, ep *endpoint, m msgPlan) bool {
	return s.plug == p && !s.hung && !ep.halted && ep.clearDone == nil &&
		len(ep.queue) > 0 && ep.queue[0] == m.it && m.it.off == m.off &&
		!(ep == p.in && s.hangAfter > 0 && int64(m.n) > s.hangAfter)
}

// fill writes m's payload to dst[:m.n]. It reads only what never changes
// after queueing (job parameters, echo data), so it needs no lock.
func (m msgPlan) fill(dst []byte) {
	if m.it.job != nil {
		fillImage(m.it.job.params.Seed, m.off, dst[:m.n])
	} else {
		copy(dst[:m.n], m.it.data[m.off:m.off+int64(m.n)])
	}
}

// sentLocked accounts for n bytes of it, from offset off, sent on ep.
func (s *Scanner) sentLocked(p *plug, ep *endpoint, it *inItem, off int64, n int) {
	if ep == p.in && s.hangAfter > 0 && n > 0 {
		s.hangAfter -= int64(n)
		if s.hangAfter <= 0 {
			s.hung, s.hangAfter = true, -1
			s.changedLocked()
		}
	}
	if j := it.job; j != nil && j.sent == off {
		// Counted even when an abort dropped the item meanwhile: the
		// message went out all the same.
		j.sent = off + int64(n)
		if j.sent == j.total {
			s.queueEventLocked(s.jobEventOfLocked(EventJobDone, 0, j))
		}
	}
	if len(ep.queue) == 0 || ep.queue[0] != it || it.off != off {
		return // dropped meanwhile (abort)
	}
	it.off += int64(n)
	if it.off >= it.size() {
		ep.queue[0] = nil
		ep.queue = ep.queue[1:]
	}
}

// outLoop serves bulk OUT of plug-in p until p is unplugged.
func (s *Scanner) outLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	buf := make([]byte, HeaderSize+ep.info.MaxTransfer)
	var reply [ReplySize]byte
	var seq uint32
	for {
		n, _, flags, _, err := ep.dev.ReadMsgUnix(buf, nil)
		if errors.Is(err, io.EOF) {
			// Go reports an empty message as end of file on SOCK_SEQPACKET;
			// only a hang-up is one.
			if peerClosed(ep.dev) {
				return
			}
			err = nil
		}
		if err != nil {
			return // closed by Unplug or Close
		}
		seq++
		if !s.awaitActLocked(p, time.Now(), n-HeaderSize) {
			return
		}
		reply[0] = HeaderAck
		switch {
		case ep.halted:
			reply[0] = HeaderStall
		case n < HeaderSize || flags&msgTrunc != 0 || buf[0] != HeaderData:
			ep.halted = true // a protocol error stalls the endpoint
			reply[0] = HeaderStall
		default:
			s.commandLocked(p, buf[HeaderSize:n])
		}
		s.changedLocked()
		s.mu.Unlock()
		s.kick(p)
		binary.LittleEndian.PutUint32(reply[1:], seq)
		if _, err := ep.dev.Write(reply[:]); err != nil {
			return
		}
	}
}

// ctrlLoop serves endpoint 0 of plug-in p until p is unplugged: one
// request per message, answered with one reply (see
// Scanner.ControlEndpoint).
func (s *Scanner) ctrlLoop(p *plug, ep *endpoint) {
	defer p.wg.Done()
	buf := make([]byte, HeaderSize+SetupSize+ControlMaxData)
	reply := make([]byte, ReplySize+ControlMaxData)
	var seq uint32
	for {
		n, _, flags, _, err := ep.dev.ReadMsgUnix(buf, nil)
		if errors.Is(err, io.EOF) && !peerClosed(ep.dev) {
			err = nil // an empty message: malformed, refused below
		}
		if err != nil {
			return // closed by Unplug or Close
		}
		seq++
		su, ok := usb.ParseSetup(buf[min(n, HeaderSize):n])
		data := buf[min(n, HeaderSize+SetupSize):n]
		well := ok && buf[0] == HeaderData && flags&msgTrunc == 0 &&
			(su.IsIn() && len(data) == 0 || !su.IsIn() && len(data) == int(su.Length))
		if !s.awaitActLocked(p, time.Now(), len(data)) {
			return
		}
		var in []byte
		var cleared []chan struct{}
		if well {
			in, ok, cleared = s.controlLocked(p, su, data)
		}
		s.changedLocked()
		s.mu.Unlock()
		s.kick(p)
		if awaitCleared(p, cleared...) != nil {
			return // unplugged: the request gets no reply
		}
		reply[0] = HeaderAck
		if !well || !ok {
			reply[0], in = HeaderStall, nil
		}
		binary.LittleEndian.PutUint32(reply[1:], seq)
		m := ReplySize + copy(reply[ReplySize:], in)
		if _, err := ep.dev.Write(reply[:m]); err != nil {
			return
		}
	}
}

// commandLocked runs one bulk OUT payload.
func (s *Scanner) commandLocked(p *plug, cmd []byte) {
	if len(cmd) == 0 {
		return // a zero-length packet carries no command
	}
	switch cmd[0] {
	case CmdNop:
	case CmdStartScan:
		params, ok := scanproto.ParseStartScan(cmd)
		switch {
		case !ok:
			s.eventLocked(EventError, ErrCodeBadCommand)
		case params.Validate() != nil:
			s.eventLocked(EventError, ErrCodeBadParams)
		case s.job.active():
			s.eventLocked(EventError, ErrCodeBusy)
		default:
			s.jobs++
			j := &job{id: s.jobs, params: params, total: params.ImageSize()}
			s.job = j
			p.in.queue = append(p.in.queue, &inItem{job: j})
			if params.Flags&FlagZLP != 0 {
				p.in.queue = append(p.in.queue, &inItem{})
			}
			s.eventLocked(EventJobStarted, 0)
		}
	case CmdAbort:
		if len(cmd) != 1 {
			s.eventLocked(EventError, ErrCodeBadCommand)
			return
		}
		if j := s.job; j != nil && !j.aborted && j.sent < j.total {
			// A job whose last bytes are still being handed over
			// ends with them (JobDone), not with this abort; either way
			// it takes no more data.
			active := j.active()
			j.aborted = true
			if active {
				s.eventLocked(EventJobAborted, 0)
			}
		}
		clear(p.in.queue)
		p.in.queue = append(p.in.queue[:0], &inItem{}) // the flush marker
	case CmdGetStatus:
		if len(cmd) != 1 {
			s.eventLocked(EventError, ErrCodeBadCommand)
			return
		}
		s.eventLocked(EventStatus, 0)
	case CmdEcho:
		p.in.queue = append(p.in.queue, &inItem{data: bytes.Clone(cmd[1:])})
	default:
		s.eventLocked(EventError, ErrCodeBadCommand)
	}
}

// eventOfLocked returns an event of the device's current state.
func (s *Scanner) eventOfLocked(kind EventKind, code uint8) Event {
	return s.jobEventOfLocked(kind, code, s.job)
}

// jobEventOfLocked returns an event about job j (nil: none), which a next
// StartScan may have replaced as the current one: its State is the
// device's.
func (s *Scanner) jobEventOfLocked(kind EventKind, code uint8, j *job) Event {
	e := Event{Kind: kind, Code: code, State: StateIdle}
	if s.job.active() {
		e.State = StateScanning
	}
	if j != nil {
		e.Job, e.Sent, e.Total = j.id, j.sent+j.handed, j.total
	}
	return e
}

// eventLocked queues an event of the device's current state on interrupt
// IN.
func (s *Scanner) eventLocked(kind EventKind, code uint8) {
	s.queueEventLocked(s.eventOfLocked(kind, code))
}

// queueEventLocked queues e on interrupt IN, dropping the oldest event when
// the host does not keep up.
func (s *Scanner) queueEventLocked(e Event) {
	p := s.plug
	if p == nil {
		return
	}
	q := p.intr.queue
	if len(q) >= maxEvents {
		q[0] = nil
		q = q[1:]
	}
	p.intr.queue = append(q, &inItem{data: e.Marshal()})
	s.changedLocked()
}

// xferTime is how long n bytes take at bw bytes/s (0: no cap).
func xferTime(n int, bw int64) time.Duration {
	if bw <= 0 || n <= 0 {
		return 0
	}
	return time.Duration(int64(n) * int64(time.Second) / bw)
}

// sleep waits until t or until changed or gone is closed, and reports
// whether t came.
func sleep(t time.Time, changed, gone <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := sleepTimers.Get().(*time.Timer)
	tm.Reset(d)
	defer sleepTimers.Put(tm)
	defer tm.Stop() // after Stop, no stale tick reaches the next user (Go 1.23 timers)
	select {
	case <-tm.C:
		return true
	case <-changed:
	case <-gone:
	}
	return false
}

// sleepTimers are sleep's timers, reused: the simulated device allocates
// nothing per message in steady state, so that the allocations a driver's
// benchmark counts are the driver's.
var sleepTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// wait waits until changed or gone is closed.
func wait(changed, gone <-chan struct{}) {
	select {
	case <-changed:
	case <-gone:
	}
}
