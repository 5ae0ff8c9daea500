//go:build linux

package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestSubmitAfterCloseRingState: after Close, an op that names ring state
// Close took down (a registered file, a BufRing, a registered buffer)
// says ErrClosed, like every other call, not ErrInvalid: its input was
// good until Close. SubmitBatch and Start say the same.
func TestSubmitAfterCloseRingState(t *testing.T) {
	forEachBackend(t, 8, func(t *testing.T, r *Ring) {
		a, _ := socketpair(t, unix.SOCK_STREAM)
		if err := r.RegisterFiles([]int{a}); err != nil {
			require.ErrorIs(t, err, ErrNotSupported)
		}
		buf := make([]byte, 64)
		regBuf := r.RegisterBuffers([][]byte{buf}) == nil
		br, brErr := r.NewBufRing(2, 16)
		require.NoError(t, r.Close())

		ops := map[string]Op{
			"read on a registered file": Read(0, make([]byte, 4), -1).FixedFile(),
			"recv":                      Recv(a, make([]byte, 4), 0),
		}
		if brErr == nil {
			ops["recv-multishot"] = RecvMultishot(a, br, 0)
		}
		if regBuf {
			ops["read-fixed"] = ReadFixed(a, buf[:8], 0, 0)
		}
		for name, op := range ops {
			_, err := r.Submit(op)
			assert.ErrorIs(t, err, ErrClosed, "Submit: %s", name)
			_, err = r.Start(op)
			assert.ErrorIs(t, err, ErrClosed, "Start: %s", name)
			_, err = r.SubmitBatch([]Op{op}, make([]Request, 1))
			assert.ErrorIs(t, err, ErrClosed, "SubmitBatch: %s", name)
		}
	})
}
