package minidrv_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cancelio/cancelio/ioring"
	"github.com/cancelio/cancelio/minidrv"
	"github.com/cancelio/cancelio/minidrv/minidrvtest"
	"github.com/cancelio/cancelio/usb/usbsim"
)

// adv17Acquire runs one acquisition of r's driver (Locked) and checks the
// result against the properties in force: the header Properties.Header
// gives, then exactly ImageSize bytes, which are the simulated scanner's
// image of a scan of XExtent × YExtent pixels in the data type's format.
func adv17Acquire(t *testing.T, d *minidrv.Driver, sc *usbsim.Scanner, bed *minidrv.Item, what string) {
	t.Helper()
	p := d.Properties()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var sink bytes.Buffer
	err := d.AcquireItemData(ctx, bed, &sink, nil)
	require.NoError(t, err, what)
	require.Equal(t, minidrv.Locked, d.State(), what)
	scan := sc.LastScan()
	require.Equal(t, uint32(p.XExtent), scan.Width, "%s: scan width", what)
	require.Equal(t, uint32(p.YExtent), scan.Height, "%s: scan height", what)
	wantFmt := map[minidrv.DataType]usbsim.Format{minidrv.DataBW: usbsim.FormatBW1, minidrv.DataGray: usbsim.FormatGray8, minidrv.DataColor: usbsim.FormatRGB24}[p.DataType]
	require.Equal(t, wantFmt, scan.Format, "%s: scan format", what)
	hdr := p.Header()
	got := sink.Bytes()
	require.True(t, bytes.HasPrefix(got, hdr), "%s: header %q, got %q", what, hdr, got[:min(len(got), len(hdr))])
	body := got[len(hdr):]
	require.Equal(t, p.ImageSize(), int64(len(body)), "%s: image bytes", what)
	require.Equal(t, int64(p.BytesPerLine())*int64(p.YExtent), int64(len(body)), "%s: lines", what)
	require.True(t, bytes.Equal(usbsim.ExpectedImage(scan), body), "%s: image bytes differ", what)
	if p.Format == minidrv.FormatPNM {
		var w, h int
		var magic string
		_, err := fmt.Sscan(string(hdr), &magic, &w, &h)
		require.NoError(t, err, what)
		assert.Equal(t, p.XExtent, w, what)
		assert.Equal(t, p.YExtent, h, what)
	}
}

// TestAdv17GeometryExact: random valid windows (both resolutions, odd
// positions and extents, bw with widths that are not whole bytes, pnm and
// raw, chunk sizes from one packet up) acquired over simulated scanners
// whose MaxTransfer is not a multiple of the driver's chunk granule (from
// the smallest the simulator takes, one event), with queue depths from 1:
// every image is the requested geometry byte for byte.
func TestAdv17GeometryExact(t *testing.T) {
	res := minidrv.Resolutions()
	for i, mt := range []int{usbsim.EventSize, 100, 511, 513, 1000, 4097, 0} {
		rng := rand.New(rand.NewPCG(17, uint64(mt)))
		qd := 1 + i%6
		t.Run(fmt.Sprintf("maxtransfer%d_qd%d", mt, qd), func(t *testing.T) {
			r := newSimRig(t, minidrv.Config{QueueDepth: qd}, usbsim.Config{MaxTransfer: mt})
			require.NoError(t, r.d.Lock(context.Background()))
			for i := range 12 {
				xr, yr := res[rng.IntN(len(res))], res[rng.IntN(len(res))]
				xl, yl := minidrv.MaxPixels(minidrv.BedWidth, xr), minidrv.MaxPixels(minidrv.BedHeight, yr)
				w := 1 + rng.IntN(min(97, xl))
				h := 1 + rng.IntN(min(13, yl))
				if i%4 == 0 { // at the far edge of the bed
					w, h = min(w, xl), min(h, yl)
				}
				x, y := rng.IntN(xl-w+1), rng.IntN(yl-h+1)
				if i%4 == 0 {
					x, y = xl-w, yl-h
				}
				dt := []minidrv.DataType{minidrv.DataBW, minidrv.DataGray, minidrv.DataColor}[rng.IntN(3)]
				f := []minidrv.Format{minidrv.FormatRaw, minidrv.FormatPNM}[rng.IntN(2)]
				buf := minidrv.BufferAlign * (1 + rng.IntN(8))
				changes := []minidrv.PropValue{
					{ID: minidrv.PropXResolution, Value: xr}, {ID: minidrv.PropYResolution, Value: yr},
					{ID: minidrv.PropXPosition, Value: x}, {ID: minidrv.PropYPosition, Value: y},
					{ID: minidrv.PropXExtent, Value: w}, {ID: minidrv.PropYExtent, Value: h},
					{ID: minidrv.PropDataType, Value: int(dt)}, {ID: minidrv.PropFormat, Value: int(f)},
					{ID: minidrv.PropBufferSize, Value: buf},
				}
				require.NoError(t, r.d.WriteItemProperties(r.bed, changes...), "%v", changes)
				p := r.d.Properties()
				require.Equal(t, minidrv.Properties{XResolution: xr, YResolution: yr, XPosition: x, YPosition: y,
					XExtent: w, YExtent: h, DataType: dt, BitDepth: dt.Depth(), Format: f, BufferSize: buf}, p)
				adv17Acquire(t, r.d, r.sc, r.bed, fmt.Sprintf("case %d %+v", i, p))
			}
		})
	}
}

// TestAdv17SmallRing: a driver on the smallest rings its Config accepts
// (QueueDepth 0 takes what the ring allows) acquires exact images, and a
// cancel on them still works.
func TestAdv17SmallRing(t *testing.T) {
	for _, entries := range []int{2, 4, 8} {
		t.Run(fmt.Sprint(entries), func(t *testing.T) {
			ring, err := ioring.New(ioring.Config{Entries: entries})
			require.NoError(t, err)
			defer func() { assert.NoError(t, ring.Close()) }()
			sc, err := usbsim.NewScanner(usbsim.Config{MaxTransfer: 4096})
			require.NoError(t, err)
			defer func() { assert.NoError(t, sc.Close()) }()
			d, err := minidrv.New(minidrv.Config{Ring: ring, Open: minidrvtest.SimOpener(ring, sc), AbortTimeout: answerWithin})
			require.NoError(t, err)
			assert.LessOrEqual(t, 2*d.QueueDepth(), entries)
			require.NoError(t, d.Initialize(context.Background()))
			defer func() {
				for d.State() != minidrv.Unloaded {
					if !assert.NoError(t, d.Uninitialize()) {
						return
					}
				}
			}()
			root, err := d.Items()
			require.NoError(t, err)
			bed := root.Find("Flatbed")
			require.NoError(t, d.Lock(context.Background()))
			require.NoError(t, d.WriteItemProperties(bed,
				minidrv.PropValue{ID: minidrv.PropXExtent, Value: 300},
				minidrv.PropValue{ID: minidrv.PropYExtent, Value: 200},
				minidrv.PropValue{ID: minidrv.PropBufferSize, Value: 512}))
			adv17Acquire(t, d, sc, bed, "first")
			// Canceled half-way, then exact again.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			n := 0
			err = d.AcquireItemData(ctx, bed, &bytes.Buffer{}, func(minidrv.Progress) bool { n++; return n < 4 })
			require.ErrorIs(t, err, minidrv.ErrCanceled)
			adv17Acquire(t, d, sc, bed, "after a cancel")
			require.NoError(t, d.Unlock())
		})
	}
}
