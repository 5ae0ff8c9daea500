//go:build linux

package ioring

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, the ring itself: ported from liburing's nop,
// nop-all-sizes, cq-full, wakeup-hang, 7ad0e4b2f83c, 8a9973408177,
// 232c93d07b74, socket-rw-offset, accept-reuse, accept-link and
// poll-link. None depends on the backend.

// TestPort6Nops ports nop.c: a Nop completes with 0 and no error, and
// carries its own user value back (liburing checks user_data); a batch
// of eight, submitted at once, completes eight times, each request once
// and with its own value. A thousand rounds, as liburing runs.
func TestPort6Nops(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		seq := 0
		for round := range 1000 {
			seq++
			c := doOp(t, r, Nop().WithUser(seq))
			require.NoError(t, c.Err)
			require.Zero(t, c.N)
			require.Equal(t, OpNop, c.Op)
			require.Equal(t, seq, c.User, "round %d", round)

			ops := make([]Op, 8)
			reqs := make([]Request, 8)
			want := map[Request]int{}
			for i := range ops {
				seq++
				ops[i] = Nop().WithUser(seq)
			}
			n, err := r.SubmitBatch(ops, reqs)
			require.NoError(t, err)
			require.Equal(t, 8, n)
			for i, q := range reqs {
				want[q] = seq - 7 + i
			}
			got := port6Reap(t, r, 8)
			for q, u := range want {
				c, ok := got[q]
				require.True(t, ok, "round %d: request %v completed", round, q)
				require.NoError(t, c.Err)
				require.Zero(t, c.N)
				require.Equal(t, u, c.User)
			}
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort6NopAllSizes ports nop-all-sizes.c: for every ring size from 2
// to 4096, the ring takes exactly Entries requests at once (liburing
// fills the whole submission ring), and all of them complete; a second
// fill after the first was reaped (the rings wrap) completes too. One
// request more than Entries is refused with ErrFull, not lost.
func TestPort6NopAllSizes(t *testing.T) {
	for _, b := range backends {
		t.Run("backend="+b.String(), func(t *testing.T) {
			for entries := 2; entries <= 4096; entries *= 2 {
				r, err := New(Config{Entries: entries, Backend: b})
				require.NoError(t, err, "entries %d", entries)
				t.Cleanup(func() { r.Close() })
				ops := make([]Op, entries)
				for i := range ops {
					ops[i] = Nop().WithUser(i)
				}
				reqs := make([]Request, entries)
				for fill := range 2 {
					n, err := r.SubmitBatch(ops, reqs)
					require.NoError(t, err, "entries %d fill %d", entries, fill)
					require.Equal(t, entries, n)
					_, err = r.Submit(Nop())
					require.ErrorIs(t, err, ErrFull, "entries %d: one more than Entries", entries)
					seen := make([]bool, entries)
					dst := make([]Completion, 64)
					for got := 0; got < entries; {
						k, err := r.Reap(dst, 10*time.Second)
						require.NoError(t, err)
						require.NotZero(t, k, "entries %d: %d of %d completions within 10s", entries, got, entries)
						for _, c := range dst[:k] {
							require.NoError(t, c.Err)
							u := c.User.(int)
							require.False(t, seen[u], "entries %d: nop %d twice", entries, u)
							seen[u] = true
						}
						got += k
					}
				}
				require.NoError(t, r.Close())
			}
		})
	}
}

// TestPort6RingFullNothingLost ports cq-full.c: liburing queues 12 nops
// on a ring of 4 without reaping, so that its completion ring
// overflows, and checks that no completion was dropped. Here a ring
// bounds what it accepts instead: on a ring of 4, four requests (nops
// and timeouts that complete on their own while nobody reaps) are
// accepted and the fifth is refused with ErrFull, again and again; each
// reaped completion frees room for one more; in the end every accepted
// request completed exactly once.
func TestPort6RingFullNothingLost(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		accepted := map[Request]bool{}
		submit := func(op Op) error {
			q, err := r.Submit(op)
			if err == nil {
				accepted[q] = true
			}
			return err
		}
		for i := range 3 {
			for j := range 4 {
				op := Nop()
				if j%2 == 1 {
					op = Timeout(time.Millisecond)
				}
				err := submit(op)
				if i == 0 {
					require.NoError(t, err, "the first four")
				} else {
					require.ErrorIs(t, err, ErrFull, "round %d: nothing reaped, nothing accepted", i)
				}
			}
		}
		require.Len(t, accepted, 4)
		// Wait until every one of them has completed (the timeouts fire
		// while nobody reaps), then take them one at a time, each time
		// submitting one more in the room it made.
		done := map[Request]bool{}
		for len(done) < 12 {
			c := reapOne(t, r)
			require.True(t, accepted[c.Req], "a completion of a request never accepted")
			require.False(t, done[c.Req], "a second completion")
			require.NoError(t, c.Err)
			done[c.Req] = true
			if len(accepted) < 12 {
				require.NoError(t, submit(Nop()), "room for one after a reap")
			}
		}
		require.Len(t, accepted, 12)
		assertNoMore(t, r)
	})
}

