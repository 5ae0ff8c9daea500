//go:build linux

package usbsim_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv3ChildEnv, when set, makes TestAdv3ExpectedImageHuge run its child
// part: the call that may bring the process down.
const adv3ChildEnv = "CANCELIO_ADV3_CHILD"

// TestAdv3ExpectedImageHuge: ExpectedImage of valid parameters at the
// protocol's limits (MaxPixels x MaxPixels, 48 bits per pixel: a 6 TiB
// image, which 24 bytes of CmdStartScan ask for and LastScan reports)
// must not take the process down. It tries to allocate the whole image
// at once: the runtime's "out of memory" is fatal (not a panic a caller
// could recover), and on 32-bit builds make panics with "len out of
// range". Expected: nil (or an error) for an image too large to hold;
// its doc promises nil for invalid parameters only. The call runs in a
// child process, and only where the kernel refuses so large a mapping
// (not with overcommit_memory 1), so that no machine starts writing
// terabytes.
func TestAdv3ExpectedImageHuge(t *testing.T) {
	p := usbsim.ScanParams{DPI: 300, Width: usbsim.MaxPixels, Height: usbsim.MaxPixels, Format: usbsim.FormatRGB48}
	if os.Getenv(adv3ChildEnv) == "1" {
		img := usbsim.ExpectedImage(p)
		fmt.Printf("ADV3 returned %d bytes\n", len(img))
		return
	}
	if testing.Short() {
		t.Skip("runs a child process")
	}
	// With overcommit_memory 0 (heuristic) or 2 (strict) the kernel
	// refuses a mapping of terabytes at once; with 1 it would grant it and
	// the child would start writing them.
	if b, err := os.ReadFile("/proc/sys/vm/overcommit_memory"); err != nil || strings.TrimSpace(string(b)) == "1" {
		t.Skipf("overcommit_memory %q (%v): the child could really allocate terabytes", b, err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("the parameters are meant to be valid: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAdv3ExpectedImageHuge$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), adv3ChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	first, _, _ := strings.Cut(string(out), "goroutine ")
	if err != nil || !strings.Contains(string(out), "ADV3 returned 0 bytes") {
		t.Errorf("ExpectedImage(%dx%d %v, %d bytes) in a child: %v\n%s", p.Width, p.Height, p.Format, p.ImageSize(), err, first)
	}
}
