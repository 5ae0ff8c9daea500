package escl

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/cancelio/cancelio/minidrv"
)

// unitsPerInch is the unit of eSCL regions and platen sizes: 1/300 inch.
const unitsPerInch = 300

// Settings are the parameters of one scan job, checked against the
// scanner's capabilities: what a client asked for, in the driver's terms.
type Settings struct {
	// XResolution and YResolution are in dpi.
	XResolution, YResolution int
	// ColorMode is eSCL's name of the colour mode: "BlackAndWhite1",
	// "Grayscale8" or "RGB24".
	ColorMode string
	// Format is the document's MIME type, MIMEPNG or MIMEJPEG.
	Format string
	// XOffset, YOffset, Width and Height are the scan window in pixels at
	// the resolution of their axis (the driver's PropXPosition...).
	XOffset, YOffset, Width, Height int
}

// dataType returns the driver's data type of s.ColorMode.
func (s Settings) dataType() minidrv.DataType {
	switch s.ColorMode {
	case modeBW:
		return minidrv.DataBW
	case modeColor:
		return minidrv.DataColor
	}
	return minidrv.DataGray
}

// props returns the property writes that set the driver up for s. They
// set every property the scan depends on, so the result does not depend
// on earlier writes.
func (s Settings) props() []minidrv.PropValue {
	return []minidrv.PropValue{
		{ID: minidrv.PropXResolution, Value: s.XResolution},
		{ID: minidrv.PropYResolution, Value: s.YResolution},
		{ID: minidrv.PropXPosition, Value: s.XOffset},
		{ID: minidrv.PropYPosition, Value: s.YOffset},
		{ID: minidrv.PropXExtent, Value: s.Width},
		{ID: minidrv.PropYExtent, Value: s.Height},
		{ID: minidrv.PropDataType, Value: int(s.dataType())},
		{ID: minidrv.PropFormat, Value: int(minidrv.FormatRaw)},
	}
}

// caps are the scanner's capabilities, read from the driver's item
// properties once, when the handler is made.
type caps struct {
	bedWidth, bedHeight int      // platen size in 1/300 inch
	resolutions         []int    // dpi, ascending
	modes               []string // eSCL colour modes
	formats             []string // MIME types
	defaults            minidrv.Properties
}

// settingsError is a request the handler refuses: errMalformed for what it
// could not parse (400), otherwise settings it does not support (409).
type settingsError struct {
	malformed bool
	msg       string
}

func (e *settingsError) Error() string { return e.msg }

func unsupported(format string, args ...any) error {
	return &settingsError{msg: fmt.Sprintf(format, args...)}
}

func malformed(format string, args ...any) error {
	return &settingsError{malformed: true, msg: fmt.Sprintf(format, args...)}
}

// one returns the only value of an element that may appear once, or def
// when it is absent. The white space XML Schema collapses (space, tab, CR
// and LF, whiteSpace="collapse" of the schema's token, integer and boolean
// types) is trimmed from both ends; other space characters (a no-break
// space, say) are part of the value.
func one(name string, vals []text, def string) (string, error) {
	switch len(vals) {
	case 0:
		return def, nil
	case 1:
		return strings.Trim(string(vals[0]), xmlSpace), nil
	}
	return "", malformed("%s given %d times", name, len(vals))
}

// xmlSpace is XML's white space (the S production).
const xmlSpace = " \t\r\n"

// maxNumber bounds every number in scan settings: more than any platen in
// 1/300 inch or any resolution, and far below the overflow of an int
// (32-bit too) in the arithmetic on it.
const maxNumber = 10_000_000

