package bench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawGoImpls returns the raw-go impls that run here.
func rawGoImpls(t *testing.T) []*rawGoImpl {
	return implsOf[*rawGoImpl](t, "raw-go", "raw-go-regfd", "raw-go-plain")
}

// TestRawGo checks the floor's shape: Nop, Read and (but for raw-go-regfd)
// the cancels only; a registered ring fd for raw-go (liburing's setup) and
// raw-go-regfd, none for raw-go-plain; and nothing allocated per op once
// warm.
func TestRawGo(t *testing.T) {
	for _, impl := range rawGoImpls(t) {
		t.Run(impl.Name(), func(t *testing.T) {
			checkFDs(t)
			for _, w := range []Workload{WorkloadPingPong, WorkloadCancelUnderLoad, WorkloadReadFixed} {
				assert.False(t, impl.Supports(w), "%v is not the floor's", w)
			}
			for _, w := range []Workload{WorkloadCancel, WorkloadCancelEach} {
				assert.Equal(t, impl.Name() != "raw-go-regfd", impl.Supports(w), "%v", w)
			}
			const ops = 2000
			for _, batch := range []int{1, 32} {
				r, err := impl.NewNop(NopConfig{Batch: batch})
				require.NoError(t, err)
				assert.Equal(t, impl.bound(), r.(*rawNop).RegisteredFD(), "ring fd registered")
				allocs := testing.AllocsPerRun(5, func() { require.NoError(t, r.Run(ops)) })
				assert.Zero(t, allocs, "nop batch %d: allocations per run of %d", batch, ops)
				require.NoError(t, r.Close())
			}
			// A registered ring fd holds one of the thread's 16 slots (and
			// its ring) until Close gives it back: many runners in a row on
			// one goroutine, as -count makes them, must all set up.
			for k := range 40 {
				r, err := impl.NewNop(NopConfig{Batch: 1})
				require.NoError(t, err, "runner %d", k)
				require.NoError(t, r.Run(1))
				require.NoError(t, r.Close())
			}
			rd, err := impl.NewRead(readConfig(t, 32))
			require.NoError(t, err)
			allocs := testing.AllocsPerRun(5, func() { require.NoError(t, rd.Run(ops)) })
			assert.Zero(t, allocs, "read qd 32: allocations per run of %d", ops)
			require.NoError(t, rd.Close())
		})
	}
}
