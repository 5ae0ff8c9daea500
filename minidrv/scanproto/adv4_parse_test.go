package scanproto_test

// Untrusted bytes: ParseStartScan (the device reading the host's bulk OUT)
// and ParseEvent (the host reading the device's interrupt IN) take only
// what the protocol can produce. Reserved fields must be zero, counts
// must be byte counts of an image the protocol allows, and an event must
// agree with itself; anything else is refused, never half-read.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/cancelio/cancelio/minidrv/scanproto"
)

// adv4MaxImage is the largest image the protocol allows: MaxPixels lines of
// MaxPixels 48-bit pixels.
const adv4MaxImage = scanproto.MaxPixels * 6 * scanproto.MaxPixels

func TestAdv4MaxImageSize(t *testing.T) {
	p := scanproto.ScanParams{DPI: scanproto.MaxDPI, Width: scanproto.MaxPixels, Height: scanproto.MaxPixels, Format: scanproto.FormatRGB48}
	if got := p.ImageSize(); got != adv4MaxImage || scanproto.MaxImageSize != adv4MaxImage {
		t.Fatalf("largest image %d bytes, MaxImageSize %d; want %d", got, int64(scanproto.MaxImageSize), int64(adv4MaxImage))
	}
}

// TestAdv4StartScanReserved: a start scan whose reserved bytes (3, 6 and
// 7) are not zero is not a start scan; one with zeros there is, whatever
// its parameters (Validate judges those).
func TestAdv4StartScanReserved(t *testing.T) {
	good := scanproto.StartScanCommand(scanproto.ScanParams{DPI: 300, Width: 100, Height: 200, Format: scanproto.FormatGray8, Flags: scanproto.FlagZLP, Seed: 9})
	if _, ok := scanproto.ParseStartScan(good); !ok {
		t.Fatalf("refused a well-formed start scan %x", good)
	}
	for _, i := range []int{3, 6, 7} {
		for _, v := range []byte{1, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] = v
			if p, ok := scanproto.ParseStartScan(b); ok || p != (scanproto.ScanParams{}) {
				t.Errorf("reserved byte %d = %#x: accepted as %+v", i, v, p)
			}
		}
	}
	// Parameters out of range are still a start scan: the device answers
	// ErrCodeBadParams, not ErrCodeBadCommand.
	odd := scanproto.StartScanCommand(scanproto.ScanParams{DPI: 0xffff, Width: math.MaxUint32, Height: 0, Format: 0xff, Flags: 0xff})
	if p, ok := scanproto.ParseStartScan(odd); !ok || p.Validate() == nil {
		t.Errorf("out-of-range parameters: ok %v, Validate %v; want a start scan that Validate refuses", ok, p.Validate())
	}
}

// adv4Event returns the 24 bytes of an event with raw counts.
func adv4Event(kind, state, code, reserved byte, job uint32, sent, total uint64) []byte {
	b := []byte{kind, state, code, reserved}
	b = binary.LittleEndian.AppendUint32(b, job)
	b = binary.LittleEndian.AppendUint64(b, sent)
	return binary.LittleEndian.AppendUint64(b, total)
}

const (
	kStatus  = byte(scanproto.EventStatus)
	kStarted = byte(scanproto.EventJobStarted)
	kDone    = byte(scanproto.EventJobDone)
	kAborted = byte(scanproto.EventJobAborted)
	kButton  = byte(scanproto.EventButton)
	kError   = byte(scanproto.EventError)
	sIdle    = byte(scanproto.StateIdle)
	sScan    = byte(scanproto.StateScanning)
)

