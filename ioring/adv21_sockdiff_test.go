//go:build linux

package ioring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Round 21: a seeded random differential test of the socket operations.
// The package doc promises that io_uring and BackendPoll give the same
// results; the defects found here before were all in the poll backend's
// handling of flags and variants (MSG_ERRQUEUE, MSG_WAITALL with control
// room). Each case below is drawn from the seed (logged; CANCELIO_SEED
// replays it): a socket kind, what its peer queued (data, descriptors,
// urgent data), socket options, the state of the connection (shut down,
// closed, reset), then one Send, Recv, SendMsg or RecvMsg with a random
// set of flags, buffers and control room; one that waits is then ended
// by more data (or room), a cancel, a deadline, or both at once. The same
// cases run on both backends; every completion (N, errno, Msg.Flags,
// ControlLen and the control messages, the bytes received) and what is
// left queued afterwards are recorded and must agree, and the ring must
// not burn CPU while a request waits.
//
// A few combinations are left out because a test of their own pins them
// (adv21_spin_test.go): Recv with MSG_ERRQUEUE, SO_PEEK_OFF, MSG_PEEK on
// an AF_UNIX stream holding urgent (MSG_OOB) data, MSG_PEEK|MSG_WAITALL on
// a stream, AF_UNIX datagrams sent to a receiver whose queue is full, a
// receive on a datagram socket shut down for reading, MSG_DONTWAIT with
// MSG_WAITALL, RecvMsg MSG_WAITALL on a seqpacket socket, and socket
// timeouts beside urgent data.

type adv21Kind int

const (
	adv21UnixStream adv21Kind = iota
	adv21UnixDgram
	adv21UnixSeq
	adv21TCP
	adv21UDP       // both ends bound and connected to each other
	adv21UDPUnconn // both ends bound, neither connected
	adv21Kinds
)

func (k adv21Kind) String() string {
	return [...]string{"unix-stream", "unix-dgram", "unix-seqpacket", "tcp", "udp", "udp-unconnected"}[k]
}

func (k adv21Kind) unix() bool { return k <= adv21UnixSeq }
func (k adv21Kind) stream() bool {
	return k == adv21UnixStream || k == adv21TCP
}
func (k adv21Kind) udp() bool { return k == adv21UDP || k == adv21UDPUnconn }

// What is done to the connection after the peer's sends.
const (
	adv21StateNone = iota
	adv21PeerShutWR
	adv21PeerShutRD
	adv21PeerClose
	adv21PeerReset // TCP: SO_LINGER 0; else a close
	adv21OwnShutRD
	adv21OwnShutWR
	adv21States
)

var adv21StateNames = [...]string{"", "peer-shut-wr", "peer-shut-rd", "peer-closed", "peer-reset", "own-shut-rd", "own-shut-wr"}

// How a request still waiting after a moment is ended.
const (
	adv21EndKick     = iota // more data (a receive), room (a send)
	adv21EndCancel          // Request.Cancel after a random delay
	adv21EndDeadline        // the Op's deadline
	adv21EndRace            // more data and a cancel at once
	adv21Ends
)

var adv21EndNames = [...]string{"kick", "cancel", "deadline", "race"}

type adv21Pre struct {
	n      int
	oob    bool // the last byte is urgent (MSG_OOB)
	rights bool // a descriptor goes with it (AF_UNIX)
}

type adv21Case struct {
	kind     adv21Kind
	pre      []adv21Pre
	passcred bool
	lowat    int
	timeo    bool // SO_RCVTIMEO and SO_SNDTIMEO of 5ms
	oobin    bool // SO_OOBINLINE (TCP)
	state    int
	fill     bool // a send's path is full first
	op       Opcode
	flags    int
	bufs     []int
	ctl      int
	rights   bool // SendMsg: a descriptor
	creds    bool // SendMsg: SCM_CREDENTIALS
	addr     bool // SendMsg: Msg.Addr (UDP)
	end      int
	delay    time.Duration
}

