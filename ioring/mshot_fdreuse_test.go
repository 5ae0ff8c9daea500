//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestRecvMultishotCallerFDReused: a multishot receive goes on after its
// caller closes its fd (the request holds the file), and the fd number may
// then name another socket. The request must report its own socket's data
// and end, whatever that other socket holds: its end of stream does not
// end the request, and its pending error (a reset) is neither reported by
// the request nor taken from that socket. The io_uring ring's
// end-of-stream check (eofCheck) used to peek at the caller's fd number
// and so at the other socket. Both backends must agree.
func TestRecvMultishotCallerFDReused(t *testing.T) {
	for _, other := range []string{"eof", "reset", "none"} {
		t.Run("other="+other, func(t *testing.T) {
			forEachBackend(t, 16, func(t *testing.T, r *Ring) {
				for round := range 20 {
					mshotFDReuseRound(t, r, other, round)
					if t.Failed() {
						return
					}
				}
			})
		})
	}
}

// mshotFDReuseRound runs one round of TestRecvMultishotCallerFDReused:
// other says what the caller's fd number names once the request is on
// ("none": nothing that is a socket).
func mshotFDReuseRound(t *testing.T, r *Ring, other string, round int) {
	br, err := r.NewBufRing(4, 16)
	if err != nil {
		require.ErrorIs(t, err, ErrNotSupported)
		t.Skipf("no provided-buffer rings: %v", err)
	}
	defer func() { require.NoError(t, br.Close()) }()
	clA, srvA := port2TCPPair(t)
	clB, srvB := port2TCPPair(t)
	q, err := r.Submit(RecvMultishot(clA, br, 0))
	require.NoError(t, err)

	// The caller's fd goes; its number names the other socket (or /dev/null).
	switch other {
	case "eof":
		require.NoError(t, unix.Dup3(clB, clA, unix.O_CLOEXEC))
		require.NoError(t, unix.Shutdown(srvB, unix.SHUT_WR))
		require.Eventually(t, func() bool { return readable(t, clB) }, 5*time.Second, time.Millisecond)
	case "reset":
		require.NoError(t, unix.Dup3(clB, clA, unix.O_CLOEXEC))
		adv9Reset(t, srvB)
		adv9AwaitErr(t, clB)
	case "none":
		require.NoError(t, adv9Close(clA))
	}

	var got []byte
	var final *Completion
	take := func(c Completion) {
		require.Equal(t, q, c.Req)
		require.Nil(t, final, "round %d: a completion after the final one: %+v", round, c)
		if c.Buffer {
			got = append(got, br.Bytes(c)...)
			require.NoError(t, br.Release(c.BufID))
		}
		if !c.More {
			final = &c
		}
	}
	// The first message, alone: its result empties the socket.
	_, err = unix.Write(srvA, []byte("abc"))
	require.NoError(t, err)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 3 && final == nil {
		var cs [4]Completion
		n, err := r.Reap(cs[:], time.Until(deadline))
		require.NoError(t, err)
		require.NotZero(t, n, "round %d: no completion within 10s", round)
		for _, c := range cs[:n] {
			take(c)
		}
	}
	// More, then the end of the request's own stream.
	if final == nil {
		// (Errors here are not fatal: a request ended early drops its
		// file, and the peer's reset may meet these.)
		_, err = unix.Write(srvA, []byte("def"))
		assert.NoError(t, err, "round %d: write", round)
		assert.NoError(t, unix.Shutdown(srvA, unix.SHUT_WR), "round %d: shutdown", round)
		for _, c := range adv9Wait(t, r, q) {
			take(c)
		}
	}
	assert.Equal(t, "abcdef", string(got), "round %d (other %s)", round, other)
	if assert.NotNil(t, final) {
		assert.NoError(t, final.Err, "round %d (other %s): final %+v", round, other, *final)
		assert.Zero(t, final.N, "round %d (other %s)", round, other)
	}

	// The other socket keeps what it had: its end, or its error.
	var c [1]byte
	n, _, err := unix.Recvfrom(clB, c[:], unix.MSG_DONTWAIT)
	switch other {
	case "eof":
		assert.NoError(t, err, "round %d: the other socket's end", round)
		assert.Zero(t, n, "round %d: the other socket's end", round)
	case "reset":
		assert.ErrorIs(t, err, unix.ECONNRESET, "round %d: the other socket's reset is still pending (recv %d)", round, n)
	}
}

// TestRecvMultishotCallerFDClosedEOF: a multishot receive whose caller
// closed its fd still sees its stream's end when it drains the stream in
// several rounds as the peer shuts down, the case in which io_uring
// (Linux 6.17 on) can miss the end and wait for ever
// (TestRecvMultishotEOFAfterDrain). The ring's end-of-stream check used
// to skip such a request (the fd number named no socket, or another);
// it now peeks at its own duplicate. The hang is a race: rounds.
func TestRecvMultishotCallerFDClosedEOF(t *testing.T) {
	forEachBackend(t, 64, func(t *testing.T, r *Ring) {
		br, err := r.NewBufRing(64, 32)
		if err != nil {
			require.ErrorIs(t, err, ErrNotSupported)
			t.Skipf("no provided-buffer rings: %v", err)
		}
		for round := range 200 {
			size := []int{1, 2048}[round%2]
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			require.NoError(t, err)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = unix.Write(fds[1], make([]byte, size))
				_ = unix.Close(fds[1]) // the end of the stream
			}()
			q, err := r.Submit(RecvMultishot(fds[0], br, 0))
			require.NoError(t, err)
			require.NoError(t, unix.Close(fds[0])) // the request goes on
			got := 0
			var final *Completion
			deadline := time.Now().Add(5 * time.Second)
			for final == nil {
				var cs [4]Completion
				n, err := r.Reap(cs[:], time.Until(deadline))
				require.NoError(t, err)
				if n == 0 {
					q.Cancel()
					require.Failf(t, "no end of stream", "round %d: %d of %d bytes, then no completion within 5s", round, got, size)
				}
				for _, c := range cs[:n] {
					require.Equal(t, q, c.Req)
					if c.Buffer {
						got += c.N
						require.NoError(t, br.Release(c.BufID))
					}
					if !c.More {
						final = &c
					}
				}
			}
			<-done
			if final.Err != nil {
				// Out of buffers before the end (the kernel's ENOBUFS):
				// not this test's concern.
				require.ErrorIs(t, final.Err, unix.ENOBUFS, "round %d", round)
				continue
			}
			require.Equal(t, size, got, "round %d", round)
			require.Zero(t, final.N, "round %d", round)
		}
		require.NoError(t, br.Close())
	})
}
