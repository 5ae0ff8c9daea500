//go:build linux

package ioring

import (
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv20MultishotFixedUnregistered: the three multishot operations on
// registered files (Op.FixedFile) whose caller fds were closed right after
// RegisterFiles, and whose table is dropped (UnregisterFiles) while the
// requests are in flight. UnregisterFiles promises that "requests already
// accepted keep the files they were handed", and RecvMultishot that the end
// of a stream on a registered socket is reported (its own duplicate,
// taken at submission). So the requests go on: a connection is accepted,
// the pipe's readiness is reported, the socket's data arrives and its end
// ends the receive with 0; the other two end with ErrCanceled; both
// backends alike, and no fd is left behind.
func TestAdv20MultishotFixedUnregistered(t *testing.T) {
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		br, err := r.NewBufRing(4, 64)
		require.NoError(t, err)
		lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		require.NoError(t, unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		require.NoError(t, unix.Listen(lfd, 8))
		sa, err := unix.Getsockname(lfd)
		require.NoError(t, err)
		sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		rx, tx := sp[0], sp[1]
		defer unix.Close(tx)
		var p [2]int
		require.NoError(t, unix.Pipe2(p[:], unix.O_CLOEXEC))
		defer unix.Close(p[1])

		require.NoError(t, r.RegisterFiles([]int{lfd, rx, p[0]}))
		for _, fd := range []int{lfd, rx, p[0]} {
			require.NoError(t, unix.Close(fd)) // the table holds the files
		}
		qa, err := r.Submit(AcceptMultishot(0, 0).FixedFile().WithUser("accept"))
		require.NoError(t, err)
		qr, err := r.Submit(RecvMultishot(1, br, 0).FixedFile().WithUser("recv"))
		require.NoError(t, err)
		qp, err := r.Submit(PollMultishot(2, unix.POLLIN).FixedFile().WithUser("poll"))
		require.NoError(t, err)
		require.NoError(t, r.UnregisterFiles())

		c := dialTCP(t, sa.(*unix.SockaddrInet4))
		defer unix.Close(c)
		ca := reapMore(t, r, qa)
		require.NoError(t, ca.Err)
		require.Greater(t, ca.N, 0)
		unix.Close(ca.N)
		out = append(out, "accept: a connection")

		_, err = unix.Write(p[1], []byte("x"))
		require.NoError(t, err)
		cp := reapMore(t, r, qp)
		out = append(out, fmt.Sprintf("poll: events %#x", cp.N&(unix.POLLIN|unix.POLLHUP|unix.POLLERR)))

		_, err = unix.Write(tx, []byte("hello"))
		require.NoError(t, err)
		require.NoError(t, unix.Shutdown(tx, unix.SHUT_WR))
		var data []byte
		for {
			cr := reapOne(t, r)
			require.Equal(t, qr, cr.Req)
			if cr.Buffer {
				data = append(data, br.Bytes(cr)...)
				require.NoError(t, br.Release(cr.BufID))
			}
			if !cr.More {
				out = append(out, fmt.Sprintf("recv: %q then %s", data, adv13Out(cr)))
				break
			}
		}
		require.NoError(t, qa.Cancel())
		require.NoError(t, qp.Cancel())
		var finals []string
		for range 2 {
			cf := reapOne(t, r)
			require.False(t, cf.More, "%+v", cf)
			finals = append(finals, fmt.Sprintf("%v: %s", cf.User, adv13Out(cf)))
		}
		sort.Strings(finals)
		out = append(out, finals...)
		require.NoError(t, br.Close())
		assertSettled(t, r)
		return out
	})
	adv13Agree(t, got)
}
