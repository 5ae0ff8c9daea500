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

// Seventh round, a listener with connections queued: ported from
// liburing's accept-non-empty (accepts on a listener whose queue holds
// several connections, one after another, each reporting whether more
// wait). The API has no "more pending" flag; what carries over is that
// each accept takes one queued connection, and, with a cancel racing the
// accepts, that no connection is lost: those the ring delivered plus
// those still queued are all of them.

// TestPort7AcceptQueuedCancelRace: 8 clients connect first; then 8
// Accepts go in one batch, and CancelAll follows at once (or after a
// moment). Every Accept completes once, with a new fd or ErrCanceled; the
// fds are distinct, each a peer of one client; and the connections the
// ring did not take are still in the listener's queue. Blocking and
// non-blocking listeners, both backends.
func TestPort7AcceptQueuedCancelRace(t *testing.T) {
	const conns, rounds = 8, 12
	for _, nb := range []bool{false, true} {
		name := "blocking"
		if nb {
			name = "nonblocking"
		}
		t.Run(name, func(t *testing.T) {
			forEachBackend(t, 16, func(t *testing.T, r *Ring) {
				rnd := adv13Rand(t)
				outs := map[string]int{}
				for round := range rounds {
					flags := 0
					if nb {
						flags = unix.SOCK_NONBLOCK
					}
					lfd, sa := tcpListener(t, 64, flags)
					clients := map[int]bool{} // client ports
					for range conns {
						c := tcpSocket(t)
						require.NoError(t, unix.Connect(c, sa))
						csa, err := unix.Getsockname(c)
						require.NoError(t, err)
						clients[csa.(*unix.SockaddrInet4).Port] = true
					}
					ops := make([]Op, conns)
					for i := range ops {
						ops[i] = Accept(lfd, 0)
					}
					reqs := make([]Request, conns)
					n, err := r.SubmitBatch(ops, reqs)
					require.NoError(t, err)
					require.Equal(t, conns, n)
					if d := rnd.IntN(3); d > 0 {
						time.Sleep(time.Duration(d*100) * time.Microsecond)
					}
					require.NoError(t, r.CancelAll())
					got := port7ReapAll(t, r, conns)
					seen := map[int]bool{}
					take := func(fd int, how string) {
						psa, err := unix.Getpeername(fd)
						require.NoError(t, err, how)
						port := psa.(*unix.SockaddrInet4).Port
						assert.True(t, clients[port], "round %d: %s: a peer of one of the clients", round, how)
						assert.False(t, seen[port], "round %d: %s: connection %d taken twice", round, how, port)
						seen[port] = true
						unix.Close(fd)
					}
					for _, q := range reqs {
						c := got[q]
						switch {
						case c.Err == nil:
							outs["accepted"]++
							take(c.N, "ring")
						case errors.Is(c.Err, ErrCanceled):
							outs["canceled"]++
						default:
							t.Fatalf("round %d: accept: %v", round, c.Err)
						}
					}
					// The rest are still queued.
					require.NoError(t, unix.SetNonblock(lfd, true))
					for {
						fd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
						if err == unix.EAGAIN {
							break
						}
						require.NoError(t, err)
						take(fd, "left in the queue")
					}
					require.Len(t, seen, conns, "round %d: every connection accounted for", round)
				}
				t.Logf("outcomes: %v", outs)
				assertNoMore(t, r)
			})
		})
	}
}
