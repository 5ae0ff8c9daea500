//go:build (amd64 || 386) && !race

package release

import (
	"sync/atomic"
	"unsafe"
)

// x86 orders every store after the loads and stores before it (TSO), and
// Go's compiler keeps a store after the memory operations that precede it
// in the program, so a plain store of an aligned word is a release store.

// The stores below write the word inside the sync/atomic types directly:
// they must hold nothing but it.
var (
	_ [0]byte = [unsafe.Sizeof(atomic.Uint32{}) - 4]byte{}
	_ [0]byte = [unsafe.Sizeof(atomic.Uint64{}) - 8]byte{}
	_ [0]byte = [unsafe.Sizeof(atomic.Int64{}) - 8]byte{}
)

// Uint32 stores v into *p with release ordering.
func Uint32(p *uint32, v uint32) { *p = v }

// AtomicUint32 stores v into p with release ordering.
func AtomicUint32(p *atomic.Uint32, v uint32) { *(*uint32)(unsafe.Pointer(p)) = v }

// AtomicUint64 stores v into p with release ordering. On 386 a plain 64-bit
// store is two stores: there it is the sync/atomic one (atomic64_386.go).
func AtomicUint64(p *atomic.Uint64, v uint64) { storeUint64(p, v) }

// AtomicInt64 stores v into p with release ordering (see AtomicUint64).
func AtomicInt64(p *atomic.Int64, v int64) { storeInt64(p, v) }
