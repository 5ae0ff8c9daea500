package latstat

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Plot geometry, in SVG user units.
const (
	svgWidth    = 800
	panelHeight = 300
	headHeight  = 56
	marginLeft  = 72
	marginRight = 24
	marginTop   = 20
	marginBot   = 48
	displayBins = 60
)

// WriteSVG writes a standalone SVG document (XML header, svg namespace) with
// three panels over one latency axis: a histogram of the samples (count per
// bin); their cumulative distribution with p50, p99 and p99.9 marked; and the
// tail, the fraction of samples above each latency (1 - CDF) on a
// logarithmic axis down to 1/Count, with p99, p99.9 and the maximum marked,
// so that the rare slow samples a linear CDF flattens into its top edge stay
// visible (the way latency tails are usually read). The latency axis is
// logarithmic when the samples span at least a factor of 8, linear
// otherwise. title is escaped. An empty histogram gives a valid document
// saying so. It returns the first write error.
func (h *Histogram) WriteSVG(w io.Writer, title string) error {
	var b bytes.Buffer
	height := headHeight + 3*panelHeight
	fmt.Fprintf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
	fmt.Fprintf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n",
		svgWidth, height, svgWidth, height)
	fmt.Fprintf(&b, "<title>%s</title>\n", esc(title))
	fmt.Fprintf(&b, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"white\"/>\n", svgWidth, height)
	fmt.Fprintf(&b, "<text x=\"%d\" y=\"22\" font-size=\"16\" font-weight=\"bold\">%s</text>\n", marginLeft, esc(title))
	s := h.Summary()
	if s.Count == 0 {
		fmt.Fprintf(&b, "<text x=\"%d\" y=\"44\">no samples</text>\n", marginLeft)
	} else {
		fmt.Fprintf(&b, "<text x=\"%d\" y=\"44\">%s</text>\n", marginLeft, esc(fmt.Sprintf(
			"n=%d  min=%s  mean=%s  p50=%s  p99=%s  p99.9=%s  max=%s",
			s.Count, fmtNS(float64(s.Min)), fmtNS(float64(s.Mean)), fmtNS(float64(s.P50)),
			fmtNS(float64(s.P99)), fmtNS(float64(s.P999)), fmtNS(float64(s.Max)))))
	}

	x := newXScale(h)
	h.histPanel(&b, x, headHeight)
	h.cdfPanel(&b, x, headHeight+panelHeight, s)
	h.tailPanel(&b, x, headHeight+2*panelHeight, s)
	fmt.Fprintf(&b, "</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// xScale maps latencies (ns) to the x pixel of the plot area.
type xScale struct {
	lo, hi float64
	log    bool
	px0    float64
	pxW    float64
}

func newXScale(h *Histogram) xScale {
	lo, hi := float64(h.min), float64(h.max)
	if h.n == 0 {
		lo, hi = 1e3, 1e6
	}
	lo = math.Max(lo, 1)
	if hi <= lo*1.2 { // one value, or nearly: widen so the bar has room
		lo, hi = math.Max(lo/1.5, 1), hi*1.5
	}
	x := xScale{lo: lo, hi: hi, log: hi/lo >= 8, px0: marginLeft, pxW: svgWidth - marginLeft - marginRight}
	if x.log { // pad by a bit so the extreme bars are visible
		x.lo, x.hi = lo/1.1, hi*1.1
	} else {
		pad := (hi - lo) * 0.05
		x.lo, x.hi = math.Max(lo-pad, 0), hi+pad
	}
	return x
}

// frac maps v to [0, 1] across the axis.
func (x xScale) frac(v float64) float64 {
	var f float64
	if x.log {
		f = (math.Log(math.Max(v, x.lo)) - math.Log(x.lo)) / (math.Log(x.hi) - math.Log(x.lo))
	} else {
		f = (v - x.lo) / (x.hi - x.lo)
	}
	return math.Min(math.Max(f, 0), 1)
}

func (x xScale) px(v float64) float64 { return x.px0 + x.frac(v)*x.pxW }

// inverse maps an axis fraction back to a latency.
func (x xScale) inverse(f float64) float64 {
	if x.log {
		return math.Exp(math.Log(x.lo) + f*(math.Log(x.hi)-math.Log(x.lo)))
	}
	return x.lo + f*(x.hi-x.lo)
}

// ticks returns tick values inside the axis: 1-2-5 per decade on a log axis
// (every integer multiple when the range is narrow), nice steps otherwise.
func (x xScale) ticks() []float64 {
	if x.log {
		for _, ms := range [][]float64{{1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}} {
			var t []float64
			for k := math.Floor(math.Log10(x.lo)); k <= math.Ceil(math.Log10(x.hi)); k++ {
				for _, m := range ms {
					if v := m * math.Pow(10, k); v >= x.lo && v <= x.hi {
						t = append(t, v)
					}
				}
			}
			if len(t) >= 3 {
				return t
			}
		}
	}
	return linearTicks(x.lo, x.hi, 6)
}

// linearTicks returns multiples of a 1-2-5 step inside [lo, hi], about n of them.
func linearTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		return []float64{lo}
	}
	raw := (hi - lo) / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	step := p
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * p; step >= raw {
			break
		}
	}
	var t []float64
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		t = append(t, v)
	}
	return t
}

