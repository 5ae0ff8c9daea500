//go:build linux

package ioring

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// adv9Case is one differential scenario.
type adv9Case struct {
	name string
	run  func(t *testing.T, r *Ring, o *adv9Obs)
}

func adv9Run(t *testing.T, cases []adv9Case) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { adv9Diff(t, c.run) })
	}
}

// TestAdv9Connect: the edges of Connect, compared across backends.
func TestAdv9Connect(t *testing.T) {
	adv9Run(t, []adv9Case{
		{"refused-bound-not-listening", func(t *testing.T, r *Ring, o *adv9Obs) {
			b := tcpSocket(t)
			require.NoError(t, unix.Bind(b, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
			sa, err := unix.Getsockname(b)
			require.NoError(t, err)
			fd := tcpSocket(t)
			o.add("connect: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
			o.add("again: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
		}},
		{"closed-listener", func(t *testing.T, r *Ring, o *adv9Obs) {
			lfd, sa := tcpListener(t, 4, 0)
			q := tcpSocket(t)
			require.NoError(t, unix.Connect(q, sa)) // queued, never accepted
			require.NoError(t, adv9Close(lfd))
			fd := tcpSocket(t)
			o.add("connect: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
			_, err := unix.Read(q, make([]byte, 1))
			o.add("the queued client reads: %v", err)
		}},
		{"backlog-full-then-accepted", func(t *testing.T, r *Ring, o *adv9Obs) {
			lfd, sa, _ := adv9FullListener(t)
			fd := tcpSocket(t)
			q := submitPending(t, r, Connect(fd, sa))
			adv9Accept(t, lfd) // makes room: the next SYN is taken
			cs := adv9Wait(t, r, q)
			o.add("connect: %s", adv9Res(cs[0]))
			srv := adv9Accept(t, lfd)
			peer, err := unix.Getpeername(srv)
			require.NoError(t, err)
			me, err := unix.Getsockname(fd)
			require.NoError(t, err)
			o.add("accepted the ring's connection: %v", peer.(*unix.SockaddrInet4).Port == me.(*unix.SockaddrInet4).Port)
			o.add("again: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
		}},
		{"second-connect-while-connecting", func(t *testing.T, r *Ring, o *adv9Obs) {
			lfd, sa, _ := adv9FullListener(t)
			fd := tcpSocket(t)
			q := submitPending(t, r, Connect(fd, sa))
			o.add("second: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
			assert.True(t, q.Pending(), "the first goes on")
			adv9Accept(t, lfd)
			o.add("first: %s", adv9Res(adv9Wait(t, r, q)[0]))
			o.add("third: %s", adv9Res(adv9Do(t, r, Connect(fd, sa))))
		}},
		{"connect-nonblocking-socket-connecting", func(t *testing.T, r *Ring, o *adv9Obs) {
			// The caller started the connect itself (EINPROGRESS) and
			// hands the socket to the ring: its Connect reports the
			// outcome of the one under way.
			lfd, sa, _ := adv9FullListener(t)
			fd := tcpSocket(t)
			require.NoError(t, unix.SetNonblock(fd, true))
			assert.Equal(t, unix.EINPROGRESS, unix.Connect(fd, sa))
			c := adv9Do(t, r, Connect(fd, sa))
			o.add("ring connect: %s", adv9Res(c))
			adv9Accept(t, lfd)
		}},
		{"reset-by-shutdown", func(t *testing.T, r *Ring, o *adv9Obs) {
			_, sa, _ := adv9FullListener(t)
			fd := tcpSocket(t)
			q := submitPending(t, r, Connect(fd, sa))
			sq, err := r.Submit(Shutdown(fd, unix.SHUT_RDWR))
			require.NoError(t, err)
			got := adv9WaitBy(t, r, q, sq)
			o.log("shutdown: %s", adv9Res(got[sq]))
			cr := adv9Res(got[q])
			if errors.Is(got[q].Err, unix.ENETUNREACH) {
				cr = "ECONNRESET" // as TestPort6ConnectThenShutdown allows
				o.log("connect: ENETUNREACH")
			}
			o.add("connect: %s", cr)
			o.log("shutdown again: %s", adv9Res(adv9Do(t, r, Shutdown(fd, unix.SHUT_RDWR))))
		}},
		{"udp", func(t *testing.T, r *Ring, o *adv9Obs) {
			peer, psa := udpSocket(t)
			fd, _ := udpSocket(t)
			o.add("connect: %s", adv9Res(adv9Do(t, r, Connect(fd, psa))))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(fd, []byte("ping"), 0))))
			buf := make([]byte, 8)
			n, _, err := unix.Recvfrom(peer, buf, 0)
			require.NoError(t, err)
			o.add("peer got %q", buf[:n])
			o.add("connect again: %s", adv9Res(adv9Do(t, r, Connect(fd, psa))))
			// A port nobody listens on: the ICMP error comes back as
			// ECONNREFUSED to a receive that waits.
			gone, gsa := udpSocket(t)
			require.NoError(t, adv9Close(gone))
			o.add("connect to a closed port: %s", adv9Res(adv9Do(t, r, Connect(fd, gsa))))
			q := submitPending(t, r, Recv(fd, buf, 0))
			sq, err := r.Submit(Send(fd, []byte("x"), 0))
			require.NoError(t, err)
			got := adv9WaitBy(t, r, q, sq)
			o.add("send: %s", adv9Res(got[sq]))
			o.add("pending recv: %s", adv9Res(got[q]))
			require.NoError(t, unix.Sendto(peer, []byte("late"), 0, gsa)) // nobody there
			o.add("send after the refusal: %s", adv9Res(adv9Do(t, r, Send(fd, []byte("y"), 0))))
			o.add("recv: %s", adv9Res(adv9Do(t, r, Recv(fd, buf, unix.MSG_DONTWAIT))))
		}},
		{"unix", func(t *testing.T, r *Ring, o *adv9Obs) {
			lfd, path := adv9UnixListener(t, 4)
			fd := adv9UnixSocket(t)
			o.add("connect: %s", adv9Res(adv9Do(t, r, Connect(fd, &unix.SockaddrUnix{Name: path}))))
			adv9Accept(t, lfd)
			o.add("again: %s", adv9Res(adv9Do(t, r, Connect(fd, &unix.SockaddrUnix{Name: path}))))
			fd2 := adv9UnixSocket(t)
			o.add("no such path: %s", adv9Res(adv9Do(t, r, Connect(fd2, &unix.SockaddrUnix{Name: path + "x"}))))
			require.NoError(t, adv9Close(lfd))
			o.add("closed listener: %s", adv9Res(adv9Do(t, r, Connect(fd2, &unix.SockaddrUnix{Name: path}))))
			d, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			t.Cleanup(func() { unix.Close(d) })
			o.add("stream to a dgram path? no: dgram to stream listener path: %s",
				adv9Res(adv9Do(t, r, Connect(d, &unix.SockaddrUnix{Name: path}))))
		}},
	})
}

// TestAdv9Accept: accepts at the edges.
func TestAdv9Accept(t *testing.T) {
	var cases []adv9Case
	for _, lflags := range []int{0, unix.SOCK_NONBLOCK} {
		sfx := "-blocking"
		if lflags != 0 {
			sfx = "-nonblocking"
		}
		cases = append(cases,
			adv9Case{"multishot-then-shutdown" + sfx, func(t *testing.T, r *Ring, o *adv9Obs) {
				lfd, sa := tcpListener(t, 8, lflags)
				q := submitPending(t, r, AcceptMultishot(lfd, 0))
				cl := tcpSocket(t)
				require.NoError(t, unix.Connect(cl, sa))
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				if c.Err == nil && c.N > 0 {
					unix.Close(c.N)
					c.N = 1
				}
				o.add("first: %s", adv9Res(c))
				require.NoError(t, unix.Shutdown(lfd, unix.SHUT_RDWR))
				for _, c := range adv9Wait(t, r, q) {
					o.add("then: %s", adv9Res(c))
				}
			}},
			adv9Case{"closed-under-pending" + sfx, func(t *testing.T, r *Ring, o *adv9Obs) {
				// The request holds the listener: a connection made after
				// the caller closed its fd is still accepted.
				lfd, sa := tcpListener(t, 8, lflags)
				q := submitPending(t, r, Accept(lfd, 0))
				require.NoError(t, adv9Close(lfd))
				cl := tcpSocket(t)
				err := unix.Connect(cl, sa)
				o.add("connect after the close: %v", err)
				c := adv9Wait(t, r, q)[0]
				if c.Err == nil && c.N > 0 {
					unix.Close(c.N)
					c.N = 1
				}
				o.add("accept: %s", adv9Res(c))
			}},
			adv9Case{"closed-then-canceled" + sfx, func(t *testing.T, r *Ring, o *adv9Obs) {
				lfd, _ := tcpListener(t, 8, lflags)
				q := submitPending(t, r, Accept(lfd, 0))
				qm := submitPending(t, r, AcceptMultishot(lfd, 0))
				require.NoError(t, adv9Close(lfd))
				assert.NoError(t, q.Cancel())
				assert.NoError(t, qm.Cancel())
				got := adv9WaitBy(t, r, q, qm)
				o.add("accept: %s", adv9Res(got[q]))
				o.add("multishot: %s", adv9Res(got[qm]))
			}},
		)
	}
	cases = append(cases,
		adv9Case{"not-listening", func(t *testing.T, r *Ring, o *adv9Obs) {
			fd := tcpSocket(t)
			o.add("accept: %s", adv9Res(adv9Do(t, r, Accept(fd, 0))))
			o.add("multishot: %s", adv9Res(adv9Do(t, r, AcceptMultishot(fd, 0))))
			u, _ := udpSocket(t)
			o.add("udp accept: %s", adv9Res(adv9Do(t, r, Accept(u, 0))))
			o.add("udp multishot: %s", adv9Res(adv9Do(t, r, AcceptMultishot(u, 0))))
			a, _ := socketpair(t, unix.SOCK_STREAM)
			o.add("socketpair accept: %s", adv9Res(adv9Do(t, r, Accept(a, 0))))
			p, _ := pipe(t)
			o.add("pipe accept: %s", adv9Res(adv9Do(t, r, Accept(p, 0))))
		}},
	)
	adv9Run(t, cases)
}

// TestAdv9SendRecv: sends and receives at a connection's edges.
func TestAdv9SendRecv(t *testing.T) {
	adv9Run(t, []adv9Case{
		{"peer-reset-pending-recv", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			q := submitPending(t, r, Recv(cl, make([]byte, 8), 0))
			adv9Reset(t, srv)
			o.add("recv: %s", adv9Res(adv9Wait(t, r, q)[0]))
			o.add("recv again: %s", adv9Res(adv9Do(t, r, Recv(cl, make([]byte, 8), 0))))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
		}},
		{"peer-reset-then-send", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			adv9Reset(t, srv)
			adv9AwaitErr(t, cl)
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
			o.add("send again: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
			o.add("sendmsg: %s", adv9Res(adv9Do(t, r, SendMsg(cl, &Msg{Buffers: [][]byte{[]byte("y")}}, 0))))
			o.add("recvmsg: %s", adv9Res(adv9Do(t, r, RecvMsg(cl, &Msg{Buffers: [][]byte{make([]byte, 4)}}, 0))))
		}},
		{"peer-reset-after-data-waitall", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			buf := make([]byte, 8)
			q := submitPending(t, r, Recv(cl, buf, unix.MSG_WAITALL))
			_, err := unix.Write(srv, []byte("abc"))
			require.NoError(t, err)
			adv9Reset(t, srv)
			c := adv9Wait(t, r, q)[0]
			o.add("recv: %s %q", adv9Res(c), buf[:min(max(c.N, 0), 8)])
		}},
		{"peer-reset-with-data-unread", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			_, err := unix.Write(srv, []byte("abc"))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return readable(t, cl) }, 5*time.Second, time.Millisecond)
			adv9Reset(t, srv)
			adv9AwaitErr(t, cl)
			buf := make([]byte, 8)
			c := adv9Do(t, r, Recv(cl, buf, 0))
			o.add("recv: %s %q", adv9Res(c), buf[:max(c.N, 0)])
			o.add("recv again: %s", adv9Res(adv9Do(t, r, Recv(cl, buf, 0))))
		}},
		{"epipe-after-peer-closed", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			require.NoError(t, adv9Close(srv))
			// Wait for the FIN, not on time.
			c := adv9Do(t, r, Recv(cl, make([]byte, 1), 0))
			o.add("recv sees the end: %s", adv9Res(c))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("data"), 0))))
			adv9AwaitErr(t, cl) // the closed peer's reset
			for i := range 2 {
				o.add("send %d: %s", i, adv9Res(adv9Do(t, r, Send(cl, []byte("data"), 0))))
			}
		}},
		{"own-shut-wr", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			o.add("shutdown: %s", adv9Res(adv9Do(t, r, Shutdown(cl, unix.SHUT_WR))))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
			o.add("sendmsg: %s", adv9Res(adv9Do(t, r, SendMsg(cl, &Msg{Buffers: [][]byte{[]byte("y")}}, 0))))
			o.add("peer recv: %s", adv9Res(adv9Do(t, r, Recv(srv, make([]byte, 4), 0))))
			o.add("peer send: %s", adv9Res(adv9Do(t, r, Send(srv, []byte("back"), 0))))
			buf := make([]byte, 8)
			c := adv9Do(t, r, Recv(cl, buf, 0))
			o.add("recv: %s %q", adv9Res(c), buf[:max(c.N, 0)])
		}},
		{"own-shut-rd-pending-recv", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			q := submitPending(t, r, Recv(cl, make([]byte, 4), 0))
			sq, err := r.Submit(Shutdown(cl, unix.SHUT_RD))
			require.NoError(t, err)
			got := adv9WaitBy(t, r, q, sq)
			o.add("shutdown: %s", adv9Res(got[sq]))
			o.add("pending recv: %s", adv9Res(got[q]))
			o.add("recv: %s", adv9Res(adv9Do(t, r, Recv(cl, make([]byte, 4), 0))))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
			c := adv9Do(t, r, Recv(srv, make([]byte, 4), 0))
			o.add("peer recv: %s", adv9Res(c))
		}},
		{"peer-shut-wr-pending-recvmsg", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			q := submitPending(t, r, RecvMsg(cl, &Msg{Buffers: [][]byte{make([]byte, 4)}}, 0))
			require.NoError(t, unix.Shutdown(srv, unix.SHUT_WR))
			o.add("pending recvmsg: %s", adv9Res(adv9Wait(t, r, q)[0]))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
		}},
		{"peer-shut-rd", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			require.NoError(t, unix.Shutdown(srv, unix.SHUT_RD))
			o.add("send: %s", adv9Res(adv9Do(t, r, Send(cl, []byte("x"), 0))))
			o.add("peer recv: %s", adv9Res(adv9Do(t, r, Recv(srv, make([]byte, 4), 0))))
		}},
		{"peek", func(t *testing.T, r *Ring, o *adv9Obs) {
			cl, srv := port2TCPPair(t)
			buf := make([]byte, 3)
			q := submitPending(t, r, Recv(cl, buf, unix.MSG_PEEK))
			_, err := unix.Write(srv, []byte("hello"))
			require.NoError(t, err)
			c := adv9Wait(t, r, q)[0]
			o.add("peek: %s %q", adv9Res(c), buf[:max(c.N, 0)])
			all := make([]byte, 5)
			c = adv9Do(t, r, Recv(cl, all, unix.MSG_WAITALL))
			o.add("recv: %s %q", adv9Res(c), all[:max(c.N, 0)])
			require.NoError(t, unix.Shutdown(srv, unix.SHUT_WR))
			c = adv9Do(t, r, Recv(cl, buf, unix.MSG_PEEK))
			o.add("peek at the end: %s", adv9Res(c))
		}},
		{"udp-trunc", func(t *testing.T, r *Ring, o *adv9Obs) {
			fd, sa := udpSocket(t)
			tx, _ := udpSocket(t)
			buf := make([]byte, 4)
			q := submitPending(t, r, Recv(fd, buf, unix.MSG_TRUNC))
			require.NoError(t, unix.Sendto(tx, []byte("0123456789"), 0, sa))
			c := adv9Wait(t, r, q)[0]
			o.add("recv MSG_TRUNC: %s %q", adv9Res(c), buf)
			require.NoError(t, unix.Sendto(tx, []byte("abcdefghij"), 0, sa))
			o.add("recv: %s %q", adv9Res(adv9Do(t, r, Recv(fd, buf, 0))), buf)
			require.NoError(t, unix.Sendto(tx, []byte("ABCDEFGHIJ"), 0, sa))
			m := &Msg{Buffers: [][]byte{make([]byte, 4)}}
			c = adv9Do(t, r, RecvMsg(fd, m, 0))
			o.add("recvmsg: %s flags trunc %v", adv9Res(c), m.Flags()&unix.MSG_TRUNC != 0)
			require.NoError(t, unix.Sendto(tx, []byte("klmnopqrst"), 0, sa))
			m = &Msg{Buffers: [][]byte{make([]byte, 4)}}
			c = adv9Do(t, r, RecvMsg(fd, m, unix.MSG_TRUNC))
			o.add("recvmsg MSG_TRUNC: %s flags trunc %v", adv9Res(c), m.Flags()&unix.MSG_TRUNC != 0)
			// MSG_WAITALL on a datagram socket: one message, short.
			require.NoError(t, unix.Sendto(tx, []byte("xy"), 0, sa))
			o.add("recv WAITALL: %s", adv9Res(adv9Do(t, r, Recv(fd, buf, unix.MSG_WAITALL))))
			// PEEK|TRUNC: the length, the datagram stays.
			require.NoError(t, unix.Sendto(tx, []byte("0123456789"), 0, sa))
			o.add("peek|trunc: %s", adv9Res(adv9Do(t, r, Recv(fd, buf, unix.MSG_PEEK|unix.MSG_TRUNC))))
			o.add("recv: %s", adv9Res(adv9Do(t, r, Recv(fd, buf, 0))))
		}},
		{"zero-length", func(t *testing.T, r *Ring, o *adv9Obs) {
			fd, sa := udpSocket(t)
			tx, _ := udpSocket(t)
			_, err := r.Submit(Send(tx, []byte{}, 0))
			o.add("empty send refused: %v", errors.Is(err, ErrInvalid))
			_, err = r.Submit(Recv(fd, nil, 0))
			o.add("nil recv refused: %v", errors.Is(err, ErrInvalid))
			_, err = r.Submit(SendMsg(tx, &Msg{}, 0))
			o.add("empty sendmsg refused: %v", errors.Is(err, ErrInvalid))
			// A zero-length datagram is a message.
			buf := make([]byte, 4)
			q := submitPending(t, r, Recv(fd, buf, 0))
			require.NoError(t, unix.Sendto(tx, nil, 0, sa))
			o.add("recv of an empty datagram: %s", adv9Res(adv9Wait(t, r, q)[0]))
			// A message with rights and no data, on a unix datagram pair.
			a, b := socketpair(t, unix.SOCK_DGRAM)
			p, w := pipe(t)
			_ = w
			c := adv9Do(t, r, SendMsg(a, &Msg{Control: unix.UnixRights(p)}, 0))
			o.add("sendmsg of rights alone: %s", adv9Res(c))
			m := &Msg{Control: make([]byte, unix.CmsgSpace(4))}
			c = adv9Do(t, r, RecvMsg(b, m, 0))
			scms, err := m.ControlMessages()
			require.NoError(t, err)
			nfd := 0
			for _, scm := range scms {
				fds, err := unix.ParseUnixRights(&scm)
				require.NoError(t, err)
				for _, f := range fds {
					unix.Close(f)
					nfd++
				}
			}
			o.add("recvmsg of rights alone: %s fds %d", adv9Res(c), nfd)
			// A stream's receive with room for control only, at data.
			s1, s2 := socketpair(t, unix.SOCK_STREAM)
			_, err = unix.Write(s2, []byte("abc"))
			require.NoError(t, err)
			m = &Msg{Control: make([]byte, unix.CmsgSpace(4))}
			o.add("stream recvmsg, no data room: %s", adv9Res(adv9Do(t, r, RecvMsg(s1, m, 0))))
			rb := make([]byte, 8)
			n, err := unix.Read(s1, rb)
			require.NoError(t, err)
			o.add("the data is still there: %q", rb[:n])
		}},
	})
}

