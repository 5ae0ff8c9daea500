//go:build linux

package usbsim

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ffsEP0 waits for ep0 in bounded steps, each with a deadline; a step whose
// deadline has passed before its wait begins (the goroutine ran late: a
// slow guest, a loaded host) makes the wait refuse at once, without making
// the call. That is one more step, not an error: ffsSetup would give up on
// a data stage that is still pending. Here the first step's deadline has
// passed before its wait begins, on a pipe standing in for ep0, and the
// read must still return the data that comes.
func TestFFSEP0LateWait(t *testing.T) {
	rd, wr, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { rd.Close(); wr.Close() })
	rc, err := rd.SyscallConn()
	require.NoError(t, err)
	late := true
	ep := &endpoint{ffs: &ffsEndpoint{file: rd, rc: rc, late: func() {
		if late {
			late = false
			time.Sleep(2 * ffsEP0Poll)
		}
	}}}
	p := &plug{gone: make(chan struct{})}
	time.AfterFunc(3*ffsEP0Poll, func() { wr.Write([]byte("data stage")) })
	b := make([]byte, 64)
	n, err := ffsEP0(p, ep, false, b)
	require.NoError(t, err)
	assert.Equal(t, "data stage", string(b[:n]))

	// Unplugged meanwhile: ErrNoDevice, not a wait for good.
	close(p.gone)
	_, err = ffsEP0(p, ep, false, b)
	assert.ErrorIs(t, err, ErrNoDevice)
}
