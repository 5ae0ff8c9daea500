package escl

import (
	"slices"
	"testing"

	"github.com/cancelio/cancelio/minidrv"
)

// fuzzCaps are capabilities like the driver's, without a driver.
func fuzzCaps() *caps {
	c := &caps{
		resolutions: minidrv.Resolutions(),
		modes:       []string{modeBW, modeGray, modeColor},
		formats:     []string{MIMEPNG, MIMEJPEG},
		defaults:    minidrv.DefaultProperties(),
	}
	g := granule(c.resolutions)
	c.bedWidth = minidrv.BedWidth * unitsPerInch / 1000 / g * g
	c.bedHeight = minidrv.BedHeight * unitsPerInch / 1000 / g * g
	return c
}

// FuzzScanSettings feeds arbitrary request bodies to the parser and the
// checks: they never panic, and whatever they accept the driver accepts
// too, inside the bed.
func FuzzScanSettings(f *testing.F) {
	f.Add([]byte(`<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm"><pwg:ScanRegions><pwg:ScanRegion><pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits><pwg:XOffset>7</pwg:XOffset><pwg:YOffset>3</pwg:YOffset><pwg:Width>601</pwg:Width><pwg:Height>299</pwg:Height></pwg:ScanRegion></pwg:ScanRegions><pwg:InputSource>Platen</pwg:InputSource><scan:ColorMode>RGB24</scan:ColorMode><scan:DocumentFormatExt>image/jpeg</scan:DocumentFormatExt><scan:XResolution>100</scan:XResolution><scan:YResolution>200</scan:YResolution></scan:ScanSettings>`))
	f.Add([]byte(`<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03"/>`))
	f.Add([]byte(`<?xml version="1.0"?><!-- c --><scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03"><scan:XResolution>600</scan:XResolution><scan:YResolution>75</scan:YResolution></scan:ScanSettings> `))
	f.Add([]byte(`<a><b>`))
	c := fuzzCaps()
	f.Fuzz(func(t *testing.T, body []byte) {
		ss, err := parseScanSettings(body)
		if err != nil {
			if !isMalformed(err) {
				t.Fatalf("parse error %v is not marked malformed", err)
			}
			return
		}
		set, err := c.check(ss)
		if err != nil {
			return
		}
		if !slices.Contains(c.resolutions, set.XResolution) || !slices.Contains(c.resolutions, set.YResolution) {
			t.Fatalf("accepted resolution %dx%d", set.XResolution, set.YResolution)
		}
		p := minidrv.DefaultProperties()
		if err := p.Write(set.props()...); err != nil {
			t.Fatalf("accepted settings %+v the driver refuses: %v", set, err)
		}
		if set.Width < 1 || set.Height < 1 ||
			set.XOffset+set.Width > minidrv.MaxPixels(minidrv.BedWidth, set.XResolution) ||
			set.YOffset+set.Height > minidrv.MaxPixels(minidrv.BedHeight, set.YResolution) {
			t.Fatalf("accepted window %+v outside the bed", set)
		}
	})
}
