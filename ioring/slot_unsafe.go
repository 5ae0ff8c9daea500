package ioring

import (
	"sync/atomic"
	"unsafe"

	"github.com/cancelio/cancelio/internal/release"
)

// slotPad rounds a slot up to whole 64-byte cache lines, so that its hot
// fields span as few lines as they can. It is computed from the fields'
// size on the target, which differs between 64-bit and 32-bit platforms
// (pointers, slices and ints halve; atomic.Uint64 stays 8-aligned).
//
// It is never 0: Go pads a struct whose last field has size zero by one
// more word (so that the field's address stays inside the struct), which
// would push the slot past the line. Where the fields fill whole lines
// exactly (netbsd/arm today), the price is one line of padding.
const slotPad = 64 - unsafe.Sizeof(slotFields{})%64

// A padded slot covers whole cache lines on every platform.
var _ [0]byte = [unsafe.Sizeof(slot{}) % 64]byte{}

// slotAt returns slot idx, an index from the ring's own free list (which
// holds only indexes of r.slots), without the bounds check &r.slots[idx]
// makes.
func (r *Ring) slotAt(idx uint32) *slot {
	return (*slot)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(r.slots)), uintptr(idx)*unsafe.Sizeof(slot{})))
}

// completionAt returns &cs[i], for an i the caller checked is below
// len(cs), without the bounds check.
func completionAt(cs []Completion, i int) *Completion {
	return (*Completion)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(cs)), uintptr(i)*unsafe.Sizeof(Completion{})))
}

// setPlain writes the completion of a one-shot request (key, with
// result n, operation code and user value user) that did not fail, into c
// in place, as set does; Op, More, Buffer and BufID are written as one
// 8-byte word (the assertions below keep them within it, N after it).
func (c *Completion) setPlain(r *Ring, key uint64, code Opcode, n int, user any) {
	c.Req = Request{r: r, key: key}
	*(*[8]byte)(unsafe.Pointer(&c.Op)) = [8]byte{0: byte(code)} // either byte order
	c.N, c.Err, c.User = n, nil, user
}

var (
	_ [0]byte = [unsafe.Offsetof(Completion{}.N) - unsafe.Offsetof(Completion{}.Op) - 8]byte{}
	_ [0]byte = [unsafe.Offsetof(Completion{}.More) - unsafe.Offsetof(Completion{}.Op) - 1]byte{}
	_ [0]byte = [unsafe.Offsetof(Completion{}.Buffer) - unsafe.Offsetof(Completion{}.Op) - 2]byte{}
	_ [0]byte = [unsafe.Offsetof(Completion{}.BufID) - unsafe.Offsetof(Completion{}.Op) - 4]byte{}
)

// simple reports whether none of linked, multi, inOrd and cold is set: a
// request with one CQE and nothing to undo but its slot. One load for the
// four bytes, which the assertions below keep adjacent and aligned.
func (s *slot) simple() bool { return s.undoWord() == 0 }

// undoWord is linked, multi, inOrd and cold as one word: 0 when none is
// set.
func (s *slot) undoWord() uint32 { return *(*uint32)(unsafe.Pointer(&s.linked)) }

// direct reports whether a request that completed without failing can be
// delivered from its CQE at once (uringBackend.reapReady): it is simple,
// not awaited and not nopped. The four flag bytes, the awaited word and the
// flags are loaded and tested as one value: a chain of && over them
// compiles to a bool built and tested again. The caller's load of the CQ
// tail orders the loads (release.Load32).
func (s *slot) direct() bool {
	aw := release.Load32((*uint32)(unsafe.Pointer(&s.awaited)))
	fl := release.Load32((*uint32)(unsafe.Pointer(&s.flags)))
	return s.undoWord()|aw|fl&flNopped == 0
}

// dirty reports whether the slot's last request was foreign or awaited, or
// left flags: the three words tested as one value, for the submit path,
// whose slots as a rule served a plain request last. r.sqMu held.
func (s *slot) dirty() bool {
	return release.Load32((*uint32)(unsafe.Pointer(&s.flags)))|
		release.Load32((*uint32)(unsafe.Pointer(&s.foreign)))|
		release.Load32((*uint32)(unsafe.Pointer(&s.awaited))) != 0
}

// atomic.Bool and atomic.Uint32 are their uint32 word and nothing else
// (direct loads them).
var (
	_ [0]byte = [unsafe.Sizeof(atomic.Bool{}) - 4]byte{}
	_ [0]byte = [unsafe.Sizeof(atomic.Uint32{}) - 4]byte{}
)

var (
	_ [0]byte = [unsafe.Offsetof(slotFields{}.linked) % 4]byte{}
	_ [0]byte = [unsafe.Offsetof(slotFields{}.multi) - unsafe.Offsetof(slotFields{}.linked) - 1]byte{}
	_ [0]byte = [unsafe.Offsetof(slotFields{}.inOrd) - unsafe.Offsetof(slotFields{}.linked) - 2]byte{}
	_ [0]byte = [unsafe.Offsetof(slotFields{}.cold) - unsafe.Offsetof(slotFields{}.linked) - 3]byte{}
)
