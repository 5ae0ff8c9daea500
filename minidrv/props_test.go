package minidrv

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestItemTree(t *testing.T) {
	root := NewItemTree()
	require.NotNil(t, root)
	assert.Equal(t, "Root", root.Name)
	assert.Equal(t, ItemRoot, root.Kind)
	require.Len(t, root.Children, 1)
	bed := root.Children[0]
	assert.Equal(t, "Flatbed", bed.Name)
	assert.Equal(t, ItemFlatbed, bed.Kind)
	assert.Empty(t, bed.Children)

	assert.Same(t, bed, root.Find("Flatbed"))
	assert.Same(t, root, root.Find("Root"))
	assert.Nil(t, root.Find("Feeder"))
	var none *Item
	assert.Nil(t, none.Find("Root"))

	assert.Equal(t, "ItemRoot", ItemRoot.String())
	assert.Equal(t, "ItemFlatbed", ItemFlatbed.String())
	assert.Equal(t, "ItemKind(0)", ItemKind(0).String())
	assert.NotSame(t, root, NewItemTree(), "each call builds a fresh tree")
}

// Find ends on a graph of items that is not a tree: a cycle (it used to
// recurse until the stack overflowed), an item that is its own child many
// times over, a child listed twice; it answers as a walk of the tree would.
func TestItemFindCycle(t *testing.T) {
	a := &Item{Name: "A"}
	b := &Item{Name: "B"}
	c := &Item{Name: "C"}
	a.Children = []*Item{b, nil, a}
	b.Children = []*Item{a, b, c}
	assert.Same(t, c, a.Find("C"))
	assert.Same(t, b, a.Find("B"))
	assert.Same(t, a, b.Find("A"))
	assert.Nil(t, a.Find("D"))

	self := &Item{Name: "self"}
	self.Children = []*Item{self, self, self, self}
	assert.Nil(t, self.Find("other"))

	// A shared child: the first in depth-first order wins.
	shared := &Item{Name: "X", Kind: ItemFlatbed}
	first := &Item{Name: "X", Kind: ItemRoot}
	root := &Item{Name: "Root", Children: []*Item{{Name: "L", Children: []*Item{shared}}, first, shared}}
	assert.Same(t, shared, root.Find("X"))
}

// Values that were never validated do not overflow the computed sizes:
// MaxPixels, BytesPerLine, ImageSize, ItemSize and ChunkSize saturate
// (sizes are 0 for a factor that is not positive), and a resolution
// change clamps a huge old position as it clamps a large one, without
// wrapping.
func TestPropertiesOverflow(t *testing.T) {
	exact := func(bed, dpi int) int64 { // bed × dpi / 1000 in big integers
		var q big.Int
		return q.Quo(q.Mul(big.NewInt(int64(bed)), big.NewInt(int64(dpi))), big.NewInt(1000)).Int64()
	}
	assert.EqualValues(t, exact(math.MaxInt, 600), MaxPixels(math.MaxInt, 600), "exact where it fits")
	assert.EqualValues(t, exact(math.MinInt, 600), MaxPixels(math.MinInt, 600), "exact where it fits")
	assert.EqualValues(t, exact(-math.MaxInt, 999), MaxPixels(math.MaxInt, -999), "exact where it fits")
	assert.Equal(t, math.MaxInt, MaxPixels(math.MaxInt, 1001))
	assert.Equal(t, math.MaxInt, MaxPixels(math.MinInt, -2000))
	assert.Equal(t, math.MinInt, MaxPixels(math.MinInt, 1001))
	assert.Equal(t, math.MinInt, MaxPixels(math.MaxInt, math.MinInt))
	assert.Equal(t, -3, MaxPixels(-1500, 2), "rounded toward zero, as before")
	assert.Zero(t, MaxPixels(0, math.MaxInt))

	huge := Properties{XExtent: math.MaxInt, YExtent: math.MaxInt, BitDepth: 24, BufferSize: DefaultBufferSize}
	assert.Equal(t, math.MaxInt, huge.BytesPerLine())
	assert.Equal(t, int64(math.MaxInt64), huge.ImageSize())
	v, err := huge.Get(PropItemSize)
	require.NoError(t, err)
	assert.Equal(t, math.MaxInt, v)
	assert.Equal(t, DefaultBufferSize, ChunkSize(huge))

	// An image size near the top of int64 (exact on 64 bits), whose
	// rounding up to MinProgressReports chunks used to overflow.
	near := Properties{XExtent: math.MaxInt - 7, YExtent: 8, BitDepth: 1, BufferSize: DefaultBufferSize}
	assert.Equal(t, (math.MaxInt-7)/8, near.BytesPerLine())
	assert.Equal(t, DefaultBufferSize, ChunkSize(near))

	for _, p := range []Properties{
		{XExtent: -8, YExtent: 10, BitDepth: 8},
		{XExtent: -8, YExtent: -10, BitDepth: -8},
		{XExtent: math.MinInt, YExtent: math.MinInt, BitDepth: -1},
	} {
		assert.Zero(t, p.BytesPerLine(), "%+v", p)
		assert.Zero(t, p.ImageSize(), "%+v", p)
		assert.Equal(t, BufferAlign, ChunkSize(p), "%+v", p)
	}

	large, overflowing := DefaultProperties(), DefaultProperties()
	large.XPosition, overflowing.XPosition = 1<<30, math.MaxInt
	require.NoError(t, large.Write(PropValue{PropXResolution, 300}))
	require.NoError(t, overflowing.Write(PropValue{PropXResolution, 300}))
	assert.Equal(t, large, overflowing)
	assert.Equal(t, MaxPixels(BedWidth, 300)-1, overflowing.XPosition)
}

