//go:build (amd64 || 386) && !race

package release

import (
	"sync/atomic"
	"unsafe"
)

// x86 orders every store after the loads and stores before it (TSO), and
// Go's compiler keeps a store after the memory operations that precede it
// in the program, so a plain store of an aligned word is a release store.

// AtomicUint64 writes the word inside atomic.Uint64 directly: the type
// must hold nothing but it.
var _ [0]byte = [unsafe.Sizeof(atomic.Uint64{}) - 8]byte{}

// Uint32 stores v into *p with release ordering.
func Uint32(p *uint32, v uint32) { *p = v }

// Load32 loads *p. A plain load of an aligned word is atomic on x86, which
// also keeps it after every earlier load; Go's compiler keeps it after the
// atomic operations before it in the program.
func Load32(p *uint32) uint32 { return *p }

// AtomicUint64 stores v into p with release ordering. On 386 a plain 64-bit
// store is two stores: there it is the sync/atomic one (wide_386.go).
func AtomicUint64(p *atomic.Uint64, v uint64) { storeUint64(p, v) }
