//go:build linux

package ioring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Seventh round, MSG_WAITALL cut short: ported from liburing's
// recv-msgall and recv-msgall-stream, past what they check. A receive
// given MSG_WAITALL that has part of its buffer when something ends it (a
// cancel, a deadline, its token, CancelAll, Close) reports the part it
// has, bytes included (the contract's "nothing lost"), and the stream goes
// on from there; a send given MSG_WAITALL reports what went out.

// port7Consumed waits until fd has nothing to read: the ring's receive
// took what the peer sent.
func port7Consumed(t *testing.T, fd int) {
	t.Helper()
	require.Eventually(t, func() bool { return !readable(t, fd) }, 10*time.Second, time.Millisecond,
		"the pending receive takes the partial data")
}

// TestPort7WaitAllPartialThenEnded: a Recv and a RecvMsg given MSG_WAITALL
// for 512 bytes, on a TCP and an AF_UNIX stream, take the 7 bytes the peer
// sends and go on waiting; then a cancel, a deadline, a token, CancelAll or
// the ring's Close ends them. Each completes once with its 7 bytes and no
// error, on both backends alike, and the bytes the peer sends next go to
// the next receive.
func TestPort7WaitAllPartialThenEnded(t *testing.T) {
	enders := []string{"cancel", "deadline", "token", "cancelall", "close"}
	got := adv13Both(t, 16, func(t *testing.T, r *Ring) []string {
		var out []string
		for _, kind := range []string{"tcp", "unix"} {
			for _, useMsg := range []bool{false, true} {
				for _, ender := range enders {
					if ender == "close" {
						continue // last: it ends the ring
					}
					out = append(out, port7WaitAllEnd(t, r, kind, useMsg, ender))
				}
			}
		}
		out = append(out, port7WaitAllEnd(t, r, "tcp", true, "close"))
		return out
	})
	adv13Agree(t, got)
}

// port7WaitAllDeadline is the deadline that ends a receive holding part
// of its buffer in TestPort7WaitAllPartialThenEnded.
const port7WaitAllDeadline = 300 * time.Millisecond

// port7WaitAllEnd runs one case of TestPort7WaitAllPartialThenEnded and
// describes its outcome.
func port7WaitAllEnd(t *testing.T, r *Ring, kind string, useMsg bool, ender string) string {
	what := fmt.Sprintf("%s msg=%v %s", kind, useMsg, ender)
	var a, b int
	if kind == "tcp" {
		b, a = port2TCPPair(t)
	} else {
		a, b = socketpair(t, unix.SOCK_STREAM)
	}
	buf := make([]byte, 512)
	var op Op
	if useMsg {
		op = RecvMsg(a, &Msg{Buffers: [][]byte{buf[:5], buf[5:]}}, unix.MSG_WAITALL)
	} else {
		op = Recv(a, buf, unix.MSG_WAITALL)
	}
	tok := r.NewToken()
	switch ender {
	case "deadline":
		// The 7 bytes wait in the socket before the receive starts, so
		// that a short deadline cannot come before they do however
		// loaded the machine: the receive takes them as it starts, and
		// only the deadline ends it (the time asserted below).
		op = op.WithDeadline(port7WaitAllDeadline)
		_, err := unix.Write(b, []byte("partial"))
		require.NoError(t, err)
	case "token":
		op = op.WithToken(tok)
	}
	q, err := r.Submit(op)
	require.NoError(t, err, what)
	start := time.Now()
	if ender != "deadline" {
		_, err = unix.Write(b, []byte("partial"))
		require.NoError(t, err)
		port7Consumed(t, a)
		var pend [1]Completion
		n, _ := r.Reap(pend[:], 0)
		require.Zero(t, n, "%s: 7 bytes of 512 do not complete it: %+v", what, pend[0])
	}
	switch ender {
	case "cancel":
		require.NoError(t, q.Cancel())
	case "deadline":
	case "token":
		require.NoError(t, tok.Cancel())
	case "cancelall":
		require.NoError(t, r.CancelAll())
	case "close":
		require.NoError(t, r.Close())
	}
	c := reapOne(t, r)
	require.Equal(t, q, c.Req, what)
	if ender == "deadline" {
		assert.GreaterOrEqual(t, time.Since(start), port7WaitAllDeadline*9/10, "%s: not before the deadline", what)
	}
	assert.NoError(t, c.Err, "%s: what moved is reported, not the cancel", what)
	assert.Equal(t, 7, c.N, what)
	assert.Equal(t, "partial", string(buf[:max(0, min(c.N, 7))]), what)
	res := what + ": " + adv13Out(c) + " " + string(buf[:max(0, min(c.N, 16))])
	if ender == "close" {
		return res
	}
	// Nothing lost, nothing repeated: the next receive gets what comes next.
	_, err = unix.Write(b, []byte("rest"))
	require.NoError(t, err)
	nb := make([]byte, 64)
	c = doOp(t, r, Recv(a, nb, 0))
	require.NoError(t, c.Err, what)
	assert.Equal(t, "rest", string(nb[:c.N]), what)
	assertNoMore(t, r)
	return res + " then " + string(nb[:c.N])
}

