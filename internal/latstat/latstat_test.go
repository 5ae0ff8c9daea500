package latstat

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// oracle returns the nearest-rank q-quantile of sorted.
func oracle(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestBucketsCoverValues(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := []int64{0, 1, 255, 256, 257, 511, 512, 1 << 20, math.MaxInt64, math.MaxInt64 - 1}
	for range 10000 {
		vals = append(vals, rng.Int64N(1<<uint(rng.IntN(63))+1))
	}
	for _, v := range vals {
		i := bucketOf(v)
		require.Less(t, i, nBuckets, "bucket of %d", v)
		lo, hi := bucketRange(i)
		require.True(t, lo <= v && v <= hi, "value %d outside its bucket %d [%d, %d]", v, i, lo, hi)
		if v >= 256 {
			assert.LessOrEqual(t, float64(hi-lo+1), float64(lo)*RelativeError, "bucket %d too wide", i)
		} else {
			assert.Equal(t, lo, hi, "values below 256 must be exact")
		}
	}
	// Buckets tile the number line: each starts right after the previous ends.
	for i := 1; i < nBuckets; i++ {
		_, prevHi := bucketRange(i - 1)
		lo, _ := bucketRange(i)
		require.Equal(t, prevHi+1, lo, "gap before bucket %d", i)
	}
}

func TestQuantilesMatchOracle(t *testing.T) {
	dists := map[string]func(r *rand.Rand) int64{
		"uniform-small": func(r *rand.Rand) int64 { return r.Int64N(300) },
		"uniform-wide":  func(r *rand.Rand) int64 { return r.Int64N(10_000_000) },
		"lognormal":     func(r *rand.Rand) int64 { return int64(math.Exp(9 + 1.5*r.NormFloat64())) },
		"bimodal-tail": func(r *rand.Rand) int64 {
			if r.IntN(100) == 0 {
				return 1_000_000 + r.Int64N(5_000_000)
			}
			return 13_000 + r.Int64N(2_000)
		},
	}
	qs := []float64{0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			for seed := uint64(0); seed < 5; seed++ {
				rng := rand.New(rand.NewPCG(seed, 99))
				n := 1 + rng.IntN(20000)
				h := New()
				vals := make([]int64, n)
				var sum float64
				for i := range vals {
					vals[i] = gen(rng)
					sum += float64(vals[i])
					h.Record(time.Duration(vals[i]))
				}
				slices.Sort(vals)
				require.Equal(t, n, h.Count())
				assert.Equal(t, vals[0], int64(h.Min()))
				assert.Equal(t, vals[n-1], int64(h.Max()))
				assert.InDelta(t, sum/float64(n), float64(h.Mean()), 1)
				for _, q := range qs {
					want := oracle(vals, q)
					got := int64(h.Quantile(q))
					assert.GreaterOrEqual(t, got, want, "q=%v n=%d: got %d, want >= %d", q, n, got, want)
					assert.LessOrEqual(t, float64(got), float64(want)*(1+RelativeError),
						"q=%v n=%d: got %d, want <= %d*(1+1/128)", q, n, got, want)
				}
				s := h.Summary()
				assert.Equal(t, h.Quantile(0.5), s.P50)
				assert.Equal(t, h.Quantile(0.9), s.P90)
				assert.Equal(t, h.Quantile(0.99), s.P99)
				assert.Equal(t, h.Quantile(0.999), s.P999)
				assert.Equal(t, h.Max(), s.Max)
			}
		})
	}
}

func TestEmptyAndEdgeCases(t *testing.T) {
	h := New()
	assert.Equal(t, Summary{}, h.Summary(), "empty histogram summary")
	h.Record(-5 * time.Second)
	assert.Equal(t, time.Duration(0), h.Max(), "negative samples count as 0")
	h.Reset()
	h.Record(42 * time.Microsecond)
	for _, q := range []float64{-1, 0, 0.5, 1, 2, math.NaN()} {
		assert.Equal(t, 42*time.Microsecond, h.Quantile(q), "single sample, q=%v", q)
	}
}

func TestMergeEqualsRecordingAll(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	a, b, all := New(), New(), New()
	for i := range 5000 {
		v := time.Duration(rng.Int64N(1 << 30))
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(b)
	a.Merge(New()) // merging an empty histogram changes nothing
	assert.Equal(t, all.Summary(), a.Summary())
	assert.Equal(t, all.counts, a.counts)
}

func TestRecordDoesNotAllocate(t *testing.T) {
	h := New()
	allocs := testing.AllocsPerRun(1000, func() { h.Record(1234 * time.Nanosecond) })
	assert.Zero(t, allocs)
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.RecordNS(int64(i&0xffff) * 97)
	}
}

// TestAboveMatchesOracle checks Above against exact counts: never more
// than the samples greater than d, never fewer than those greater than the
// top of d's bucket (at most RelativeError above d).
func TestAboveMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	h := New()
	vals := make([]int64, 5000)
	for i := range vals {
		if rng.IntN(50) == 0 {
			vals[i] = 40_000 + rng.Int64N(20_000) // a slow mode, as a cancel burst's
		} else {
			vals[i] = 28_000 + rng.Int64N(3_000)
		}
		h.Record(time.Duration(vals[i]))
	}
	count := func(than int64) int {
		n := 0
		for _, v := range vals {
			if v > than {
				n++
			}
		}
		return n
	}
	ds := []int64{-5, 0, 255, 27_999, 28_000, 29_500, 35_000, 40_000, 59_999, 60_000, math.MaxInt64}
	for range 200 {
		ds = append(ds, rng.Int64N(70_000))
	}
	for _, d := range ds {
		got := h.Above(time.Duration(d))
		assert.LessOrEqual(t, got, count(d), "Above(%d)", d)
		top := d
		if d >= 0 {
			_, top = bucketRange(bucketOf(d))
		}
		assert.GreaterOrEqual(t, got, count(top), "Above(%d), bucket top %d", d, top)
	}
	assert.Equal(t, len(vals), h.Above(-1))
	assert.Equal(t, 0, h.Above(time.Duration(math.MaxInt64)))
	assert.Equal(t, 0, New().Above(0), "empty")
}