// TestPort6WakeupHang ports wakeup-hang.c: a goroutine waits in Reap
// (with a deadline far away) for a Poll on a pipe, and another on an
// eventfd; another goroutine writes the pipe or the eventfd. The waiter
// wakes with the poll's completion (POLLIN), long before its deadline.
// The same with the waiter in Request.Wait instead of Reap.
func TestPort6WakeupHang(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		require.NoError(t, err)
		defer unix.Close(efd)
		for _, useWait := range []bool{false, true} {
			for _, kind := range []string{"pipe", "eventfd"} {
				var rd, wr int
				var msg []byte
				if kind == "pipe" {
					rd, wr = pipe(t)
					msg = []byte{1}
				} else {
					rd, wr = efd, efd
					msg = port5U64(1)
				}
				var q Request
				var err error
				if useWait {
					q, err = r.Start(Poll(rd, unix.POLLIN))
				} else {
					q, err = r.Submit(Poll(rd, unix.POLLIN))
				}
				require.NoError(t, err)
				type result struct {
					c   Completion
					err error
					d   time.Duration
				}
				res := make(chan result, 1)
				go func() {
					start := time.Now()
					if useWait {
						c, err := q.Wait(context.Background())
						res <- result{c, err, time.Since(start)}
						return
					}
					var cs [1]Completion
					n, err := r.Reap(cs[:], time.Minute)
					if err == nil && n != 1 {
						err = fmt.Errorf("Reap returned %d completions", n)
					}
					res <- result{cs[0], err, time.Since(start)}
				}()
				werr := make(chan error, 1)
				go func() {
					_, err := unix.Write(wr, msg)
					werr <- err
				}()
				require.NoError(t, <-werr)
				var got result
				select {
				case got = <-res:
				case <-time.After(20 * time.Second):
					t.Fatalf("%s, wait=%v: the waiter did not wake", kind, useWait)
				}
				require.NoError(t, got.err)
				require.Equal(t, q, got.c.Req)
				require.NoError(t, got.c.Err)
				assert.NotZero(t, got.c.N&unix.POLLIN, "%s: POLLIN", kind)
				assert.Less(t, got.d, 20*time.Second)
				// Empty the file again for the next round.
				_, err = unix.Read(rd, make([]byte, 8))
				require.NoError(t, err)
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort6TimeoutAfterTimedWait ports 7ad0e4b2f83c.c: a Nop reaped with
// a wait of 5s (which returns at once), then a Timeout of 1s: the
// timeout does not complete before its second has passed (the earlier
// wait left nothing behind that ends the next one early), and does
// complete, within a generous bound. Reaps with short timeouts in
// between return nothing and do not disturb it.
func TestPort6TimeoutAfterTimedWait(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		q, err := r.Submit(Nop())
		require.NoError(t, err)
		var cs [1]Completion
		n, err := r.Reap(cs[:], 5*time.Second)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, q, cs[0].Req)

		start := time.Now()
		q, err = r.Submit(Timeout(time.Second).WithUser(89))
		require.NoError(t, err)
		var c Completion
		var elapsed time.Duration
		for range 3 {
			n, err := r.Reap(cs[:], 10*time.Millisecond)
			require.NoError(t, err)
			if n == 1 {
				// Only a machine so loaded that three short waits took a
				// second may see it here.
				c, elapsed = cs[0], time.Since(start)
				require.GreaterOrEqual(t, elapsed, time.Second, "the timeout completed early: %+v", c)
				break
			}
		}
		if c.Req == (Request{}) {
			c = reapOne(t, r)
			elapsed = time.Since(start)
		}
		require.Equal(t, q, c.Req)
		require.NoError(t, c.Err)
		require.Equal(t, 89, c.User)
		assert.GreaterOrEqual(t, elapsed, time.Second, "not before its time")
		assert.Less(t, elapsed, 8*time.Second, "and not much after")
	})
}

