package usb

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/cancelio/cancelio/ioring"
)

// adv3Ctl is a device whose endpoint 0 answers each IN control transfer
// with the next of its replies (cut to the transfer's wLength), or STALLs
// when they run out. It records the setup packets it was sent.
type adv3Ctl struct {
	mu      sync.Mutex
	replies [][]byte
	setups  []Setup
}

func (c *adv3Ctl) set(replies ...[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replies, c.setups = replies, nil
}

func (c *adv3Ctl) run(t *Transfer) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	buf := t.Buf()
	s, _ := ParseSetup(buf)
	c.setups = append(c.setups, s)
	if len(c.replies) == 0 {
		return 0, ErrStall
	}
	r := c.replies[0]
	c.replies = c.replies[1:]
	return copy(buf[SetupSize:], r), nil
}

// adv3CtlDevice returns a Device whose control transfers c answers,
// closed with tb.
func adv3CtlDevice(tb testing.TB) (*Device, *adv3Ctl) {
	ring, err := ioring.New(ioring.Config{Entries: 16})
	if err != nil {
		tb.Skipf("no ring on this system: %v", err)
	}
	c := &adv3Ctl{}
	p := NewPump(ring, []EndpointDesc{pumpCtl}, &funcRunner{run: c.run})
	d := NewDevice(DeviceDesc{}, p)
	tb.Cleanup(func() {
		_ = d.Close()
		_ = ring.Close()
	})
	return d, c
}

// adv3Runes counts the runes a UTF-16 sequence decodes to, pairing a high
// surrogate with the low one after it and counting any other unit,
// unpaired surrogates included (each becomes U+FFFD), as one.
func adv3Runes(u []uint16) int {
	n := 0
	for i := 0; i < len(u); i++ {
		if u[i] >= 0xd800 && u[i] < 0xdc00 && i+1 < len(u) && u[i+1] >= 0xdc00 && u[i+1] < 0xe000 {
			i++
		}
		n++
	}
	return n
}

// FuzzAdv3StringDescriptor has a device answer GET_DESCRIPTOR(string)
// with arbitrary bytes: string descriptor 0 (the language list), then
// the string itself, with lying bLength, odd lengths, a wrong type and
// unpaired UTF-16 surrogates. StringDescriptor must return an error or
// valid UTF-8 that decodes exactly the units bLength covers, and must ask
// for the string in the language the device listed.
func FuzzAdv3StringDescriptor(f *testing.F) {
	lang := []byte{4, 3, 0x09, 0x04}
	str := func(s string) []byte {
		u := utf16.Encode([]rune(s))
		b := []byte{byte(2 + 2*len(u)), 3}
		for _, c := range u {
			b = binary.LittleEndian.AppendUint16(b, c)
		}
		return b
	}
	f.Add(uint8(1), lang, str("cancelio"))
	f.Add(uint8(2), lang, str("scanner \U0001F5A8"))
	f.Add(uint8(3), lang, []byte{7, 3, 'a', 0, 'b', 0, 'c'})         // odd bLength
	f.Add(uint8(3), lang, []byte{6, 3, 0x00, 0xd8, 'x', 0})          // unpaired high surrogate
	f.Add(uint8(3), lang, []byte{6, 3, 0x00, 0xdc, 0x00, 0xd8})      // low before high
	f.Add(uint8(3), lang, []byte{255, 3, 'a', 0})                    // bLength past the data
	f.Add(uint8(3), lang, []byte{1, 3})                              // bLength below 2
	f.Add(uint8(3), lang, []byte{4, 2, 'a', 0})                      // not a string descriptor
	f.Add(uint8(3), []byte{2, 3}, str("x"))                          // no language
	f.Add(uint8(3), []byte{4, 3, 0xff, 0xff, 9, 9, 9}, str(""))      // odd language, extra bytes
	f.Add(uint8(0), lang, str("index 0"))                            // not a string index
	f.Add(uint8(9), append(bytes255(), 0), append(bytes255(), 1, 2)) // more than 255 bytes
	d, c := adv3CtlDevice(f)
	f.Fuzz(func(t *testing.T, index uint8, r0, r1 []byte) {
		c.set(r0, r1)
		s, err := d.StringDescriptor(context.Background(), index)
		c.mu.Lock()
		setups := append([]Setup(nil), c.setups...)
		c.mu.Unlock()
		if index == 0 {
			if err == nil || len(setups) != 0 {
				t.Fatalf("index 0: %q, %v after %d requests", s, err, len(setups))
			}
			return
		}
		for i, su := range setups {
			if su.RequestType != RequestIn || su.Request != reqGetDescriptor || su.Length != 255 {
				t.Fatalf("request %d: %+v", i, su)
			}
		}
		if len(setups) == 2 {
			if want := binary.LittleEndian.Uint16(r0[2:]); setups[1].Index != want || setups[1].Value != 0x300|uint16(index) {
				t.Fatalf("string asked as %+v, language %#04x listed", setups[1], want)
			}
		}
		if err != nil {
			if s != "" {
				t.Fatalf("%q with error %v", s, err)
			}
			return
		}
		if len(setups) != 2 {
			t.Fatalf("a string after %d requests", len(setups))
		}
		if !utf8.ValidString(s) {
			t.Fatalf("invalid UTF-8 %q", s)
		}
		m := min(len(r1), 255)
		bl := int(r1[0])
		if bl < 2 || bl > m || r1[1] != 3 {
			t.Fatalf("accepted descriptor % x (%d bytes arrived)", r1, m)
		}
		u := make([]uint16, (bl-2)/2)
		for i := range u {
			u[i] = binary.LittleEndian.Uint16(r1[2+2*i:])
		}
		if got, want := utf8.RuneCountInString(s), adv3Runes(u); got != want {
			t.Fatalf("%q: %d runes, the descriptor holds %d", s, got, want)
		}
	})
}

