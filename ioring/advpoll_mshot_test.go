//go:build linux

package ioring

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Multishot requests under the poll backend's edge-triggered emulation:
// data that arrives between rounds, and ends that race the data.

// TestAdvPollRecvMultishotEndNoLoss runs a multishot receive on a stream
// socket while a writer streams numbered bytes into it in small pieces,
// and ends the request at a random moment (its cancel, its token, its
// deadline, CancelAll). Whatever the moment, every byte written is either
// in a completion (in order, each once) or still in the socket after the
// final completion: none is lost or delivered twice, and the final
// completion comes once, last.
func TestAdvPollRecvMultishotEndNoLoss(t *testing.T) {
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		rng := rand.New(rand.NewPCG(7, 11))
		for round := range 24 {
			s, peer := advPair(t, unix.SOCK_STREAM)
			br, err := r.NewBufRing(8, 64)
			require.NoError(t, err)
			tok := r.NewToken()
			cause := round % 4
			op := RecvMultishot(s, br, 0).WithToken(tok)
			if cause == 2 {
				op = op.WithDeadline(time.Duration(1+rng.IntN(3000)) * time.Microsecond)
			}
			q, err := r.Submit(op)
			if errors.Is(err, ErrNotSupported) {
				t.Skip("no multishot receive on this kernel")
			}
			require.NoError(t, err)

			const total = 6000
			stop := make(chan struct{})
			wrote := make(chan int, 1)
			wrng := rand.New(rand.NewPCG(uint64(round), 13)) // the writer's own
			go func() {
				n := 0
				defer func() { wrote <- n }()
				for n < total {
					select {
					case <-stop:
						return
					default:
					}
					k := min(1+wrng.IntN(200), total-n)
					piece := make([]byte, k)
					for i := range piece {
						piece[i] = byte(n + i)
					}
					m, err := unix.SendmsgN(peer, piece, nil, nil, unix.MSG_DONTWAIT)
					if err == unix.EAGAIN {
						time.Sleep(50 * time.Microsecond)
						continue
					}
					if err != nil {
						return
					}
					n += m
					time.Sleep(time.Duration(wrng.IntN(40)) * time.Microsecond)
				}
			}()
			endAt := time.Now().Add(time.Duration(rng.IntN(4000)) * time.Microsecond)
			ended := cause == 2
			var got []byte
			var final Completion
			for {
				if !ended && time.Now().After(endAt) {
					ended = true
					switch cause {
					case 0:
						q.Cancel()
					case 1:
						tok.Cancel()
					case 3:
						r.CancelAll()
					}
				}
				var cs [8]Completion
				wait := time.Duration(0)
				if ended {
					wait = 10 * time.Second
				}
				n, err := r.Reap(cs[:], wait)
				require.NoError(t, err)
				if ended && n == 0 {
					t.Fatalf("round %d: no final completion within 10s of the end", round)
				}
				done := false
				for _, c := range cs[:n] {
					require.Equal(t, q, c.Req)
					require.False(t, done, "round %d: a completion after the final one", round)
					if c.Buffer {
						got = append(got, br.Bytes(c)...)
						require.NoError(t, br.Release(c.BufID))
					}
					if !c.More {
						final, done = c, true
					}
				}
				if done {
					break
				}
			}
			close(stop)
			n := <-wrote
			// The rest is still in the socket.
			rest := make([]byte, total)
			for !pipeEmpty(t, s) {
				k, _, err := unix.Recvfrom(s, rest, unix.MSG_DONTWAIT)
				if err == unix.EINTR {
					continue
				}
				require.NoError(t, err)
				got = append(got, rest[:k]...)
			}
			require.Equal(t, n, len(got), "round %d (cause %d, final %v): bytes written vs received and left", round, cause, final.Err)
			for i, b := range got {
				if b != byte(i) {
					t.Fatalf("round %d: byte %d is %d, not %d: lost, reordered or repeated data", round, i, b, byte(i))
				}
			}
			if final.Err != nil && !errors.Is(final.Err, ErrCanceled) {
				assert.ErrorIs(t, final.Err, unix.ENOBUFS, "round %d", round)
			}
			require.NoError(t, br.Close())
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestAdvPollMultishotNoLostEdge: a multishot poll on a pipe while a
// writer puts bytes in one at a time at random moments; the consumer
// takes everything out of the pipe after each event. Whenever data is
// left in the pipe an event must follow, however the writes fall against
// the rounds of the edge-triggered emulation: a lost wake-up leaves the
// consumer waiting with data in the pipe.
func TestAdvPollMultishotNoLostEdge(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		rd, wr := advPipe(t, unix.O_NONBLOCK)
		q, err := r.Submit(PollMultishot(rd, unix.POLLIN))
		if errors.Is(err, ErrNotSupported) {
			t.Skip("no multishot poll on this kernel")
		}
		require.NoError(t, err)
		const total = 3000
		done := make(chan error, 1)
		go func() {
			// No t.Errorf here: a write that fails because the test
			// failed and closed the pipe would report after the test.
			defer close(done)
			rng := rand.New(rand.NewPCG(3, 5))
			for i := range total {
				if _, err := unix.Write(wr, []byte{byte(i)}); err != nil {
					done <- fmt.Errorf("write: %w", err)
					return
				}
				if d := rng.IntN(30); d > 0 {
					time.Sleep(time.Duration(d) * time.Microsecond)
				}
			}
		}()
		var got []byte
		buf := make([]byte, 256)
		for len(got) < total {
			var cs [8]Completion
			n, err := r.Reap(cs[:], 10*time.Second)
			require.NoError(t, err)
			if n == 0 {
				t.Fatalf("no event within 10s with %d bytes read and the pipe empty=%v: a lost wake-up",
					len(got), pipeEmpty(t, rd))
			}
			for _, c := range cs[:n] {
				require.Equal(t, q, c.Req)
				if !c.More && errors.Is(c.Err, ErrOverrun) {
					// On io_uring the kernel ends a multishot request
					// whose result finds its completion ring full (a
					// consumer descheduled on a loaded machine), as
					// documented; a new poll goes on watching.
					q, err = r.Submit(PollMultishot(rd, unix.POLLIN))
					require.NoError(t, err)
					continue
				}
				require.True(t, c.More, "the poll ended: %v", c.Err)
				assert.Equal(t, unix.POLLIN, c.N&unix.POLLIN)
			}
			for {
				k, err := unix.Read(rd, buf)
				if err != nil {
					break
				}
				got = append(got, buf[:k]...)
			}
		}
		require.NoError(t, <-done)
		for i, b := range got {
			require.Equal(t, byte(i), b, "byte %d", i)
		}
		require.NoError(t, q.Cancel())
		for {
			c := reapOne(t, r)
			if !c.More {
				assert.ErrorIs(t, c.Err, ErrCanceled)
				break
			}
		}
		assertSettled(t, r)
	})
}
