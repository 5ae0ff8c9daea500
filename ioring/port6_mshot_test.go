//go:build linux

package ioring

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Sixth round, multishot requests: ported from liburing's recv-multishot
// (a multishot receive and the ways it ends early) and
// poll-mshot-overflow (a multishot poll whose event arrives while the
// completion ring is full, then a cancel).

// port6ReapUntilFinal reaps completions until q's final one, and returns
// q's in order (the final last) and every other request's.
func port6ReapUntilFinal(t *testing.T, r *Ring, q Request) (mine, others []Completion) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var cs [16]Completion
		n, err := r.Reap(cs[:], 50*time.Millisecond)
		require.NoError(t, err)
		for i, c := range cs[:n] {
			if c.Req != q {
				others = append(others, c)
				continue
			}
			mine = append(mine, c)
			if !c.More {
				for _, c := range cs[i+1 : n] {
					require.NotEqual(t, q, c.Req, "a completion after the final one: %+v", c)
					others = append(others, c)
				}
				return mine, others
			}
		}
	}
	require.FailNow(t, "no final completion", "after %d results", len(mine))
	return
}

// port6UDPPair returns two UDP sockets on loopback connected to each
// other, closed with the test.
func port6UDPPair(t *testing.T) (a, b int) {
	a, aa := udpSocket(t)
	b, ba := udpSocket(t)
	require.NoError(t, unix.Connect(a, ba))
	require.NoError(t, unix.Connect(b, aa))
	return a, b
}

// TestPort6RecvMultishotEarlyEnds ports recv-multishot.c: a multishot
// receive on a stream (a Unix socket pair) and on datagrams (a UDP pair),
// while the peer sends 8 messages of 4, 8, ... 32 bytes, and four ways
// of ending:
//
//   - none: on the stream, the bytes arrive whole and in order and the
//     sender's close ends the request with 0; on datagrams, each
//     message is one result of exactly its bytes, and a cancel ends it.
//   - receiver cancels after the third send: the final completion is
//     ErrCanceled, and what came before it is a prefix of what was sent.
//   - sender closes after the third send (stream only: a datagram
//     socket has no end): the final completion is 0, after exactly the
//     first three messages' bytes.
//   - not enough buffers: a BufRing of 2 that the test does not give
//     back: after two results the request ends with ENOBUFS, and the two
//     hold a prefix of what was sent.
//
// Each result holds its buffer until Release; every final completion is
// the request's last. The same on both backends.
func TestPort6RecvMultishotEarlyEnds(t *testing.T) {
	const msgs = 8
	forEachBackend(t, 32, func(t *testing.T, r *Ring) {
		for _, stream := range []bool{true, false} {
			for _, end := range []string{"none", "cancel", "close-sender", "no-buffers"} {
				if !stream && end == "close-sender" {
					continue
				}
				name := fmt.Sprintf("stream=%v end=%s", stream, end)
				var rd, wr int
				if stream {
					rd, wr = socketpair(t, unix.SOCK_STREAM)
				} else {
					rd, wr = port6UDPPair(t)
				}
				count, size := 64, 4 // a stream splits across small buffers
				if !stream {
					size = 32 // a datagram needs a buffer of its size
				}
				if end == "no-buffers" {
					count, size = 2, 32
				}
				br, err := r.NewBufRing(count, size)
				if err != nil {
					require.ErrorIs(t, err, ErrNotSupported)
					t.Skipf("no provided-buffer rings: %v", err)
				}
				q, err := r.Submit(RecvMultishot(rd, br, 0))
				if err != nil {
					require.ErrorIs(t, err, ErrNotSupported)
					t.Skipf("no multishot receive: %v", err)
				}
				var sent []byte
				var sizes []int
				for i := range msgs {
					m := port6Pattern(4*(i+1), i)
					_, err := unix.Write(wr, m)
					require.NoError(t, err, name)
					sent = append(sent, m...)
					sizes = append(sizes, len(m))
					if i == 2 && end == "cancel" {
						require.NoError(t, q.Cancel())
						break
					}
					if i == 2 && end == "close-sender" {
						require.NoError(t, unix.Shutdown(wr, unix.SHUT_RDWR))
						break
					}
				}
				if end == "none" {
					if stream {
						require.NoError(t, unix.Shutdown(wr, unix.SHUT_WR))
					} else {
						// Take the eight datagrams first, then cancel.
						var got int
						for got < msgs {
							c := reapOne(t, r)
							require.Equal(t, q, c.Req)
							require.True(t, c.More, "%s: %+v", name, c)
							require.NoError(t, c.Err)
							require.True(t, c.Buffer)
							require.Equal(t, sent[:sizes[got]], br.Bytes(c), "%s: datagram %d", name, got)
							sent = sent[sizes[got]:]
							require.NoError(t, br.Release(c.BufID))
							got++
						}
						require.NoError(t, q.Cancel())
					}
				}
				mine, others := port6ReapUntilFinal(t, r, q)
				require.Empty(t, others)
				var got []byte
				results := 0
				for _, c := range mine[:len(mine)-1] {
					require.True(t, c.More)
					require.NoError(t, c.Err, name)
					if !c.Buffer {
						continue
					}
					b := br.Bytes(c)
					if !stream {
						require.Equal(t, sizes[results], len(b), "%s: one datagram per result", name)
					}
					got = append(got, b...)
					results++
					if end != "no-buffers" {
						require.NoError(t, br.Release(c.BufID))
					}
				}
				final := mine[len(mine)-1]
				if final.Buffer {
					// A final completion may carry data with it.
					got = append(got, br.Bytes(final)...)
					require.NoError(t, br.Release(final.BufID))
				}
				require.True(t, bytes.HasPrefix(sent, got), "%s: what arrived is what was sent, in order", name)
				switch end {
				case "none":
					if stream {
						require.NoError(t, final.Err, name)
						require.Zero(t, final.N, "%s: the end of the stream", name)
						require.Equal(t, sent, got, name)
					} else {
						require.ErrorIs(t, final.Err, ErrCanceled, name)
					}
				case "cancel":
					require.ErrorIs(t, final.Err, ErrCanceled, name)
				case "close-sender":
					require.NoError(t, final.Err, name)
					require.Zero(t, final.N, name)
					require.Equal(t, sent, got, "%s: the first three messages", name)
				case "no-buffers":
					require.ErrorIs(t, final.Err, unix.ENOBUFS, name)
					require.Equal(t, 2, results, "%s: one result per buffer", name)
				}
				require.NoError(t, br.Close(), "%s: the BufRing is the caller's again", name)
			}
		}
		assertNoMore(t, r)
	})
}

