package scanproto_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/cancelio/cancelio/minidrv/scanproto"
)

// FuzzAdv3ParseEvent feeds arbitrary interrupt IN payloads to ParseEvent:
// anything but EventSize bytes is ErrBadEvent, so is a malformed event of
// EventSize bytes (FuzzAdv4ParseEvent checks which), and an accepted event
// re-marshals to the same bytes, a fixed point of parse+marshal.
func FuzzAdv3ParseEvent(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, scanproto.EventSize-1))
	f.Add(make([]byte, scanproto.EventSize+1))
	f.Add(scanproto.Event{Kind: scanproto.EventJobDone, Job: 7, Sent: 1 << 40, Total: 1<<40 + 1}.Marshal())
	f.Add(scanproto.Event{Kind: scanproto.EventError, Code: scanproto.ErrCodeBusy, Sent: -1, Total: math.MinInt64}.Marshal())
	f.Add(bytes.Repeat([]byte{0xff}, scanproto.EventSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := scanproto.ParseEvent(b)
		if len(b) != scanproto.EventSize {
			if !errors.Is(err, scanproto.ErrBadEvent) {
				t.Fatalf("%d bytes: err %v, want ErrBadEvent", len(b), err)
			}
			if e != (scanproto.Event{}) {
				t.Fatalf("%d bytes: non-zero event %+v with the error", len(b), e)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, scanproto.ErrBadEvent) || e != (scanproto.Event{}) {
				t.Fatalf("%x: %+v, %v; want ErrBadEvent and no event", b, e, err)
			}
			return
		}
		m := e.Marshal()
		if !bytes.Equal(m, b) {
			t.Fatalf("Marshal(ParseEvent(%x)) = %x", b, m)
		}
		e2, err := scanproto.ParseEvent(m)
		if err != nil || e2 != e {
			t.Fatalf("second parse: %+v, %v; want %+v", e2, err, e)
		}
		_ = e.Kind.String() + e.State.String()
	})
}

// FuzzAdv3ParseStartScan feeds arbitrary bulk OUT payloads to
// ParseStartScan and checks what the device derives from the result:
// the payload re-encodes to itself (a nonzero reserved byte is refused), Validate and
// ImageSize agree (ImageSize > 0 exactly when valid, never overflowing),
// and the sizes stay within what MaxPixels allows.
func FuzzAdv3ParseStartScan(f *testing.F) {
	f.Add(scanproto.StartScanCommand(scanproto.ScanParams{DPI: 300, Width: 2480, Height: 3507, Format: scanproto.FormatRGB24, Flags: scanproto.FlagZLP, Seed: 42}))
	f.Add(scanproto.StartScanCommand(scanproto.ScanParams{DPI: scanproto.MaxDPI, Width: scanproto.MaxPixels, Height: scanproto.MaxPixels, Format: scanproto.FormatRGB48}))
	f.Add(scanproto.StartScanCommand(scanproto.ScanParams{DPI: scanproto.MinDPI, Width: 1, Height: 1, Format: scanproto.FormatBW1}))
	f.Add(scanproto.StartScanCommand(scanproto.ScanParams{DPI: 0xffff, Width: math.MaxUint32, Height: math.MaxUint32, Format: 0xff, Flags: 0xff}))
	f.Add([]byte{scanproto.CmdStartScan})
	f.Add(scanproto.AbortCommand())
	f.Add(scanproto.EchoCommand(make([]byte, 23)))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := scanproto.ParseStartScan(b)
		if !ok {
			if len(b) == scanproto.StartScanSize && b[0] == scanproto.CmdStartScan && b[3]|b[6]|b[7] == 0 {
				t.Fatalf("refused a %d-byte start scan", len(b))
			}
			if p != (scanproto.ScanParams{}) {
				t.Fatalf("non-zero params %+v when refused", p)
			}
			return
		}
		enc := scanproto.StartScanCommand(p)
		if !bytes.Equal(enc, b) {
			t.Fatalf("StartScanCommand(ParseStartScan(%x)) = %x", b, enc)
		}
		if p2, ok := scanproto.ParseStartScan(enc); !ok || p2 != p {
			t.Fatalf("second parse: %+v %v, want %+v", p2, ok, p)
		}
		size, verr := p.ImageSize(), p.Validate()
		if (verr == nil) != (size > 0) {
			t.Fatalf("%+v: Validate %v but ImageSize %d", p, verr, size)
		}
		if verr != nil {
			return
		}
		bpl := p.BytesPerLine()
		if bpl < 1 || bpl > 6*scanproto.MaxPixels || size != bpl*int64(p.Height) || size > 6*scanproto.MaxPixels*scanproto.MaxPixels {
			t.Fatalf("%+v: %d bytes per line, %d in all", p, bpl, size)
		}
		if want := (int64(p.Width)*int64(p.Format.BitsPerPixel()) + 7) / 8; bpl != want {
			t.Fatalf("%+v: %d bytes per line, want %d", p, bpl, want)
		}
		_ = p.Format.String()
	})
}

// FuzzAdv3Params checks the encoder side: every ScanParams, valid or not,
// encodes to StartScanSize bytes that decode to the same ScanParams, and
// Validate, ImageSize and BytesPerLine never panic or overflow.
func FuzzAdv3Params(f *testing.F) {
	f.Add(uint16(300), uint32(100), uint32(100), uint8(1), uint8(1), uint64(0))
	f.Add(uint16(0), uint32(0), uint32(0), uint8(0), uint8(0), uint64(0))
	f.Add(uint16(0xffff), uint32(math.MaxUint32), uint32(math.MaxUint32), uint8(4), uint8(0xfe), uint64(math.MaxUint64))
	f.Fuzz(func(t *testing.T, dpi uint16, w, h uint32, format, flags uint8, seed uint64) {
		p := scanproto.ScanParams{DPI: dpi, Width: w, Height: h, Format: scanproto.Format(format), Flags: flags, Seed: seed}
		b := scanproto.AppendStartScan([]byte{0xaa}, p)
		if len(b) != 1+scanproto.StartScanSize || b[0] != 0xaa {
			t.Fatalf("AppendStartScan: %x", b)
		}
		got, ok := scanproto.ParseStartScan(b[1:])
		if !ok || got != p {
			t.Fatalf("round trip: %+v %v, want %+v", got, ok, p)
		}
		if binary.LittleEndian.Uint32(b[9:]) != w {
			t.Fatalf("width at the wrong offset: %x", b)
		}
		if bpl := p.BytesPerLine(); bpl < 0 {
			t.Fatalf("%+v: negative bytes per line %d", p, bpl)
		}
		if n := p.ImageSize(); n < 0 {
			t.Fatalf("%+v: negative image size %d", p, n)
		}
	})
}
