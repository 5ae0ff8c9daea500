package usbfs

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adv3MaxAlloc is the most a parser may allocate for one input of at most
// 64 KiB: far more than any honest descriptor set needs, far less than a
// length field that was believed would cost.
const adv3MaxAlloc = 64 << 20

// adv3Encode writes d and cs back as a usbfs node shows them: the device
// descriptor, then each configuration with its interfaces' alternate
// settings and their endpoints (standard descriptors only). It is the
// inverse of ParseDescriptors up to what the parser drops.
func adv3Encode(d DeviceDescriptor, cs []ConfigDescriptor) []byte {
	le := binary.LittleEndian
	b := []byte{devDescLen, dtDevice}
	b = le.AppendUint16(b, d.USB)
	b = append(b, d.Class, d.SubClass, d.Protocol, d.MaxPacketSize0)
	b = le.AppendUint16(b, d.VendorID)
	b = le.AppendUint16(b, d.ProductID)
	b = le.AppendUint16(b, d.Device)
	b = append(b, d.Manufacturer, d.Product, d.SerialNumber, d.NumConfigs)
	for _, c := range cs {
		start := len(b)
		b = append(b, configDesLen, dtConfig, 0, 0, byte(len(c.Interfaces)), c.Value, c.Name, c.Attributes, c.MaxPower)
		for _, in := range c.Interfaces {
			for _, a := range in.AltSettings {
				b = append(b, ifaceDescLen, dtInterface, a.Number, a.Alternate, byte(len(a.Endpoints)), a.Class, a.SubClass, a.Protocol, a.Name)
				for _, e := range a.Endpoints {
					b = append(b, epDescLen, dtEndpoint, e.Address, e.Attributes)
					b = le.AppendUint16(b, e.MaxPacketSize)
					b = append(b, e.Interval)
				}
			}
		}
		le.PutUint16(b[start+2:], uint16(len(b)-start))
	}
	return b
}

// adv3Alloc returns the bytes f allocates (runtime.MemStats.TotalAlloc).
func adv3Alloc(f func()) uint64 {
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	f()
	runtime.ReadMemStats(&m1)
	return m1.TotalAlloc - m0.TotalAlloc
}

// adv3CountEndpoints counts, independently of the parser, the endpoint
// descriptors of each configuration in b that follow an interface
// descriptor: what ParseDescriptors must report when it accepts b.
func adv3CountEndpoints(b []byte) (n int) {
	b = b[b[0]:]
	for len(b) > 0 {
		total := int(binary.LittleEndian.Uint16(b[2:]))
		c := b[:total]
		seenIface := false
		for c = c[c[0]:]; len(c) > 0; c = c[c[0]:] {
			switch c[1] {
			case dtInterface:
				seenIface = true
			case dtEndpoint:
				if seenIface {
					n++
				}
			}
		}
		b = b[total:]
	}
	return n
}

// FuzzAdv3ParseDescriptors goes beyond FuzzParseDescriptors: on any
// input ParseDescriptors must not panic or allocate absurdly; an accepted
// input must keep every endpoint that follows an interface, file no
// setting under the wrong interface, and re-encode to bytes that parse to
// the very same result (encode(parse(x)) is a fixed point).
func FuzzAdv3ParseDescriptors(f *testing.F) {
	good := gadgetDescriptors()
	f.Add(good)
	f.Add(append(bytes2(good), good[18:]...))
	// Class-specific and odd-sized descriptors, an audio endpoint of 9
	// bytes, an endpoint before any interface, a device descriptor longer
	// than 18 bytes.
	f.Add(adv3Config([]byte{
		7, dtEndpoint, 0x81, 2, 0, 2, 0, // before any interface: dropped
		9, dtInterface, 1, 0, 1, 1, 2, 0, 0,
		10, 0x24, 1, 0, 1, 0, 0, 0, 0, 0,
		9, dtEndpoint, 0x81, 1, 0xc0, 0, 1, 0, 0,
		2, 0x25,
		9, dtInterface, 1, 1, 0, 1, 2, 0, 0,
	}))
	long := append([]byte{20, dtDevice}, good[2:18]...)
	long = append(long, 0xee, 0xee)
	f.Add(append(long, good[18:]...))
	// A BOS-like descriptor (type 15) and string descriptors (type 3)
	// where no parser expects them.
	f.Add(adv3Config([]byte{5, 15, 5, 0, 0, 4, 3, 'h', 0, 9, dtInterface, 0, 0, 0, 0, 0, 0, 0}))
	f.Add([]byte{18, dtDevice, 0, 2, 0, 0, 0, 64, 0x09, 0x12, 1, 0, 0, 1, 0, 0, 0, 1, 9, dtConfig, 0xff, 0xff, 0, 1, 0, 0x80, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		var (
			d   DeviceDescriptor
			cs  []ConfigDescriptor
			err error
		)
		if n := adv3Alloc(func() { d, cs, err = ParseDescriptors(b) }); n > adv3MaxAlloc {
			t.Fatalf("%d bytes of input: %d bytes allocated", len(b), n)
		}
		if err != nil {
			if !errors.Is(err, errShort) {
				t.Fatalf("error %v does not wrap errShort", err)
			}
			return
		}
		got := 0
		for _, c := range cs {
			for _, in := range c.Interfaces {
				if len(in.AltSettings) == 0 {
					t.Fatalf("interface %d without settings", in.Number)
				}
				for _, a := range in.AltSettings {
					if a.Number != in.Number {
						t.Fatalf("setting of interface %d under %d", a.Number, in.Number)
					}
					got += len(a.Endpoints)
				}
			}
		}
		if want := adv3CountEndpoints(b); got != want {
			t.Fatalf("%d endpoints parsed, %d in the bytes", got, want)
		}
		enc := adv3Encode(d, cs)
		d2, cs2, err := ParseDescriptors(enc)
		if err != nil {
			t.Fatalf("re-encoded descriptors refused: %v\n% x", err, enc)
		}
		if d2 != d || !reflect.DeepEqual(adv3Norm(cs2), adv3Norm(cs)) {
			t.Fatalf("round trip changed the descriptors:\n%+v\n%+v", cs, cs2)
		}
	})
}

