package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestOrdTable checks the stream table on both of its sides: keys of small
// fds (the slice, grown on demand) and the rest (the map: large fds,
// registered files), including growth while FIFOs are stored and the
// removal of empty ones.
func TestOrdTable(t *testing.T) {
	var tb ordTable
	empty := ordList{-1, -1}
	fixed := ordKey(1) << 33
	keys := []ordKey{0, 1, 7, 63, 64, 200, ordDense - 1, ordDense, 1 << 31, fixed | 3}
	for _, k := range keys {
		assert.Equal(t, empty, tb.get(k), "key %d before any put", k)
	}
	for i, k := range keys {
		tb.put(k, ordList{int32(i), int32(i + 100)})
	}
	assert.LessOrEqual(t, len(tb.dense), ordDense, "the slice stays within its bound")
	for i, k := range keys {
		assert.Equal(t, ordList{int32(i), int32(i + 100)}, tb.get(k), "key %d after growth", k)
	}
	for _, k := range keys {
		tb.put(k, empty)
		assert.Equal(t, empty, tb.get(k), "key %d after its FIFO emptied", k)
	}
	assert.Empty(t, tb.sparse, "empty FIFOs leave the map")

	// An empty FIFO of a key beyond the slice does not grow it.
	var small ordTable
	small.put(10, empty)
	assert.Empty(t, small.dense)
}
