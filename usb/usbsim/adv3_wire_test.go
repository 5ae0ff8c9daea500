//go:build linux

package usbsim_test

import (
	"encoding/binary"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv3Patience bounds the wait for a reply the device owes.
const adv3Patience = 10 * time.Second

// adv3Read reads one message from fd into b, failing tb if none arrives
// within adv3Patience (a device that swallowed a message: a hang).
func adv3Read(tb testing.TB, fd int, b []byte) int {
	tb.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(adv3Patience/time.Millisecond))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			tb.Fatalf("no reply within %v (poll: %d, %v)", adv3Patience, n, err)
		}
		break
	}
	n, err := unix.Read(fd, b)
	if err != nil {
		tb.Fatalf("read: %v", err)
	}
	return n
}

// adv3Scanner returns a scanner with small bulk messages and its bulk OUT
// and endpoint 0 host fds, closed with tb.
func adv3Scanner(tb testing.TB) (s *usbsim.Scanner, out, ctrl int) {
	s, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 64})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	eps, err := s.Endpoints()
	if err != nil {
		tb.Fatal(err)
	}
	c, err := s.ControlEndpoint()
	if err != nil {
		tb.Fatal(err)
	}
	return s, eps[0].FD, c.FD
}

// adv3Settle aborts whatever the last message started (so that no job
// streams and no echo piles up between fuzz inputs) and clears a halt of
// bulk OUT, and checks that the device still answers a well-formed
// command with the next sequence number.
func adv3Settle(tb testing.TB, s *usbsim.Scanner, out int, seq *uint32) {
	tb.Helper()
	if err := s.ClearHalt(usbsim.AddrBulkOut); err != nil {
		tb.Fatalf("ClearHalt: %v", err)
	}
	if _, err := unix.Write(out, append([]byte{usbsim.HeaderData}, usbsim.AbortCommand()...)); err != nil {
		tb.Fatalf("abort: %v", err)
	}
	var r [usbsim.ReplySize]byte
	n := adv3Read(tb, out, r[:])
	*seq++
	got, err := usbsim.DecodeReply(r[:], n, nil)
	if err != nil || got != *seq {
		tb.Fatalf("abort after the fuzz input: reply %d, %v; want %d, nil", got, err, *seq)
	}
}

// FuzzAdv3BulkOutWire writes arbitrary messages on the simulated
// scanner's bulk OUT socket (bad headers, empty messages, payloads past
// MaxTransfer, commands of every opcode with lying lengths, start scans
// with absurd sizes): the device must answer each with exactly one
// ReplySize reply carrying the next sequence number, stall exactly the
// malformed ones, and keep answering afterwards.
func FuzzAdv3BulkOutWire(f *testing.F) {
	d := func(p ...byte) []byte { return append([]byte{usbsim.HeaderData}, p...) }
	f.Add(d())
	f.Add([]byte{})
	f.Add([]byte{usbsim.HeaderStall})
	f.Add(d(usbsim.StatusCommand()...))
	f.Add(d(usbsim.CmdGetStatus, 0))
	f.Add(d(usbsim.CmdAbort, 1, 2))
	f.Add(d(usbsim.EchoCommand([]byte("marker"))...))
	f.Add(d(make([]byte, 65)...))
	f.Add(d(usbsim.StartScanCommand(usbsim.ScanParams{DPI: 300, Width: usbsim.MaxPixels, Height: usbsim.MaxPixels, Format: usbsim.FormatRGB48, Flags: usbsim.FlagZLP})...))
	f.Add(d(usbsim.StartScanCommand(usbsim.ScanParams{DPI: 0xffff, Width: 0xffffffff, Height: 0xffffffff, Format: 0xff})...))
	f.Add(d(usbsim.StartScanCommand(usbsim.ScanParams{DPI: 300, Width: 8, Height: 8, Format: usbsim.FormatGray8})[:23]...))
	f.Add(d(0x7f, 1, 2, 3))
	s, out, _ := adv3Scanner(f)
	var seq uint32
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > 4096 {
			return
		}
		if _, err := unix.Write(out, msg); err != nil {
			t.Fatalf("write of %d bytes: %v", len(msg), err)
		}
		var r [usbsim.ReplySize + 8]byte
		n := adv3Read(t, out, r[:])
		seq++
		got, err := usbsim.DecodeReply(r[:], n, nil)
		if n != usbsim.ReplySize || got != seq {
			t.Fatalf("reply % x (%d bytes) to message %d", r[:n], n, seq)
		}
		malformed := len(msg) == 0 || msg[0] != usbsim.HeaderData || len(msg)-1 > 64
		switch {
		case malformed && !errors.Is(err, usbsim.ErrStall):
			t.Fatalf("malformed message % x: %v, want ErrStall", msg, err)
		case !malformed && err != nil:
			t.Fatalf("message % x: %v", msg, err)
		}
		adv3Settle(t, s, out, &seq)
	})
}

