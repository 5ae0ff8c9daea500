// Package scanproto is the command set of the scanner that package minidrv
// drives: the bulk OUT commands, the scan parameters they carry, the pixel
// formats, and the events the device sends on interrupt IN. It is the
// protocol specification that a device and its driver share; it imports the
// standard library only, so the driver (minidrv) and any implementation of
// the device (the simulated scanner of usb/usbsim) depend on it and not on
// each other.
//
// # Commands (bulk OUT payloads)
//
//	0x00 nop        any payload, ignored (an OUT data sink)
//	0x01 start scan 24 bytes, see StartScanCommand: format, flags, dpi,
//	                width, height (pixels), seed
//	0x02 abort      1 byte: ends the current job, discards all bulk IN data
//	                not yet sent, then sends one zero-length packet on bulk IN
//	0x03 status     1 byte: queues an EventStatus
//	0x04 echo       the rest of the payload comes back as one bulk IN
//	                transfer (a zero-length packet if empty)
//
// A zero-length OUT packet is accepted and ignored. A command that fails
// (unknown opcode, bad length, bad parameters, start while a job is active)
// is still accepted on bulk OUT; the failure is reported by an EventError on
// interrupt IN.
//
// A scan streams the image on bulk IN (ScanParams.ImageSize bytes, lines
// padded to whole bytes), followed by a zero-length packet if the job has
// FlagZLP. To cancel a scan the host sends abort, then reads bulk IN until a
// zero-length transfer: everything before it is stale data that the device
// had sent before the abort, and the next scan starts clean. The device runs
// commands in order, so an echo of a unique marker after an abort brings a
// host back in step whatever the device held.
//
// # Events (interrupt IN)
//
// Each interrupt IN message carries one 24-byte Event (ParseEvent): its kind,
// the device state, a code (button number or error code), the current or
// last job id and that job's sent and total byte counts.
//
// # Reserved fields and malformed messages
//
// Reserved bytes are zero: a sender writes zeros there and a receiver
// refuses a message with anything else, so that no field can be given a
// meaning later that an old peer would silently misread. ParseStartScan
// refuses a start scan with a nonzero reserved byte (the device answers
// ErrCodeBadCommand); ParseEvent refuses, with an error wrapping
// ErrBadEvent, an event that is not one the protocol can produce (see
// Event.Validate): bytes from a device are not trusted.
package scanproto

