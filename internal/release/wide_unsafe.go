//go:build amd64 && !race

package release

import (
	"sync/atomic"
	"unsafe"
)

func storeUint64(p *atomic.Uint64, v uint64) { *(*uint64)(unsafe.Pointer(p)) = v }