// bytes255 returns a 255-byte string descriptor of 'a's, the largest.
func bytes255() []byte {
	b := []byte{255, 3}
	for len(b) < 255 {
		b = append(b, 'a')
	}
	return b
}

// FuzzAdv3GetStatus has the device answer GET_STATUS with 0 to many
// bytes: anything but 2 is an error, 2 bytes are the status.
func FuzzAdv3GetStatus(f *testing.F) {
	f.Add([]byte{1, 0})
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 2, 3})
	d, c := adv3CtlDevice(f)
	f.Fuzz(func(t *testing.T, r []byte) {
		c.set(r)
		st, err := d.GetStatus(context.Background(), RecipientEndpoint, 0x81)
		switch {
		case len(r) >= 2 && err == nil:
			if st != binary.LittleEndian.Uint16(r) {
				t.Fatalf("status %#04x from % x", st, r)
			}
		case len(r) < 2 && err == nil:
			t.Fatalf("status %#04x from %d bytes", st, len(r))
		}
	})
}

// FuzzAdv3ParseUevent feeds arbitrary netlink messages to parseUevent
// (any process may send to the uevent multicast group's listeners
// through udev's relays, and the kernel's own messages are long and
// varied): it must not panic, and an event it accepts must be a USB
// device's arrival or removal with the IDs its PRODUCT field says.
func FuzzAdv3ParseUevent(f *testing.F) {
	const devpath = "/devices/platform/dummy_hcd.0/usb1/1-1"
	f.Add(uevent("add@"+devpath, "ACTION=add", "DEVPATH="+devpath, "SUBSYSTEM=usb",
		"DEVTYPE=usb_device", "PRODUCT=1209/1/100", "BUSNUM=001", "DEVNUM=002"))
	f.Add(uevent("remove@"+devpath, "ACTION=remove", "DEVPATH="+devpath, "SUBSYSTEM=usb",
		"DEVTYPE=usb_device", "PRODUCT=abcd/ef01/0", "BUSNUM=003", "DEVNUM=127", "ACTION=add"))
	f.Add(uevent("add@x", "ACTION=add", "DEVPATH=x", "SUBSYSTEM=usb", "DEVTYPE=usb_device", "PRODUCT=1/2/3/4", "BUSNUM=-1", "DEVNUM=+2"))
	f.Add([]byte("libudev\x00\xfe\xed\xca\xfe"))
	f.Add([]byte("add@\x00ACTION=add\x00=\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		e, ok := parseUevent(msg)
		if !ok {
			if e != (HotplugEvent{}) {
				t.Fatalf("refused message left %+v", e)
			}
			return
		}
		if e.Kind != Arrived && e.Kind != Left {
			t.Fatalf("kind %v", e.Kind)
		}
		if e.DevPath == "" || e.Serial != "" {
			t.Fatalf("event %+v", e)
		}
		if !strings.Contains(string(msg), "SUBSYSTEM=usb\x00") && !strings.HasSuffix(string(msg), "SUBSYSTEM=usb") {
			t.Fatalf("accepted a message without SUBSYSTEM=usb: %q", msg)
		}
		_ = e.String()
	})
}

// FuzzAdv3ParseID: ParseID accepts exactly what it documents (two hex
// numbers of at most 16 bits, each with an optional 0x prefix, around one
// colon), and what it accepts prints back to the same IDs.
func FuzzAdv3ParseID(f *testing.F) {
	for _, s := range []string{"1209:0001", "0x1209:0X1", "ffff:ffff", "10000:1", ":", "0x:1", "1209:0001:2", " 1209:1", "-1:1", "+1:1", "1_0:1", "١٢:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vid, pid, ok := ParseID(s)
		if !ok {
			if vid != 0 || pid != 0 {
				t.Fatalf("%q refused with %#x:%#x", s, vid, pid)
			}
			return
		}
		for _, r := range s {
			if !strings.ContainsRune("0123456789abcdefABCDEFxX:", r) {
				t.Fatalf("%q accepted with %q in it", s, r)
			}
		}
		v2, p2, ok := ParseID(fmt.Sprintf("%04x:%04x", vid, pid))
		if !ok || v2 != vid || p2 != pid {
			t.Fatalf("%q: %04x:%04x does not parse back (%04x:%04x %v)", s, vid, pid, v2, p2, ok)
		}
	})
}

// FuzzAdv3ParseSetup: ParseSetup refuses fewer than SetupSize bytes, and
// Put of what it parsed gives back the first SetupSize bytes.
func FuzzAdv3ParseSetup(f *testing.F) {
	f.Add([]byte{0x80, 6, 0, 3, 9, 4, 255, 0})
	f.Add([]byte{0xc1, 2, 0, 0, 0, 0, 24, 0, 0xaa})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, ok := ParseSetup(b)
		if len(b) < SetupSize {
			if ok || s != (Setup{}) {
				t.Fatalf("%d bytes: %+v %v", len(b), s, ok)
			}
			return
		}
		if !ok {
			t.Fatalf("%d bytes refused", len(b))
		}
		out := make([]byte, SetupSize)
		s.Put(out)
		if string(out) != string(b[:SetupSize]) {
			t.Fatalf("Put(ParseSetup(% x)) = % x", b[:SetupSize], out)
		}
		if s.IsIn() != (b[0]&0x80 != 0) {
			t.Fatalf("direction of %#02x", b[0])
		}
	})
}
