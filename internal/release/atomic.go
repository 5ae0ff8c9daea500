//go:build !(amd64 || 386) || race

package release

import "sync/atomic"

// Uint32 stores v into *p with release ordering.
func Uint32(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

// AtomicUint32 stores v into p with release ordering.
func AtomicUint32(p *atomic.Uint32, v uint32) { p.Store(v) }

// AtomicUint64 stores v into p with release ordering.
func AtomicUint64(p *atomic.Uint64, v uint64) { p.Store(v) }

// AtomicInt64 stores v into p with release ordering.
func AtomicInt64(p *atomic.Int64, v int64) { p.Store(v) }
