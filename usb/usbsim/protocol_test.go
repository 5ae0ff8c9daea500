package usbsim_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/usb/usbsim"
)

func TestImageFunctionsAgree(t *testing.T) {
	p := usbsim.ScanParams{DPI: 300, Width: 333, Height: 77, Format: usbsim.FormatRGB24, Seed: 7}
	img := usbsim.ExpectedImage(p)
	require.Len(t, img, int(p.ImageSize()))
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		off := r.IntN(len(img))
		n := r.IntN(len(img) - off + 1)
		got := make([]byte, n)
		usbsim.FillImage(p, int64(off), got)
		require.Equal(t, img[off:off+n], got, "FillImage at %d+%d", off, n)
		assert.Equal(t, img[off], usbsim.ImageByte(p, int64(off)), "ImageByte(%d)", off)
	}
	q := p
	q.Seed++
	assert.NotEqual(t, img, usbsim.ExpectedImage(q), "the seed changes the image")
	assert.Nil(t, usbsim.ExpectedImage(usbsim.ScanParams{}), "invalid params")
}

func TestScanParams(t *testing.T) {
	for _, c := range []struct {
		p    usbsim.ScanParams
		line int64
	}{
		{usbsim.ScanParams{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatGray8}, 10},
		{usbsim.ScanParams{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatRGB24}, 30},
		{usbsim.ScanParams{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatGray16}, 20},
		{usbsim.ScanParams{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatRGB48}, 60},
		{usbsim.ScanParams{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatBW1}, 2},
	} {
		require.NoError(t, c.p.Validate())
		assert.Equal(t, c.line, c.p.BytesPerLine(), "%v", c.p.Format)
		assert.Equal(t, 2*c.line, c.p.ImageSize(), "%v", c.p.Format)
	}
	for _, p := range []usbsim.ScanParams{
		{DPI: 300, Width: 10, Height: 2},
		{DPI: usbsim.MinDPI - 1, Width: 10, Height: 2, Format: usbsim.FormatGray8},
		{DPI: 300, Width: 0, Height: 2, Format: usbsim.FormatGray8},
		{DPI: 300, Width: 10, Height: usbsim.MaxPixels + 1, Format: usbsim.FormatGray8},
		{DPI: 300, Width: 10, Height: 2, Format: usbsim.FormatGray8, Flags: 0x80},
	} {
		assert.Error(t, p.Validate(), "%+v", p)
		assert.Zero(t, p.ImageSize(), "%+v", p)
	}
	assert.Equal(t, "rgb24", usbsim.FormatRGB24.String())
	assert.Equal(t, "job-done", usbsim.EventJobDone.String())
	assert.Equal(t, "scanning", usbsim.StateScanning.String())
	assert.Equal(t, "bulk", usbsim.EndpointBulk.String())
}

func TestParseEvent(t *testing.T) {
	_, err := usbsim.ParseEvent(make([]byte, usbsim.EventSize-1))
	assert.ErrorIs(t, err, usbsim.ErrBadEvent)
}

func TestDecodeIn(t *testing.T) {
	for _, c := range []struct {
		hdr  byte
		n    int
		err  error
		want int
		werr error
	}{
		{usbsim.HeaderData, 101, nil, 100, nil},
		{usbsim.HeaderData, 1, nil, 0, nil},
		{usbsim.HeaderStall, 1, nil, 0, usbsim.ErrStall},
		{0, 0, nil, 0, usbsim.ErrNoDevice},
		{'?', 5, nil, 0, usbsim.ErrProtocol},
		{0, -1, syscall.ECONNRESET, 0, usbsim.ErrNoDevice},
		{0, -1, syscall.EPIPE, 0, usbsim.ErrNoDevice},
		{0, -1, &os.SyscallError{Syscall: "readv", Err: syscall.ENOTCONN}, 0, usbsim.ErrNoDevice},
		{0, -1, syscall.ECANCELED, 0, syscall.ECANCELED},
		{0, -1, syscall.EAGAIN, 0, syscall.EAGAIN},
	} {
		n, err := usbsim.DecodeIn(c.hdr, c.n, c.err)
		assert.Equal(t, c.want, n, "%q %d %v", c.hdr, c.n, c.err)
		if c.werr == nil {
			assert.NoError(t, err)
		} else {
			assert.ErrorIs(t, err, c.werr, "%q %d %v", c.hdr, c.n, c.err)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = usbsim.DecodeIn(usbsim.HeaderData, 10, nil)
		_, _ = usbsim.DecodeIn(0, -1, syscall.EPIPE)
	})
	assert.Zero(t, allocs)
}

func TestDecodeReplyAndWrite(t *testing.T) {
	ack := []byte{usbsim.HeaderAck, 7, 0, 0, 0}
	seq, err := usbsim.DecodeReply(ack, 5, nil)
	assert.NoError(t, err)
	assert.Equal(t, uint32(7), seq)
	seq, err = usbsim.DecodeReply([]byte{usbsim.HeaderStall, 1, 1, 0, 0}, 5, nil)
	assert.ErrorIs(t, err, usbsim.ErrStall)
	assert.Equal(t, uint32(257), seq)
	_, err = usbsim.DecodeReply(ack, 0, nil)
	assert.ErrorIs(t, err, usbsim.ErrNoDevice)
	_, err = usbsim.DecodeReply(ack, 3, nil)
	assert.ErrorIs(t, err, usbsim.ErrProtocol)

	assert.NoError(t, usbsim.DecodeWrite(10, 10, nil))
	assert.ErrorIs(t, usbsim.DecodeWrite(-1, 10, syscall.EPIPE), usbsim.ErrNoDevice)
	assert.ErrorIs(t, usbsim.DecodeWrite(-1, 10, fmt.Errorf("w: %w", syscall.ECONNRESET)), usbsim.ErrNoDevice)
	other := errors.New("other")
	assert.Equal(t, other, usbsim.MapError(other))
	assert.NoError(t, usbsim.MapError(nil))
}
