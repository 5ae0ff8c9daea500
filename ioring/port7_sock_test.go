//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, sockets: ported from liburing's sendmsg_iov_clean,
// accept-mshot-stress, recv-mshot-drain, buf-ring-mshot and
// read-mshot-empty. What is checked is what those tests require of the
// kernel, said in this package's terms: many vectored sends that have to
// wait keep their message until they complete; a multishot accept sees
// every one of many short-lived connections once; a multishot receive
// whose buffers run out loses nothing across its resubmissions, also with
// one BufRing shared by several streams; and a multishot receive whose
// buffers are smaller than what is waiting keeps receiving until the
// socket is empty.

// port7Drain reads fd until its end (or an error) in a goroutine, slowly
// at first when slow is set, and returns a channel with everything read.
func port7Drain(fd int, slow bool) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		var got []byte
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			if slow && i < 64 {
				// Pacing only (the sends must find the socket full
				// for a while), not synchronization.
				time.Sleep(100 * time.Microsecond)
			}
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if n <= 0 {
				out <- got
				return
			}
			got = append(got, buf[:n]...)
		}
	}()
	return out
}

// TestPort7SendMsgManyIovecsWaiting ports sendmsg_iov_clean.c: with the
// socket's send buffer full, 256 SendMsg requests of 16 buffers each are
// submitted at once, so that they wait in the kernel (their message, the
// iovec array included, must outlive the submission); a reader drains the
// peer slowly. Every send completes exactly once with a positive count no
// larger than its message, and the peer receives exactly the sum of those
// counts, every byte the pattern sent.
func TestPort7SendMsgManyIovecsWaiting(t *testing.T) {
	const (
		iovs     = 16
		inflight = 256
		part     = 64
	)
	forEachBackend(t, inflight, func(t *testing.T, r *Ring) {
		cl, srv := port2TCPPair(t)
		// Should the test stop early, the reader's wait ends.
		t.Cleanup(func() { unix.Shutdown(cl, unix.SHUT_RDWR) })
		require.NoError(t, unix.SetsockoptInt(srv, unix.SOL_SOCKET, unix.SO_SNDBUF, 8192))
		chunk := bytes.Repeat([]byte{0xaa}, part)
		// Fill the send buffer (and the peer's receive buffer).
		prefill := 0
		for {
			n, err := unix.SendmsgN(srv, chunk, nil, nil, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN {
				break
			}
			require.NoError(t, err)
			prefill += n
		}
		msgs := make([]*Msg, inflight)
		ops := make([]Op, inflight)
		for i := range msgs {
			bufs := make([][]byte, iovs)
			for j := range bufs {
				bufs[j] = chunk // read only: one buffer shared by all
			}
			msgs[i] = &Msg{Buffers: bufs}
			ops[i] = SendMsg(srv, msgs[i], 0).WithUser(i)
		}
		reqs := make([]Request, inflight)
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, inflight, n)
		// Only now does the peer start reading.
		drained := port7Drain(cl, true)
		seen := map[int]Completion{}
		total := 0
		var cs [64]Completion
		deadline := time.Now().Add(60 * time.Second)
		for len(seen) < inflight && time.Now().Before(deadline) {
			k, err := r.Reap(cs[:], time.Second)
			require.NoError(t, err)
			for _, c := range cs[:k] {
				i := c.User.(int)
				_, dup := seen[i]
				require.False(t, dup, "send %d completed twice", i)
				seen[i] = c
				if assert.NoError(t, c.Err, "send %d", i) {
					assert.Positive(t, c.N, "send %d", i)
					assert.LessOrEqual(t, c.N, iovs*part, "send %d", i)
					total += c.N
				}
			}
		}
		require.Len(t, seen, inflight, "every send completes")
		require.NoError(t, unix.Shutdown(srv, unix.SHUT_WR))
		var got []byte
		select {
		case got = <-drained:
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the peer never saw the end of the stream")
		}
		assert.Equal(t, prefill+total, len(got), "the peer gets what the sends reported")
		assert.Equal(t, -1, port7NotByte(got, 0xaa), "only the pattern arrives")
		assertSettled(t, r)
		assertNoMore(t, r)
	})
}