// TestAdv4EventsTheDeviceSends: every event the simulated scanner (and so
// the protocol) produces is accepted and parses to what was sent.
func TestAdv4EventsTheDeviceSends(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    scanproto.Event
	}{
		{"status before any job", scanproto.Event{Kind: scanproto.EventStatus}},
		{"error before any job", scanproto.Event{Kind: scanproto.EventError, Code: scanproto.ErrCodeBadCommand}},
		{"bad params after a job", scanproto.Event{Kind: scanproto.EventError, Code: scanproto.ErrCodeBadParams, Job: 3, Sent: 10, Total: 10}},
		{"busy", scanproto.Event{Kind: scanproto.EventError, Code: scanproto.ErrCodeBusy, State: scanproto.StateScanning, Job: 3, Sent: 5, Total: 10}},
		{"button while idle", scanproto.Event{Kind: scanproto.EventButton, Code: 255}},
		{"button while scanning", scanproto.Event{Kind: scanproto.EventButton, Code: 1, State: scanproto.StateScanning, Job: 1, Total: 1}},
		{"job started", scanproto.Event{Kind: scanproto.EventJobStarted, State: scanproto.StateScanning, Job: 1, Total: 30000}},
		{"status mid-job", scanproto.Event{Kind: scanproto.EventStatus, State: scanproto.StateScanning, Job: 1, Sent: 4096, Total: 30000}},
		{"job done", scanproto.Event{Kind: scanproto.EventJobDone, Job: 1, Sent: 30000, Total: 30000}},
		{"job done of an aborted job while the next scans", scanproto.Event{Kind: scanproto.EventJobDone, State: scanproto.StateScanning, Job: 1, Sent: 30000, Total: 30000}},
		{"job aborted", scanproto.Event{Kind: scanproto.EventJobAborted, Job: math.MaxUint32, Sent: 4096, Total: 30000}},
		{"aborted at once", scanproto.Event{Kind: scanproto.EventJobAborted, Job: 2, Total: 1}},
		{"status of an aborted job", scanproto.Event{Kind: scanproto.EventStatus, Job: 2, Sent: 7, Total: 30000}},
		{"largest image", scanproto.Event{Kind: scanproto.EventJobDone, Job: 1, Sent: adv4MaxImage, Total: adv4MaxImage}},
	} {
		b := tc.e.Marshal()
		got, err := scanproto.ParseEvent(b)
		if err != nil || got != tc.e {
			t.Errorf("%s: ParseEvent(%x) = %+v, %v; want %+v", tc.name, b, got, err, tc.e)
		}
		if err := tc.e.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", tc.name, err)
		}
	}
}

