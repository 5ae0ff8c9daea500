package minidrv

import (
	"math"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv/scanproto"
)

// wide returns 1<<32 + v, an int that a uint32 conversion wraps to v.
// Where int has 32 bits, which cannot hold it, it returns math.MaxInt,
// out of range too. (Computed at run time: the constant would not compile
// there.)
func wide(v int) int {
	if strconv.IntSize < 64 {
		return math.MaxInt
	}
	return int(int64(1)<<32 + int64(v))
}

// requireScanRefusal checks that err is ScanParams' refusal of property
// prop: a *PropertyError naming it, ErrInvalidProperty (E_INVALIDARG) and
// ioring.ErrInvalid.
func requireScanRefusal(t *testing.T, err error, prop PropID) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, ioring.ErrInvalid)
	assert.ErrorIs(t, err, ErrInvalidProperty)
	assert.Equal(t, HResultInvalidArg, HResult(err))
	var pe *PropertyError
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, prop.String(), pe.Name)
}

// TestScanParams: ScanParams converts valid properties exactly, at the
// edges of every range, and refuses the others (those that a uint16 or
// uint32 conversion would wrap among them) with a zero ScanParams.
func TestScanParams(t *testing.T) {
	with := func(f func(p *Properties)) Properties {
		p := DefaultProperties()
		f(&p)
		return p
	}
	// The whole bed at 600 dpi: the largest window Validate allows.
	maxX, maxY := MaxPixels(BedWidth, 600), MaxPixels(BedHeight, 600)
	ok := []struct {
		name string
		p    Properties
		seed uint64
		want scanproto.ScanParams
	}{
		{"default", DefaultProperties(), 0,
			scanproto.ScanParams{DPI: 150, Width: 1275, Height: 1753, Format: scanproto.FormatGray8}},
		{"bw, largest seed", with(func(p *Properties) { p.DataType, p.BitDepth = DataBW, 1 }), math.MaxUint64,
			scanproto.ScanParams{DPI: 150, Width: 1275, Height: 1753, Format: scanproto.FormatBW1, Seed: math.MaxUint64}},
		{"color", with(func(p *Properties) { p.DataType, p.BitDepth = DataColor, 24 }), 7,
			scanproto.ScanParams{DPI: 150, Width: 1275, Height: 1753, Format: scanproto.FormatRGB24, Seed: 7}},
		{"whole bed at 600 dpi", with(func(p *Properties) {
			p.XResolution, p.YResolution, p.XExtent, p.YExtent = 600, 600, maxX, maxY
		}), 1, scanproto.ScanParams{DPI: 600, Width: uint32(maxX), Height: uint32(maxY), Format: scanproto.FormatGray8, Seed: 1}},
		{"one pixel at the far corner, 75 dpi", with(func(p *Properties) {
			p.XResolution, p.YResolution = 75, 75
			p.XPosition, p.YPosition = MaxPixels(BedWidth, 75)-1, MaxPixels(BedHeight, 75)-1
			p.XExtent, p.YExtent = 1, 1
		}), 2, scanproto.ScanParams{DPI: 75, Width: 1, Height: 1, Format: scanproto.FormatGray8, Seed: 2}},
	}
	for _, c := range ok {
		t.Run(c.name, func(t *testing.T) {
			got, err := ScanParams(c.p, c.seed)
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
			assert.NoError(t, got.Validate(), "the device would refuse it")
			assert.Equal(t, c.p.BytesPerLine(), int(got.BytesPerLine()), "bytes per line")
		})
	}

	refused := []struct {
		name string
		p    Properties
		prop PropID
	}{
		// A uint16 conversion would send 150 dpi for these.
		{"xres 65536+150", with(func(p *Properties) { p.XResolution = 1<<16 + 150 }), PropXResolution},
		{"xres 65535", with(func(p *Properties) { p.XResolution = math.MaxUint16 }), PropXResolution},
		{"xres 0", with(func(p *Properties) { p.XResolution = 0 }), PropXResolution},
		{"xres -150", with(func(p *Properties) { p.XResolution = -150 }), PropXResolution},
		{"xres 4800, the device's but not the flatbed's", with(func(p *Properties) { p.XResolution = scanproto.MaxDPI }), PropXResolution},
		{"xres MaxInt", with(func(p *Properties) { p.XResolution = math.MaxInt }), PropXResolution},
		{"yres MinInt", with(func(p *Properties) { p.YResolution = math.MinInt }), PropYResolution},
		// A uint32 conversion would send 100 pixels for these.
		{"xext 1<<32+100", with(func(p *Properties) { p.XExtent = wide(100) }), PropXExtent},
		{"yext 1<<32+100", with(func(p *Properties) { p.YExtent = wide(100) }), PropYExtent},
		{"xext 0", with(func(p *Properties) { p.XExtent = 0 }), PropXExtent},
		{"xext -1", with(func(p *Properties) { p.XExtent = -1 }), PropXExtent},
		{"yext -1", with(func(p *Properties) { p.YExtent = -1 }), PropYExtent},
		{"xext MinInt", with(func(p *Properties) { p.XExtent = math.MinInt }), PropXExtent},
		{"yext MaxInt", with(func(p *Properties) { p.YExtent = math.MaxInt }), PropYExtent},
		{"xext one past the bed", with(func(p *Properties) { p.XExtent = MaxPixels(BedWidth, 150) + 1 }), PropXExtent},
		{"yext past the bed from its position", with(func(p *Properties) { p.YPosition, p.YExtent = 1, MaxPixels(BedHeight, 150) }), PropYExtent},
		{"xpos -1", with(func(p *Properties) { p.XPosition = -1 }), PropXPosition},
		{"ypos on the edge", with(func(p *Properties) { p.YPosition = MaxPixels(BedHeight, 150) }), PropYPosition},
		// Once sent as gray.
		{"unknown data type", with(func(p *Properties) { p.DataType = 7 }), PropDataType},
		{"negative data type", with(func(p *Properties) { p.DataType = -1 }), PropDataType},
		{"bit depth of another type", with(func(p *Properties) { p.BitDepth = 24 }), PropBitDepth},
		{"unknown format", with(func(p *Properties) { p.Format = 2 }), PropFormat},
		{"zero properties", Properties{}, PropXResolution},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			got, err := ScanParams(c.p, 1)
			requireScanRefusal(t, err, c.prop)
			assert.Zero(t, got)
		})
	}
}

