//go:build linux

package ioring

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv20FdSet lists the process's open fds.
func adv20FdSet(t *testing.T) map[int]bool {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	out := map[int]bool{}
	for _, e := range ents {
		var fd int
		if _, err := fmt.Sscan(e.Name(), &fd); err != nil {
			continue
		}
		// Not the directory ReadDir read through.
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasSuffix(l, "/fd") {
			continue
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			out[fd] = true
		}
	}
	return out
}

// adv20Rights parses the descriptors of m's received control messages.
func adv20Rights(t *testing.T, m *Msg) []int {
	t.Helper()
	scms, err := m.ControlMessages()
	if err != nil {
		return nil
	}
	var fds []int
	for i := range scms {
		if scms[i].Header.Level != unix.SOL_SOCKET || scms[i].Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&scms[i])
		require.NoError(t, err)
		fds = append(fds, got...)
	}
	return fds
}

// TestAdv20SockmsgWaitAllRights: a RecvMsg with MSG_WAITALL on a unix
// stream whose data comes in parts that each carry descriptors
// (SCM_RIGHTS): the kernel ends each recvmsg(2) at a part that carries
// rights, so the request goes on across parts. Every descriptor the
// kernel installs in the process must be reported to the caller in
// Msg.Control (or the truncation reported with MSG_CTRUNC and the
// descriptor closed): none may be left open unreported, and both
// backends must report the same.
func TestAdv20SockmsgWaitAllRights(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, tc := range []struct {
			name   string
			flags  int
			parts  int
			rooms  int // room for this many single-fd messages
			rights []bool
		}{
			{"waitall, rights on both parts", unix.MSG_WAITALL, 2, 2, []bool{true, true}},
			{"waitall, rights on the second part", unix.MSG_WAITALL, 2, 2, []bool{false, true}},
			{"waitall, rights on the first part", unix.MSG_WAITALL, 2, 2, []bool{true, false}},
			{"waitall, three parts with rights, room for one", unix.MSG_WAITALL, 3, 1, []bool{true, true, true}},
			{"plain, rights on both parts", 0, 2, 2, []bool{true, true}},
		} {
			a, b := socketpair(t, unix.SOCK_STREAM)
			pr, pw := pipe(t)
			_ = pw
			for i := range tc.parts {
				var oob []byte
				if tc.rights[i] {
					oob = unix.UnixRights(pr)
				}
				require.NoError(t, unix.Sendmsg(b, []byte(strings.Repeat(string(rune('A'+i)), 4)), oob, nil, 0))
			}
			before := adv20FdSet(t)
			m := &Msg{Buffers: [][]byte{make([]byte, 4*tc.parts)}, Control: make([]byte, tc.rooms*unix.CmsgSpace(4))}
			c, s := adv20Do(t, r, RecvMsg(a, m, tc.flags))
			fds := adv20Rights(t, m)
			after := adv20FdSet(t)
			reported := map[int]bool{}
			for _, fd := range fds {
				reported[fd] = true
			}
			var leaked []int
			for fd := range after {
				if !before[fd] && !reported[fd] {
					leaked = append(leaked, fd)
				}
			}
			sort.Ints(leaked)
			data := ""
			if c.Err == nil {
				data = string(m.Buffers[0][:c.N])
			}
			// What the receive left in the socket: its data and rights.
			rest, restFds := "", 0
			for {
				buf, oob := make([]byte, 64), make([]byte, 4*unix.CmsgSpace(4))
				n, oobn, _, _, err := unix.Recvmsg(a, buf, oob, unix.MSG_DONTWAIT)
				if err != nil || n == 0 {
					break
				}
				rest += string(buf[:n])
				scms, err := unix.ParseSocketControlMessage(oob[:oobn])
				require.NoError(t, err)
				for i := range scms {
					got, err := unix.ParseUnixRights(&scms[i])
					require.NoError(t, err)
					restFds += len(got)
					for _, fd := range got {
						unix.Close(fd)
					}
				}
			}
			sent := 0
			for _, with := range tc.rights {
				if with {
					sent++
				}
			}
			line := fmt.Sprintf("%s: %s %q ctrunc=%v fds reported=%d left open unreported=%d; left in the socket %q with %d fds",
				tc.name, s, data, m.Flags()&unix.MSG_CTRUNC != 0, len(fds), len(leaked), rest, restFds)
			lost := sent - len(fds) - restFds
			if lost > 0 && len(fds) < tc.rooms {
				t.Errorf("%v backend, %s: %d of the %d descriptors sent were destroyed (neither delivered nor left queued) although Msg.Control had room for %d and received %d; data %q, MSG_CTRUNC %v",
					r.Backend().Backend, tc.name, lost, sent, tc.rooms, len(fds), data, m.Flags()&unix.MSG_CTRUNC != 0)
			}
			if lost > 0 && len(fds) >= tc.rooms && len(data) > 4*len(fds) {
				t.Errorf("%v backend, %s: the receive went on past a part whose descriptors it had no room for and destroyed %d of them; recvmsg(2) and io_uring stop at the part that carries them (it stays queued)",
					r.Backend().Backend, tc.name, lost)
			}
			out = append(out, line)
			if len(leaked) > 0 {
				t.Errorf("%v backend, %s: descriptors installed in the process but not reported in Msg.Control: %v (reported %v)", r.Backend().Backend, tc.name, leaked, fds)
			}
			for _, fd := range fds {
				unix.Close(fd)
			}
			for _, fd := range leaked {
				unix.Close(fd)
			}
			unix.Close(a)
			unix.Close(b)
		}
		// No rights at all: the data comes in two writes, a pause apart,
		// to a RecvMsg with room for control messages.
		a, b := socketpair(t, unix.SOCK_STREAM)
		m := &Msg{Buffers: [][]byte{make([]byte, 8)}, Control: make([]byte, unix.CmsgSpace(4))}
		q, err := r.Start(RecvMsg(a, m, unix.MSG_WAITALL))
		require.NoError(t, err)
		_, err = unix.Write(b, []byte("AAAA"))
		require.NoError(t, err)
		time.Sleep(30 * time.Millisecond)
		_, err = unix.Write(b, []byte("BBBB"))
		require.NoError(t, err)
		c := adv13Wait(t, r, "recvmsg waitall", q)[0]
		out = append(out, fmt.Sprintf("waitall with control room, no rights, data in two writes: %s", adv13Out(c)))
		return out
	})
	adv13Agree(t, got)
}

