//go:build !(amd64 || 386) || race

package release

import "sync/atomic"

// Uint32 stores v into *p with release ordering.
func Uint32(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

// Load32 loads *p.
func Load32(p *uint32) uint32 { return atomic.LoadUint32(p) }

// AtomicUint64 stores v into p with release ordering.
func AtomicUint64(p *atomic.Uint64, v uint64) { p.Store(v) }