// TestPort7AcceptMultishotChurn ports accept-mshot-stress.c: one multishot
// accept sees every connection of a client that connects and closes at
// once, 200 times (and is submitted again should it end); then of a client
// that opens 32 connections at a time and keeps them open until all 32 are
// accepted, four rounds. Each connection is one completion with a new fd;
// none is seen twice. A cancel ends the request with one final completion.
func TestPort7AcceptMultishotChurn(t *testing.T) {
	forEachBackend(t, 512, func(t *testing.T, r *Ring) {
		lfd, sa := tcpListener(t, 256, 0)
		arm := func() Request {
			q, err := r.Submit(AcceptMultishot(lfd, 0))
			if errors.Is(err, ErrNotSupported) {
				t.Skip("no multishot accept:", err)
			}
			require.NoError(t, err)
			return q
		}
		q := arm()
		// accepted takes the completions in until want connections were
		// accepted, and returns the request armed at the end.
		accepted := func(q Request, want int) (Request, []int) {
			var fds []int
			var cs [64]Completion
			deadline := time.Now().Add(30 * time.Second)
			for len(fds) < want && time.Now().Before(deadline) {
				k, err := r.Reap(cs[:], time.Second)
				require.NoError(t, err)
				for _, c := range cs[:k] {
					require.Equal(t, q, c.Req)
					if c.Err == nil && c.N > 0 {
						fds = append(fds, c.N)
					}
					if !c.More {
						// Ended (ErrOverrun when it fell behind, an
						// error from the listener): submit again.
						t.Logf("the multishot accept ended after %d: %v", len(fds), c.Err)
						if c.Err != nil {
							assert.True(t, errors.Is(c.Err, ErrOverrun) || errors.Is(c.Err, unix.ECONNABORTED), "%v", c.Err)
						}
						q = arm()
					}
				}
			}
			return q, fds
		}

		// Churn: connect and close at once, 200 times.
		const conns = 200
		errc := make(chan error, 1)
		go func() {
			for i := range conns {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					errc <- err
					return
				}
				err = unix.Connect(fd, sa)
				unix.Close(fd)
				if err != nil {
					errc <- fmt.Errorf("connect %d: %w", i, err)
					return
				}
			}
			errc <- nil
		}()
		q, fds := accepted(q, conns)
		require.NoError(t, <-errc)
		assert.Len(t, fds, conns, "every connection accepted once")
		for _, fd := range fds {
			unix.Close(fd)
		}

		// Bursts: 32 connections open at once, four rounds.
		for round := range 4 {
			var clients []int
			for range 32 {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				require.NoError(t, err)
				clients = append(clients, fd)
				require.NoError(t, unix.Connect(fd, sa))
			}
			var got []int
			q, got = accepted(q, len(clients))
			require.Len(t, got, len(clients), "round %d", round)
			// Each accepted fd is a live connection to one of ours:
			// its peer is one of the clients' local addresses.
			locals := map[int]bool{}
			for _, fd := range clients {
				la, err := unix.Getsockname(fd)
				require.NoError(t, err)
				locals[la.(*unix.SockaddrInet4).Port] = true
			}
			for _, fd := range got {
				pa, err := unix.Getpeername(fd)
				require.NoError(t, err)
				port := pa.(*unix.SockaddrInet4).Port
				assert.True(t, locals[port], "round %d: accepted a connection from port %d, not ours or twice", round, port)
				delete(locals, port)
				unix.Close(fd)
			}
			for _, fd := range clients {
				unix.Close(fd)
			}
		}

		// The end: one final completion, the cancel.
		require.NoError(t, q.Cancel())
		for {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if c.More {
				if c.Err == nil && c.N > 0 {
					unix.Close(c.N)
				}
				continue
			}
			if c.Err == nil && c.N > 0 {
				unix.Close(c.N) // the last connection, won over the cancel
			} else {
				assert.ErrorIs(t, c.Err, ErrCanceled)
			}
			break
		}
		assert.False(t, q.Pending())
		assertNoMore(t, r)
	})
}

