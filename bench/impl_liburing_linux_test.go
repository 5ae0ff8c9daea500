//go:build liburing && cgo

package bench

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestLiburingReadFixed checks that the fixed rows of liburing read into
// registered buffers (io_uring_register_buffers succeeded, so run_read
// takes read_fixed) and the plain rows do not.
func TestLiburingReadFixed(t *testing.T) {
	impl, ok := Lookup("liburing")
	require.True(t, ok)
	if !impl.Supports(WorkloadReadFixed) {
		t.Skip("io_uring does not run here")
	}
	checkFDs(t)
	for _, fixed := range []bool{false, true} {
		r := runFixedRead(t, impl, fixed)
		assert.Equal(t, fixed, r.(*lrRead).st.fixed != 0, "buffers registered")
		require.NoError(t, r.Close())
	}
}