// TestAdv9Shutdown: Shutdown on sockets in every state.
func TestAdv9Shutdown(t *testing.T) {
	adv9Diff(t, func(t *testing.T, r *Ring, o *adv9Obs) {
		fd := tcpSocket(t)
		for _, how := range []int{unix.SHUT_RD, unix.SHUT_WR, unix.SHUT_RDWR} {
			o.add("unconnected %d: %s", how, adv9Res(adv9Do(t, r, Shutdown(fd, how))))
		}
		cl, srv := port2TCPPair(t)
		o.add("connected SHUT_WR: %s", adv9Res(adv9Do(t, r, Shutdown(cl, unix.SHUT_WR))))
		o.add("twice: %s", adv9Res(adv9Do(t, r, Shutdown(cl, unix.SHUT_WR))))
		o.add("SHUT_RDWR after: %s", adv9Res(adv9Do(t, r, Shutdown(cl, unix.SHUT_RDWR))))
		o.add("peer recv: %s", adv9Res(adv9Do(t, r, Recv(srv, make([]byte, 1), 0))))
		lfd, _ := tcpListener(t, 4, 0)
		o.add("listener SHUT_WR: %s", adv9Res(adv9Do(t, r, Shutdown(lfd, unix.SHUT_WR))))
		o.add("listener SHUT_RD: %s", adv9Res(adv9Do(t, r, Shutdown(lfd, unix.SHUT_RD))))
		u, _ := udpSocket(t)
		o.add("udp unconnected: %s", adv9Res(adv9Do(t, r, Shutdown(u, unix.SHUT_RDWR))))
		p, _ := pipe(t)
		o.add("pipe: %s", adv9Res(adv9Do(t, r, Shutdown(p, unix.SHUT_RDWR))))
		a, b := socketpair(t, unix.SOCK_STREAM)
		o.add("socketpair: %s", adv9Res(adv9Do(t, r, Shutdown(a, unix.SHUT_RDWR))))
		o.add("socketpair peer reads: %s", adv9Res(adv9Do(t, r, Recv(b, make([]byte, 1), 0))))
		o.add("socketpair peer sends: %s", adv9Res(adv9Do(t, r, Send(b, []byte("x"), 0))))
	})
}

