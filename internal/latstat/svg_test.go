package latstat

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// svgDoc is what the tests learn from parsing a plot.
type svgDoc struct {
	root    xml.StartElement
	elems   map[string]int // element local name -> count
	bars    int
	polyPts int
	texts   []string
	classes map[string]bool
}

func parseSVG(t *testing.T, data []byte) svgDoc {
	t.Helper()
	require.True(t, bytes.HasPrefix(data, []byte("<?xml ")), "document starts with an XML declaration")
	d := xml.NewDecoder(bytes.NewReader(data))
	doc := svgDoc{elems: map[string]int{}, classes: map[string]bool{}}
	var stack []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err, "SVG must be well-formed XML")
		switch tk := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 {
				doc.root = tk
			}
			stack = append(stack, tk.Name.Local)
			doc.elems[tk.Name.Local]++
			for _, a := range tk.Attr {
				switch {
				case a.Name.Local == "class":
					doc.classes[a.Value] = true
					if a.Value == "bar" {
						doc.bars++
					}
				case a.Name.Local == "points":
					doc.polyPts += len(strings.Fields(a.Value))
				}
			}
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 && stack[len(stack)-1] == "text" {
				doc.texts = append(doc.texts, string(tk))
			}
		}
	}
	require.Empty(t, stack, "every element closed")
	return doc
}

func TestWriteSVG(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	h := New()
	for range 10000 {
		h.Record(time.Duration(math.Exp(9.5 + 0.8*rng.NormFloat64())))
	}
	var buf bytes.Buffer
	title := `cancel <pending=64> & "friends"`
	require.NoError(t, h.WriteSVG(&buf, title))
	doc := parseSVG(t, buf.Bytes())

	assert.Equal(t, "svg", doc.root.Name.Local)
	assert.Equal(t, "http://www.w3.org/2000/svg", doc.root.Name.Space, "svg namespace")
	assert.Contains(t, doc.texts, title, "title is shown, escaped correctly")
	assert.True(t, doc.classes["histogram"] && doc.classes["cdf"] && doc.classes["tail"], "three panels")
	assert.Greater(t, doc.bars, 5, "histogram bars")
	assert.Equal(t, 3, countClass(buf.String(), "marker"), "p50, p99, p99.9 markers")
	assert.Greater(t, doc.polyPts, 10, "CDF polyline points")
	assert.GreaterOrEqual(t, doc.elems["line"], 10, "tick marks")
	assert.Equal(t, 3, countText(doc.texts, "latency (log scale)"), "every latency axis is logarithmic for a wide spread")
	assert.Contains(t, doc.texts, "50%", "CDF y labels")
	var units int
	for _, s := range doc.texts {
		if strings.HasSuffix(s, "µs") || strings.HasSuffix(s, "ms") {
			units++
		}
	}
	assert.Greater(t, units, 4, "x tick labels carry units")
}

func TestWriteSVGNarrowAndEmpty(t *testing.T) {
	h := New()
	for i := range 1000 {
		h.Record(time.Duration(13_000 + i))
	}
	var buf bytes.Buffer
	require.NoError(t, h.WriteSVG(&buf, "narrow"))
	doc := parseSVG(t, buf.Bytes())
	assert.Equal(t, 3, countText(doc.texts, "latency (linear)"), "narrow spread uses a linear axis")
	assert.Greater(t, doc.bars, 0)

	buf.Reset()
	require.NoError(t, New().WriteSVG(&buf, "empty"))
	doc = parseSVG(t, buf.Bytes())
	assert.Contains(t, doc.texts, "no samples")
	assert.Zero(t, doc.bars)

	buf.Reset()
	one := New()
	one.Record(0)
	require.NoError(t, one.WriteSVG(&buf, "zero"))
	parseSVG(t, buf.Bytes())
}