// bedPixels is the bed (8.5 x 11.69 in) in whole pixels at each resolution,
// computed by hand.
var bedPixels = []struct{ dpi, x, y int }{
	{75, 637, 876},
	{100, 850, 1169},
	{150, 1275, 1753},
	{200, 1700, 2338},
	{300, 2550, 3507},
	{600, 5100, 7014},
}

func TestDefaultProperties(t *testing.T) {
	p := DefaultProperties()
	require.NoError(t, p.Validate())
	assert.Equal(t, 150, p.XResolution)
	assert.Equal(t, 150, p.YResolution)
	assert.Equal(t, 1275, p.XExtent, "whole bed width at 150 dpi")
	assert.Equal(t, 1753, p.YExtent, "whole bed height at 150 dpi")
	assert.Equal(t, DataGray, p.DataType)
	assert.Equal(t, 8, p.BitDepth)
	assert.Equal(t, FormatRaw, p.Format)
	assert.Equal(t, 64<<10, p.BufferSize)
	assert.Equal(t, 1275, p.BytesPerLine())
	assert.Equal(t, int64(1275*1753), p.ImageSize())
}

func TestResolutions(t *testing.T) {
	r := Resolutions()
	assert.Equal(t, []int{75, 100, 150, 200, 300, 600}, r)
	r[0] = 1
	assert.Equal(t, 75, Resolutions()[0], "Resolutions returns a copy")
	for _, b := range bedPixels {
		assert.Equal(t, b.x, MaxPixels(BedWidth, b.dpi), "%d dpi", b.dpi)
		assert.Equal(t, b.y, MaxPixels(BedHeight, b.dpi), "%d dpi", b.dpi)
	}
}

// requirePropErr checks err is a *PropertyError for name, wrapping
// ErrInvalidProperty, whose Allowed contains allowed.
func requirePropErr(t *testing.T, err error, name, value, allowed string) {
	t.Helper()
	require.Error(t, err)
	pe, ok := errors.AsType[*PropertyError](err)
	require.True(t, ok, "got %T %v, want *PropertyError", err, err)
	assert.Equal(t, name, pe.Name)
	assert.Equal(t, value, pe.Value)
	assert.Contains(t, pe.Allowed, allowed)
	assert.ErrorIs(t, err, ErrInvalidProperty)
	assert.Equal(t, HResultInvalidArg, HResult(err))
}