// number parses a number of scan settings (a resolution, an offset or a
// length): decimal digits only, at most maxNumber. That is the canonical
// form of the schema's unsigned integers, which every client writes
// (sane-airscan with printf's %u): a sign (even "+", or "-0"), a fraction,
// an exponent or hex digits are refused rather than read as some other
// number, and so is a value too large for any scanner, before any
// arithmetic on it can overflow.
func number(name, v string) (int, error) {
	if v == "" {
		return 0, malformed("%s is empty: want a whole number of decimal digits, 0..%d", name, maxNumber)
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, malformed("%s %q is not a number: want decimal digits only, 0..%d", name, v, maxNumber)
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > maxNumber {
		return 0, malformed("%s %q is out of range: want 0..%d", name, v, maxNumber)
	}
	return int(n), nil
}

// boolean parses an XML Schema boolean: "true", "false", "1" or "0".
func boolean(name, v string) (bool, error) {
	switch v {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, malformed("%s %q is not a boolean: want true, false, 1 or 0", name, v)
}

// check turns parsed scan settings into Settings, or refuses them: every
// check happens here, before anything reaches the driver.
func (c *caps) check(s *scanSettings) (Settings, error) {
	var out Settings
	src, err := one("InputSource", s.InputSource, sourcePlaten)
	if err != nil {
		return out, err
	}
	if src != sourcePlaten {
		return out, unsupported("input source %q not supported (this scanner has a Platen only)", src)
	}
	dup, err := one("Duplex", s.Duplex, "false")
	if err != nil {
		return out, err
	}
	duplex, err := boolean("Duplex", dup)
	if err != nil {
		return out, err
	}
	if duplex {
		return out, unsupported("duplex not supported on the platen")
	}

	mode, err := one("ColorMode", s.ColorMode, modeOf(c.defaults.DataType))
	if err != nil {
		return out, err
	}
	if !slices.Contains(c.modes, mode) {
		return out, unsupported("colour mode %q not supported (supported: %s)", mode, strings.Join(c.modes, ", "))
	}
	out.ColorMode = mode

	// DocumentFormatExt, when given, is the one that counts (eSCL 2.x).
	f, err := one("DocumentFormat", s.Format, MIMEPNG)
	if err != nil {
		return out, err
	}
	if len(s.FormatExt) > 0 {
		if f, err = one("DocumentFormatExt", s.FormatExt, ""); err != nil {
			return out, err
		}
	}
	f = strings.ToLower(f)
	if !slices.Contains(c.formats, f) {
		return out, unsupported("document format %q not supported (supported: %s)", f, strings.Join(c.formats, ", "))
	}
	out.Format = f

	for _, r := range []struct {
		name string
		vals []text
		dst  *int
		def  int
	}{
		{"XResolution", s.XResolution, &out.XResolution, c.defaults.XResolution},
		{"YResolution", s.YResolution, &out.YResolution, c.defaults.YResolution},
	} {
		v, err := one(r.name, r.vals, strconv.Itoa(r.def))
		if err != nil {
			return out, err
		}
		n, err := number(r.name, v)
		if err != nil {
			return out, err
		}
		if !slices.Contains(c.resolutions, n) {
			return out, unsupported("%s %d dpi not supported (supported: %s)", r.name, n, joinInts(c.resolutions))
		}
		*r.dst = n
	}

	// The region: the whole platen unless one is given.
	xo, yo, w, h := 0, 0, c.bedWidth, c.bedHeight
	switch len(s.Regions) {
	case 0:
	case 1:
		reg := s.Regions[0]
		units, err := one("ContentRegionUnits", reg.Units, unitsESCL)
		if err != nil {
			return out, err
		}
		if units != unitsESCL {
			return out, unsupported("region units %q not supported (want %s)", units, unitsESCL)
		}
		for _, f := range []struct {
			name string
			vals []text
			dst  *int
		}{
			{"XOffset", reg.XOffset, &xo}, {"YOffset", reg.YOffset, &yo},
			{"Width", reg.Width, &w}, {"Height", reg.Height, &h},
		} {
			v, err := one(f.name, f.vals, strconv.Itoa(*f.dst))
			if err != nil {
				return out, err
			}
			if *f.dst, err = number(f.name, v); err != nil {
				return out, err
			}
		}
	default:
		return out, unsupported("%d scan regions; this scanner takes at most 1", len(s.Regions))
	}
	if xo+w > c.bedWidth || yo+h > c.bedHeight {
		return out, unsupported("region %dx%d at (%d,%d) (1/300 in) is outside the platen (%dx%d)",
			w, h, xo, yo, c.bedWidth, c.bedHeight)
	}
	var ok bool
	if out.XOffset, out.Width, ok = toPixels(xo, w, c.bedWidth, out.XResolution); !ok {
		return out, unsupported("region width %d (1/300 in) is under one pixel at %d dpi", w, out.XResolution)
	}
	if out.YOffset, out.Height, ok = toPixels(yo, h, c.bedHeight, out.YResolution); !ok {
		return out, unsupported("region height %d (1/300 in) is under one pixel at %d dpi", h, out.YResolution)
	}
	return out, nil
}

// toPixels converts an offset and a length in 1/300 inch, within a bed of
// that many, to pixels at dpi: each is rounded to the nearest pixel (half
// up), as a client computes the size of the image it expects from the
// length it asked for (sane-airscan rounds the region's length, not its
// edges), and the length is then cut to the bed's last pixel, which the
// two roundings could pass by one. ok is false when less than one pixel is
// left.
func toPixels(off, n, bed, dpi int) (pos, ext int, ok bool) {
	pos = (off*dpi + unitsPerInch/2) / unitsPerInch
	ext = min((n*dpi+unitsPerInch/2)/unitsPerInch, bed*dpi/unitsPerInch-pos)
	return pos, ext, ext >= 1
}

// granule returns the smallest length in 1/300 inch that is a whole number
// of pixels at every resolution of dpis.
func granule(dpis []int) int {
	g := 1
	for _, d := range dpis {
		step := unitsPerInch / gcd(unitsPerInch, d) // pixels are whole at multiples of step
		g = g / gcd(g, step) * step
	}
	return g
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// modeOf returns eSCL's colour mode of a driver data type.
func modeOf(t minidrv.DataType) string {
	switch t {
	case minidrv.DataBW:
		return modeBW
	case minidrv.DataColor:
		return modeColor
	}
	return modeGray
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// isMalformed reports whether err is a request the handler could not parse.
func isMalformed(err error) bool {
	var se *settingsError
	if errors.As(err, &se) {
		return se.malformed
	}
	return errors.Is(err, errMalformed)
}
