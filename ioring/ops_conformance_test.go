//go:build linux

package ioring

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cancelio/cancelio/internal/uring"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The socket and file operations in the conformance suite: each one, on
// each backend, as op=<name> with the same six subtests (success, cancel
// while pending, deadline, canceled token before submission, bad input,
// not supported alone).

// opCase is one operation's part of the suite.
type opCase struct {
	name string
	code Opcode
	// success runs the operation to its real result and checks it.
	success func(t *testing.T, r *Ring)
	// pending returns an op that stays pending (when pends is set; else
	// one that completes at once, whose cancel may lose the race), and
	// settle, which checks its one completion given the cancel's error
	// (ErrCanceled or ErrTimeout) and cleans up.
	pending func(t *testing.T) (op Op, pends bool, settle func(t *testing.T, c Completion, want error))
	// token returns an op for the canceled-token test and a check that it
	// had no effect.
	token func(t *testing.T) (Op, func(t *testing.T))
	// invalid returns ops refused with ErrInvalid.
	invalid func(t *testing.T) []Op
	// on, when set, names the ring the case's ops go to next, for cases
	// that register files on it (fileCases).
	on func(r *Ring)
}

// socketpair returns a connected pair of blocking sockets of type typ,
// closed with the test.
func socketpair(t testing.TB, typ int) (a, b int) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

// tcpListener returns a blocking TCP listener on loopback with backlog and
// its address.
func tcpListener(t testing.TB, backlog int, flags int) (int, *unix.SockaddrInet4) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|flags, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(fd, backlog))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return fd, sa.(*unix.SockaddrInet4)
}

// tcpSocket returns a new blocking TCP socket, closed with the test.
func tcpSocket(t testing.TB) int {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// fillSocket fills fd's send buffer (and its peer's receive buffer), so
// that the next send waits.
func fillSocket(t testing.TB, fd int) {
	require.NoError(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4096))
	chunk := make([]byte, 4096)
	for {
		_, err := unix.SendmsgN(fd, chunk, nil, nil, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return
		}
		require.NoError(t, err)
	}
}

// readable reports whether fd has data (or an end) to read right now.
func readable(t testing.TB, fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue // a signal (Go's preemption) interrupted it
		}
		require.NoError(t, err)
		return n > 0
	}
}

// canceledOrReal checks a completion that a cancel with want may have
// lost: ErrCanceled-like, or the real result, which real checks.
func canceledOrReal(t *testing.T, c Completion, want error, real func(c Completion)) {
	t.Helper()
	if c.Err != nil && isCancel(c.Err) {
		assert.ErrorIs(t, c.Err, want)
		return
	}
	real(c)
}

// mustCancel checks that a pending request ended with want.
func mustCancel(t *testing.T, c Completion, want error) {
	t.Helper()
	assert.ErrorIs(t, c.Err, want, "completion %+v", c)
	assert.Zero(t, c.N)
}

