//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv13SharedSocketBothDirections: reads and writes of one socket
// wait together (one pollFD, epoll armed for IN|OUT), with polls of each
// direction and both; data in one direction and room in the other wake
// exactly the right ones, reads in submission order, writes conserved.
func TestAdv13SharedSocketBothDirections(t *testing.T) {
	got := adv13Both(t, 64, func(t *testing.T, r *Ring) []string {
		a, b := adv13SockPair(t, unix.SOCK_STREAM)
		defer unix.Close(a)
		defer unix.Close(b)
		filled := adv13Fill(t, a)
		const nr, nw, rsz, wsz = 6, 4, 100, 3000
		var reads, writes []Request
		rbufs := make([][]byte, nr)
		for i := range nr {
			rbufs[i] = make([]byte, rsz)
			q, err := r.Start(Read(a, rbufs[i], -1))
			require.NoError(t, err)
			reads = append(reads, q)
			if i == 2 {
				for j := range nw {
					w := bytes.Repeat([]byte{byte('A' + j)}, wsz)
					q, err := r.Start(Write(a, w, -1))
					require.NoError(t, err)
					writes = append(writes, q)
				}
			}
		}
		pin, err := r.Start(Poll(a, unix.POLLIN))
		require.NoError(t, err)
		pout, err := r.Start(Poll(a, unix.POLLOUT))
		require.NoError(t, err)
		pboth, err := r.Start(Poll(a, unix.POLLIN|unix.POLLOUT))
		require.NoError(t, err)

		// Data for every read, and one byte more that stays (so that the
		// polls for POLLIN still see it, see BackendPoll's doc).
		data := make([]byte, nr*rsz+1)
		for i := range data {
			data[i] = byte(i % 251)
		}
		_, err = unix.Write(b, data)
		require.NoError(t, err)
		rc := adv13Wait(t, r, "reads", reads...)
		var joined []byte
		for i, c := range rc {
			require.NoError(t, c.Err, "read %d", i)
			joined = append(joined, rbufs[i][:c.N]...)
		}
		assert.Equal(t, data[:len(joined)], joined, "reads in submission order")
		assert.Equal(t, nr*rsz, len(joined))
		pc := adv13Wait(t, r, "poll in", pin, pboth)
		assert.NotZero(t, pc[0].N&unix.POLLIN, "Poll(IN) %#x", pc[0].N)
		assert.NotZero(t, pc[1].N&unix.POLLIN, "Poll(IN|OUT) %#x", pc[1].N)

		// Room: drain b until every write completed.
		drained := make(chan int)
		stop := make(chan struct{})
		go func() {
			n := 0
			buf := make([]byte, 65536)
			for {
				select {
				case <-stop:
					n += len(adv13Drain(t, b))
					drained <- n
					return
				default:
				}
				unix.SetNonblock(b, true)
				k, _ := unix.Read(b, buf)
				unix.SetNonblock(b, false)
				if k > 0 {
					n += k
				} else {
					time.Sleep(time.Millisecond) // a pacing, not a sync
				}
			}
		}()
		wc := adv13Wait(t, r, "writes", writes...)
		oc := adv13Wait(t, r, "poll out", pout)
		close(stop)
		total := <-drained
		sum := 0
		for i, c := range wc {
			require.NoError(t, c.Err, "write %d", i)
			sum += c.N
		}
		assert.Equal(t, filled+sum, total, "bytes written vs drained")
		assert.NotZero(t, oc[0].N&unix.POLLOUT, "Poll(OUT) %#x", oc[0].N)
		return []string{fmt.Sprintf("reads=%d pollin=%v", len(joined), pc[0].N&unix.POLLIN != 0)}
	})
	adv13Agree(t, got)
}

