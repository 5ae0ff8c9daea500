package minidrv

import (
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

// ItemKind is the kind of a WIA item.
type ItemKind uint8

// The kinds of items a scanner exposes.
const (
	// ItemRoot is the device itself: a folder of acquirable items.
	ItemRoot ItemKind = iota + 1
	// ItemFlatbed is the flatbed: an image item, acquired with
	// AcquireItemData and described by Properties.
	ItemFlatbed
)

// String returns the kind's name, or "ItemKind(n)".
func (k ItemKind) String() string {
	switch k {
	case ItemRoot:
		return "ItemRoot"
	case ItemFlatbed:
		return "ItemFlatbed"
	}
	return fmt.Sprintf("ItemKind(%d)", uint8(k))
}

// Item is a node of the WIA item tree (drvInitItemProperties builds it in a
// WIA driver). Items are plain values; the driver guards any it shares.
type Item struct {
	Name     string
	Kind     ItemKind
	Children []*Item
}

// NewItemTree returns the item tree of a flatbed scanner: a root item named
// "Root" with one child, the flatbed item named "Flatbed".
func NewItemTree() *Item {
	return &Item{
		Name:     "Root",
		Kind:     ItemRoot,
		Children: []*Item{{Name: "Flatbed", Kind: ItemFlatbed}},
	}
}

// Find returns the first item named name in the tree under it (it included,
// depth first), or nil. An item reachable by more than one path (a child
// listed twice, or a cycle: an item among its own descendants) is looked
// at once, so Find ends on any graph of items, and its answer is the one
// a walk of the tree would give.
func (it *Item) Find(name string) *Item {
	if it == nil {
		return nil
	}
	if it.Name == name {
		return it
	}
	if len(it.Children) == 0 {
		return nil
	}
	// Depth first, children in order, without recursion: an explicit
	// stack (next child to visit last) and the items seen so far.
	seen := map[*Item]bool{it: true}
	stack := make([]*Item, 0, len(it.Children))
	for i := len(it.Children) - 1; i >= 0; i-- {
		stack = append(stack, it.Children[i])
	}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if c == nil || seen[c] {
			continue
		}
		seen[c] = true
		if c.Name == name {
			return c
		}
		for i := len(c.Children) - 1; i >= 0; i-- {
			stack = append(stack, c.Children[i])
		}
	}
	return nil
}

// DataType is the pixel type of a scan (WIA_IPA_DATATYPE). The values are
// WIA's WIA_DATA_* values.
type DataType int

// The data types a flatbed item supports.
const (
	// DataBW is black and white, 1 bit per pixel (WIA_DATA_THRESHOLD).
	DataBW DataType = 0
	// DataGray is grayscale, 8 bits per pixel (WIA_DATA_GRAYSCALE).
	DataGray DataType = 2
	// DataColor is RGB color, 24 bits per pixel (WIA_DATA_COLOR).
	DataColor DataType = 3
)

// String returns "bw", "gray", "color", or "DataType(n)".
func (t DataType) String() string {
	switch t {
	case DataBW:
		return "bw"
	case DataGray:
		return "gray"
	case DataColor:
		return "color"
	}
	return fmt.Sprintf("DataType(%d)", int(t))
}

// Depth returns the bit depth that goes with t (1, 8 or 24), or 0 for an
// unknown data type.
func (t DataType) Depth() int {
	switch t {
	case DataBW:
		return 1
	case DataGray:
		return 8
	case DataColor:
		return 24
	}
	return 0
}

// Format is the format of the data AcquireItemData delivers (WIA_IPA_FORMAT).
type Format int

// The formats a flatbed item supports. The device always sends raw lines;
// FormatPNM only puts a header (see Properties.Header) in front of them.
const (
	// FormatRaw is the device's data as it comes: YExtent lines of
	// BytesPerLine bytes, top line first, no padding beyond the byte.
	FormatRaw Format = 0
	// FormatPNM is netpbm: P4 (bw), P5 (gray) or P6 (color), a header then
	// the raw lines. P4 stores 1 as black; a device that sends 1 as white
	// must be inverted by the driver.
	FormatPNM Format = 1
)

