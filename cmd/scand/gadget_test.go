//go:build linux

package main

// scand with --usb on a real Linux USB host stack: the simulated scanner
// served as a FunctionFS gadget on dummy_hcd inside the usbvm guest
// (go test -exec usbvm-exec -run Gadget ./cmd/scand), opened through
// usbfs. Outside the guest the test skips.

import (
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"golang.org/x/sys/unix"

	"github.com/cancelio/cancelio/internal/usbvm"
)

// loopbackUp brings the guest's loopback interface up (its init leaves it
// down): scand serves HTTP on 127.0.0.1.
func loopbackUp(t *testing.T) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCGIFFLAGS lo: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("SIOCSIFFLAGS lo: %v", err)
	}
}

func TestGadgetScand(t *testing.T) {
	usbvm.RequireGuest(t)
	loopbackUp(t)
	g, err := usbvm.NewGadget(usbvm.GadgetConfig{Name: "scand", SerialNumber: "scand", Product: "usbsim scanner"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	sc := serveGadget(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := g.HostDevice(ctx); err != nil { // enumerated
		t.Fatal(err)
	}
	d := start(t, "--usb", fmt.Sprintf("%04x:%04x", g.Config.VendorID, g.Config.ProductID), "--abort-timeout", "2s")
	root := strings.TrimSuffix(d.url, "/eSCL")

	scan := func(seed int) {
		t.Helper()
		loc := post(t, d.url, "Grayscale8", 75)
		resp, err := http.Get(root + loc + "/NextDocument")
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("decode the page: %v\n%s", err, d.log.String())
		}
		checkGray(t, img, expectedImage(seed, 75, 636, 876, false))
	}
	scan(0)

	// A DELETE mid-scan cancels through CancelPendingIO on usbfs, and the
	// next page is exact.
	sc.SetBandwidth(200_000)
	loc := post(t, d.url, "Grayscale8", 300)
	time.Sleep(time.Second)
	req, _ := http.NewRequest("DELETE", root+loc, nil)
	t0 := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Logf("DELETE answered in %v", time.Since(t0))
	// The DELETE is answered once the driver is idle; the job's report,
	// with its CancelPendingIO, is logged a moment later, when the job's
	// goroutine has settled it. (The test logs the whole log at its end.)
	assert.Eventually(t, func() bool { return strings.Contains(d.log.String(), "cancel_pending_io=") },
		10*time.Second, 10*time.Millisecond, "no canceled job in the log 10 s after the DELETE")
	sc.SetBandwidth(0)
	scan(2)

	// Unplugged, the scanner is down, and scand says so; plugged back in
	// (a new device on the bus, the same serial number), scand's driver
	// opens it again by itself and the next page is exact.
	state := func() string {
		resp, err := http.Get(d.url + "/ScannerStatus")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(string(b), "<pwg:State>")
		st, _, _ := strings.Cut(rest, "<")
		return st
	}
	if err := sc.Unplug(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "State Down after the unplug", func() bool { return state() == "Down" })
	waitUntil(t, "the unplug in scand's log", func() bool { return strings.Contains(d.log.String(), "scanner was unplugged") })
	if err := sc.Replug(); err != nil {
		t.Fatal(err)
	}
	replugged := time.Now()
	for state() != "Idle" {
		if time.Since(replugged) > 30*time.Second {
			t.Fatalf("scand's scanner not Idle 30 s after the replug\n%s", d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("Idle %v after the replug", time.Since(replugged))
	waitUntil(t, "the scanner's return in scand's log", func() bool { return strings.Contains(d.log.String(), "scanner is back") })
	scan(3)
	t.Logf("scand:\n%s", d.log.String())
}
