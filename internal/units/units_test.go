package units

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "4096": 4096, "4k": 4096, "4K": 4096, "4KiB": 4096, "4kib": 4096, "4 KiB": 4096,
		"64k": 64 << 10, "1m": 1 << 20, "1M": 1 << 20, "1MiB": 1 << 20, "1g": 1 << 30, "2GiB": 2 << 30,
		" 8k ": 8192, "007": 7,
	} {
		got, err := ParseBytes(in, 0, math.MaxInt64)
		if assert.NoError(t, err, "%q", in) {
			assert.Equal(t, want, got, "%q", in)
		}
	}
}

func TestParseBytesRefuses(t *testing.T) {
	for _, in := range []string{"", " ", "k", "-4k", "+4k", "4x", "1.5k", "4kk", "4KB", "1MB", "4 k b", "0x10", "1e3", "4k4"} {
		_, err := ParseBytes(in, 0, math.MaxInt64)
		assert.ErrorIs(t, err, ErrSyntax, "%q", in)
		if err != nil {
			assert.Contains(t, err.Error(), "4k", "%q: the message shows the syntax", in)
		}
	}
	for _, tc := range []struct {
		in     string
		lo, hi int64
		want   string
	}{
		{"0", 1, 1 << 30, "at least 1"},
		{"2g", 1, 1 << 30, "at most 1G"},
		{"1025M", 1, 1 << 30, "at most 1G"},
		{"99999999999999999999", 0, 1 << 30, "larger than 1G"},
		{"9000000000G", 0, math.MaxInt64, "larger than"},
	} {
		_, err := ParseBytes(tc.in, tc.lo, tc.hi)
		require.ErrorIs(t, err, ErrRange, "%q", tc.in)
		assert.Contains(t, err.Error(), tc.want, "%q", tc.in)
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1: "1", 1000: "1000", 1536: "1536", 4096: "4k", 1 << 20: "1M", 3 << 30: "3G", 1<<20 + 1024: "1025k",
	} {
		assert.Equal(t, want, FormatBytes(n))
	}
}

// FuzzParseBytes: whatever is accepted lies in the bounds and formats back
// to the same value; nothing panics.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"4k", "1MiB", "0", "99999999999999999999G", "1.5k", " 8 g", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		const lo, hi int64 = 1, 1 << 40
		v, err := ParseBytes(s, lo, hi)
		if err != nil {
			if !strings.Contains(err.Error(), "size") {
				t.Errorf("%q: error %q does not say what was wanted", s, err)
			}
			return
		}
		if v < lo || v > hi {
			t.Fatalf("%q: %d outside %d..%d", s, v, lo, hi)
		}
		back, err := ParseBytes(FormatBytes(v), lo, hi)
		if err != nil || back != v {
			t.Fatalf("%q: %d formats as %q, which parses as %d, %v", s, v, FormatBytes(v), back, err)
		}
	})
}
