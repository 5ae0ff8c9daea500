//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs

// The usbfs ABI, mirrored from <linux/usbdevice_fs.h> for the 64-bit
// architectures with the generic ioctl encoding. Sizes are checked against
// gcc's on amd64 (sizeof(struct usbdevfs_urb) is 56, with buffer at offset
// 16 and usercontext at 48); the build fails if one drifts. The ioctl
// numbers are computed from the Go structs' sizes, as _IOR/_IOW do in C.

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// urb is struct usbdevfs_urb, without its trailing flexible array of iso
// packet descriptors (this package submits no isochronous URBs). The kernel
// reads it at USBDEVFS_SUBMITURB and writes status, actual_length,
// error_count and start_frame back into it at reap; it keeps its address as
// the URB's identity, so it must not move until reaped (runtime.Pinner).
type urb struct {
	typ          uint8
	endpoint     uint8
	_            [2]byte
	status       int32
	flags        uint32
	buffer       uintptr // pinned by the transfer
	bufferLength int32
	actualLength int32
	startFrame   int32
	numPackets   int32 // union with stream_id
	errorCount   int32
	signr        uint32
	userContext  uintptr
}

// isoPacketDesc is struct usbdevfs_iso_packet_desc, mirrored for its size
// check only (no isochronous URBs here).
//
//lint:ignore U1000 the kernel's layout, checked below
type isoPacketDesc struct {
	length, actualLength, status uint32
}

// ctrlTransfer is struct usbdevfs_ctrltransfer.
type ctrlTransfer struct {
	requestType uint8
	request     uint8
	value       uint16
	index       uint16
	length      uint16
	timeout     uint32 // in milliseconds
	data        unsafe.Pointer
}

// setInterface is struct usbdevfs_setinterface.
type setInterface struct {
	iface, altSetting uint32
}

// getDriver is struct usbdevfs_getdriver.
type getDriver struct {
	iface  uint32
	driver [256]byte
}

// disconnectClaim is struct usbdevfs_disconnect_claim.
type disconnectClaim struct {
	iface  uint32
	flags  uint32
	driver [256]byte
}

// ioctlArg is struct usbdevfs_ioctl, which forwards an ioctl to the
// interface's driver (USBDEVFS_DISCONNECT and USBDEVFS_CONNECT go through
// it).
type ioctlArg struct {
	ifno      int32
	ioctlCode int32
	data      unsafe.Pointer
}