import (
	"encoding/binary"
	"errors"
	"fmt"
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

// StartScanSize is the length of a CmdStartScan payload.
const StartScanSize = 24

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

// Limits of the scan parameters, checked by the device on CmdStartScan.
const (
	MinDPI    = 50
	MaxDPI    = 4800
	MaxPixels = 1 << 20 // per dimension
	// MaxImageSize is the largest image a valid scan has (ImageSize):
	// MaxPixels lines of MaxPixels 48-bit pixels, 6 TiB. No job's byte
	// counts exceed it.
	MaxImageSize = MaxPixels * 6 * MaxPixels
)

// ScanParams describes one scan job.
type ScanParams struct {
	DPI    uint16 // resolution, MinDPI..MaxDPI (informational)
	Width  uint32 // pixels per line, 1..MaxPixels
	Height uint32 // lines, 1..MaxPixels
	Format Format
	Flags  uint8 // FlagZLP
	// Seed is a value the host chooses for the job. A device with a test
	// pattern (the simulated scanner) derives the job's image from it, so
	// that a host can check every byte it receives; others ignore it.
	Seed uint64
}

// Validate reports why the device would refuse p, or nil.
func (p ScanParams) Validate() error {
	switch {
	case p.Format.BitsPerPixel() == 0:
		return fmt.Errorf("scanproto: unknown format %d", p.Format)
	case p.DPI < MinDPI || p.DPI > MaxDPI:
		return fmt.Errorf("scanproto: dpi %d outside %d..%d", p.DPI, MinDPI, MaxDPI)
	case p.Width < 1 || p.Width > MaxPixels || p.Height < 1 || p.Height > MaxPixels:
		return fmt.Errorf("scanproto: size %dx%d outside 1..%d", p.Width, p.Height, MaxPixels)
	case p.Flags&^FlagZLP != 0:
		return fmt.Errorf("scanproto: unknown flags %#x", p.Flags)
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
// (StartScanSize bytes, little-endian): opcode CmdStartScan, format, flags,
// 0, dpi uint16, 0 uint16, width uint32, height uint32, seed uint64.
func StartScanCommand(p ScanParams) []byte {
	return AppendStartScan(make([]byte, 0, StartScanSize), p)
}

// AppendStartScan appends the payload of StartScanCommand(p) to b, for a
// caller that reuses its buffer.
func AppendStartScan(b []byte, p ScanParams) []byte {
	b = append(b, CmdStartScan, byte(p.Format), p.Flags, 0)
	b = binary.LittleEndian.AppendUint16(b, p.DPI)
	b = append(b, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, p.Width)
	b = binary.LittleEndian.AppendUint32(b, p.Height)
	return binary.LittleEndian.AppendUint64(b, p.Seed)
}

// ParseStartScan decodes a CmdStartScan payload; ok is false when b is not
// one (wrong opcode or length, or a reserved byte that is not zero). It
// does not validate the parameters (Validate does): a well-formed command
// with parameters out of range is a start scan the device refuses with
// ErrCodeBadParams, a malformed one a bad command (ErrCodeBadCommand).
// What it accepts, StartScanCommand encodes back to the same bytes.
func ParseStartScan(b []byte) (p ScanParams, ok bool) {
	if len(b) != StartScanSize || b[0] != CmdStartScan || b[3] != 0 || b[6] != 0 || b[7] != 0 {
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

// abortCommand is the payload of CmdAbort, shared: callers must not modify
// it.
var abortCommand = []byte{CmdAbort}

// AbortCommand returns the bulk OUT payload of CmdAbort. It is one shared
// slice (so that a cancel path does not allocate): do not modify it.
func AbortCommand() []byte { return abortCommand }

// StatusCommand returns the bulk OUT payload of CmdGetStatus.
func StatusCommand() []byte { return []byte{CmdGetStatus} }

// EchoCommand returns the bulk OUT payload that makes the device send data
// back on bulk IN as one transfer (a zero-length packet if data is empty).
func EchoCommand(data []byte) []byte { return AppendEcho(nil, data) }

// AppendEcho appends the payload of EchoCommand(data) to b.
func AppendEcho(b, data []byte) []byte { return append(append(b, CmdEcho), data...) }

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
	Job   uint32 // current or last job id (1, 2, ... since the device started); 0: none
	Sent  int64  // image bytes of Job sent so far
	Total int64  // image length of Job
}

// ErrBadEvent is returned by ParseEvent and Event.Validate for a malformed
// event.
var ErrBadEvent = errors.New("scanproto: malformed event")

// ParseEvent decodes an interrupt IN payload. It refuses, with an error
// wrapping ErrBadEvent and a zero Event, a payload that is not EventSize
// bytes, has a nonzero reserved byte, or is not an event the protocol can
// produce (Validate). What it accepts, Marshal encodes back to the same
// bytes.
func ParseEvent(b []byte) (Event, error) {
	if len(b) != EventSize {
		return Event{}, fmt.Errorf("%w: %d bytes, want %d", ErrBadEvent, len(b), EventSize)
	}
	if b[3] != 0 {
		return Event{}, fmt.Errorf("%w: reserved byte 3 is %#x, want 0", ErrBadEvent, b[3])
	}
	// The counts are unsigned on the wire: one that does not fit an int64
	// is out of range, not negative.
	sent, total := binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])
	if total > MaxImageSize {
		return Event{}, fmt.Errorf("%w: total %d bytes, over the largest image (%d)", ErrBadEvent, total, int64(MaxImageSize))
	}
	if sent > total {
		return Event{}, fmt.Errorf("%w: sent %d bytes of %d", ErrBadEvent, sent, total)
	}
	e := Event{
		Kind:  EventKind(b[0]),
		State: State(b[1]),
		Code:  b[2],
		Job:   binary.LittleEndian.Uint32(b[4:]),
		Sent:  int64(sent),
		Total: int64(total),
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Validate reports, with an error wrapping ErrBadEvent, why e is not an
// event the protocol can produce, or nil. A device sends only:
//
//   - a known Kind and State;
//   - a Code that is an ErrCode... in an EventError, any button number in
//     an EventButton, and 0 in the other kinds;
//   - counts of Job's image: 0 <= Sent <= Total <= MaxImageSize, all zero
//     without a job (Job 0), Total at least 1 with one (a job exists only
//     once a valid scan started);
//   - a Job in EventJobStarted, EventJobDone and EventJobAborted, with
//     every byte sent (Sent == Total) in EventJobDone and bytes left
//     (Sent < Total) in EventJobAborted (an abort stops an active job);
//   - StateScanning only with a job that has bytes left: the job of every
//     kind but EventJobDone is the current one, which scans exactly while
//     it has data to send (EventJobDone may report an earlier job, which
//     an abort ended, while the next one scans).
func (e Event) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %v: %s", ErrBadEvent, e.Kind, fmt.Sprintf(format, args...))
	}
	switch {
	case e.Kind < EventStatus || e.Kind > EventError:
		return bad("unknown kind %d", uint8(e.Kind))
	case e.State != StateIdle && e.State != StateScanning:
		return bad("unknown state %d", uint8(e.State))
	case e.Kind == EventError && (e.Code < ErrCodeBadCommand || e.Code > ErrCodeBusy):
		return bad("unknown error code %d", e.Code)
	case e.Kind != EventError && e.Kind != EventButton && e.Code != 0:
		return bad("code %d, want 0", e.Code)
	case e.Total < 0 || e.Total > MaxImageSize:
		return bad("total %d bytes, outside 0..%d", e.Total, int64(MaxImageSize))
	case e.Sent < 0 || e.Sent > e.Total:
		return bad("sent %d bytes of %d", e.Sent, e.Total)
	case e.Job == 0 && (e.Sent != 0 || e.Total != 0):
		return bad("job 0 (none) with %d of %d bytes sent", e.Sent, e.Total)
	case e.Job == 0 && (e.Kind == EventJobStarted || e.Kind == EventJobDone || e.Kind == EventJobAborted):
		return bad("job 0 (none)")
	case e.Job != 0 && e.Total == 0:
		return bad("job %d with total 0 bytes", e.Job)
	case e.Kind == EventJobDone && e.Sent != e.Total:
		return bad("%d of %d bytes sent", e.Sent, e.Total)
	case e.Kind == EventJobAborted && e.Sent == e.Total:
		return bad("all %d bytes sent", e.Total)
	case e.State == StateScanning && e.Kind != EventJobDone && (e.Job == 0 || e.Sent == e.Total):
		return bad("scanning with no bytes left (job %d, %d of %d bytes sent)", e.Job, e.Sent, e.Total)
	}
	return nil
}

// Marshal returns the EventSize-byte interrupt IN payload of e, the
// inverse of ParseEvent. It encodes e as it is: a sender checks it with
// Validate first, or the receiver refuses it.
func (e Event) Marshal() []byte {
	b := make([]byte, EventSize)
	b[0] = byte(e.Kind)
	b[1] = byte(e.State)
	b[2] = e.Code
	binary.LittleEndian.PutUint32(b[4:], e.Job)
	binary.LittleEndian.PutUint64(b[8:], uint64(e.Sent))
	binary.LittleEndian.PutUint64(b[16:], uint64(e.Total))
	return b
}