func TestWriteResolution(t *testing.T) {
	for _, id := range []PropID{PropXResolution, PropYResolution} {
		for _, b := range bedPixels {
			p := DefaultProperties()
			require.NoError(t, p.Write(PropValue{id, b.dpi}), "%v = %d", id, b.dpi)
			v, err := p.Get(id)
			require.NoError(t, err)
			assert.Equal(t, b.dpi, v)
		}
		for _, bad := range []int{0, -75, 74, 76, 599, 601, 1200} {
			p := DefaultProperties()
			err := p.Write(PropValue{id, bad})
			requirePropErr(t, err, id.String(), itoa(bad), "75, 100, 150, 200, 300, 600")
			assert.Equal(t, DefaultProperties(), p, "refused write changed nothing")
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestWriteGeometryBounds(t *testing.T) {
	for _, b := range bedPixels {
		axes := []struct {
			res, pos, ext PropID
			limit         int
		}{
			{PropXResolution, PropXPosition, PropXExtent, b.x},
			{PropYResolution, PropYPosition, PropYExtent, b.y},
		}
		for _, a := range axes {
			base := DefaultProperties()
			require.NoError(t, base.Write(PropValue{a.res, b.dpi}))

			ok := [][]PropValue{
				{{a.pos, 0}, {a.ext, a.limit}},     // whole axis
				{{a.pos, 0}, {a.ext, 1}},           // smallest
				{{a.pos, a.limit - 1}, {a.ext, 1}}, // last pixel
				{{a.pos, 10}, {a.ext, a.limit - 10}},
			}
			for _, w := range ok {
				p := base
				assert.NoError(t, p.Write(w...), "%d dpi %v", b.dpi, w)
			}

			bad := []struct {
				w       []PropValue
				name    string
				value   int
				allowed string
			}{
				{[]PropValue{{a.pos, -1}, {a.ext, 1}}, a.pos.String(), -1, "0.." + itoa(a.limit-1)},
				{[]PropValue{{a.pos, a.limit}, {a.ext, 1}}, a.pos.String(), a.limit, "0.." + itoa(a.limit-1)},
				{[]PropValue{{a.pos, 0}, {a.ext, 0}}, a.ext.String(), 0, "1.." + itoa(a.limit)},
				{[]PropValue{{a.pos, 0}, {a.ext, a.limit + 1}}, a.ext.String(), a.limit + 1, "1.." + itoa(a.limit)},
				{[]PropValue{{a.pos, 10}, {a.ext, a.limit - 9}}, a.ext.String(), a.limit - 9, "1.." + itoa(a.limit-10)},
			}
			for _, c := range bad {
				p := base
				err := p.Write(c.w...)
				requirePropErr(t, err, c.name, itoa(c.value), c.allowed)
				assert.Equal(t, base, p, "refused write changed nothing")
			}
		}
	}
}

func TestWriteRescalesOnResolution(t *testing.T) {
	p := DefaultProperties() // 150 dpi, whole bed
	require.NoError(t, p.Write(PropValue{PropXResolution, 300}))
	assert.Equal(t, 0, p.XPosition)
	assert.Equal(t, 2550, p.XExtent, "whole width stays whole width")
	assert.Equal(t, 150, p.YResolution, "other axis untouched")
	assert.Equal(t, 1753, p.YExtent)
	require.NoError(t, p.Write(PropValue{PropYResolution, 600}))
	assert.Equal(t, 7014, p.YExtent, "whole height stays whole height, 1753*4 rounded down would lose 2 lines")
	require.NoError(t, p.Write(PropValue{PropYResolution, 75}))
	assert.Equal(t, 876, p.YExtent)

	// A window ending at the edge keeps ending there.
	p = DefaultProperties()
	require.NoError(t, p.Write(PropValue{PropYPosition, 1}, PropValue{PropYExtent, 1752}))
	require.NoError(t, p.Write(PropValue{PropYResolution, 600}))
	assert.Equal(t, 4, p.YPosition)
	assert.Equal(t, 7010, p.YExtent)

	// A 1 x 2 inch window at 1 inch from the left edge keeps its place.
	p = DefaultProperties()
	require.NoError(t, p.Write(PropValue{PropXPosition, 150}, PropValue{PropXExtent, 300}))
	require.NoError(t, p.Write(PropValue{PropXResolution, 600}))
	assert.Equal(t, 600, p.XPosition)
	assert.Equal(t, 1200, p.XExtent)
	require.NoError(t, p.Write(PropValue{PropXResolution, 75}))
	assert.Equal(t, 75, p.XPosition)
	assert.Equal(t, 150, p.XExtent)

	// Values written together with the resolution are taken as they are.
	require.NoError(t, p.Write(PropValue{PropXResolution, 300}, PropValue{PropXExtent, 7}))
	assert.Equal(t, 300, p.XPosition, "position rescaled")
	assert.Equal(t, 7, p.XExtent, "extent as written")

	// The last pixel at 600 dpi stays on the bed at 75 dpi, 1 pixel wide.
	p = DefaultProperties()
	require.NoError(t, p.Write(PropValue{PropYResolution, 600}, PropValue{PropYPosition, 7013}, PropValue{PropYExtent, 1}))
	require.NoError(t, p.Write(PropValue{PropYResolution, 75}))
	assert.Equal(t, 875, p.YPosition)
	assert.Equal(t, 1, p.YExtent)
	require.NoError(t, p.Validate())
}

func TestWriteDataType(t *testing.T) {
	cases := []struct {
		dt    DataType
		depth int
		name  string
	}{{DataBW, 1, "bw"}, {DataGray, 8, "gray"}, {DataColor, 24, "color"}}
	for _, c := range cases {
		p := DefaultProperties()
		require.NoError(t, p.Write(PropValue{PropDataType, int(c.dt)}))
		assert.Equal(t, c.dt, p.DataType)
		assert.Equal(t, c.depth, p.BitDepth, "depth follows the data type")
		assert.Equal(t, c.name, c.dt.String())

		p = DefaultProperties()
		assert.NoError(t, p.Write(PropValue{PropDataType, int(c.dt)}, PropValue{PropBitDepth, c.depth}))
	}

	p := DefaultProperties() // gray 8
	requirePropErr(t, p.Write(PropValue{PropBitDepth, 24}), "WIA_IPA_DEPTH", "24", "8 for gray")
	requirePropErr(t, p.Write(PropValue{PropDataType, int(DataColor)}, PropValue{PropBitDepth, 8}),
		"WIA_IPA_DEPTH", "8", "24 for color")
	requirePropErr(t, p.Write(PropValue{PropDataType, 1}), "WIA_IPA_DATATYPE", "1", "0 (bw), 2 (gray), 3 (color)")
	requirePropErr(t, p.Write(PropValue{PropDataType, -1}), "WIA_IPA_DATATYPE", "-1", "3 (color)")
	assert.Equal(t, DefaultProperties(), p)
	assert.Equal(t, "DataType(1)", DataType(1).String())
	assert.Zero(t, DataType(1).Depth())
}

func TestBytesPerLine(t *testing.T) {
	cases := []struct {
		dt        DataType
		ext, want int
	}{
		{DataBW, 1, 1}, {DataBW, 8, 1}, {DataBW, 9, 2}, {DataBW, 637, 80},
		{DataGray, 1, 1}, {DataGray, 637, 637},
		{DataColor, 1, 3}, {DataColor, 637, 1911},
	}
	for _, c := range cases {
		p := DefaultProperties()
		require.NoError(t, p.Write(PropValue{PropDataType, int(c.dt)}, PropValue{PropXExtent, c.ext}, PropValue{PropYExtent, 10}))
		assert.Equal(t, c.want, p.BytesPerLine(), "%v x %d", c.dt, c.ext)
		assert.Equal(t, int64(c.want*10), p.ImageSize())
	}
	// The largest image: 600 dpi color, whole bed.
	p := DefaultProperties()
	require.NoError(t, p.Write(PropValue{PropXResolution, 600}, PropValue{PropYResolution, 600}, PropValue{PropDataType, int(DataColor)}))
	assert.Equal(t, int64(5100*3*7014), p.ImageSize())
}

func TestWriteFormat(t *testing.T) {
	p := DefaultProperties()
	assert.Nil(t, p.Header(), "raw has no header")
	require.NoError(t, p.Write(PropValue{PropFormat, int(FormatPNM)}, PropValue{PropXExtent, 4}, PropValue{PropYExtent, 3}))
	assert.Equal(t, "P5\n4 3\n255\n", string(p.Header()))
	require.NoError(t, p.Write(PropValue{PropDataType, int(DataColor)}))
	assert.Equal(t, "P6\n4 3\n255\n", string(p.Header()))
	require.NoError(t, p.Write(PropValue{PropDataType, int(DataBW)}))
	assert.Equal(t, "P4\n4 3\n", string(p.Header()))
	require.NoError(t, p.Write(PropValue{PropFormat, int(FormatRaw)}))
	assert.Nil(t, p.Header())

	before := p
	requirePropErr(t, p.Write(PropValue{PropFormat, 2}), "WIA_IPA_FORMAT", "2", "0 (raw), 1 (pnm)")
	assert.Equal(t, before, p)
	assert.Equal(t, "raw", FormatRaw.String())
	assert.Equal(t, "pnm", FormatPNM.String())
	assert.Equal(t, "Format(7)", Format(7).String())
}

func TestWriteBufferSize(t *testing.T) {
	for _, ok := range []int{512, 1024, 4096, 64 << 10, 1 << 20} {
		p := DefaultProperties()
		require.NoError(t, p.Write(PropValue{PropBufferSize, ok}), "%d", ok)
		assert.Equal(t, ok, p.BufferSize)
	}
	for _, bad := range []int{0, -512, 511, 513, 1000, 1<<20 + 512, 2 << 20} {
		p := DefaultProperties()
		requirePropErr(t, p.Write(PropValue{PropBufferSize, bad}), "WIA_IPA_BUFFER_SIZE", itoa(bad), "512..1048576, a multiple of 512")
		assert.Equal(t, DefaultProperties(), p)
	}
}

func TestWriteAtomic(t *testing.T) {
	base := DefaultProperties()

	// A valid change followed by an invalid one: nothing is applied.
	p := base
	err := p.Write(PropValue{PropXResolution, 300}, PropValue{PropDataType, int(DataColor)}, PropValue{PropBufferSize, 3})
	requirePropErr(t, err, "WIA_IPA_BUFFER_SIZE", "3", "512..")
	assert.Equal(t, base, p)

	// Read-only and unknown properties refuse the whole write.
	p = base
	err = p.Write(PropValue{PropXResolution, 300}, PropValue{PropItemSize, 10})
	requirePropErr(t, err, "WIA_IPA_ITEM_SIZE", "10", "read-only")
	assert.Equal(t, base, p)
	for _, id := range []PropID{PropBedWidth, PropBedHeight, PropBytesPerLine, PropItemSize} {
		assert.True(t, id.ReadOnly(), "%v", id)
		requirePropErr(t, p.Write(PropValue{id, 1}), id.String(), "1", "read-only")
	}
	err = p.Write(PropValue{PropXResolution, 300}, PropValue{PropID(99), 1})
	requirePropErr(t, err, "PropID(99)", "1", "WIA_IPS_XRES")
	err = p.Write(PropValue{PropID(0), 1})
	requirePropErr(t, err, "PropID(0)", "1", "WIA_IPA_ITEM_SIZE")
	assert.Equal(t, base, p)

	// An empty write is valid and changes nothing.
	require.NoError(t, p.Write())
	assert.Equal(t, base, p)

	// A property written twice takes its last value.
	require.NoError(t, p.Write(PropValue{PropBufferSize, 512}, PropValue{PropBufferSize, 1024}))
	assert.Equal(t, 1024, p.BufferSize)
}

// TestWriteRandom throws random writes at Properties: each write is either
// refused and changes nothing, or accepted and leaves valid properties.
func TestWriteRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := []int{-1, 0, 1, 2, 3, 7, 24, 75, 100, 150, 300, 511, 512, 600, 876, 1275, 2550, 5099, 5100, 7014, 1 << 20}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	p := DefaultProperties()
	accepted := 0
	for i := 0; i < n; i++ {
		w := make([]PropValue, 1+r.IntN(4))
		for j := range w {
			w[j] = PropValue{PropID(1 + r.IntN(int(PropBufferSize))), values[r.IntN(len(values))]}
			if r.IntN(20) == 0 {
				w[j].ID = PropID(r.IntN(int(numProps) + 2))
			}
		}
		before := p
		if err := p.Write(w...); err != nil {
			require.Equal(t, before, p, "refused %v changed %v", w, before)
			require.ErrorIs(t, err, ErrInvalidProperty)
			continue
		}
		accepted++
		require.NoError(t, p.Validate(), "accepted %v but left %+v", w, p)
	}
	assert.Greater(t, accepted, n/20, "the random writes exercise the accepting path")
}

func TestRead(t *testing.T) {
	p := DefaultProperties()
	require.NoError(t, p.Write(PropValue{PropDataType, int(DataColor)}, PropValue{PropXExtent, 100}, PropValue{PropYExtent, 50}))
	got, err := p.Read(PropXResolution, PropYResolution, PropXPosition, PropYPosition, PropXExtent, PropYExtent,
		PropDataType, PropBitDepth, PropFormat, PropBufferSize, PropBedWidth, PropBedHeight, PropBytesPerLine, PropItemSize)
	require.NoError(t, err)
	assert.Equal(t, []PropValue{
		{PropXResolution, 150}, {PropYResolution, 150}, {PropXPosition, 0}, {PropYPosition, 0},
		{PropXExtent, 100}, {PropYExtent, 50}, {PropDataType, 3}, {PropBitDepth, 24},
		{PropFormat, 0}, {PropBufferSize, 65536}, {PropBedWidth, 8500}, {PropBedHeight, 11690},
		{PropBytesPerLine, 300}, {PropItemSize, 15000},
	}, got)

	got, err = p.Read(PropXExtent, PropID(42))
	assert.Nil(t, got)
	requirePropErr(t, err, "PropID(42)", "42", "WIA_IPS_XRES")

	got, err = p.Read()
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestPropIDNames(t *testing.T) {
	names := map[PropID]string{
		PropXResolution: "WIA_IPS_XRES", PropYResolution: "WIA_IPS_YRES",
		PropXPosition: "WIA_IPS_XPOS", PropYPosition: "WIA_IPS_YPOS",
		PropXExtent: "WIA_IPS_XEXTENT", PropYExtent: "WIA_IPS_YEXTENT",
		PropDataType: "WIA_IPA_DATATYPE", PropBitDepth: "WIA_IPA_DEPTH",
		PropFormat: "WIA_IPA_FORMAT", PropBufferSize: "WIA_IPA_BUFFER_SIZE",
		PropBedWidth: "WIA_DPS_HORIZONTAL_BED_SIZE", PropBedHeight: "WIA_DPS_VERTICAL_BED_SIZE",
		PropBytesPerLine: "WIA_IPA_BYTES_PER_LINE", PropItemSize: "WIA_IPA_ITEM_SIZE",
	}
	require.Len(t, names, int(numProps)-1, "every property named")
	for id, name := range names {
		assert.Equal(t, name, id.String())
		assert.True(t, id.Valid())
	}
	assert.False(t, PropID(0).Valid())
	assert.False(t, numProps.Valid())
	assert.False(t, PropXResolution.ReadOnly())
	assert.False(t, PropBufferSize.ReadOnly())
}

func TestPropertyErrorMessage(t *testing.T) {
	p := DefaultProperties()
	err := p.Write(PropValue{PropXResolution, 123})
	assert.EqualError(t, err, "minidrv: property WIA_IPS_XRES = 123 refused (allowed: 75, 100, 150, 200, 300, 600)")
}