// TestPort6FsyncAfterUnregister ports 8a9973408177.c: a file registered
// and unregistered again, then an fsync of it by its fd completes with 0
// (the unregistering left the file, and the ring, usable). Between the
// two, an fsync through the registered index works too.
func TestPort6FsyncAfterUnregister(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		fd := tempFile(t, []byte("data"))
		require.NoError(t, r.RegisterFiles([]int{fd}))
		c := doOp(t, r, Fsync(0).FixedFile())
		require.NoError(t, c.Err, "fsync through the registered index")
		require.NoError(t, r.UnregisterFiles())
		c = doOp(t, r, Fsync(fd))
		require.NoError(t, c.Err, "fsync after the files were unregistered")
		assert.Zero(t, c.N)
		assertNoMore(t, r)
	})
}

// TestPort6SocketReadvWritevTiny ports 232c93d07b74.c: readv and writev
// (not recv and send) on a connected socket, TCP and a Unix stream,
// blocking and O_NONBLOCK: one goroutine sends 33 bytes as writevs of 3
// while the ring reads them as readvs of 2, at the position, four
// readvs at a time; the bytes arrive whole and in order (reads at the
// position are ordered) and then the end of the stream.
func TestPort6SocketReadvWritevTiny(t *testing.T) {
	const total = 33
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, tcp := range []bool{true, false} {
			for _, nonblock := range []bool{false, true} {
				name := fmt.Sprintf("tcp=%v nonblock=%v", tcp, nonblock)
				var cl, srv int
				if tcp {
					cl, srv = port2TCPPair(t)
				} else {
					srv, cl = socketpair(t, unix.SOCK_STREAM)
				}
				if nonblock {
					require.NoError(t, unix.SetNonblock(srv, true))
				}
				werr := make(chan error, 1)
				go func() {
					var err error
					for i := 0; i < total && err == nil; i += 3 {
						b := []byte{byte(i), byte(i + 1), byte(i + 2)}
						_, err = unix.Writev(cl, [][]byte{b})
					}
					if err == nil {
						err = unix.Shutdown(cl, unix.SHUT_WR)
					}
					werr <- err
				}()
				var got []byte
				ended := false
				for !ended {
					bufs := make([][]byte, 4)
					reqs := make([]Request, 4)
					ops := make([]Op, 4)
					for i := range ops {
						bufs[i] = make([]byte, 2)
						ops[i] = Readv(srv, [][]byte{bufs[i]}, -1)
					}
					n, err := r.SubmitBatch(ops, reqs)
					require.NoError(t, err)
					require.Equal(t, 4, n)
					cs := port6Reap(t, r, 4)
					for i, q := range reqs {
						c := cs[q]
						require.NoError(t, c.Err, name)
						if c.N == 0 {
							ended = true
							continue
						}
						require.False(t, ended, "%s: bytes after the end", name)
						got = append(got, bufs[i][:c.N]...)
					}
				}
				require.NoError(t, <-werr)
				want := make([]byte, total)
				for i := range want {
					want[i] = byte(i)
				}
				require.Equal(t, want, got, name)
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort6SocketRWOffset ports socket-rw-offset.c: a Readv at offset 0
// (not the position) on a socket, queued before a Writev at offset 0 on
// its peer, both through the ring: neither hangs, the write completes
// with 128 and the read with the 128 bytes (a socket has no position,
// and the offset is ignored).
func TestPort6SocketRWOffset(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		cl, srv := port2TCPPair(t)
		require.NoError(t, unix.SetNonblock(srv, true))
		require.NoError(t, unix.SetNonblock(cl, true))
		rbuf := make([]byte, 128)
		wbuf := port6Pattern(128, 9)
		ops := []Op{Readv(srv, [][]byte{rbuf}, 0), Writev(cl, [][]byte{wbuf}, 0)}
		reqs := make([]Request, 2)
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		got := port6Reap(t, r, 2)
		require.NoError(t, got[reqs[1]].Err, "write")
		require.Equal(t, 128, got[reqs[1]].N)
		require.NoError(t, got[reqs[0]].Err, "read")
		// TCP may deliver the 128 bytes in one piece or more.
		k := got[reqs[0]].N
		require.Positive(t, k)
		assert.Equal(t, wbuf[:k], rbuf[:k])
		assertNoMore(t, r)
	})
}

// TestPort6AcceptThenConnectSameRing ports accept-reuse.c: an Accept on
// a listener and then a Connect to it, both through one ring (liburing
// reuses the same submission entry for both, checking that the kernel
// copied the first before the second overwrote it; here the Ops are
// values): the accept completes with a new fd, the connect with 0, and
// the two are the ends of one connection.
func TestPort6AcceptThenConnectSameRing(t *testing.T) {
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		lfd, sa := tcpListener(t, 16, 0)
		aq := submitPending(t, r, Accept(lfd, 0))
		cl := tcpSocket(t)
		cq, err := r.Submit(Connect(cl, sa))
		require.NoError(t, err)
		got := port6Reap(t, r, 2)
		require.NoError(t, got[cq].Err, "connect")
		require.NoError(t, got[aq].Err, "accept")
		afd := got[aq].N
		require.Positive(t, afd)
		defer unix.Close(afd)
		peer, err := unix.Getpeername(afd)
		require.NoError(t, err)
		local, err := unix.Getsockname(cl)
		require.NoError(t, err)
		assert.Equal(t, local.(*unix.SockaddrInet4).Port, peer.(*unix.SockaddrInet4).Port, "the accepted fd's peer is the connecting socket")
		assertNoMore(t, r)
	})
}

