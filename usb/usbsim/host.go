package usbsim

import (
	"encoding/binary"
	"errors"
	"syscall"

	"github.com/cancelio/cancelio/usb"
)

// Errors a host sees on the endpoints, and Scanner errors. Compare with
// errors.Is.
var (
	// ErrStall means the endpoint is halted: every transfer on it fails with
	// ErrStall until the host calls Scanner.ClearHalt (libusb's
	// LIBUSB_ERROR_PIPE, usbfs's EPIPE). It is usb.ErrStall, so a host
	// needs no mapping.
	ErrStall = usb.ErrStall
	// ErrNoDevice means the device was unplugged (or the Scanner closed):
	// every transfer on the old endpoints fails with it for good. After
	// Replug the host opens the new endpoints (libusb's LIBUSB_ERROR_NO_DEVICE,
	// usbfs's ENODEV). It is usb.ErrNoDevice (errors.Is(err,
	// ioring.ErrNoDevice) holds too).
	ErrNoDevice = usb.ErrNoDevice
	// ErrProtocol means a message broke the framing (an unknown header, a
	// short reply); it is a bug on one side, not a device condition.
	ErrProtocol = errors.New("usbsim: framing error")
	// ErrClosed is returned by Scanner methods after Close.
	ErrClosed = errors.New("usbsim: scanner closed")
	// ErrNotSupported is returned for what a transport does not do: the
	// socketpair-only methods (Endpoints, ClearHalt) of a scanner served as
	// a USB gadget, and ServeGadget where there is no FunctionFS (not Linux).
	ErrNotSupported = errors.New("usbsim: not supported")
	// ErrShortDataStage is in a DataStageErrors entry for a control OUT
	// request whose data stage came short of its wLength. On the gadget
	// rig (FunctionFS on dummy_hcd) that is a request the host abandoned
	// in its data stage, whose read for it was served as the data stage
	// of the host's next request: an OUT one's data, which the gadget
	// runs in its place, or, for an IN one, the read's unfilled buffer,
	// which the host gets instead of the scanner's answer (ErrBabble when
	// it is the longer). For tests, to tell the rig's wrong answer from
	// the host's.
	ErrShortDataStage = errors.New("usbsim: short control data stage")
	// ErrAnswerNotTaken is in a DataStageErrors entry for a control IN
	// request whose answer the gadget wrote but the host never took: the
	// host abandoned the request (its timeout or cancel), or, on the
	// gadget rig, the request's data stage had been served already by
	// the gadget's read for an OUT request the host abandoned (see
	// ErrShortDataStage). That read comes back full when the OUT's
	// wLength was no longer than the IN's, so the gadget finds no short
	// data stage then, and the host gets the read's buffer as its answer;
	// the answer written after it is what the rig drops. For tests, to
	// tell the rig's wrong answer from the host's.
	ErrAnswerNotTaken = errors.New("usbsim: control answer not taken by the host")
)

// DecodeIn interprets a completed read on an IN endpoint's host fd, made
// with readv into [hdr (1 byte), buf] where len(buf) >= Endpoint.MaxTransfer:
// n and err are the read's result. It returns the payload length in buf
// (0 for a zero-length packet), ErrStall for a halted endpoint, ErrNoDevice
// when the device is gone (end of file, EPIPE, ECONNRESET, ENOTCONN,
// ESHUTDOWN), ErrProtocol for an unknown header, or err itself for any other
// error (ECANCELED, EAGAIN, EBADF...). It never allocates.
func DecodeIn(hdr byte, n int, err error) (int, error) {
	if err != nil {
		return 0, MapError(err)
	}
	if n <= 0 {
		return 0, ErrNoDevice
	}
	switch hdr {
	case HeaderData:
		return n - HeaderSize, nil
	case HeaderStall:
		return 0, ErrStall
	}
	return 0, ErrProtocol
}

// DecodeWrite interprets a completed write of one bulk OUT message (header
// and payload, want bytes in all) on the OUT host fd: nil when it was sent
// whole, ErrNoDevice when the device is gone, err itself otherwise. A sent
// message is not yet accepted: the device answers each one with a reply
// (see DecodeReply).
func DecodeWrite(n, want int, err error) error {
	if err != nil {
		return MapError(err)
	}
	if n != want {
		return ErrProtocol // SOCK_SEQPACKET sends whole messages or nothing
	}
	return nil
}

// DecodeReply interprets a completed read of a bulk OUT reply on the OUT host
// fd into reply (len >= ReplySize), with n and err the read's result. It
// returns the sequence number of the OUT message answered and nil (the
// message was accepted and, for a command, acted upon), ErrStall (the
// endpoint is halted; the message was discarded), ErrNoDevice or err.
// A host that abandoned (canceled) the wait for a reply skips replies whose
// sequence number is below that of its current message.
func DecodeReply(reply []byte, n int, err error) (uint32, error) {
	if err != nil {
		return 0, MapError(err)
	}
	if n <= 0 {
		return 0, ErrNoDevice
	}
	if n != ReplySize || len(reply) < ReplySize {
		return 0, ErrProtocol
	}
	seq := binary.LittleEndian.Uint32(reply[1:])
	switch reply[0] {
	case HeaderAck:
		return seq, nil
	case HeaderStall:
		return seq, ErrStall
	}
	return seq, ErrProtocol
}

// MapError maps the errors by which a socket reports a vanished peer (EPIPE,
// ECONNRESET, ENOTCONN, ESHUTDOWN, also when wrapped) to ErrNoDevice and
// returns any other error unchanged.
func MapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ENOTCONN), errors.Is(err, errShutdown):
		return ErrNoDevice
	}
	return err
}
