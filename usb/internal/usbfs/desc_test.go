package usbfs

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gadgetDescriptors returns what a usbfs node shows for a device like the
// usbvm gadget: one configuration, interface 0 with two alternate settings
// (bulk IN 0x81, bulk OUT 0x02, interrupt IN 0x83 in the first), an
// interface association and a class-specific descriptor in between.
func gadgetDescriptors() []byte {
	dev := []byte{18, dtDevice, 0x00, 0x02, 0, 0, 0, 64, 0x09, 0x12, 0x01, 0x00, 0x00, 0x01, 1, 2, 3, 1}
	body := []byte{
		8, 11, 0, 1, 0xff, 0, 0, 0, // interface association: skipped
		9, dtInterface, 0, 0, 3, 0xff, 0, 0, 4,
		5, 0x24, 1, 2, 3, // class-specific: skipped
		7, dtEndpoint, 0x81, 2, 0x00, 0x02, 0,
		7, dtEndpoint, 0x02, 2, 0x00, 0x02, 0,
		7, dtEndpoint, 0x83, 3, 0x40, 0x00, 4,
		9, dtInterface, 0, 1, 1, 0xff, 0, 0, 0,
		7, dtEndpoint, 0x81, 1, 0x00, 0x04, 1, // isochronous in alt 1
	}
	cfg := []byte{9, dtConfig, 0, 0, 1, 1, 5, 0x80, 50}
	binary.LittleEndian.PutUint16(cfg[2:], uint16(len(cfg)+len(body)))
	return append(append(dev, cfg...), body...)
}

func TestParseDescriptors(t *testing.T) {
	d, cs, err := ParseDescriptors(gadgetDescriptors())
	require.NoError(t, err)
	assert.Equal(t, DeviceDescriptor{USB: 0x200, MaxPacketSize0: 64, VendorID: 0x1209, ProductID: 0x0001,
		Device: 0x0100, Manufacturer: 1, Product: 2, SerialNumber: 3, NumConfigs: 1}, d)
	require.Len(t, cs, 1)
	c := cs[0]
	assert.Equal(t, uint8(1), c.Value)
	assert.Equal(t, uint8(5), c.Name)
	assert.Equal(t, uint8(50), c.MaxPower)
	require.Len(t, c.Interfaces, 1, "alternate settings of one interface are grouped")
	in := c.Interfaces[0]
	require.Len(t, in.AltSettings, 2)
	a0, a1 := in.AltSettings[0], in.AltSettings[1]
	assert.Equal(t, uint8(0xff), a0.Class)
	assert.Equal(t, uint8(4), a0.Name)
	require.Len(t, a0.Endpoints, 3)
	assert.Equal(t, EndpointDescriptor{Address: 0x81, Attributes: 2, MaxPacketSize: 512}, a0.Endpoints[0])
	assert.True(t, a0.Endpoints[0].In())
	assert.Equal(t, Bulk, a0.Endpoints[0].Type())
	assert.False(t, a0.Endpoints[1].In())
	assert.Equal(t, 2, a0.Endpoints[1].Number())
	assert.Equal(t, Interrupt, a0.Endpoints[2].Type())
	assert.Equal(t, 64, a0.Endpoints[2].PacketSize())
	assert.Equal(t, uint8(4), a0.Endpoints[2].Interval)
	assert.Equal(t, "0x83 Interrupt IN 64", a0.Endpoints[2].String())
	assert.Equal(t, uint8(1), a1.Alternate)
	require.Len(t, a1.Endpoints, 1)
	assert.Equal(t, Isochronous, a1.Endpoints[0].Type())

	// Two configurations back to back.
	two := append(gadgetDescriptors(), gadgetDescriptors()[18:]...)
	two[17] = 2
	_, cs, err = ParseDescriptors(two)
	require.NoError(t, err)
	assert.Len(t, cs, 2)
}

func TestParseDescriptorsMalformed(t *testing.T) {
	good := gadgetDescriptors()
	for name, b := range map[string][]byte{
		"empty":                    nil,
		"short device descriptor":  good[:17],
		"not a device descriptor":  append([]byte{18, dtConfig}, good[2:]...),
		"truncated configuration":  good[:len(good)-3],
		"configuration bLength 0":  append(append([]byte{}, good[:18]...), 0, dtConfig, 9, 0, 1, 1, 0, 0x80, 50),
		"wTotalLength too small":   append(append([]byte{}, good[:18]...), 9, dtConfig, 4, 0, 1, 1, 0, 0x80, 50),
		"descriptor of length 0":   append(append([]byte{}, good[:18]...), 9, dtConfig, 11, 0, 1, 1, 0, 0x80, 50, 0, 4),
		"short endpoint":           append(append([]byte{}, good[:18]...), 9, dtConfig, 15, 0, 1, 1, 0, 0x80, 50, 6, dtEndpoint, 0x81, 2, 0, 2),
		"short interface":          append(append([]byte{}, good[:18]...), 9, dtConfig, 17, 0, 1, 1, 0, 0x80, 50, 8, dtInterface, 0, 0, 0, 0, 0, 0),
		"trailing bytes in device": append(append([]byte{}, good...), 1),
	} {
		_, _, err := ParseDescriptors(b)
		assert.Error(t, err, name)
	}
}

func FuzzParseDescriptors(f *testing.F) {
	f.Add(gadgetDescriptors())
	f.Add([]byte{18, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, cs, err := ParseDescriptors(b)
		if err != nil {
			return
		}
		if d.VendorID != binary.LittleEndian.Uint16(b[8:]) {
			t.Fatalf("VendorID %#04x, bytes say %#04x", d.VendorID, binary.LittleEndian.Uint16(b[8:]))
		}
		total := int(b[0])
		for _, c := range cs {
			for _, in := range c.Interfaces {
				for _, a := range in.AltSettings {
					if a.Number != in.Number {
						t.Fatalf("alternate setting of interface %d filed under %d", a.Number, in.Number)
					}
				}
			}
		}
		for rest := b[total:]; len(rest) > 0; {
			n := int(binary.LittleEndian.Uint16(rest[2:]))
			total += n
			rest = rest[n:]
		}
		if total != len(b) {
			t.Fatalf("parsed %d of %d bytes without error", total, len(b))
		}
	})
}
