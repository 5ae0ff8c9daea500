package escl_test

// The values of scan:ScanSettings are read as their schema types: the
// numbers (XResolution, YResolution, XOffset, YOffset, Width, Height) as
// unsigned decimal integers, Duplex as a boolean, every value as text. A
// value that is not one gets 400 with a reason that names the element; XML
// white space around a value (the schema's whitespace="collapse") and XML
// that spells the same text differently (CDATA, character references,
// comments) are accepted, and so is exactly what sane-airscan sends.

import (
	"net/http"
	"strings"
	"testing"
)

// adv4AirscanBody is a ScanSettings document as sane-airscan's escl_scan_query
// writes it (xml_wr: numbers with "%u", booleans "true"/"false", Duplex
// only for the feeder), for a gray 75 dpi scan of one square inch at (3,5).
const adv4AirscanBody = `<?xml version="1.0"?>
<scan:ScanSettings xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm">
  <pwg:Version>2.0</pwg:Version>
  <pwg:ScanRegions>
    <pwg:ScanRegion>
      <pwg:ContentRegionUnits>escl:ThreeHundredthsOfInches</pwg:ContentRegionUnits>
      <pwg:XOffset>3</pwg:XOffset>
      <pwg:YOffset>5</pwg:YOffset>
      <pwg:Width>300</pwg:Width>
      <pwg:Height>300</pwg:Height>
    </pwg:ScanRegion>
  </pwg:ScanRegions>
  <pwg:InputSource>Platen</pwg:InputSource>
  <scan:ColorMode>Grayscale8</scan:ColorMode>
  <pwg:DocumentFormat>image/png</pwg:DocumentFormat>
  <scan:DocumentFormatExt>image/png</scan:DocumentFormatExt>
  <scan:XResolution>75</scan:XResolution>
  <scan:YResolution>75</scan:YResolution>
</scan:ScanSettings>
`

func TestAdv4ScanSettingsValues(t *testing.T) {
	r := newRig(t, nil)
	region := advRegion("0", "0", "300", "300")
	res := func(v string) string {
		return `<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>` + v + `</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region
	}
	for _, tc := range []struct {
		name, body string
		want       int
		says       string // in a refusal's reason
	}{
		// What real clients send.
		{"sane-airscan", adv4AirscanBody, 201, ""},
		{"sane-airscan with Duplex false", strings.Replace(adv4AirscanBody, "</scan:YResolution>", "</scan:YResolution>\n  <scan:Duplex>false</scan:Duplex>", 1), 201, ""},

		// XML spellings of the same value.
		{"XML white space around", advBody(res(" \t\r\n75\n ")), 201, ""},
		{"leading zeros", advBody(res("0075")), 201, ""},
		{"CDATA", advBody(res("<![CDATA[75]]>")), 201, ""},
		{"character reference", advBody(res("&#55;5")), 201, ""},
		{"comment inside", advBody(res("7<!-- -->5")), 201, ""},
		{"Duplex 0", advBody(advSmall + region + `<scan:Duplex>0</scan:Duplex>`), 201, ""},
		{"Duplex false, spaced", advBody(advSmall + region + `<scan:Duplex> false </scan:Duplex>`), 201, ""},

		// Not a number: 400, naming the element.
		{"plus sign", advBody(res("+75")), 400, "XResolution"},
		{"minus sign", advBody(res("-75")), 400, "XResolution"},
		{"minus zero", advBody(res("-0")), 400, "XResolution"},
		{"hex", advBody(res("0x4b")), 400, "XResolution"},
		{"fraction", advBody(res("75.0")), 400, "XResolution"},
		{"exponent", advBody(res("75e0")), 400, "XResolution"},
		{"space inside", advBody(res("7 5")), 400, "XResolution"},
		{"empty", advBody(res("")), 400, "XResolution"},
		{"only spaces", advBody(res("  ")), 400, "XResolution"},
		{"over 1e7", advBody(res("10000001")), 400, "XResolution"},
		{"over int32", advBody(res("2147483648")), 400, "XResolution"},
		{"over uint32", advBody(res("4294967371")), 400, "XResolution"}, // 75 modulo 2^32
		{"over uint64", advBody(res("18446744073709551691")), 400, "XResolution"},
		{"no-break space before", advBody(res("\u00a075")), 400, "XResolution"},
		{"em space after", advBody(res("75\u2003")), 400, "XResolution"},
		{"next line after", advBody(res("75\u0085")), 400, "XResolution"},
		{"ideographic space in a width", advBody(advSmall + advRegion("0", "0", "\u3000300", "300")), 400, "Width"},
		{"child element in a number", advBody(res("7<x/>5")), 400, "XResolution"},
		{"child element with the digits", advBody(res("<b>75</b>")), 400, "XResolution"},
		{"child element in a height", advBody(advSmall + advRegion("0", "0", "300", "3<i>0</i>0")), 400, "Height"},
		{"child element in an offset", advBody(advSmall + advRegion("0<x/>", "0", "300", "300")), 400, "XOffset"},

		// Other values: text only, and a boolean for Duplex.
		{"child element in a colour mode", advBody(`<scan:ColorMode>Gray<x/>scale8</scan:ColorMode><scan:XResolution>75</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region), 400, "ColorMode"},
		{"child element in a format", advBody(advSmall + region + `<scan:DocumentFormatExt>image/<x/>png</scan:DocumentFormatExt>`), 400, "DocumentFormatExt"},
		{"child element in the units", advBody(advSmall + strings.Replace(region, ">escl:ThreeHundredthsOfInches<", "><u>escl:ThreeHundredthsOfInches</u><", 1)), 400, "ContentRegionUnits"},
		{"no-break space around a colour mode", advBody(`<scan:ColorMode>` + "\u00a0" + `Grayscale8</scan:ColorMode><scan:XResolution>75</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region), 409, "colour mode"},
		{"Duplex not a boolean", advBody(advSmall + region + `<scan:Duplex>banana</scan:Duplex>`), 400, "Duplex"},
		{"Duplex empty", advBody(advSmall + region + `<scan:Duplex></scan:Duplex>`), 400, "Duplex"},
		{"Duplex upper case", advBody(advSmall + region + `<scan:Duplex>FALSE</scan:Duplex>`), 400, "Duplex"},
		{"Duplex 2", advBody(advSmall + region + `<scan:Duplex>2</scan:Duplex>`), 400, "Duplex"},
		{"Duplex true", advBody(advSmall + region + `<scan:Duplex>true</scan:Duplex>`), 409, "duplex"},
		{"Duplex 1", advBody(advSmall + region + `<scan:Duplex>1</scan:Duplex>`), 409, "duplex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, msg := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", tc.body)
			msg = strings.TrimSpace(msg)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d (%.300s), want %d", resp.StatusCode, msg, tc.want)
			}
			if resp.StatusCode == http.StatusCreated {
				advFinishJob(t, r, resp.Header.Get("Location"))
				return
			}
			if tc.says != "" && !strings.Contains(msg, tc.says) {
				t.Errorf("reason %q does not say %q", msg, tc.says)
			}
		})
	}
	advCheckWorks(t, r)
}