// TestPort6PollMultishotOverflowThenCancel ports poll-mshot-overflow.c:
// a multishot poll that has reported nothing gets its first event while
// the completion ring is full of other completions (here another
// multishot poll's, which nobody reaps), and is then canceled (liburing
// removes it). However the race between the event and the full ring
// goes, the poll delivers its event and exactly one final completion,
// the last of its completions. On io_uring the kernel may have ended it
// on the event it could not post: as documented, such a poll (which
// had reported nothing before) ends with the events and no error, and
// the cancel then finds nothing (ErrNotFound). Where it was posted
// normally, and always on the poll backend (which has no completion
// ring to fill), the event comes with More set and the cancel ends the
// poll with ErrCanceled.
func TestPort6PollMultishotOverflowThenCancel(t *testing.T) {
	saved := maxUndelivered
	maxUndelivered = 24
	t.Cleanup(func() { maxUndelivered = saved })
	forEachBackend(t, 4, func(t *testing.T, r *Ring) {
		flood := eventFD(t)
		fq, err := r.Submit(PollMultishot(flood, unix.POLLIN))
		require.NoError(t, err)
		rd, wr := pipe(t)
		q, err := r.Submit(PollMultishot(rd, unix.POLLIN))
		require.NoError(t, err)
		// Fill the completion ring (16 entries on io_uring, maxUndelivered
		// on the poll backend) with the flood's events. The pacing only
		// lets each signal make an event of its own.
		for range 200 {
			signal(t, flood)
			time.Sleep(200 * time.Microsecond)
		}
		_, err = unix.Write(wr, []byte("foo"))
		require.NoError(t, err)

		// Take the poll's first completion, and the flood's on the way.
		var first Completion
		var floodDone bool
		var others []Completion
		for {
			c := reapOne(t, r)
			if c.Req == fq {
				others = append(others, c)
				continue
			}
			require.Equal(t, q, c.Req)
			first = c
			break
		}
		require.NoError(t, first.Err)
		assert.NotZero(t, first.N&unix.POLLIN, "the event: %+v", first)
		mine := []Completion{first}
		t.Logf("the poll's first completion: More=%v N=%#x", first.More, first.N)
		cerr := q.Cancel()
		if first.More {
			if cerr != nil {
				// The kernel ended it after the first event after all:
				// the final completion is recorded already.
				require.ErrorIs(t, cerr, ErrNotFound)
			}
			m, o := port6ReapUntilFinal(t, r, q)
			mine = append(mine, m...)
			others = append(others, o...)
			final := m[len(m)-1]
			if cerr == nil {
				require.ErrorIs(t, final.Err, ErrCanceled, "the cancel ends the poll: %+v", final)
			}
		} else {
			require.Equal(t, BackendURing, r.Backend().Backend, "only io_uring's full ring ends a poll on its first event")
			require.ErrorIs(t, cerr, ErrNotFound, "the poll had ended")
		}
		finals := 0
		for i, c := range mine {
			if !c.More {
				finals++
				require.Equal(t, len(mine)-1, i, "the final completion is the last")
			}
		}
		require.Equal(t, 1, finals)

		// The flood ends (ErrOverrun, as documented) or is canceled now;
		// either way once.
		for i, c := range others {
			require.Equal(t, fq, c.Req)
			if !c.More {
				require.Equal(t, len(others)-1, i, "the flood's final completion is its last")
				floodDone = true
			}
		}
		if !floodDone {
			cerr := fq.Cancel()
			m, _ := port6ReapUntilFinal(t, r, fq)
			final := m[len(m)-1]
			if cerr == nil {
				require.ErrorIs(t, final.Err, ErrCanceled)
			} else {
				require.ErrorIs(t, final.Err, ErrOverrun)
			}
		} else {
			require.ErrorIs(t, others[len(others)-1].Err, ErrOverrun)
		}
		assertNoMore(t, r)
	})
}
