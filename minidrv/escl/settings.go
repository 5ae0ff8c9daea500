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
// when it is absent.
func one(name string, vals []string, def string) (string, error) {
	switch len(vals) {
	case 0:
		return def, nil
	case 1:
		return strings.TrimSpace(vals[0]), nil
	}
	return "", malformed("%s given %d times", name, len(vals))
}

// number parses a non-negative decimal element value of at most 1e7: more
// than any platen in 1/300 inch or any resolution.
func number(name, v string) (int, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > 10_000_000 {
		return 0, malformed("%s %q is not a number in 0..10000000", name, v)
	}
	return int(n), nil
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
	if dup != "false" && dup != "0" {
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
		vals []string
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
			vals []string
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
	if out.XOffset, out.Width, ok = toPixels(xo, w, out.XResolution); !ok {
		return out, unsupported("region width %d (1/300 in) is under one pixel at %d dpi", w, out.XResolution)
	}
	if out.YOffset, out.Height, ok = toPixels(yo, h, out.YResolution); !ok {
		return out, unsupported("region height %d (1/300 in) is under one pixel at %d dpi", h, out.YResolution)
	}
	return out, nil
}

// toPixels converts an offset and a length in 1/300 inch to pixels at dpi:
// both edges are rounded to the nearest pixel (as clients compute the image
// size they expect), so adjacent regions do not overlap. ok is false when
// less than one pixel is left.
func toPixels(off, n, dpi int) (pos, ext int, ok bool) {
	pos = (off*dpi + unitsPerInch/2) / unitsPerInch
	ext = ((off+n)*dpi+unitsPerInch/2)/unitsPerInch - pos
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
