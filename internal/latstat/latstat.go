// Package latstat records latencies and summarizes them: a log-linear
// histogram that records a sample in a few nanoseconds without allocating,
// percentiles (p50 to p99.9, max, mean) and an SVG plot of the distribution.
//
// It serves the benchmark suites (bench) and cmd/iobench: a benchmark records
// one sample per canceled batch, then reports Summary fields through
// testing.B.ReportMetric; iobench's --plot flag writes WriteSVG's output.
//
// A Histogram is not safe for concurrent use: give each goroutine its own and
// combine them with Merge.
package latstat

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the precision: each power-of-two range of values is split into
// 1<<subBits equal buckets, so a bucket is never wider than 1/128 of the
// values it holds, and values below 256 ns are recorded exactly.
const (
	subBits  = 7
	subCount = 1 << subBits // 128
	// nBuckets covers every non-negative int64: values below 2*subCount map to
	// themselves, then each further power of two adds subCount buckets.
	nBuckets = (63-subBits)*subCount + subCount
)

// RelativeError is the largest relative error of a percentile reported by a
// Histogram: a reported value v and the exact one x satisfy
// x <= v <= x*(1+RelativeError). Values below 256 ns are exact.
const RelativeError = 1.0 / subCount

// Histogram counts samples in log-linear buckets (HDR-style). The zero value is
// empty and ready to use; it is about 58 KiB, so keep it behind a pointer.
// Record never allocates. Not safe for concurrent use.
type Histogram struct {
	counts [nBuckets]uint64
	n      uint64
	sum    float64 // ns; float so a long run cannot overflow
	min    int64
	max    int64
}

// New returns an empty Histogram.
func New() *Histogram { return new(Histogram) }

// bucketOf returns the bucket index of v >= 0.
func bucketOf(v int64) int {
	if v < 2*subCount {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - 1 // 2^e <= v < 2^(e+1), e >= subBits+1
	shift := e - subBits
	return (shift+1)*subCount + int(v>>shift) - subCount
}

// bucketRange returns the smallest and the largest value that land in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	mant := int64(i%subCount + subCount)
	lo = mant << shift
	return lo, lo + (int64(1) << shift) - 1
}

// Record adds one sample. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) { h.RecordNS(int64(d)) }

// RecordNS adds one sample given in nanoseconds. Negative values count as 0.
func (h *Histogram) RecordNS(ns int64) {
	if ns < 0 {
		ns = 0
	}
	if h.n == 0 || ns < h.min {
		h.min = ns
	}
	if ns > h.max {
		h.max = ns
	}
	h.n++
	h.sum += float64(ns)
	h.counts[bucketOf(ns)]++
}

// Count returns the number of samples recorded.
func (h *Histogram) Count() int { return int(h.n) }

// Min returns the smallest sample (exact), or 0 if there is none.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest sample (exact), or 0 if there is none.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the arithmetic mean of the samples (exact up to float64
// rounding), or 0 if there is none.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.n)))
}

// Quantile returns the q-quantile (0 <= q <= 1) by the nearest-rank rule: the
// smallest recorded value such that at least ceil(q*Count) samples are less
// than or equal to it. The answer is the highest value of that sample's
// bucket, clamped to [Min, Max], so it never understates a latency and is at
// most RelativeError above the exact answer. Quantile(0) is Min and
// Quantile(1) is Max. It returns 0 for an empty histogram; q outside [0, 1]
// is clamped.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if !(q > 0) { // also NaN
		return time.Duration(h.min)
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i := bucketOf(h.min); i < nBuckets; i++ {
		seen += h.counts[i]
		if seen >= rank {
			_, hi := bucketRange(i)
			return time.Duration(min(max(hi, h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// Above returns how many samples are greater than d, to the histogram's
// precision: it counts the buckets whose every value is greater than d, so
// it may leave out samples of d's own bucket (at most RelativeError above
// d) but never counts one that is not greater.
func (h *Histogram) Above(d time.Duration) int {
	if h.n == 0 {
		return 0
	}
	first := 0 // every sample is 0 or more: all are above a negative d
	if d >= 0 {
		first = bucketOf(int64(d)) + 1
	}
	var n uint64
	for i := max(first, bucketOf(h.min)); i <= bucketOf(h.max); i++ {
		n += h.counts[i]
	}
	return int(n)
}

// Summary is the usual set of statistics of a latency distribution.
type Summary struct {
	Count                    int
	Min, Mean                time.Duration
	P50, P90, P99, P999, Max time.Duration
}

// Summary returns Count, Min, Mean, Max and the 50th, 90th, 99th and 99.9th
// percentiles (see Quantile).
func (h *Histogram) Summary() Summary {
	return Summary{
		Count: h.Count(),
		Min:   h.Min(),
		Mean:  h.Mean(),
		P50:   h.Quantile(0.50),
		P90:   h.Quantile(0.90),
		P99:   h.Quantile(0.99),
		P999:  h.Quantile(0.999),
		Max:   h.Max(),
	}
}

// Merge adds every sample of o to h. o is not changed.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
	for i := bucketOf(o.min); i <= bucketOf(o.max); i++ {
		h.counts[i] += o.counts[i]
	}
}

// Reset empties h without releasing its memory.
func (h *Histogram) Reset() { *h = Histogram{} }

// bins calls fn for every non-empty bucket in increasing order with the
// bucket's value range (clamped to [Min, Max]) and its count.
func (h *Histogram) bins(fn func(lo, hi int64, count uint64)) {
	if h.n == 0 {
		return
	}
	for i := bucketOf(h.min); i <= bucketOf(h.max); i++ {
		if c := h.counts[i]; c != 0 {
			lo, hi := bucketRange(i)
			fn(max(lo, h.min), min(hi, h.max), c)
		}
	}
}
