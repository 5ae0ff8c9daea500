package usb

import (
	"strconv"
	"strings"
)

// ParseID parses a device's vendor and product IDs written "VID:PID" in
// hex, as lsusb prints them (1209:0001; a 0x or 0X prefix is accepted on
// either). ok is false when s is not of that form.
func ParseID(s string) (vid, pid uint16, ok bool) {
	v, p, found := strings.Cut(s, ":")
	if !found {
		return 0, 0, false
	}
	a, err := strconv.ParseUint(trimHexPrefix(v), 16, 16)
	if err != nil {
		return 0, 0, false
	}
	b, err := strconv.ParseUint(trimHexPrefix(p), 16, 16)
	if err != nil {
		return 0, 0, false
	}
	return uint16(a), uint16(b), true
}

// trimHexPrefix removes a leading 0x or 0X from s.
func trimHexPrefix(s string) string {
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		return s[2:]
	}
	return s
}