// TestAdv9CancelRandom: the pending socket operations above, each ended
// by a cancel or a deadline at a random moment while the event that ends
// it races in. Exactly one completion, either its real result or the
// cancel, and nothing lost: a canceled accept leaves its connection
// queued, a canceled receive its data, on both backends.
func TestAdv9CancelRandom(t *testing.T) {
	rng := adv9Rand(t)
	const rounds = 12
	type round struct {
		delay    time.Duration
		deadline bool
		event    time.Duration
	}
	plan := make([]round, rounds)
	for i := range plan {
		plan[i] = round{
			delay:    time.Duration(rng.IntN(3000)) * time.Microsecond,
			deadline: rng.IntN(2) == 0,
			event:    time.Duration(rng.IntN(3000)) * time.Microsecond,
		}
	}
	end := func(t *testing.T, q Request, rd round) {
		if rd.deadline {
			return
		}
		time.Sleep(rd.delay) // the moment of the cancel, not a synchronization
		if err := q.Cancel(); err != nil {
			assert.ErrorIs(t, err, ErrNotFound)
		}
	}
	op := func(o Op, rd round) Op {
		if rd.deadline {
			return o.WithDeadline(rd.delay + time.Microsecond)
		}
		return o
	}
	canceled := func(c Completion) bool {
		return errors.Is(c.Err, ErrCanceled)
	}
	t.Run("recv-vs-data", func(t *testing.T) {
		forEachBackend(t, 16, func(t *testing.T, r *Ring) {
			for i, rd := range plan {
				cl, srv := port2TCPPair(t)
				buf := make([]byte, 8)
				q, err := r.Submit(op(Recv(cl, buf, 0), rd))
				require.NoError(t, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					time.Sleep(rd.event)
					unix.Write(srv, []byte("abcd"))
				}()
				end(t, q, rd)
				c := adv9Wait(t, r, q)[0]
				<-done
				if canceled(c) {
					rb := make([]byte, 8)
					n, err := unix.Read(cl, rb) // blocking: the data is there or coming
					require.NoError(t, err)
					assert.Equal(t, "abcd", string(rb[:n]), "round %d: the data stayed", i)
				} else {
					require.NoError(t, c.Err, "round %d", i)
					assert.Equal(t, "abcd", string(buf[:c.N]), "round %d", i)
				}
				adv9Close(cl)
				adv9Close(srv)
			}
			assertNoMore(t, r)
		})
	})
	t.Run("recv-vs-reset", func(t *testing.T) {
		forEachBackend(t, 16, func(t *testing.T, r *Ring) {
			for i, rd := range plan {
				cl, srv := port2TCPPair(t)
				q, err := r.Submit(op(Recv(cl, make([]byte, 8), 0), rd))
				require.NoError(t, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					time.Sleep(rd.event)
					unix.SetsockoptLinger(srv, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
					adv9Close(srv)
				}()
				end(t, q, rd)
				c := adv9Wait(t, r, q)[0]
				<-done
				if canceled(c) {
					// The reset was not taken: the socket still has it.
					_, err := unix.Read(cl, make([]byte, 1))
					assert.Equal(t, unix.ECONNRESET, err, "round %d: the reset stayed", i)
				} else {
					assert.ErrorIs(t, c.Err, unix.ECONNRESET, "round %d", i)
				}
				adv9Close(cl)
			}
			assertNoMore(t, r)
		})
	})
	t.Run("accept-vs-connect", func(t *testing.T) {
		forEachBackend(t, 16, func(t *testing.T, r *Ring) {
			for i, rd := range plan {
				lflags := 0
				if i%2 == 1 {
					lflags = unix.SOCK_NONBLOCK
				}
				lfd, sa := tcpListener(t, 8, lflags)
				q, err := r.Submit(op(Accept(lfd, 0), rd))
				require.NoError(t, err)
				cl := tcpSocket(t)
				done := make(chan error, 1)
				go func() {
					time.Sleep(rd.event)
					done <- unix.Connect(cl, sa)
				}()
				end(t, q, rd)
				c := adv9Wait(t, r, q)[0]
				require.NoError(t, <-done)
				me, err := unix.Getsockname(cl)
				require.NoError(t, err)
				fd := c.N
				if canceled(c) {
					fd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC) // the connection stayed
					require.NoError(t, err, "round %d", i)
				} else {
					require.NoError(t, c.Err, "round %d", i)
				}
				peer, err := unix.Getpeername(fd)
				require.NoError(t, err)
				assert.Equal(t, me.(*unix.SockaddrInet4).Port, peer.(*unix.SockaddrInet4).Port, "round %d", i)
				unix.Close(fd)
				adv9Close(lfd)
			}
			assertNoMore(t, r)
		})
	})
	t.Run("connect-vs-accept", func(t *testing.T) {
		forEachBackend(t, 16, func(t *testing.T, r *Ring) {
			for i, rd := range plan {
				lfd, sa, _ := adv9FullListener(t)
				fd := tcpSocket(t)
				q, err := r.Submit(op(Connect(fd, sa), rd))
				require.NoError(t, err)
				done := make(chan struct{})
				go func() {
					defer close(done)
					time.Sleep(rd.event)
					if a, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC); err == nil {
						unix.Close(a)
					}
				}()
				end(t, q, rd)
				c := adv9Wait(t, r, q)[0]
				<-done
				if !canceled(c) {
					assert.NoError(t, c.Err, "round %d", i)
				}
				adv9Close(fd)
				adv9Close(lfd)
			}
			assertNoMore(t, r)
		})
	})
}
