// Package vmhost is the host side of usbvm: it sets up a guest kernel from
// Debian's packages (Setup), packs a program into an initramfs
// (BuildInitramfs), boots it under QEMU (VM.Run) and turns the result into an
// exit status for go test (Exec).
package vmhost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables read by the runner and by Setup.
const (
	EnvCache       = "CANCELIO_USBVM_CACHE"        // cache root, default $XDG_CACHE_HOME/cancelio/usbvm
	EnvAccel       = "CANCELIO_USBVM_ACCEL"        // tcg or kvm; default from set-up
	EnvMemory      = "CANCELIO_USBVM_MEM"          // guest memory, QEMU syntax; default 512M
	EnvCPUs        = "CANCELIO_USBVM_SMP"          // guest CPUs; default 2
	EnvBootTimeout = "CANCELIO_USBVM_BOOT_TIMEOUT" // boot watchdog, Go duration; default 60s
	EnvConsole     = "CANCELIO_USBVM_CONSOLE"      // "1": always show the guest console
	EnvQEMU        = "CANCELIO_USBVM_QEMU"         // QEMU binary; default qemu-system-x86_64
)

// QEMUPackage is the Debian package that provides QEMUBinary.
const (
	QEMUPackage = "qemu-system-x86"
	QEMUBinary  = "qemu-system-x86_64"
)

// ErrNotSetUp means no guest kernel is cached: run Setup (usbvm-setup).
var ErrNotSetUp = errors.New("usbvm: no guest kernel set up; run `go run ./internal/usbvm/cmd/usbvm-setup` (make usbvm-setup)")

// CacheRoot returns the cache directory: $CANCELIO_USBVM_CACHE, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/cancelio/usbvm.
func CacheRoot() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("usbvm: cache directory: %w", err)
	}
	return filepath.Join(d, "cancelio", "usbvm"), nil
}

// Kernel is a cached guest kernel: one directory per kernel release, named
// after it, described by its manifest file kernel.json.
type Kernel struct {
	Dir     string   `json:"-"`       // the directory
	Package string   `json:"package"` // Debian package, e.g. linux-image-6.1.0-48-amd64
	Version string   `json:"version"` // its version, e.g. 6.1.172-1
	Release string   `json:"release"` // uname -r in the guest
	Image   string   `json:"image"`   // file booted with -kernel: vmlinux (PVH) or vmlinuz
	Modules []string `json:"modules"` // module files, in load order (dependencies first)
	Accel   string   `json:"accel"`   // tcg or kvm, chosen by a boot check
	// BootSeconds is the measured time of the set-up's boot check.
	BootSeconds float64 `json:"boot_seconds"`
}

const (
	manifestName = "kernel.json"
	currentName  = "current" // holds the release set up last
)

// ImagePath returns the path of the kernel image.
func (k *Kernel) ImagePath() string { return filepath.Join(k.Dir, k.Image) }

// ModulePath returns the path of a module file of k.Modules.
func (k *Kernel) ModulePath(name string) string { return filepath.Join(k.Dir, "modules", name) }

// LoadKernel returns the kernel set up last in root, or an error wrapping
// ErrNotSetUp.
func LoadKernel(root string) (*Kernel, error) {
	cur, err := os.ReadFile(filepath.Join(root, currentName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w (nothing in %s)", ErrNotSetUp, root)
		}
		return nil, err
	}
	return loadManifest(filepath.Join(root, strings.TrimSpace(string(cur))))
}

func loadManifest(dir string) (*Kernel, error) {
	data, err := os.ReadFile(filepath.Join(dir, manifestName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w (no %s in %s)", ErrNotSetUp, manifestName, dir)
		}
		return nil, err
	}
	k := &Kernel{Dir: dir}
	if err := json.Unmarshal(data, k); err != nil {
		return nil, fmt.Errorf("usbvm: %s: %w", filepath.Join(dir, manifestName), err)
	}
	files := []string{k.ImagePath()}
	for _, m := range k.Modules {
		files = append(files, k.ModulePath(m))
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w (cache incomplete: %v)", ErrNotSetUp, err)
		}
	}
	return k, nil
}

func (k *Kernel) save() error {
	data, err := json.MarshalIndent(k, "", "\t")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(k.Dir, manifestName), append(data, '\n'), 0o644)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
