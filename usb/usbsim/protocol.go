package usbsim

import (
	"encoding/binary"
	"errors"
	"fmt"
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
	// message it answers (1 for the first message after a plug-in).
	ReplySize = 5
)

// Command opcodes: the first payload byte of a bulk OUT message.
const (
	// CmdNop accepts any payload and does nothing (an OUT data sink).
	CmdNop = 0x00
	// CmdStartScan starts a scan job; see StartScanCommand for its layout.
	CmdStartScan = 0x01
	// CmdAbort stops the current job, discards all bulk IN data not yet sent
	// and queues one zero-length packet on bulk IN as a flush marker.
	CmdAbort = 0x02
	// CmdGetStatus queues an EventStatus on interrupt IN.
	CmdGetStatus = 0x03
	// CmdEcho queues the rest of its payload on bulk IN (none: a zero-length
	// packet), after whatever data is queued already.
	CmdEcho = 0x04
)

// startScanSize is the length of a CmdStartScan payload.
const startScanSize = 24

// Format is the pixel format of a scan.
type Format uint8

// Pixel formats, with their bits per pixel. Lines are padded to whole bytes.
const (
	FormatGray8  Format = 1 // 8-bit gray
	FormatRGB24  Format = 2 // 8 bits per channel, R G B
	FormatGray16 Format = 3 // 16-bit gray, little-endian
	FormatRGB48  Format = 4 // 16 bits per channel, little-endian
	FormatBW1    Format = 5 // 1-bit black and white, MSB first
)

// BitsPerPixel reports the bits per pixel of f, or 0 for an unknown format.
func (f Format) BitsPerPixel() int {
	switch f {
	case FormatGray8:
		return 8
	case FormatRGB24:
		return 24
	case FormatGray16:
		return 16
	case FormatRGB48:
		return 48
	case FormatBW1:
		return 1
	}
	return 0
}