func opCases(fixed []byte) []opCase {
	return []opCase{
		{
			name: "read-fixed", code: OpReadFixed,
			success: func(t *testing.T, r *Ring) {
				fd := tempFile(t, []byte("registered"))
				c := doOp(t, r, ReadFixed(fd, fixed[100:110], 0, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, "registered", string(fixed[100:100+c.N]))
				rd, wr := pipe(t)
				unix.Write(wr, []byte("pipe"))
				c = doOp(t, r, ReadFixed(rd, fixed[:8], -1, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, "pipe", string(fixed[:c.N]))
				c = doOp(t, r, ReadFixed(fd, make([]byte, 8), 0, 0))
				assert.ErrorIs(t, c.Err, unix.EFAULT, "a buffer that is not the registered one")
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				rd, _ := pipe(t)
				return ReadFixed(rd, fixed[:8], -1, 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				rd, wr := pipe(t)
				unix.Write(wr, []byte("x"))
				return ReadFixed(rd, fixed[:8], -1, 0), func(t *testing.T) { assert.True(t, readable(t, rd), "nothing consumed") }
			},
			invalid: func(t *testing.T) []Op {
				rd, _ := pipe(t)
				return []Op{ReadFixed(-1, fixed[:1], 0, 0), ReadFixed(rd, nil, 0, 0), ReadFixed(rd, fixed[:1], -2, 0), ReadFixed(rd, fixed[:1], 0, -1), ReadFixed(rd, fixed[:1], 0, 1<<20)}
			},
		},
		{
			name: "write-fixed", code: OpWriteFixed,
			success: func(t *testing.T, r *Ring) {
				fd := tempFile(t, nil)
				copy(fixed[200:], "written")
				c := doOp(t, r, WriteFixed(fd, fixed[200:207], 0, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, 7, c.N)
				got := make([]byte, 16)
				n, _ := unix.Pread(fd, got, 0)
				assert.Equal(t, "written", string(got[:n]))
				a, b := socketpair(t, unix.SOCK_STREAM)
				c = doOp(t, r, WriteFixed(a, fixed[200:207], -1, 0))
				require.NoError(t, c.Err)
				n, _ = unix.Read(b, got)
				assert.Equal(t, "written", string(got[:n]))
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				fillSocket(t, a)
				return WriteFixed(a, fixed, -1, 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				return WriteFixed(a, fixed[:1], -1, 0), func(t *testing.T) { assert.False(t, readable(t, b), "nothing written") }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return []Op{WriteFixed(-1, fixed[:1], 0, 0), WriteFixed(a, nil, 0, 0), WriteFixed(a, fixed[:1], 0, -7)}
			},
		},
		{
			name: "send", code: OpSend,
			success: func(t *testing.T, r *Ring) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				c := doOp(t, r, Send(a, []byte("ping"), 0))
				require.NoError(t, c.Err)
				assert.Equal(t, 4, c.N)
				buf := make([]byte, 8)
				n, _ := unix.Read(b, buf)
				assert.Equal(t, "ping", string(buf[:n]))
				// A peer that went away is EPIPE, not SIGPIPE.
				unix.Close(b)
				c = doOp(t, r, Send(a, []byte("x"), 0))
				assert.ErrorIs(t, c.Err, unix.EPIPE)
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				fillSocket(t, a)
				for readable(t, b) { // drain nothing: b's buffer is full too
					break
				}
				return Send(a, make([]byte, 1<<20), 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				return Send(a, []byte("x"), 0), func(t *testing.T) { assert.False(t, readable(t, b), "nothing sent") }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return []Op{Send(-1, []byte("x"), 0), Send(a, nil, 0), Send(a, []byte("x"), -1)}
			},
		},
		{
			name: "recv", code: OpRecv,
			success: func(t *testing.T, r *Ring) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				unix.Write(b, []byte("pong"))
				buf := make([]byte, 8)
				c := doOp(t, r, Recv(a, buf, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, "pong", string(buf[:c.N]))
				// Waiting, then data arrives.
				q, err := r.Submit(Recv(a, buf, 0))
				require.NoError(t, err)
				time.Sleep(5 * time.Millisecond)
				unix.Write(b, []byte("late"))
				c = reapOne(t, r)
				assert.Equal(t, q, c.Req)
				require.NoError(t, c.Err)
				assert.Equal(t, "late", string(buf[:c.N]))
				unix.Shutdown(b, unix.SHUT_WR)
				c = doOp(t, r, Recv(a, buf, 0))
				assert.NoError(t, c.Err)
				assert.Zero(t, c.N, "end of stream")
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return Recv(a, make([]byte, 8), 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				unix.Write(b, []byte("x"))
				return Recv(a, make([]byte, 8), 0), func(t *testing.T) { assert.True(t, readable(t, a), "nothing consumed") }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return []Op{Recv(-1, make([]byte, 1), 0), Recv(a, nil, 0), Recv(hugeFD, make([]byte, 1), 0)}
			},
		},
		{
			name: "sendmsg", code: OpSendMsg,
			success: func(t *testing.T, r *Ring) {
				// Data in two buffers plus an fd as a control message.
				a, b := socketpair(t, unix.SOCK_STREAM)
				pr, _ := pipe(t)
				m := &Msg{Buffers: [][]byte{[]byte("he"), []byte("llo")}, Control: unix.UnixRights(pr)}
				c := doOp(t, r, SendMsg(a, m, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, 5, c.N)
				buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4))
				n, oobn, _, _, err := unix.Recvmsg(b, buf, oob, 0)
				require.NoError(t, err)
				assert.Equal(t, "hello", string(buf[:n]))
				scms, err := unix.ParseSocketControlMessage(oob[:oobn])
				require.NoError(t, err)
				require.Len(t, scms, 1)
				fds, err := unix.ParseUnixRights(&scms[0])
				require.NoError(t, err)
				require.Len(t, fds, 1)
				unix.Close(fds[0])
				// A datagram to an address (UDP on loopback).
				rx, rxa := udpSocket(t)
				tx, _ := udpSocket(t)
				m = &Msg{Buffers: [][]byte{[]byte("dgram")}, Addr: rxa}
				c = doOp(t, r, SendMsg(tx, m, 0))
				require.NoError(t, c.Err)
				n, _, err = unix.Recvfrom(rx, buf, 0)
				require.NoError(t, err)
				assert.Equal(t, "dgram", string(buf[:n]))
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				fillSocket(t, a)
				return SendMsg(a, &Msg{Buffers: [][]byte{make([]byte, 1<<20)}}, 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_DGRAM)
				return SendMsg(a, &Msg{Buffers: [][]byte{[]byte("x")}}, 0), func(t *testing.T) { assert.False(t, readable(t, b)) }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_DGRAM)
				empty := &Msg{Buffers: [][]byte{nil}}
				return []Op{
					SendMsg(a, nil, 0), SendMsg(-1, &Msg{Buffers: [][]byte{[]byte("x")}}, 0), SendMsg(a, empty, 0),
					SendMsg(a, &Msg{}, 0), SendMsg(a, &Msg{Buffers: [][]byte{[]byte("x")}, Addr: &unix.SockaddrLinklayer{}}, 0),
				}
			},
		},
		{
			name: "recvmsg", code: OpRecvMsg,
			success: func(t *testing.T, r *Ring) {
				rx, _ := udpSocket(t)
				tx, txa := udpSocket(t)
				rxa, err := unix.Getsockname(rx)
				require.NoError(t, err)
				require.NoError(t, unix.SetsockoptInt(rx, unix.IPPROTO_IP, unix.IP_PKTINFO, 1))
				m := &Msg{Buffers: [][]byte{make([]byte, 3), make([]byte, 16)}, Control: make([]byte, 256)}
				q, err := r.Submit(RecvMsg(rx, m, 0))
				require.NoError(t, err)
				time.Sleep(2 * time.Millisecond)
				require.NoError(t, unix.Sendto(tx, []byte("datagram"), 0, rxa))
				c := reapOne(t, r)
				assert.Equal(t, q, c.Req)
				require.NoError(t, c.Err)
				assert.Equal(t, 8, c.N)
				assert.Equal(t, "dat", string(m.Buffers[0]))
				assert.Equal(t, "agram", string(m.Buffers[1][:5]))
				from, ok := m.From().(*unix.SockaddrInet4)
				require.True(t, ok, "From() = %#v", m.From())
				assert.Equal(t, txa.Port, from.Port)
				assert.Equal(t, txa.Addr, from.Addr)
				scms, err := m.ControlMessages()
				require.NoError(t, err)
				require.NotEmpty(t, scms, "IP_PKTINFO")
				assert.Equal(t, int32(unix.IP_PKTINFO), scms[0].Header.Type)
				assert.Zero(t, m.Flags()&unix.MSG_TRUNC)
				// Reused at once, the same Msg receives a truncated datagram.
				m.Buffers = m.Buffers[:1]
				require.NoError(t, unix.Sendto(tx, []byte("truncated"), 0, rxa))
				c = doOp(t, r, RecvMsg(rx, m, 0))
				require.NoError(t, c.Err)
				assert.Equal(t, 3, c.N)
				assert.NotZero(t, m.Flags()&unix.MSG_TRUNC)
				// An fd passed over a unix socket.
				a, b := socketpair(t, unix.SOCK_DGRAM)
				pr, _ := pipe(t)
				require.NoError(t, unix.Sendmsg(b, []byte("f"), unix.UnixRights(pr), nil, 0))
				m = &Msg{Buffers: [][]byte{make([]byte, 4)}, Control: make([]byte, unix.CmsgSpace(4))}
				c = doOp(t, r, RecvMsg(a, m, 0))
				require.NoError(t, c.Err)
				scms, err = m.ControlMessages()
				require.NoError(t, err)
				require.Len(t, scms, 1)
				fds, err := unix.ParseUnixRights(&scms[0])
				require.NoError(t, err)
				require.Len(t, fds, 1)
				unix.Close(fds[0])
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_DGRAM)
				return RecvMsg(a, &Msg{Buffers: [][]byte{make([]byte, 8)}}, 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_DGRAM)
				unix.Write(b, []byte("x"))
				return RecvMsg(a, &Msg{Buffers: [][]byte{make([]byte, 8)}}, 0), func(t *testing.T) { assert.True(t, readable(t, a)) }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_DGRAM)
				m := &Msg{Buffers: [][]byte{make([]byte, 8)}}
				op := RecvMsg(a, m, 0)
				m.Buffers = append(m.Buffers, make([]byte, 8))
				return []Op{RecvMsg(a, nil, 0), RecvMsg(-1, &Msg{Buffers: [][]byte{make([]byte, 1)}}, 0), RecvMsg(a, &Msg{}, 0), op}
			},
		},
		{
			name: "accept", code: OpAccept,
			success: func(t *testing.T, r *Ring) {
				for _, fl := range []int{0, unix.SOCK_NONBLOCK} {
					lfd, sa := tcpListener(t, 8, fl)
					q, err := r.Submit(Accept(lfd, unix.SOCK_NONBLOCK))
					require.NoError(t, err)
					time.Sleep(2 * time.Millisecond)
					cl := tcpSocket(t)
					require.NoError(t, unix.Connect(cl, sa))
					c := reapOne(t, r)
					assert.Equal(t, q, c.Req)
					require.NoError(t, c.Err)
					require.Greater(t, c.N, 2)
					got, err := unix.FcntlInt(uintptr(c.N), unix.F_GETFD, 0)
					assert.NoError(t, err)
					assert.Equal(t, unix.FD_CLOEXEC, got&unix.FD_CLOEXEC, "accepted fd is close-on-exec")
					fl, _ := unix.FcntlInt(uintptr(c.N), unix.F_GETFL, 0)
					assert.NotZero(t, fl&unix.O_NONBLOCK, "SOCK_NONBLOCK")
					unix.Close(c.N)
				}
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				lfd, _ := tcpListener(t, 8, 0)
				return Accept(lfd, 0), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				lfd, sa := tcpListener(t, 8, 0)
				cl := tcpSocket(t)
				require.NoError(t, unix.Connect(cl, sa))
				return Accept(lfd, 0), func(t *testing.T) { assert.True(t, readable(t, lfd), "connection still queued") }
			},
			invalid: func(t *testing.T) []Op {
				lfd, _ := tcpListener(t, 8, 0)
				return []Op{Accept(-1, 0), Accept(lfd, 1<<30)}
			},
		},
		{
			name: "connect", code: OpConnect,
			success: func(t *testing.T, r *Ring) {
				lfd, sa := tcpListener(t, 8, 0)
				cl := tcpSocket(t)
				c := doOp(t, r, Connect(cl, sa))
				require.NoError(t, c.Err)
				nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
				require.NoError(t, err)
				unix.Close(nfd)
				fl, _ := unix.FcntlInt(uintptr(cl), unix.F_GETFL, 0)
				assert.Zero(t, fl&unix.O_NONBLOCK, "the socket's flags are left alone")
				// Refused: the errno, naming the op.
				unix.Close(lfd)
				c = doOp(t, r, Connect(tcpSocket(t), sa))
				assert.ErrorIs(t, c.Err, unix.ECONNREFUSED)
				// A unix socket by path.
				dir := t.TempDir()
				ufd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				defer unix.Close(ufd)
				usa := &unix.SockaddrUnix{Name: filepath.Join(dir, "s")}
				require.NoError(t, unix.Bind(ufd, usa))
				require.NoError(t, unix.Listen(ufd, 1))
				uc, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				defer unix.Close(uc)
				c = doOp(t, r, Connect(uc, usa))
				require.NoError(t, c.Err)
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				// A listener whose accept queue is full drops SYNs: the
				// next connect waits for the retransmission (seconds).
				_, sa := tcpListener(t, 0, 0)
				for i := 0; i < 2; i++ {
					cl := tcpSocket(t)
					unix.SetNonblock(cl, true)
					unix.Connect(cl, sa)
				}
				time.Sleep(10 * time.Millisecond)
				return Connect(tcpSocket(t), sa), true, mustCancel
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				lfd, sa := tcpListener(t, 8, 0)
				return Connect(tcpSocket(t), sa), func(t *testing.T) { assert.False(t, readable(t, lfd), "no connection") }
			},
			invalid: func(t *testing.T) []Op {
				return []Op{Connect(-1, &unix.SockaddrInet4{}), Connect(tcpSocket(t), nil), Connect(tcpSocket(t), &unix.SockaddrLinklayer{}),
					Connect(tcpSocket(t), &unix.SockaddrInet4{Port: 1 << 20})}
			},
		},
		{
			name: "shutdown", code: OpShutdown,
			success: func(t *testing.T, r *Ring) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				c := doOp(t, r, Shutdown(a, unix.SHUT_WR))
				require.NoError(t, c.Err)
				n, err := unix.Read(b, make([]byte, 1))
				assert.NoError(t, err)
				assert.Zero(t, n, "end of stream")
				c = doOp(t, r, Shutdown(tempFile(t, nil), unix.SHUT_WR))
				assert.ErrorIs(t, c.Err, unix.ENOTSOCK)
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return Shutdown(a, unix.SHUT_RDWR), false, func(t *testing.T, c Completion, want error) {
					canceledOrReal(t, c, want, func(c Completion) { assert.NoError(t, c.Err) })
				}
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				return Shutdown(a, unix.SHUT_WR), func(t *testing.T) { assert.False(t, readable(t, b), "not shut down") }
			},
			invalid: func(t *testing.T) []Op {
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return []Op{Shutdown(-1, unix.SHUT_WR), Shutdown(a, 7)}
			},
		},
		{
			name: "openat", code: OpOpenAt,
			success: func(t *testing.T, r *Ring) {
				dir := t.TempDir()
				require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("content"), 0o600))
				c := doOp(t, r, OpenAt(unix.AT_FDCWD, filepath.Join(dir, "f"), unix.O_RDONLY, 0))
				require.NoError(t, c.Err)
				buf := make([]byte, 16)
				n, _ := unix.Read(c.N, buf)
				assert.Equal(t, "content", string(buf[:n]))
				fl, _ := unix.FcntlInt(uintptr(c.N), unix.F_GETFD, 0)
				assert.NotZero(t, fl&unix.FD_CLOEXEC)
				unix.Close(c.N)
				// Relative to a directory fd, creating.
				dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				require.NoError(t, err)
				defer unix.Close(dfd)
				c = doOp(t, r, OpenAt(dfd, "new", unix.O_CREAT|unix.O_WRONLY|unix.O_EXCL, 0o640))
				require.NoError(t, c.Err)
				unix.Close(c.N)
				st, err := os.Stat(filepath.Join(dir, "new"))
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o640), st.Mode().Perm()&^0o022)
				c = doOp(t, r, OpenAt(dfd, "missing", unix.O_RDONLY, 0))
				assert.ErrorIs(t, c.Err, unix.ENOENT)
				assert.ErrorIs(t, c.Err, fs.ErrNotExist)
				assert.EqualError(t, c.Err, fmt.Sprintf(`ioring: openat "missing" in directory fd %d: no such file or directory`, dfd))
				c = doOp(t, r, OpenAt(unix.AT_FDCWD, filepath.Join(dir, "gone"), unix.O_RDONLY, 0))
				assert.EqualError(t, c.Err, fmt.Sprintf("ioring: openat %q: no such file or directory", filepath.Join(dir, "gone")))
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				// Opening a FIFO for writing waits for a reader, and a
				// cancel ends the wait on both backends: io_uring
				// interrupts the open in its worker (O_CREAT: it never
				// tries the open non-blocking first); the poll backend
				// opens non-blocking and tries again on a timer.
				fifo := filepath.Join(t.TempDir(), "fifo")
				require.NoError(t, unix.Mkfifo(fifo, 0o600))
				t.Cleanup(func() { adv4Unstick(fifo) }) // a failure: no open stays stuck
				return OpenAt(unix.AT_FDCWD, fifo, unix.O_WRONLY|unix.O_CREAT, 0o600), true, func(t *testing.T, c Completion, want error) {
					mustCancel(t, c, want)
				}
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				p := filepath.Join(t.TempDir(), "f")
				return OpenAt(unix.AT_FDCWD, p, unix.O_CREAT|unix.O_WRONLY, 0o600), func(t *testing.T) {
					_, err := os.Stat(p)
					assert.ErrorIs(t, err, os.ErrNotExist, "never opened")
				}
			},
			invalid: func(t *testing.T) []Op {
				return []Op{OpenAt(unix.AT_FDCWD, "", 0, 0), OpenAt(unix.AT_FDCWD, "a\x00b", 0, 0), OpenAt(-5, "x", 0, 0),
					OpenAt(unix.AT_FDCWD, "x", unix.O_CREAT, 0o70000), {code: OpOpenAt, fd: unix.AT_FDCWD}}
			},
		},
		{
			name: "close", code: OpClose,
			success: func(t *testing.T, r *Ring) {
				pr, _ := pipe(t)
				fd, err := unix.Dup(pr)
				require.NoError(t, err)
				c := doOp(t, r, Close(fd))
				require.NoError(t, c.Err)
				_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
				assert.ErrorIs(t, err, unix.EBADF, "closed")
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				pr, _ := pipe(t)
				fd, err := unix.Dup(pr)
				require.NoError(t, err)
				return Close(fd), false, func(t *testing.T, c Completion, want error) {
					canceledOrReal(t, c, want, func(c Completion) { assert.NoError(t, c.Err) })
					if c.Err != nil {
						unix.Close(fd)
					}
				}
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				pr, _ := pipe(t)
				fd, err := unix.Dup(pr)
				require.NoError(t, err)
				return Close(fd), func(t *testing.T) {
					_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
					assert.NoError(t, err, "still open")
					unix.Close(fd)
				}
			},
			invalid: func(t *testing.T) []Op { return []Op{Close(-1), Close(hugeFD)} },
		},
		{
			name: "statx", code: OpStatx,
			success: func(t *testing.T, r *Ring) {
				p := filepath.Join(t.TempDir(), "f")
				require.NoError(t, os.WriteFile(p, []byte("12345"), 0o600))
				var st unix.Statx_t
				c := doOp(t, r, Statx(unix.AT_FDCWD, p, 0, unix.STATX_SIZE|unix.STATX_MODE, &st))
				require.NoError(t, c.Err)
				assert.Equal(t, uint64(5), st.Size)
				assert.Equal(t, uint16(unix.S_IFREG), st.Mode&unix.S_IFMT)
				fd := tempFile(t, []byte("ab"))
				st = unix.Statx_t{}
				c = doOp(t, r, Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_SIZE, &st))
				require.NoError(t, c.Err)
				assert.Equal(t, uint64(2), st.Size)
				c = doOp(t, r, Statx(unix.AT_FDCWD, p+"-missing", 0, unix.STATX_SIZE, &st))
				assert.ErrorIs(t, c.Err, unix.ENOENT)
				assert.EqualError(t, c.Err, fmt.Sprintf("ioring: statx %q: no such file or directory", p+"-missing"))
			},
			pending: func(t *testing.T) (Op, bool, func(*testing.T, Completion, error)) {
				var st unix.Statx_t
				return Statx(unix.AT_FDCWD, "/", 0, unix.STATX_TYPE, &st), false, func(t *testing.T, c Completion, want error) {
					canceledOrReal(t, c, want, func(c Completion) {
						assert.NoError(t, c.Err)
						assert.Equal(t, uint16(unix.S_IFDIR), st.Mode&unix.S_IFMT)
					})
				}
			},
			token: func(t *testing.T) (Op, func(*testing.T)) {
				st := unix.Statx_t{Size: 77}
				return Statx(unix.AT_FDCWD, "/", 0, unix.STATX_SIZE, &st), func(t *testing.T) { assert.Equal(t, uint64(77), st.Size, "untouched") }
			},
			invalid: func(t *testing.T) []Op {
				var st unix.Statx_t
				return []Op{Statx(unix.AT_FDCWD, "/", 0, 0, nil), Statx(unix.AT_FDCWD, "a\x00", 0, 0, &st), Statx(unix.AT_FDCWD, "", 0, 0, &st), Statx(-3, "x", 0, 0, &st)}
			},
		},
	}
}