// TestPort7WaitAllCancelRacesStream: a peer writes a numbered stream in
// chunks of random size at random moments; the ring receives it with
// MSG_WAITALL receives (Recv and RecvMsg, random sizes), each canceled
// after a random moment, or given a short deadline. Whatever wins each
// race, the bytes the completions report, in completion order, are the
// stream exactly: nothing lost, nothing twice; a completion with an error
// reports no bytes.
func TestPort7WaitAllCancelRacesStream(t *testing.T) {
	for _, kind := range []string{"tcp", "unix"} {
		t.Run(kind, func(t *testing.T) {
			forEachBackend(t, 16, func(t *testing.T, r *Ring) {
				rnd := adv13Rand(t)
				var a, b int
				if kind == "tcp" {
					b, a = port2TCPPair(t)
				} else {
					a, b = socketpair(t, unix.SOCK_STREAM)
				}
				const total = 128 << 10
				data := port6Pattern(total, 9)
				wseed := rnd.Uint64()
				wdone := make(chan error, 1)
				go func() {
					wr := adv13RandFrom(wseed)
					for off := 0; off < total; {
						n := min(total-off, 1+wr.IntN(700))
						if _, err := unix.Write(b, data[off:off+n]); err != nil {
							wdone <- err
							return
						}
						off += n
						time.Sleep(time.Duration(wr.IntN(150)) * time.Microsecond)
					}
					wdone <- unix.Shutdown(b, unix.SHUT_WR)
				}()
				var recvd []byte
				stats := map[string]int{}
				deadline := time.Now().Add(60 * time.Second)
				for {
					require.True(t, time.Now().Before(deadline), "stream not received in time: %d of %d", len(recvd), total)
					size := 1 + rnd.IntN(16384)
					buf := make([]byte, size)
					var op Op
					if size > 1 && rnd.IntN(2) == 0 {
						cut := 1 + rnd.IntN(size-1) // no empty buffer
						op = RecvMsg(a, &Msg{Buffers: [][]byte{buf[:cut], buf[cut:]}}, unix.MSG_WAITALL)
					} else {
						op = Recv(a, buf, unix.MSG_WAITALL)
					}
					how := rnd.IntN(3)
					if how == 2 {
						op = op.WithDeadline(time.Duration(1+rnd.IntN(500)) * time.Microsecond)
					}
					q, err := r.Submit(op)
					require.NoError(t, err)
					if how == 1 {
						time.Sleep(time.Duration(rnd.IntN(400)) * time.Microsecond)
						q.Cancel()
					}
					var c Completion
					if how == 0 {
						// Cancel from another goroutine while reaping.
						d := time.Duration(rnd.IntN(400)) * time.Microsecond
						go func() {
							time.Sleep(d)
							q.Cancel()
						}()
					}
					c = reapOne(t, r)
					require.Equal(t, q, c.Req)
					switch {
					case c.Err == nil:
						require.GreaterOrEqual(t, c.N, 0)
						require.LessOrEqual(t, c.N, size)
						if c.N == 0 {
							stats["eof"]++
							require.NoError(t, <-wdone)
							require.Equal(t, len(data), len(recvd), "end of stream only after all of it")
							require.True(t, bytes.Equal(data, recvd), "the stream, received in pieces, is whole")
							t.Logf("outcomes: %v", stats)
							return
						}
						if c.N < size {
							stats["short"]++
						} else {
							stats["full"]++
						}
						recvd = append(recvd, buf[:c.N]...)
						if !bytes.Equal(recvd, data[:min(len(recvd), total)]) {
							i := 0
							for i < len(recvd) && i < total && recvd[i] == data[i] {
								i++
							}
							t.Fatalf("stream differs at byte %d (after a %s of %d bytes, N %d)", i, adv13Out(c), size, c.N)
						}
					case errors.Is(c.Err, ErrCanceled):
						stats[adv13Out(c)]++
						require.Zero(t, c.N, "a canceled receive moved nothing")
					default:
						t.Fatalf("unexpected completion: %v", c.Err)
					}
				}
			})
		})
	}
}

