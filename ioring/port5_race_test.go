//go:build linux

package ioring

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Fifth round, receives racing their data: ported from liburing's
// poll-race (many receives on one socket armed while a writer fills it:
// none may stall), poll-race-mshot (the same into provided buffers, and
// one multishot receive: no buffer lost or used twice) and
// mshot-shutdown-race (a send and the peer's shutdown arriving together
// under a multishot receive: every byte, then the end, exactly once).

const (
	port5RaceReqs  = 64
	port5RaceChunk = 64
)

// port5Chunk is chunk i of a race's stream: its number, then a pattern.
func port5Chunk(i int) []byte {
	b := make([]byte, port5RaceChunk)
	binary.LittleEndian.PutUint64(b, uint64(i))
	for j := 8; j < len(b); j++ {
		b[j] = byte(i + j)
	}
	return b
}

// port5ChunkNo checks that b is a whole chunk and returns its number.
func port5ChunkNo(t *testing.T, b []byte) int {
	t.Helper()
	require.Len(t, b, port5RaceChunk, "a whole chunk")
	i := int(binary.LittleEndian.Uint64(b))
	require.Less(t, i, port5RaceReqs, "chunk number")
	require.Equal(t, port5Chunk(i), b, "chunk %d's bytes", i)
	return i
}

// port5Fds holds fds a test opens round after round: closed by the
// round itself (close), or with the test when the round stops early,
// never twice.
type port5Fds struct{ open map[int]bool }

// port5Track returns an empty set closed with the test.
func port5Track(t *testing.T) *port5Fds {
	s := &port5Fds{open: map[int]bool{}}
	t.Cleanup(func() {
		for fd := range s.open {
			unix.Close(fd)
		}
	})
	return s
}

// add records fds as open.
func (s *port5Fds) add(fds ...int) {
	for _, fd := range fds {
		s.open[fd] = true
	}
}

// close closes fds that are recorded as open.
func (s *port5Fds) close(fds ...int) {
	for _, fd := range fds {
		if s.open[fd] {
			delete(s.open, fd)
			unix.Close(fd)
		}
	}
}

// pair returns a connected pair of unix stream sockets.
func (s *port5Fds) pair(t *testing.T) (int, int) {
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	s.add(p[0], p[1])
	return p[0], p[1]
}

