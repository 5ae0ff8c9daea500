//go:build linux

package vmhost

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KernelMetaPackage is the Debian package whose dependency names the current
// kernel image package.
const KernelMetaPackage = "linux-image-amd64"

// SetupOptions tunes Setup. The zero value is the normal set-up.
type SetupOptions struct {
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Force downloads and extracts the kernel even if it is cached.
	Force bool
	// Init is the init binary for the boot check; empty means this
	// executable, which must call guestinit.Main when guestinit.IsInit.
	Init string
	// SkipBootCheck skips the boot check (and the KVM probe: accel tcg).
	SkipBootCheck bool
	// BootCheck boots the guest even if a cached kernel passed the check
	// before.
	BootCheck bool
}

// Setup makes sure QEMU is installed and a guest kernel is cached under root:
// it installs QEMUPackage with apt-get if QEMU is missing, downloads (does
// not install) the kernel package KernelMetaPackage depends on, extracts the
// kernel, its config and the USB gadget modules, unpacks the uncompressed
// vmlinux for a fast PVH boot, and boots it once to choose the accelerator.
// A kernel already cached at the current package version is reused.
func Setup(ctx context.Context, root string, opt SetupOptions) (*Kernel, error) {
	logf := func(format string, args ...any) {
		if opt.Log != nil {
			fmt.Fprintf(opt.Log, "usbvm-setup: "+format+"\n", args...)
		}
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	lock, err := lockDir(root)
	if err != nil {
		return nil, err
	}
	defer lock.Close()

	if err := ensureQEMU(ctx, logf); err != nil {
		return nil, err
	}

	pkg, version, err := kernelPackage(ctx)
	if err != nil {
		if k, lerr := LoadKernel(root); lerr == nil {
			logf("%v; using the cached kernel %s", err, k.Release)
			return k, nil
		}
		return nil, err
	}
	release := strings.TrimPrefix(pkg, "linux-image-")
	dir := filepath.Join(root, release)
	k, err := loadManifest(dir)
	fresh := err != nil || k.Version != version || opt.Force
	if !fresh {
		logf("kernel %s (%s %s) is cached in %s (accel %s)", k.Release, pkg, version, dir, k.Accel)
	} else {
		start := time.Now()
		if k, err = fetchKernel(ctx, root, dir, pkg, version, logf); err != nil {
			return nil, err
		}
		logf("kernel %s (%s %s) cached in %s in %.1fs", k.Release, pkg, version, dir, time.Since(start).Seconds())
	}

	switch {
	case opt.SkipBootCheck:
		if k.Accel == "" {
			k.Accel = "tcg"
		}
	case !fresh && k.Accel != "" && !opt.BootCheck:
		// Checked when it was fetched.
	default:
		if err := bootCheck(ctx, k, opt.Init, logf); err != nil {
			return nil, err
		}
	}
	if err := k.save(); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(root, currentName), []byte(k.Release+"\n"), 0o644); err != nil {
		return nil, err
	}
	return k, nil
}

// lockDir takes an exclusive flock on root/.lock, so that concurrent set-ups
// do not download into the same directory.
func lockDir(root string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// toolError says which Debian package provides a missing tool.
func toolError(tool, pkg, why string) error {
	return fmt.Errorf("usbvm: %s not found: %s needs it; install the Debian package %s", tool, why, pkg)
}

// run runs a command and returns its stdout; on failure the error carries
// its stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func ensureQEMU(ctx context.Context, logf func(string, ...any)) error {
	if q := os.Getenv(EnvQEMU); q != "" {
		if _, err := exec.LookPath(q); err != nil {
			return fmt.Errorf("usbvm: %s=%s: %w", EnvQEMU, q, err)
		}
		return nil
	}
	if _, err := exec.LookPath(QEMUBinary); err == nil {
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return toolError(QEMUBinary, QEMUPackage, "the usbvm guest")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("usbvm: %s not found; install it as root: apt-get install --no-install-recommends %s", QEMUBinary, QEMUPackage)
	}
	logf("installing %s", QEMUPackage)
	install := []string{"install", "-y", "--no-install-recommends", QEMUPackage}
	if _, err := run(ctx, "apt-get", install...); err != nil {
		logf("apt-get install failed; running apt-get update and retrying")
		if _, err := run(ctx, "apt-get", "update"); err != nil {
			return err
		}
		if _, err := run(ctx, "apt-get", install...); err != nil {
			return err
		}
	}
	if _, err := exec.LookPath(QEMUBinary); err != nil {
		return fmt.Errorf("usbvm: %s still missing after installing %s", QEMUBinary, QEMUPackage)
	}
	return nil
}