// udpSocket returns a blocking UDP socket bound on loopback and its address.
func udpSocket(t testing.TB) (int, *unix.SockaddrInet4) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	require.NoError(t, unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	sa, err := unix.Getsockname(fd)
	require.NoError(t, err)
	return fd, sa.(*unix.SockaddrInet4)
}

// doOp submits op and waits for its completion.
func doOp(t *testing.T, r *Ring, op Op) Completion {
	t.Helper()
	q, err := r.Submit(op)
	require.NoError(t, err, "submit %v", op.Code())
	c := reapOne(t, r)
	require.Equal(t, q, c.Req)
	return c
}

func TestConformanceSocketAndFileOps(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		fixed := make([]byte, 8192)
		require.NoError(t, r.RegisterBuffers([][]byte{fixed}))
		for _, oc := range append(opCases(fixed), fileCases()...) {
			if oc.on != nil {
				oc.on(r)
			}
			t.Run("op="+oc.name, func(t *testing.T) {
				t.Run("success", func(t *testing.T) {
					oc.success(t, r)
					assertNoMore(t, r)
				})
				t.Run("cancel", func(t *testing.T) {
					op, pends, settle := oc.pending(t)
					q, err := r.Submit(op)
					require.NoError(t, err)
					if pends {
						var c [1]Completion
						n, _ := r.Reap(c[:], 20*time.Millisecond)
						require.Zero(t, n, "pending op completed: %+v", c[0])
					}
					if err := q.Cancel(); err != nil {
						assert.ErrorIs(t, err, ErrNotFound)
					}
					settle(t, reapOne(t, r), ErrCanceled)
					assertNoMore(t, r)
				})
				t.Run("deadline", func(t *testing.T) {
					op, pends, settle := oc.pending(t)
					start := time.Now()
					_, err := r.Submit(op.WithDeadline(30 * time.Millisecond))
					require.NoError(t, err)
					c := reapOne(t, r)
					settle(t, c, ErrTimeout)
					if pends {
						assert.GreaterOrEqual(t, time.Since(start), 25*time.Millisecond)
					}
					assertNoMore(t, r)
				})
				t.Run("token", func(t *testing.T) {
					op, check := oc.token(t)
					tok := r.NewToken()
					require.NoError(t, tok.Cancel())
					c := doOp(t, r, op.WithToken(tok))
					assert.ErrorIs(t, c.Err, ErrCanceled)
					check(t)
				})
				t.Run("invalid", func(t *testing.T) {
					for i, op := range oc.invalid(t) {
						_, err := r.Submit(op)
						assert.ErrorIs(t, err, ErrInvalid, "invalid op %d", i)
					}
					assertNoMore(t, r)
				})
				t.Run("notsupported", func(t *testing.T) {
					if r.Backend().Backend != BackendURing {
						assert.NoError(t, r.checkSupported(oc.code), "the poll backend runs every op")
						return
					}
					code := opImpls[oc.code].uring
					saved := uringSupports
					uringSupports = func(u *uring.Ring, op uint8) bool { return op != code && saved(u, op) }
					r2, err := New(Config{Entries: 4, Backend: BackendURing})
					uringSupports = saved
					require.NoError(t, err)
					defer r2.Close()
					if oc.on != nil {
						oc.on(r2)
						defer oc.on(r)
					}
					op, check := oc.token(t)
					_, err = r2.Submit(op)
					assert.ErrorIs(t, err, ErrNotSupported)
					assert.NotErrorIs(t, err, ErrInvalid)
					check(t) // nothing happened
					for _, other := range append(opCases(nil), fileCases()...) {
						if other.code != oc.code {
							assert.NoError(t, r2.checkSupported(other.code), "%s lacks %s only", oc.name, other.name)
						}
					}
					c, err := r2.Do(t.Context(), Nop())
					require.NoError(t, err)
					assert.NoError(t, c.Err)
				})
			})
		}
	})
}