// TestAdv13DupsAndDescriptions: reads on an fd, its dup (one description,
// one pollFD) and a second description of the same pipe wait together,
// with random cancels racing bursts of data: every request completes once,
// and no byte is lost or doubled.
func TestAdv13DupsAndDescriptions(t *testing.T) {
	rng := adv13Rand(t)
	seed := rng.Uint64()
	adv13Both(t, 256, func(t *testing.T, r *Ring) []string {
		rng := adv13RandFrom(seed)
		for round := range 8 {
			rd, wr := adv12Pipe(t, 0)
			rd2, err := unix.Dup(rd)
			require.NoError(t, err)
			rd3, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", rd), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			require.NoError(t, err)
			fds := []int{rd, rd2, rd3}
			const n = 60
			qs := make([]Request, n)
			bufs := make([][]byte, n)
			for i := range n {
				bufs[i] = make([]byte, 1+rng.IntN(64))
				op := Read(fds[rng.IntN(3)], bufs[i], -1)
				if rng.IntN(4) == 0 {
					op = op.Unordered()
				}
				qs[i], err = r.Start(op)
				require.NoError(t, err)
			}
			written := 0
			hist := [256]int{}
			done := make(chan struct{})
			go func() {
				defer close(done)
				// The writer and the canceler race; both seeded.
				for k := range 20 {
					chunk := make([]byte, 1+rng.IntN(200))
					for j := range chunk {
						chunk[j] = byte(written + j)
						hist[chunk[j]]++
					}
					w, err := unix.Write(wr, chunk)
					if err != nil || w != len(chunk) {
						t.Errorf("write: %d %v", w, err)
						return
					}
					written += w
					for range 3 {
						qs[rng.IntN(n)].Cancel()
					}
					if k%5 == 0 {
						time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
					}
				}
			}()
			<-done
			// Whatever still waits: cancel it all.
			for _, q := range qs {
				q.Cancel()
			}
			cs := adv13Wait(t, r, fmt.Sprintf("round %d", round), qs...)
			gotHist := [256]int{}
			sum := 0
			for i, c := range cs {
				if c.Err != nil {
					require.True(t, adv12IsCancel(c.Err), "read %d: %v", i, c.Err)
					continue
				}
				require.Positive(t, c.N, "read %d: EOF with the writer open", i)
				sum += c.N
				for _, x := range bufs[i][:c.N] {
					gotHist[x]++
				}
			}
			rest := adv13Drain(t, rd)
			for _, x := range rest {
				gotHist[x]++
			}
			require.Equal(t, written, sum+len(rest), "round %d: bytes read %d + left %d vs written", round, sum, len(rest))
			require.Equal(t, hist, gotHist, "round %d: the bytes read are not the bytes written", round)
			for _, fd := range []int{rd, rd2, rd3, wr} {
				unix.Close(fd)
			}
		}
		return nil
	})
}

// TestAdv13FdNumberReused: an fd whose requests completed is closed and
// its number reused by the caller for another file (allowed), while a
// request on a dup of the first file (another number, same description,
// the pollFD the number mapped to) still waits, and requests on other fds
// are in flight. Each request acts on the file its fd named at submission.
func TestAdv13FdNumberReused(t *testing.T) {
	got := adv13Both(t, 64, func(t *testing.T, r *Ring) []string {
		// Background requests on other fds, which never get data.
		bgR, bgW := adv12Pipe(t, 0)
		defer unix.Close(bgW)
		defer unix.Close(bgR)
		var bg []Request
		for range 4 {
			q, err := r.Start(Read(bgR, make([]byte, 8), -1).Unordered())
			require.NoError(t, err)
			bg = append(bg, q)
		}
		var out []string
		for round := range 20 {
			qr, qw := adv12Pipe(t, 0)
			keep, err := unix.Dup(qr) // same description, another number
			require.NoError(t, err)
			b1 := make([]byte, 16)
			q1, err := r.Start(Read(qr, b1, -1))
			require.NoError(t, err)
			under := round%2 == 1 // close qr under q1 (order documented)
			var c1 Completion
			if !under {
				_, err = unix.Write(qw, []byte("first"))
				require.NoError(t, err)
				c1 = adv13Wait(t, r, "q1", q1)[0]
				require.NoError(t, c1.Err)
			}
			bk := make([]byte, 16)
			var qk Request
			if !under {
				qk, err = r.Start(Read(keep, bk, -1))
				require.NoError(t, err)
			}
			// Close qr and put another pipe's read end at its number.
			nr, nw := adv12Pipe(t, 0)
			require.NoError(t, unix.Dup3(nr, qr, unix.O_CLOEXEC))
			unix.Close(nr)
			b2 := make([]byte, 16)
			q2, err := r.Start(Read(qr, b2, -1))
			require.NoError(t, err)
			_, err = unix.Write(nw, []byte("second"))
			require.NoError(t, err)
			if under {
				// q2 is held behind q1, which still reads the first pipe.
				_, err = unix.Write(qw, []byte("first"))
				require.NoError(t, err)
				c1 = adv13Wait(t, r, "q1", q1)[0]
				require.NoError(t, c1.Err)
				qk, err = r.Start(Read(keep, bk, -1))
				require.NoError(t, err)
			}
			c2 := adv13Wait(t, r, "q2", q2)[0]
			require.NoError(t, c2.Err)
			assert.Equal(t, "second", string(b2[:c2.N]), "round %d: request on the reused number", round)
			// The first pipe again: the dup's request gets its data.
			_, err = unix.Write(qw, []byte("third"))
			require.NoError(t, err)
			ck := adv13Wait(t, r, "qk", qk)[0]
			require.NoError(t, ck.Err)
			all := string(b1[:c1.N]) + string(bk[:ck.N]) + string(adv13Drain(t, keep))
			assert.Equal(t, "firstthird", all, "round %d (under=%v): the first pipe's data", round, under)
			out = append(out, fmt.Sprintf("round %d q2=%q", round, b2[:c2.N]))
			for _, fd := range []int{qr, qw, keep, nw} {
				unix.Close(fd)
			}
		}
		for _, q := range bg {
			q.Cancel()
		}
		for i, c := range adv13Wait(t, r, "background", bg...) {
			assert.True(t, adv12IsCancel(c.Err), "background %d: %s", i, adv13Out(c))
		}
		return out
	})
	adv13Agree(t, got)
}

