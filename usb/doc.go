// Package usb provides USB devices and endpoints whose transfers are
// overlapped, individually cancelable requests of an ioring.Ring: a driver
// submits bulk and interrupt transfers, cancels any of them (or all of a
// device's at once, as WIA's CancelPendingIO asks) at any moment from any
// goroutine, and reaps their completions from the same queue as its other
// I/O. Nothing here knows about WIA.
//
// # Devices
//
// Open opens a real device through one of two backends (WithBackend, or
// the environment variable CANCELIO_USB): "usbfs", the default on Linux,
// drives the kernel's usbfs directly (URBs submitted, discarded and reaped
// through the ring; no cgo), and "libusb" goes through
// github.com/google/gousb (builds with cgo only: without cgo it returns an
// error wrapping ioring.ErrNotSupported). Both give the same results and
// errors. List enumerates the attached devices (through sysfs on Linux).
// Where the system has no USB subsystem (no /dev/bus/usb, as in most
// containers) both return ErrNoUSB. WithZeroPacket ends bulk OUT transfers of whole packets
// with a zero-length packet, for protocols that end a transfer with a short
// packet (usbsim's scanner served as a gadget is one). usbsim.Open opens
// the simulated scanner of package usbsim, whose endpoints are real kernel
// fds: its transfers are real io_uring (or epoll) I/O, so tests and
// benchmarks exercise the whole path, with faults (latency, stall, hang,
// unplug) injected at run time. This package does not import the
// simulator.
//
// # Configurations, interfaces, alternate settings
//
// Open selects a configuration (WithConfig), claims one interface
// (WithInterface) at an alternate setting (WithAltSetting), and the
// Device's endpoints are that setting's. Afterwards Device.SetConfiguration,
// ClaimInterface, ReleaseInterface and SetAltSetting change them, checked
// against DeviceDesc.Configs: the Device's endpoints are always those of
// the claimed interfaces at their current settings, and an Endpoint of a
// setting that is gone fails with ErrNotFound before any I/O. A kernel
// driver detached at the claim is asked back at the release. These calls
// wait for no transfer: they refuse while any is pending on the device.
//
// # Backends
//
// Every backend implements one interface, Transport, and NewDevice makes a
// Device of any Transport: usbfs and libusb here, the simulator in package
// usbsim. A backend whose I/O is blocking or sequential per endpoint
// implements Runner instead and gets its Transport from NewPump, which
// keeps the queues, the cancel hooks and the exactly-once completion. All
// backends report the same errors (below), and one conformance suite runs
// the same cases against each.
//
// # Transfers
//
// A transfer is an ioring foreign request (ioring.Foreign): Endpoint.Submit
// sends its completion to the ring's completion queue (Ring.Reap),
// Endpoint.Start to Request.Wait, and Endpoint.Transfer waits for it with a
// context. Xfer gives a transfer a cancel token, a deadline and a user
// value. The completion carries the bytes moved and an already decoded
// error:
//
//   - nil: done (a short IN transfer, even a zero-length packet, is a
//     success: Completion.N says how much arrived);
//   - ErrCanceled: canceled (token, Request.Cancel, Device.CancelAll,
//     Ring.CancelAll, a context, Close), with the bytes that moved before;
//   - ErrTimeout: its deadline passed (also a cancel);
//   - ErrStall: the endpoint is halted; Device.ClearHalt recovers;
//   - ErrBabble: the device sent more than the buffer holds;
//   - ErrNoDevice: the device is gone for good (errors.Is(err,
//     ioring.ErrNoDevice) holds too);
//   - another error of the transport.
//
// Every accepted transfer completes exactly once, whatever races with what.
// Transfers on one endpoint run in submission order and complete in that
// order, as on the bus; a transfer canceled while still queued completes at
// once. On usbfs a transfer is one ring request whose URBs package usbfs
// submits and reaps itself (WithDepth transfers per endpoint in the kernel
// at once, default 1; the rest wait in order); nothing of this package's
// runs between the kernel and the ring. On libusb and the simulated scanner
// each endpoint has one goroutine that runs its transfers one at a time
// (the pump); a transfer costs no goroutine of its own, but for a libusb
// control transfer, whose call runs on one so that a cancel can leave it
// behind.
//
// Each accepted transfer is one request of the Device's ring, counted by
// Ring.InFlight and Ring.Stats like any other. An open usbfs Device also
// keeps one request of its own in flight: the poll on its fd that wakes
// its reaper, armed again after every wake-up (so Stats.Submitted grows with
// the device's traffic, and a Ring.CancelAll ends that poll too: the
// reaper arms a new one). Ring.InFlight is therefore 1, not 0, on a ring
// whose only user is an idle usbfs Device; Device.Close ends the poll.
//
// # Cancel
//
// Cancel requests and returns. A queued transfer completes with
// ErrCanceled at once; the transfer in progress has its I/O canceled (the
// ring cancels the socket read; usbfs discards the URBs; libusb_cancel_transfer
// through the context given to gousb) and completes when that I/O has ended, so a buffer is
// never written after its completion. A control transfer on libusb, whose
// call nothing interrupts, completes at once with ErrCanceled instead: its
// call runs on a copy of the data stage and is left to end by itself, and
// endpoint 0's next request waits for it (see Device.SubmitControl).
// Device.Close cancels everything, waits for every completion (and for
// such a call), then releases the device.
//
// # The simulated scanner
//
// On a Device from usbsim.Open an IN transfer is one readv of one message
// ([header, buf]), an OUT transfer one writev of a message followed by the
// read of the device's 5-byte reply, and a control transfer one writev of
// the setup packet (and OUT data) followed by the read of the reply that
// carries the IN data (see usbsim). IN buffers shorter than
// EndpointDesc.MaxTransfer go through a bounce buffer and the rest of a
// longer message is kept for the endpoint's next transfers, so no data is
// lost; OUT buffers longer than MaxTransfer are refused. A transfer in
// progress uses a second ring slot for that I/O.
package usb