// TestScanParamsEveryResolution: at each resolution the whole bed and the
// smallest window convert exactly.
func TestScanParamsEveryResolution(t *testing.T) {
	for _, dpi := range Resolutions() {
		for _, p := range []Properties{
			{XResolution: dpi, YResolution: dpi, XExtent: MaxPixels(BedWidth, dpi), YExtent: MaxPixels(BedHeight, dpi),
				DataType: DataColor, BitDepth: 24, BufferSize: DefaultBufferSize},
			{XResolution: dpi, YResolution: dpi, XExtent: 1, YExtent: 1, DataType: DataBW, BitDepth: 1, BufferSize: MinBufferSize},
		} {
			got, err := ScanParams(p, uint64(dpi))
			require.NoError(t, err, "%d dpi", dpi)
			assert.Equal(t, dpi, int(got.DPI))
			assert.Equal(t, p.XExtent, int(got.Width))
			assert.Equal(t, p.YExtent, int(got.Height))
			assert.NoError(t, got.Validate(), "%d dpi", dpi)
		}
	}
}

// TestScanParamsDeviceRange: deviceParams, ScanParams' conversion, checks
// each value against the start command's range itself, so that a wider
// range of properties (a resolution added beyond MaxDPI, say) cannot wrap
// either; Validate refuses all of these first today.
func TestScanParamsDeviceRange(t *testing.T) {
	gray := func(dpi, w, h int) Properties {
		return Properties{XResolution: dpi, YResolution: dpi, XExtent: w, YExtent: h, DataType: DataGray, BitDepth: 8}
	}
	for _, c := range []struct {
		name string
		p    Properties
		prop PropID
	}{
		{"dpi below MinDPI", gray(scanproto.MinDPI-1, 1, 1), PropXResolution},
		{"dpi above MaxDPI", gray(scanproto.MaxDPI+1, 1, 1), PropXResolution},
		{"dpi 65536+300", gray(1<<16+300, 1, 1), PropXResolution},
		{"width 0", gray(300, 0, 1), PropXExtent},
		{"width above MaxPixels", gray(300, scanproto.MaxPixels+1, 1), PropXExtent},
		{"width 1<<32+1", gray(300, wide(1), 1), PropXExtent},
		{"height -1", gray(300, 1, -1), PropYExtent},
		{"height 1<<32+1", gray(300, 1, wide(1)), PropYExtent},
		{"unknown data type", Properties{XResolution: 300, XExtent: 1, YExtent: 1, DataType: 1}, PropDataType},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := deviceParams(c.p, 0)
			requireScanRefusal(t, err, c.prop)
			assert.Zero(t, got)
		})
	}
	// The range's own edges pass.
	got, err := deviceParams(gray(scanproto.MinDPI, scanproto.MaxPixels, 1), 0)
	require.NoError(t, err)
	assert.Equal(t, scanproto.ScanParams{DPI: scanproto.MinDPI, Width: scanproto.MaxPixels, Height: 1, Format: scanproto.FormatGray8}, got)
	got, err = deviceParams(gray(scanproto.MaxDPI, 1, scanproto.MaxPixels), 0)
	require.NoError(t, err)
	assert.Equal(t, scanproto.ScanParams{DPI: scanproto.MaxDPI, Width: 1, Height: scanproto.MaxPixels, Format: scanproto.FormatGray8}, got)
}

// TestScanParamsDriverProperties: the properties an acquisition sends
// (the driver's, which Properties.Write alone changes, as
// WriteItemProperties does) never reach ScanParams out of range: a write
// of a value that would wrap is refused and leaves them valid.
func TestScanParamsDriverProperties(t *testing.T) {
	for _, c := range []PropValue{
		{PropXResolution, 1<<16 + 150},
		{PropYResolution, -150},
		{PropXExtent, wide(100)},
		{PropYExtent, wide(100)},
		{PropXExtent, -1},
		{PropYExtent, math.MaxInt},
		{PropXPosition, math.MinInt},
		{PropDataType, 7},
	} {
		p := DefaultProperties()
		err := p.Write(c)
		var pe *PropertyError
		require.ErrorAs(t, err, &pe, "write of %v = %d", c.ID, c.Value)
		assert.Equal(t, DefaultProperties(), p, "a refused write changes nothing")
		_, err = ScanParams(p, 0)
		assert.NoError(t, err)
	}
}