// TestPort6AcceptPollWithDeadline ports accept-link.c and poll-link.c:
// an Accept, and a Poll for POLLIN|POLLHUP|POLLERR on a listener, each
// with a deadline (liburing links a timeout to them). With a connection
// arriving in time, the accept completes with its fd and the poll with
// POLLIN, and neither is ended by the deadline; with none, both end
// with ErrTimeout at the deadline, which is also ErrCanceled.
func TestPort6AcceptPollWithDeadline(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, poll := range []bool{false, true} {
			op := func(lfd int) Op {
				if poll {
					return Poll(lfd, unix.POLLIN|unix.POLLHUP|unix.POLLERR)
				}
				return Accept(lfd, 0)
			}
			// A connection in time: the deadline is far away.
			lfd, sa := tcpListener(t, 16, 0)
			q := submitPending(t, r, op(lfd).WithDeadline(time.Minute))
			cl := tcpSocket(t)
			require.NoError(t, unix.Connect(cl, sa))
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.NoError(t, c.Err, "poll=%v", poll)
			if poll {
				assert.NotZero(t, c.N&unix.POLLIN)
			} else {
				require.Positive(t, c.N)
				unix.Close(c.N)
			}

			// None: the deadline ends it.
			lfd, _ = tcpListener(t, 16, 0)
			start := time.Now()
			q, err := r.Submit(op(lfd).WithDeadline(200 * time.Millisecond))
			require.NoError(t, err)
			c = reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.ErrorIs(t, c.Err, ErrTimeout, "poll=%v", poll)
			require.ErrorIs(t, c.Err, ErrCanceled)
			assert.False(t, errors.Is(c.Err, unix.EAGAIN))
			assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond, "not before the deadline")
		}
		assertNoMore(t, r)
	})
}
