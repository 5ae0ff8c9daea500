package escl_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestAdv18ScanSettingsOdd: scan settings hostile or odd in ways the
// earlier tables do not try (the root's namespace, many attributes or
// elements, the same setting twice under two namespaces, Intent only)
// get the documented status, never a 5xx, and an accepted one runs.
func TestAdv18ScanSettingsOdd(t *testing.T) {
	r := newRig(t, nil)
	const ns = `xmlns:scan="http://schemas.hp.com/imaging/escl/2011/05/03" xmlns:pwg="http://www.pwg.org/schemas/2010/12/sm"`
	region := advRegion("0", "0", "300", "300")
	var attrs strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&attrs, ` a%d="%d"`, i, i)
	}
	many := strings.Repeat(`<scan:Brightness>1</scan:Brightness>`, 1500)
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"root in pwg namespace", `<pwg:ScanSettings ` + ns + `>` + advSmall + `</pwg:ScanSettings>`, 400},
		{"root prefix unbound", `<scan:ScanSettings>` + advSmall + `</scan:ScanSettings>`, 400},
		{"root default namespace", `<ScanSettings xmlns="http://schemas.hp.com/imaging/escl/2011/05/03">` +
			`<ColorMode>Grayscale8</ColorMode><XResolution>75</XResolution><YResolution>75</YResolution>` +
			strings.ReplaceAll(region, "pwg:", "") + `</ScanSettings>`, 201},
		{"root name case", `<scan:scanSettings ` + ns + `>` + advSmall + `</scan:scanSettings>`, 400},
		{"two roots", advBody(advSmall+region) + advBody(advSmall+region), 400},
		{"text after root", advBody(advSmall+region) + "x", 400},
		{"3000 attributes", `<scan:ScanSettings ` + ns + attrs.String() + `>` + advSmall + region + `</scan:ScanSettings>`, 201},
		{"duplicate attribute", `<scan:ScanSettings ` + ns + ` a="1" a="2">` + advSmall + region + `</scan:ScanSettings>`, 400},
		{"1500 unknown elements", advBody(advSmall + region + many), 201},
		{"colour mode in two namespaces", advBody(advSmall + region + `<pwg:ColorMode>RGB24</pwg:ColorMode>`), 400},
		{"conflicting Y resolution", advBody(advSmall + region + `<pwg:YResolution>150</pwg:YResolution>`), 400},
		{"conflicting height", advBody(advSmall + strings.Replace(region, "</pwg:ScanRegion>", "<scan:Height>150</scan:Height></pwg:ScanRegion>", 1)), 400},
		{"region without wrapper ignored", advBody(advSmall + `<pwg:ScanRegion><pwg:Width>abc</pwg:Width></pwg:ScanRegion>` + region), 201},
		{"offset only, outside", advBody(advSmall + advRegion("2600", "0", "300", "300")), 409},
		{"offset max, size 0", advBody(advSmall + advRegion("10000000", "10000000", "0", "0")), 409},
		{"X != Y resolution", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>150</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region), 201},
		{"unknown input source", advBody(advSmall + region + `<pwg:InputSource>Camera</pwg:InputSource>`), 409},
		{"unknown format ext", advBody(advSmall + region + `<scan:DocumentFormatExt>image/tiff</scan:DocumentFormatExt>`), 409},
		{"format ext overrides", advBody(advSmall + region + `<pwg:DocumentFormat>application/pdf</pwg:DocumentFormat><scan:DocumentFormatExt>image/jpeg</scan:DocumentFormatExt>`), 201},
		{"units mm", advBody(advSmall + strings.Replace(region, "escl:ThreeHundredthsOfInches", "escl:Millimeters", 1)), 409},
		{"leading zeros", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>00075</scan:XResolution><scan:YResolution>075</scan:YResolution>` + advRegion("000", "0", "0300", "300")), 201},
		{"CDATA number", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution><![CDATA[75]]></scan:XResolution><scan:YResolution>7<!-- c -->5</scan:YResolution>` + region), 201},
		{"char ref number", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>&#55;5</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region), 201},
		{"no-break space", advBody(`<scan:ColorMode>Grayscale8</scan:ColorMode><scan:XResolution>75&#160;</scan:XResolution><scan:YResolution>75</scan:YResolution>` + region), 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := r.do(t, "POST", "/eSCL/ScanJobs", "text/xml", tc.body)
			assert.Equal(t, tc.want, resp.StatusCode, "%.300s", body)
			if resp.StatusCode == http.StatusCreated {
				advFinishJob(t, r, resp.Header.Get("Location"))
				return
			}
			assert.NotEmpty(t, strings.TrimSpace(body), "a refusal without a reason")
		})
	}
	advCheckWorks(t, r)
}