// kernelPackage returns the kernel image package linux-image-amd64 depends
// on, and its candidate version.
func kernelPackage(ctx context.Context) (pkg, version string, err error) {
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", "", fmt.Errorf("usbvm: apt-cache not found: the guest kernel comes from Debian's %s package (a Debian or Ubuntu host with apt is needed)", KernelMetaPackage)
	}
	out, err := run(ctx, "apt-cache", "depends", KernelMetaPackage)
	if err != nil {
		return "", "", err
	}
	re := regexp.MustCompile(`(?m)^\s*Depends:\s*(linux-image-[^\s<>]+)`)
	m := re.FindSubmatch(out)
	if m == nil {
		return "", "", fmt.Errorf("usbvm: apt-cache depends %s names no linux-image package (run apt-get update?):\n%s", KernelMetaPackage, out)
	}
	pkg = string(m[1])
	out, err = run(ctx, "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", "", err
	}
	vm := regexp.MustCompile(`(?m)^Version:\s*(\S+)`).FindSubmatch(out)
	if vm == nil {
		return "", "", fmt.Errorf("usbvm: apt-cache show %s: no version", pkg)
	}
	return pkg, string(vm[1]), nil
}

// download fetches pkg's .deb into dir with apt-get download, updating the
// package lists once if the mirror no longer has it.
func download(ctx context.Context, dir, pkg string, logf func(string, ...any)) (string, error) {
	get := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, bytes.TrimSpace(out))
		}
		return nil
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", toolError("apt-get", "apt", "downloading "+pkg)
	}
	err := get()
	if err != nil && os.Geteuid() == 0 {
		logf("%v; running apt-get update and retrying", err)
		if _, uerr := run(ctx, "apt-get", "update"); uerr != nil {
			return "", uerr
		}
		err = get()
	}
	if err != nil {
		return "", err
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
	}
	return debs[0], nil
}

var koPath = regexp.MustCompile(`(^|/)lib/modules/([^/]+)/kernel/(.+)\.ko(\.xz|\.zst)?$`)

// fetchKernel downloads pkg and fills dir with the kernel image, its config
// and the modules.
func fetchKernel(ctx context.Context, root, dir, pkg, version string, logf func(string, ...any)) (*Kernel, error) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		return nil, toolError("dpkg-deb", "dpkg", "unpacking "+pkg)
	}
	tmp, err := os.MkdirTemp(root, ".download-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// apt-get download drops privileges to _apt where it can write.
	_ = os.Chmod(tmp, 0o777)
	logf("downloading %s %s", pkg, version)
	deb, err := download(ctx, tmp, pkg, logf)
	if err != nil {
		return nil, err
	}

	logf("extracting %s", filepath.Base(deb))
	release := strings.TrimPrefix(pkg, "linux-image-")
	var vmlinuz, config []byte
	avail := map[string][]byte{}  // normalized name -> module contents
	fileOf := map[string]string{} // normalized name -> file name with extension
	builtin := map[string]bool{}  // normalized names
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	tr := tar.NewReader(bufio.NewReaderSize(pipe, 1<<20))
	var terr error
	for {
		h, err := tr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				terr = err
			}
			break
		}
		name := strings.TrimPrefix(h.Name, "./")
		base := path.Base(name)
		switch {
		case h.Typeflag != tar.TypeReg:
		case base == "vmlinuz-"+release:
			vmlinuz, terr = io.ReadAll(tr)
		case base == "config-"+release:
			config, terr = io.ReadAll(tr)
		case base == "modules.builtin" && strings.Contains(name, "/"+release+"/"):
			var data []byte
			data, terr = io.ReadAll(tr)
			for _, l := range strings.Fields(string(data)) {
				builtin[modName(strings.TrimSuffix(path.Base(l), ".ko"))] = true
			}
		default:
			m := koPath.FindStringSubmatch(name)
			if m == nil || m[2] != release {
				break
			}
			sub := m[3]
			if !strings.HasPrefix(sub, "drivers/usb/") && !strings.HasPrefix(sub, "fs/configfs/") {
				break
			}
			var data []byte
			if data, terr = io.ReadAll(tr); terr == nil {
				n := modName(path.Base(sub))
				avail[n], fileOf[n] = data, base
			}
		}
		if terr != nil {
			break
		}
	}
	_, _ = io.Copy(io.Discard, pipe)
	if err := cmd.Wait(); err != nil && terr == nil {
		terr = fmt.Errorf("dpkg-deb --fsys-tarfile: %w: %s", err, stderr.String())
	}
	if terr != nil {
		return nil, fmt.Errorf("usbvm: unpack %s: %w", filepath.Base(deb), terr)
	}
	if vmlinuz == nil || config == nil {
		return nil, fmt.Errorf("usbvm: %s holds no /boot/vmlinuz-%s or /boot/config-%s", pkg, release, release)
	}
	if !bytes.Contains(config, []byte("\nCONFIG_USB_CONFIGFS_F_FS=y")) {
		return nil, fmt.Errorf("usbvm: kernel %s lacks CONFIG_USB_CONFIGFS_F_FS=y (FunctionFS gadgets)", release)
	}

	// Decompress modules that need it, then order them.
	for n, data := range avail {
		f := fileOf[n]
		var tool string
		switch {
		case strings.HasSuffix(f, ".xz"):
			tool = "xz"
		case strings.HasSuffix(f, ".zst"):
			tool = "zstd"
		default:
			continue
		}
		// Only the modules we load: the others stay compressed and unused.
		if !isWanted(n) {
			continue
		}
		out, err := decompress(ctx, tool, data)
		if err != nil {
			return nil, fmt.Errorf("usbvm: module %s: %w", f, err)
		}
		avail[n], fileOf[n] = out, strings.TrimSuffix(strings.TrimSuffix(f, ".xz"), ".zst")
	}
	order, err := loadOrder(wantModules, avail, builtin)
	if err != nil {
		return nil, fmt.Errorf("usbvm: kernel %s: %w", release, err)
	}

	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return nil, err
	}
	k := &Kernel{Dir: dir, Package: pkg, Version: version, Release: release}
	for _, n := range order {
		f := fileOf[n]
		if err := os.WriteFile(k.ModulePath(f), avail[n], 0o644); err != nil {
			return nil, err
		}
		k.Modules = append(k.Modules, f)
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), config, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), vmlinuz, 0o644); err != nil {
		return nil, err
	}
	k.Image = "vmlinuz"
	vmlinux, err := extractVmlinux(ctx, vmlinuz)
	switch {
	case err != nil:
		logf("booting the compressed vmlinuz (about 2.5 s slower): %v", err)
	case !bytes.Contains(config, []byte("\nCONFIG_PVH=y")) || !hasPVHNote(vmlinux):
		logf("booting the compressed vmlinuz: the kernel has no PVH entry point")
	default:
		if err := os.WriteFile(filepath.Join(dir, "vmlinux"), vmlinux, 0o644); err != nil {
			return nil, err
		}
		k.Image = "vmlinux"
	}
	logf("modules: %s; image: %s", strings.Join(k.Modules, " "), k.Image)
	return k, nil
}

