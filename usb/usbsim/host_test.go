//go:build linux

package usbsim_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/usbvm"
	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// patience bounds every wait for something that must happen: generous, so
// a loaded machine does not flake.
const patience = 10 * time.Second

// quiet is how long a test watches for something that must not happen.
const quiet = 200 * time.Millisecond

// host is a blocking test host on one plug-in of a scanner.
type host struct {
	t             testing.TB
	s             *usbsim.Scanner
	out, in, intr usbsim.Endpoint
	seq           uint32 // OUT messages sent
	buf           []byte
}

func newScanner(t testing.TB, cfg usbsim.Config) *usbsim.Scanner {
	t.Helper()
	if usbvm.InGuest() {
		// The guest's time goes to the gadget suite (gadget_linux_test.go);
		// go test on the host covers the socketpair transport.
		t.Skip("socketpair transport: tested by go test on the host, not in the usbvm guest")
	}
	s, err := usbsim.NewScanner(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openHost(t testing.TB, s *usbsim.Scanner) *host {
	t.Helper()
	eps, err := s.Endpoints()
	require.NoError(t, err)
	require.Len(t, eps, 3)
	h := &host{t: t, s: s, out: eps[0], in: eps[1], intr: eps[2]}
	require.Equal(t, usbsim.AddrBulkOut, h.out.Address)
	require.Equal(t, usbsim.AddrBulkIn, h.in.Address)
	require.Equal(t, usbsim.AddrInterruptIn, h.intr.Address)
	h.buf = make([]byte, h.in.MaxTransfer)
	return h
}

// readable reports whether fd has something to read (data or end of file)
// within d.
func readable(t testing.TB, fd int, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		ms := max(int(time.Until(deadline)/time.Millisecond), 0)
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		require.NoError(t, err)
		return n > 0
	}
}

// readIn is one IN transfer into buf: readv([hdr, buf]) and DecodeIn.
func readIn(fd int, buf []byte) (int, error) {
	var hdr [1]byte
	n, err := unix.Readv(fd, [][]byte{hdr[:], buf})
	return usbsim.DecodeIn(hdr[0], n, err)
}

// writeOut sends one OUT message: writev([hdr, payload]) and DecodeWrite.
func writeOut(fd int, payload []byte) error {
	hdr := []byte{usbsim.HeaderData}
	n, err := unix.Writev(fd, [][]byte{hdr, payload})
	return usbsim.DecodeWrite(n, 1+len(payload), err)
}

// readReply reads one bulk OUT reply.
func readReply(fd int) (uint32, error) {
	var r [usbsim.ReplySize]byte
	n, err := unix.Read(fd, r[:])
	return usbsim.DecodeReply(r[:], n, err)
}

// send is one complete bulk OUT transfer: message, then its reply.
func (h *host) send(payload []byte) error {
	h.t.Helper()
	if err := writeOut(h.out.FD, payload); err != nil {
		return err
	}
	h.seq++
	require.True(h.t, readable(h.t, h.out.FD, patience), "no reply to OUT message %d", h.seq)
	seq, err := readReply(h.out.FD)
	if errors.Is(err, usbsim.ErrNoDevice) {
		return err
	}
	require.Equal(h.t, h.seq, seq, "reply sequence number")
	return err
}

// read is one bulk IN transfer that must arrive within patience.
func (h *host) read() ([]byte, error) {
	h.t.Helper()
	require.True(h.t, readable(h.t, h.in.FD, patience), "nothing arrived on bulk IN")
	n, err := readIn(h.in.FD, h.buf)
	if err != nil {
		return nil, err
	}
	return h.buf[:n], nil
}

// readImage reads total bytes of bulk IN data.
func (h *host) readImage(total int64) []byte {
	h.t.Helper()
	img := make([]byte, 0, total)
	for int64(len(img)) < total {
		b, err := h.read()
		require.NoError(h.t, err)
		require.NotEmpty(h.t, b, "zero-length packet inside the image at %d", len(img))
		img = append(img, b...)
	}
	require.Len(h.t, img, int(total))
	return img
}

// event reads one interrupt IN event.
func (h *host) event() usbsim.Event {
	h.t.Helper()
	require.True(h.t, readable(h.t, h.intr.FD, patience), "no event")
	buf := make([]byte, h.intr.MaxTransfer)
	n, err := readIn(h.intr.FD, buf)
	require.NoError(h.t, err)
	e, err := usbsim.ParseEvent(buf[:n])
	require.NoError(h.t, err)
	return e
}

// status asks for and returns an EventStatus, skipping other events.
func (h *host) status() usbsim.Event {
	h.t.Helper()
	require.NoError(h.t, h.send(usbsim.StatusCommand()))
	for {
		if e := h.event(); e.Kind == usbsim.EventStatus {
			return e
		}
	}
}

// flush reads bulk IN until the zero-length packet that follows an abort.
func (h *host) flush() int {
	h.t.Helper()
	stale := 0
	for {
		b, err := h.read()
		require.NoError(h.t, err)
		if len(b) == 0 {
			return stale
		}
		stale += len(b)
	}
}