// String returns the format's name.
func (f Format) String() string {
	switch f {
	case FormatGray8:
		return "gray8"
	case FormatRGB24:
		return "rgb24"
	case FormatGray16:
		return "gray16"
	case FormatRGB48:
		return "rgb48"
	case FormatBW1:
		return "bw1"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Scan flags.
const (
	// FlagZLP makes the device end the image with a zero-length packet.
	FlagZLP = 0x01
)

// Limits of the simulated scanner, checked by CmdStartScan.
const (
	MinDPI    = 50
	MaxDPI    = 4800
	MaxPixels = 1 << 20 // per dimension
)

// ScanParams describes one scan job. Its image is a deterministic function
// of Seed and the byte offset only (see ImageByte), so a host can check every
// byte it receives.
type ScanParams struct {
	DPI    uint16 // resolution, MinDPI..MaxDPI (informational)
	Width  uint32 // pixels per line, 1..MaxPixels
	Height uint32 // lines, 1..MaxPixels
	Format Format
	Flags  uint8 // FlagZLP
	Seed   uint64
}

// Validate reports why the device would refuse p, or nil.
func (p ScanParams) Validate() error {
	switch {
	case p.Format.BitsPerPixel() == 0:
		return fmt.Errorf("usbsim: unknown format %d", p.Format)
	case p.DPI < MinDPI || p.DPI > MaxDPI:
		return fmt.Errorf("usbsim: dpi %d outside %d..%d", p.DPI, MinDPI, MaxDPI)
	case p.Width < 1 || p.Width > MaxPixels || p.Height < 1 || p.Height > MaxPixels:
		return fmt.Errorf("usbsim: size %dx%d outside 1..%d", p.Width, p.Height, MaxPixels)
	case p.Flags&^FlagZLP != 0:
		return fmt.Errorf("usbsim: unknown flags %#x", p.Flags)
	}
	return nil
}

// BytesPerLine returns the length of one image line.
func (p ScanParams) BytesPerLine() int64 {
	return (int64(p.Width)*int64(p.Format.BitsPerPixel()) + 7) / 8
}

// ImageSize returns the image length in bytes (0 if p is invalid).
func (p ScanParams) ImageSize() int64 {
	if p.Validate() != nil {
		return 0
	}
	return p.BytesPerLine() * int64(p.Height)
}

// StartScanCommand returns the bulk OUT payload that starts a scan with p
// (24 bytes, little-endian): opcode CmdStartScan, format, flags, 0, dpi
// uint16, 0 uint16, width uint32, height uint32, seed uint64.
func StartScanCommand(p ScanParams) []byte {
	b := make([]byte, startScanSize)
	b[0] = CmdStartScan
	b[1] = byte(p.Format)
	b[2] = p.Flags
	binary.LittleEndian.PutUint16(b[4:], p.DPI)
	binary.LittleEndian.PutUint32(b[8:], p.Width)
	binary.LittleEndian.PutUint32(b[12:], p.Height)
	binary.LittleEndian.PutUint64(b[16:], p.Seed)
	return b
}

func parseStartScan(b []byte) (ScanParams, bool) {
	if len(b) != startScanSize || b[0] != CmdStartScan {
		return ScanParams{}, false
	}
	return ScanParams{
		Format: Format(b[1]),
		Flags:  b[2],
		DPI:    binary.LittleEndian.Uint16(b[4:]),
		Width:  binary.LittleEndian.Uint32(b[8:]),
		Height: binary.LittleEndian.Uint32(b[12:]),
		Seed:   binary.LittleEndian.Uint64(b[16:]),
	}, true
}

// AbortCommand returns the bulk OUT payload of CmdAbort.
func AbortCommand() []byte { return []byte{CmdAbort} }

// StatusCommand returns the bulk OUT payload of CmdGetStatus.
func StatusCommand() []byte { return []byte{CmdGetStatus} }

// EchoCommand returns the bulk OUT payload that makes the device send data
// back on bulk IN as one transfer (a zero-length packet if data is empty).
func EchoCommand(data []byte) []byte { return append([]byte{CmdEcho}, data...) }

// EventKind says what an Event reports.
type EventKind uint8

// Event kinds.
const (
	EventStatus     EventKind = 1 // answer to CmdGetStatus
	EventJobStarted EventKind = 2 // a CmdStartScan was accepted
	EventJobDone    EventKind = 3 // the job's last image byte was sent
	EventJobAborted EventKind = 4 // CmdAbort stopped an active job
	EventButton     EventKind = 5 // a button was pressed (Code: button number)
	EventError      EventKind = 6 // a command was refused (Code: ErrCode...)
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventStatus:
		return "status"
	case EventJobStarted:
		return "job-started"
	case EventJobDone:
		return "job-done"
	case EventJobAborted:
		return "job-aborted"
	case EventButton:
		return "button"
	case EventError:
		return "error"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// State is the device's job state.
type State uint8

// Device states.
const (
	StateIdle     State = 0 // no job, or the last job is done or aborted
	StateScanning State = 1 // a job has image data left to send
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateScanning:
		return "scanning"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Error codes carried by EventError in Event.Code.
const (
	ErrCodeBadCommand = 1 // unknown opcode or wrong length
	ErrCodeBadParams  = 2 // CmdStartScan parameters failed Validate
	ErrCodeBusy       = 3 // CmdStartScan while a job is active
)

// EventSize is the payload length of every interrupt IN message.
const EventSize = 24

// Event is one interrupt IN message: 24 bytes, little-endian: kind, state,
// code, 0, job uint32, sent uint64, total uint64.
type Event struct {
	Kind  EventKind
	State State  // device state when the event was queued
	Code  uint8  // button number (EventButton) or ErrCode... (EventError)
	Job   uint32 // current or last job id (1, 2, ... since NewScanner); 0: none
	Sent  int64  // image bytes of Job sent so far
	Total int64  // image length of Job
}

// ErrBadEvent is returned by ParseEvent for a malformed event.
var ErrBadEvent = errors.New("usbsim: malformed event")

// ParseEvent decodes an interrupt IN payload.
func ParseEvent(b []byte) (Event, error) {
	if len(b) != EventSize {
		return Event{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadEvent, len(b), EventSize)
	}
	return Event{
		Kind:  EventKind(b[0]),
		State: State(b[1]),
		Code:  b[2],
		Job:   binary.LittleEndian.Uint32(b[4:]),
		Sent:  int64(binary.LittleEndian.Uint64(b[8:])),
		Total: int64(binary.LittleEndian.Uint64(b[16:])),
	}, nil
}

func (e Event) marshal() []byte {
	b := make([]byte, EventSize)
	b[0] = byte(e.Kind)
	b[1] = byte(e.State)
	b[2] = e.Code
	binary.LittleEndian.PutUint32(b[4:], e.Job)
	binary.LittleEndian.PutUint64(b[8:], uint64(e.Sent))
	binary.LittleEndian.PutUint64(b[16:], uint64(e.Total))
	return b
}

// ImageByte returns byte off of the image of p, for checks byte by byte.
func ImageByte(p ScanParams, off int64) byte {
	return byte(mix(p.Seed, uint64(off)>>3) >> (8 * (uint64(off) & 7)))
}

// FillImage writes the image bytes of p from offset off into dst. Bytes past
// the image end follow the same sequence; callers bound dst themselves.
func FillImage(p ScanParams, off int64, dst []byte) {
	fillImage(p.Seed, off, dst)
}

// ExpectedImage returns the whole image of p (nil if p is invalid).
func ExpectedImage(p ScanParams) []byte {
	n := p.ImageSize()
	if n == 0 {
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
