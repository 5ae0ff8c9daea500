// Package usbfs is the native Linux USB backend of cancelio, without cgo:
// devices are found in sysfs (/sys/bus/usb/devices) and driven through their
// usbfs nodes (/dev/bus/usb/BBB/DDD) with the ioctls of
// <linux/usbdevice_fs.h>.
//
// Bulk and interrupt transfers are asynchronous URBs (USBDEVFS_SUBMITURB)
// that complete through an ioring.Ring as foreign requests: they get the
// ring's tokens, deadlines and completion queue like any other I/O, and a
// cancel by any means (Request.Cancel, Token.Cancel, Ring.CancelAll, a
// deadline, a context) becomes USBDEVFS_DISCARDURB on the transfer's URBs.
// One reaper goroutine per open device waits for an ioring poll request on
// the usbfs fd (usbfs reports reapable URBs as POLLOUT), reaps every ready
// URB with USBDEVFS_REAPURBNDELAY and posts each finished transfer with
// Ring.Complete, exactly once. The URB's own reap is the truth: a transfer
// canceled too late keeps its real result, and one canceled midway reports
// the bytes that had arrived, with ioring.ErrCanceled.
//
// # Results
//
// A transfer completes with nil, ioring.ErrCanceled (URB status -ENOENT or
// -ECONNRESET; ioring turns it into ioring.ErrTimeout when the deadline
// fired), ErrNoDevice (-ENODEV, -ESHUTDOWN, or -EPROTO once the
// device is seen disconnected), ErrStall (-EPIPE: clear it with
// Endpoint.ClearHalt), ErrBabble (-EOVERFLOW), a *StatusError carrying any
// other status, or the *OpError of a USBDEVFS_SUBMITURB the kernel refused.
// Bad input (a closed device, an endpoint of the wrong direction or type, an
// empty IN buffer, a transfer too large to send) is refused before any ioctl.
//
// # Large transfers
//
// Current kernels report USBDEVFS_CAP_NO_PACKET_SIZE_LIM: a URB is then
// limited only by the usbfs memory budget (the usbcore parameter
// usbfs_memory_mb, 16 MiB by default, shared by every usbfs user of the
// system). This package makes URBs of up to half that budget (8 MiB by
// default), leaving the rest to other transfers, and refuses a transfer
// larger than the whole budget. It accounts the memory of the transfers a
// Device has accepted and not completed: one that would take them past the
// budget is refused at Submit with an error wrapping ioring.ErrFull (retry
// after completions); when other processes took the budget, the kernel's
// ENOMEM completes the transfer with such an error too. Older kernels cap
// a URB at 16 KiB.
// A bulk transfer larger than one URB is split into URBs of the largest
// size that is a multiple of the endpoint's wMaxPacketSize, chained with
// USBDEVFS_URB_BULK_CONTINUATION (and SHORT_NOT_OK on every IN part but the
// last), so a short packet ends the whole transfer as libusb does; that
// needs USBDEVFS_CAP_BULK_CONTINUATION, and a transfer that would need a
// split without it, or any interrupt transfer larger than one URB, is
// refused up front. A cancel discards the parts from last to first, so no
// later part starts to take data while an earlier one is being discarded.
//
// # Concurrency and costs
//
// Transfers of one endpoint go to the kernel in submission order, at most
// Config.Depth of them at once (no cap by default); the others wait in the
// Device, in order, and a cancel completes a waiting transfer at once,
// without an ioctl. A small depth keeps the cancel of many transfers fast:
// each transfer in the kernel costs one USBDEVFS_DISCARDURB.
//
// Device and Endpoint methods are safe for concurrent use. Each open Device
// holds one request slot of its ring for the reaper's poll request and runs
// two goroutines: the reaper, and a discarder that runs USBDEVFS_DISCARDURB
// for the cancel hooks. That ioctl waits in the kernel until the host
// controller gives the URB back (usb_kill_urb, under the device lock, so
// discards of one device run one after another); handing it to the
// discarder lets a cancel request and return at once, as the ioring
// contract wants. A discarded URB is reapable as the ioctl returns: the
// discarder reaps it then, without waiting for the reaper's poll. Close discards every transfer, waits until each has been
// reaped and posted, stops both goroutines, releases the claimed interfaces
// and closes the fd. A transfer allocates a few small objects (its URBs,
// its cancel hook); the URB layout and the reap path allocate nothing else.
//
// The public usb package wraps this package as its usbfs backend; this one
// is internal to keep the ioctl layer free to change.
package usbfs
