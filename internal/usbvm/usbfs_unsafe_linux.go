//go:build linux

package usbvm

// Synchronous usbfs ioctls for the guest suites: a test's host side talks to
// a gadget with them directly, without the package under test.

import (
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// usbfs ioctls, from <linux/usbdevice_fs.h>: the arguments of USBFSUint.
const (
	ioctlBulk                = 0xc0185502 // _IOWR('U', 2, struct usbdevfs_bulktransfer)
	USBDevFSClaimInterface   = 0x8004550f // _IOR('U', 15, unsigned int)
	USBDevFSReleaseInterface = 0x80045510 // _IOR('U', 16, unsigned int)
	USBDevFSClearHalt        = 0x80045515 // _IOR('U', 21, unsigned int)
)

// bulkTransfer is struct usbdevfs_bulktransfer.
type bulkTransfer struct {
	ep, len, timeout uint32 // timeout in ms
	_                uint32
	data             unsafe.Pointer
}

var _ [24]byte = [unsafe.Sizeof(bulkTransfer{})]byte{} // struct usbdevfs_bulktransfer is 24 bytes

// USBFSBulk runs one synchronous bulk or interrupt transfer on endpoint ep
// of the usbfs device fd and returns the bytes moved. A timed-out transfer
// fails with ETIMEDOUT.
func USBFSBulk(fd int, ep uint8, buf []byte, timeout time.Duration) (int, error) {
	bt := bulkTransfer{ep: uint32(ep), len: uint32(len(buf)), timeout: uint32(timeout.Milliseconds())}
	if len(buf) > 0 {
		bt.data = unsafe.Pointer(&buf[0])
	}
	n, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlBulk, uintptr(unsafe.Pointer(&bt)))
	runtime.KeepAlive(buf)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// USBFSUint runs a usbfs ioctl whose argument is a pointer to an unsigned
// int: claim or release an interface, clear an endpoint's halt.
func USBFSUint(fd int, req uintptr, v uint32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&v)))
	if errno != 0 {
		return errno
	}
	return nil
}