// plotArea returns the top and bottom y pixel of a panel's plot area.
func plotArea(top int) (y0, y1 float64) {
	return float64(top + marginTop), float64(top + panelHeight - marginBot)
}

// frame draws the axes box, x ticks and labels, and the axis titles.
func frame(b *bytes.Buffer, x xScale, top int, ylabel string) {
	y0, y1 := plotArea(top)
	fmt.Fprintf(b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"black\"/>\n",
		x.px0, y0, x.pxW, y1-y0)
	fmt.Fprintf(b, "<g class=\"xticks\">\n")
	for _, v := range x.ticks() {
		p := x.px(v)
		fmt.Fprintf(b, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"black\"/>\n", p, y1, p, y1+5)
		fmt.Fprintf(b, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"#ddd\"/>\n", p, y0, p, y1)
		fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%g\" text-anchor=\"middle\">%s</text>\n", p, y1+18, esc(fmtNS(v)))
	}
	fmt.Fprintf(b, "</g>\n")
	scale := "linear"
	if x.log {
		scale = "log scale"
	}
	fmt.Fprintf(b, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">latency (%s)</text>\n", x.px0+x.pxW/2, y1+38, scale)
	fmt.Fprintf(b, "<text transform=\"translate(16 %g) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", (y0+y1)/2, esc(ylabel))
}

// yTick draws one y tick with its label at pixel y.
func yTick(b *bytes.Buffer, x xScale, y float64, label string) {
	fmt.Fprintf(b, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"black\"/>\n", x.px0-5, y, x.px0, y)
	fmt.Fprintf(b, "<text x=\"%g\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", x.px0-8, y+4, esc(label))
}

// histPanel draws the samples per display bin as bars.
func (h *Histogram) histPanel(b *bytes.Buffer, x xScale, top int) {
	var bins [displayBins]uint64
	h.bins(func(lo, hi int64, c uint64) {
		mid := (float64(lo) + float64(hi)) / 2
		i := int(x.frac(mid) * displayBins)
		bins[min(i, displayBins-1)] += c
	})
	var peak uint64
	for _, c := range bins {
		peak = max(peak, c)
	}
	y0, y1 := plotArea(top)
	fmt.Fprintf(b, "<g class=\"histogram\">\n")
	frame(b, x, top, "samples per bin")
	ymax := float64(max(peak, 1))
	yt := linearTicks(0, ymax, 4)
	if last := yt[len(yt)-1]; last < ymax && len(yt) > 1 { // end the axis on a tick
		ymax = last + (yt[1] - yt[0])
		yt = append(yt, ymax)
	} else {
		ymax = last
	}
	for _, v := range yt {
		yTick(b, x, y1-(v/ymax)*(y1-y0), strconv.FormatFloat(v, 'f', -1, 64))
	}
	w := x.pxW / displayBins
	for i, c := range bins {
		if c == 0 {
			continue
		}
		hgt := float64(c) / ymax * (y1 - y0)
		fmt.Fprintf(b, "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"steelblue\"><title>%s to %s: %d</title></rect>\n",
			x.px0+float64(i)*w, y1-hgt, math.Max(w-1, 0.5), hgt,
			esc(fmtNS(x.inverse(float64(i)/displayBins))), esc(fmtNS(x.inverse(float64(i+1)/displayBins))), c)
	}
	fmt.Fprintf(b, "</g>\n")
}

// cdfPanel draws the cumulative distribution and marks percentiles.
func (h *Histogram) cdfPanel(b *bytes.Buffer, x xScale, top int, s Summary) {
	y0, y1 := plotArea(top)
	yOf := func(f float64) float64 { return y1 - f*(y1-y0) }
	fmt.Fprintf(b, "<g class=\"cdf\">\n")
	frame(b, x, top, "fraction of samples at or below")
	for _, f := range []float64{0, 0.25, 0.5, 0.75, 1} {
		yTick(b, x, yOf(f), strconv.FormatFloat(f*100, 'f', -1, 64)+"%")
	}
	if h.n > 0 {
		fmt.Fprintf(b, "<polyline class=\"cdf-line\" fill=\"none\" stroke=\"firebrick\" stroke-width=\"1.5\" points=\"")
		fmt.Fprintf(b, "%.1f,%.1f", x.px(float64(h.min)), yOf(0))
		var seen uint64
		h.bins(func(lo, hi int64, c uint64) {
			before := float64(seen) / float64(h.n)
			seen += c
			after := float64(seen) / float64(h.n)
			fmt.Fprintf(b, " %.1f,%.1f %.1f,%.1f", x.px(float64(lo)), yOf(before), x.px(float64(hi)), yOf(after))
		})
		fmt.Fprintf(b, "\"/>\n")
		for _, m := range []struct {
			name string
			v    float64
		}{{"p50", float64(s.P50)}, {"p99", float64(s.P99)}, {"p99.9", float64(s.P999)}} {
			p := x.px(m.v)
			fmt.Fprintf(b, "<line class=\"marker\" x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"gray\" stroke-dasharray=\"4 3\"/>\n", p, y0, p, y1)
			fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%g\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-90 %.1f %g)\">%s %s</text>\n",
				p-3, y0+4, p-3, y0+4, m.name, esc(fmtNS(m.v)))
		}
	}
	fmt.Fprintf(b, "</g>\n")
}

