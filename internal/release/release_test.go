package release

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestStores checks that each store writes the value a sync/atomic load
// then reads.
func TestStores(t *testing.T) {
	var a uint32
	var c atomic.Uint64
	Uint32(&a, 7)
	AtomicUint64(&c, 1<<40+9)
	if got := atomic.LoadUint32(&a); got != 7 {
		t.Errorf("Uint32: got %d, want 7", got)
	}
	if got := c.Load(); got != 1<<40+9 {
		t.Errorf("AtomicUint64: got %d, want %d", got, uint64(1<<40+9))
	}
	atomic.StoreUint32(&a, 11)
	if got := Load32(&a); got != 11 {
		t.Errorf("Load32: got %d, want 11", got)
	}
}

// TestPublish is message passing through a release store: a reader that
// sees the flag sees the data written before it. It cannot prove the
// ordering (x86 would need the compiler to misbehave), but under -race it
// fails if the stores stopped being synchronising.
func TestPublish(t *testing.T) {
	const rounds = 20000
	var data [4]uint64
	var seq atomic.Uint64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := uint64(1); i <= rounds; i++ {
			for seq.Load() != 2*i-1 {
				runtime.Gosched()
			}
			for j := range data {
				if data[j] != i {
					t.Errorf("round %d: data[%d] = %d", i, j, data[j])
					return
				}
			}
			AtomicUint64(&seq, 2*i)
		}
	}()
	for i := uint64(1); i <= rounds; i++ {
		for j := range data {
			data[j] = i
		}
		AtomicUint64(&seq, 2*i-1)
		for seq.Load() != 2*i {
			runtime.Gosched()
		}
	}
	wg.Wait()
}
