//go:build linux

package usbsim

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/usb"
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

// A control OUT request whose data stage ep0 fails is dropped, and
// DataStageErrors says why; one dropped because the gadget was unplugged
// is not recorded. Here ep0 is a pipe's write end, which cannot be read.
func TestFFSDataStageErrors(t *testing.T) {
	s, err := newScanner(Config{})
	require.NoError(t, err)
	rd, wr, err := os.Pipe()
	require.NoError(t, err)
	t.Cleanup(func() { rd.Close(); wr.Close() })
	rc, err := wr.SyscallConn()
	require.NoError(t, err)
	ep := &endpoint{ffs: &ffsEndpoint{file: wr, rc: rc}}
	p := &plug{gone: make(chan struct{})}
	s.mu.Lock()
	s.plug = p
	s.mu.Unlock()
	su := usb.Setup{RequestType: usb.RequestOut | usb.RequestVendor | usb.RecipientDevice, Request: VendorCommand, Length: 4}

	s.ffsSetup(p, ep, su)
	errs := s.DataStageErrors()
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], unix.EBADF)
	assert.Empty(t, s.StallErrors())

	close(p.gone)
	s.ffsSetup(p, ep, su)
	assert.Len(t, s.DataStageErrors(), 1, "an unplug is not a failed data stage")
}