// TestPort7WaitAllSendCanceled: a Send given MSG_WAITALL of 1 MiB on a
// socket whose buffers are small, with the peer reading slowly, canceled
// part-way (or ended by its deadline), reports how much went out: the peer
// receives exactly that many bytes, the start of the buffer, and then the
// next send's bytes.
func TestPort7WaitAllSendCanceled(t *testing.T) {
	for _, ender := range []string{"cancel", "deadline"} {
		t.Run(ender, func(t *testing.T) {
			forEachBackend(t, 16, func(t *testing.T, r *Ring) {
				a, b := socketpair(t, unix.SOCK_STREAM)
				require.NoError(t, unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10))
				big := port6Pattern(1<<20, 11)
				op := Send(a, big, unix.MSG_WAITALL)
				if ender == "deadline" {
					// Long enough for the 64 KiB read below on a loaded
					// machine: a deadline before it would leave that
					// read waiting for bytes that never come.
					op = op.WithDeadline(time.Second)
				}
				q, err := r.Submit(op)
				require.NoError(t, err)
				// Read some of it, then stop reading.
				var got []byte
				chunk := make([]byte, 8192)
				for len(got) < 64<<10 {
					n, err := unix.Read(b, chunk)
					require.NoError(t, err)
					got = append(got, chunk[:n]...)
				}
				time.Sleep(20 * time.Millisecond)
				if ender == "cancel" {
					require.NoError(t, q.Cancel())
				}
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.NoError(t, c.Err, "a send that moved bytes reports them")
				require.Greater(t, c.N, len(got)-1)
				require.Less(t, c.N, len(big))
				// The rest of what went out, then a marker sent after.
				marker := []byte("MARK")
				mq, err := r.Submit(Send(a, marker, 0))
				require.NoError(t, err)
				want := append(append([]byte(nil), big[:c.N]...), marker...)
				require.NoError(t, unix.SetNonblock(b, true))
				deadline := time.Now().Add(10 * time.Second)
				for len(got) < len(want) && time.Now().Before(deadline) {
					n, err := unix.Read(b, chunk)
					if err == unix.EAGAIN {
						time.Sleep(time.Millisecond)
						continue
					}
					require.NoError(t, err)
					got = append(got, chunk[:n]...)
				}
				require.Equal(t, len(want), len(got), "the peer got what the send reported, then the marker")
				require.True(t, bytes.Equal(want, got), "the bytes are the buffer's start and the marker")
				mc := reapOne(t, r)
				require.Equal(t, mq, mc.Req)
				require.NoError(t, mc.Err)
				assert.Equal(t, len(marker), mc.N)
				time.Sleep(10 * time.Millisecond)
				n, err := unix.Read(b, chunk)
				assert.Equal(t, -1, n, "nothing more: %v", err)
				assertNoMore(t, r)
			})
		})
	}
}
