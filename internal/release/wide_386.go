//go:build 386 && !race

package release

import "sync/atomic"

func storeUint64(p *atomic.Uint64, v uint64) { p.Store(v) }
