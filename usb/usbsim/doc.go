// Package usbsim is a simulated USB scanner whose endpoints are real kernel
// fds, so an I/O engine (io_uring, epoll) does real I/O against it, with
// faults injected at run time: latency, bandwidth cap, stall, hang, unplug.
// It exists to test and benchmark cancelable USB transfers without hardware.
//
// The device runs in this process: one goroutine per endpoint serves the
// device end of a SOCK_SEQPACKET socketpair, and the host (package usb, or
// a test) does plain read, readv, write and writev on the host end, listed
// by Scanner.Endpoints. Nothing here knows about the engine.
//
// # Endpoints
//
//	0x00 control         standard requests, and commands and status as vendor requests
//	0x01 bulk OUT        commands from the host (and their replies)
//	0x82 bulk IN         image data, echoes and flush markers to the host
//	0x83 interrupt IN    events: command answers, job progress, buttons
//
// The endpoints form interface 0 of configuration 1, at alternate setting
// 0; alternate setting AltEventsOnly keeps interrupt IN only (socketpair
// transport).
//
// The descriptor identity defaults to vendor 0x1209 (pid.codes) product
// 0x0001 (its test ID): a simulated device, not a real product.
//
// # Framing
//
// Each message on a socket is one header byte and a payload; a message is
// one USB transfer. SOCK_SEQPACKET keeps message boundaries, so a zero-length
// packet is a message with a header and no payload, and a read returns at
// most one message.
//
//   - IN endpoints: the host reads with readv into [hdr (1 byte), buf], buf
//     at least Endpoint.MaxTransfer long (the device never sends more in one
//     message, so nothing is truncated and nothing is copied), and passes
//     the result to DecodeIn: HeaderData gives the payload length (0 for a
//     zero-length packet), HeaderStall gives ErrStall, end of file or a
//     reset gives ErrNoDevice. A transfer returns what the device sent in
//     one message, up to MaxTransfer: a shorter one is a short transfer; data
//     the host has not read stays queued for its next read.
//   - Bulk OUT: the host writes one message, HeaderData then the payload (at
//     most MaxTransfer bytes), with writev([hdr, payload]) (DecodeWrite
//     checks the result), then reads the device's 5-byte reply: HeaderAck
//     or HeaderStall and the little-endian uint32 sequence number of the
//     message it answers, counting from 1 after each plug-in (DecodeReply).
//     An OUT transfer is complete when its reply arrives: the device sends
//     it once the latency and bandwidth faults allow and, for a command,
//     after acting on it. A host that gave up waiting for a reply (canceled
//     the read) skips replies with lower sequence numbers later.
//   - A halted IN endpoint answers every read with HeaderStall until
//     Scanner.ClearHalt, which also discards what the host has not read; a
//     SET_CONFIGURATION or SET_INTERFACE (the Device's SetConfiguration and
//     SetAltSetting, or the requests on endpoint 0) does the same for every
//     halted endpoint, as on a device, also when the value does not change. A
//     halted bulk OUT endpoint answers every message with a HeaderStall
//     reply and ignores it. A malformed OUT message (a bad header, more than
//     MaxTransfer bytes) halts bulk OUT.
//   - Unplug closes the device ends: pending and later host reads return end
//     of file, writes fail with EPIPE or ECONNRESET, all ErrNoDevice through
//     the Decode functions (a write to a closed socket also raises SIGPIPE,
//     which Go ignores for fds other than 1 and 2; sendmsg can pass
//     MSG_NOSIGNAL). The host fds stay open until Scanner.Close, so
//     their numbers are not reused under a host still holding them; Replug
//     makes a new set.
//
// # Commands (bulk OUT payloads)
//
// The scanner implements the command set of package scanproto, which the
// driver in package minidrv speaks too: start scan, abort, status, echo,
// nop (scanproto's doc lists their layouts). Its names are repeated here as
// aliases (ScanParams, StartScanCommand, ...). A zero-length OUT packet is
// accepted and ignored. A command that fails (unknown opcode, bad length,
// bad parameters, start while a job is active) is still acknowledged on
// bulk OUT; the failure is reported by an EventError on interrupt IN.
//
// A scan streams the image on bulk IN in messages of MaxTransfer bytes (the
// last one shorter), followed by a zero-length packet if the job has
// FlagZLP. Its length is ScanParams.ImageSize (lines padded to bytes); its
// content depends on the seed and the offset only, so ExpectedImage,
// ImageByte or FillImage check a received image byte for byte, and
// Scanner.LastScan tells a test which job a driver asked for. The events
// EventJobStarted and EventJobDone (after its last byte was sent) frame a
// job.
//
// To cancel a scan the host sends abort, then reads bulk IN until a
// zero-length transfer: everything before it is stale data that the device
// had sent before the abort, and the next scan starts clean.
//
// # Vendor requests (endpoint 0)
//
// The same commands travel as vendor control requests on endpoint 0, to
// the device or to interface 0: VendorCommand carries one command in its
// OUT data stage and VendorStatus answers with the device's status event
// in its IN data stage; other vendor requests, and these in the wrong
// direction, are refused with a STALL. Their effects are those of the
// command on bulk OUT: image data and echoes on bulk IN, events on
// interrupt IN. The socketpair transport frames each request as one
// message and each answer as one reply (see Scanner.ControlEndpoint); the
// gadget transport answers them on FunctionFS's ep0. A hung device
// answers no control request until Resume.
//
// # Events (interrupt IN)
//
// Each interrupt IN message carries one 24-byte Event (ParseEvent): its
// kind, the device state, a code (button number or error code), the current
// or last job id and that job's sent and total byte counts. At most 64
// events wait for the host; older ones are dropped.
//
// # Faults
//
// Any goroutine may inject faults at any time; they apply at once, also to
// transfers in progress:
//
//   - SetLatency: a delay before each transfer the device answers.
//   - SetBandwidth: a payload rate cap (bytes/s) per endpoint.
//   - Stall(addr) / ClearHalt(addr): halt an endpoint until the host clears it.
//   - Hang / HangAfter(n) / Resume: the device stops answering on every
//     endpoint, endpoint 0's vendor requests included (at once, or after n
//     more bytes of bulk IN payload) with all fds open, and later carries
//     on where it stopped.
//   - Unplug / Replug: the device goes away (ErrNoDevice) and comes back
//     with new fds. Scanner.WatchHotplug reports both as usb.HotplugEvents
//     (usb.Left, usb.Arrived), with the methods and errors of usb.Hotplug,
//     which reads the kernel's: a driver that follows hotplug follows the
//     simulator the same way.
//
// Close stops every goroutine and closes every fd.
//
// # Transports
//
// The scanner personality (commands, image generator, events, fault
// policy) is one implementation with two transports:
//
//   - NewScanner: the socketpairs described above, for tests and
//     benchmarks on any Linux machine.
//   - ServeGadget: a USB gadget whose endpoints are FunctionFS files (a
//     configfs gadget on a device controller such as dummy_hcd, as the
//     usbvm test guest builds), so that the host side of a real Linux USB
//     stack (usbcore, usbfs, libusb) talks to the scanner. There USB frames
//     the transfers (no header byte, no OUT replies; a short or zero-length
//     packet ends a transfer), the host sees the endpoint addresses the
//     controller assigned, and the faults become a halted endpoint, a
//     device that NAKs, and a gadget unbound from its controller; see
//     ServeGadget. Fault setters and Unplug, Replug and Close are the same
//     calls on both transports; Stall takes the addresses above on both.
package usbsim