// tcpPair returns a connected pair of TCP sockets on loopback.
func (s *port5Fds) tcpPair(t *testing.T) (cl, srv int) {
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	s.add(lfd)
	defer s.close(lfd)
	require.NoError(t, unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
	require.NoError(t, unix.Listen(lfd, 1))
	sa, err := unix.Getsockname(lfd)
	require.NoError(t, err)
	cl, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	s.add(cl)
	require.NoError(t, unix.Connect(cl, sa))
	srv, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
	require.NoError(t, err)
	s.add(srv)
	return cl, srv
}

// port5Writer writes port5RaceReqs chunks to fd once go is closed; the
// returned channel says how it ended.
func port5Writer(fd int, start <-chan struct{}) <-chan error {
	done := make(chan error, 1)
	go func() {
		<-start
		for i := range port5RaceReqs {
			n, err := unix.Write(fd, port5Chunk(i))
			if err == nil && n != port5RaceChunk {
				err = fmt.Errorf("short write %d", n)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// TestPort5RecvRace: 64 receives of 64 bytes on a stream socket,
// submitted in one batch while another goroutine writes 64 chunks of 64
// bytes (poll-race.c): all 64 complete, each with one whole chunk, and
// together they hold every chunk once. Receives are not ordered, so any
// one may get any chunk; reads at the position are, so the n-th read
// delivered gets chunk n; unordered reads get the chunks in some order.
// Round after round, on each backend.
func TestPort5RecvRace(t *testing.T) {
	for _, kind := range []string{"recv", "read", "read-unordered"} {
		t.Run(kind, func(t *testing.T) {
			forEachBackend(t, port5RaceReqs, func(t *testing.T, r *Ring) {
				fds := port5Track(t)
				for round := range 100 {
					port5RecvRaceRound(t, r, fds, kind, round)
				}
				assertSettled(t, r)
			})
		})
	}
}

func port5RecvRaceRound(t *testing.T, r *Ring, fds *port5Fds, kind string, round int) {
	a, b := fds.pair(t)
	bufs := make([][]byte, port5RaceReqs)
	ops := make([]Op, port5RaceReqs)
	for i := range ops {
		bufs[i] = make([]byte, port5RaceChunk)
		switch kind {
		case "recv":
			ops[i] = Recv(a, bufs[i], 0)
		case "read":
			ops[i] = Read(a, bufs[i], -1)
		default:
			ops[i] = Read(a, bufs[i], -1).Unordered()
		}
		ops[i] = ops[i].WithUser(i)
	}
	start := make(chan struct{})
	done := port5Writer(b, start)
	close(start)
	reqs := make([]Request, port5RaceReqs)
	n, err := r.SubmitBatch(ops, reqs)
	require.NoError(t, err)
	require.Equal(t, port5RaceReqs, n)
	seen := map[int]int{}
	for i := range port5RaceReqs {
		c := reapOne(t, r)
		require.NoError(t, c.Err, "round %d: request %d", round, c.User)
		k := port5ChunkNo(t, bufs[c.User.(int)][:c.N])
		seen[k]++
		require.Equal(t, 1, seen[k], "round %d: chunk %d twice", round, k)
		if kind == "read" {
			require.Equal(t, i, c.User, "round %d: read %d delivered %d-th", round, c.User, i)
			require.Equal(t, i, k, "round %d: the %d-th read got chunk %d", round, i, k)
		}
	}
	require.NoError(t, <-done)
	require.Len(t, seen, port5RaceReqs)
	require.True(t, pipeEmpty(t, a), "round %d: data left over", round)
	fds.close(a, b)
}

// TestPort5RecvMultishotRace: one multishot receive into 64 buffers of
// 64 bytes, submitted while the writer writes its 64 chunks
// (poll-race-mshot.c's test_mshot): 64 completions with More set, each
// a whole chunk in its own buffer, in the order written, no buffer id
// twice (none is given back); once every buffer is given back and the
// writer shuts its side down, the final completion is the end of the
// stream: 0, no error.
func TestPort5RecvMultishotRace(t *testing.T) {
	// 64 slots: a kernel completion ring of 256 holds the 64 results
	// whatever the pace of the reaping (a full one would end the receive
	// with ErrOverrun, as the package doc says).
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		fds := port5Track(t)
		for round := range 50 {
			br, err := r.NewBufRing(port5RaceReqs, port5RaceChunk)
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no provided-buffer rings: %v", err)
			}
			a, b := fds.pair(t)
			start := make(chan struct{})
			done := port5Writer(b, start)
			close(start)
			q, err := r.Submit(RecvMultishot(a, br, 0))
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no multishot receive: %v", err)
			}
			ids := map[uint16]bool{}
			for i := range port5RaceReqs {
				c := reapOne(t, r)
				require.Equal(t, q, c.Req)
				require.True(t, c.More, "round %d: result %d ends the receive: %+v", round, i, c)
				require.NoError(t, c.Err)
				require.True(t, c.Buffer, "round %d: result %d carries a buffer", round, i)
				require.False(t, ids[c.BufID], "round %d: buffer %d handed out twice", round, c.BufID)
				ids[c.BufID] = true
				require.Equal(t, i, port5ChunkNo(t, br.Bytes(c)), "round %d: chunks in order", round)
			}
			require.NoError(t, <-done)
			for id := range ids {
				require.NoError(t, br.Release(id))
			}
			require.NoError(t, unix.Shutdown(b, unix.SHUT_WR))
			c := reapOne(t, r)
			require.Equal(t, q, c.Req)
			require.False(t, c.More, "round %d: the end of the stream ends it: %+v", round, c)
			require.NoError(t, c.Err, "round %d", round)
			require.Zero(t, c.N, "round %d", round)
			require.False(t, c.Buffer, "round %d: the end carries no buffer", round)
			require.NoError(t, br.Close())
			fds.close(a, b)
		}
		assertNoMore(t, r)
		assertSettled(t, r)
	})
}

// TestPort5RecvMultishotSendThenShutdown: the peer sends one or two
// messages of 123 bytes and shuts its side down at once, while a
// multishot receive with four buffers of 256 bytes waits
// (mshot-shutdown-race.c, on unix and TCP sockets): the receive
// delivers every byte sent (More set, a buffer each, given back as they
// come), then its final completion: 0, no error, no buffer. Neither the
// data nor the end is lost when both arrive before the receive runs.
func TestPort5RecvMultishotSendThenShutdown(t *testing.T) {
	const size = 123
	for _, family := range []string{"unix", "tcp"} {
		t.Run(family, func(t *testing.T) {
			forEachBackend(t, 8, func(t *testing.T, r *Ring) {
				fds := port5Track(t)
				br, err := r.NewBufRing(4, 256)
				if err != nil {
					require.ErrorIs(t, err, ErrNotSupported)
					t.Skipf("no provided-buffer rings: %v", err)
				}
				defer br.Close()
				msg := make([]byte, size)
				for i := range msg {
					msg[i] = byte(i)
				}
				rounds := 400
				if family == "tcp" {
					rounds = 150
				}
				for round := range rounds {
					var cl, srv int
					if family == "unix" {
						cl, srv = fds.pair(t)
					} else {
						cl, srv = fds.tcpPair(t)
					}
					sends := round%2 + 1
					q, err := r.Submit(RecvMultishot(srv, br, 0))
					if err != nil {
						require.ErrorIs(t, err, ErrNotSupported)
						t.Skipf("no multishot receive: %v", err)
					}
					done := make(chan error, 1)
					go func() {
						for range sends {
							n, err := unix.Write(cl, msg)
							if err == nil && n != size {
								err = fmt.Errorf("short send %d", n)
							}
							if err != nil {
								done <- err
								return
							}
						}
						done <- unix.Shutdown(cl, unix.SHUT_WR)
					}()
					got := 0
					for {
						c := reapOne(t, r)
						require.Equal(t, q, c.Req)
						if c.More {
							require.NoError(t, c.Err)
							require.True(t, c.Buffer, "round %d: data in a buffer", round)
							require.Positive(t, c.N)
							data := br.Bytes(c)
							for j, b := range data {
								require.Equal(t, byte((got+j)%size), b, "round %d: byte %d", round, got+j)
							}
							got += len(data)
							require.NoError(t, br.Release(c.BufID))
							continue
						}
						require.NoError(t, c.Err, "round %d: the final completion", round)
						require.Zero(t, c.N, "round %d: the end of the stream", round)
						assert.False(t, c.Buffer, "round %d: the end carries no buffer", round)
						if c.Buffer {
							require.NoError(t, br.Release(c.BufID))
						}
						break
					}
					require.NoError(t, <-done)
					require.Equal(t, sends*size, got, "round %d: every byte sent", round)
					fds.close(cl, srv)
				}
				assertNoMore(t, r)
				assertSettled(t, r)
			})
		})
	}
}