// adv3Norm makes nil and empty slices compare equal.
func adv3Norm(cs []ConfigDescriptor) []ConfigDescriptor {
	out := make([]ConfigDescriptor, 0, len(cs))
	for _, c := range cs {
		n := c
		n.Interfaces = nil
		for _, in := range c.Interfaces {
			ni := Interface{Number: in.Number}
			for _, a := range in.AltSettings {
				if len(a.Endpoints) == 0 {
					a.Endpoints = nil
				}
				ni.AltSettings = append(ni.AltSettings, a)
			}
			n.Interfaces = append(n.Interfaces, ni)
		}
		out = append(out, n)
	}
	return out
}

// bytes2 copies b.
func bytes2(b []byte) []byte { return append([]byte(nil), b...) }

// adv3Config returns a device descriptor and one configuration whose
// body is body, with wTotalLength set.
func adv3Config(body []byte) []byte {
	b := bytes2(gadgetDescriptors()[:18])
	cfg := []byte{9, dtConfig, 0, 0, 1, 1, 0, 0x80, 50}
	binary.LittleEndian.PutUint16(cfg[2:], uint16(len(cfg)+len(body)))
	return append(append(b, cfg...), body...)
}

// FuzzAdv3DescriptorProgram builds well-formed descriptor sets from the
// fuzzer's bytes (a small program: interface, endpoint, class-specific
// filler, next configuration) so that the fuzzer reaches the deep paths
// without having to guess wTotalLength, and checks the parse against the
// model the program built: same settings, same order, same endpoints.
func FuzzAdv3DescriptorProgram(f *testing.F) {
	f.Add([]byte{0, 0, 1, 0x81, 1, 0x02, 2, 5, 0, 1, 1, 0x83})
	f.Add([]byte{0, 3, 0, 3, 2, 255, 1, 0x01, 3, 0, 0, 0})
	f.Add([]byte{2, 1, 1, 0x8f, 0, 7, 1, 0x8f})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 4096 {
			return
		}
		var (
			want []ConfigDescriptor
			body []byte
			out  = bytes2(gadgetDescriptors()[:18])
			cur  *InterfaceDescriptor
		)
		flushCfg := func() {
			if cur != nil {
				addSetting(&want[len(want)-1], *cur)
				cur = nil
			}
			cfg := []byte{9, dtConfig, 0, 0, 1, want[len(want)-1].Value, 0, 0x80, 50}
			binary.LittleEndian.PutUint16(cfg[2:], uint16(len(cfg)+len(body)))
			out = append(append(out, cfg...), body...)
			body = nil
		}
		want = append(want, ConfigDescriptor{Value: 1, MaxPower: 50, Attributes: 0x80})
		for i := 0; i+1 < len(prog); i += 2 {
			op, arg := prog[i], prog[i+1]
			switch op % 4 {
			case 0: // interface arg&7, alternate arg>>3&3 (no duplicates)
				if hasSetting(&want[len(want)-1], cur, arg&7, arg>>3&3) {
					continue
				}
				if cur != nil {
					addSetting(&want[len(want)-1], *cur)
				}
				cur = &InterfaceDescriptor{Number: arg & 7, Alternate: arg >> 3 & 3, Class: 0xff, Name: op}
				body = append(body, 9, dtInterface, cur.Number, cur.Alternate, 0, 0xff, 0, 0, op)
			case 1: // endpoint (no duplicate address in one setting)
				if cur != nil && slices.ContainsFunc(cur.Endpoints, func(e EndpointDescriptor) bool { return e.Address == arg }) {
					continue
				}
				e := EndpointDescriptor{Address: arg, Attributes: op >> 2 & 3, MaxPacketSize: uint16(op) << 2, Interval: op}
				body = append(body, 7, dtEndpoint, e.Address, e.Attributes)
				body = binary.LittleEndian.AppendUint16(body, e.MaxPacketSize)
				body = append(body, e.Interval)
				if cur != nil {
					cur.Endpoints = append(cur.Endpoints, e)
				}
			case 2: // class-specific or unknown descriptor of arg%40+2 bytes
				n := int(arg%40) + 2
				typ := 0x20 | op>>2&0x1f
				if typ == dtInterface || typ == dtEndpoint || typ == dtConfig {
					typ = 0x24
				}
				d := make([]byte, n)
				d[0], d[1] = byte(n), typ
				body = append(body, d...)
			case 3: // next configuration
				if len(want) < 8 && len(out)+len(body) < 60000 {
					flushCfg()
					want = append(want, ConfigDescriptor{Value: byte(len(want) + 1), MaxPower: 50, Attributes: 0x80})
				}
			}
			if len(body) > 60000 {
				break
			}
		}
		flushCfg()
		_, cs, err := ParseDescriptors(out)
		if err != nil {
			t.Fatalf("well-formed descriptors refused: %v", err)
		}
		if !reflect.DeepEqual(adv3Norm(cs), adv3Norm(want)) {
			t.Fatalf("parsed\n%+v\nbuilt\n%+v", cs, want)
		}
	})
}