// FuzzAdv3ControlWire writes arbitrary requests on the simulated
// scanner's endpoint 0 socket: setup packets of every type, direction,
// recipient and wLength, with data stages that fit, fall short or run
// over, and vendor commands of any content. Each must get exactly one
// reply with the next sequence number; a refusal (stall) carries no
// data, and an accepted IN request at most wLength bytes, an OUT one
// none; malformed framing is always refused.
func FuzzAdv3ControlWire(f *testing.F) {
	req := func(s usb.Setup, data ...byte) []byte {
		b := make([]byte, 1+usbsim.SetupSize, 1+usbsim.SetupSize+len(data))
		b[0] = usbsim.HeaderData
		s.Put(b[1:])
		return append(b, data...)
	}
	vendorOut := usb.RequestOut | usb.RequestVendor
	f.Add(req(usb.Setup{RequestType: usb.RequestIn, Request: 6, Value: 0x100, Length: 18}))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn, Request: 6, Value: 0x302, Index: 0x409, Length: 255}))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn, Request: 6, Value: 0x3ff, Index: 0x409, Length: 0xffff}))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn, Request: 6, Value: 0x300, Length: 1}))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn | usb.RecipientEndpoint, Request: 0, Index: 0x82, Length: 2}))
	f.Add(req(usb.Setup{RequestType: usb.RequestOut, Request: 9, Value: 0}))
	f.Add(req(usb.Setup{RequestType: usb.RequestOut | usb.RecipientInterface, Request: 11, Value: 1}))
	f.Add(req(usb.Setup{RequestType: uint8(vendorOut), Request: usbsim.VendorCommand, Length: 1}, usbsim.CmdGetStatus))
	f.Add(req(usb.Setup{RequestType: uint8(vendorOut), Request: usbsim.VendorCommand, Length: 3}, usbsim.CmdGetStatus))
	f.Add(req(usb.Setup{RequestType: uint8(vendorOut), Request: usbsim.VendorCommand, Length: 0}))
	f.Add(req(usb.Setup{RequestType: uint8(vendorOut), Request: usbsim.VendorCommand, Length: 24}, usbsim.StartScanCommand(usbsim.ScanParams{DPI: 300, Width: 4, Height: 4, Format: usbsim.FormatGray8})...))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn | usb.RequestVendor | usb.RecipientInterface, Request: usbsim.VendorStatus, Length: 7}))
	f.Add(req(usb.Setup{RequestType: usb.RequestIn | usb.RequestVendor, Request: usbsim.VendorStatus, Length: 100}, 1))
	f.Add([]byte{usbsim.HeaderData, 0x80, 6})
	f.Add([]byte{})
	f.Add([]byte{'X', 0x80, 6, 0, 1, 0, 0, 18, 0})
	s, out, ctrl := adv3Scanner(f)
	var seq, outSeq uint32
	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > 1+usbsim.SetupSize+usbsim.ControlMaxData+64 {
			return
		}
		if _, err := unix.Write(ctrl, msg); err != nil {
			t.Fatalf("write of %d bytes: %v", len(msg), err)
		}
		r := make([]byte, usbsim.ReplySize+usbsim.ControlMaxData+64)
		n := adv3Read(t, ctrl, r)
		seq++
		if n < usbsim.ReplySize || binary.LittleEndian.Uint32(r[1:]) != seq {
			t.Fatalf("reply % x to request %d", r[:min(n, 16)], seq)
		}
		data := r[usbsim.ReplySize:n]
		su, ok := usb.ParseSetup(msg[min(len(msg), 1):])
		stage := msg[min(len(msg), 1+usbsim.SetupSize):]
		well := ok && msg[0] == usbsim.HeaderData &&
			(su.IsIn() && len(stage) == 0 || !su.IsIn() && len(stage) == int(su.Length))
		switch r[0] {
		case usbsim.HeaderStall:
			if len(data) != 0 {
				t.Fatalf("stall with %d bytes of data", len(data))
			}
		case usbsim.HeaderAck:
			if !well {
				t.Fatalf("malformed request % x accepted", msg[:min(len(msg), 16)])
			}
			if !su.IsIn() && len(data) != 0 || len(data) > int(su.Length) {
				t.Fatalf("%+v answered with %d bytes", su, len(data))
			}
			if su.IsIn() && su.Request == 6 && su.RequestType&0x60 == 0 && len(data) >= 2 && int(data[0]) < len(data) {
				t.Fatalf("descriptor %#04x: bLength %d but %d bytes sent", su.Value, data[0], len(data))
			}
		default:
			t.Fatalf("reply header %q", r[0])
		}
		// Put the device back: configured, alternate setting 0, no job.
		if _, err := unix.Write(ctrl, req(usb.Setup{RequestType: usb.RequestOut, Request: 9, Value: 1})); err != nil {
			t.Fatal(err)
		}
		n = adv3Read(t, ctrl, r)
		seq++
		if n != usbsim.ReplySize || r[0] != usbsim.HeaderAck || binary.LittleEndian.Uint32(r[1:]) != seq {
			t.Fatalf("SET_CONFIGURATION(1) after the fuzz input: % x", r[:n])
		}
		adv3Settle(t, s, out, &outSeq)
	})
}