// port7Sender writes n messages of size bytes, message i filled with
// byte(i), to fd, yielding now and then, and shuts its sending side
// down; the channel gets nil or the first error.
func port7Sender(fd, n, size int, pace bool) <-chan error {
	errc := make(chan error, 1)
	go func() {
		msg := make([]byte, size)
		for i := range n {
			for j := range msg {
				msg[j] = byte(i)
			}
			for off := 0; off < len(msg); {
				k, err := unix.Write(fd, msg[off:])
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					errc <- fmt.Errorf("message %d: %w", i, err)
					return
				}
				off += k
			}
			if pace && i%8 == 7 {
				time.Sleep(200 * time.Microsecond) // spread the sends, not a sync
			}
		}
		errc <- unix.Shutdown(fd, unix.SHUT_WR)
	}()
	return errc
}

// port7Stream returns what port7Sender(n, size) sends.
func port7Stream(n, size int) []byte {
	b := make([]byte, 0, n*size)
	for i := range n {
		b = append(b, bytes.Repeat([]byte{byte(i)}, size)...)
	}
	return b
}

// TestPort7RecvMultishotDrainRefill ports recv-mshot-drain.c: a TCP stream
// of 2048 messages of 64 bytes is received by a multishot receive on a
// BufRing of 4 buffers of 128 bytes that the consumer gives back only
// four at a time, so that the buffers run out again and again. Each time
// the receive ends (ENOBUFS), the consumer gives its buffers back and
// submits again; at the end of the stream the final completion carries 0.
// The bytes received, in order, are exactly the bytes sent.
func TestPort7RecvMultishotDrainRefill(t *testing.T) {
	const (
		sends = 2048
		size  = 64
	)
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		cl, srv := port2TCPPair(t)
		// Should the test stop early, the sender's wait ends.
		t.Cleanup(func() { unix.Shutdown(srv, unix.SHUT_RDWR) })
		br, err := r.NewBufRing(4, 128)
		if errors.Is(err, ErrNotSupported) {
			t.Skip(err)
		}
		require.NoError(t, err)
		defer br.Close()
		arm := func() Request {
			q, err := r.Submit(RecvMultishot(srv, br, 0))
			if errors.Is(err, ErrNotSupported) {
				t.Skip(err)
			}
			require.NoError(t, err)
			return q
		}
		q := arm()
		errc := port7Sender(cl, sends, size, true)
		var got []byte
		var held []uint16
		release := func() {
			for _, id := range held {
				require.NoError(t, br.Release(id))
			}
			held = held[:0]
		}
		rearms, eof := 0, false
		deadline := time.Now().Add(60 * time.Second)
		for !eof && time.Now().Before(deadline) {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			if c.Buffer {
				got = append(got, br.Bytes(c)...)
				held = append(held, c.BufID)
			} else {
				assert.Zero(t, c.N, "a count without a buffer: %+v", c)
			}
			if len(held) == br.Count() {
				release()
			}
			if c.More {
				require.NoError(t, c.Err, "a completion with More carries no error")
				continue
			}
			switch {
			case errors.Is(c.Err, unix.ENOBUFS):
				release()
				q = arm()
				rearms++
			case c.Err == nil && c.N == 0 && !c.Buffer:
				eof = true
			case c.Err == nil:
				// A final result with data (the kernel ended it on a
				// full completion ring, say): submit again.
				t.Logf("final completion with data: %+v", c)
				q = arm()
				rearms++
			default:
				require.FailNow(t, "unexpected end", "%+v after %d bytes", c, len(got))
			}
		}
		release()
		require.True(t, eof, "the end of the stream after %d of %d bytes", len(got), sends*size)
		require.NoError(t, <-errc)
		t.Logf("%d resubmissions", rearms)
		want := port7Stream(sends, size)
		require.Equal(t, len(want), len(got), "bytes received")
		if i := port7FirstDiff(want, got); i >= 0 {
			require.FailNow(t, "stream differs", "at byte %d (message %d): got %#x, want %#x", i, i/size, got[i], want[i])
		}
		assert.False(t, q.Pending())
		assertNoMore(t, r)
	})
}

