//go:build linux

package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestAdv19HeldReadFixedAcrossUnregisterBuffers: a ReadFixed at the
// current position, accepted and held behind another read of its pipe,
// while UnregisterBuffers runs, is handed the buffers of its turn (none),
// as UnregisterFiles does for files: it completes with EFAULT, on both
// backends alike, and takes nothing from the pipe. A held ReadFixed whose
// buffer is registered again by its turn reads normally.
func TestAdv19HeldReadFixedAcrossUnregisterBuffers(t *testing.T) {
	got := adv13Both(t, 8, func(t *testing.T, r *Ring) []string {
		rd, wr := pipe(t)
		reg := make([]byte, 16)
		var out []string
		for _, again := range []bool{false, true} {
			require.NoError(t, r.RegisterBuffers([][]byte{reg}))
			head, err := r.Submit(Read(rd, make([]byte, 4), -1).WithUser("head"))
			require.NoError(t, err)
			held, err := r.Submit(ReadFixed(rd, reg[:4], -1, 0).WithUser("held"))
			require.NoError(t, err)
			require.True(t, held.Pending())
			require.NoError(t, r.UnregisterBuffers())
			if again {
				require.NoError(t, r.RegisterBuffers([][]byte{reg}))
			}
			_, err = unix.Write(wr, []byte("abcdefgh"))
			require.NoError(t, err)
			for range 2 {
				c := reapOne(t, r)
				out = append(out, c.User.(string)+": "+adv13Out(c))
				switch {
				case c.Req == head:
					assert.Equal(t, 4, c.N, "head")
				case again:
					require.NoError(t, c.Err, "held, its buffer registered again")
					assert.Equal(t, "efgh", string(reg[:c.N]))
				default:
					assert.ErrorIs(t, c.Err, unix.EFAULT, "held, its buffer no longer registered")
				}
			}
			if !again {
				// The held read moved nothing: its bytes are still there.
				b := make([]byte, 8)
				n, err := unix.Read(rd, b)
				require.NoError(t, err)
				assert.Equal(t, "efgh", string(b[:n]))
			} else {
				require.NoError(t, r.UnregisterBuffers())
			}
		}
		return out
	})
	adv13Agree(t, got)
}