// FuzzAdv3Decode feeds the host-side decoders every header, count and
// error: they must not panic, must map a vanished peer to ErrNoDevice,
// and must never report a payload length outside what was read.
func FuzzAdv3Decode(f *testing.F) {
	f.Add(byte(usbsim.HeaderData), 1, 0, []byte{usbsim.HeaderAck, 1, 0, 0, 0})
	f.Add(byte(usbsim.HeaderStall), 5, 1, []byte{usbsim.HeaderStall, 0xff, 0xff, 0xff, 0xff})
	f.Add(byte('?'), 0, 2, []byte{})
	f.Add(byte(usbsim.HeaderData), -1, 3, []byte{usbsim.HeaderAck})
	f.Add(byte(usbsim.HeaderData), 1<<30, 4, []byte{'A', 1, 2, 3, 4, 5, 6})
	errs := []error{nil, syscall.EPIPE, syscall.ECONNRESET, syscall.ENOTCONN, syscall.ESHUTDOWN, io.EOF, syscall.ECANCELED, syscall.EAGAIN}
	f.Fuzz(func(t *testing.T, hdr byte, n int, ei int, reply []byte) {
		err := errs[uint(ei)%uint(len(errs))]
		gone := errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ESHUTDOWN)
		m, derr := usbsim.DecodeIn(hdr, n, err)
		switch {
		case derr == nil && (m < 0 || m != n-usbsim.HeaderSize || hdr != usbsim.HeaderData):
			t.Fatalf("DecodeIn(%q, %d, %v) = %d", hdr, n, err, m)
		case derr != nil && m != 0:
			t.Fatalf("DecodeIn(%q, %d, %v) = %d, %v", hdr, n, err, m, derr)
		case gone && !errors.Is(derr, usbsim.ErrNoDevice):
			t.Fatalf("DecodeIn with %v: %v", err, derr)
		case err == nil && n <= 0 && !errors.Is(derr, usbsim.ErrNoDevice):
			t.Fatalf("DecodeIn of %d bytes: %v", n, derr)
		}
		seq, rerr := usbsim.DecodeReply(reply, n, err)
		if rerr == nil && (n != usbsim.ReplySize || len(reply) < usbsim.ReplySize || reply[0] != usbsim.HeaderAck || seq != binary.LittleEndian.Uint32(reply[1:])) {
			t.Fatalf("DecodeReply(% x, %d, %v) = %d", reply, n, err, seq)
		}
		if gone && !errors.Is(rerr, usbsim.ErrNoDevice) {
			t.Fatalf("DecodeReply with %v: %v", err, rerr)
		}
		if werr := usbsim.DecodeWrite(n, len(reply), err); werr == nil && (err != nil || n != len(reply)) {
			t.Fatalf("DecodeWrite(%d, %d, %v) = nil", n, len(reply), err)
		}
	})
}
