//go:build linux

package ioring

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// The multishot operations in the conformance suite, on each backend, as
// op=<name> with the subtests of the other operations: success (several
// completions marked More, then exactly one final), cancel while pending,
// deadline, canceled token before submission, bad input, not supported
// alone (through the probe hook).

// multiCase is one multishot operation's part of the suite.
type multiCase struct {
	name string
	code Opcode
	// success runs the operation through several completions to its
	// final one and checks them.
	success func(t *testing.T, r *Ring)
	// pending returns an op that stays pending with nothing delivered.
	pending func(t *testing.T, r *Ring) Op
	// token returns an op for the canceled-token test and a check that it
	// had no effect.
	token func(t *testing.T, r *Ring) (Op, func(t *testing.T))
	// invalid returns ops refused with ErrInvalid.
	invalid func(t *testing.T, r *Ring) []Op
}

// eventFD returns a non-blocking eventfd, closed with the test.
func eventFD(t testing.TB) int {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	require.NoError(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// signal adds 1 to eventfd fd.
func signal(t testing.TB, fd int) {
	var one = [8]byte{1}
	_, err := unix.Write(fd, one[:])
	require.NoError(t, err)
}

// drainEventFD resets eventfd fd.
func drainEventFD(fd int) {
	var b [8]byte
	unix.Read(fd, b[:])
}

// reapMore waits for one completion of q and checks it has more to come.
func reapMore(t testing.TB, r *Ring, q Request) Completion {
	t.Helper()
	return reapShot(t, r, q, true)
}

// reapFinal waits for q's final completion and checks that it is final.
func reapFinal(t testing.TB, r *Ring, q Request) Completion {
	t.Helper()
	return reapShot(t, r, q, false)
}

// reapShot waits for one completion of q and checks its More.
func reapShot(t testing.TB, r *Ring, q Request, more bool) Completion {
	t.Helper()
	c := reapOne(t, r)
	require.Equal(t, q, c.Req, "completion of the multishot request")
	require.Equal(t, more, c.More, "More of %+v", c)
	return c
}

// dialTCP connects a new blocking socket to sa and returns it.
func dialTCP(t testing.TB, sa *unix.SockaddrInet4) int {
	fd := tcpSocket(t)
	require.NoError(t, unix.Connect(fd, sa))
	return fd
}

func multiCases() []multiCase {
	return []multiCase{
		{
			name: "poll-multishot", code: OpPollMultishot,
			success: func(t *testing.T, r *Ring) {
				efd := eventFD(t)
				q, err := r.Submit(PollMultishot(efd, unix.POLLIN).WithUser(7))
				require.NoError(t, err)
				for range 3 {
					signal(t, efd)
					c := reapMore(t, r, q)
					assert.NoError(t, c.Err)
					assert.NotZero(t, c.N&unix.POLLIN, "ready events %#x", c.N)
					assert.Equal(t, 7, c.User)
					assert.False(t, c.Buffer)
					drainEventFD(efd)
				}
				assert.True(t, q.Pending(), "still armed")
				require.NoError(t, q.Cancel())
				c := reapFinal(t, r, q)
				assert.ErrorIs(t, c.Err, ErrCanceled)
				assert.Equal(t, 7, c.User)
				assert.ErrorIs(t, q.Cancel(), ErrNotFound, "ended")
			},
			pending: func(t *testing.T, r *Ring) Op { return PollMultishot(eventFD(t), unix.POLLIN) },
			token: func(t *testing.T, r *Ring) (Op, func(*testing.T)) {
				efd := eventFD(t)
				signal(t, efd)
				return PollMultishot(efd, unix.POLLIN), func(t *testing.T) {}
			},
			invalid: func(t *testing.T, r *Ring) []Op {
				efd := eventFD(t)
				return []Op{PollMultishot(-1, unix.POLLIN), PollMultishot(efd, 0), PollMultishot(hugeFD, unix.POLLIN)}
			},
		},
		{
			name: "accept-multishot", code: OpAcceptMultishot,
			success: func(t *testing.T, r *Ring) {
				l, sa := tcpListener(t, 8, 0)
				q, err := r.Submit(AcceptMultishot(l, 0))
				require.NoError(t, err)
				for range 3 {
					cl := dialTCP(t, sa)
					c := reapMore(t, r, q)
					require.NoError(t, c.Err)
					require.Positive(t, c.N, "a new fd")
					peer, err := unix.Getpeername(c.N)
					require.NoError(t, err)
					mine, err := unix.Getsockname(cl)
					require.NoError(t, err)
					assert.Equal(t, mine.(*unix.SockaddrInet4).Port, peer.(*unix.SockaddrInet4).Port, "the client's connection")
					unix.Close(c.N)
				}
				require.NoError(t, q.Cancel())
				c := reapFinal(t, r, q)
				assert.ErrorIs(t, c.Err, ErrCanceled)
			},
			pending: func(t *testing.T, r *Ring) Op {
				l, _ := tcpListener(t, 8, 0)
				return AcceptMultishot(l, 0)
			},
			token: func(t *testing.T, r *Ring) (Op, func(*testing.T)) {
				l, sa := tcpListener(t, 8, 0)
				dialTCP(t, sa)
				return AcceptMultishot(l, 0), func(t *testing.T) {
					assert.True(t, readable(t, l), "the connection is still waiting to be accepted")
				}
			},
			invalid: func(t *testing.T, r *Ring) []Op {
				l, _ := tcpListener(t, 8, 0)
				return []Op{AcceptMultishot(-1, 0), AcceptMultishot(l, unix.O_APPEND), AcceptMultishot(hugeFD, 0)}
			},
		},
		{
			name: "recv-multishot", code: OpRecvMultishot,
			success: func(t *testing.T, r *Ring) {
				br, err := r.NewBufRing(4, 64)
				require.NoError(t, err)
				defer func() { assert.NoError(t, br.Close()) }()
				a, b := socketpair(t, unix.SOCK_STREAM)
				q, err := r.Submit(RecvMultishot(a, br, 0))
				require.NoError(t, err)
				for _, msg := range []string{"one", "two", "three", "four", "five"} {
					_, err := unix.Write(b, []byte(msg))
					require.NoError(t, err)
					c := reapMore(t, r, q)
					require.NoError(t, c.Err)
					require.True(t, c.Buffer, "a buffer of the ring")
					assert.Equal(t, msg, string(br.Bytes(c)))
					require.NoError(t, br.Release(c.BufID))
					assert.ErrorIs(t, br.Release(c.BufID), ErrInvalid, "released twice")
				}
				assert.ErrorIs(t, br.Close(), unix.EBUSY, "in use")
				unix.Shutdown(b, unix.SHUT_WR)
				c := reapFinal(t, r, q)
				assert.NoError(t, c.Err, "the end of the stream")
				assert.Zero(t, c.N)
				assert.False(t, c.Buffer)

				// Every buffer out: data that arrives ends it with ENOBUFS.
				a, b = socketpair(t, unix.SOCK_STREAM)
				q, err = r.Submit(RecvMultishot(a, br, 0))
				require.NoError(t, err)
				var ids []uint16
				for range br.Count() {
					unix.Write(b, []byte("x"))
					c := reapMore(t, r, q)
					require.True(t, c.Buffer)
					ids = append(ids, c.BufID)
				}
				unix.Write(b, []byte("y"))
				c = reapFinal(t, r, q)
				assert.ErrorIs(t, c.Err, unix.ENOBUFS)
				for _, id := range ids {
					require.NoError(t, br.Release(id))
				}
				assert.True(t, readable(t, a), "the data that found no buffer is still there")
			},
			pending: func(t *testing.T, r *Ring) Op {
				br, err := r.NewBufRing(2, 16)
				require.NoError(t, err)
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return RecvMultishot(a, br, 0)
			},
			token: func(t *testing.T, r *Ring) (Op, func(*testing.T)) {
				br, err := r.NewBufRing(2, 16)
				require.NoError(t, err)
				a, b := socketpair(t, unix.SOCK_STREAM)
				unix.Write(b, []byte("x"))
				return RecvMultishot(a, br, 0), func(t *testing.T) {
					assert.True(t, readable(t, a), "nothing consumed")
					assert.NoError(t, br.Close(), "free again")
				}
			},
			invalid: func(t *testing.T, r *Ring) []Op {
				br, err := r.NewBufRing(2, 16)
				require.NoError(t, err)
				other, err := New(Config{Entries: 2, Backend: r.Backend().Backend})
				require.NoError(t, err)
				t.Cleanup(func() { other.Close() })
				obr, err := other.NewBufRing(2, 16)
				require.NoError(t, err)
				closed, err := r.NewBufRing(2, 16)
				require.NoError(t, err)
				require.NoError(t, closed.Close())
				a, _ := socketpair(t, unix.SOCK_STREAM)
				return []Op{RecvMultishot(a, nil, 0), RecvMultishot(-1, br, 0), RecvMultishot(a, br, unix.MSG_WAITALL), RecvMultishot(a, br, unix.MSG_PEEK), RecvMultishot(a, obr, 0), RecvMultishot(a, br, -1), RecvMultishot(a, closed, 0)}
			},
		},
	}
}

func TestConformanceMultishot(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for _, mc := range multiCases() {
			t.Run("op="+mc.name, func(t *testing.T) {
				t.Run("success", func(t *testing.T) {
					mc.success(t, r)
					assertNoMore(t, r)
					assertSettled(t, r)
				})
				t.Run("cancel", func(t *testing.T) {
					q, err := r.Submit(mc.pending(t, r))
					require.NoError(t, err)
					var c [1]Completion
					n, _ := r.Reap(c[:], 20*time.Millisecond)
					require.Zero(t, n, "pending op completed: %+v", c[0])
					require.NoError(t, q.Cancel())
					f := reapFinal(t, r, q)
					mustCancel(t, f, ErrCanceled)
					assert.ErrorIs(t, q.Cancel(), ErrNotFound)
					assertNoMore(t, r)
				})
				t.Run("deadline", func(t *testing.T) {
					start := time.Now()
					q, err := r.Submit(mc.pending(t, r).WithDeadline(30 * time.Millisecond))
					require.NoError(t, err)
					f := reapFinal(t, r, q)
					mustCancel(t, f, ErrTimeout)
					assert.GreaterOrEqual(t, time.Since(start), 25*time.Millisecond)
					assertNoMore(t, r)
				})
				t.Run("token", func(t *testing.T) {
					op, check := mc.token(t, r)
					tok := r.NewToken()
					require.NoError(t, tok.Cancel())
					q, err := r.Submit(op.WithToken(tok))
					require.NoError(t, err)
					f := reapFinal(t, r, q)
					mustCancel(t, f, ErrCanceled)
					assertNoMore(t, r)
					check(t)
				})
				t.Run("invalid", func(t *testing.T) {
					for i, op := range mc.invalid(t, r) {
						_, err := r.Submit(op)
						assert.ErrorIs(t, err, ErrInvalid, "invalid op %d", i)
					}
					// Its completions go to Reap: Start and Do refuse it.
					_, err := r.Start(mc.pending(t, r))
					assert.ErrorIs(t, err, ErrInvalid)
					_, err = r.Do(t.Context(), mc.pending(t, r))
					assert.ErrorIs(t, err, ErrInvalid)
					// Under an ended context too: Do starts nothing then,
					// but bad input is still reported as such.
					ended, cancel := context.WithCancel(t.Context())
					cancel()
					_, err = r.Do(ended, mc.pending(t, r))
					assert.ErrorIs(t, err, ErrInvalid, "Do under an ended context")
					assertNoMore(t, r)
				})
				t.Run("notsupported", func(t *testing.T) {
					if r.Backend().Backend != BackendURing {
						assert.NoError(t, r.checkSupported(mc.code), "the poll backend runs every op")
						return
					}
					saved := uringMultishot
					uringMultishot = func(b *uringBackend, op Opcode) bool { return op != mc.code && saved(b, op) }
					r2, err := New(Config{Entries: 4, Backend: BackendURing})
					uringMultishot = saved
					require.NoError(t, err)
					defer r2.Close()
					op := mc.pending(t, r2)
					_, err = r2.Submit(op)
					assert.ErrorIs(t, err, ErrNotSupported)
					assert.NotErrorIs(t, err, ErrInvalid)
					for _, other := range multiCases() {
						if other.code != mc.code {
							assert.NoError(t, r2.checkSupported(other.code), "%s lacks %s only", mc.name, other.name)
						}
					}
					for _, other := range opCases(nil) {
						assert.NoError(t, r2.checkSupported(other.code), "%s lacks %s only", mc.name, other.name)
					}
					for _, single := range []Opcode{OpPoll, OpAccept, OpRecv} {
						assert.NoError(t, r2.checkSupported(single), "the single-shot %v stays", single)
					}
					c, err := r2.Do(t.Context(), Nop())
					require.NoError(t, err)
					assert.NoError(t, c.Err)
				})
			})
		}
	})
}
