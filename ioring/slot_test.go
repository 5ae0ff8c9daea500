package ioring

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestSlotDirectAndDirty: slot.direct and slot.dirty, which load and
// test several words as one value, agree with the field-by-field reading
// for every combination of the fields they cover.
func TestSlotDirectAndDirty(t *testing.T) {
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
			assert.Equal(t, s.foreign.Load() || s.awaited.Load() || fl != 0, s.dirty(), "dirty, bits %07b, flags %#x", bits, fl)
		}
	}
}

// TestCompletionSetPlain: setPlain, which writes Op, More, Buffer and
// BufID as one word, leaves a used Completion as set does.
func TestCompletionSetPlain(t *testing.T) {
	r := &Ring{}
	for _, code := range []Opcode{OpNop, OpRead, OpRecvMultishot} {
		for _, user := range []any{nil, 7, "x"} {
			used := Completion{Req: Request{key: 9}, Op: OpWrite, More: true, Buffer: true, BufID: 0xffff, N: -1, Err: ErrCanceled, User: 3}
			got, want := used, used
			got.setPlain(r, 42, code, 5, user)
			var s slot
			s.code, s.user = code, user
			want.set(r, 42, &s, 5, nil)
			assert.Equal(t, want, got, "%v, user %v", code, user)
		}
	}
}