var adv21FlagNames = []struct {
	f    int
	name string
}{
	{unix.MSG_OOB, "OOB"}, {unix.MSG_PEEK, "PEEK"}, {unix.MSG_TRUNC, "TRUNC"},
	{unix.MSG_DONTWAIT, "DONTWAIT"}, {unix.MSG_EOR, "EOR"}, {unix.MSG_WAITALL, "WAITALL"},
	{unix.MSG_MORE, "MORE"}, {unix.MSG_CMSG_CLOEXEC, "CMSG_CLOEXEC"}, {unix.MSG_CTRUNC, "CTRUNC"},
	{unix.MSG_ERRQUEUE, "ERRQUEUE"}, {unix.MSG_NOSIGNAL, "NOSIGNAL"},
}

func adv21Flags(f int) string {
	var s []string
	for _, n := range adv21FlagNames {
		if f&n.f != 0 {
			s = append(s, n.name)
			f &^= n.f
		}
	}
	if f != 0 {
		s = append(s, fmt.Sprintf("%#x", f))
	}
	if len(s) == 0 {
		return "0"
	}
	return strings.Join(s, "|")
}

func (c adv21Case) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v", c.kind)
	for _, p := range c.pre {
		fmt.Fprintf(&b, " pre(%d", p.n)
		if p.oob {
			b.WriteString(",oob")
		}
		if p.rights {
			b.WriteString(",fd")
		}
		b.WriteString(")")
	}
	if c.passcred {
		b.WriteString(" SO_PASSCRED")
	}
	if c.lowat > 0 {
		fmt.Fprintf(&b, " SO_RCVLOWAT=%d", c.lowat)
	}
	if c.timeo {
		b.WriteString(" SO_RCVTIMEO/SNDTIMEO=5ms")
	}
	if c.oobin {
		b.WriteString(" SO_OOBINLINE")
	}
	if c.state != adv21StateNone {
		b.WriteString(" " + adv21StateNames[c.state])
	}
	if c.fill {
		b.WriteString(" full")
	}
	fmt.Fprintf(&b, " | %v(%s) bufs %v", c.op, adv21Flags(c.flags), c.bufs)
	if c.op == OpRecvMsg {
		fmt.Fprintf(&b, " ctl %d", c.ctl)
	}
	if c.rights {
		b.WriteString(" +fd")
	}
	if c.creds {
		b.WriteString(" +creds")
	}
	if c.addr {
		b.WriteString(" +addr")
	}
	fmt.Fprintf(&b, " | if waiting: %s", adv21EndNames[c.end])
	if c.end == adv21EndCancel || c.end == adv21EndDeadline {
		fmt.Fprintf(&b, " after %v", c.delay)
	}
	return b.String()
}

