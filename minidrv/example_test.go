package minidrv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// A WIA session against the simulated scanner: lock, set the scan window,
// acquire and cancel halfway from the progress callback (as an application
// returning S_FALSE does), then acquire again: the second image is exact,
// with no stale byte of the canceled one.
func Example() {
	ring, err := ioring.New(ioring.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ring.Close()
	scanner, err := usbsim.NewScanner(usbsim.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer scanner.Close()

	d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, scanner)})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	if err := d.Initialize(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer d.Uninitialize()
	root, _ := d.Items()
	flatbed := root.Find("Flatbed")

	// WIA's order: Lock, WriteItemProperties, AcquireItemData, Unlock.
	if err := d.Lock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer d.Unlock()
	err = d.WriteItemProperties(flatbed,
		minidrv.PropValue{ID: minidrv.PropXExtent, Value: 300},
		minidrv.PropValue{ID: minidrv.PropYExtent, Value: 200},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("chunk:", minidrv.ChunkSize(d.Properties()), "bytes")

	var first bytes.Buffer
	err = d.AcquireItemData(ctx, flatbed, &first, func(p minidrv.Progress) bool {
		return p.Percent < 50 // stop halfway
	})
	fmt.Printf("first: canceled=%v hresult=%#x, %d of %d bytes, %v\n",
		errors.Is(err, minidrv.ErrCanceled), minidrv.HResult(err),
		first.Len(), d.Properties().ImageSize(), d.State())

	var second bytes.Buffer
	err = d.AcquireItemData(ctx, flatbed, &second, nil)
	exact := bytes.Equal(second.Bytes(), usbsim.ExpectedImage(scanner.LastScan()))
	fmt.Printf("second: err=%v, %d bytes, exact=%v, %v\n", err, second.Len(), exact, d.State())

	// Output:
	// chunk: 6144 bytes
	// first: canceled=true hresult=0x1, 30720 of 60000 bytes, Locked
	// second: err=<nil>, 60000 bytes, exact=true, Locked
}
