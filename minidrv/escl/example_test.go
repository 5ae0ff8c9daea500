package escl_test

import (
	"context"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/cancelio/cancelio/minidrv/escl"
)

// Serve a driver over eSCL and run one job as a client does: POST the scan
// settings, fetch the page, find no second page, DELETE the job (clients
// send one after every scan; it changes nothing once the job is over).
// A DELETE while the page is being scanned would cancel it through the
// driver's CancelPendingIO.
func Example() {
	// An initialized minidrv.Driver; here the simulated scanner's.
	d, done, err := exampleDriver()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer done()

	h, err := escl.NewHandler(escl.Config{Driver: d, MakeAndModel: "Example scanner"})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(h) // or http.ListenAndServe(addr, h)
	defer srv.Close()
	defer h.Shutdown(context.Background())

	// 1 x 2/3 inch at 150 dpi, gray, PNG.
	settings := `<?xml version="1.0" encoding="UTF-8"?>
<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm">
  <pwg:ScanRegions><pwg:ScanRegion>
    <pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits>
    <pwg:XOffset>0</pwg:XOffset><pwg:YOffset>0</pwg:YOffset>
    <pwg:Width>300</pwg:Width><pwg:Height>200</pwg:Height>
  </pwg:ScanRegion></pwg:ScanRegions>
  <pwg:InputSource>Platen</pwg:InputSource>
  <scan:ColorMode>Grayscale8</scan:ColorMode>
  <scan:DocumentFormatExt>image/png</scan:DocumentFormatExt>
  <scan:XResolution>150</scan:XResolution>
  <scan:YResolution>150</scan:YResolution>
</scan:ScanSettings>`
	resp, err := http.Post(srv.URL+"/eSCL/ScanJobs", "text/xml", strings.NewReader(settings))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	job := srv.URL + resp.Header.Get("Location")
	fmt.Println("POST ScanJobs:", resp.Status)

	resp, err = http.Get(job + "/NextDocument")
	if err != nil {
		fmt.Println(err)
		return
	}
	img, err := png.Decode(resp.Body)
	resp.Body.Close()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("NextDocument:", resp.Status, resp.Header.Get("Content-Type"), img.Bounds().Size())

	resp, _ = http.Get(job + "/NextDocument")
	resp.Body.Close()
	fmt.Println("NextDocument:", resp.Status)

	req, _ := http.NewRequest("DELETE", job, nil)
	resp, _ = http.DefaultClient.Do(req)
	resp.Body.Close()
	fmt.Println("DELETE:", resp.Status, d.State())

	// Output:
	// POST ScanJobs: 201 Created
	// NextDocument: 200 OK image/png (150,100)
	// NextDocument: 404 Not Found
	// DELETE: 200 OK Idle
}