func adv21Gen(rng *rand.Rand) adv21Case {
	c := adv21Case{kind: adv21Kind(rng.IntN(int(adv21Kinds)))}
	ops := []Opcode{OpRecv, OpRecvMsg, OpSend, OpSendMsg}
	c.op = ops[rng.IntN(len(ops))]
	recv := c.op == OpRecv || c.op == OpRecvMsg
	for range rng.IntN(4) {
		p := adv21Pre{n: rng.IntN(24)}
		if c.kind.stream() && p.n > 0 && rng.IntN(5) == 0 {
			p.oob = true
		}
		if c.kind.unix() && rng.IntN(4) == 0 {
			p.rights = true
		}
		if p.n == 0 && (c.kind.stream() && !p.rights) {
			p.n = 1 // an empty write to a stream sends nothing
		}
		c.pre = append(c.pre, p)
	}
	c.passcred = c.kind.unix() && rng.IntN(3) == 0
	if c.kind.stream() && rng.IntN(4) == 0 {
		c.lowat = 1 + rng.IntN(20)
	}
	c.timeo = rng.IntN(4) == 0
	c.oobin = c.kind == adv21TCP && rng.IntN(4) == 0
	if rng.IntN(2) == 0 {
		c.state = 1 + rng.IntN(adv21States-1)
	}
	for _, p := range c.pre {
		if p.oob {
			// Urgent data wakes io_uring's internal poll again and
			// again (EPOLLPRI); after its retries the request blocks
			// in a kernel worker, where SO_RCVTIMEO and SO_SNDTIMEO
			// apply, which they do nowhere else: see the report.
			c.timeo = false
		}
	}
	if recv && c.state == adv21OwnShutRD && !c.kind.stream() && c.kind != adv21UnixSeq {
		c.state = adv21StateNone // TestAdv21DgramShutRDRecv
	}
	c.fill = !recv && c.state == adv21StateNone && !c.kind.udp() && rng.IntN(2) == 0
	pick := func(f int, n int) {
		if rng.IntN(n) == 0 {
			c.flags |= f
		}
	}
	if recv {
		pick(unix.MSG_PEEK, 4)
		pick(unix.MSG_TRUNC, 5)
		pick(unix.MSG_DONTWAIT, 5)
		pick(unix.MSG_WAITALL, 3)
		pick(unix.MSG_OOB, 10)
		if c.op == OpRecvMsg {
			pick(unix.MSG_CMSG_CLOEXEC, 2)
		}
		// Pinned by tests of their own (adv21_spin_test.go).
		if c.flags&unix.MSG_PEEK != 0 && (c.kind == adv21UnixStream || c.kind == adv21UnixSeq || c.kind == adv21TCP) {
			c.flags &^= unix.MSG_WAITALL
		}
		if c.flags&unix.MSG_DONTWAIT != 0 {
			c.flags &^= unix.MSG_WAITALL // TestAdv21DontWaitWaitAll
		}
		if c.op == OpRecvMsg && c.kind == adv21UnixSeq {
			c.flags &^= unix.MSG_WAITALL // TestAdv21WaitAllMsgFlags
		}
		if c.flags&unix.MSG_PEEK != 0 && c.kind == adv21UnixStream {
			for _, p := range c.pre {
				if p.oob {
					c.flags &^= unix.MSG_PEEK
				}
			}
		}
	} else {
		pick(unix.MSG_DONTWAIT, 5)
		pick(unix.MSG_EOR, 6)
		pick(unix.MSG_OOB, 8)
		pick(unix.MSG_WAITALL, 6)
		if c.kind != adv21TCP { // TCP holds corked data on a timer
			pick(unix.MSG_MORE, 8)
		}
	}
	switch c.op {
	case OpRecv, OpSend:
		c.bufs = []int{1 + rng.IntN(48)}
	default:
		for range rng.IntN(4) {
			c.bufs = append(c.bufs, 1+rng.IntN(24))
		}
	}
	if c.op == OpRecvMsg {
		c.ctl = []int{0, 1, unix.CmsgSpace(4), unix.CmsgSpace(unix.SizeofUcred), 256}[rng.IntN(5)]
		if len(c.bufs) == 0 && c.ctl == 0 {
			c.ctl = 256
		}
	}
	if c.op == OpSendMsg {
		c.rights = c.kind.unix() && rng.IntN(3) == 0
		c.creds = c.kind.unix() && rng.IntN(4) == 0
		c.addr = c.kind.udp() && rng.IntN(3) != 0
		if len(c.bufs) == 0 && !c.rights && !c.creds {
			c.bufs = []int{1 + rng.IntN(24)}
		}
	}
	c.end = rng.IntN(adv21Ends)
	c.delay = time.Duration(rng.IntN(3000)) * time.Microsecond
	if c.end == adv21EndDeadline {
		c.delay = time.Duration(5+rng.IntN(25)) * time.Millisecond
	}
	return c
}

// adv21Env is one case's sockets: a is the request's, b its peer; pipe
// is a pipe whose read end travels as a descriptor.
type adv21Env struct {
	a, b     int
	aAddr    unix.Sockaddr
	bAddr    unix.Sockaddr
	pipe     [2]int
	peerGone bool
}

func (e *adv21Env) close() {
	for _, fd := range []int{e.a, e.b, e.pipe[0], e.pipe[1]} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func adv21UDPSock(t *testing.T) (int, unix.Sockaddr) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return fd, sa
}