// port7NotByte returns the index of the first byte of b that is not c,
// or -1.
func port7NotByte(b []byte, c byte) int {
	for i, x := range b {
		if x != c {
			return i
		}
	}
	return -1
}

// port7FirstDiff returns the first index where a and b differ (-1 if
// none; they have the same length).
func port7FirstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestPort7SharedBufRingStreams ports buf-ring-mshot.c: four streams, each
// with its own multishot receive, share one BufRing; senders write to all
// four at once, then shut down. A buffer is handed to one completion at a
// time; a receive that finds no buffer ends with ENOBUFS and is submitted
// again; each stream's bytes arrive whole, in order, and only its own
// (each stream sends its own byte). Run with plenty of buffers, with few,
// and with streams of different lengths.
func TestPort7SharedBufRingStreams(t *testing.T) {
	const streams = 4
	cases := []struct {
		name  string
		bufs  int
		sends [streams]int
	}{
		{"basic", 32, [streams]int{32, 32, 32, 32}},
		{"exhaust", 8, [streams]int{64, 64, 64, 64}},
		{"uneven", 8, [streams]int{128, 8, 64, 1}},
	}
	const size = 128
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, 128, func(t *testing.T, r *Ring) {
				br, err := r.NewBufRing(tc.bufs, 256)
				if errors.Is(err, ErrNotSupported) {
					t.Skip(err)
				}
				require.NoError(t, err)
				defer br.Close()
				var recv, send [streams]int
				reqs := map[Request]int{}
				arm := func(s, fd int) {
					q, err := r.Submit(RecvMultishot(fd, br, 0).WithUser(s))
					if errors.Is(err, ErrNotSupported) {
						t.Skip(err)
					}
					require.NoError(t, err)
					reqs[q] = s
				}
				fds := [streams]int{}
				var errcs []<-chan error
				var wg sync.WaitGroup
				start := make(chan struct{})
				for s := range streams {
					a, b := socketpair(t, unix.SOCK_STREAM)
					// Should the test stop early, the sender's wait ends.
					t.Cleanup(func() { unix.Shutdown(a, unix.SHUT_RDWR) })
					fds[s] = a
					arm(s, a)
					send[s] = tc.sends[s] * size
					errc := make(chan error, 1)
					errcs = append(errcs, errc)
					wg.Add(1)
					go func(s, fd int) {
						defer wg.Done()
						<-start
						msg := bytes.Repeat([]byte{byte('A' + s)}, size)
						for range tc.sends[s] {
							if _, err := unix.Write(fd, msg); err != nil {
								errc <- err
								return
							}
						}
						errc <- unix.Shutdown(fd, unix.SHUT_WR)
					}(s, b)
				}
				close(start)
				out := map[uint16]bool{}
				done := 0
				rearms := 0
				var cs [32]Completion
				deadline := time.Now().Add(60 * time.Second)
				for done < streams && time.Now().Before(deadline) {
					k, err := r.Reap(cs[:], time.Second)
					require.NoError(t, err)
					for _, c := range cs[:k] {
						s, ok := reqs[c.Req]
						require.True(t, ok, "a completion of no live receive: %+v", c)
						require.Equal(t, s, c.User)
						if c.Buffer {
							require.False(t, out[c.BufID], "buffer %d handed out twice", c.BufID)
							data := br.Bytes(c)
							if port7NotByte(data, byte('A'+s)) >= 0 {
								require.FailNow(t, "foreign bytes", "stream %d got %q", s, data)
							}
							recv[s] += len(data)
							require.NoError(t, br.Release(c.BufID))
						}
						if c.More {
							require.NoError(t, c.Err)
							continue
						}
						delete(reqs, c.Req)
						switch {
						case errors.Is(c.Err, unix.ENOBUFS):
							arm(s, fds[s])
							rearms++
						case c.Err == nil && c.N == 0 && !c.Buffer:
							done++
						case c.Err == nil:
							arm(s, fds[s])
							rearms++
						default:
							require.FailNow(t, "unexpected end", "stream %d: %+v", s, c)
						}
					}
				}
				wg.Wait()
				for _, errc := range errcs {
					require.NoError(t, <-errc)
				}
				require.Equal(t, streams, done, "every stream's end")
				assert.Equal(t, send, recv, "bytes per stream")
				t.Logf("%d resubmissions", rearms)
				assert.Empty(t, reqs)
				assertNoMore(t, r)
			})
		})
	}
}