// On the poll backend an open still queued behind busy workers is canceled
// at once and never runs, while the opens already running deliver their
// real results. The workers are held by the pool's test seam (testHold),
// each with an open it has taken and not yet run.
func TestPollQueuedOpenCanceled(t *testing.T) {
	r := newPollRing(t, 128)
	b := pollBE(r)
	dir := t.TempDir()
	busy := b.maxWorkers
	release := make(chan struct{})
	var held atomic.Int32
	b.mu.Lock()
	b.testHold = func(uint32) {
		held.Add(1)
		<-release
	}
	b.mu.Unlock()
	released := false
	unhold := func() {
		if !released {
			released = true
			close(release)
		}
	}
	t.Cleanup(unhold) // before the ring's Close (newPollRing), which waits for the workers

	files := make([]string, busy)
	for i := range files {
		files[i] = filepath.Join(dir, "f"+strconv.Itoa(i))
		_, err := r.Submit(OpenAt(unix.AT_FDCWD, files[i], unix.O_CREAT|unix.O_WRONLY, 0o600))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { // every worker holds an open
		b.mu.Lock()
		defer b.mu.Unlock()
		return int(held.Load()) == busy && b.nworkers == busy && b.idle == 0 && b.work.head < 0
	}, 10*time.Second, time.Millisecond)
	for _, f := range files {
		_, err := os.Stat(f)
		require.ErrorIs(t, err, os.ErrNotExist, "held before it runs")
	}

	never := filepath.Join(dir, "never")
	q, err := r.Submit(OpenAt(unix.AT_FDCWD, never, unix.O_CREAT|unix.O_WRONLY, 0o600))
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, q.Cancel())
	c := reapOne(t, r)
	assert.Equal(t, q, c.Req)
	assert.ErrorIs(t, c.Err, ErrCanceled)
	assert.Less(t, time.Since(start), time.Second, "canceled at once")

	unhold()
	for range files {
		c := reapOne(t, r)
		require.NoError(t, c.Err)
		unix.Close(c.N)
	}
	for _, f := range files {
		_, err := os.Stat(f)
		assert.NoError(t, err, "the held opens ran")
	}
	_, err = os.Stat(never)
	assert.ErrorIs(t, err, os.ErrNotExist, "the canceled open never ran")
}

// hugeFD is an fd number no kernel fd can have: above MaxInt32 where int is
// 64 bits (it would be truncated), negative where it is 32.
var hugeFD = func() int {
	if strconv.IntSize == 64 {
		big := int64(1)<<40 | 3
		return int(big)
	}
	return -5
}()
