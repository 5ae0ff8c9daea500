//go:build linux

package ioring

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Ports of liburing's ring-leak.c, ring-leak2.c and file-exit-unreg.c:
// the life of the files a ring holds. liburing checks that files the
// ring took references to (registered files, files of requests in
// flight) are let go when the ring is torn down or the files are
// unregistered, so that nothing keeps a socket open behind its owner's
// back. cancelio holds files in more places than the kernel does: a
// registered file's reference (the kernel's, or on the poll backend a
// duplicate fd), the duplicate a multishot request waits on (the poll
// backend's epoll registration, and RecvMultishot's end-of-stream peek on
// both backends), and one duplicate per registered stream socket for
// RecvMultishot on a fixed file. Each must go when the doc says: the
// request's own at its final completion, the registered ones at
// UnregisterFiles or Close.
//
// What is checked is what an owner sees: once the caller closed its own
// fd, the socket's peer reads end-of-file (a stream socket), or a new
// connection to a listener is refused. A leaked reference keeps the
// socket open and the peer waiting.

// port9PeerSeesEOF reports whether the peer of a stream socket pair sees
// the end of the stream within 5s.
func port9PeerSeesEOF(t *testing.T, peer int) bool {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(peer), Events: unix.POLLIN | unix.POLLRDHUP}}
		n, err := unix.Poll(fds, 100)
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		if n == 0 {
			continue
		}
		var b [16]byte
		m, _, err := unix.Recvfrom(peer, b[:], unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			continue
		}
		if m == 0 && err == nil {
			return true
		}
		if err != nil { // ECONNRESET and the like: gone too
			return true
		}
		// data left over from the test: read on
	}
	return false
}

// port9Pair is a connected AF_UNIX stream pair; the peer closes with the
// test, the first end is the caller's to close.
func port9Pair(t *testing.T) (mine, peer int) {
	a, b := adv13SockPair(t, unix.SOCK_STREAM)
	t.Cleanup(func() { unix.Close(b) })
	return a, b
}

// TestPort9MultishotLetsGoOfItsFile: a multishot request (RecvMultishot,
// PollMultishot, AcceptMultishot) canceled and its final completion
// taken, the ring still open: closing the caller's fd closes the socket.
// The request's own duplicate of the fd ("one more fd while the request
// is in flight") must be gone with its final completion.
func TestPort9MultishotLetsGoOfItsFile(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		br, err := r.NewBufRing(4, 64)
		require.NoError(t, err)
		defer br.Close()

		kinds := []string{"recv-multishot", "poll-multishot", "recv-multishot-data", "poll-multishot-data"}
		for _, kind := range kinds {
			mine, peer := port9Pair(t)
			var op Op
			switch kind {
			case "recv-multishot", "recv-multishot-data":
				op = RecvMultishot(mine, br, 0)
			default:
				op = PollMultishot(mine, unix.POLLIN)
			}
			q, err := r.Submit(op)
			require.NoError(t, err)
			if kind == "recv-multishot-data" || kind == "poll-multishot-data" {
				_, err = unix.Write(peer, []byte("x"))
				require.NoError(t, err)
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(10 * time.Millisecond)
			q.Cancel()
			for _, c := range adv9Wait(t, r, q) {
				if c.Buffer {
					require.NoError(t, br.Release(c.BufID))
				}
			}
			require.NoError(t, unix.Close(mine))
			out = append(out, fmt.Sprintf("%s: peer sees EOF after close: %v", kind, port9PeerSeesEOF(t, peer)))
		}

		// AcceptMultishot on a listener: once it ended and the caller
		// closed the listener, a connect to its address is refused.
		l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		sa := &unix.SockaddrUnix{Name: fmt.Sprintf("@cancelio-port9-%d-%d", unix.Getpid(), time.Now().UnixNano())}
		require.NoError(t, unix.Bind(l, sa))
		require.NoError(t, unix.Listen(l, 4))
		q, err := r.Submit(AcceptMultishot(l, 0))
		require.NoError(t, err)
		time.Sleep(10 * time.Millisecond)
		q.Cancel()
		for _, c := range adv9Wait(t, r, q) {
			if c.Err == nil && c.N > 0 {
				unix.Close(c.N)
			}
		}
		require.NoError(t, unix.Close(l))
		c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		cerr := unix.Connect(c, sa)
		unix.Close(c)
		out = append(out, fmt.Sprintf("accept-multishot: connect after close: %v", cerr))
		return out
	})
	want := []string{
		"recv-multishot: peer sees EOF after close: true",
		"poll-multishot: peer sees EOF after close: true",
		"recv-multishot-data: peer sees EOF after close: true",
		"poll-multishot-data: peer sees EOF after close: true",
		"accept-multishot: connect after close: connection refused",
	}
	for b, g := range got {
		require.Equal(t, want, g, "backend %v", b)
	}
	adv13Agree(t, got)
}

