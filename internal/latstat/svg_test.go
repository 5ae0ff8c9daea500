package latstat

import (
	"bytes"
	"encoding/xml"
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
	assert.True(t, doc.classes["histogram"] && doc.classes["cdf"], "two panels")
	assert.Greater(t, doc.bars, 5, "histogram bars")
	assert.Equal(t, 3, countClass(buf.String(), "marker"), "p50, p99, p99.9 markers")
	assert.Greater(t, doc.polyPts, 10, "CDF polyline points")
	assert.GreaterOrEqual(t, doc.elems["line"], 10, "tick marks")
	assert.Equal(t, 2, countText(doc.texts, "latency (log scale)"), "both x axes are logarithmic for a wide spread")
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
	assert.Equal(t, 2, countText(doc.texts, "latency (linear)"), "narrow spread uses a linear axis")
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
