package escl_test

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/escl"
)

// The device name sane-airscan gives the one manual device of saneConfig.
const (
	saneDeviceName = "Go scanner"
	saneDevice     = "airscan:e0:" + saneDeviceName
)

// scanimage returns the path of scanimage, or skips the test where it or
// sane-airscan's backend is missing (make test installs both: the Debian
// packages sane-utils and sane-airscan).
func scanimage(tb testing.TB) string {
	tb.Helper()
	path, err := exec.LookPath("scanimage")
	if err != nil {
		tb.Skip("scanimage not found (Debian: apt-get install sane-utils sane-airscan)")
	}
	for _, dir := range []string{"/usr/lib/*/sane", "/usr/lib/sane", "/usr/lib64/sane", "/usr/local/lib/sane"} {
		if m, _ := filepath.Glob(filepath.Join(dir, "libsane-airscan.so*")); len(m) > 0 {
			return path
		}
	}
	tb.Skip("the sane-airscan backend is not installed (Debian: apt-get install sane-airscan)")
	return ""
}

// saneConfig writes a SANE configuration that loads only the airscan
// backend, with the rig's server as its one device and discovery off, and
// returns the environment that selects it. SANE_CONFIG_DIR has no
// trailing colon: libsane then reads no other directory.
func saneConfig(tb testing.TB, r *rig) []string {
	tb.Helper()
	dir := tb.TempDir()
	conf := fmt.Sprintf("[devices]\n%q = %s\n\n[options]\ndiscovery = disable\nws-discovery = off\n", saneDeviceName, r.base)
	if err := os.WriteFile(filepath.Join(dir, "dll.conf"), []byte("airscan\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "airscan.conf"), []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	return append(os.Environ(), "SANE_CONFIG_DIR="+dir)
}

// scanCmd returns a scanimage command for one page into out.
func scanCmd(bin string, env []string, out, mode string, dpi int, extra ...string) *exec.Cmd {
	args := append([]string{"-d", saneDevice, "--mode", mode, "--resolution", fmt.Sprint(dpi), "--format=png", "-o", out}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return cmd
}

func TestScanimageList(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	cmd := exec.Command(bin, "-L")
	cmd.Env = saneConfig(t, r)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scanimage -L: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "`"+saneDevice+"'") {
		t.Errorf("scanimage -L does not list %q:\n%s", saneDevice, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

func TestScanimageScan(t *testing.T) {
	bin := scanimage(t)
	r := newRig(t, nil)
	env := saneConfig(t, r)
	dir := t.TempDir()
	for _, tc := range []struct {
		mode  string // scanimage's
		escl  string
		dpi   int
		extra []string
	}{
		{"Gray", "Grayscale8", 75, nil},
		// Regions in whole inches (mm multiples of 25.4), so that
		// scanimage's arithmetic in mm and the server's in 1/300 inch
		// agree to the pixel.
		{"Gray", "Grayscale8", 300, []string{"-l", "25.4", "-t", "50.8", "-x", "76.2", "-y", "50.8"}},
		{"Color", "RGB24", 75, nil},
		{"Color", "RGB24", 150, []string{"-l", "50.8", "-x", "101.6", "-y", "127"}},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.mode, tc.dpi), func(t *testing.T) {
			out := filepath.Join(dir, fmt.Sprintf("%s-%d.png", tc.mode, tc.dpi))
			cmd := scanCmd(bin, env, out, tc.mode, tc.dpi, tc.extra...)
			t0 := time.Now()
			msg, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("scanimage: %v\n%s", err, msg)
			}
			took := time.Since(t0)
			rep := r.report(t)
			if rep.Outcome != escl.OutcomeDelivered {
				t.Fatalf("job %v (%v), want delivered", rep.Outcome, rep.Err)
			}
			if rep.Settings.ColorMode != tc.escl || rep.Settings.XResolution != tc.dpi || rep.Settings.Format != escl.MIMEPNG {
				t.Errorf("job settings %+v, want %s at %d dpi, PNG", rep.Settings, tc.escl, tc.dpi)
			}
			f, err := os.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			img, err := png.Decode(f)
			if err != nil {
				t.Fatalf("decode scanimage's PNG: %v", err)
			}
			checkImage(t, r.dev, img, tc.escl)
			t.Logf("%dx%d px in %v (scanimage run), scan %v", img.Bounds().Dx(), img.Bounds().Dy(),
				took.Round(time.Millisecond), rep.ScanEnd.Sub(rep.ScanStart).Round(time.Millisecond))
		})
	}
	waitIdle(t, r)
}

// waitIdle checks that the driver ends idle.
func waitIdle(t *testing.T, r *rig) {
	t.Helper()
	r.waitState(t, minidrv.Idle)
}

var _ = context.Background
var _ = syscall.SIGINT
