//go:build linux

package ioring

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestRecvMultishotResetAfterData: a multishot receive on a TCP
// connection whose peer sent data and then reset it (SO_LINGER 0, close),
// before the receive was submitted or while it waits, delivers the data,
// then ends with
// ECONNRESET, not with the end of the stream: the io_uring ring's
// end-of-stream check (eofCheck) peeks at the socket after a result that
// emptied it, and a peek that finds the reset takes the socket's error,
// which the final completion must then report (found by the differential
// round on socket operations: 0 instead of ECONNRESET at times).
func TestRecvMultishotResetAfterData(t *testing.T) {
	forEachBackend(t, 16, func(t *testing.T, r *Ring) {
		for round := range 100 {
			early := round%2 == 0
			br, err := r.NewBufRing(4, 16)
			if err != nil {
				require.ErrorIs(t, err, ErrNotSupported)
				t.Skipf("no provided-buffer rings: %v", err)
			}
			cl, srv := port2TCPPair(t)
			var q Request
			if !early {
				q, err = r.Submit(RecvMultishot(cl, br, 0))
				require.NoError(t, err)
			}
			_, err = unix.Write(srv, []byte("abc"))
			require.NoError(t, err)
			if early {
				require.Eventually(t, func() bool { return readable(t, cl) }, 5*time.Second, time.Millisecond)
			}
			adv9Reset(t, srv)
			if early {
				q, err = r.Submit(RecvMultishot(cl, br, 0))
				require.NoError(t, err)
			}
			var got []byte
			var final Completion
			for _, c := range adv9Wait(t, r, q) {
				if c.Buffer {
					got = append(got, br.Bytes(c)...)
					require.NoError(t, br.Release(c.BufID))
				}
				if !c.More {
					final = c
				}
			}
			assert.Equal(t, "abc", string(got), "round %d", round)
			assert.ErrorIs(t, final.Err, unix.ECONNRESET, "round %d: final %+v", round, final)
			require.NoError(t, br.Close())
		}
	})
}