// tailScale maps a fraction of samples in [floor, 1] to the y pixel of the
// tail panel, logarithmically: 1 at the top, floor = 10^-decades at the
// bottom.
type tailScale struct {
	decades int
	y0, y1  float64
}

// newTailScale covers fractions down to 1/n, in whole decades (at least one).
func newTailScale(n uint64, top int) tailScale {
	y0, y1 := plotArea(top)
	d := 1
	if n > 1 {
		d = max(1, int(math.Ceil(math.Log10(float64(n))-1e-9)))
	}
	return tailScale{decades: d, y0: y0, y1: y1}
}

// floor is the smallest fraction on the axis.
func (t tailScale) floor() float64 { return math.Pow(10, -float64(t.decades)) }

// y maps fraction f; fractions below the floor (0 included) map to it.
func (t tailScale) y(f float64) float64 {
	f = math.Min(math.Max(f, t.floor()), 1)
	return t.y0 + -math.Log10(f)/float64(t.decades)*(t.y1-t.y0)
}

// tailPanel draws the fraction of samples above each latency, 1 - CDF, on a
// log axis, and marks p99, p99.9 and the maximum.
func (h *Histogram) tailPanel(b *bytes.Buffer, x xScale, top int, s Summary) {
	ts := newTailScale(h.n, top)
	fmt.Fprintf(b, "<g class=\"tail\">\n")
	frame(b, x, top, "fraction of samples above (log scale)")
	for k := 0; k <= ts.decades; k++ {
		f := math.Pow(10, -float64(k))
		y := ts.y(f)
		if k > 0 {
			fmt.Fprintf(b, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x.px0, y, x.px0+x.pxW, y)
		}
		yTick(b, x, y, strconv.FormatFloat(math.Pow(10, float64(2-k)), 'f', -1, 64)+"%")
	}
	if h.n > 0 {
		fmt.Fprintf(b, "<polyline class=\"tail-line\" fill=\"none\" stroke=\"darkgreen\" stroke-width=\"1.5\" points=\"")
		fmt.Fprintf(b, "%.1f,%.1f", x.px(float64(h.min)), ts.y(1))
		var seen uint64
		h.bins(func(lo, hi int64, c uint64) {
			before := float64(h.n-seen) / float64(h.n)
			seen += c
			after := float64(h.n-seen) / float64(h.n)
			fmt.Fprintf(b, " %.1f,%.1f %.1f,%.1f", x.px(float64(lo)), ts.y(before), x.px(float64(hi)), ts.y(after))
		})
		fmt.Fprintf(b, "\"/>\n")
		for _, m := range []struct {
			name string
			v    float64
		}{{"p99", float64(s.P99)}, {"p99.9", float64(s.P999)}, {"max", float64(s.Max)}} {
			p := x.px(m.v)
			fmt.Fprintf(b, "<line class=\"tail-marker\" x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"gray\" stroke-dasharray=\"4 3\"/>\n", p, ts.y0, p, ts.y1)
			fmt.Fprintf(b, "<text x=\"%.1f\" y=\"%g\" font-size=\"10\" text-anchor=\"end\" transform=\"rotate(-90 %.1f %g)\">%s %s</text>\n",
				p-3, ts.y0+4, p-3, ts.y0+4, m.name, esc(fmtNS(m.v)))
		}
	}
	fmt.Fprintf(b, "</g>\n")
}

// fmtNS formats a latency in ns with a unit and at most 3 significant digits.
func fmtNS(ns float64) string {
	unit, div := "ns", 1.0
	switch {
	case ns >= 1e9:
		unit, div = "s", 1e9
	case ns >= 1e6:
		unit, div = "ms", 1e6
	case ns >= 1e3:
		unit, div = "µs", 1e3
	}
	v := ns / div
	prec := 0
	switch {
	case v < 10:
		prec = 2
	case v < 100:
		prec = 1
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if prec > 0 { // 1.50 -> 1.5, 2.00 -> 2
		for s[len(s)-1] == '0' {
			s = s[:len(s)-1]
		}
		if s[len(s)-1] == '.' {
			s = s[:len(s)-1]
		}
	}
	return s + unit
}

// esc escapes s for XML character data and attribute values.
func esc(s string) string {
	var b bytes.Buffer
	_ = xml.EscapeText(&b, []byte(s)) // writes to a bytes.Buffer cannot fail
	return b.String()
}
