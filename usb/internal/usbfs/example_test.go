//go:build linux && (amd64 || arm64 || riscv64 || loong64)

package usbfs_test

import (
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/usb/internal/usbfs"
)

// Read from a scanner's bulk IN endpoint through a ring, and cancel every
// pending transfer at once with a token (WIA's CancelPendingIO).
func Example() {
	r, err := ioring.New(ioring.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	d, err := usbfs.OpenVIDPID(0x1209, 0x0001, usbfs.Config{Ring: r})
	if errors.Is(err, usbfs.ErrNoUSB) {
		fmt.Println("no USB here")
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	if err := d.Claim(0, true); err != nil {
		log.Fatal(err)
	}
	in, err := d.Endpoint(0x81)
	if err != nil {
		log.Fatal(err)
	}
	tok := r.NewToken()
	for i := 0; i < 4; i++ {
		if _, err := in.Submit(make([]byte, 64<<10), usbfs.TransferOptions{Token: tok, Deadline: 5 * time.Second, User: i}); err != nil {
			log.Fatal(err)
		}
	}
	go func() { time.Sleep(time.Second); tok.Cancel() }()
	cs := make([]ioring.Completion, 4)
	for done := 0; done < 4; {
		n, err := r.Reap(cs, -1)
		if err != nil {
			log.Fatal(err)
		}
		for _, c := range cs[:n] {
			switch {
			case errors.Is(c.Err, ioring.ErrCanceled):
				fmt.Printf("transfer %d canceled after %d bytes\n", c.User, c.N)
			case errors.Is(c.Err, usbfs.ErrStall):
				in.ClearHalt()
			case c.Err != nil:
				fmt.Printf("transfer %d: %v\n", c.User, c.Err)
			default:
				fmt.Printf("transfer %d: %d bytes\n", c.User, c.N)
			}
		}
		done += n
	}
}
