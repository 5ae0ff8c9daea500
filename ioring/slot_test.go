package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestSlotDirectAndKindSet: slot.direct and slot.kindSet, which load and
// test several words as one value, agree with the field-by-field reading
// for every combination of the fields they cover.
func TestSlotDirectAndKindSet(t *testing.T) {
	flagSets := []uint32{0, flNopped, flCancelReq, flCancelReq | flNopped, flTimedOut, flRetry | flHeld}
	for bits := 0; bits < 1<<7; bits++ {
		for _, fl := range flagSets {
			var s slot
			s.linked = bits&1 != 0
			s.multi = bits&2 != 0
			s.inOrd = bits&4 != 0
			s.cold = bits&8 != 0
			s.awaited.Store(bits&16 != 0)
			s.foreign.Store(bits&32 != 0)
			s.fixedFD = bits&64 != 0 // beside them, not read by either
			s.flags.Store(fl)
			s.code, s.timerDL, s.retries = OpRead, true, 3

			simple := !s.linked && !s.multi && !s.inOrd && !s.cold
			assert.Equal(t, simple, s.simple(), "simple, bits %07b", bits)
			assert.Equal(t, simple && !s.awaited.Load() && fl&flNopped == 0, s.direct(),
				"direct, bits %07b, flags %#x", bits, fl)
			assert.Equal(t, s.foreign.Load() || s.awaited.Load(), s.kindSet(), "kindSet, bits %07b", bits)
		}
	}
}