// TestAdv4MalformedEvents: each malformed event is refused with an error
// that wraps ErrBadEvent and names what is wrong, and no event.
func TestAdv4MalformedEvents(t *testing.T) {
	const max = uint64(adv4MaxImage)
	for _, tc := range []struct {
		name string
		b    []byte
		want string // in the error
	}{
		{"short", adv4Event(kStatus, sIdle, 0, 0, 0, 0, 0)[:23], "23 bytes"},
		{"long", append(adv4Event(kStatus, sIdle, 0, 0, 0, 0, 0), 0), "25 bytes"},
		{"empty", nil, "0 bytes"},
		{"reserved byte", adv4Event(kStatus, sIdle, 0, 1, 0, 0, 0), "reserved"},
		{"reserved byte 0xff", adv4Event(kDone, sIdle, 0, 0xff, 1, 5, 5), "reserved"},
		{"kind 0", adv4Event(0, sIdle, 0, 0, 0, 0, 0), "kind"},
		{"kind 7", adv4Event(7, sIdle, 0, 0, 0, 0, 0), "kind"},
		{"kind 0xff", adv4Event(0xff, sIdle, 0, 0, 0, 0, 0), "kind"},
		{"state 2", adv4Event(kStatus, 2, 0, 0, 0, 0, 0), "state"},
		{"state 0xff", adv4Event(kStatus, 0xff, 0, 0, 0, 0, 0), "state"},
		{"negative sent", adv4Event(kStatus, sIdle, 0, 0, 1, math.MaxUint64, 10), "sent"},
		{"sent MinInt64", adv4Event(kStatus, sIdle, 0, 0, 1, 1<<63, 10), "sent"},
		{"negative total", adv4Event(kStatus, sIdle, 0, 0, 1, 0, math.MaxUint64), "total"},
		{"negative sent and total", adv4Event(kError, sIdle, scanproto.ErrCodeBusy, 0, 1, math.MaxUint64, 1<<63), "total"},
		{"total over the largest image", adv4Event(kStatus, sIdle, 0, 0, 1, 0, max+1), "total"},
		{"total MaxInt64", adv4Event(kDone, sIdle, 0, 0, 1, math.MaxInt64, math.MaxInt64), "total"},
		{"sent over total", adv4Event(kStatus, sIdle, 0, 0, 1, 11, 10), "sent"},
		{"sent over total, scanning", adv4Event(kStatus, sScan, 0, 0, 1, 1<<40+1, 1<<40), "sent"},
		{"counts without a job", adv4Event(kStatus, sIdle, 0, 0, 0, 0, 10), "job 0"},
		{"sent without a job", adv4Event(kButton, sIdle, 1, 0, 0, 1, 1), "job 0"},
		{"job with an empty image", adv4Event(kStatus, sIdle, 0, 0, 1, 0, 0), "total 0"},
		{"scanning without a job", adv4Event(kStatus, sScan, 0, 0, 0, 0, 0), "scanning"},
		{"scanning with nothing left", adv4Event(kStatus, sScan, 0, 0, 1, 10, 10), "scanning"},
		{"error code 0", adv4Event(kError, sIdle, 0, 0, 0, 0, 0), "error code"},
		{"error code 4", adv4Event(kError, sIdle, 4, 0, 0, 0, 0), "error code"},
		{"error code 0xff", adv4Event(kError, sIdle, 0xff, 0, 0, 0, 0), "error code"},
		{"code in a status", adv4Event(kStatus, sIdle, 3, 0, 0, 0, 0), "code"},
		{"code in job done", adv4Event(kDone, sIdle, 3, 0, 7, 1<<40, 1<<40), "code"},
		{"job started without a job", adv4Event(kStarted, sScan, 0, 0, 0, 0, 0), "job 0"},
		{"job done without a job", adv4Event(kDone, sIdle, 0, 0, 0, 0, 0), "job 0"},
		{"job aborted without a job", adv4Event(kAborted, sIdle, 0, 0, 0, 0, 0), "job 0"},
		{"job done short", adv4Event(kDone, sIdle, 0, 0, 7, 1<<40, 1<<40+1), "job-done"},
		{"job aborted after its last byte", adv4Event(kAborted, sIdle, 0, 0, 7, 100, 100), "job-aborted"},
	} {
		e, err := scanproto.ParseEvent(tc.b)
		if !errors.Is(err, scanproto.ErrBadEvent) {
			t.Errorf("%s: ParseEvent(%x) = %+v, %v; want ErrBadEvent", tc.name, tc.b, e, err)
			continue
		}
		if e != (scanproto.Event{}) {
			t.Errorf("%s: event %+v returned with the error", tc.name, e)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not say %q", tc.name, err, tc.want)
		}
	}
}

// TestAdv4ValidateMatchesParse: Event.Validate refuses exactly what
// ParseEvent refuses, for events a caller builds (a device before it
// sends one).
func TestAdv4ValidateMatchesParse(t *testing.T) {
	for _, e := range []scanproto.Event{
		{Kind: scanproto.EventJobDone, Job: 7, Sent: 1 << 40, Total: 1<<40 + 1},
		{Kind: scanproto.EventError, Code: scanproto.ErrCodeBusy, Sent: -1, Total: math.MinInt64},
		{Kind: scanproto.EventStatus, Job: 1, Sent: -1, Total: 10},
		{Kind: scanproto.EventStatus, Job: 1, Sent: 0, Total: -1},
		{Kind: scanproto.EventStatus, Job: 1, Sent: 2, Total: 1},
		{Kind: 9},
	} {
		verr := e.Validate()
		_, perr := scanproto.ParseEvent(e.Marshal())
		if !errors.Is(verr, scanproto.ErrBadEvent) || !errors.Is(perr, scanproto.ErrBadEvent) {
			t.Errorf("%+v: Validate %v, ParseEvent %v; want both ErrBadEvent", e, verr, perr)
		}
	}
}