// String returns "raw", "pnm", or "Format(n)".
func (f Format) String() string {
	switch f {
	case FormatRaw:
		return "raw"
	case FormatPNM:
		return "pnm"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// PropID names an item property. The read-only ones can be read but a write
// to them is refused.
type PropID int

// The properties of the flatbed item.
const (
	PropXResolution  PropID = iota + 1 // WIA_IPS_XRES: horizontal resolution, dpi
	PropYResolution                    // WIA_IPS_YRES: vertical resolution, dpi
	PropXPosition                      // WIA_IPS_XPOS: left edge, pixels at XRES
	PropYPosition                      // WIA_IPS_YPOS: top edge, pixels at YRES
	PropXExtent                        // WIA_IPS_XEXTENT: width, pixels at XRES
	PropYExtent                        // WIA_IPS_YEXTENT: height (lines), pixels at YRES
	PropDataType                       // WIA_IPA_DATATYPE: a DataType
	PropBitDepth                       // WIA_IPA_DEPTH: bits per pixel, fixed by the data type
	PropFormat                         // WIA_IPA_FORMAT: a Format
	PropBufferSize                     // WIA_IPA_BUFFER_SIZE: bytes per transfer chunk
	PropBedWidth                       // WIA_DPS_HORIZONTAL_BED_SIZE: read-only, thousandths of an inch
	PropBedHeight                      // WIA_DPS_VERTICAL_BED_SIZE: read-only, thousandths of an inch
	PropBytesPerLine                   // WIA_IPA_BYTES_PER_LINE: read-only
	PropItemSize                       // WIA_IPA_ITEM_SIZE: read-only, bytes of image data (no header)

	numProps // one past the last property
)

var propNames = [numProps]string{
	PropXResolution:  "WIA_IPS_XRES",
	PropYResolution:  "WIA_IPS_YRES",
	PropXPosition:    "WIA_IPS_XPOS",
	PropYPosition:    "WIA_IPS_YPOS",
	PropXExtent:      "WIA_IPS_XEXTENT",
	PropYExtent:      "WIA_IPS_YEXTENT",
	PropDataType:     "WIA_IPA_DATATYPE",
	PropBitDepth:     "WIA_IPA_DEPTH",
	PropFormat:       "WIA_IPA_FORMAT",
	PropBufferSize:   "WIA_IPA_BUFFER_SIZE",
	PropBedWidth:     "WIA_DPS_HORIZONTAL_BED_SIZE",
	PropBedHeight:    "WIA_DPS_VERTICAL_BED_SIZE",
	PropBytesPerLine: "WIA_IPA_BYTES_PER_LINE",
	PropItemSize:     "WIA_IPA_ITEM_SIZE",
}

// String returns the WIA name of the property, or "PropID(n)".
func (id PropID) String() string {
	if id.Valid() {
		return propNames[id]
	}
	return fmt.Sprintf("PropID(%d)", int(id))
}

// Valid reports whether id is one of the defined properties.
func (id PropID) Valid() bool { return id >= PropXResolution && id < numProps }

// ReadOnly reports whether id is a read-only property.
func (id PropID) ReadOnly() bool { return id >= PropBedWidth && id < numProps }

// PropValue is one property and its value, for Read and Write. Enumerated
// properties hold their constant's value (DataType, Format) as an int.
type PropValue struct {
	ID    PropID
	Value int
}

// The flatbed's fixed capabilities.
const (
	// BedWidth is the width of the bed in thousandths of an inch (8.5 in,
	// 216 mm).
	BedWidth = 8500
	// BedHeight is the height of the bed in thousandths of an inch (11.69
	// in, 297 mm): A4 and US Letter both fit.
	BedHeight = 11690
	// MinBufferSize is the smallest transfer chunk: one USB 2.0 bulk packet.
	MinBufferSize = 512
	// MaxBufferSize is the largest transfer chunk, 1 MiB.
	MaxBufferSize = 1 << 20
	// BufferAlign is the granule of a transfer chunk. A multiple of the bulk
	// endpoint's packet size means only the image's last read can be short,
	// and no read can overflow.
	BufferAlign = 512
	// DefaultBufferSize is the chunk size of DefaultProperties, 64 KiB.
	DefaultBufferSize = 64 << 10
)

// resolutions are the dpi values the flatbed supports, in ascending order.
var resolutions = [...]int{75, 100, 150, 200, 300, 600}

// Resolutions returns the resolutions, in dpi, the flatbed supports, in
// ascending order. The caller owns the slice.
func Resolutions() []int { return append([]int(nil), resolutions[:]...) }

// MaxPixels returns how many pixels span bed thousandths of an inch at dpi,
// rounded down (toward zero): the bound on position + extent along that
// axis. bed × dpi does not overflow: a result beyond the int range
// saturates at math.MaxInt (math.MinInt when negative).
func MaxPixels(bed, dpi int) int { return mulDiv(bed, dpi, 1000) }

// mulDiv returns a × b / c rounded toward zero, as Go's operators would
// without overflow: the product is computed in 128 bits, and a quotient
// beyond the int range saturates at math.MaxInt or math.MinInt. c > 0.
func mulDiv(a, b int, c uint64) int {
	neg := (a < 0) != (b < 0)
	hi, lo := bits.Mul64(uabs(a), uabs(b))
	q := uint64(math.MaxUint64) // hi >= c: the quotient needs more than 64 bits
	if hi < c {
		q, _ = bits.Div64(hi, lo, c)
	}
	switch {
	case q > math.MaxInt && neg:
		return math.MinInt
	case q > math.MaxInt:
		return math.MaxInt
	case neg:
		return -int(q)
	}
	return int(q)
}

// uabs returns |x|, math.MinInt's included.
func uabs(x int) uint64 {
	if x < 0 {
		return uint64(-int64(x)) // -math.MinInt64 wraps to itself: 1<<63 as a uint64
	}
	return uint64(x)
}

// PropertyError is a refused property read or write. It names the property,
// the refused value and what is allowed, and wraps ErrInvalidProperty (so
// HResult returns E_INVALIDARG).
type PropertyError struct {
	Name    string // the property, e.g. "WIA_IPS_XRES"
	Value   string // the refused value
	Allowed string // what would have been accepted, e.g. "75, 100, 150, 200, 300, 600"
}

// Error returns "minidrv: property NAME = VALUE refused (allowed: ALLOWED)".
func (e *PropertyError) Error() string {
	return fmt.Sprintf("minidrv: property %s = %s refused (allowed: %s)", e.Name, e.Value, e.Allowed)
}

// Unwrap returns ErrInvalidProperty.
func (e *PropertyError) Unwrap() error { return ErrInvalidProperty }

func propErr(id PropID, v int, allowed string) *PropertyError {
	return &PropertyError{Name: id.String(), Value: strconv.Itoa(v), Allowed: allowed}
}

// Properties are the writable properties of the flatbed item, in WIA's
// units. Its methods mirror drvReadItemProperties, drvValidateItemProperties
// and drvWriteItemProperties. A Properties is a plain value: the driver
// guards it (WIA writes properties between Lock and Unlock), and the driver
// should take a copy when a transfer starts.
//
// Positions and extents are pixels at the current resolution of their axis;
// position + extent must fit on the bed (MaxPixels).
type Properties struct {
	XResolution int      // dpi, one of Resolutions()
	YResolution int      // dpi, one of Resolutions()
	XPosition   int      // pixels, 0 <= XPosition < MaxPixels(BedWidth, XResolution)
	YPosition   int      // pixels, 0 <= YPosition < MaxPixels(BedHeight, YResolution)
	XExtent     int      // pixels, 1 <= XExtent <= MaxPixels(BedWidth, XResolution) - XPosition
	YExtent     int      // lines, 1 <= YExtent <= MaxPixels(BedHeight, YResolution) - YPosition
	DataType    DataType // DataBW, DataGray or DataColor
	BitDepth    int      // DataType.Depth()
	Format      Format   // FormatRaw or FormatPNM
	BufferSize  int      // bytes, MinBufferSize..MaxBufferSize, a multiple of BufferAlign
}

// DefaultProperties returns the flatbed item's properties after
// initialization: the whole bed at 150 dpi, 8-bit gray, raw, 64 KiB chunks.
func DefaultProperties() Properties {
	return Properties{
		XResolution: 150,
		YResolution: 150,
		XExtent:     MaxPixels(BedWidth, 150),
		YExtent:     MaxPixels(BedHeight, 150),
		DataType:    DataGray,
		BitDepth:    DataGray.Depth(),
		Format:      FormatRaw,
		BufferSize:  DefaultBufferSize,
	}
}

// BytesPerLine returns the bytes of one raw line: XExtent pixels of BitDepth
// bits, rounded up to a whole byte. For values Validate would refuse it
// neither overflows nor goes negative: it is 0 when XExtent or BitDepth is
// not positive, and saturates at math.MaxInt.
func (p Properties) BytesPerLine() int { return int(min(p.lineBytes(), math.MaxInt)) }

// lineBytes is BytesPerLine as an int64, saturated at math.MaxInt64.
func (p Properties) lineBytes() int64 {
	if p.XExtent <= 0 || p.BitDepth <= 0 {
		return 0
	}
	// Both below 1<<63: the product is below 1<<126, so hi < 1<<62.
	hi, lo := bits.Mul64(uint64(p.XExtent), uint64(p.BitDepth))
	if hi>>3 != 0 {
		return math.MaxInt64
	}
	n := hi<<61 | lo>>3 // the whole bytes
	if n >= math.MaxInt64 {
		return math.MaxInt64
	}
	if lo&7 != 0 {
		n++
	}
	return int64(n)
}

// ImageSize returns the bytes of raw image data an acquisition delivers:
// BytesPerLine x YExtent, without any header. Like BytesPerLine it is 0
// when a factor is not positive, and it saturates at math.MaxInt64 rather
// than overflow (computed from the line's exact size, even where
// BytesPerLine saturated at a smaller math.MaxInt).
func (p Properties) ImageSize() int64 {
	line := p.lineBytes()
	if line == 0 || p.YExtent <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(line), uint64(p.YExtent))
	if hi != 0 || lo > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(lo)
}

// Header returns the bytes that go before the image data in p's format: nil
// for FormatRaw, the netpbm header for FormatPNM.
func (p Properties) Header() []byte {
	if p.Format != FormatPNM {
		return nil
	}
	switch p.DataType {
	case DataBW:
		return fmt.Appendf(nil, "P4\n%d %d\n", p.XExtent, p.YExtent)
	case DataColor:
		return fmt.Appendf(nil, "P6\n%d %d\n255\n", p.XExtent, p.YExtent)
	default:
		return fmt.Appendf(nil, "P5\n%d %d\n255\n", p.XExtent, p.YExtent)
	}
}

// Get returns the value of property id, or a *PropertyError for an unknown
// id. The computed ones (PropBytesPerLine, PropItemSize) saturate at
// math.MaxInt (see BytesPerLine and ImageSize).
func (p Properties) Get(id PropID) (int, error) {
	switch id {
	case PropXResolution:
		return p.XResolution, nil
	case PropYResolution:
		return p.YResolution, nil
	case PropXPosition:
		return p.XPosition, nil
	case PropYPosition:
		return p.YPosition, nil
	case PropXExtent:
		return p.XExtent, nil
	case PropYExtent:
		return p.YExtent, nil
	case PropDataType:
		return int(p.DataType), nil
	case PropBitDepth:
		return p.BitDepth, nil
	case PropFormat:
		return int(p.Format), nil
	case PropBufferSize:
		return p.BufferSize, nil
	case PropBedWidth:
		return BedWidth, nil
	case PropBedHeight:
		return BedHeight, nil
	case PropBytesPerLine:
		return p.BytesPerLine(), nil
	case PropItemSize:
		return int(min(p.ImageSize(), math.MaxInt)), nil // saturated where int is 32 bits
	}
	return 0, propErr(id, int(id), "a defined property ("+allPropNames()+")")
}

// Read returns the values of the properties ids, in order
// (drvReadItemProperties). An unknown id fails the whole read with a
// *PropertyError.
func (p Properties) Read(ids ...PropID) ([]PropValue, error) {
	out := make([]PropValue, len(ids))
	for i, id := range ids {
		v, err := p.Get(id)
		if err != nil {
			return nil, err
		}
		out[i] = PropValue{ID: id, Value: v}
	}
	return out, nil
}

// Validate checks every property against its allowed values and the others
// it depends on (drvValidateItemProperties). It returns nil or the
// *PropertyError of the first invalid property, in PropID order.
func (p Properties) Validate() error {
	if err := checkAxis(PropXResolution, PropXPosition, PropXExtent, p.XResolution, p.XPosition, p.XExtent, BedWidth); err != nil {
		return err
	}
	if err := checkAxis(PropYResolution, PropYPosition, PropYExtent, p.YResolution, p.YPosition, p.YExtent, BedHeight); err != nil {
		return err
	}
	if p.DataType.Depth() == 0 {
		return propErr(PropDataType, int(p.DataType), fmt.Sprintf("%d (bw), %d (gray), %d (color)", DataBW, DataGray, DataColor))
	}
	if p.BitDepth != p.DataType.Depth() {
		return propErr(PropBitDepth, p.BitDepth, fmt.Sprintf("%d for %v", p.DataType.Depth(), p.DataType))
	}
	if p.Format != FormatRaw && p.Format != FormatPNM {
		return propErr(PropFormat, int(p.Format), fmt.Sprintf("%d (raw), %d (pnm)", FormatRaw, FormatPNM))
	}
	if p.BufferSize < MinBufferSize || p.BufferSize > MaxBufferSize || p.BufferSize%BufferAlign != 0 {
		return propErr(PropBufferSize, p.BufferSize, fmt.Sprintf("%d..%d, a multiple of %d", MinBufferSize, MaxBufferSize, BufferAlign))
	}
	return nil
}

func checkAxis(resID, posID, extID PropID, res, pos, ext, bed int) error {
	if !validResolution(res) {
		return propErr(resID, res, resolutionList())
	}
	limit := MaxPixels(bed, res)
	if pos < 0 || pos >= limit {
		return propErr(posID, pos, fmt.Sprintf("0..%d at %d dpi", limit-1, res))
	}
	if ext < 1 || ext > limit-pos {
		return propErr(extID, ext, fmt.Sprintf("1..%d at %d dpi and %s %d", limit-pos, res, posID, pos))
	}
	return nil
}

func validResolution(dpi int) bool {
	for _, r := range resolutions {
		if r == dpi {
			return true
		}
	}
	return false
}

func resolutionList() string {
	s := make([]string, len(resolutions))
	for i, r := range resolutions {
		s[i] = strconv.Itoa(r)
	}
	return strings.Join(s, ", ")
}

func allPropNames() string {
	s := make([]string, 0, numProps)
	for id := PropXResolution; id < numProps; id++ {
		s = append(s, id.String())
	}
	return strings.Join(s, ", ")
}

// Write applies changes atomically (drvWriteItemProperties): either all are
// applied and the result is valid, or p is left unchanged and the error is
// the *PropertyError of the first refused property. A property written twice
// takes its last value.
//
// Dependent properties follow the ones they depend on unless the same write
// sets them too, as drvValidateItemProperties does in WIA:
//   - a new resolution rescales that axis's position and extent to cover the
//     same area of the bed at the new resolution (rounded down, clamped to
//     the bed, extent at least 1; a window that reached the bed's far edge
//     still reaches it);
//   - a new data type sets the bit depth that goes with it.
func (p *Properties) Write(changes ...PropValue) error {
	n := *p
	var written uint32 // bit id set: id was written
	for _, c := range changes {
		if !c.ID.Valid() {
			return propErr(c.ID, c.Value, "a defined property ("+allPropNames()+")")
		}
		if c.ID.ReadOnly() {
			return &PropertyError{Name: c.ID.String(), Value: strconv.Itoa(c.Value), Allowed: "none: read-only"}
		}
		written |= 1 << c.ID
		switch c.ID {
		case PropXResolution:
			n.XResolution = c.Value
		case PropYResolution:
			n.YResolution = c.Value
		case PropXPosition:
			n.XPosition = c.Value
		case PropYPosition:
			n.YPosition = c.Value
		case PropXExtent:
			n.XExtent = c.Value
		case PropYExtent:
			n.YExtent = c.Value
		case PropDataType:
			n.DataType = DataType(c.Value)
		case PropBitDepth:
			n.BitDepth = c.Value
		case PropFormat:
			n.Format = Format(c.Value)
		case PropBufferSize:
			n.BufferSize = c.Value
		}
	}
	isSet := func(id PropID) bool { return written&(1<<id) != 0 }
	if n.XResolution != p.XResolution {
		n.XPosition, n.XExtent = rescale(n.XPosition, n.XExtent, p.XResolution, n.XResolution, BedWidth,
			isSet(PropXPosition), isSet(PropXExtent))
	}
	if n.YResolution != p.YResolution {
		n.YPosition, n.YExtent = rescale(n.YPosition, n.YExtent, p.YResolution, n.YResolution, BedHeight,
			isSet(PropYPosition), isSet(PropYExtent))
	}
	if isSet(PropDataType) && !isSet(PropBitDepth) && n.DataType.Depth() != 0 {
		n.BitDepth = n.DataType.Depth()
	}
	if err := n.Validate(); err != nil {
		return err
	}
	*p = n
	return nil
}

// rescale converts an axis's position and extent from resolution from to
// resolution to, leaving the values the write set itself (posSet, extSet)
// as they are. Invalid resolutions leave everything to Validate. Old
// values past the int range once scaled (never validated) saturate, then
// clamp to the bed as any value too large does: they do not wrap.
func rescale(pos, ext, from, to, bed int, posSet, extSet bool) (int, int) {
	if !validResolution(from) || !validResolution(to) {
		return pos, ext
	}
	limit := MaxPixels(bed, to)
	// A window that reached the far edge of the bed still does: rounding
	// down must not lose the last pixels (the whole bed stays the whole bed).
	// (pos and ext positive: a sum that overflows is negative, not the edge.)
	toEdge := !posSet && pos >= 0 && ext > 0 && pos+ext == MaxPixels(bed, from)
	if !posSet {
		pos = min(mulDiv(pos, to, uint64(from)), limit-1)
	}
	if !extSet && limit-pos >= 1 {
		ext = min(max(mulDiv(ext, to, uint64(from)), 1), limit-pos)
		if toEdge {
			ext = limit - pos
		}
	}
	return pos, ext
}
