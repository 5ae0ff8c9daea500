package usb_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// Example scans an image from the simulated scanner with transfers queued
// on bulk IN and reaped from the ring, then cancels a read the hung device
// never answers.
func Example() {
	ring, err := ioring.New(ioring.Config{})
	if err != nil {
		panic(err)
	}
	defer ring.Close()
	scanner, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 16 << 10})
	if err != nil {
		panic(err)
	}
	defer scanner.Close()
	dev, err := usbsim.Open(ring, scanner)
	if err != nil {
		panic(err)
	}
	defer dev.Close() // before the scanner and the ring
	out, _ := dev.Endpoint(usbsim.AddrBulkOut)
	in, _ := dev.Endpoint(usbsim.AddrBulkIn)

	p := usbsim.ScanParams{DPI: 300, Width: 640, Height: 100, Format: usbsim.FormatRGB24, Seed: 42}
	if _, err := out.Transfer(context.Background(), usbsim.StartScanCommand(p)); err != nil {
		panic(err)
	}

	// Keep four bulk IN transfers in flight; they complete in order.
	bufs := make([][]byte, 4)
	pending := 0
	for i := range bufs {
		bufs[i] = make([]byte, in.Desc().MaxTransfer)
		if _, err := in.Submit(bufs[i], usb.Xfer{User: i}); err != nil {
			panic(err)
		}
		pending++
	}
	var img []byte
	cs := make([]ioring.Completion, 4)
	for int64(len(img)) < p.ImageSize() {
		n, err := ring.Reap(cs, -1)
		if err != nil {
			panic(err)
		}
		for _, c := range cs[:n] {
			pending--
			if c.Err != nil {
				panic(c.Err)
			}
			i := c.User.(int)
			img = append(img, bufs[i][:c.N]...)
			if int64(len(img)) < p.ImageSize() {
				if _, err := in.Submit(bufs[i], usb.Xfer{User: i}); err != nil {
					panic(err)
				}
				pending++
			}
		}
	}
	// The transfers still pending wait for data that will not come.
	if err := dev.CancelAll(); err != nil {
		panic(err)
	}
	for ; pending > 0; pending-- {
		if _, err := ring.Reap(cs[:1], -1); err != nil {
			panic(err)
		}
	}
	fmt.Println("image:", len(img), "bytes, exact:", bytes.Equal(img, usbsim.ExpectedImage(p)))

	// A hung device: the read's deadline cancels it.
	scanner.Hang()
	_, err = in.Submit(bufs[0], usb.Xfer{Deadline: 10 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	if _, err := ring.Reap(cs[:1], -1); err != nil {
		panic(err)
	}
	fmt.Println("hung read:", cs[0].Err)
	// Output:
	// image: 192000 bytes, exact: true
	// hung read: ioring: deadline exceeded
}
