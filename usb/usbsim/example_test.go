//go:build linux

package usbsim_test

import (
	"bytes"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/usb/usbsim"
)

// Example scans a small image over the endpoints' fds with plain blocking
// syscalls, the way an engine does them asynchronously, and checks it byte
// for byte.
func Example() {
	s, err := usbsim.NewScanner(usbsim.Config{})
	if err != nil {
		panic(err)
	}
	defer s.Close()
	eps, err := s.Endpoints()
	if err != nil {
		panic(err)
	}
	out, in := eps[0], eps[1]

	// Bulk OUT: one message (header, payload), then the device's reply.
	p := usbsim.ScanParams{DPI: 300, Width: 640, Height: 100, Format: usbsim.FormatRGB24, Seed: 42}
	cmd := usbsim.StartScanCommand(p)
	n, err := unix.Writev(out.FD, [][]byte{{usbsim.HeaderData}, cmd})
	if err := usbsim.DecodeWrite(n, 1+len(cmd), err); err != nil {
		panic(err)
	}
	reply := make([]byte, usbsim.ReplySize)
	n, err = unix.Read(out.FD, reply)
	seq, err := usbsim.DecodeReply(reply, n, err)
	fmt.Println("start scan acknowledged:", seq, err)

	// Bulk IN: readv into [header, buffer of MaxTransfer] until the image is in.
	var img []byte
	hdr := make([]byte, 1)
	buf := make([]byte, in.MaxTransfer)
	for int64(len(img)) < p.ImageSize() {
		n, err := unix.Readv(in.FD, [][]byte{hdr, buf})
		m, err := usbsim.DecodeIn(hdr[0], n, err)
		if err != nil {
			panic(err)
		}
		img = append(img, buf[:m]...)
	}
	fmt.Println("bytes:", len(img), "exact:", bytes.Equal(img, usbsim.ExpectedImage(p)))

	// Unplugged, the same fds fail with ErrNoDevice.
	if err := s.Unplug(); err != nil {
		panic(err)
	}
	n, err = unix.Readv(in.FD, [][]byte{hdr, buf})
	_, err = usbsim.DecodeIn(hdr[0], n, err)
	fmt.Println(err)
	// Output:
	// start scan acknowledged: 1 <nil>
	// bytes: 192000 exact: true
	// usb: no device
}