func isWanted(n string) bool {
	switch n {
	case "usb_common", "usbcore", "udc_core", "dummy_hcd", "configfs", "libcomposite", "usb_f_fs":
		return true
	}
	return false
}

func decompress(ctx context.Context, tool string, data []byte) ([]byte, error) {
	pkg := map[string]string{"xz": "xz-utils", "zstd": "zstd", "gzip": "gzip"}[tool]
	if _, err := exec.LookPath(tool); err != nil {
		return nil, toolError(tool, pkg, "decompressing the kernel")
	}
	args := []string{"-dc"}
	if tool == "xz" {
		// The bzImage payload ends with 4 bytes of size after the stream.
		args = append(args, "--single-stream")
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil && out.Len() == 0 {
		return nil, fmt.Errorf("%s -dc: %w: %s", tool, err, stderr.String())
	}
	return out.Bytes(), nil
}

// extractVmlinux returns the uncompressed ELF kernel inside a bzImage.
func extractVmlinux(ctx context.Context, bz []byte) ([]byte, error) {
	payload, tool, err := bzPayload(bz)
	if err != nil {
		return nil, err
	}
	out, err := decompress(ctx, tool, payload)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(out, []byte("\x7fELF")) {
		return nil, errors.New("the bzImage payload is not an ELF kernel")
	}
	return out, nil
}

// cpuHasVirt reports whether /proc/cpuinfo shows hardware virtualization.
func cpuHasVirt() bool {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "flags") {
			for _, f := range strings.Fields(l) {
				if f == "vmx" || f == "svm" {
					return true
				}
			}
		}
	}
	return false
}

// bootCheck boots the guest without a program (the init loads the modules
// and reports), under KVM where the CPU offers it and it works, else TCG,
// and records the choice in k.
func bootCheck(ctx context.Context, k *Kernel, init string, logf func(string, ...any)) error {
	if init == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		init = exe
	}
	accels := []string{"tcg"}
	if cpuHasVirt() && unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) == nil {
		accels = []string{"kvm", "tcg"}
	}
	var lastErr error
	for _, accel := range accels {
		res, err := bootOnce(ctx, k, init, accel)
		if err == nil && res.Reported && res.Status == 0 {
			k.Accel, k.BootSeconds = accel, res.Elapsed.Seconds()
			logf("boot check (%s): kernel %s, modules loaded, %.1fs", accel, k.Release, k.BootSeconds)
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s\n%s", res.Summary(), res.Console)
		}
		lastErr = fmt.Errorf("usbvm: boot check with %s failed: %w", accel, err)
		logf("%v", lastErr)
	}
	return lastErr
}

func bootOnce(ctx context.Context, k *Kernel, init, accel string) (*Result, error) {
	f, err := os.CreateTemp("", "usbvm-initramfs-*.cpio")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	err = BuildInitramfs(f, &Spec{Init: init, Kernel: k})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	boot := DefaultBootTimeout
	if accel == "kvm" {
		boot = 20 * time.Second // a KVM that cannot run the guest hangs it
	}
	vm := &VM{Kernel: k, Initramfs: f.Name(), Accel: accel, BootTimeout: boot, RunTimeout: time.Minute, Stdout: io.Discard}
	return vm.Run(ctx)
}