// TestPort9RegisteredFilesLetGo ports file-exit-unreg.c and the
// ring-leak tests: sockets registered with RegisterFiles, the caller's
// fds closed at once (the registered reference keeps them open, as the
// doc says), then
//   - UnregisterFiles, the ring still open: each socket closes (its peer
//     sees the end of the stream), including one that a RecvMultishot on
//     the fixed file used (its duplicate kept per registered stream socket
//     goes "until UnregisterFiles");
//   - or the ring closed without UnregisterFiles, with a RecvMultishot and
//     a Recv on the fixed files still in flight: Close lets go of every
//     file.
//
// Before either, a Recv on registered file 0 still gets its peer's data
// (the registration holds the sockets).
func TestPort9RegisteredFilesLetGo(t *testing.T) {
	for _, how := range []string{"unregister", "close"} {
		t.Run(how, func(t *testing.T) {
			got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
				var out []string
				br, err := r.NewBufRing(4, 64)
				require.NoError(t, err)
				var mine, peers [3]int
				for i := range mine {
					mine[i], peers[i] = port9Pair(t)
				}
				require.NoError(t, r.RegisterFiles(mine[:]))
				for _, fd := range mine {
					require.NoError(t, unix.Close(fd))
				}
				// The registration holds the sockets: data still goes through.
				_, err = unix.Write(peers[0], []byte("ping"))
				require.NoError(t, err)
				rb := make([]byte, 8)
				c := doOp(t, r, Recv(0, rb, 0).FixedFile())
				out = append(out, fmt.Sprintf("recv on registered file 0: %s %q", adv13Out(c), rb[:c.N]))

				qm, err := r.Submit(RecvMultishot(1, br, 0).FixedFile())
				require.NoError(t, err)
				q2, err := r.Submit(Recv(2, make([]byte, 8), 0).FixedFile())
				require.NoError(t, err)
				time.Sleep(10 * time.Millisecond)

				switch how {
				case "unregister":
					qm.Cancel()
					q2.Cancel()
					for _, c := range adv9Wait(t, r, qm, q2) {
						if c.Buffer {
							br.Release(c.BufID)
						}
					}
					require.NoError(t, br.Close())
					require.NoError(t, r.UnregisterFiles())
				case "close":
					require.NoError(t, r.Close())
				}
				for i, p := range peers {
					out = append(out, fmt.Sprintf("after %s: peer %d sees EOF: %v", how, i, port9PeerSeesEOF(t, p)))
				}
				return out
			})
			want := []string{
				`recv on registered file 0: n=4 "ping"`,
				fmt.Sprintf("after %s: peer 0 sees EOF: true", how),
				fmt.Sprintf("after %s: peer 1 sees EOF: true", how),
				fmt.Sprintf("after %s: peer 2 sees EOF: true", how),
			}
			for b, g := range got {
				require.Equal(t, want, g, "backend %v", b)
			}
			adv13Agree(t, got)
		})
	}
}
