//go:build 386 && !race

package release

import "sync/atomic"

func storeUint64(p *atomic.Uint64, v uint64) { p.Store(v) }

func storeInt64(p *atomic.Int64, v int64) { p.Store(v) }