// TestPort7RecvMultishotSmallBuffers ports read-mshot-empty.c: 64 bytes
// wait in a stream socket and the multishot receive's buffers hold 32: it
// keeps receiving until the socket is empty, two results of 32 bytes
// without any more data arriving; two more 32-byte writes later give two
// more. All four buffers are then out; given back, a cancel ends the
// receive with one final completion.
func TestPort7RecvMultishotSmallBuffers(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, b := socketpair(t, unix.SOCK_STREAM)
		br, err := r.NewBufRing(4, 32)
		if errors.Is(err, ErrNotSupported) {
			t.Skip(err)
		}
		require.NoError(t, err)
		defer br.Close()
		w1, w2 := bytes.Repeat([]byte{0x11}, 32), bytes.Repeat([]byte{0x22}, 32)
		_, err = unix.Write(b, append(append([]byte{}, w1...), w2...))
		require.NoError(t, err)
		q, err := r.Submit(RecvMultishot(a, br, 0))
		if errors.Is(err, ErrNotSupported) {
			t.Skip(err)
		}
		require.NoError(t, err)
		var ids []uint16
		take := func(want []byte, what string) {
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.True(t, c.More, "%s: More: %+v", what, c)
			require.True(t, c.Buffer, "%s: Buffer: %+v", what, c)
			require.NoError(t, c.Err, what)
			assert.Equal(t, want, br.Bytes(c), what)
			for _, id := range ids {
				assert.NotEqual(t, id, c.BufID, "%s: buffer %d given twice", what, id)
			}
			ids = append(ids, c.BufID)
		}
		take(w1, "first half of what waited")
		take(w2, "second half, with nothing new written")
		_, err = unix.Write(b, w1)
		require.NoError(t, err)
		take(w1, "third")
		_, err = unix.Write(b, w2)
		require.NoError(t, err)
		take(w2, "fourth")
		for _, id := range ids {
			require.NoError(t, br.Release(id))
		}
		require.NoError(t, q.Cancel())
		c := reapOne(t, r)
		require.Equal(t, q, c.Req)
		assert.False(t, c.More)
		assert.ErrorIs(t, c.Err, ErrCanceled)
		assert.False(t, q.Pending())
		assertNoMore(t, r)
	})
}

