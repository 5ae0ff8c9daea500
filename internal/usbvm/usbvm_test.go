package usbvm

import (
	"encoding/binary"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestInGuest(t *testing.T) {
	_, err := os.Stat("/usbvm/config.json")
	assert.Equal(t, err == nil && os.Getenv("CANCELIO_USBVM_GUEST") == "1", InGuest())
	if InGuest() {
		assert.NotEqual(t, "unknown", KernelRelease())
	}
}

// TestFFSDescriptors parses the blob as the kernel's ffs_do_descs does:
// header, counts, then descriptors whose lengths chain to the end.
func TestFFSDescriptors(t *testing.T) {
	b := ffsDescriptors(64)
	le := binary.LittleEndian
	require.GreaterOrEqual(t, len(b), 20)
	assert.Equal(t, uint32(ffsDescriptorsMagicV2), le.Uint32(b))
	assert.Equal(t, uint32(len(b)), le.Uint32(b[4:]), "length field")
	assert.Equal(t, uint32(ffsHasFSDesc|ffsHasHSDesc|ffsAllCtrlRecip), le.Uint32(b[8:]))
	counts := []uint32{le.Uint32(b[12:]), le.Uint32(b[16:])}

	type ep struct {
		addr, attr byte
		maxPacket  uint16
	}
	rest := b[20:]
	for speed, count := range counts {
		var eps []ep
		for i := uint32(0); i < count; i++ {
			require.NotEmpty(t, rest)
			l := int(rest[0])
			require.LessOrEqual(t, l, len(rest), "descriptor overruns the blob")
			switch rest[1] {
			case usbDTInterface:
				require.Equal(t, 9, l)
				assert.Equal(t, byte(3), rest[4], "bNumEndpoints")
			case usbDTEndpoint:
				require.Equal(t, 7, l)
				eps = append(eps, ep{rest[2], rest[3], le.Uint16(rest[4:])})
			default:
				t.Fatalf("unexpected descriptor type %d", rest[1])
			}
			rest = rest[l:]
		}
		bulk := uint16(64)
		if speed == 1 {
			bulk = 512
		}
		assert.Equal(t, []ep{{0x81, 2, bulk}, {0x02, 2, bulk}, {0x83, 3, 64}}, eps, "speed %d", speed)
	}
	assert.Empty(t, rest, "bytes after the last descriptor")
}

func TestFFSStrings(t *testing.T) {
	b := ffsStrings("scanner")
	le := binary.LittleEndian
	assert.Equal(t, uint32(ffsStringsMagic), le.Uint32(b))
	assert.Equal(t, uint32(len(b)), le.Uint32(b[4:]))
	assert.Equal(t, uint32(1), le.Uint32(b[8:]), "str_count")
	assert.Equal(t, uint32(1), le.Uint32(b[12:]), "lang_count")
	assert.Equal(t, uint16(0x0409), le.Uint16(b[16:]))
	assert.Equal(t, "scanner\x00", string(b[18:]))
}