// TestAdv13HangUpBothDirections: reads, writes and polls of both
// directions wait on one socket when the peer goes away (EPOLLHUP, and
// EPOLLERR for a reset): every one completes, as on io_uring.
func TestAdv13HangUpBothDirections(t *testing.T) {
	for _, kind := range []string{"unix-close", "tcp-reset", "tcp-close"} {
		t.Run(kind, func(t *testing.T) {
			got := adv13Both(t, 64, func(t *testing.T, r *Ring) []string {
				var a, b int
				if kind == "unix-close" {
					a, b = adv13SockPair(t, unix.SOCK_STREAM)
				} else {
					a, b = adv13TCPPair(t)
				}
				defer unix.Close(a)
				adv13Fill(t, a)
				type rq struct {
					name string
					q    Request
				}
				var qs []rq
				add := func(name string, op Op) {
					q, err := r.Start(op)
					require.NoError(t, err, name)
					qs = append(qs, rq{name, q})
				}
				for i := range 3 {
					add(fmt.Sprintf("read%d", i), Read(a, make([]byte, 64), -1))
				}
				for i := range 2 {
					add(fmt.Sprintf("write%d", i), Write(a, make([]byte, 1<<16), -1))
				}
				add("recv", Recv(a, make([]byte, 64), 0))
				add("pollin", Poll(a, unix.POLLIN))
				add("pollrdhup", Poll(a, unix.POLLRDHUP))
				add("pollpri", Poll(a, unix.POLLPRI))
				if kind == "tcp-reset" {
					require.NoError(t, unix.SetsockoptLinger(b, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
				}
				unix.Close(b)
				// The peer closes with data it never read, so every kind
				// is a reset (a TCP close with unread data sends RST).
				// The socket's error is taken by exactly one request:
				// the first read, recv or (on TCP) write to look at it
				// gets ECONNRESET, and the error is gone. Which one that
				// is, and whether a poll's mask was read before
				// (EPOLLERR) or after, is the kernel's race on either
				// backend; so the comparison counts the resets taken,
				// folds the taker into its siblings' result (EOF for a
				// read, EPIPE for a write) and leaves EPOLLERR out.
				var out []string
				resets := 0
				for i, c := range adv13Wait(t, r, kind, func() []Request {
					var l []Request
					for _, x := range qs {
						l = append(l, x.q)
					}
					return l
				}()...) {
					res := adv13Out(c)
					name := qs[i].name
					switch c.Op {
					case OpPoll:
						if c.Err == nil {
							res = fmt.Sprintf("events=%#x", c.N&^unix.POLLERR)
						}
					case OpRead, OpRecv:
						name = "read/recv"
						if errors.Is(c.Err, unix.ECONNRESET) {
							resets++
							res = "n=0"
						}
					case OpWrite:
						name = "write"
						if errors.Is(c.Err, unix.ECONNRESET) {
							resets++
							res = "EPIPE"
						}
					}
					out = append(out, name+": "+res)
				}
				assert.Equal(t, 1, resets, "requests that took the reset")
				out = append(out, fmt.Sprintf("resets taken: %d", resets))
				return adv13Sorted(out)
			})
			adv13Agree(t, got)
		})
	}
}

// TestAdv13AcceptAndMultishot: single Accepts and an AcceptMultishot wait
// on one listener together; every connection is delivered exactly once,
// and then everything left is canceled and the ring closes within the
// bound. With a blocking listener the poll backend accepts on a worker,
// where a connection the multishot request took first would leave the
// worker in accept4, out of a cancel's reach.
func TestAdv13AcceptAndMultishot(t *testing.T) {
	for _, nonblock := range []bool{true, false} {
		t.Run(fmt.Sprintf("nonblock=%v", nonblock), func(t *testing.T) {
			rng := adv13Rand(t)
			seed := rng.Uint64()
			adv13Both(t, 64, func(t *testing.T, r *Ring) []string {
				rng := adv13RandFrom(seed)
				flags := unix.SOCK_STREAM | unix.SOCK_CLOEXEC
				if nonblock {
					flags |= unix.SOCK_NONBLOCK
				}
				l, err := unix.Socket(unix.AF_INET, flags, 0)
				require.NoError(t, err)
				defer unix.Close(l)
				require.NoError(t, unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
				require.NoError(t, unix.Listen(l, 64))
				sa, err := unix.Getsockname(l)
				require.NoError(t, err)

				led := newAdv12Ledger(t)
				id := 0
				sub := func(op Op) Request {
					id++
					q, err := r.Submit(op.WithUser(id))
					require.NoError(t, err)
					led.accept(id, q)
					return q
				}
				const singles, conns = 4, 24
				var all []Request
				for range singles {
					all = append(all, sub(Accept(l, 0)))
				}
				ms := sub(AcceptMultishot(l, 0))
				all = append(all, ms)
				var clients []int
				defer func() {
					for _, c := range clients {
						unix.Close(c)
					}
				}()
				for range conns {
					c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
					require.NoError(t, err)
					clients = append(clients, c)
					require.NoError(t, unix.Connect(c, sa))
					if rng.IntN(3) == 0 {
						time.Sleep(time.Duration(rng.IntN(500)) * time.Microsecond) // pacing only
					}
				}
				accepted := func() []int {
					led.mu.Lock()
					defer led.mu.Unlock()
					var fds []int
					for _, c := range led.final {
						if c.Err == nil && c.Op == OpAccept {
							fds = append(fds, c.N)
						}
					}
					for _, cs := range led.more {
						for _, c := range cs {
							fds = append(fds, c.N)
						}
					}
					return fds
				}
				adv12Reap(t, r, led, "connections", func() bool { return len(accepted()) >= conns })
				for _, q := range all {
					q.Cancel()
				}
				stuck := false
				closed := make(chan error, 1)
				go func() {
					adv12Reap(t, r, led, "cancels", func() bool { return led.done() == len(all) })
					closed <- nil
				}()
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					// Release whatever waits in accept4, then report.
					bound := time.After(adv13Hang)
				release:
					for {
						if c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err == nil {
							clients = append(clients, c)
							unix.Connect(c, sa)
						}
						select {
						case <-closed:
							break release
						case <-time.After(50 * time.Millisecond):
						case <-bound:
							t.Fatalf("the stuck Accepts were not released")
						}
					}
					t.Errorf("BUG: canceled Accepts did not complete within 5s (stuck in a worker's accept4; released by extra connections)")
					stuck = true
				}
				led.check()
				fds := accepted()
				sort.Ints(fds)
				for i := 1; i < len(fds); i++ {
					assert.NotEqual(t, fds[i-1], fds[i], "one fd delivered twice")
				}
				if stuck {
					for _, fd := range fds {
						unix.Close(fd)
					}
					unix.SetNonblock(l, true)
					for {
						fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
						if err != nil {
							break
						}
						unix.Close(fd)
					}
					return nil
				}
				assert.Len(t, fds, conns, "connections accepted")
				// Each accepted fd is one of our clients' peers, each once.
				peers := map[int]bool{}
				for _, fd := range fds {
					sa, err := unix.Getpeername(fd)
					if assert.NoError(t, err) {
						peers[sa.(*unix.SockaddrInet4).Port] = true
					}
					unix.Close(fd)
				}
				assert.Len(t, peers, conns, "distinct peers")
				// Nothing left in the backlog.
				unix.SetNonblock(l, true)
				fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
				if !assert.ErrorIs(t, err, unix.EAGAIN, "a connection left behind") && fd >= 0 {
					unix.Close(fd)
				}
				return nil
			})
		})
	}
}
