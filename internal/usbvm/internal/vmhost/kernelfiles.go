package vmhost

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// wantModules are the modules the guest needs; their dependencies (usbcore,
// udc-core, usb-common, configfs) follow from their .modinfo.
var wantModules = []string{"dummy_hcd", "libcomposite", "usb_f_fs"}

// modName normalizes a module name: the kernel treats '-' and '_' alike.
func modName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// modDepends returns the "depends=" list of a module's .modinfo section.
func modDepends(ko []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, errors.New("no .modinfo section")
	}
	data, err := s.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// loadOrder returns the modules needed for want, dependencies first. avail
// maps normalized names to their .ko contents; builtin holds the normalized
// names of modules built into the kernel. A wanted or needed module that is
// neither available nor built in is an error.
func loadOrder(want []string, avail map[string][]byte, builtin map[string]bool) ([]string, error) {
	var order []string
	state := map[string]int{} // 1: visiting, 2: done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = modName(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		ko, ok := avail[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) is not in the kernel package", name, from)
			}
			return fmt.Errorf("module %s is neither in the kernel package nor built in", name)
		}
		state[name] = 1
		deps, err := modDepends(ko)
		if err != nil {
			return fmt.Errorf("module %s: %w", name, err)
		}
		sort.Strings(deps)
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, w := range want {
		if err := visit(w, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Compressed-data magics of the bzImage payload.
var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0}
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// bzPayload returns the compressed kernel inside a bzImage and the name of
// its compression ("xz", "gzip", "zstd"), from the boot protocol's setup
// header (Documentation/arch/x86/boot.rst: setup_sects at 0x1f1,
// payload_offset at 0x248, payload_length at 0x24c).
func bzPayload(bz []byte) ([]byte, string, error) {
	if len(bz) < 0x250 || string(bz[0x202:0x206]) != "HdrS" {
		return nil, "", errors.New("not a bzImage (no HdrS setup header)")
	}
	if v := binary.LittleEndian.Uint16(bz[0x206:]); v < 0x208 {
		return nil, "", fmt.Errorf("boot protocol %#x has no payload fields", v)
	}
	setupSects := int(bz[0x1f1])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	if off < 0 || n <= 0 || off+n > len(bz) {
		return nil, "", fmt.Errorf("payload %d+%d outside the %d-byte image", off, n, len(bz))
	}
	p := bz[off : off+n]
	switch {
	case bytes.HasPrefix(p, magicXZ):
		return p, "xz", nil
	case bytes.HasPrefix(p, magicGzip):
		return p, "gzip", nil
	case bytes.HasPrefix(p, magicZstd):
		return p, "zstd", nil
	}
	return nil, "", fmt.Errorf("unknown payload compression % x", p[:min(6, len(p))])
}

// hasPVHNote reports whether an ELF kernel carries the Xen PVH entry note
// (XEN_ELFNOTE_PHYS32_ENTRY, type 18), which QEMU's -kernel needs to boot an
// uncompressed vmlinux.
func hasPVHNote(vmlinux []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			continue
		}
		for len(data) >= 12 {
			nameSz := int(binary.LittleEndian.Uint32(data))
			descSz := int(binary.LittleEndian.Uint32(data[4:]))
			typ := binary.LittleEndian.Uint32(data[8:])
			nameEnd := 12 + (nameSz+3)&^3
			end := nameEnd + (descSz+3)&^3
			if end > len(data) || nameSz > len(data) {
				break
			}
			if typ == 18 && nameSz >= 3 && string(data[12:15]) == "Xen" {
				return true
			}
			data = data[end:]
		}
	}
	return false
}