// TestPort7NonblockingReadBeforeWrite ports socket-rw-eagain.c: a Readv on
// an O_NONBLOCK stream with nothing in it, submitted in one batch before
// the Writev that feeds it from the other end. liburing's test checks that
// such a read does not wait where the kernel cannot poll for it; in this
// package a read at the position waits for data whatever the fd's
// O_NONBLOCK flag (as on a FIFO opened O_NONBLOCK), on both backends: the
// write completes with its 128 bytes and the read with what it wrote, not
// EAGAIN. The same with the read ordered and unordered, on TCP, a Unix
// socket pair and a pipe.
func TestPort7NonblockingReadBeforeWrite(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		for _, kind := range []string{"tcp", "unix", "pipe"} {
			for _, unordered := range []bool{false, true} {
				what := fmt.Sprintf("%s unordered=%v", kind, unordered)
				var rd, wr int
				switch kind {
				case "tcp":
					wr, rd = port2TCPPair(t)
					require.NoError(t, unix.SetsockoptInt(wr, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1))
				case "unix":
					rd, wr = socketpair(t, unix.SOCK_STREAM)
				case "pipe":
					rd, wr = pipe(t)
				}
				require.NoError(t, unix.SetNonblock(rd, true))
				require.NoError(t, unix.SetNonblock(wr, true))
				in := make([]byte, 128)
				out := port6Pattern(128, len(what))
				read := Readv(rd, [][]byte{in}, -1).WithUser("read")
				if unordered {
					read = read.Unordered()
				}
				reqs := make([]Request, 2)
				n, err := r.SubmitBatch([]Op{read, Writev(wr, [][]byte{out}, -1).WithUser("write")}, reqs)
				require.NoError(t, err)
				require.Equal(t, 2, n)
				got := port6Reap(t, r, 2)
				require.Len(t, got, 2, what)
				w, rc := got[reqs[1]], got[reqs[0]]
				require.NoError(t, w.Err, "%s: write", what)
				assert.Equal(t, 128, w.N, "%s: write", what)
				require.NoError(t, rc.Err, "%s: read", what)
				require.Positive(t, rc.N, "%s: read", what)
				assert.Equal(t, out[:rc.N], in[:rc.N], what)
				// The rest, if the read got only part.
				rest := in[rc.N:]
				for len(rest) > 0 {
					c := doOp(t, r, Read(rd, rest, -1))
					require.NoError(t, c.Err, what)
					require.Positive(t, c.N, what)
					rest = rest[c.N:]
				}
				assert.Equal(t, out, in, what)
				assertNoMore(t, r)
			}
		}
	})
}

