package vmhost

import (
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cancelio/cancelio/internal/usbvm/internal/cpio"
	"github.com/cancelio/cancelio/internal/usbvm/internal/proto"
)

// Spec is what goes into a guest's initramfs.
type Spec struct {
	Init   string  // host path of the init binary (a usbvm main)
	Kernel *Kernel // modules come from here

	// Program is the host path of the program to run; empty for a boot
	// check that only loads the modules.
	Program string
	Args    []string // arguments after argv[0]
	Env     []string // the program's environment (see GuestEnviron)
	Dir     string   // working directory in the guest
	// Testdata, if set, is a host directory copied to Dir/testdata.
	Testdata string
	// MkdirAll lists guest directories to create before the program runs.
	MkdirAll []string
}

// BuildInitramfs writes an uncompressed newc initramfs for spec to w: the
// init, the program, the shared libraries either needs, the modules, the
// config the init reads, and the test data.
func BuildInitramfs(w io.Writer, spec *Spec) error {
	cw := cpio.NewWriter(w)
	for _, d := range []string{"/dev", "/proc", "/sys", "/root"} {
		if err := cw.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := cw.Dir("/tmp", 0o777); err != nil {
		return err
	}
	if err := addELF(cw, proto.InitPath, spec.Init); err != nil {
		return fmt.Errorf("usbvm: init: %w", err)
	}
	cfg := proto.Config{Env: spec.Env, Dir: spec.Dir, MkdirAll: spec.MkdirAll}
	for _, m := range spec.Kernel.Modules {
		if err := addFile(cw, path.Join(proto.ModulesDir, m), spec.Kernel.ModulePath(m), 0o644); err != nil {
			return err
		}
		cfg.Modules = append(cfg.Modules, m)
	}
	if spec.Program != "" {
		cfg.Program = path.Join(proto.BinDir, filepath.Base(spec.Program))
		cfg.Args = append([]string{cfg.Program}, spec.Args...)
		if err := addELF(cw, cfg.Program, spec.Program); err != nil {
			return fmt.Errorf("usbvm: %w", err)
		}
	}
	if spec.Testdata != "" {
		if err := addTree(cw, path.Join(spec.Dir, "testdata"), spec.Testdata); err != nil {
			return fmt.Errorf("usbvm: testdata: %w", err)
		}
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	if err := cw.Bytes(proto.ConfigPath, 0o644, data); err != nil {
		return err
	}
	return cw.Close()
}

func addFile(cw *cpio.Writer, name, src string, perm fs.FileMode) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if perm == 0 {
		perm = st.Mode().Perm()
	}
	return cw.File(name, perm, st.Size(), f)
}

// addELF adds an executable and, if it is dynamically linked, the shared
// libraries ldd lists, at their host paths (the dynamic linker's path is
// compiled into the executable).
func addELF(cw *cpio.Writer, name, src string) error {
	if err := addFile(cw, name, src, 0o755); err != nil {
		return err
	}
	libs, err := SharedLibs(src)
	if err != nil {
		return err
	}
	for _, l := range libs {
		if cw.Has(l) {
			continue
		}
		if err := addFile(cw, l, l, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// SharedLibs returns the shared libraries (the dynamic linker included) that
// an executable loads, by ldd, or nothing for a static executable.
func SharedLibs(exe string) ([]string, error) {
	f, err := elf.Open(exe)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", exe, err)
	}
	dynamic := false
	for _, p := range f.Progs {
		dynamic = dynamic || p.Type == elf.PT_INTERP
	}
	f.Close()
	if !dynamic {
		return nil, nil
	}
	if _, err := exec.LookPath("ldd"); err != nil {
		return nil, fmt.Errorf("%s is dynamically linked and ldd is missing (Debian package libc-bin)", exe)
	}
	out, err := exec.Command("ldd", exe).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", exe, err)
	}
	return parseLDD(string(out))
}

// parseLDD reads ldd's output: "name => /path (addr)", "/path (addr)",
// "linux-vdso.so.1 (addr)" or "name => not found".
func parseLDD(out string) ([]string, error) {
	var libs []string
	var missing []string
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if name, target, ok := strings.Cut(l, "=>"); ok {
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "not found") {
				missing = append(missing, strings.TrimSpace(name))
				continue
			}
			l = target
		}
		if p := strings.Fields(l); len(p) > 0 && strings.HasPrefix(p[0], "/") {
			libs = append(libs, p[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("shared libraries not found: %s", strings.Join(missing, ", "))
	}
	sort.Strings(libs)
	return libs, nil
}

// addTree copies a host directory tree to name, following symbolic links to
// files.
func addTree(cw *cpio.Writer, name, src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		dst := path.Join(name, filepath.ToSlash(rel))
		if d.IsDir() {
			return cw.Dir(dst, 0o755)
		}
		st, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // dangling link
			}
			return err
		}
		if !st.Mode().IsRegular() {
			return nil
		}
		return addFile(cw, dst, p, 0)
	})
}

// passEnv lists variables passed to the guest program besides CANCELIO_*.
var passEnv = map[string]bool{
	"GOTRACEBACK": true, "GODEBUG": true, "GOGC": true, "GOMEMLIMIT": true,
	"GOMAXPROCS": true, "GORACE": true, "GOFIPS140": true,
}

// GuestEnviron returns the guest program's environment: the host's CANCELIO_*
// and Go runtime variables from host, plus a minimal PATH, HOME and TMPDIR,
// PWD and proto.GuestEnv.
func GuestEnviron(host []string, dir string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"HOME=/root",
		"TMPDIR=/tmp",
		"PWD=" + dir,
	}
	for _, kv := range host {
		k, _, _ := strings.Cut(kv, "=")
		if k == proto.GuestEnv {
			continue
		}
		if strings.HasPrefix(k, "CANCELIO_") || passEnv[k] {
			env = append(env, kv)
		}
	}
	return append(env, proto.GuestEnv+"=1")
}
