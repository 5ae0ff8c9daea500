package usbsim

import (
	"encoding/binary"

	"github.com/cancelio/cancelio/minidrv/scanproto"
	"github.com/cancelio/cancelio/usb"
)

// Wire headers: the first byte of every message on an endpoint's socket.
const (
	// HeaderData starts a data message: the payload follows (possibly none,
	// which is a zero-length packet). The host sends it on bulk OUT; the device
	// sends it on the IN endpoints.
	HeaderData = 'D'
	// HeaderStall is a message the device sends on a halted IN endpoint, one
	// per host read, until the host calls ClearHalt. It has no payload.
	HeaderStall = 'S'
	// HeaderAck starts the device's reply to an accepted bulk OUT message;
	// a 4-byte little-endian sequence number follows (see ReplySize).
	HeaderAck = 'A'
	// HeaderSize is the length of the header in front of every payload.
	HeaderSize = 1
	// ReplySize is the length of a bulk OUT reply: a header (HeaderAck or
	// HeaderStall) and the little-endian uint32 sequence number of the OUT
	// message it answers (1 for the first message after a plug-in). A
	// reply on endpoint 0 starts the same way.
	ReplySize = 5
	// SetupSize is the length of the setup packet that starts a request
	// on endpoint 0 (usb.SetupSize).
	SetupSize = usb.SetupSize
)

// The scanner speaks the command set of package scanproto (commands, scan
// parameters, formats, events), the protocol it shares with the driver in
// package minidrv. Its names are repeated here, as aliases of the same types
// and constants, so that users of the simulator need one import.
type (
	// Format is scanproto.Format.
	Format = scanproto.Format
	// ScanParams is scanproto.ScanParams. The simulated scanner derives a
	// job's image from its Seed (see ImageByte).
	ScanParams = scanproto.ScanParams
	// EventKind is scanproto.EventKind.
	EventKind = scanproto.EventKind
	// State is scanproto.State.
	State = scanproto.State
	// Event is scanproto.Event.
	Event = scanproto.Event
)

// Command opcodes, formats, flags, limits, event kinds, device states and
// error codes of scanproto.
const (
	CmdNop       = scanproto.CmdNop
	CmdStartScan = scanproto.CmdStartScan
	CmdAbort     = scanproto.CmdAbort
	CmdGetStatus = scanproto.CmdGetStatus
	CmdEcho      = scanproto.CmdEcho

	FormatGray8  = scanproto.FormatGray8
	FormatRGB24  = scanproto.FormatRGB24
	FormatGray16 = scanproto.FormatGray16
	FormatRGB48  = scanproto.FormatRGB48
	FormatBW1    = scanproto.FormatBW1

	FlagZLP = scanproto.FlagZLP

	MinDPI    = scanproto.MinDPI
	MaxDPI    = scanproto.MaxDPI
	MaxPixels = scanproto.MaxPixels

	EventStatus     = scanproto.EventStatus
	EventJobStarted = scanproto.EventJobStarted
	EventJobDone    = scanproto.EventJobDone
	EventJobAborted = scanproto.EventJobAborted
	EventButton     = scanproto.EventButton
	EventError      = scanproto.EventError

	StateIdle     = scanproto.StateIdle
	StateScanning = scanproto.StateScanning

	ErrCodeBadCommand = scanproto.ErrCodeBadCommand
	ErrCodeBadParams  = scanproto.ErrCodeBadParams
	ErrCodeBusy       = scanproto.ErrCodeBusy

	EventSize = scanproto.EventSize
)

// ErrBadEvent is scanproto.ErrBadEvent.
var ErrBadEvent = scanproto.ErrBadEvent

// StartScanCommand is scanproto.StartScanCommand.
func StartScanCommand(p ScanParams) []byte { return scanproto.StartScanCommand(p) }

// AbortCommand is scanproto.AbortCommand.
func AbortCommand() []byte { return scanproto.AbortCommand() }

// StatusCommand is scanproto.StatusCommand.
func StatusCommand() []byte { return scanproto.StatusCommand() }

// EchoCommand is scanproto.EchoCommand.
func EchoCommand(data []byte) []byte { return scanproto.EchoCommand(data) }

// ParseEvent is scanproto.ParseEvent.
func ParseEvent(b []byte) (Event, error) { return scanproto.ParseEvent(b) }

// ImageByte returns byte off of the image of p, for checks byte by byte.
func ImageByte(p ScanParams, off int64) byte {
	return byte(mix(p.Seed, uint64(off)>>3) >> (8 * (uint64(off) & 7)))
}

// FillImage writes the image bytes of p from offset off into dst. Bytes past
// the image end follow the same sequence; callers bound dst themselves.
func FillImage(p ScanParams, off int64, dst []byte) {
	fillImage(p.Seed, off, dst)
}

// MaxExpectedImage is the largest image ExpectedImage returns whole: 1 GiB
// (a letter page at 1200 dpi in 48-bit color is about 800 MB). Larger
// valid images are checked piecewise with FillImage.
const MaxExpectedImage = 1 << 30

// ExpectedImage returns the whole image of p: nil if p is invalid, or if
// the image is larger than MaxExpectedImage (the protocol allows images
// of terabytes, which no process holds at once).
func ExpectedImage(p ScanParams) []byte {
	n := p.ImageSize()
	if n == 0 || n > MaxExpectedImage {
		return nil
	}
	b := make([]byte, n)
	fillImage(p.Seed, 0, b)
	return b
}

// fillImage: byte i of the stream is byte i%8 (little-endian) of
// mix(seed, i/8), so any offset is computed directly.
func fillImage(seed uint64, off int64, dst []byte) {
	i := uint64(off)
	for len(dst) > 0 && i&7 != 0 {
		dst[0] = byte(mix(seed, i>>3) >> (8 * (i & 7)))
		dst = dst[1:]
		i++
	}
	for len(dst) >= 8 {
		binary.LittleEndian.PutUint64(dst, mix(seed, i>>3))
		dst = dst[8:]
		i += 8
	}
	if len(dst) > 0 {
		w := mix(seed, i>>3)
		for j := range dst {
			dst[j] = byte(w >> (8 * j))
		}
	}
}

// mix is SplitMix64's output function over seed and a block index.
func mix(seed, idx uint64) uint64 {
	z := seed + (idx+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// LastScan returns the parameters of the latest scan job the device
// accepted (CmdStartScan), or the zero ScanParams before the first. With
// ExpectedImage they give the bytes the job sends, so a test learns what a
// driver asked for from the device's side.
func (s *Scanner) LastScan() ScanParams {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.job == nil {
		return ScanParams{}
	}
	return s.job.params
}