// TestPort7ManyBufRingsReused ports buf-ring-put.c: many BufRings live on
// one ring at once (liburing spreads their group ids over the kernel's
// small array and its larger table); half are closed and new ones made,
// which take the closed ones' places. Through all of it each receive
// fills buffers of its own BufRing only, with its own stream's bytes.
func TestPort7ManyBufRingsReused(t *testing.T) {
	const rings = 40
	forEachBackend(t, 128, func(t *testing.T, r *Ring) {
		type recv struct {
			br     *BufRing
			q      Request
			fd, wr int
			tag    byte
		}
		live := map[int]*recv{}
		start := func(i int, tag byte) {
			br, err := r.NewBufRing(2, 16)
			if errors.Is(err, ErrNotSupported) {
				t.Skip(err)
			}
			require.NoError(t, err, "BufRing %d", i)
			a, b := socketpair(t, unix.SOCK_STREAM)
			q, err := r.Submit(RecvMultishot(a, br, 0).WithUser(i))
			require.NoError(t, err)
			live[i] = &recv{br: br, q: q, fd: a, wr: b, tag: tag}
		}
		// check writes each live stream its tag and expects it back in
		// a buffer of that stream's BufRing.
		check := func(what string) {
			for _, rc := range live {
				_, err := unix.Write(rc.wr, bytes.Repeat([]byte{rc.tag}, 8))
				require.NoError(t, err)
			}
			seen := map[int]bool{}
			for len(seen) < len(live) {
				c := reapOne(t, r)
				i := c.User.(int)
				rc := live[i]
				require.NotNil(t, rc, "%s: a completion of receive %d, which is gone", what, i)
				require.Equal(t, rc.q, c.Req, what)
				require.True(t, c.More, "%s: receive %d ended: %+v", what, i, c)
				require.True(t, c.Buffer, what)
				assert.Equal(t, bytes.Repeat([]byte{rc.tag}, 8), rc.br.Bytes(c), "%s: receive %d's buffer", what, i)
				require.NoError(t, rc.br.Release(c.BufID), "%s: receive %d's buffer goes back to its own BufRing", what, i)
				require.False(t, seen[i], "%s: receive %d twice", what, i)
				seen[i] = true
			}
		}
		stop := func(i int) {
			rc := live[i]
			require.NoError(t, rc.q.Cancel())
			c := reapOne(t, r)
			require.Equal(t, rc.q, c.Req)
			require.False(t, c.More)
			assert.ErrorIs(t, c.Err, ErrCanceled)
			require.NoError(t, rc.br.Close(), "BufRing %d", i)
			delete(live, i)
		}
		for i := range rings {
			start(i, byte(i))
		}
		check("all")
		for i := 1; i < rings; i += 2 {
			stop(i)
		}
		check("half closed")
		for i := rings; i < rings+rings/2; i++ {
			start(i, byte(i))
		}
		check("places taken again")
		for i := range rings + rings/2 {
			if live[i] != nil {
				stop(i)
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort7SendMsgWaitingCanceled is sendmsg_iov_clean.c's setup ended
// the other way: 64 vectored sends wait on a full socket and CancelAll
// ends them. Each completes exactly once, canceled or with what it sent
// (a cancel that lost the race); the peer then receives exactly the bytes
// those counts report, no more (no send goes on after its cancel).
func TestPort7SendMsgWaitingCanceled(t *testing.T) {
	const inflight = 64
	forEachBackend(t, inflight, func(t *testing.T, r *Ring) {
		cl, srv := port2TCPPair(t)
		t.Cleanup(func() { unix.Shutdown(cl, unix.SHUT_RDWR) })
		require.NoError(t, unix.SetsockoptInt(srv, unix.SOL_SOCKET, unix.SO_SNDBUF, 8192))
		chunk := bytes.Repeat([]byte{0x5c}, 64)
		prefill := 0
		for {
			n, err := unix.SendmsgN(srv, chunk, nil, nil, unix.MSG_DONTWAIT)
			if err == unix.EAGAIN {
				break
			}
			require.NoError(t, err)
			prefill += n
		}
		ops := make([]Op, inflight)
		for i := range ops {
			bufs := make([][]byte, 16)
			for j := range bufs {
				bufs[j] = chunk
			}
			ops[i] = SendMsg(srv, &Msg{Buffers: bufs}, 0).WithUser(i)
		}
		reqs := make([]Request, inflight)
		n, err := r.SubmitBatch(ops, reqs)
		require.NoError(t, err)
		require.Equal(t, inflight, n)
		require.NoError(t, r.CancelAll())
		got := port6Reap(t, r, inflight)
		sent, canceled := 0, 0
		for _, q := range reqs {
			c, ok := got[q]
			require.True(t, ok, "request %v completed", q)
			switch {
			case errors.Is(c.Err, ErrCanceled):
				canceled++
				sent += c.N
			case c.Err == nil:
				assert.Positive(t, c.N)
				sent += c.N
			default:
				assert.Fail(t, "unexpected result", "%+v", c)
			}
		}
		assert.Positive(t, canceled, "sends on a full socket were canceled")
		require.NoError(t, unix.Shutdown(srv, unix.SHUT_WR))
		var data []byte
		select {
		case data = <-port7Drain(cl, false):
		case <-time.After(30 * time.Second):
			require.FailNow(t, "the peer never saw the end of the stream")
		}
		assert.Equal(t, prefill+sent, len(data), "bytes on the wire = bytes reported")
		assertNoMore(t, r)
	})
}