// TestAdv20SockmsgWaitAllSendRightsOnce: a SendMsg with MSG_WAITALL of
// more data than the socket has room for, with one descriptor as its
// control message, on a unix stream whose peer drains it: the send goes
// on across short transfers until all the data moved. Its control
// message is part of one message: the peer must receive the descriptor
// once, as from sendmsg(2) and io_uring (which sends the control
// message with the first part only), never once per part.
func TestAdv20SockmsgWaitAllSendRightsOnce(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		a, b := socketpair(t, unix.SOCK_STREAM)
		require.NoError(t, unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
		pr, _ := pipe(t)
		const size = 256 << 10
		m := &Msg{Buffers: [][]byte{make([]byte, size)}, Control: unix.UnixRights(pr)}
		q, err := r.Start(SendMsg(a, m, unix.MSG_WAITALL))
		require.NoError(t, err)
		type tally struct{ bytes, fds, cmsgs int }
		done := make(chan tally, 1)
		go func() {
			var tl tally
			buf, oob := make([]byte, 3000), make([]byte, 8*unix.CmsgSpace(4))
			for tl.bytes < size {
				n, oobn, _, _, err := unix.Recvmsg(b, buf, oob, 0)
				if err == unix.EINTR {
					continue
				}
				if err != nil || n == 0 {
					break
				}
				tl.bytes += n
				scms, _ := unix.ParseSocketControlMessage(oob[:oobn])
				for i := range scms {
					tl.cmsgs++
					fds, _ := unix.ParseUnixRights(&scms[i])
					tl.fds += len(fds)
					for _, fd := range fds {
						unix.Close(fd)
					}
				}
			}
			done <- tl
		}()
		c := adv13Wait(t, r, "the send", q)[0]
		var tl tally
		select {
		case tl = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the peer did not receive the data")
		}
		out = append(out, fmt.Sprintf("sendmsg waitall %d bytes with one fd: %s; the peer received %d bytes, %d control messages, %d fds",
			size, adv13Out(c), tl.bytes, tl.cmsgs, tl.fds))
		if tl.fds != 1 {
			t.Errorf("%v backend: one SendMsg carrying one descriptor delivered it %d times (in %d control messages) across its %d bytes",
				r.Backend().Backend, tl.fds, tl.cmsgs, size)
		}
		return out
	})
	adv13Agree(t, got)
}