// FuzzAdv4ParseEvent: ParseEvent is a bijection between the events it
// accepts and their bytes (nothing dropped, nothing reinterpreted), and an
// accepted event keeps every invariant of the protocol; a refused one
// wraps ErrBadEvent and comes with no event.
func FuzzAdv4ParseEvent(f *testing.F) {
	f.Add(adv4Event(kDone, sIdle, 0, 0, 1, 5, 5))
	f.Add(adv4Event(kStatus, sScan, 0, 0, 1, 4, 5))
	f.Add(adv4Event(kError, sScan, scanproto.ErrCodeBusy, 0, 1, 4, 5))
	f.Add(adv4Event(kButton, sIdle, 200, 0, 0, 0, 0))
	f.Add(adv4Event(kAborted, sIdle, 0, 0, 3, 0, 1))
	f.Add(adv4Event(kStatus, sIdle, 0, 1, 0, 0, 0))
	f.Add(adv4Event(kStatus, sIdle, 0, 0, 1, math.MaxUint64, 10))
	f.Add(adv4Event(kDone, sIdle, 0, 0, 1, adv4MaxImage, adv4MaxImage))
	f.Add(bytes.Repeat([]byte{0xff}, scanproto.EventSize))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := scanproto.ParseEvent(b)
		if err != nil {
			if !errors.Is(err, scanproto.ErrBadEvent) {
				t.Fatalf("ParseEvent(%x): error %v does not wrap ErrBadEvent", b, err)
			}
			if e != (scanproto.Event{}) {
				t.Fatalf("ParseEvent(%x): event %+v with the error", b, e)
			}
			return
		}
		if m := e.Marshal(); !bytes.Equal(m, b) {
			t.Fatalf("Marshal(ParseEvent(%x)) = %x: bytes dropped or changed", b, m)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("ParseEvent accepted %+v, Validate refuses it: %v", e, err)
		}
		switch {
		case b[3] != 0:
			t.Fatalf("%x: reserved byte accepted", b)
		case e.Kind < scanproto.EventStatus || e.Kind > scanproto.EventError:
			t.Fatalf("%+v: unknown kind accepted", e)
		case e.State != scanproto.StateIdle && e.State != scanproto.StateScanning:
			t.Fatalf("%+v: unknown state accepted", e)
		case e.Sent < 0 || e.Total < 0 || e.Sent > e.Total || e.Total > adv4MaxImage:
			t.Fatalf("%+v: counts out of range accepted", e)
		case e.Job == 0 && (e.Sent != 0 || e.Total != 0):
			t.Fatalf("%+v: counts without a job accepted", e)
		case e.Job != 0 && e.Total == 0:
			t.Fatalf("%+v: a job without an image accepted", e)
		case e.Kind == scanproto.EventJobDone && e.Sent != e.Total:
			t.Fatalf("%+v: job done with bytes left accepted", e)
		case e.Kind == scanproto.EventError && (e.Code < scanproto.ErrCodeBadCommand || e.Code > scanproto.ErrCodeBusy):
			t.Fatalf("%+v: unknown error code accepted", e)
		case e.Kind != scanproto.EventError && e.Kind != scanproto.EventButton && e.Code != 0:
			t.Fatalf("%+v: a code in a %v accepted", e, e.Kind)
		}
		if remaining := e.Total - e.Sent; remaining < 0 || remaining > e.Total {
			t.Fatalf("%+v: bytes left %d", e, remaining)
		}
	})
}

// FuzzAdv4ParseStartScan: ParseStartScan accepts exactly the payloads
// StartScanCommand produces: what it accepts re-encodes to the same bytes.
func FuzzAdv4ParseStartScan(f *testing.F) {
	good := scanproto.StartScanCommand(scanproto.ScanParams{DPI: 300, Width: 2480, Height: 3507, Format: scanproto.FormatRGB24, Flags: scanproto.FlagZLP, Seed: 42})
	f.Add(good)
	for _, i := range []int{3, 6, 7} {
		b := bytes.Clone(good)
		b[i] = 1
		f.Add(b)
	}
	f.Add(bytes.Repeat([]byte{0xff}, scanproto.StartScanSize))
	f.Add(append([]byte{scanproto.CmdStartScan}, make([]byte, scanproto.StartScanSize-1)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := scanproto.ParseStartScan(b)
		if !ok {
			if p != (scanproto.ScanParams{}) {
				t.Fatalf("ParseStartScan(%x): %+v with ok false", b, p)
			}
			if len(b) == scanproto.StartScanSize && b[0] == scanproto.CmdStartScan && b[3] == 0 && b[6] == 0 && b[7] == 0 {
				t.Fatalf("ParseStartScan(%x): a well-formed start scan refused", b)
			}
			return
		}
		if enc := scanproto.StartScanCommand(p); !bytes.Equal(enc, b) {
			t.Fatalf("StartScanCommand(ParseStartScan(%x)) = %x: bytes dropped or changed", b, enc)
		}
	})
}