func TestWriteSVGReportsWriteError(t *testing.T) {
	h := New()
	h.Record(time.Microsecond)
	assert.ErrorIs(t, h.WriteSVG(failWriter{}, "x"), io.ErrShortWrite)
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

func countText(texts []string, s string) int {
	n := 0
	for _, t := range texts {
		if t == s {
			n++
		}
	}
	return n
}

func countClass(doc, class string) int { return strings.Count(doc, `class="`+class+`"`) }

func TestFmtNS(t *testing.T) {
	for v, want := range map[float64]string{
		0: "0ns", 999: "999ns", 1000: "1µs", 1500: "1.5µs", 13_700: "13.7µs",
		250_000: "250µs", 2e6: "2ms", 3.25e9: "3.25s",
	} {
		assert.Equal(t, want, fmtNS(v), "fmtNS(%v)", v)
	}
}

// polyline returns the points of the polyline of the given class.
func polyline(t *testing.T, data []byte, class string) [][2]float64 {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := d.Token()
		require.NoError(t, err, "no polyline of class %q", class)
		se, ok := tok.(xml.StartElement)
		if !ok || se.Name.Local != "polyline" {
			continue
		}
		var cls, pts string
		for _, a := range se.Attr {
			switch a.Name.Local {
			case "class":
				cls = a.Value
			case "points":
				pts = a.Value
			}
		}
		if cls != class {
			continue
		}
		var out [][2]float64
		for _, p := range strings.Fields(pts) {
			var xy [2]float64
			_, err := fmt.Sscanf(p, "%g,%g", &xy[0], &xy[1])
			require.NoError(t, err, "point %q", p)
			out = append(out, xy)
		}
		return out
	}
}

// TestWriteSVGTail: 10 samples in 10000 far out (1 ms against about 10 µs)
// are invisible on the CDF (its top 0.1%) but make a plateau at 0.1% on the
// tail panel that reaches the maximum, where the curve drops to the floor.
func TestWriteSVGTail(t *testing.T) {
	h := New()
	rng := rand.New(rand.NewPCG(5, 6))
	for range 9990 {
		h.Record(time.Duration(10_000 + rng.Int64N(1_000)))
	}
	for i := range 10 {
		h.Record(time.Duration(1_000_000 + i*10_000))
	}
	var buf bytes.Buffer
	require.NoError(t, h.WriteSVG(&buf, "tail"))
	doc := parseSVG(t, buf.Bytes())
	assert.True(t, doc.classes["tail"], "a tail panel")
	assert.Equal(t, 3, countText(doc.texts, "latency (log scale)"), "three panels share the log latency axis")
	assert.Contains(t, doc.texts, "fraction of samples above (log scale)")
	for _, l := range []string{"100%", "10%", "1%", "0.1%", "0.01%"} {
		assert.Contains(t, doc.texts, l, "tail y label %s: 10000 samples need 4 decades", l)
	}
	assert.Equal(t, 3, countClass(buf.String(), "tail-marker"), "p99, p99.9 and max marked")
	assert.Contains(t, doc.texts, "max "+fmtNS(float64(h.Max())))

	x := newXScale(h)
	ts := newTailScale(uint64(h.Count()), headHeight+2*panelHeight)
	pts := polyline(t, buf.Bytes(), "tail-line")
	require.NotEmpty(t, pts)
	assert.InDelta(t, ts.y(1), pts[0][1], 0.1, "the tail starts at 100%")
	last := pts[len(pts)-1]
	assert.InDelta(t, x.px(float64(h.Max())), last[0], 0.1, "the tail ends at the maximum")
	assert.InDelta(t, ts.y(0), last[1], 0.1, "... at the floor")
	plateau := false
	for _, p := range pts {
		if math.Abs(p[1]-ts.y(1e-3)) < 0.1 && p[0] > x.px(500_000) {
			plateau = true
		}
	}
	assert.True(t, plateau, "the 10 slow samples hold the tail at 0.1%% out to 1 ms: %v", pts)
	for i := 1; i < len(pts); i++ {
		assert.GreaterOrEqual(t, pts[i][0], pts[i-1][0], "x never goes back")
		assert.GreaterOrEqual(t, pts[i][1], pts[i-1][1], "the fraction above never grows")
	}
}

func TestTailScale(t *testing.T) {
	for n, decades := range map[uint64]int{0: 1, 1: 1, 9: 1, 10: 1, 11: 2, 100: 2, 10000: 4, 10001: 5} {
		assert.Equal(t, decades, newTailScale(n, 0).decades, "n=%d", n)
	}
	ts := newTailScale(1000, 0)
	assert.Less(t, ts.y(1), ts.y(0.1))
	assert.InDelta(t, ts.y(0.1)-ts.y(1), ts.y(0.01)-ts.y(0.1), 1e-9, "equal steps per decade")
	assert.Equal(t, ts.y(1e-3), ts.y(0), "zero maps to the floor")
}
