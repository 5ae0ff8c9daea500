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
	USBDevFSClaimInterface   = 0x8004550f // _IOR('U', 15, unsigned int)
	USBDevFSReleaseInterface = 0x80045510 // _IOR('U', 16, unsigned int)
	USBDevFSClearHalt        = 0x80045515 // _IOR('U', 21, unsigned int)
)

// ioctlBulk is USBDEVFS_BULK, _IOWR('U', 2, struct usbdevfs_bulktransfer).
const ioctlBulk = 0xc0005502 | unsafe.Sizeof(bulkTransfer{})<<16

// bulkTransfer is struct usbdevfs_bulktransfer. Go aligns data as C does,
// so the struct is 24 bytes on 64-bit platforms (4 bytes of padding before
// data) and 16 on 32-bit ones; the ioctl number carries that size. (_IOWR's
// direction bits, 3<<30, are the same value as the 6<<29 of mips, powerpc
// and sparc.)
type bulkTransfer struct {
	ep, len, timeout uint32 // timeout in ms
	data             unsafe.Pointer
}

var _ [16 + 8*(unsafe.Sizeof(uintptr(0))/8)]byte = [unsafe.Sizeof(bulkTransfer{})]byte{} // struct usbdevfs_bulktransfer: 24 bytes (64-bit), 16 (32-bit)

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