// hasSetting reports whether c, or cur (its setting being built),
// describes alternate setting alt of interface num.
func hasSetting(c *ConfigDescriptor, cur *InterfaceDescriptor, num, alt uint8) bool {
	if cur != nil && cur.Number == num && cur.Alternate == alt {
		return true
	}
	for _, in := range c.Interfaces {
		for _, a := range in.AltSettings {
			if a.Number == num && a.Alternate == alt {
				return true
			}
		}
	}
	return false
}

// addSetting files s under its interface in c, as the parser groups them.
func addSetting(c *ConfigDescriptor, s InterfaceDescriptor) {
	for i := range c.Interfaces {
		if c.Interfaces[i].Number == s.Number {
			c.Interfaces[i].AltSettings = append(c.Interfaces[i].AltSettings, s)
			return
		}
	}
	c.Interfaces = append(c.Interfaces, Interface{Number: s.Number, AltSettings: []InterfaceDescriptor{s}})
}

// TestAdv3ParseAllocBound feeds the costliest shapes a 64 KiB descriptor
// set can take (thousands of interface descriptors, all of one interface
// or of 256 different ones, thousands of endpoints, a configuration that
// claims 65535 bytes) and checks that the parse stays within a small
// multiple of its input.
func TestAdv3ParseAllocBound(t *testing.T) {
	many := func(prefix, desc []byte, mut func(i int, d []byte)) []byte {
		body := bytes2(prefix)
		for i := 0; len(body)+len(desc) < 0xffff-9; i++ {
			d := bytes2(desc)
			if mut != nil {
				mut(i, d)
			}
			body = append(body, d...)
		}
		return adv3Config(body)
	}
	iface := []byte{9, dtInterface, 0, 0, 0, 0, 0, 0, 0}
	for name, b := range map[string][]byte{
		"one interface, many settings": many(nil, iface, func(i int, d []byte) { d[3] = byte(i) }),
		"256 interfaces":               many(nil, iface, func(i int, d []byte) { d[2] = byte(i) }),
		"many endpoints":               many(iface, []byte{7, dtEndpoint, 0x81, 2, 0, 2, 0}, func(i int, d []byte) { d[2] = byte(i) }),
		"wTotalLength lies":            adv3Config(nil)[:18+4],
	} {
		var err error
		n := adv3Alloc(func() { _, _, err = ParseDescriptors(b) })
		t.Logf("%s: %d bytes in, %d allocated, err %v", name, len(b), n, err)
		assert.Less(t, n, uint64(64*len(b)+1<<20), name)
	}
}