func adv21Setup(t *testing.T, c adv21Case) *adv21Env {
	e := &adv21Env{a: -1, b: -1, pipe: [2]int{-1, -1}}
	require.NoError(t, unix.Pipe2(e.pipe[:], unix.O_CLOEXEC))
	switch c.kind {
	case adv21UnixStream, adv21UnixDgram, adv21UnixSeq:
		typ := map[adv21Kind]int{adv21UnixStream: unix.SOCK_STREAM, adv21UnixDgram: unix.SOCK_DGRAM, adv21UnixSeq: unix.SOCK_SEQPACKET}[c.kind]
		e.a, e.b = adv13SockPair(t, typ)
	case adv21TCP:
		e.a, e.b = adv13TCPPair(t)
	case adv21UDP, adv21UDPUnconn:
		e.a, e.aAddr = adv21UDPSock(t)
		e.b, e.bAddr = adv21UDPSock(t)
		if c.kind == adv21UDP {
			require.NoError(t, unix.Connect(e.a, e.bAddr))
			require.NoError(t, unix.Connect(e.b, e.aAddr))
		}
	}
	if c.passcred {
		require.NoError(t, unix.SetsockoptInt(e.a, unix.SOL_SOCKET, unix.SO_PASSCRED, 1))
	}
	if c.oobin {
		require.NoError(t, unix.SetsockoptInt(e.a, unix.SOL_SOCKET, unix.SO_OOBINLINE, 1))
	}
	// The peer's sends: letters, distinct per send.
	want := 0 // what SIOCINQ shows (not an urgent byte out of line)
	for i, p := range c.pre {
		data := make([]byte, p.n)
		for j := range data {
			data[j] = byte('A' + i*5 + j%5)
		}
		var oob []byte
		if p.rights {
			oob = unix.UnixRights(e.pipe[0])
		}
		var to unix.Sockaddr
		if c.kind == adv21UDPUnconn {
			to = e.aAddr
		}
		if p.oob {
			if len(data) > 1 {
				_, err := unix.SendmsgN(e.b, data[:len(data)-1], oob, nil, 0)
				require.NoError(t, err)
				oob = nil
			}
			_, err := unix.SendmsgN(e.b, data[len(data)-1:], oob, nil, unix.MSG_OOB)
			require.NoError(t, err)
		} else {
			_, err := unix.SendmsgN(e.b, data, oob, to, 0)
			require.NoError(t, err)
		}
		want += p.n
		if p.oob && !c.oobin {
			want--
		}
	}
	if c.kind == adv21TCP || c.kind.udp() {
		// Loopback delivers at once, mostly: wait until it did.
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) {
			n, err := unix.IoctlGetInt(e.a, unix.SIOCINQ)
			require.NoError(t, err)
			if c.kind == adv21TCP && n >= want || c.kind.udp() && (len(c.pre) == 0 || readable(t, e.a)) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if c.kind.udp() && len(c.pre) > 1 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if c.lowat > 0 {
		require.NoError(t, unix.SetsockoptInt(e.a, unix.SOL_SOCKET, unix.SO_RCVLOWAT, c.lowat))
	}
	if c.timeo {
		tv := unix.NsecToTimeval(int64(5 * time.Millisecond))
		require.NoError(t, unix.SetsockoptTimeval(e.a, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv))
		require.NoError(t, unix.SetsockoptTimeval(e.a, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv))
	}
	switch c.state {
	case adv21PeerShutWR:
		unix.Shutdown(e.b, unix.SHUT_WR)
	case adv21PeerShutRD:
		unix.Shutdown(e.b, unix.SHUT_RD)
	case adv21PeerClose, adv21PeerReset:
		if c.state == adv21PeerReset && c.kind == adv21TCP {
			require.NoError(t, unix.SetsockoptLinger(e.b, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
		}
		unix.Close(e.b)
		e.b, e.peerGone = -1, true
		if c.kind == adv21TCP {
			// Wait for the FIN or the reset to arrive.
			deadline := time.Now().Add(2 * time.Second)
			for time.Now().Before(deadline) && !readable(t, e.a) {
				time.Sleep(time.Millisecond)
			}
		}
	case adv21OwnShutRD:
		unix.Shutdown(e.a, unix.SHUT_RD)
	case adv21OwnShutWR:
		unix.Shutdown(e.a, unix.SHUT_WR)
	}
	if c.fill {
		if c.kind == adv21TCP { // bound what fills it
			require.NoError(t, unix.SetsockoptInt(e.a, unix.SOL_SOCKET, unix.SO_SNDBUF, 8192))
			require.NoError(t, unix.SetsockoptInt(e.b, unix.SOL_SOCKET, unix.SO_RCVBUF, 8192))
		}
		adv13Fill(t, e.a)
	}
	return e
}

// adv21Op builds the case's request and returns it with what records its
// outcome once delivered.
func adv21Op(c adv21Case, e *adv21Env) (Op, func(Completion) string) {
	bufs := make([][]byte, len(c.bufs))
	for i, n := range c.bufs {
		bufs[i] = make([]byte, n)
		if c.op == OpSend || c.op == OpSendMsg {
			for j := range bufs[i] {
				bufs[i][j] = byte('a' + (i*7+j)%26)
			}
		}
	}
	data := func(n int) string {
		var all []byte
		for _, b := range bufs {
			all = append(all, b...)
		}
		return fmt.Sprintf("%q", all[:min(max(n, 0), len(all))])
	}
	out := func(cp Completion) string { return adv13Out(cp) }
	var op Op
	switch c.op {
	case OpRecv:
		op = Recv(e.a, bufs[0], c.flags)
		out = func(cp Completion) string { return adv13Out(cp) + " data " + data(cp.N) }
	case OpSend:
		op = Send(e.a, bufs[0], c.flags)
	case OpSendMsg:
		m := &Msg{Buffers: bufs}
		if c.rights {
			m.Control = unix.UnixRights(e.pipe[0])
		}
		if c.creds {
			m.Control = append(m.Control, unix.UnixCredentials(&unix.Ucred{Pid: int32(unix.Getpid()), Uid: uint32(unix.Getuid()), Gid: uint32(unix.Getgid())})...)
		}
		if c.addr {
			m.Addr = e.bAddr
		}
		op = SendMsg(e.a, m, c.flags)
	case OpRecvMsg:
		m := &Msg{Buffers: bufs}
		if c.ctl > 0 {
			m.Control = make([]byte, c.ctl)
		}
		op = RecvMsg(e.a, m, c.flags)
		out = func(cp Completion) string {
			s := adv13Out(cp)
			if cp.Err != nil && !errors.Is(cp.Err, unix.EAGAIN) || errors.Is(cp.Err, ErrCanceled) {
				return s
			}
			s += fmt.Sprintf(" data %s flags %s ctl %d", data(cp.N), adv21Flags(m.Flags()), m.ControlLen())
			if m.ControlLen() > 0 {
				s += " " + adv21Cmsgs(m.Control[:m.ControlLen()])
			}
			if from := m.From(); from != nil && c.kind.udp() {
				s += fmt.Sprintf(" from-peer %v", adv21SameAddr(from, e.bAddr))
			}
			return s
		}
	}
	if c.end == adv21EndDeadline {
		op = op.WithDeadline(c.delay)
	}
	return op, out
}

func adv21SameAddr(a, b unix.Sockaddr) bool {
	x, ok1 := a.(*unix.SockaddrInet4)
	y, ok2 := b.(*unix.SockaddrInet4)
	return ok1 && ok2 && *x == *y
}

// adv21Cmsgs describes control messages (and closes the descriptors they
// carry, after noting whether they are close-on-exec).
func adv21Cmsgs(b []byte) string {
	scms, err := unix.ParseSocketControlMessage(b)
	if err != nil {
		return "cmsg-parse:" + err.Error()
	}
	var s []string
	for _, scm := range scms {
		switch {
		case scm.Header.Level == unix.SOL_SOCKET && scm.Header.Type == unix.SCM_RIGHTS:
			fds, err := unix.ParseUnixRights(&scm)
			if err != nil {
				s = append(s, "rights:"+err.Error())
				continue
			}
			d := fmt.Sprintf("rights(%d", len(fds))
			for _, fd := range fds {
				fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
				if fl&unix.FD_CLOEXEC != 0 {
					d += ",cloexec"
				}
				unix.Close(fd)
			}
			s = append(s, d+")")
		case scm.Header.Level == unix.SOL_SOCKET && scm.Header.Type == unix.SCM_CREDENTIALS:
			// By hand: x/sys casts the data, which checkptr refuses
			// when a truncated message is shorter than a Ucred.
			if len(scm.Data) < unix.SizeofUcred {
				s = append(s, fmt.Sprintf("creds(truncated %d)", len(scm.Data)))
				continue
			}
			pid := int32(binary.NativeEndian.Uint32(scm.Data[0:4]))
			s = append(s, fmt.Sprintf("creds(self %v)", pid == int32(unix.Getpid())))
		default:
			s = append(s, fmt.Sprintf("cmsg(%d,%d,%d)", scm.Header.Level, scm.Header.Type, len(scm.Data)))
		}
	}
	return strings.Join(s, ",")
}

// adv21Drain reads what is left queued on fd without waiting: messages,
// descriptors (closed) and, on TCP, the urgent byte.
func adv21Drain(t *testing.T, c adv21Case, fd int, skipFill bool, kicked string) string {
	if fd < 0 {
		return "gone"
	}
	var s []string
	buf := make([]byte, 1<<16)
	ctl := make([]byte, 512)
	for range 64 {
		n, oobn, fl, _, err := unix.Recvmsg(fd, buf, ctl, unix.MSG_DONTWAIT)
		if err != nil {
			s = append(s, unix.ErrnoName(err.(unix.Errno)))
			if err == unix.EAGAIN || err == unix.EINVAL {
				break
			}
			continue
		}
		d := buf[:n]
		if skipFill {
			// What the kick's drain took of the request's data comes
			// first.
			d = []byte(kicked + strings.ReplaceAll(string(d), "\x00", ""))
			if len(d) == 0 && n > 0 {
				continue // the fill, nothing of the request's
			}
			kicked = ""
		}
		m := fmt.Sprintf("%q", d)
		if fl != 0 {
			m += " " + adv21Flags(fl)
		}
		if oobn > 0 {
			m += " " + adv21Cmsgs(ctl[:oobn])
		}
		s = append(s, m)
		if n == 0 && !(c.kind == adv21UnixDgram || c.kind == adv21UnixSeq || c.kind.udp()) {
			break // the end of the stream
		}
	}
	if c.kind == adv21TCP {
		b := make([]byte, 1)
		n, _, err := unix.Recvfrom(fd, b, unix.MSG_OOB|unix.MSG_DONTWAIT)
		if err != nil {
			s = append(s, "oob:"+unix.ErrnoName(err.(unix.Errno)))
		} else {
			s = append(s, fmt.Sprintf("oob:%q", b[:n]))
		}
	}
	if kicked != "" {
		s = append([]string{fmt.Sprintf("%q", kicked)}, s...)
	}
	return strings.Join(s, " ")
}

// adv21DrainFill reads what is queued on fd without waiting, behind a
// fill of zero bytes, and returns the other bytes, all messages run
// together (the fill's drain may take part of them), and the control
// messages.
func adv21DrainFill(fd int) (string, []string) {
	var data []byte
	var cms []string
	buf := make([]byte, 1<<16)
	ctl := make([]byte, 512)
	for range 4096 {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, ctl, unix.MSG_DONTWAIT)
		if err != nil || n == 0 && oobn == 0 {
			break
		}
		for _, b := range buf[:n] {
			if b != 0 {
				data = append(data, b)
			}
		}
		if oobn > 0 {
			cms = append(cms, adv21Cmsgs(ctl[:oobn]))
		}
	}
	return string(data), cms
}

// adv21Run runs case c on ring r and returns its record. It adds the CPU
// the process used while the request waited to *cpu, and that wait to
// *wall.
func adv21Run(t *testing.T, r *Ring, i int, c adv21Case, cpu, wall *time.Duration) string {
	e := adv21Setup(t, c)
	defer e.close()
	op, out := adv21Op(c, e)
	q, err := r.Submit(op)
	if err != nil {
		return fmt.Sprintf("refused: %v", errors.Is(err, ErrInvalid))
	}
	var cs [2]Completion
	n, err := r.Reap(cs[:1], 25*time.Millisecond)
	require.NoError(t, err)
	rec, kicked := "", ""
	var kickedCm []string
	if n == 0 && c.end != adv21EndDeadline {
		// Waiting: it must wait quietly.
		const window = 60 * time.Millisecond
		c0, w0 := cpuTime(t), time.Now()
		n, err = r.Reap(cs[:1], window)
		require.NoError(t, err)
		used, took := cpuTime(t)-c0, time.Since(w0)
		*cpu += used
		*wall += took
		if n == 0 && used > took/2 {
			t.Errorf("case %d (%v): %v of CPU in %v while the request waited: the ring spins", i, c, used, took)
		}
		rec = "waited; "
	}
	if n == 0 {
		recv := c.op == OpRecv || c.op == OpRecvMsg
		canKick := !e.peerGone && c.state != adv21PeerShutWR && c.state != adv21OwnShutRD
		if !recv {
			canKick = c.fill
		}
		kick := func() {
			if recv {
				k := make([]byte, 100)
				for j := range k {
					k[j] = byte('k' + j%5)
				}
				var to unix.Sockaddr
				if c.kind == adv21UDPUnconn {
					to = e.aAddr
				}
				unix.Sendmsg(e.b, k, nil, to, 0)
			} else {
				kd, kc := adv21DrainFill(e.b)
				kicked, kickedCm = kicked+kd, append(kickedCm, kc...)
			}
		}
		switch {
		case c.end == adv21EndDeadline:
			rec = "" // when it fires is no outcome
		case c.end == adv21EndCancel || !canKick:
			time.Sleep(c.delay)
			q.Cancel()
			rec += "canceled; "
		case c.end == adv21EndKick:
			kick()
			rec += "kicked; "
		case c.end == adv21EndRace:
			done := make(chan struct{})
			go func() { defer close(done); kick() }()
			q.Cancel()
			<-done
			// Either outcome: record that it completed once.
			n, err = r.Reap(cs[:1], adv13Hang)
			require.NoError(t, err)
			require.Equal(t, 1, n, "case %d: the raced request completes", i)
			require.Equal(t, q, cs[0].Req)
			m, _ := r.Reap(cs[1:], 0)
			require.Zero(t, m, "case %d: a second completion", i)
			return "raced; once"
		}
		n, err = r.Reap(cs[:1], time.Second)
		require.NoError(t, err)
		if n == 0 {
			rec += "still waiting after 1s; "
			q.Cancel()
			n, err = r.Reap(cs[:1], adv13Hang)
			require.NoError(t, err)
			require.Equal(t, 1, n, "case %d: the canceled request completes", i)
		}
	}
	require.Equal(t, q, cs[0].Req)
	rec += out(cs[0])
	if m, _ := r.Reap(cs[1:], 0); m != 0 {
		t.Errorf("case %d: a second completion %+v", i, cs[1])
	}
	if c.op == OpRecv || c.op == OpRecvMsg {
		rec += " | left: " + adv21Drain(t, c, e.a, false, "")
	} else {
		if c.fill {
			d, cm := adv21DrainFill(e.b)
			rec += fmt.Sprintf(" | peer got: %q %v", kicked+d, append(kickedCm, cm...))
		} else {
			rec += " | peer got: " + adv21Drain(t, c, e.b, false, "")
		}
	}
	return rec
}

// TestAdv21SockDiffRandom: random socket requests, the same on both
// backends; every outcome must agree, and no backend may spin while a
// request waits or leak an fd (adv13Both checks).
func TestAdv21SockDiffRandom(t *testing.T) {
	rng := adv13Rand(t)
	const n = 40
	cases := make([]adv21Case, n)
	for i := range cases {
		cases[i] = adv21Gen(rng)
	}
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var cpu, wall time.Duration
		out := make([]string, n)
		for i, c := range cases {
			t0 := time.Now()
			out[i] = adv21Run(t, r, i, c, &cpu, &wall)
			if d := time.Since(t0); d > 300*time.Millisecond {
				t.Logf("case %d took %v: %v: %s", i, d, c, out[i])
			}
		}
		assertSettled(t, r)
		if wall > 0 {
			t.Logf("%v of CPU in %v of waiting", cpu, wall)
			if cpu > wall/2 {
				t.Errorf("%v of CPU in %v while requests waited: the ring spins", cpu, wall)
			}
		}
		return out
	})
	u, p := got[BackendURing], got[BackendPoll]
	if len(u) != n || len(p) != n {
		return
	}
	bad := 0
	for i := range cases {
		if u[i] != p[i] {
			bad++
			t.Errorf("case %d: %v\n\turing: %s\n\tpoll:  %s", i, cases[i], u[i], p[i])
		}
	}
	if bad == 0 {
		for i := range cases {
			t.Logf("case %d: %v\n\t%s", i, cases[i], u[i])
		}
	}
}