// Sizes checked against gcc on amd64.
var (
	_ [56]byte  = [unsafe.Sizeof(urb{})]byte{}           // struct usbdevfs_urb
	_ [12]byte  = [unsafe.Sizeof(isoPacketDesc{})]byte{} // struct usbdevfs_iso_packet_desc
	_ [24]byte  = [unsafe.Sizeof(ctrlTransfer{})]byte{}  // struct usbdevfs_ctrltransfer
	_ [8]byte   = [unsafe.Sizeof(setInterface{})]byte{}  // struct usbdevfs_setinterface
	_ [260]byte = [unsafe.Sizeof(getDriver{})]byte{}     // struct usbdevfs_getdriver
	_ [264]byte = [unsafe.Sizeof(disconnectClaim{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(ioctlArg{})]byte{} // struct usbdevfs_ioctl
	// Field offsets the kernel relies on.
	_ [16]byte = [unsafe.Offsetof(urb{}.buffer)]byte{}
	_ [28]byte = [unsafe.Offsetof(urb{}.actualLength)]byte{}
	_ [48]byte = [unsafe.Offsetof(urb{}.userContext)]byte{}
	_ [16]byte = [unsafe.Offsetof(ctrlTransfer{}.data)]byte{}
)

// The generic _IOC encoding of <asm-generic/ioctl.h>.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | 'U'<<8 | nr }

// The usbfs ioctls this package uses, as <linux/usbdevice_fs.h> defines them.
var (
	ioctlControl          = ioc(iocRead|iocWrite, 0, unsafe.Sizeof(ctrlTransfer{})) // USBDEVFS_CONTROL
	ioctlSetInterface     = ioc(iocRead, 4, unsafe.Sizeof(setInterface{}))          // USBDEVFS_SETINTERFACE
	ioctlSetConfiguration = ioc(iocRead, 5, 4)                                      // USBDEVFS_SETCONFIGURATION
	ioctlGetDriver        = ioc(iocWrite, 8, unsafe.Sizeof(getDriver{}))            // USBDEVFS_GETDRIVER
	ioctlSubmitURB        = ioc(iocRead, 10, unsafe.Sizeof(urb{}))                  // USBDEVFS_SUBMITURB
	ioctlDiscardURB       = ioc(iocNone, 11, 0)                                     // USBDEVFS_DISCARDURB
	ioctlReapURBNDelay    = ioc(iocWrite, 13, unsafe.Sizeof(uintptr(0)))            // USBDEVFS_REAPURBNDELAY
	ioctlClaimInterface   = ioc(iocRead, 15, 4)                                     // USBDEVFS_CLAIMINTERFACE
	ioctlReleaseInterface = ioc(iocRead, 16, 4)                                     // USBDEVFS_RELEASEINTERFACE
	ioctlIoctl            = ioc(iocRead|iocWrite, 18, unsafe.Sizeof(ioctlArg{}))    // USBDEVFS_IOCTL
	ioctlReset            = ioc(iocNone, 20, 0)                                     // USBDEVFS_RESET
	ioctlClearHalt        = ioc(iocRead, 21, 4)                                     // USBDEVFS_CLEAR_HALT
	ioctlDisconnect       = ioc(iocNone, 22, 0)                                     // USBDEVFS_DISCONNECT
	ioctlConnect          = ioc(iocNone, 23, 0)                                     // USBDEVFS_CONNECT
	ioctlGetCapabilities  = ioc(iocRead, 26, 4)                                     // USBDEVFS_GET_CAPABILITIES
	ioctlDisconnectClaim  = ioc(iocRead, 27, unsafe.Sizeof(disconnectClaim{}))      // USBDEVFS_DISCONNECT_CLAIM
)

func ioctl(fd int, req, arg uintptr) error {
	for {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return e
	}
}

// ioctlU32 runs an ioctl whose argument is a pointer to an unsigned int.
func ioctlU32(fd int, req uintptr, v uint32) error {
	return ioctl(fd, req, uintptr(unsafe.Pointer(&v)))
}

// getCapabilities runs USBDEVFS_GET_CAPABILITIES.
func getCapabilities(fd int) (uint32, error) {
	var caps uint32
	err := ioctl(fd, ioctlGetCapabilities, uintptr(unsafe.Pointer(&caps)))
	return caps, err
}

func doSetInterface(fd int, iface, alt uint32) error {
	si := setInterface{iface: iface, altSetting: alt}
	return ioctl(fd, ioctlSetInterface, uintptr(unsafe.Pointer(&si)))
}

// driverName returns the name of the kernel driver bound to interface
// iface (USBDEVFS_GETDRIVER; ENODATA when none is).
func driverName(fd int, iface uint32) (string, error) {
	gd := getDriver{iface: iface}
	if err := ioctl(fd, ioctlGetDriver, uintptr(unsafe.Pointer(&gd))); err != nil {
		return "", err
	}
	return cString(gd.driver[:]), nil
}

// disconnectAndClaim runs USBDEVFS_DISCONNECT_CLAIM: unbind any kernel
// driver but usbfs itself from interface iface, then claim it.
func disconnectAndClaim(fd int, iface uint32) error {
	dc := disconnectClaim{iface: iface, flags: disconnectClaimExceptDriver}
	copy(dc.driver[:], "usbfs")
	return ioctl(fd, ioctlDisconnectClaim, uintptr(unsafe.Pointer(&dc)))
}

// disconnectDriver unbinds the kernel driver of interface iface through
// USBDEVFS_IOCTL(USBDEVFS_DISCONNECT), for kernels before 3.8.
func disconnectDriver(fd int, iface uint32) error {
	a := ioctlArg{ifno: int32(iface), ioctlCode: int32(ioctlDisconnect)}
	return ioctl(fd, ioctlIoctl, uintptr(unsafe.Pointer(&a)))
}

// connectDriver asks the kernel to bind a driver to interface iface again
// through USBDEVFS_IOCTL(USBDEVFS_CONNECT).
func connectDriver(fd int, iface uint32) error {
	a := ioctlArg{ifno: int32(iface), ioctlCode: int32(ioctlConnect)}
	return ioctl(fd, ioctlIoctl, uintptr(unsafe.Pointer(&a)))
}

// control runs USBDEVFS_CONTROL and returns the bytes moved.
func control(fd int, rt, req uint8, value, index uint16, data []byte, timeoutMS uint32) (int, error) {
	ct := ctrlTransfer{requestType: rt, request: req, value: value, index: index, length: uint16(len(data)), timeout: timeoutMS}
	if len(data) > 0 {
		ct.data = unsafe.Pointer(&data[0])
	}
	for {
		n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlControl, uintptr(unsafe.Pointer(&ct)))
		runtime.KeepAlive(data)
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// urbAddr returns u's address: the URB's identity in the kernel, which
// REAPURBNDELAY hands back and DISCARDURB takes.
func urbAddr(u *urb) uintptr { return uintptr(unsafe.Pointer(u)) }

// setBuffer points u at b, which the caller keeps pinned until u is reaped.
func (u *urb) setBuffer(b []byte) {
	u.bufferLength = int32(len(b))
	u.buffer = 0
	if len(b) > 0 {
		u.buffer = uintptr(unsafe.Pointer(&b[0]))
	}
}

// submitURB runs USBDEVFS_SUBMITURB on u, which the caller has pinned.
func submitURB(fd int, u *urb) error {
	return ioctl(fd, ioctlSubmitURB, uintptr(unsafe.Pointer(u)))
}

// discardURB runs USBDEVFS_DISCARDURB on the URB at addr. The kernel only
// compares addr with its pending URBs (EINVAL when none matches: already
// reaped); it waits until the host controller has given the URB back.
func discardURB(fd int, addr uintptr) error {
	return ioctl(fd, ioctlDiscardURB, addr)
}

// reapURB runs USBDEVFS_REAPURBNDELAY and returns the address of the URB it
// reaped (EAGAIN when none is ready, ENODEV when none is and the device is
// gone).
func reapURB(fd int) (uintptr, error) {
	var addr uintptr
	err := ioctl(fd, ioctlReapURBNDelay, uintptr(unsafe.Pointer(&addr)))
	return addr, err
}