// TestAdv3DuplicateAltSetting: a configuration that describes interface 0
// alternate setting 0 twice, with different endpoints (one bulk OUT of
// 512 bytes, then one of 64). The kernel keeps the first and skips the
// duplicate (usb_parse_interface: "Duplicate descriptor for config ...
// skipping"), and the layers above disagree on which one counts: package
// usb's setting lookup and findAltLocked take the first, usbfs's Endpoint
// and package usb's usbfsSetup the last, so a transfer would be split by
// the wrong wMaxPacketSize. ParseDescriptors must not hand both on:
// refuse them with an error, or keep the first only.
func TestAdv3DuplicateAltSetting(t *testing.T) {
	b := adv3Config([]byte{
		9, dtInterface, 0, 0, 1, 0xff, 0, 0, 0,
		7, dtEndpoint, 0x02, 2, 0x00, 0x02, 0,
		9, dtInterface, 0, 0, 1, 0xff, 0, 0, 0,
		7, dtEndpoint, 0x02, 2, 0x40, 0x00, 0,
	})
	_, cs, err := ParseDescriptors(b)
	if err != nil {
		return // refused: fine
	}
	require.Len(t, cs, 1)
	require.Len(t, cs[0].Interfaces, 1)
	alts := cs[0].Interfaces[0].AltSettings
	assert.Len(t, alts, 1, "interface 0 alternate setting 0 described twice: %+v", alts)
	if len(alts) > 0 {
		assert.Equal(t, 512, alts[0].Endpoints[0].PacketSize(), "the first description counts, as in the kernel")
	}
}

// TestAdv3DuplicateEndpoint: one alternate setting that lists endpoint
// 0x81 twice (bulk, then interrupt). The kernel skips the second
// ("duplicate endpoint with address 0x81, skipping"); usbfs's Endpoint
// returns the last match. ParseDescriptors must refuse it or keep one.
func TestAdv3DuplicateEndpoint(t *testing.T) {
	b := adv3Config([]byte{
		9, dtInterface, 0, 0, 2, 0xff, 0, 0, 0,
		7, dtEndpoint, 0x81, 2, 0x00, 0x02, 0,
		7, dtEndpoint, 0x81, 3, 0x08, 0x00, 1,
	})
	_, cs, err := ParseDescriptors(b)
	if err != nil {
		return
	}
	eps := cs[0].Interfaces[0].AltSettings[0].Endpoints
	assert.Len(t, eps, 1, "endpoint 0x81 described twice in one setting: %v", eps)
}

// FuzzAdv3ListSysfs runs enumeration over a fake sysfs whose attribute
// files and descriptors the fuzzer writes: list must not panic, must
// keep or drop the device as its busnum, devnum, idVendor and idProduct
// allow, and must report the IDs sysfs gave.
func FuzzAdv3ListSysfs(f *testing.F) {
	f.Add("1", "2", "1209", "0001", "1", gadgetDescriptors())
	f.Add("001\n", "127\n", "abcd\n", "ef01\n", "", []byte{18, 1})
	f.Add("-1", "+2", "0x1209", "10000", "x", []byte(nil))
	f.Add("99999999999999999999", "0", "ffff", "ffff", "255", bytes2(gadgetDescriptors()[:30]))
	f.Fuzz(func(t *testing.T, bus, dev, vid, pid, cfg string, desc []byte) {
		for _, s := range []string{bus, dev, vid, pid, cfg} {
			if len(s) > 64 {
				return
			}
		}
		if len(desc) > 1<<16 {
			return
		}
		root := t.TempDir()
		sys, devRoot := filepath.Join(root, "sys"), filepath.Join(root, "dev")
		d := filepath.Join(sys, "1-1")
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.MkdirAll(devRoot, 0o755))
		for name, v := range map[string]string{"busnum": bus, "devnum": dev, "idVendor": vid, "idProduct": pid, "bConfigurationValue": cfg, "descriptors": string(desc)} {
			require.NoError(t, os.WriteFile(filepath.Join(d, name), []byte(v), 0o644))
		}
		devs, err := list(sys, devRoot)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if len(devs) > 1 {
			t.Fatalf("%d devices from one directory", len(devs))
		}
		if len(devs) == 0 {
			return
		}
		info := devs[0]
		if !strings.HasPrefix(info.DevNode, devRoot) {
			t.Fatalf("device node %q outside %q", info.DevNode, devRoot)
		}
		if info.Descriptor.VendorID != info.VendorID && info.Configs == nil && len(desc) < devDescLen {
			t.Fatalf("descriptor %+v without descriptors", info.Descriptor)
		}
		_ = info.String()
	})
}
